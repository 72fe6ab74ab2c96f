"""Hostile inputs that are not errors: what is skipped or assumed is said, one line, never silently."""

from __future__ import annotations

import os
import threading

import numpy as np

from conftest import run_cli
from hostile_corpus import dicom_slice, nifti_header, save_dicom


def test_a_fifo_among_dicom_slices_is_skipped_without_blocking(tmp_path):
    series = tmp_path / "series"
    for z in range(3):
        save_dicom(dicom_slice(float(z)), series / f"IM{z}.dcm")
    os.mkfifo(series / "IM9.dcm")
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(r=run_cli("info", "--json", series)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # unblock the reader so the test process can end, then fail
        with open(series / "IM9.dcm", "wb"):
            pass
        raise AssertionError("reading a folder holding a FIFO blocked")
    assert result["r"].code == 0, result["r"].err
    from diffrecon.io import load_volume

    assert load_volume(series).metadata["skipped_files"] == ["IM9.dcm (a FIFO (named pipe), not read)"]


def test_invalid_pixel_spacing_is_reported_not_silently_replaced(tmp_path):
    save_dicom(dicom_slice(PixelSpacing=[-0.5, 0.5]), tmp_path / "neg" / "IM1.dcm")
    result = run_cli("info", tmp_path / "neg")
    assert result.code == 0 and result.err == ""
    assert "Warning" in result.out and "PixelSpacing (-0.5\\0.5) is not a pair of positive numbers" in result.out


def test_nibabel_log_lines_are_captured_into_the_volume_warnings(tmp_path):
    path = tmp_path / "zero_pixdim.nii"
    path.write_bytes(nifti_header((16, 16, 4), datatype=16, bitpix=32, pixdim=(0.0, 1.0, 1.0))
                     + np.ones((4, 16, 16), "<f4").tobytes())
    result = run_cli("info", path)
    assert result.code == 0 and result.err == "", result.err  # nothing printed behind our back
    assert "Warning" in result.out and "pixdim" in result.out


def test_a_newline_in_a_skipped_file_name_stays_on_one_line(tmp_path):
    series = tmp_path / "series"
    for z in range(2):
        save_dicom(dicom_slice(float(z)), series / f"IM{z}.dcm")
    (series / "read\nme.txt").write_text("notes")
    from diffrecon.io import load_volume

    skipped = load_volume(series).metadata["skipped_files"]
    assert skipped == ["'read\\nme.txt' (not DICOM)"]


def test_the_budget_counts_the_slices_a_command_will_process():
    from diffrecon.io.budget import COMMAND_BYTES_PER_VOXEL, READ_BYTES_PER_VOXEL, predict, selected_slices

    assert [selected_slices(t, 600) for t in (None, "", "40:60", "7", "0:100:5", "3,9,12", "-10:", "junk")] == \
        [600, 600, 20, 1, 20, 3, 10, 600]
    reading, work = predict((600, 512, 512), 1, "nifti", "reconstruct", "0:2")
    assert reading == 600 * 512 * 512 * (1 + READ_BYTES_PER_VOXEL["nifti"])
    assert work == 2 * 512 * 512 * COMMAND_BYTES_PER_VOXEL["reconstruct"]
    assert predict((600, 512, 512), 1, "nifti", "info") == (reading, 0)


def test_every_bundled_prior_passes_the_checks_that_crafted_ones_fail():
    from pathlib import Path

    from diffrecon.diffusion.checkpoint import validate_prior_file

    priors = sorted(Path(__file__).parents[1].glob("resources/models/*.safetensors"))
    priors = [p for p in priors if not p.name.endswith(".train.safetensors")]
    assert priors
    for path in priors:
        meta, config = validate_prior_file(path)  # header only: no weights read, nothing built
        assert config["in_channels"] == meta["channels"]
