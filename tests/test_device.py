"""--device on reconstruct, bench and view: auto picks CUDA when torch sees one (bf16 there), and
every output says where it ran. Run here on the CPU; a lent GPU runs the same code path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_one_sentence_error, make_phantom
from diffrecon.io import save_volume
from diffrecon.io.sidecar import sidecar_path
from diffrecon.io.volume import Volume
from diffrecon.measurements import MeasurementSettings
from diffrecon.reconstruct import ReconRequest, run_to_end
from diffrecon.runtime import bf16_is_fast, describe_device, resolve_device

HERE = "cuda" if torch.cuda.is_available() else "cpu"


def test_auto_is_cuda_only_where_torch_sees_one_and_precision_is_what_runs():
    assert resolve_device("auto").type == HERE
    assert resolve_device("cpu").type == "cpu"
    facts = describe_device("cpu")
    # bf16 only where it is native: an AVX2-only CPU emulates it 25x slower, so float32 runs there.
    assert facts["device"] == "cpu" and facts["autocast"] == ("bfloat16" if bf16_is_fast("cpu") else "float32")
    assert facts["threads"] == torch.get_num_threads()


@pytest.fixture
def ct_scan(tmp_path):
    hu = (make_phantom(2, 32, 32) * 1400 - 1000).astype(np.float32)
    path = tmp_path / "ct.nii.gz"
    save_volume(Volume(hu, modality="CT", units="HU"), path)
    return path


def test_reconstruct_records_the_device_in_every_output(cli, tmp_path, ct_scan):
    out, report = tmp_path / "tv.nii.gz", tmp_path / "tv.json"
    result = cli("reconstruct", ct_scan, "--simulate", "--views", "30", "--method", "fbp,tv", "--save-input",
                 "--out", out, "--report", report)
    assert result.code == 0, result.err
    assert json.loads(report.read_text())["device"]["device"] == HERE
    written = [line for line in result.out.splitlines() if line.endswith(".nii.gz")]
    assert len(written) == 3  # fbp, tv and the input
    for path in written:
        assert json.loads(sidecar_path(path).read_text())["device"]["device"] == HERE


def test_the_device_changes_nothing_on_the_cpu(ct_scan):
    """The device path (problems moved, results brought back) gives the CPU run's images."""
    from diffrecon.io import load_volume

    volume = load_volume(ct_scan)
    request = ReconRequest(volume, MeasurementSettings("ct", views=30), ["tv"], simulate=True, device="cpu")
    plain = ReconRequest(volume, MeasurementSettings("ct", views=30), ["tv"], simulate=True)
    a, b = run_to_end(request), run_to_end(plain)
    np.testing.assert_array_equal(a.outcomes["tv"].volume, b.outcomes["tv"].volume)
    assert a.provenance["device"]["device"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("command", ["reconstruct", "bench"])
def test_asking_for_cuda_without_one_is_one_sentence(cli, tmp_path, ct_scan, command):
    if command == "reconstruct":
        args = ("reconstruct", ct_scan, "--simulate", "--method", "fbp", "--out", tmp_path / "x.nii.gz")
    else:
        args = ("bench", ct_scan, "--modality", "ct", "--methods", "fbp", "--quick", "--out", tmp_path / "b")
    assert_one_sentence_error(cli(*args, "--device", "cuda"), mentions="CUDA")
