"""The viewer with real widgets (offscreen), real files and a tiny real prior.

Opening scans, the streamed run (order, cancel, restart), linked panes, window/level
presets, exports read back with the engine's loader, and errors as one sentence.
"""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from viewer_support import open_scan, quick_settings, run_to_end, write_ct_dicom

pytest_plugins = ("viewer_support",)  # its fixtures: window, mr_nifti, tiny_prior

pytestmark = pytest.mark.gui


def test_opening_a_scan_shows_its_input_with_orientation_labels(qtbot, window, mr_nifti):
    session = open_scan(qtbot, window, mr_nifti)
    assert session.volume.shape == (5, 64, 64)
    assert window.slider.maximum() == 4 and window.slider.value() == session.slice_index == 2
    pane = window.grid["input"]
    assert pane.has_image and pane.image.image.shape == (64, 64)
    # affine_from_spacing: rows towards P, columns towards the patient's left (radiological).
    edges = {side: label.text() for side, label in pane.edges.items()}
    assert edges == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    # Pixels keep their physical size: 64 columns of 1 mm span 64 mm of scene.
    assert pane.image.mapRectToParent(pane.image.boundingRect()).width() == pytest.approx(64.0)
    assert window.controls.task == "mri" and window.controls.simulate.isChecked()
    assert not window.controls.simulate.isEnabled()  # an image-only MR scan can only be simulated
    assert "phantom.nii.gz" in window.windowTitle()
    assert str(mr_nifti.resolve()) in window.commands.recent()


def test_run_streams_frames_in_order_and_fills_every_pane(qtbot, window, mr_nifti, tiny_prior):
    session = open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=5, samples=2, baseline="tv")  # 5: from noise, no hot start
    shown = []
    window.runner.frameShown.connect(shown.append)
    assert run_to_end(qtbot, window) is True
    assert session.run.steps_seen == [(2, 1), (2, 2), (2, 3), (2, 4), (2, 5)]
    assert shown == sorted(shown) and shown[-1] == 5
    for name in ("input", "recon", "baseline", "variance"):
        assert window.grid[name].has_image, name
    sigma = session.image("sigma")
    assert sigma is not None and np.all(sigma >= 0) and sigma.max() > 0
    assert not window.grid["variance"].colorbar.isHidden()
    for row in ("input", "diffusion", "baseline"):
        assert window.metrics.cell_text(row, "psnr"), row
    stall = window.runner.stall  # the meter ran all through the run and reported its longest lateness
    assert stall.ticks > 0 and window.runner.last_stats["longest_stall_ms"] == max(stall.late_ms)
    assert "Done" in window.last_status and not window.last_status_error


def test_cancel_stops_the_sampler_within_a_step_and_a_new_run_replaces_the_old(qtbot, window, mr_nifti, tiny_prior):
    session = open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=500, samples=1)
    with qtbot.waitSignal(window.runner.frameShown, timeout=20_000):
        window.start_run()
    thread = window.runner.diffusion.current
    window.runner.cancel()
    assert thread.wait(5_000), "the sampler did not stop after cancel"
    assert len(session.run.steps_seen) < 500
    assert window.last_status.startswith("Cancelled at step")
    assert window.controls.run_button.text() == "Run" and not window.controls.cancel_button.isEnabled()

    # Restarting while running cancels the old run cleanly: only the new run's frames remain.
    with qtbot.waitSignal(window.runner.frameShown, timeout=20_000):
        window.start_run()
    old = window.runner.diffusion.current
    window.controls.steps.setValue(5)
    superseded = []
    window.runner.runFinished.connect(superseded.append)
    with qtbot.waitSignal(window.runner.runFinished, timeout=40_000, check_params_cb=bool):
        assert window.start_run()
    assert superseded == [False, True]  # the old run ended (cancelled), then the new one completed
    assert old.wait(5_000)
    assert [step for _, step in session.run.steps_seen] == [1, 2, 3, 4, 5]


def test_panes_are_linked_for_zoom_pan_slice_and_crosshair(qtbot, window, mr_nifti):
    session = open_scan(qtbot, window, mr_nifti)
    grid = window.grid
    qtbot.wait(50)
    before = np.array(grid.view_range("input"))
    grid["baseline"].view.scaleBy((0.5, 0.5))
    grid["recon"].view.translateBy((5.0, 3.0))
    qtbot.wait(50)
    names = ("input", "recon", "baseline", "variance")
    ranges = {name: np.array(grid.view_range(name)) for name in names}
    height = np.diff(ranges["input"][1])[0]
    assert height == pytest.approx(0.5 * np.diff(before[1])[0], rel=0.02)  # zooming one pane zoomed...
    for name in names:  # ...all of them: same centre, same millimetres per screen pixel
        np.testing.assert_allclose(ranges[name].mean(axis=1), ranges["input"].mean(axis=1), atol=1e-6)
        np.testing.assert_allclose(grid[name].view.viewPixelSize(), grid["input"].view.viewPixelSize(), rtol=0.01)

    grid["variance"].setFocus()
    qtbot.keyClick(grid["variance"], Qt.Key.Key_Up)
    assert session.slice_index == 3 and window.slider.value() == 3
    for name in ("input", "recon", "baseline", "variance"):
        assert grid[name].corner_bl.text().startswith("Slice 4/5")
    window.slider.setValue(0)
    assert session.slice_index == 0 and grid["input"].corner_bl.text().startswith("Slice 1/5")

    grid["recon"].hovered.emit(10.5, 20.5)  # as the mouse does, in scene millimetres
    for name in ("input", "recon", "baseline", "variance"):
        pane = grid[name]
        assert pane.cross_v.isVisible() and pane.cross_v.value() == 10.5 and pane.cross_h.value() == 20.5
    text = window.readout.text()
    assert "mm" in text and "voxel (10, 20, 0)" in text and "input" in text


def test_window_level_presets_and_right_drag(qtbot, window, tmp_path):
    ct = write_ct_dicom(tmp_path / "ct-series")
    session = open_scan(qtbot, window, ct)
    assert window.controls.task == "ct" and session.units == "HU"
    names = [window.preset_box.itemText(i) for i in range(window.preset_box.count())]
    assert names == ["Brain", "Soft tissue", "Lung", "Bone"]
    window.apply_preset(names.index("Lung"))
    assert (session.window.width, session.window.level) == (1500, -600)
    for name in ("input", "recon", "baseline"):
        assert window.grid[name].image.levels is None or tuple(window.grid[name].image.levels) == (-1350, 150)
    assert tuple(window.grid["input"].image.levels) == (-1350, 150)
    assert "W 1500 HU" in window.grid["input"].corner_br.text()
    window.apply_preset(names.index("Bone"))
    assert (session.window.width, session.window.level) == (2500, 480)

    before = session.window
    window.grid.windowDrag.emit("input", 40.0, -20.0)  # right: wider; up: brighter level
    assert session.window.width > before.width and session.window.level > before.level
    assert tuple(window.grid["input"].image.levels) == pytest.approx((session.window.low, session.window.high))


def test_mri_auto_preset_comes_from_percentiles(qtbot, window, mr_nifti):
    session = open_scan(qtbot, window, mr_nifti)
    window.apply_preset(0)
    data = session.display_data()
    body = data[data > data.min()]
    lo, hi = np.percentile(body, [1.0, 99.5])
    assert session.window.low == pytest.approx(lo, rel=1e-4) and session.window.high == pytest.approx(hi, rel=1e-4)


def test_error_maps_show_the_absolute_error_against_the_reference(qtbot, window, mr_nifti):
    session = open_scan(qtbot, window, mr_nifti)
    window.commands.set_error_maps(True)
    shown = window.grid["input"].image.image
    expected = np.abs(session.image("input") - session.image("reference"))
    np.testing.assert_allclose(shown, expected, rtol=1e-5, atol=1e-3)
    assert not window.grid["input"].colorbar.isHidden()
    window.commands.set_error_maps(False)
    np.testing.assert_allclose(window.grid["input"].image.image, session.image("input"))


def test_exports_are_readable_by_the_engine(qtbot, window, mr_nifti, tiny_prior, tmp_path):
    import json

    from PIL import Image

    from diffrecon.io import load_volume

    session = open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=2, samples=2)
    assert run_to_end(qtbot, window)
    assert "from the baseline (a hot start)" in window.last_status  # 2 steps from noise would give no image
    recon = session.image("recon")

    nii = window.commands.export("recon", tmp_path / "out" / "recon.nii.gz")
    back = load_volume(tmp_path / "out" / "recon.nii.gz")
    assert back.shape == (1, 64, 64)
    np.testing.assert_allclose(back.data[0], recon, rtol=1e-5, atol=1e-4)
    # The exported slice keeps its position in the patient.
    np.testing.assert_allclose(back.affine, session.volume.select_slices([2]).affine, atol=1e-4)
    sidecar = [p for p in nii if p.suffix == ".json"]
    assert sidecar and "tiny-mri" in json.loads(sidecar[0].read_text())["model"]

    window.commands.export("recon", tmp_path / "out" / "recon.h5")
    h5 = load_volume(tmp_path / "out" / "recon.h5")
    np.testing.assert_allclose(h5.data[0], recon, rtol=1e-5, atol=1e-4)

    window.commands.export("sigma", tmp_path / "out" / "sigma.nii.gz")
    np.testing.assert_allclose(load_volume(tmp_path / "out" / "sigma.nii.gz").data[0], session.image("sigma"),
                               rtol=1e-5, atol=1e-4)

    window.commands.export("recon", tmp_path / "out" / "recon-dicom")
    dicom = load_volume(tmp_path / "out" / "recon-dicom")
    assert dicom.shape == (1, 64, 64)
    assert np.abs(dicom.data[0] - recon).max() <= max(1.0, 0.01 * np.abs(recon).max())  # integer storage

    assert window.commands.save_png(tmp_path / "out" / "panes.png")
    png = Image.open(tmp_path / "out" / "panes.png")
    assert png.size == (window.grid.width(), window.grid.height())

    csv_path = window.commands.export_csv_to(tmp_path / "out" / "metrics.csv")
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("pane,method,psnr,ssim,nmse")
    assert {r.split(",")[0] for r in rows[1:]} == {"input", "diffusion"}


def test_a_corrupt_file_gives_one_sentence_and_the_app_keeps_running(qtbot, window, mr_nifti, tmp_path):
    session = open_scan(qtbot, window, mr_nifti)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b this is not a gzip stream at all" * 10)
    with qtbot.waitSignal(window.loadFailed, timeout=10_000) as blocker:
        window.open_path(bad)
    sentence = blocker.args[0]
    assert window.last_status == sentence and window.last_status_error
    assert "broken.nii.gz" in sentence and "\n" not in sentence and "Traceback" not in sentence
    assert sentence.endswith(".")
    assert window.session is session and window.grid["input"].has_image  # the open scan stays
    open_scan(qtbot, window, mr_nifti)  # and the app still works


def test_engine_errors_reach_the_status_bar(qtbot, window, mr_nifti, tmp_path):
    open_scan(qtbot, window, mr_nifti)
    not_a_prior = tmp_path / "not-a-prior.safetensors"
    not_a_prior.write_bytes(b"garbage")
    quick_settings(window, not_a_prior, steps=2, samples=1)
    assert run_to_end(qtbot, window) is False
    assert "not-a-prior.safetensors" in window.last_status and window.last_status_error
    assert "\n" not in window.last_status


def test_whole_volume_runs_the_slice_on_screen_first_and_display_toggles(qtbot, window, mr_nifti, tiny_prior):
    session = open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=2, samples=2)
    c = window.controls
    c.scope.setCurrentIndex(c.scope.findData("volume"))
    assert run_to_end(qtbot, window)
    batches = [start for start, step in session.run.steps_seen if step == 1]
    assert batches == [2, 1]  # order 2, 3, 4, 0, 1 in batches of 4: [2, 3, 4, 0], then [1]
    steps_per_batch = max(step for _, step in session.run.steps_seen)
    assert f"{steps_per_batch} step{'s' if steps_per_batch > 1 else ''} per batch of 4 slices" in window.last_status
    assert session.layers["recon"].filled.all() and session.run.slices == [0, 1, 2, 3, 4]

    window.set_slice(0)
    window.commands.recon_shows.setCurrentIndex(1)  # the sampler's noisy state x_t
    np.testing.assert_allclose(window.grid["recon"].image.image, session.image("sample"))
    assert "x_t" in window.grid["recon"].title_text
    window.commands.variance_mode.setCurrentIndex(1)  # sigma squared
    np.testing.assert_allclose(window.grid["variance"].image.image, session.image("sigma") ** 2, rtol=1e-5)
    assert "σ²" in window.grid["variance"].title_text

    window.commands.set_layout("1x4")
    qtbot.wait(50)
    tops = {window.grid[name].geometry().top() for name in ("input", "recon", "baseline", "variance")}
    assert len(tops) == 1  # one row
    window.commands.set_layout("2x2")
    qtbot.wait(50)
    assert len({window.grid[name].geometry().top() for name in ("input", "recon", "baseline", "variance")}) == 2


def test_drag_and_drop_opens_the_file(qtbot, window, mr_nifti):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(mr_nifti))])
    event = QDropEvent(QPointF(100, 100), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(window.scanLoaded, timeout=20_000):
        window.dropEvent(event)
    assert window.session.path == mr_nifti


def test_first_start_opens_the_bundled_sample_ready_to_run(qtbot, window):
    from diffrecon.viewer.paths import default_model_for, default_sample

    session = open_scan(qtbot, window, default_sample(), inputs=False)
    window.open_default_sample()
    assert session.volume.shape == (20, 217, 181)
    assert window.controls.task == "mri" and window.controls.simulate.isChecked()
    assert window.controls.model_path == default_model_for("mri")  # the bundled prior, when it is there
    assert window.commands.recent() == []  # the sample is not a "recent file"
    from PySide6.QtCore import Qt

    box = window.controls.model  # every prior's whole label and file in its tooltip (the panel may cut it)
    for i in range(box.count()):
        if box.itemData(i):
            assert box.itemText(i) in box.itemData(i, Qt.ItemDataRole.ToolTipRole)
            assert box.itemData(i) in box.itemData(i, Qt.ItemDataRole.ToolTipRole)


def test_the_controls_run_each_task_with_its_measured_defaults(qtbot, window, mr_nifti):
    from diffrecon.modalities import REGISTRY

    open_scan(qtbot, window, mr_nifti)
    c = window.controls
    options = c.diffusion_options()
    assert options.symmetric and options.eta == 0.0 and options.samples == 1  # a pair: variance at live speed
    assert (options.sampler, options.guidance) == ("ddim", REGISTRY["mri"].diffusion_defaults["guidance"])
    assert options.blend_tv and c.blend.isChecked() and c.blend.isVisibleTo(c)  # MRI's hold-out blend with TV
    c.blend.setChecked(False)  # the prior's own image
    assert not c.diffusion_options().blend_tv
    c.modality.setCurrentIndex(c.modality.findData("ct"))
    assert c.diffusion_options().blend_tv  # each task starts from its own defaults
    c.modality.setCurrentIndex(c.modality.findData("denoise"))
    assert c.diffusion_options().guidance == REGISTRY["denoise"].diffusion_defaults["guidance"] == "projection"
    assert not c.diffusion_options().blend_tv and not c.blend.isVisibleTo(c)  # nothing to hold out when A = I
    c.guidance.setCurrentIndex(c.guidance.findData("dps"))  # the user's choice wins
    assert c.diffusion_options().guidance == "dps" and c.diffusion_options().symmetric


def test_a_bundled_expert_runs_the_last_steps_and_the_status_line_says_so(qtbot, window, mr_nifti, tmp_path,
                                                                         monkeypatch):
    from diffrecon.diffusion.checkpoint import update_metadata

    from viewer_support import write_tiny_prior

    models = tmp_path / "resources" / "models"
    models.mkdir(parents=True)
    prior = write_tiny_prior(models / "mri-brain.safetensors")
    expert = write_tiny_prior(models / "mri-brain-lowt.safetensors")
    update_metadata(expert, {"noise_range": [0.01, 1.0]})
    monkeypatch.setenv("DIFFRECON_RESOURCES", str(tmp_path / "resources"))
    open_scan(qtbot, window, mr_nifti)
    quick_settings(window, prior, steps=10, samples=1)
    assert run_to_end(qtbot, window) is True
    assert "(the last 3 by mri-brain-lowt)" in window.last_status, window.last_status
    assert window.session.run.provenance["diffusion"]["low_noise_expert"] == "mri-brain-lowt.safetensors"
