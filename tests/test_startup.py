"""Commands that need no torch never import it (``--help``, ``info``, ``study status|report``).

Each runs in a fresh interpreter, as a user starts it; the check is on ``sys.modules``
(what was imported), not on a time: how fast start-up is is measured by
``python -m diffrecon.experiments.speed``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np

pytest_plugins = ("study_support",)  # its fixtures: case_root, study

_PROBE = """
import contextlib, io, json, sys
from diffrecon.cli.main import main
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = int(exc.code or 0)
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "pydicom": "pydicom" in sys.modules,
                  "out": out.getvalue()}))
"""


def _run(*args: str, env_threads: str | None = None) -> dict:
    env = None
    if env_threads is not None:
        import os

        env = {**os.environ, "DIFFRECON_THREADS": env_threads}
    done = subprocess.run([sys.executable, "-c", _PROBE, *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_and_info_never_import_torch(tmp_path) -> None:
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 32, 3), dtype=np.float32), np.eye(4)), path)
    helped = _run("--help")
    assert helped["code"] == 0 and "reconstruct" in helped["out"] and not helped["torch"]
    for sub in ("reconstruct", "bench", "train", "view"):
        assert not _run(sub, "--help")["torch"], sub
    info = _run("info", path, env_threads="1")  # a thread setting must not pull torch in either
    assert info["code"] == 0 and "3 x 32 x 40" in info["out"]
    assert not info["torch"]
    assert not info["pydicom"]  # nibabel would import all of it for NIfTI's DICOM extensions


def test_info_on_dicom_still_reads_it_after_nibabel(tmp_path) -> None:
    """``info`` keeps pydicom out of nibabel's import; a DICOM file then loads it in full."""
    from diffrecon.io import Volume, save_volume

    vol = Volume(np.random.default_rng(1).random((2, 24, 20), dtype=np.float32) * 100, spacing=(2.0, 1.0, 1.0),
                 modality="CT", units="HU")
    save_volume(vol, tmp_path / "series")
    info = _run("info", tmp_path / "series")
    assert info["code"] == 0 and "dicom" in info["out"] and "2 x 24 x 20" in info["out"] and info["pydicom"]


def test_study_status_and_report_never_import_torch(study, tmp_path) -> None:
    status = _run("study", "status", study)
    assert status["code"] == 0 and "alice" in status["out"] and not status["torch"]
    report = _run("study", "report", study, "--out", tmp_path / "rep")
    assert report["code"] == 0 and not report["torch"]


def test_a_command_that_needs_torch_does_import_it(tmp_path) -> None:
    """The probe can see torch: ``reconstruct`` on the same file imports it."""
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 2), dtype=np.float32), np.eye(4)), path)
    result = _run("reconstruct", path, "--modality", "denoise", "--simulate", "--method", "median",
                  "--out", tmp_path / "out.nii.gz")
    assert result["code"] == 0 and result["torch"]


def test_cli_choices_match_the_engine() -> None:
    """The parsers' torch-free copies of the engine's names (diffrecon.cli.choices)."""
    from diffrecon import runtime
    from diffrecon.baselines import METHODS
    from diffrecon.cli import choices
    from diffrecon.diffusion.guidance import GUIDANCE
    from diffrecon.diffusion.samplers import SAMPLERS
    from diffrecon.measurements import MODALITIES, NOISE_MODELS
    from diffrecon.physics.masks import MASK_KINDS
    from diffrecon.reconstruct import DIFFUSION

    assert choices.MODALITIES == MODALITIES and choices.NOISE_MODELS == NOISE_MODELS
    assert choices.MASK_KINDS == MASK_KINDS and choices.SAMPLERS == tuple(SAMPLERS) and choices.GUIDANCE == GUIDANCE
    assert choices.CLASSICAL_METHODS == tuple(METHODS) and choices.DIFFUSION == DIFFUSION
    assert choices.DEVICES == runtime.DEVICES
    from diffrecon.diffusion.scan_adaptation import ADAPT_PARAMETERS

    assert choices.ADAPT_PARAMETERS == ADAPT_PARAMETERS
    from diffrecon.diffusion.onnx_int8 import BACKENDS

    assert choices.BACKENDS == BACKENDS
    # the --steps help states the steps the tasks' options resolve to
    from diffrecon import modalities
    from diffrecon.measurements import MeasurementSettings

    mri, ct, noiseless = modalities.get("mri"), modalities.get("ct"), MeasurementSettings("ct")
    plain, calibrated = mri.diffusion_options().steps, mri.diffusion_options(samples=2).steps
    ct_views, ct_dose = ct.diffusion_options(noiseless).steps, ct.diffusion_options(MeasurementSettings("ct", dose=0.25)).steps
    assert ct.diffusion_options(noiseless, samples=2).steps == ct_dose
    first_step = {modalities.get(m).diffusion_options().steps for m in ("denoise", "ultrasound")}
    assert choices.STEPS_DEFAULTS == (
        f"MRI {plain}, or {calibrated} with --samples 2 or more, where σ was calibrated; CT {ct_views} for noiseless "
        f"views, {ct_dose} with --dose or --samples 2 or more; {first_step.pop()} for denoising and ultrasound, "
        "which start at the noise level") and not first_step


def test_a_closed_pipe_is_not_an_error(tmp_path) -> None:
    """``diffrecon info scan | head -1``: the reader leaves early; no traceback, exit 0."""
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.eye(4)), path)
    proc = subprocess.Popen([sys.executable, "-m", "diffrecon", "info", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # before the command has written anything: its first write meets a closed pipe
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and err == ""
