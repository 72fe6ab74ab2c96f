"""The viewer's Qt-free parts: geometry from the affine, window/level and its presets, export of layers."""

from __future__ import annotations

import numpy as np
import pytest

from diffrecon.io.volume import Volume, affine_from_spacing
from diffrecon.viewer.geometry import SliceGeometry, direction_label
from diffrecon.viewer.run_controller import processing_order
from diffrecon.viewer.windowing import WindowLevel, auto_window, initial_window, load_presets, presets_for


def test_edge_labels_follow_the_affine():
    axial = SliceGeometry(affine_from_spacing((2.0, 0.5, 0.5)), (3, 10, 12), (2.0, 0.5, 0.5))
    assert axial.edge_labels() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert axial.slice_label() == "S"
    # A coronal slab stored with rows towards inferior and columns towards the patient's right.
    coronal = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], float)
    assert SliceGeometry(coronal, (3, 10, 12), (1, 1, 1)).edge_labels() == {
        "top": "S", "bottom": "I", "left": "L", "right": "R"}
    # 30 degrees oblique columns: main letter first, then the secondary one.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    assert direction_label(np.array([-c, s, 0.0])) == "LA"


def test_pixels_and_positions_in_millimetres():
    g = SliceGeometry(affine_from_spacing((2.0, 0.5, 0.25)), (3, 10, 12), (2.0, 0.5, 0.25))
    assert g.extent_mm == (3.0, 5.0)  # 12 columns of 0.25 mm, 10 rows of 0.5 mm: the true aspect
    assert g.pixel_at(0.3, 4.9) == (9, 1)
    assert g.pixel_at(3.1, 1.0) is None
    np.testing.assert_allclose(g.patient_position(1, 2, 4), [-1.0, -1.0, 2.0])
    assert g.format_position(1, 2, 4) == "L 1.0  P 1.0  S 2.0 mm"
    assert g.slice_location(2) == "S 4.0 mm"


def test_window_level_and_drag():
    w = WindowLevel.from_range(-100.0, 300.0)
    assert (w.level, w.width, w.low, w.high) == (100.0, 400.0, -100.0, 300.0)
    wider = w.dragged(50, 0, data_span=1000.0)
    assert wider.width == pytest.approx(500.0) and wider.level == w.level
    brighter = w.dragged(0, -25, data_span=1000.0)  # dragging up raises the level
    assert brighter.level == pytest.approx(150.0)
    assert w.dragged(-10_000, 0, 1000.0).width > 0
    assert w.describe("HU") == "W 400 HU  L 100 HU"


def test_presets_file_has_the_radiology_ct_windows_and_auto_mri():
    presets = load_presets()
    ct = {p.name: (p.width, p.level) for p in presets_for("CT", "HU", presets)}
    assert ct == {"Brain": (80, 40), "Soft tissue": (400, 40), "Lung": (1500, -600), "Bone": (2500, 480)}
    mr = presets_for("MR", "a.u.", presets)
    assert mr and all(p.auto_percentiles is not None for p in mr)
    data = np.linspace(0, 100, 10_001, dtype=np.float32).reshape(1, 1, -1)
    window = mr[0].window_for(data)
    assert window.low == pytest.approx(1.0, abs=0.05) and window.high == pytest.approx(99.5, abs=0.05)


def test_auto_window_ignores_the_empty_background():
    data = np.zeros((1, 100, 100), np.float32)
    data[0, 25:75, 25:75] = np.linspace(50, 150, 2500).reshape(50, 50)
    w = auto_window(data, 0.0, 100.0)
    assert w.low == pytest.approx(50.0) and w.high == pytest.approx(150.0)
    assert initial_window(data, (40.0, 400.0), "HU") == WindowLevel(40.0, 400.0)
    assert initial_window(data, None, "HU") == WindowLevel(40.0, 400.0)


def test_the_slice_on_screen_is_processed_first():
    assert processing_order(6, 4, whole_volume=True) == [4, 5, 0, 1, 2, 3]
    assert processing_order(6, 4, whole_volume=False) == [4]


def test_export_writes_only_computed_slices_at_their_positions(tmp_path):
    from diffrecon.errors import DiffreconError
    from diffrecon.io import load_volume
    from diffrecon.viewer.export import export_volume
    from diffrecon.viewer.session import Session

    volume = Volume(np.random.default_rng(0).random((4, 16, 16), dtype=np.float32), (3.0, 1.0, 1.0),
                    affine_from_spacing((3.0, 1.0, 1.0)), modality="MR")
    session = Session(volume)
    with pytest.raises(DiffreconError, match="press Run"):
        export_volume(session, "recon", tmp_path / "none.nii.gz")
    session.layers["recon"].put(np.array([1, 2]), volume.data[1:3] * 2)
    export_volume(session, "recon", tmp_path / "two.nii.gz")
    back = load_volume(tmp_path / "two.nii.gz")
    np.testing.assert_allclose(back.data, volume.data[1:3] * 2, rtol=1e-6)
    np.testing.assert_allclose(back.affine[:3, 3], volume.affine[:3, :3] @ [1, 0, 0] + volume.affine[:3, 3])


def test_sampling_threads_take_every_core_only_on_an_idle_machine():
    from diffrecon.viewer.app import threads_for_sampling

    assert threads_for_sampling(2, 0.1) == 2  # idle: both cores (5 frames/s instead of 3)
    assert threads_for_sampling(2, 1.0) == 1  # one core taken: leave it, or torch's threads wait
    assert threads_for_sampling(2, 3.5) == 1  # overloaded: still one
    assert threads_for_sampling(8, 2.0) == 6  # some load: the idle cores, one kept for the GUI
    assert threads_for_sampling(8, 0.0) == 8


def test_the_engines_default_prior_comes_first_for_its_modality(tmp_path, monkeypatch):
    """Other priors of that modality (a fast student, sorting first by name) come after it."""
    from diffrecon.reconstruct import DEFAULT_PRIORS
    from diffrecon.viewer.paths import default_model_for
    from viewer_support import write_tiny_prior

    models = tmp_path / "models"
    models.mkdir()
    write_tiny_prior(models / "a-fast-student.safetensors")
    write_tiny_prior(models / DEFAULT_PRIORS["mri"])
    monkeypatch.setenv("DIFFRECON_RESOURCES", str(tmp_path))
    assert default_model_for("mri").name == DEFAULT_PRIORS["mri"]
    assert default_model_for("denoise").name == DEFAULT_PRIORS["mri"]  # denoising borrows the MRI prior
    assert default_model_for("ct") is None  # no CT prior there


def test_a_denoising_prior_is_labelled_and_never_picked_to_reconstruct(tmp_path, monkeypatch):
    from diffrecon.diffusion.checkpoint import _read, save_prior
    from diffrecon.diffusion.unet import build_unet
    from diffrecon.viewer.paths import default_model_for, prior_label
    from viewer_support import write_tiny_prior

    models = tmp_path / "models"
    models.mkdir()
    tensors, meta = _read(write_tiny_prior(tmp_path / "full.safetensors"))
    net = build_unet(meta["unet_config"])
    net.load_state_dict(tensors)
    denoiser = save_prior(models / "a-denoiser.safetensors", net, {**meta, "noise_range": [0.01, 0.5]})
    monkeypatch.setenv("DIFFRECON_RESOURCES", str(tmp_path))
    assert prior_label(denoiser) == "a-denoiser (MRI denoising)"
    assert default_model_for("mri") is None  # an MRI prior, but one that cannot reconstruct
    assert default_model_for("denoise") == denoiser
    write_tiny_prior(models / "b-full.safetensors")
    assert default_model_for("mri").name == "b-full.safetensors"
    assert prior_label(models / "b-full.safetensors") == "b-full (MRI)"


def test_the_session_announces_what_changes():
    from diffrecon.viewer.session import Session
    from diffrecon.viewer.state import RunState

    volume = Volume(np.ones((4, 8, 8), np.float32), (2.0, 1.0, 1.0), affine_from_spacing((2.0, 1.0, 1.0)), modality="MR")
    session = Session(volume)
    heard = []
    e = session.events
    e.layers.connect(lambda names, slices: heard.append(("layers", names, list(slices))))
    e.slice.connect(lambda index: heard.append(("slice", index)))
    e.window.connect(lambda w: heard.append(("window", w.width)))
    e.metrics.connect(lambda m: heard.append(("metrics", sorted(m))))
    e.run_state.connect(lambda state: heard.append(("run", state.bar_text)))
    session.put("baseline", np.array([1, 2]), np.zeros((2, 8, 8), np.float32))
    session.put("recon", np.array([1]), np.zeros((1, 8, 8), np.float32), announce=False)  # a frame: announced later
    session.set_slice(1)
    session.set_slice(1)  # no change, nothing said
    session.window = session.window.dragged(10, 0, 100.0)
    session.update_metrics({"baseline": {"psnr": 30.0}})
    session.set_run_state(RunState(running=True, done_steps=5, total_steps=50, slices_total=4, slices_done=1,
                                   eta_seconds=90.0))
    assert heard[:2] == [("layers", ("baseline",), [1, 2]), ("slice", 1)]
    assert heard[2][0] == "window" and heard[3] == ("metrics", ["baseline"])
    assert heard[4] == ("run", "slice 2/4, step 5/50   ETA 1:30")
    assert session.has("recon", 1) and session.cursor[0] == 1


def test_a_scripted_run_request_has_the_panels_defaults_and_refuses_what_does_not_apply():
    from diffrecon import modalities
    from diffrecon.errors import DiffreconError
    from diffrecon.viewer.state import RunChoices, request_for

    volume = Volume(np.ones((6, 8, 8), np.float32), (2.0, 1.0, 1.0), affine_from_spacing((2.0, 1.0, 1.0)), modality="MR")
    task, request = request_for(volume, 3, RunChoices(), default_model=lambda task: None)
    measured = modalities.get("mri").diffusion_defaults
    assert task == "mri" and request.simulate and request.slices == [3] and request.batch_size == 1
    assert request.settings.acceleration == 4.0 and request.settings.mask == "random"
    assert request.options.steps == measured["steps"] and request.options.guidance == measured.get("guidance", "dds")
    # asking for uncertainty takes the steps the σ calibration was fitted at
    _, sampled = request_for(volume, 3, RunChoices(samples=8), default_model=lambda task: None)
    assert sampled.options.steps == modalities.get("mri").uncertainty_defaults["steps"] < measured["steps"]
    assert request.baseline == modalities.get("mri").baselines[1] and request.model is None
    _, volume_request = request_for(volume, 3, RunChoices(whole_volume=True, baseline="none", steps=4, seed=7),
                                    default_model=lambda task: None)
    assert volume_request.slices == [3, 4, 5, 0, 1, 2] and volume_request.baseline is None
    assert volume_request.options.steps == 4 and volume_request.settings.seed == 7
    engine_request = volume_request.baseline_request(volume)  # the engine's one run API
    assert list(engine_request.slices) == [3, 4, 5, 0, 1, 2] and engine_request.methods == ()
    with pytest.raises(DiffreconError, match="does not apply to mri"):
        request_for(volume, 3, RunChoices(baseline="bm3d"))
    # denoising starts at the noise level: one step by default, as the panel's task change sets
    _, denoise = request_for(volume, 3, RunChoices(modality="denoise"), default_model=lambda task: None)
    assert denoise.options.steps == 1 and denoise.options.noise_start
    # CT: the views and steps a scripted run takes are the CLI's for the same task
    from diffrecon.measurements import MeasurementSettings

    ct = Volume(np.ones((2, 8, 8), np.float32), modality="CT", units="HU")
    for dose, views, steps in ((None, 60, modalities.CT_SPARSE_VIEW_STEPS), (0.25, 180, modalities.CALIBRATED_STEPS)):
        _, r = request_for(ct, 0, RunChoices(modality="ct", dose=dose), default_model=lambda task: None)
        assert r.settings.views == views == MeasurementSettings("ct", dose=dose).views and r.options.steps == steps
