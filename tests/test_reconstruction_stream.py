"""Streaming diffusion reconstruction (diffusion.reconstruction) with tiny priors.

The priors are ~12k-parameter UNets trained for a couple of seconds on 16x16 disk
phantoms (complex with a smooth phase for MRI, real for CT): enough to be a prior,
small enough that every run below takes well under a second.
"""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest
import torch
from diffrecon.diffusion.checkpoint import Prior
from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.diffusion.guidance import ModelDomain
from diffrecon.physics.solvers import residual_norm
from diffrecon.diffusion.reconstruction import reconstruct_to_end, stream_reconstruction
from diffrecon.diffusion.samplers import DDIMSampler, run_to_end
from diffrecon.measurements import ReconProblem
from diffrecon.physics import MRIOperator, ParallelBeamRadon, make_mask
from diffrecon.physics.noise import IdentityOperator
from tiny_priors import SIZE, disks, save_tiny_prior


def mri_problem(batch: int = 2) -> ReconProblem:
    truth = disks(batch, torch.Generator().manual_seed(10), True)
    truth = torch.complex(truth[:, :1], truth[:, 1:])
    op = MRIOperator(make_mask("random", (SIZE, SIZE), 4.0, None, 0))
    y = op.A(truth)
    return ReconProblem("mri", op, y, op.zero_filled(y), truth.abs(), 0.0, np.arange(batch))


def ct_problem() -> ReconProblem:
    truth = disks(1, torch.Generator().manual_seed(11), False)
    op = ParallelBeamRadon(SIZE, views=6, det_count=23)
    y = op.A(truth)
    return ReconProblem("ct", op, y, op.fbp(y).clamp_min(0), truth, 0.0, np.arange(1))


def unconditional(prior: Prior, problem: ReconProblem, steps: int) -> torch.Tensor:
    """A prior sample with no data consistency, in the working domain."""
    domain = ModelDomain(prior.normalisation, prior.channels, problem.modality,
                         problem.operator.image_dtype.is_complex)
    shape = (problem.y.shape[0], prior.channels, SIZE, SIZE)
    with torch.inference_mode():
        last = run_to_end(DDIMSampler(prior.schedule, steps).frames(prior.model, shape, seed=0))
    return domain.from_model(last.x_t)


class CountingModel(torch.nn.Module):
    """Wraps a network and counts its evaluations."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x, t):
        self.calls += 1
        return self.net(x, t)


def test_frames_arrive_in_order_with_shapes_in_the_working_domain(mri_prior):
    problem = mri_problem()
    frames = list(stream_reconstruction(problem, mri_prior, DiffusionOptions(steps=6, samples=1)))
    assert [f.step for f in frames] == list(range(1, 7))
    assert all(f.total == 6 for f in frames) and frames[-1].done and not frames[-2].done
    times = [f.t for f in frames]
    assert times == sorted(times, reverse=True) and times[-1] == 0.0
    assert all(b.elapsed >= a.elapsed for a, b in zip(frames, frames[1:]))
    last = frames[-1]
    assert last.x0.shape == (2, 1, SIZE, SIZE) and last.x0.is_complex()
    assert last.x_t.shape == (2, 1, SIZE, SIZE) and last.variance is None


@pytest.mark.parametrize("guidance", ["projection", "dds"])
def test_data_consistency_lowers_the_mri_residual(mri_prior, guidance):
    problem = mri_problem()
    free = unconditional(mri_prior, problem, 8)
    result = reconstruct_to_end(problem, mri_prior, DiffusionOptions(steps=8, guidance=guidance)).x0
    before, after = residual_norm(problem.operator, free, problem.y), residual_norm(problem.operator, result, problem.y)
    assert torch.all(after < 0.01 * before)  # single coil, noiseless: consistent to rounding


@pytest.mark.parametrize("guidance", ["projection", "dds"])
def test_data_consistency_lowers_the_ct_residual(ct_prior, guidance):
    problem = ct_problem()
    free = unconditional(ct_prior, problem, 8)
    result = reconstruct_to_end(problem, ct_prior, DiffusionOptions(steps=8, guidance=guidance)).x0
    before, after = residual_norm(problem.operator, free, problem.y), residual_norm(problem.operator, result, problem.y)
    assert torch.all(after < 0.2 * before)
    # ... and it is closer to the truth than the prior's own guess
    assert float((result - problem.reference).norm()) < float((free - problem.reference).norm())


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "sde"])
@pytest.mark.parametrize("guidance", ["projection", "dds", "dps"])
def test_every_guidance_runs_on_single_coil_mri_with_every_sampler(mri_prior, sampler, guidance):
    problem = mri_problem(batch=1)
    options = DiffusionOptions(sampler=sampler, guidance=guidance, steps=5, samples=2, dps_scale=0.5)
    last = reconstruct_to_end(problem, mri_prior, options)
    assert torch.isfinite(torch.view_as_real(last.x0)).all()
    assert last.variance is not None and torch.isfinite(last.variance).all()
    free = unconditional(mri_prior, problem, 5)
    assert residual_norm(problem.operator, last.x0, problem.y) < residual_norm(problem.operator, free, problem.y)


def test_several_samples_give_a_finite_non_negative_variance(ct_prior):
    last = reconstruct_to_end(ct_problem(), ct_prior, DiffusionOptions(steps=6, samples=3, guidance="dds"))
    assert last.variance is not None and last.variance.shape == last.x0.shape
    assert torch.isfinite(last.variance).all() and (last.variance >= 0).all()
    assert float(last.variance.max()) > 0  # the samples do differ where the data leave room


def test_stopping_early_leaves_nothing_running_and_seeds_repeat_bit_for_bit(mri_prior):
    problem = mri_problem()
    options = DiffusionOptions(steps=6, samples=2, eta=0.5, seed=3)
    threads = threading.active_count()
    stream = stream_reconstruction(problem, mri_prior, options)
    first_two = [next(stream), next(stream)]
    stream.close()
    assert inspect.getgeneratorstate(stream) == inspect.GEN_CLOSED
    assert threading.active_count() == threads
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()  # no mode leaked out

    a = reconstruct_to_end(problem, mri_prior, options)
    b = reconstruct_to_end(problem, mri_prior, options)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.variance, b.variance)
    again = list(stream_reconstruction(problem, mri_prior, options))[:2]
    assert all(torch.equal(f.x0, g.x0) for f, g in zip(first_two, again))
    other = reconstruct_to_end(problem, mri_prior, DiffusionOptions(steps=6, samples=2, eta=0.5, seed=4))
    assert not torch.equal(a.x0, other.x0)


def test_hot_start_needs_fewer_network_evaluations_and_keeps_a_good_start(ct_prior):
    problem = ct_problem()
    counted = CountingModel(ct_prior.model)
    prior = Prior(counted, ct_prior.schedule, ct_prior.normalisation, "ct", 1, {}, None)
    cold = reconstruct_to_end(problem, prior, DiffusionOptions(steps=10, guidance="dds"))
    cold_calls, counted.calls = counted.calls, 0
    hot = reconstruct_to_end(problem, prior, DiffusionOptions(steps=10, guidance="dds", hot_start=True,
                                                              hot_start_t=0.3),
                             baseline=problem.reference)
    assert cold_calls == 10 and counted.calls == 3 and hot.total == 3
    # Entering at t = 0.3 from the truth ends nearer the truth than starting from noise.
    error = lambda x: float((x - problem.reference).norm())
    assert error(hot.x0) < error(cold.x0)


def test_symmetric_sampling_pairs_each_sample_with_its_negated_noise(mri_prior):
    problem = mri_problem(batch=1)
    last = reconstruct_to_end(problem, mri_prior, DiffusionOptions(steps=4, samples=1, symmetric=True))
    assert last.variance is not None  # one sample and its antithetic twin


def test_denoising_mixes_in_the_measurement(ct_prior):
    gen = torch.Generator().manual_seed(12)
    truth = disks(2, gen, False)
    sigma = 0.15
    y = truth + sigma * torch.randn(truth.shape, generator=gen)
    problem = ReconProblem("denoise", IdentityOperator(), y, y, truth, sigma, np.arange(2))
    prior = Prior(ct_prior.model, ct_prior.schedule, {"kind": "percentile"}, "denoise", 1, {}, None)
    free = unconditional(prior, problem, 10)
    out = reconstruct_to_end(problem, prior, DiffusionOptions(steps=10, samples=2)).x0
    error = lambda x: float((x - truth).norm())
    assert error(out) < error(free)  # the measurement steered it
    assert error(out) < 1.5 * error(y)  # and it is not far from the noisy data either


def test_dps_works_on_a_problem_built_in_inference_mode(ct_prior):
    with torch.inference_mode():  # how the viewer builds its problems
        problem = ct_problem()
    last = reconstruct_to_end(problem, ct_prior, DiffusionOptions(steps=3, guidance="dps"))
    assert torch.isfinite(last.x0).all()


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def saved_prior(tmp_path, mri_prior):
    return save_tiny_prior(tmp_path / "tiny.safetensors", mri_prior)


@pytest.fixture
def phantom_file(tmp_path):
    from conftest import make_phantom
    from diffrecon.io import save_volume
    from diffrecon.io.volume import Volume

    path = tmp_path / "phantom.npy"
    save_volume(Volume(make_phantom(2, 16, 16), modality="MR"), path)
    return path


def test_cli_diffusion_writes_mean_variance_report_and_model_provenance(cli, tmp_path, saved_prior, phantom_file):
    import json

    from diffrecon.io import load_volume

    out, report = tmp_path / "recon.npy", tmp_path / "report.json"
    result = cli("reconstruct", phantom_file, "--simulate", "--modality", "mri", "--method", "diffusion",
                 "--model", saved_prior, "--steps", "3", "--samples", "2", "--no-symmetric", "--guidance", "projection",
                 "--out", out, "--report", report)
    assert result.code == 0, result.err
    mean, variance = load_volume(out), load_volume(tmp_path / "recon_var.npy")
    assert mean.data.shape == variance.data.shape == (2, 16, 16)
    assert np.isfinite(variance.data).all() and (variance.data >= 0).all() and variance.data.max() > 0
    figures = json.loads(report.read_text())["methods"]["diffusion"]
    assert set(figures["calibration"]) == {"coverage_2sigma", "spearman_std_error", "ideal_coverage_2sigma", "curve"}
    assert len(figures["calibration"]["curve"]["observed"]) == len(figures["calibration"]["curve"]["nominal"])
    assert 0.0 <= figures["calibration"]["coverage_2sigma"] <= 1.0
    assert figures["params"]["samples"] == 2 and figures["params"]["guidance"] == "projection"
    assert not figures["params"]["symmetric"]
    provenance = json.loads(next(tmp_path.glob("recon*.json")).read_text())
    assert provenance["model"]["path"] == str(saved_prior) and provenance["model"]["step"] == 30
    # σ's units and calibration are recorded (this prior carries no scale: said so)
    assert provenance["sigma_calibration"]["method"] == "none" and "sigma_units" in provenance


def test_cli_names_a_missing_prior_in_one_sentence(cli, tmp_path, phantom_file, monkeypatch):
    from conftest import assert_one_sentence_error
    from diffrecon import reconstruct

    args = ("reconstruct", phantom_file, "--simulate", "--method", "diffusion", "--out", tmp_path / "o.npy")
    assert_one_sentence_error(cli(*args, "--modality", "mri", "--model", tmp_path / "nope.safetensors"),
                              mentions="does not exist")
    monkeypatch.setitem(reconstruct.DEFAULT_PRIORS, "mri", "not-trained-yet.safetensors")
    assert_one_sentence_error(cli(*args, "--modality", "mri"), mentions="not-trained-yet.safetensors")
    # denoising has a default prior since issue #18; a modality without one still says so
    monkeypatch.delitem(reconstruct.DEFAULT_PRIORS, "denoise")
    assert_one_sentence_error(cli(*args, "--modality", "denoise"), mentions="no default diffusion prior")


@pytest.mark.parametrize("fields, words", [({"sampler": "euler"}, "unknown sampler"),
                                           ({"guidance": "magic"}, "unknown guidance"),
                                           ({"steps": 0}, "at least 1"),
                                           ({"hot_start": True, "hot_start_t": 1.5}, "hot-start time"),
                                           ({"eta": -1.0}, "eta must be")])
def test_diffusion_options_refuse_bad_settings_when_made(fields, words):
    from diffrecon.errors import SettingsError

    with pytest.raises(SettingsError, match=words):
        DiffusionOptions(**fields)
