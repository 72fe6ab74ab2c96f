"""Noise models (denoising) and ultrasound speckle: their statistics, seeding and batching."""

from __future__ import annotations

import math

import pytest
import torch
from diffrecon.errors import SettingsError
from diffrecon.physics import (
    RAYLEIGH_SPECKLE_CONTRAST,
    CorrelatedGaussianNoise,
    GammaNoise,
    GaussianNoise,
    IdentityOperator,
    PoissonNoise,
    log_compress,
    log_decompress,
    simulate_bmode,
    speckle,
)
from diffrecon.physics.noise import standard_gamma


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_noise_statistics() -> None:
    x = torch.full((4, 1, 64, 64), 0.5)
    y = GaussianNoise(0.1).sample(x, _gen())
    noise = y - x
    assert abs(float(noise.mean())) < 0.005 and abs(float(noise.std()) - 0.1) < 0.003
    assert "0.1" in GaussianNoise(0.1).describe()


@pytest.mark.parametrize("peak", [5.0, 50.0])
def test_poisson_variance_is_mean_over_peak(peak: float) -> None:
    levels = torch.tensor([0.2, 0.5, 1.0]).view(3, 1, 1, 1)
    x = levels.expand(3, 1, 96, 96).contiguous()
    y = PoissonNoise(peak).sample(x, _gen(1))
    mean = y.mean(dim=(1, 2, 3))
    variance = y.var(dim=(1, 2, 3))
    assert torch.allclose(mean, levels.view(-1), rtol=0.03)
    assert torch.allclose(variance, levels.view(-1) / peak, rtol=0.08)
    assert torch.allclose(y * peak, (y * peak).round(), atol=1e-4)  # whole photon counts


@pytest.mark.parametrize("looks", [0.7, 1.0, 2.5, 8.0])
def test_gamma_speckle_has_unit_mean_and_variance_one_over_looks(looks: float) -> None:
    x = torch.full((2, 1, 128, 128), 2.0)
    y = GammaNoise(looks).sample(x, _gen(2))
    factor = y / x
    assert (factor > 0).all()
    assert abs(float(factor.mean()) - 1) < 0.02
    assert abs(float(factor.var()) * looks - 1) < 0.06


def test_standard_gamma_has_the_gamma_moments() -> None:
    like = torch.zeros(1)
    for a in (0.5, 3.0):
        s = standard_gamma(a, (200_000,), _gen(3), like)
        assert abs(float(s.mean()) / a - 1) < 0.01 and abs(float(s.var()) / a - 1) < 0.03
        # third moment about the mean of Gamma(a, 1) is 2a
        assert abs(float(((s - s.mean()) ** 3).mean()) / (2 * a) - 1) < 0.1


def _autocorrelation(field: torch.Tensor, shift: int) -> float:
    f = field - field.mean()
    return float((f[..., :, shift:] * f[..., :, : f.shape[-1] - shift]).mean() / f.var())


def test_correlated_noise_has_sigma_per_pixel_and_a_wider_autocorrelation() -> None:
    x = torch.zeros(4, 1, 96, 96)
    white = GaussianNoise(0.2).sample(x, _gen(4))
    correlated = CorrelatedGaussianNoise(0.2, correlation_px=2.0).sample(x, _gen(4))
    assert abs(float(correlated.std()) - 0.2) < 0.015
    assert abs(_autocorrelation(white, 2)) < 0.03
    # Gaussian autocorrelation of std sqrt(2) * 2 px: exp(-shift^2 / 16) at shift 2 -> 0.78
    assert abs(_autocorrelation(correlated, 2) - math.exp(-4 / 16)) < 0.08
    assert _autocorrelation(correlated, 4) > 0.2 > abs(_autocorrelation(white, 4))


@pytest.mark.parametrize(
    "model",
    [GaussianNoise(0.1), PoissonNoise(20), GammaNoise(3), CorrelatedGaussianNoise(0.1, 1.5)],
    ids=lambda m: type(m).__name__,
)
def test_noise_is_seeded_batched_and_shaped(model) -> None:
    x = torch.rand(3, 2, 24, 20) + 0.1
    a, b, c = model.sample(x, _gen(7)), model.sample(x, _gen(7)), model.sample(x, _gen(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Items of a batch get independent noise.
    assert not torch.allclose(a[0] - x[0], a[1] - x[1])
    assert isinstance(model.describe(), str) and model.describe()


def test_identity_operator_and_bad_settings() -> None:
    op = IdentityOperator()
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(op.A(x), x) and torch.equal(op.A_adjoint(x), x) and torch.equal(op.A_dagger(x), x)
    for bad in (lambda: GaussianNoise(-1), lambda: PoissonNoise(0), lambda: GammaNoise(0),
                lambda: CorrelatedGaussianNoise(0.1, 0)):
        with pytest.raises(SettingsError):
            bad()


# --------------------------------------------------------------------------- ultrasound


def test_rayleigh_speckle_contrast_before_log_compression() -> None:
    envelope = torch.full((2, 1, 128, 128), 3.0)
    speckled = speckle(envelope, looks=1, generator=_gen(9))
    contrast = float(speckled.std() / speckled.mean())
    assert abs(contrast - RAYLEIGH_SPECKLE_CONTRAST) < 0.015
    assert abs(RAYLEIGH_SPECKLE_CONTRAST - 0.5227) < 1e-4
    assert abs(float((speckled**2).mean()) / 9.0 - 1) < 0.02  # E[A^2] = R^2


def test_multilook_speckle_is_smoother() -> None:
    envelope = torch.ones(1, 1, 128, 128)
    looks = 4
    speckled = speckle(envelope, looks=looks, generator=_gen(10))
    # sqrt of Gamma(L, 1/L): mean Gamma(L + 1/2) / (Gamma(L) sqrt(L)), E[A^2] = 1
    mean = math.exp(math.lgamma(looks + 0.5) - math.lgamma(looks)) / math.sqrt(looks)
    expected = math.sqrt(1 / mean**2 - 1)
    assert abs(float(speckled.std() / speckled.mean()) - expected) < 0.01
    assert expected < RAYLEIGH_SPECKLE_CONTRAST / 1.8


def test_log_compression_maps_the_dynamic_range_to_unit_interval() -> None:
    envelope = torch.tensor([1.0, 0.1, 0.01, 0.001, 1e-5]).view(1, 1, 1, 5)
    bmode = log_compress(envelope, dynamic_range_db=60)
    assert torch.allclose(bmode.view(-1), torch.tensor([1.0, 2 / 3, 1 / 3, 0.0, 0.0]), atol=1e-6)
    back = log_decompress(bmode, dynamic_range_db=60, reference=1.0)
    assert torch.allclose(back.view(-1)[:4], envelope.view(-1)[:4], rtol=1e-5)
    # Per-image reference: each batch item is normalised to its own maximum.
    two = torch.stack([envelope[0], envelope[0] * 5])
    assert torch.allclose(log_compress(two)[0], log_compress(two)[1])


def test_simulate_bmode_is_seeded_and_in_range() -> None:
    envelope = torch.rand(2, 1, 40, 48) + 0.05
    a, b = simulate_bmode(envelope, seed=3), simulate_bmode(envelope, seed=3)
    c = simulate_bmode(envelope, looks=2, dynamic_range_db=40, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) == 1.0
    with pytest.raises(SettingsError):
        simulate_bmode(envelope, looks=0)
