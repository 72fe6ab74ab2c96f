"""The multiplanar view: axial, coronal and sagittal planes of an oblique, anisotropic
volume at their true aspect, with edge letters from the affine, one 3D crosshair, and a
whole-volume run that fills the reformats slice by slice (offscreen, real widgets)."""

from __future__ import annotations

import numpy as np
import pytest

from diffrecon.viewer.geometry import direction_label
from viewer_support import open_scan, quick_settings, run_to_end

pytest_plugins = ("viewer_support",)  # its fixtures: window, tiny_prior

SPACING = (3.0, 0.8, 1.2)  # mm along slices, rows, cols: every axis different
SHAPE = (6, 40, 30)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def oblique_affine() -> np.ndarray:
    """Slices towards S, rows towards P, columns towards L, turned 25 degrees about S and tilted 20 about R."""
    base = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # columns: slice, row, col directions
    directions = _rotation(0, 20) @ _rotation(2, 25) @ base
    affine = np.eye(4)
    affine[:3, :3] = directions * np.array(SPACING)
    affine[:3, 3] = (-20.0, 15.0, 5.0)
    return affine


def write_oblique(path):
    from diffrecon.io import save_volume
    from diffrecon.io.volume import Volume

    rng = np.random.default_rng(0)
    data = (200 + 50 * rng.random(SHAPE)).astype(np.float32)
    data[:, 10:30, 8:22] += 400.0  # a block, so every plane shows structure
    save_volume(Volume(data, SPACING, oblique_affine(), modality="MR"), path)
    return path


def expected_planes(affine: np.ndarray):
    """What each plane must show, derived here from the affine alone: (name, extent mm, edge letters)."""
    a0, a1, a2 = (affine[:3, k] for k in range(3))
    n0, n1, n2 = SHAPE
    d0, d1, d2 = SPACING
    axial = ("axial", (n2 * d2, n1 * d1),  # as stored: rows down, columns right
             {"bottom": direction_label(a1), "top": direction_label(-a1), "right": direction_label(a2),
              "left": direction_label(-a2)})
    # Reformats: the slice axis (the one along S) runs up the screen, the other in-plane axis right.
    coronal = ("coronal", (n2 * d2, n0 * d0),
               {"top": direction_label(a0), "bottom": direction_label(-a0), "right": direction_label(a2),
                "left": direction_label(-a2)})
    sagittal = ("sagittal", (n1 * d1, n0 * d0),
                {"top": direction_label(a0), "bottom": direction_label(-a0), "right": direction_label(a1),
                 "left": direction_label(-a1)})
    return [axial, coronal, sagittal]


def test_plane_geometry_follows_the_affine():
    from diffrecon.io.volume import Volume
    from diffrecon.viewer.planes import planes_of

    affine = oblique_affine()
    volume = Volume(np.zeros(SHAPE, np.float32), SPACING, affine, modality="MR")
    planes = planes_of(volume)
    for plane, (name, extent, letters) in zip(planes, expected_planes(affine)):
        assert plane.name == name
        assert plane.extent_mm == pytest.approx(extent)
        assert plane.edge_labels() == letters
    # Oblique letters, main direction first: the turned columns point left and posterior, the
    # turned and tilted rows posterior, right and inferior; the tilted slice axis superior and posterior.
    assert planes[0].edge_labels()["right"] == "LP" and planes[0].edge_labels()["bottom"] == "PRI"
    assert planes[1].edge_labels()["top"] == "SP" and planes[2].edge_labels()["bottom"] == "IA"
    # A voxel's scene position maps back to the voxel, in every plane.
    voxel = (4, 17, 9)
    for plane in planes:
        x, y = plane.scene_position(voxel)
        assert plane.voxel_at(x, y, voxel[plane.normal]) == voxel
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    sagittal = planes[2].image(data, 9)
    np.testing.assert_array_equal(sagittal, data[::-1, :, 9])  # superior (the last slice) at the top
    filled = np.zeros(SHAPE[0], bool)
    filled[[1, 2]] = True
    partial = planes[1].image(data, 17, filled)
    assert np.isnan(partial[0]).all() and not np.isnan(partial[-2]).any()  # unfinished slices stay empty
    assert planes[0].image(data, 0, filled) is None


@pytest.mark.gui
def test_mpr_panes_show_the_true_aspect_and_the_affines_letters_and_share_one_crosshair(qtbot, window, tmp_path):
    session = open_scan(qtbot, window, write_oblique(tmp_path / "oblique.nii.gz"))
    window.commands.set_layout("mpr", remember=False)
    assert window.stack.page is window.mpr
    expected = expected_planes(session.volume.affine)
    for image in ("input", "recon", "baseline", "variance"):
        for column, (name, (width, height), letters) in enumerate(expected):
            pane = window.mpr[f"{image}:{column}"]
            assert pane.isVisible() and name in pane.title_text
            assert {side: label.text() for side, label in pane.edges.items()} == letters, (image, name)
            rect = pane.image.mapRectToParent(pane.image.boundingRect())
            if pane.has_image:  # drawn at the voxel spacing: millimetres, not pixels
                assert (rect.width(), rect.height()) == pytest.approx((width, height))
    for column in range(3):
        assert window.mpr[f"input:{column}"].has_image

    # A click in the coronal plane moves the 3D cursor: the axial plane shows the clicked slice.
    coronal = window.mpr.planes[1]
    target = (1, session.cursor[1], 12)
    x, y = coronal.scene_position(target)
    window.mpr["input:1"].clicked.emit(x, y)
    assert session.cursor == target and session.slice_index == 1 and window.slider.value() == 1
    axial_pane = window.mpr["input:0"]
    np.testing.assert_array_equal(axial_pane.image.image, session.image("input", 1))
    sagittal_pane, sagittal = window.mpr["input:2"], window.mpr.planes[2]
    np.testing.assert_allclose(sagittal_pane.image.image, sagittal.image(session.layers["input"].data, 12))
    for column, plane in enumerate(window.mpr.planes):  # every plane draws the crosshair through the voxel
        pane = window.mpr[f"recon:{column}"]
        cx, cy = plane.scene_position(target)
        assert pane.cross_v.isVisible() and pane.cross_v.value() == pytest.approx(cx)
        assert pane.cross_h.value() == pytest.approx(cy)

    window.commands.planes_of.setCurrentIndex(window.commands.planes_of.findData("baseline"))
    window.commands.set_layout("mpr-one", remember=False)
    visible = sorted(name for name, pane in window.mpr.panes.items() if pane.isVisible())
    assert visible == ["baseline:0", "baseline:1", "baseline:2"]
    window.commands.set_layout("2x2", remember=False)
    assert window.stack.page is window.grid
    # The four panes, not drawn while hidden, show the slice the planes moved to.
    assert window.grid["input"].corner_bl.text().startswith("Slice 2/6")
    np.testing.assert_array_equal(window.grid["input"].image.image, session.image("input", 1))


@pytest.mark.gui
def test_a_whole_volume_run_fills_the_reformats_and_a_cancel_keeps_finished_slices(qtbot, window, tiny_prior,
                                                                                   tmp_path):
    from viewer_support import write_mr_nifti

    session = open_scan(qtbot, window, write_mr_nifti(tmp_path / "vol.nii.gz", slices=9))
    window.commands.set_layout("mpr", remember=False)
    quick_settings(window, tiny_prior, steps=3, samples=1)
    window.controls.scope.setCurrentIndex(window.controls.scope.findData("volume"))
    states = []
    session.events.run_state.connect(states.append)
    assert run_to_end(qtbot, window, timeout=120_000) is True
    assert sorted(session.run.slices_finished) == list(range(9))
    assert session.layers["recon"].filled.all()
    coronal = window.mpr["recon:1"].image.image
    assert coronal.shape[0] == 9 and not np.isnan(coronal).any()
    counted = [s.slices_done for s in states if s.running]
    assert counted == sorted(counted) and max(counted) == 9
    texts = [s.bar_text for s in states if s.running and s.done_steps]
    assert any(t.startswith("slice ") and "/9" in t and "ETA" in t for t in texts)

    # Cancel after the first batch of four: its slices stay, the others are not computed.
    quick_settings(window, tiny_prior, steps=60, samples=1)
    window.controls.scope.setCurrentIndex(window.controls.scope.findData("volume"))
    assert window.start_run()
    qtbot.waitUntil(lambda: session.run_state.slices_done >= 4, timeout=120_000)
    window.runner.cancel()
    finished = sorted(session.run.slices_finished)
    assert len(finished) == 4 and session.layers["recon"].filled[finished].all()
    assert "cancelled at step" in session.run.cancelled
    coronal = window.mpr["recon:1"].image.image
    rows_drawn = ~np.isnan(coronal).all(axis=1)
    assert rows_drawn.sum() == int(session.layers["recon"].filled.sum()) < 9  # the rest left empty
