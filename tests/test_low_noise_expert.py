"""The low-noise expert (diffusion.experts): which steps it takes, which priors it refuses,
and a reconstruction that uses it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from diffrecon import modalities
from diffrecon.diffusion.checkpoint import save_prior
from diffrecon.diffusion.experts import LowNoiseExperts, load_expert
from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.diffusion.reconstruction import reconstruct_to_end
from diffrecon.diffusion.schedules import make_schedule
from diffrecon.errors import SettingsError
from diffrecon.io.volume import Volume
from diffrecon.measurements import MeasurementSettings, ProblemSource

from tiny_priors import disks, train_tiny_prior


class Constant(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


def test_the_expert_predicts_exactly_the_items_whose_noise_level_it_learned():
    schedule = make_schedule("linear")
    experts = LowNoiseExperts(Constant(0.0), Constant(1.0), schedule, sigma_max=0.5)
    t = torch.linspace(0.01, 0.99, 99)
    abar = schedule.alpha_bar(t).double()
    sigma = ((1 - abar) / abar).sqrt()
    out = experts(torch.zeros(99, 2, 4, 4), t)
    by_expert = out[:, 0, 0, 0] == 1.0
    assert torch.equal(by_expert, sigma <= 0.5 + 1e-6)
    assert 5 < int(by_expert.sum()) < 30  # a linear schedule's t below ~0.15
    # a batch that lies on one side runs one network only
    assert float(experts(torch.zeros(3, 2, 4, 4), torch.full((3,), 0.05)).mean()) == 1.0
    assert float(experts(torch.zeros(3, 2, 4, 4), torch.full((3,), 0.9)).mean()) == 0.0


def _expert_file(tmp_path, prior, noise_range=(0.01, 0.3), name="expert.safetensors"):
    meta = {"schedule": prior.schedule.to_metadata(), "normalisation": prior.normalisation,
            "modality": prior.modality, "step": 30}
    if noise_range is not None:
        meta["noise_range"] = list(noise_range)
    return save_prior(tmp_path / name, prior.model, meta)


def test_an_expert_must_be_a_noise_range_prior_of_the_same_kind(tmp_path):
    complex_prior = train_tiny_prior(2)
    with pytest.raises(SettingsError, match="every noise level"):
        load_expert(str(_expert_file(tmp_path, complex_prior, None, "full.safetensors")), complex_prior)
    real = train_tiny_prior(1)
    other = _expert_file(tmp_path, dataclasses.replace(real, normalisation=complex_prior.normalisation,
                                                       modality="mri"), name="real.safetensors")
    with pytest.raises(SettingsError, match="channels"):
        load_expert(str(other), complex_prior)
    with pytest.raises(SettingsError, match="neither a file nor a bundled prior"):
        load_expert(str(tmp_path / "missing.safetensors"), complex_prior)
    with pytest.raises(SettingsError, match="do not combine"):
        DiffusionOptions(cfg_scale=1.0, low_noise_expert="x")


def test_a_reconstruction_with_an_expert_runs_it_on_the_last_steps_only(tmp_path):
    prior = train_tiny_prior(2)
    # the "expert" is a differently trained network, so the steps it takes change the result
    torch.manual_seed(3)
    expert_prior = dataclasses.replace(prior, model=train_tiny_prior(2, steps=10).model)
    path = _expert_file(tmp_path, expert_prior, (0.01, 0.3))
    img = disks(1, torch.Generator().manual_seed(5), False)[:, 0].numpy().astype(np.float32)
    problem = ProblemSource(Volume(img), MeasurementSettings("mri"), simulate=True).problem(np.arange(1))
    options = modalities.get("mri").diffusion_options(guidance="dds", blend_tv=False, steps=10)
    calls = []
    original = LowNoiseExperts.forward

    def spy(self, x, t):
        calls.append(bool(self.expert_items(t).all()))
        return original(self, x, t)

    LowNoiseExperts.forward = spy
    try:
        plain = reconstruct_to_end(problem, prior, options).x0
        with_expert = reconstruct_to_end(problem, prior, dataclasses.replace(options, low_noise_expert=str(path))).x0
    finally:
        LowNoiseExperts.forward = original
    assert len(calls) == 10 and calls[-1] and not calls[0]  # the last steps, not the first
    assert 0 < sum(calls) < 10
    assert not torch.allclose(plain, with_expert)
    assert math.isfinite(float(with_expert.abs().mean()))
    saved = load_expert(str(path), prior)
    assert saved.noise_range == (0.01, 0.3)


def test_a_bundled_prior_takes_its_bundled_expert_unless_told_otherwise(tmp_path, monkeypatch):
    from diffrecon.bundled import available_models
    from diffrecon.diffusion.checkpoint import load_prior
    from diffrecon.reconstruct import DiffusionSetup

    from tiny_priors import save_tiny_prior

    models = tmp_path / "resources" / "models"
    models.mkdir(parents=True)
    monkeypatch.setenv("DIFFRECON_RESOURCES", str(tmp_path / "resources"))
    prior = train_tiny_prior(2)
    save_tiny_prior(models / "mri-brain.safetensors", prior)
    options = modalities.get("mri").diffusion_options()
    assert DiffusionSetup(load_prior(models / "mri-brain.safetensors"), options).options.low_noise_expert is None
    _expert_file(models.parent.parent, prior, name="resources/models/mri-brain-lowt.safetensors")
    bundled = DiffusionSetup(load_prior(models / "mri-brain.safetensors"), options)
    assert bundled.options.low_noise_expert == "mri-brain-lowt.safetensors"
    assert options.low_noise_expert is None  # the caller's options are not changed
    assert bundled.describe()["options"]["low_noise_expert"] == "mri-brain-lowt.safetensors"  # in provenance
    # turned off, or another copy of the same weights outside the bundle: no expert
    off = dataclasses.replace(options, low_noise_expert="")
    assert DiffusionSetup(load_prior(models / "mri-brain.safetensors"), off).options.low_noise_expert == ""
    save_tiny_prior(tmp_path / "mri-brain.safetensors", prior)
    assert DiffusionSetup(load_prior(tmp_path / "mri-brain.safetensors"), options).options.low_noise_expert is None
    # an expert is part of its prior, not a prior to choose
    assert [p.name for p in available_models()] == ["mri-brain.safetensors"]


def test_the_cli_runs_a_named_expert_and_records_it(cli, tmp_path):
    import json

    from conftest import make_phantom
    from diffrecon.io import save_volume

    from tiny_priors import save_tiny_prior

    prior = train_tiny_prior(2)
    model = save_tiny_prior(tmp_path / "prior.safetensors", prior)
    expert = _expert_file(tmp_path, prior, (0.01, 0.3))
    scan = tmp_path / "phantom.npy"
    save_volume(Volume(make_phantom(1, 16, 16), modality="MR"), scan)
    args = ("reconstruct", scan, "--simulate", "--modality", "mri", "--method", "diffusion", "--model", model,
            "--steps", "6", "--guidance", "dds", "--no-blend-tv", "--out", tmp_path / "r.npy")
    result = cli(*args, "--low-noise-expert", expert, "--report", tmp_path / "report.json")
    assert result.code == 0, result.err
    provenance = json.loads((tmp_path / "r.json").read_text())
    assert provenance["model"]["options"]["low_noise_expert"] == str(expert)
    adaptation = json.loads((tmp_path / "report.json").read_text())["methods"]["diffusion"]["params"]["adaptation"]
    assert any(a.get("low_noise_expert") == "expert.safetensors" and a["low_noise_expert_steps"] >= 1
               for a in adaptation)
    off = cli(*args[:-1], tmp_path / "off.npy", "--low-noise-expert", "none")
    assert off.code == 0, off.err
    assert json.loads((tmp_path / "off.json").read_text())["model"]["options"]["low_noise_expert"] == ""
    from conftest import assert_one_sentence_error

    assert_one_sentence_error(cli(*args, "--low-noise-expert", model), mentions="every noise level")


def test_bench_takes_none_for_no_expert_as_reconstruct_does(cli, tmp_path):
    import json

    from conftest import make_phantom
    from diffrecon.io import save_volume

    from tiny_priors import save_tiny_prior

    model = save_tiny_prior(tmp_path / "prior.safetensors", train_tiny_prior(2))
    scan = tmp_path / "phantom.npy"
    save_volume(Volume(make_phantom(2, 16, 16), modality="MR"), scan)
    result = cli("bench", scan, "--modality", "mri", "--settings", "4x", "--methods", "diffusion:ddim/dds/4/noblend",
                 "--model", model, "--low-noise-expert", "none", "--grid-slices", "0", "--no-cases",
                 "--slices-per-subject", "1", "--out", tmp_path / "bench")
    assert result.code == 0, result.err
    options = json.loads((tmp_path / "bench" / "results.json").read_text())["settings"]
    assert '"low_noise_expert": ""' in json.dumps(options)


def test_bench_methods_turn_the_expert_off_by_a_flag():
    from diffrecon.bench.tasks import parse_methods

    plain, without = parse_methods("diffusion,diffusion:ddim/dds/25/noblend+noexpert", "mri", have_prior=True)
    assert "low_noise_expert" not in plain.overrides and without.overrides["low_noise_expert"] == ""


def test_a_run_with_an_expert_takes_the_sigma_scale_fitted_for_the_pair(tmp_path):
    """σ of prior + expert is calibrated as a pair: the scale lives in the expert's file."""
    from diffrecon.diffusion.calibration import SigmaCalibration, store_entries
    from diffrecon.reconstruct import DiffusionSetup, ReconRequest, resolve_calibration

    prior = train_tiny_prior(2)
    expert = _expert_file(tmp_path, prior, (0.01, 0.3))
    options = modalities.get("mri").diffusion_options(samples=4, low_noise_expert=str(expert))
    sampler = {k: getattr(options, k) for k in ("sampler", "eta", "symmetric", "guidance", "branch_t")}
    store_entries(expert, {"mri-4x": SigmaCalibration(task="mri-4x", scale=1.7, sampler=sampler).to_dict()})
    volume = Volume(np.ones((1, 16, 16), np.float32))
    request = ReconRequest(volume, MeasurementSettings("mri"), ["diffusion"], simulate=True,
                           diffusion=DiffusionSetup(prior, options))
    record, scale = resolve_calibration(request)
    assert scale == pytest.approx(1.7) and record is not None and record["task"] == "mri-4x"
    # the prior alone (no expert) has no scale of its own here
    alone = ReconRequest(volume, MeasurementSettings("mri"), ["diffusion"], simulate=True,
                         diffusion=DiffusionSetup(prior, dataclasses.replace(options, low_noise_expert="")))
    assert resolve_calibration(alone) == (None, 1.0)


def test_a_pair_scale_fitted_with_other_weights_is_not_applied(tmp_path):
    """The scale in an expert's file belongs to the prior it was fitted with (``with_prior``):
    the same expert behind other weights (a retrained prior, the user's own) leaves σ uncalibrated."""
    from diffrecon.diffusion.calibration import SigmaCalibration, store_entries
    from diffrecon.diffusion.checkpoint import load_prior, tensor_bytes_digest
    from diffrecon.reconstruct import DiffusionSetup, ReconRequest, resolve_calibration

    trained = train_tiny_prior(2)
    meta = {"schedule": trained.schedule.to_metadata(), "normalisation": trained.normalisation, "modality": "mri"}
    fitted = load_prior(save_prior(tmp_path / "fitted.safetensors", trained.model, meta))
    with torch.no_grad():
        trained.model.stem.bias.add_(0.01)  # the same network, retrained a little
    other = load_prior(save_prior(tmp_path / "other.safetensors", trained.model, meta))
    expert = _expert_file(tmp_path, fitted, (0.01, 0.3))
    options = modalities.get("mri").diffusion_options(samples=4, low_noise_expert=str(expert))
    sampler = {k: getattr(options, k) for k in ("sampler", "eta", "symmetric", "guidance", "branch_t")}
    entry = SigmaCalibration(task="mri-4x", scale=1.7, sampler=sampler,
                             with_prior={"path": "fitted.safetensors", "weights_sha256": tensor_bytes_digest(fitted.path)})
    store_entries(expert, {"mri-4x": entry.to_dict()})
    volume = Volume(np.ones((1, 16, 16), np.float32))

    def scale_with(prior):
        return resolve_calibration(ReconRequest(volume, MeasurementSettings("mri"), ["diffusion"], simulate=True,
                                                diffusion=DiffusionSetup(prior, options)))[1]

    assert scale_with(fitted) == pytest.approx(1.7)
    assert scale_with(other) == 1.0
    # and the run's provenance says why, not only that there is no calibration
    from diffrecon.run_summary import uncalibrated_note

    def note_with(prior):
        return uncalibrated_note(ReconRequest(volume, MeasurementSettings("mri"), ["diffusion"], simulate=True,
                                              diffusion=DiffusionSetup(prior, options)))

    assert "fitted with fitted.safetensors, not these weights" in note_with(other)
    assert note_with(fitted).startswith("no calibration")


@pytest.mark.parametrize(("modality", "task", "settings"), [("mri", "mri-4x", {}), ("ct", "ct-views60", {"views": 60})])
def test_the_bundled_prior_has_a_calibrated_expert_that_fits_it(modality, task, settings):
    from diffrecon.bundled import LOW_NOISE_EXPERTS, available_models, bundled_low_noise_expert, models_dir
    from diffrecon.diffusion.calibration import calibrations
    from diffrecon.diffusion.checkpoint import load_prior, weights_digests
    from diffrecon.reconstruct import default_prior_path

    path = default_prior_path(modality)
    name = LOW_NOISE_EXPERTS[path.name]
    assert bundled_low_noise_expert(path, MeasurementSettings(modality, **settings)) == name
    assert models_dir() / name not in available_models()  # part of its prior, never a Model box entry
    expert = load_expert(name, load_prior(path))  # refuses one that does not fit
    assert expert.path == models_dir() / name
    assert expert.noise_range is not None and expert.noise_range[1] >= 0.5
    assert task in calibrations(expert.metadata)  # the pair's σ scale, in the expert's file
    # ... fitted with these very weights (a prior retrained without refitting the pair fails here)
    pair = calibrations(expert.metadata)[task]
    assert pair.with_prior and pair.with_prior["weights_sha256"] in weights_digests(path, load_prior(path).metadata)


def test_the_ct_expert_runs_by_default_on_noiseless_ct_only():
    """ct-head-lowt helps noiseless CT from 60 views up and hurts low dose and 30 views on the
    validation slab: a request resolves it per task, on a copy, so one setup serving several
    tasks (bench) stays as it was."""
    from diffrecon.bundled import bundled_low_noise_expert
    from diffrecon.diffusion.checkpoint import load_prior
    from diffrecon.reconstruct import DiffusionSetup, ReconRequest, default_prior_path

    path = default_prior_path("ct")
    assert bundled_low_noise_expert(path) is None  # no task known: no task-bound expert
    assert bundled_low_noise_expert(path, MeasurementSettings("ct", dose=0.25)) is None
    assert bundled_low_noise_expert(path, MeasurementSettings("ct", views=30)) is None
    assert bundled_low_noise_expert(path, MeasurementSettings("ct", views=120)) == "ct-head-lowt.safetensors"
    setup = DiffusionSetup(load_prior(path), modalities.get("ct").diffusion_options())
    assert setup.options.low_noise_expert is None
    volume = Volume(np.zeros((1, 16, 16), np.float32))
    sparse = ReconRequest(volume, MeasurementSettings("ct", views=60), ["diffusion"], simulate=True, diffusion=setup)
    low_dose = ReconRequest(volume, MeasurementSettings("ct", dose=0.25), ["diffusion"], simulate=True,
                            diffusion=setup)
    assert sparse.diffusion.options.low_noise_expert == "ct-head-lowt.safetensors"
    assert low_dose.diffusion.options.low_noise_expert is None and setup.options.low_noise_expert is None
    assert sparse.provenance()["model"]["options"]["low_noise_expert"] == "ct-head-lowt.safetensors"
    off = DiffusionSetup(setup.prior, dataclasses.replace(setup.options, low_noise_expert=""))
    named_off = ReconRequest(volume, MeasurementSettings("ct", views=60), ["diffusion"], simulate=True, diffusion=off)
    assert named_off.diffusion.options.low_noise_expert == ""  # 'none' stays off
