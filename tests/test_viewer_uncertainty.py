"""Issue 12 in the viewer (offscreen, real widgets, a real prior file): the calibrated σ, the
hallucination overlay with its line under the reconstruction pane, its export, and the
out-of-domain sentence in the status line."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from viewer_support import open_scan, quick_settings, run_to_end

pytest_plugins = ("viewer_support",)  # its fixtures: window, mr_nifti, tiny_prior

pytestmark = pytest.mark.gui


def _calibrated_copy(prior, tmp_path, options, *, scale: float, ood_threshold: float):
    """The prior file with a σ scale for MRI 4x and the viewer's sampler setting in its metadata."""
    from diffrecon.diffusion.calibration import METADATA_KEY, SAMPLER_FIELDS, SigmaCalibration
    from diffrecon.diffusion.checkpoint import update_metadata

    path = tmp_path / "calibrated.safetensors"
    shutil.copy(prior, path)
    cal = SigmaCalibration("mri-4x", scale, sampler={k: getattr(options, k) for k in SAMPLER_FIELDS},
                           subjects=["synthetic"], ood_threshold=ood_threshold)
    update_metadata(path, {METADATA_KEY: {"mri-4x": cal.to_dict()}})
    return path


def test_calibrated_sigma_overlay_export_and_out_of_domain_warning(qtbot, window, mr_nifti, tiny_prior, tmp_path):
    from diffrecon.io import load_volume

    session = open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=2, samples=2, baseline="tv")
    assert run_to_end(qtbot, window)
    raw_sigma = session.image("sigma").copy()
    assert "Warning" not in window.last_status  # no calibration: no threshold, no warning
    assert session.run.provenance["sigma_calibration"]["method"] == "none"
    assert "raw spread" in window.grid["variance"].title_text  # the reader is told which σ is shown

    options = window.controls.diffusion_options()
    calibrated = _calibrated_copy(tiny_prior, tmp_path, options, scale=2.5, ood_threshold=0.0)
    quick_settings(window, calibrated, steps=2, samples=2, baseline="tv")
    assert run_to_end(qtbot, window)
    # The σ the pane shows is the scaled one (same seed, same samples).
    np.testing.assert_allclose(session.image("sigma"), 2.5 * raw_sigma, rtol=1e-4, atol=1e-6)
    assert session.run.provenance["sigma_calibration"]["scale"] == 2.5
    assert "calibrated x2.50" in window.grid["variance"].title_text
    assert "volume" not in window.grid["variance"].title_text and "slice fit" not in window.grid["variance"].title_text
    record = session.run.provenance["sigma_calibration"]
    session.run.provenance["sigma_calibration"] = {**record, "scale": 3.0, "volume_factor": 1.2}
    window.renderer.render_all()  # a whole-volume run's σ: its scale carries the volume factor
    assert "calibrated x3.00 for volumes" in window.grid["variance"].title_text
    session.run.provenance["sigma_calibration"] = {**record, "volume_note": "fitted on single slices"}
    window.renderer.render_all()
    assert "calibrated x2.50 (slice fit)" in window.grid["variance"].title_text
    session.run.provenance["sigma_calibration"] = record
    window.renderer.render_all()
    assert window.last_status.startswith("Warning: this scan looks unlike the brain MRI")
    assert window.last_status_error

    overlay = window.hallucination
    assert not overlay.item.isVisible() and not overlay.line.isVisible()
    overlay.action.setChecked(True)  # the toggle
    assert overlay.item.isVisible() and overlay.line.isVisible()
    assert re.fullmatch(r"\d+\.\d % of the object flagged", overlay.line.text())
    flags = session.image("flags")
    assert flags is not None and set(np.unique(flags)) <= {0.0, 1.0}
    assert overlay.fraction == pytest.approx(float(overlay.line.text().split()[0]) / 100, abs=5e-4)
    overlay.action.setChecked(False)
    assert not overlay.item.isVisible() and not overlay.line.isVisible()

    written = window.commands.export("flags", tmp_path / "out" / "flags.nii.gz")
    back = load_volume(tmp_path / "out" / "flags.nii.gz")
    np.testing.assert_array_equal(back.data[0], flags)
    sidecar = json.loads(next(p for p in written if p.suffix == ".json").read_text())
    assert sidecar["output"].startswith("hallucination map")
    assert sidecar["sigma_calibration"]["scale"] == 2.5 and sidecar["out_of_domain"]["warning"]
