"""What a new user trips over in the viewer (issue 16), checked on real widgets offscreen.

Pixels are read from the window's backing store (what was actually painted, as on a
screen), not from a fresh render: stale areas only show there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtTest import QTest

from viewer_support import open_scan, quick_settings, run_to_end

pytest_plugins = ("viewer_support",)  # its fixtures: window, mr_nifti, tiny_prior

pytestmark = pytest.mark.gui


def painted(qtbot, window, widget) -> np.ndarray:
    """(H, W, 3) uint8: the pixels of ``widget`` as the window's backing store holds them now."""
    qtbot.wait(80)  # let queued paints land
    image = QGuiApplication.primaryScreen().grabWindow(window.winId()).toImage()
    top_left = widget.mapTo(window, QPoint(0, 0))
    image = image.copy(top_left.x(), top_left.y(), widget.width(), widget.height()).convertToFormat(
        image.Format.Format_RGB888)
    ptr = image.constBits()
    rows = np.frombuffer(ptr, np.uint8, image.bytesPerLine() * image.height()).reshape(image.height(), -1)
    return rows[:, : image.width() * 3].reshape(image.height(), image.width(), 3).copy()


def crosshair_lines(pixels: np.ndarray) -> tuple[int, int]:
    """(columns, rows) that hold a dashed crosshair line: long runs of amber pixels.

    The panes' corners and edges (titles, orientation letters, colour bar) are left out.
    """
    core = pixels[95:-95, 30:-80].astype(int)
    amber = (core[..., 0] - core[..., 2] > 50) & (core[..., 0] > 70)
    return int((amber.sum(axis=0) >= 20).sum()), int((amber.sum(axis=1) >= 20).sum())


# ----- 1: stale panes and ghost crosshairs -----

def test_a_pane_after_a_slice_change_shows_no_trace_of_the_old_slice(qtbot, window, mr_nifti):
    session = open_scan(qtbot, window, mr_nifti)
    shown = session.slice_index
    # The last run covered this slice only: a white reconstruction the old slice leaves behind.
    session.layers["recon"].put([shown], np.full((1, 64, 64), 1e4, np.float32))
    session.run.slices = [shown]
    window.renderer.render_all()
    pane = window.grid["recon"]
    assert (painted(qtbot, window, pane).min(axis=2) > 240).sum() > 5000  # the white slice is on screen

    window.set_slice(shown + 1)
    assert "Not computed for this slice" in pane.hint.text()
    white = painted(qtbot, window, pane).min(axis=2) > 240
    assert white.sum() == 0, f"{white.sum()} pixels of the previous slice are still on screen"


def test_crosshairs_leave_no_ghost_lines_after_a_window_level_drag(qtbot, window, mr_nifti):
    open_scan(qtbot, window, mr_nifti)
    viewport = window.grid["input"].viewport()
    QTest.mouseMove(viewport, QPoint(150, 150))
    QTest.mousePress(viewport, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, QPoint(150, 150))
    for i in range(1, 10):  # right drag: window/level, the crosshair following the mouse
        QTest.mouseMove(viewport, QPoint(150 + 8 * i, 150 + 5 * i))
        qtbot.wait(15)
    QTest.mouseRelease(viewport, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, QPoint(222, 195))
    QTest.mouseMove(viewport, QPoint(100, 250))
    for name in ("recon", "baseline", "variance"):  # panes without an image: nothing repaints them otherwise
        columns, rows = crosshair_lines(painted(qtbot, window, window.grid[name]))
        assert columns <= 2 and rows <= 2, f"{name}: {columns} vertical and {rows} horizontal lines on screen"


def test_the_readout_follows_a_slice_change(qtbot, window, mr_nifti):
    session = open_scan(qtbot, window, mr_nifti)
    window.grid.hovered.emit(20.0, 30.0)
    assert f", {session.slice_index})" in window.readout.text()
    window.set_slice(session.slice_index + 1)
    assert f", {session.slice_index})" in window.readout.text(), window.readout.text()


# ----- 10: layout -----

def test_a_fitted_slice_sits_in_the_middle_of_its_pane(qtbot, window, mr_nifti):
    open_scan(qtbot, window, mr_nifti)
    for layout in ("2x2", "1x4"):
        window.commands.set_layout(layout, remember=False)
        qtbot.wait(50)
        window.grid.fit()
        pane = window.grid["input"]
        rect = pane.view.mapViewToDevice(pane.image.mapRectToParent(pane.image.boundingRect())).boundingRect()
        off = rect.center().x() - pane.view.geometry().center().x()
        assert abs(off) <= 2, f"{layout}: the slice sits {off:.0f} px off the pane's centre"
        if layout == "2x2":  # a colour bar never covers the slice (narrow 1x4 panes trade that for size)
            assert rect.right() <= pane.width() - 64


def test_titles_in_the_one_by_four_layout_are_whole(qtbot, window, mr_nifti):
    open_scan(qtbot, window, mr_nifti)
    window.commands.set_layout("1x4", remember=False)
    qtbot.wait(50)
    for pane in window.grid.panes.values():
        shown = pane.title.text()
        assert "…" not in shown, shown
        assert shown.split() == pane.title_text.split()
        assert pane.title.x() + pane.title.width() <= pane.width()


def test_the_metrics_table_has_exactly_three_rows_on_screen(qtbot, window, mr_nifti):
    open_scan(qtbot, window, mr_nifti)
    table = window.metrics.table
    rows = table.verticalHeader().length()
    assert rows > 0 and table.viewport().height() - rows <= 1, (table.viewport().height(), rows)


# ----- 7, 8: first impression, cancel, the first frames -----

def _head_ct(folder, description: str = ""):
    """A CT slab shaped like a head: 19 cm across, brain inside a ring of bone, air outside."""
    from diffrecon.io import save_volume
    from diffrecon.io.volume import Volume, affine_from_spacing

    n, spacing = 128, (2.0, 1.5, 1.5)
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(x / 0.85, y)
    head = np.where(r < 55, 35.0, np.where(r < 62, 1100.0, -1000.0)).astype(np.float32)
    data = np.repeat(head[None], 3, axis=0)
    volume = Volume(data, spacing, affine_from_spacing(spacing), modality="CT", units="HU", window=(40.0, 400.0),
                    metadata={"series_description": description} if description else {})
    save_volume(volume, folder)
    return folder


def test_a_head_ct_opens_in_the_brain_window(qtbot, window, tmp_path):
    session = open_scan(qtbot, window, _head_ct(tmp_path / "head"), inputs=False)
    assert window.preset_box.currentText() == "Brain"
    assert (session.window.level, session.window.width) == (40.0, 80.0)  # not the header's W400
    assert "Brain window" in window.last_status


def test_anatomy_comes_from_the_header_words_or_the_shape():
    from diffrecon.io.volume import Volume
    from diffrecon.viewer.windowing import anatomy_preset, ct_anatomy, load_presets

    presets = load_presets()["CT"]
    body = np.full((1, 200, 200), -1000.0, np.float32)
    body[0, 20:180, 10:190] = 40.0  # 36 x 32 cm of soft tissue: a body, not a head
    trunk = Volume(body, (5.0, 2.0, 2.0), modality="CT", units="HU")
    assert ct_anatomy(trunk) is None and anatomy_preset(trunk, presets) is None
    trunk.metadata = {"dicom_source": {"tags": {"BodyPartExamined": "HEAD"}}}
    assert ct_anatomy(trunk) == "head" and presets[anatomy_preset(trunk, presets)].name == "Brain"
    trunk.metadata = {"series_description": "Thorax lung 1mm"}
    assert presets[anatomy_preset(trunk, presets)].name == "Lung"
    mr = Volume(body, (5.0, 2.0, 2.0), modality="MR")
    mr.metadata = {"series_description": "head"}
    assert ct_anatomy(mr) is None


def test_the_progress_says_what_it_does_before_the_first_step(qtbot, window, mr_nifti, tiny_prior):
    open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=5, samples=1)  # 5: from noise (fewer hot-start from TV)
    phases = []
    window.runner.phaseShown.connect(phases.append)
    assert run_to_end(qtbot, window) is True
    assert phases[0].startswith("loading the prior")
    # MRI's default (dds-tv) first chooses its TV weight from held-out data; other guidance starts sampling.
    assert "first sampling step" in phases or "choosing the TV weight from held-out measurements" in phases
    assert "simulating the measurements" in phases


def test_a_blended_run_streams_then_says_how_much_it_trusted_the_prior(qtbot, window, mr_nifti, tiny_prior, tmp_path):
    """With Blend with TV (MRI's default) the reconstruction's frames come first, then the
    hold-out run's; the status line and the export's provenance say what weight was chosen."""
    open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=5, samples=1, blend=True)
    frames = []
    window.runner.frameShown.connect(lambda *a: frames.append(window.session.run_state.done_steps))
    assert run_to_end(qtbot, window) is True
    assert "% TV by held-out data" in window.last_status and "% prior" in window.last_status
    adaptation = window.session.run.provenance["adaptation"]
    assert 0.0 <= adaptation[0]["blend_weight"] <= 1.0 and adaptation[0]["blend"]["steps"] == 5
    written = window.commands.export("recon", tmp_path / "blended.nii.gz")
    sidecar = json.loads(next(p for p in written if p.suffix == ".json").read_text())
    assert "blend_weight" in json.dumps(sidecar)


def test_cancel_labels_the_unfinished_result(qtbot, window, mr_nifti, tiny_prior, tmp_path):
    open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=500, samples=1)
    with qtbot.waitSignal(window.runner.frameShown, timeout=20_000):
        window.start_run()
    window.runner.cancel()
    title = window.grid["recon"].title_text
    assert "cancelled at step" in title and "/500" in title
    assert "cancelled" in window.grid["variance"].title_text
    assert window.metrics.caption.text() != "Running..."
    written = window.commands.export("recon", tmp_path / "unfinished.nii.gz")
    sidecar = json.loads(next(p for p in written if p.suffix == ".json").read_text())
    assert "cancelled at step" in json.dumps(sidecar)
    # A new run clears the label.
    quick_settings(window, tiny_prior, steps=2, samples=1)
    assert run_to_end(qtbot, window) is True
    assert "cancelled" not in window.grid["recon"].title_text


def test_the_uncertainty_scale_stays_within_the_image_window(qtbot, window, mr_nifti, tiny_prior):
    session = open_scan(qtbot, window, mr_nifti)
    quick_settings(window, tiny_prior, steps=3, samples=1)
    tops = []
    window.runner.frameShown.connect(lambda _: tops.append(window.grid["variance"].colorbar.levels[1]))
    assert run_to_end(qtbot, window) is True
    sigma = session.image("sigma")
    assert np.percentile(sigma, 99.5) > session.window.width  # an untrained prior disagrees wildly...
    assert tops and max(tops) <= session.window.width + 1e-3  # ...and the bar still reads in the window's units


def test_a_first_frame_of_noise_is_drawn_within_the_measurements_range(qtbot, window, mr_nifti):
    session = open_scan(qtbot, window, mr_nifti)
    shown = session.slice_index
    renderer, pane = window.renderer, window.grid["recon"]
    in_lo, in_hi = np.percentile(session.image("input"), [1, 99])
    # What a sampler's first x0 estimate looks like: noise ten times wider than any value measured.
    noise = np.abs(np.random.default_rng(0).normal(0, 10 * (in_hi - in_lo), (1, 64, 64))).astype(np.float32)
    session.layers["recon"].put([shown], noise)
    renderer.running, renderer.progress_text = True, "step 1/25"
    renderer.render("recon")
    assert np.percentile(pane.image.image, [1, 99]) == pytest.approx((in_lo, in_hi), rel=1e-3, abs=1e-3)
    assert (pane.image.image > session.window.high).mean() < 0.2  # not a saturated block
    assert "scaled to the input's range" in pane.title_text
    np.testing.assert_array_equal(session.image("recon"), noise[0])  # stored values stay as they are

    settled = session.image("input") * 1.1  # an estimate within the measurements' spread: drawn as it is
    session.layers["recon"].put([shown], settled[None])
    renderer.render("recon")
    np.testing.assert_array_equal(pane.image.image, settled)
    assert "scaled" not in pane.title_text
    renderer.running, renderer.progress_text = False, "done"
    session.layers["recon"].put([shown], noise)
    renderer.render("recon")  # a finished result is never scaled
    np.testing.assert_array_equal(pane.image.image, noise[0])


def test_the_empty_uncertainty_pane_matches_the_default_of_one_sample(qtbot, window, mr_nifti):
    open_scan(qtbot, window, mr_nifti)
    assert window.controls.samples.value() == 1
    hint = window.grid["variance"].hint.text()
    assert hint and "2 or more" not in hint


# ----- 9: words and help -----

def test_jargon_has_tooltips_in_plain_words(qtbot, window):
    c = window.controls
    for box in (c.sampler, c.guidance):
        assert box.toolTip()
        for i in range(box.count()):
            assert box.itemData(i, Qt.ItemDataRole.ToolTipRole), box.itemText(i)
    dds = c.guidance.itemData(c.guidance.findData("dds"), Qt.ItemDataRole.ToolTipRole)
    assert "conjugate-gradient" in dds and "measure" in dds
    projection = c.guidance.itemData(c.guidance.findData("projection"), Qt.ItemDataRole.ToolTipRole)
    assert "measured data" in projection
    shows = window.commands.recon_shows
    assert "clean image" in shows.itemData(0, Qt.ItemDataRole.ToolTipRole)
    for widget in (c.steps, c.model, c.baseline, c.views, c.acceleration):
        assert widget.toolTip(), widget


def test_help_menu_has_a_guide_and_the_shortcuts(qtbot, window, mr_nifti):
    open_scan(qtbot, window, mr_nifti, inputs=False)
    menus = [a.text().replace("&", "") for a in window.menuBar().actions()]
    assert "Help" in menus
    window.commands.guide.trigger()
    dialog = window.commands.help_dialog
    assert dialog.isVisible() and "Press Run" in dialog.text.toPlainText()
    window.commands.keys.trigger()
    text = dialog.text.toPlainText()
    for keys, what in (("Ctrl+R", "Run"), ("Esc", "Cancel"), ("Right drag", "window/level"), ("1", "Auto")):
        assert keys in text and what in text, (keys, what)


# ----- 10: dialogs start in sensible folders -----

def test_dialogs_start_where_the_user_is_and_never_in_the_resources(qtbot, window, tmp_path, monkeypatch):
    from diffrecon.viewer.paths import resources_dir

    monkeypatch.chdir(tmp_path)
    commands = window.commands
    assert commands.open_dir() == str(tmp_path) and commands.export_dir() == str(tmp_path)
    window.settings.setValue("last_export_dir", str(resources_dir() / "samples"))  # an old setting
    assert commands.export_dir() == str(tmp_path)
    scans = tmp_path / "scans"
    scans.mkdir()
    commands._remember("last_open_dir", str(scans / "a.nii.gz"))
    assert commands.open_dir() == str(scans) and commands.export_dir() == str(tmp_path)


# ----- closing during a long unit of work -----

def test_closing_waits_for_a_job_longer_than_ten_seconds_instead_of_aborting(qtbot, window):
    """A CT baseline solve on a busy machine outlasts a 10 s bound; Qt aborts the process when a
    running QThread is destroyed, so closing waits for the unit of work to end."""
    import time

    def slow_solve(cancelled):
        time.sleep(10.5)  # one uncancellable unit, as a TV solve is
        yield None

    thread = window.runner.baseline.start("baseline", slow_solve)
    window.close()
    assert not window.isVisible()
    assert thread.isFinished(), "close returned while the worker thread was still running"


def test_steps_at_the_default_follow_the_samples_to_where_sigma_was_calibrated(qtbot, window, mr_nifti):
    """MRI runs 50 steps, but 25 with uncertainty (its σ calibration's): the Steps box shows the
    steps that will run, and a number the user typed stays."""
    from diffrecon import modalities

    open_scan(qtbot, window, mr_nifti)
    controls, mri = window.controls, modalities.get("mri")
    plain, calibrated = mri.diffusion_defaults["steps"], mri.uncertainty_defaults["steps"]
    assert controls.task == "mri" and controls.steps.value() == plain != calibrated
    controls.samples.setValue(8)
    assert controls.steps.value() == calibrated and controls.diffusion_options().steps == calibrated
    controls.samples.setValue(1)
    assert controls.steps.value() == plain and controls.diffusion_options().steps == plain
    controls.steps.setValue(40)
    controls.samples.setValue(4)
    assert controls.steps.value() == 40 and controls.diffusion_options().steps == 40


def test_ct_steps_follow_the_dose_while_at_the_default(qtbot, window):
    """CT runs 50 steps on noiseless views and 25 with dose noise: the Steps box follows the dose
    while it shows the default, and a number the user typed stays."""
    from diffrecon.modalities import CALIBRATED_STEPS, CT_SPARSE_VIEW_STEPS

    controls = window.controls
    controls.modality.setCurrentIndex(controls.modality.findData("ct"))
    assert controls.task == "ct" and controls.dose.value() == 0.0
    assert controls.steps.value() == CT_SPARSE_VIEW_STEPS == controls.diffusion_options().steps
    controls.dose.setValue(0.25)
    assert controls.steps.value() == CALIBRATED_STEPS == controls.diffusion_options().steps
    controls.dose.setValue(0.0)
    assert controls.steps.value() == CT_SPARSE_VIEW_STEPS
    controls.steps.setValue(30)
    controls.dose.setValue(0.5)
    assert controls.steps.value() == 30 and controls.diffusion_options().steps == 30


def test_ct_views_follow_the_dose_as_the_cli_takes_them(qtbot, window):
    """'25 % dose' means 180 views in the panel as in `reconstruct --dose 0.25` (one rule,
    MeasurementSettings'), 60 noiseless; views the user typed stay through dose changes."""
    from diffrecon.measurements import MeasurementSettings

    controls = window.controls
    controls.modality.setCurrentIndex(controls.modality.findData("ct"))
    assert controls.views.value() == MeasurementSettings("ct").views == 60
    controls.dose.setValue(0.25)
    assert controls.measurement_settings().views == MeasurementSettings("ct", dose=0.25).views == 180
    controls.dose.setValue(0.5)
    assert controls.views.value() == 180
    controls.dose.setValue(0.0)
    assert controls.measurement_settings().views == 60
    controls.views.setValue(90)
    controls.dose.setValue(0.25)
    assert controls.measurement_settings().views == 90 and controls.measurement_settings().dose == 0.25
    controls.dose.setValue(0.0)
    assert controls.views.value() == 90
