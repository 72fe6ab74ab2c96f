"""Denoising from the matched noise level, its noise transforms and Wiener refinement; the
ultrasound simulation's common reference; the echo frames' mask."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffrecon import modalities
from diffrecon.datasets import echo_bmode_mask, simulate_bmode_like
from diffrecon.diffusion.noise_start import (
    NoiseModel,
    coefficient_variance,
    matched_step,
    stream_noise_start,
    wiener_refine,
)
from diffrecon.diffusion.reconstruction import reconstruct_to_end
from diffrecon.io.volume import Volume
from diffrecon.measurements import MeasurementSettings, ProblemSource
from diffrecon.physics.noise import CorrelatedGaussianNoise
from diffrecon.physics.ultrasound import log_compress, simulate_bmode

from tiny_priors import SIZE, disks


def _disk_volume(n: int = 2) -> Volume:
    img = disks(n, torch.Generator().manual_seed(5), False)[:, 0].numpy()
    return Volume(img.astype(np.float32))


def test_matched_step_reaches_the_noise_level():
    abar = torch.linspace(0.9999, 0.01, 1000, dtype=torch.float64)
    k = matched_step(abar, 0.1)
    sigma = ((1 - abar) / abar).sqrt()
    assert sigma[k] >= 0.1 > sigma[k - 1]


def test_anscombe_round_trip_is_nearly_unbiased():
    peak, x = 30.0, 0.5
    counts = torch.poisson(torch.full((200_000,), x * peak, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    noise = NoiseModel("poisson", peak=peak)
    z = noise.forward(counts / peak)
    assert float(z.std()) == pytest.approx(noise.stabilised_sigma, rel=0.05)  # stabilised
    # the exact unbiased inverse of the *mean* of the transform gives the intensity back
    assert float(noise.inverse(z.mean())) == pytest.approx(x, rel=0.02)


def test_gamma_log_transform_is_zero_mean_with_the_trigamma_std():
    looks = 4.0
    g = torch.distributions.Gamma(looks, looks).sample((200_000,)).double()
    noise = NoiseModel("gamma", looks=looks)
    z = noise.forward(0.7 * g)
    assert float(z.mean()) == pytest.approx(math.log(0.7), abs=0.01)
    assert float(z.std()) == pytest.approx(noise.stabilised_sigma, rel=0.02)


def test_correlated_coefficient_variance_matches_sampled_noise():
    model = CorrelatedGaussianNoise(0.1, 1.5)
    field = model.sample(torch.zeros(64, 1, 32, 32), torch.Generator().manual_seed(0))
    from diffrecon.diffusion.noise_start import _dct_matrix

    d = _dct_matrix(4).float()
    patches = field[:, 0].unfold(1, 4, 4).unfold(2, 4, 4).reshape(-1, 4, 4)
    empirical = (d @ patches @ d.T).var(0)
    predicted = coefficient_variance(NoiseModel("correlated", sigma=0.1, correlation_px=1.5))
    assert torch.allclose(empirical, predicted, rtol=0.2, atol=1e-4)
    assert predicted[0, 0] > 5 * predicted[-1, -1]  # low frequencies carry the correlated noise


def test_wiener_with_a_good_pilot_beats_the_noisy_image():
    clean = disks(4, torch.Generator().manual_seed(2), False)
    y = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    out = wiener_refine(y, clean, coefficient_variance(NoiseModel("gaussian", sigma=0.1)))
    assert out.shape == y.shape
    assert float((out - clean).square().mean()) < 0.3 * float((y - clean).square().mean())


@pytest.mark.parametrize("noise", ["gaussian", "poisson", "gamma", "correlated"])
def test_noise_start_denoises_within_ten_network_evaluations(mri_prior, noise):
    vol = _disk_volume()
    settings = MeasurementSettings("denoise", noise=noise, noise_sigma=0.1, noise_peak=30.0, looks=8.0)
    problem = ProblemSource(vol, settings, simulate=True).problem(np.arange(2))
    calls = []
    model = mri_prior.model
    original_forward = model.forward

    def counting(x, t):
        calls.append(int(x.shape[0]))
        return original_forward(x, t)

    model.forward = counting
    try:
        options = modalities.get("denoise").diffusion_options()
        frames = list(stream_noise_start(problem, mri_prior, options))
    finally:
        del model.forward
    assert options.noise_start and options.symmetric
    evaluations_per_image = sum(calls) / problem.y.shape[0]
    assert evaluations_per_image <= 10
    assert frames[-1].done and frames[-1].adaptation["network_evaluations"] == evaluations_per_image
    assert frames[-1].x0.shape == problem.y.shape and torch.isfinite(frames[-1].x0).all()
    assert frames[-1].variance is not None and bool((frames[-1].variance >= 0).all())
    err = float((frames[-1].x0 - problem.reference).square().mean())
    assert err < float((problem.y - problem.reference).square().mean())  # it denoises


def test_noise_start_is_reproducible_and_reached_through_stream_reconstruction(mri_prior):
    vol = _disk_volume(1)
    problem = ProblemSource(vol, MeasurementSettings("denoise", noise_sigma=0.1), simulate=True).problem(np.arange(1))
    options = modalities.get("denoise").diffusion_options(seed=3)
    a = reconstruct_to_end(problem, mri_prior, options)
    b = reconstruct_to_end(problem, mri_prior, options)
    assert torch.equal(a.x0, b.x0) and a.adaptation["start_step"] > 0
    c = reconstruct_to_end(problem, mri_prior, modalities.get("denoise").diffusion_options(seed=4))
    assert not torch.equal(a.x0, c.x0)  # the fill noise follows the seed


def test_denoise_and_ultrasound_have_default_priors():
    from diffrecon.diffusion.checkpoint import read_metadata
    from diffrecon.reconstruct import default_prior_path

    assert default_prior_path("denoise").exists()
    denoiser = read_metadata(default_prior_path("denoise"))  # a real prior trained where denoising enters
    assert denoiser["noise_range"][1] >= 0.3 and denoiser["unet_config"]["in_channels"] == 1
    assert read_metadata(default_prior_path("ultrasound")).get("modality") == "ultrasound"


def test_measured_denoising_estimates_the_noise():
    rng = np.random.default_rng(0)
    img = np.full((1, 64, 64), 1.0, np.float32) + rng.normal(0, 0.1, (1, 64, 64)).astype(np.float32)
    problem = ProblemSource(Volume(img), MeasurementSettings("denoise"), simulate=False).problem(np.arange(1))
    assert problem.noise["estimated"] and problem.noise_level == pytest.approx(0.1 / float(np.percentile(img, 99.5)),
                                                                                  rel=0.15)


def test_simulated_ultrasound_shares_the_clean_reference_and_its_speckle_is_log_zero_mean():
    envelope = torch.full((1, 1, 128, 128), 0.5)
    envelope[..., :8, :8] = 1.0
    y = simulate_bmode(envelope, looks=1.0, dynamic_range_db=50.0, seed=1, reference=1.0)
    clean = log_compress(envelope, dynamic_range_db=50.0, reference=1.0)
    flat = (slice(None), slice(None), slice(16, None), slice(16, None))
    assert float((y - clean)[flat].mean()) == pytest.approx(0.0, abs=0.005)  # no -2.5 dB offset
    settings = MeasurementSettings("ultrasound", looks=1.0, dynamic_range_db=50.0)
    vol = Volume(np.tile(envelope[0, 0].numpy(), (2, 1, 1)))
    problem = ProblemSource(vol, settings, simulate=True).problem(np.arange(2))
    assert float((problem.y - problem.reference)[0, 0, 16:, 16:].mean()) == pytest.approx(0.0, abs=0.01)
    assert problem.noise_level == pytest.approx(10 * math.pi / math.sqrt(6) / (math.log(10) * 50), rel=1e-6)


def test_echo_mask_drops_colour_and_what_lies_outside_the_sector():
    rgb = np.full((1, 60, 80, 3), 100 * 257, np.uint16)
    rgb[0, 30:34, 38:42] = (200 * 257, 10 * 257, 10 * 257)  # a Doppler blob inside the sector
    mask = echo_bmode_mask(rgb)
    assert not mask[0, 31, 40] and not mask[0, 30, 37]  # colour and its one-pixel rim
    assert mask[0, 40, 40]  # grey inside the sector
    assert not mask[0, 2, 2]  # the top corner lies outside the sector


def test_simulated_bmode_like_is_a_speckled_sector_in_unit_range():
    refl = np.full((64, 64), 0.5)
    img = simulate_bmode_like(refl, np.random.default_rng(0))
    assert img.shape == (64, 64) and 0.0 <= img.min() and img.max() <= 1.0
    assert img[0, 0] == 0.0 and img[40, 32] > 0  # outside / inside the sector
    inside = img[30:, 20:44]
    assert inside.std() > 0.03  # speckle, not a flat image
    assert SIZE == 16  # the tiny priors' size (imported for the disks)


def test_a_denoising_prior_denoises_and_refuses_what_it_never_learned():
    """A prior trained on a noise range only (``train --noise-range``) enters at the noise level,
    but cannot reconstruct from pure noise or denoise noise above its range."""
    import dataclasses

    from diffrecon.diffusion.reconstruction import stream_reconstruction
    from diffrecon.errors import SettingsError

    from tiny_priors import train_tiny_prior

    base = train_tiny_prior(1)
    prior = dataclasses.replace(base, normalisation={"kind": "percentile", "percentile": 99.5}, modality="mri",
                                metadata={"step": 30, "noise_range": [0.01, 0.2]})
    vol = _disk_volume(1)
    problem = ProblemSource(vol, MeasurementSettings("denoise", noise_sigma=0.1), simulate=True).problem(np.arange(1))
    result = reconstruct_to_end(problem, prior, modalities.get("denoise").diffusion_options(wiener=True))
    assert float((result.x0 - problem.reference).square().mean()) < float((problem.y - problem.reference).square().mean())
    loud = ProblemSource(vol, MeasurementSettings("denoise", noise_sigma=0.4), simulate=True).problem(np.arange(1))
    with pytest.raises(SettingsError, match="above the levels"):
        reconstruct_to_end(loud, prior, modalities.get("denoise").diffusion_options())
    mri = ProblemSource(vol, MeasurementSettings("mri"), simulate=True).problem(np.arange(1))
    with pytest.raises(SettingsError, match="denoising prior"):
        next(stream_reconstruction(mri, prior, modalities.get("mri").diffusion_options()))


def test_auto_wiener_refines_every_noise_but_white_gaussian():
    from diffrecon.diffusion.noise_start import refines
    from diffrecon.diffusion.options import DiffusionOptions
    from diffrecon.errors import SettingsError

    auto = DiffusionOptions(wiener="auto")
    kinds = {"gaussian": {}, "poisson": {"peak": 30.0}, "gamma": {"looks": 1.0}, "correlated": {"correlation_px": 1.5}}
    assert {k: refines(auto, NoiseModel(kind=k, sigma=0.1, **extra)) for k, extra in kinds.items()} == \
        {"gaussian": False, "poisson": True, "gamma": True, "correlated": True}
    assert refines(DiffusionOptions(wiener=True), NoiseModel(kind="gaussian", sigma=0.1))
    with pytest.raises(SettingsError, match="wiener"):
        DiffusionOptions(wiener="sometimes")
