"""Data-consistency steps (diffusion.guidance) and calibration figures (diffusion.uncertainty).

No network here: the guidance steps are checked against closed forms on small operators.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffrecon.diffusion.guidance import DPSGuidance, ModelDomain, make_guidance, mix_measurement, mixing_weight
from diffrecon.diffusion.uncertainty import calibration, calibration_curve, ideal_coverage
from diffrecon.errors import SettingsError
from diffrecon.physics import MRIOperator, ParallelBeamRadon, make_mask
from diffrecon.physics.base import LinearOperator
from diffrecon.physics.noise import IdentityOperator
from diffrecon.physics.solvers import cgls, residual_norm
from diffrecon.physics.mri import fft2c


class MatrixOperator(LinearOperator):
    """A dense ``(m, H*W)`` matrix acting on ``(B, 1, H, W)`` images: closed forms are easy."""

    def __init__(self, matrix: torch.Tensor, shape: tuple[int, int]):
        self.matrix, self.shape = matrix, shape

    def A(self, x):  # noqa: N802
        return (x.reshape(x.shape[0], -1) @ self.matrix.T)[:, None]

    def A_adjoint(self, y):  # noqa: N802
        return (y[:, 0] @ self.matrix).reshape(y.shape[0], 1, *self.shape)


def _underdetermined(m: int = 20, side: int = 6, seed: int = 0) -> MatrixOperator:
    g = torch.Generator().manual_seed(seed)
    return MatrixOperator(torch.randn(m, side * side, generator=g, dtype=torch.float64), (side, side))


def test_projection_is_the_orthogonal_projection_onto_the_measurements():
    op = _underdetermined()
    g = torch.Generator().manual_seed(1)
    y = op.A(torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64))
    x = torch.randn(2, 1, 6, 6, generator=g, dtype=torch.float64)
    # x + A^T (A A^T)^-1 (y - A x): the nearest point of {A x = y}
    a = op.matrix
    correction = torch.linalg.solve(a @ a.T, (y - op.A(x))[:, 0].T).T @ a
    expected = x + correction.reshape(x.shape)
    got = op.data_consistency(x, y, iters=60)
    assert torch.allclose(got, expected, atol=1e-5)  # CGLS stops once its gradient fell 1e6-fold
    assert residual_norm(op, got, y).max() < 1e-5 * residual_norm(op, x, y).min()


def test_noise_aware_projection_stops_at_the_noise_level():
    op = _underdetermined(m=30)
    g = torch.Generator().manual_seed(2)
    clean = torch.randn(1, 1, 6, 6, generator=g, dtype=torch.float64)
    sigma = 0.5
    y = op.A(clean) + sigma * torch.randn(1, 1, 30, generator=g, dtype=torch.float64)
    start = torch.zeros_like(clean)
    exact = op.data_consistency(start, y, iters=60)
    aware = op.data_consistency(start, y, noise_level=sigma, iters=60)
    target = math.sqrt(30) * sigma  # the noise's expected norm
    assert float(residual_norm(op, exact, y)) < 1e-4  # the exact projection fits the noise
    assert 0.5 * target < float(residual_norm(op, aware, y)) <= target
    assert float((aware - start).norm()) < float((exact - start).norm())  # a smaller, safer step


def test_cgls_stops_per_item():
    op = _underdetermined()
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = op.A(x)
    y[1] = op.A(x[1:2] + 0.3)[0]  # only item 1 is inconsistent with the start
    out = cgls(op, y, x, iters=50)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])  # consistent items are left alone
    assert float(residual_norm(op, out[1:2], y[1:2])) < 1e-5


def test_mri_projection_replaces_the_measured_kspace():
    mask = make_mask("random", (16, 16), 4.0, None, 0)
    op = MRIOperator(mask)
    g = torch.Generator().manual_seed(4)
    truth = torch.randn(2, 1, 16, 16, generator=g, dtype=torch.complex64)
    guess = torch.randn(2, 1, 16, 16, generator=g, dtype=torch.complex64)
    y = op.A(truth)
    out = op.data_consistency(guess, y)
    m = torch.from_numpy(np.asarray(mask, bool))
    assert torch.allclose(fft2c(out)[..., m], y[..., m], atol=1e-5)  # measured: the data
    assert torch.allclose(fft2c(out)[..., ~m], fft2c(guess)[..., ~m], atol=1e-5)  # unmeasured: the guess
    # A^H A is a projection for single-coil MRI, so one DDS CG step already lands there.
    assert torch.allclose(op.least_squares(guess, y, iters=1), out, atol=1e-5)


def test_dds_moves_ct_images_towards_the_measurements_step_by_step():
    op = ParallelBeamRadon(16, views=8, det_count=23)
    g = torch.Generator().manual_seed(5)
    truth = torch.rand(1, 1, 16, 16, generator=g)
    y = op.A(truth)
    guess = torch.zeros_like(truth)
    residuals = [float(residual_norm(op, op.least_squares(guess, y, iters=k), y)) for k in (1, 3, 10)]
    assert residuals[0] < float(residual_norm(op, guess, y))
    assert residuals[0] > residuals[1] > residuals[2]


def test_dds_on_noisy_measurements_stops_at_the_noise_level_instead_of_fitting_the_noise():
    op = ParallelBeamRadon(16, views=8, det_count=23)  # fewer measurements than pixels: the noise can be fitted
    g = torch.Generator().manual_seed(7)
    truth = torch.rand(1, 1, 16, 16, generator=g)
    sigma = 0.05
    y = op.A(truth) + sigma * torch.randn(op.A(truth).shape, generator=g)
    floor = math.sqrt(y[0].numel()) * sigma  # ||n|| expected: the discrepancy principle's target
    guess = torch.zeros_like(truth)
    fitted = float(residual_norm(op, op.least_squares(guess, y, iters=50), y))  # noiseless rule: fits the noise
    aware = float(residual_norm(op, op.least_squares(guess, y, sigma, iters=50), y))
    assert fitted < 0.7 * floor
    assert 0.8 * floor < aware <= floor * 1.05


def test_model_domain_maps_ct_and_mri_and_refuses_mismatches():
    ct = ModelDomain({"kind": "hu", "offset": -1024.0, "scale": 3000.0}, 1, "ct", False)
    water = torch.full((1, 1, 2, 2), 0.5)  # working domain: (0 HU + 1000) / 2000
    assert torch.allclose(ct.to_model(water), torch.full_like(water, 1024.0 / 3000.0))
    assert torch.allclose(ct.from_model(ct.to_model(water)), water)

    mri = ModelDomain({"kind": "percentile", "percentile": 99.5}, 2, "mri", True)
    z = torch.randn(2, 1, 4, 4, dtype=torch.complex64)
    assert mri.to_model(z).shape == (2, 2, 4, 4)
    assert torch.equal(mri.from_model(mri.to_model(z)), z)

    with pytest.raises(SettingsError):
        ModelDomain({"kind": "hu", "offset": -1000.0, "scale": 2000.0}, 1, "mri", True)
    with pytest.raises(SettingsError):
        ModelDomain({"kind": "percentile"}, 1, "mri", True)  # complex data, magnitude prior


def test_mixing_weight_and_the_mixed_state_keep_the_sampler_noise_level():
    assert mixing_weight(0.5, 0.0) == 1.0  # a noiseless measurement is trusted fully
    assert mixing_weight(0.5, 1.0) == pytest.approx(0.5)  # sigma_t = sigma_n: half and half
    assert mixing_weight(0.999, 0.5) < 0.01  # late in sampling the prior dominates

    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(1, 1, 128, 128, generator=g)
    abar, sigma_n = 0.2, 0.3
    sigma_t = math.sqrt((1 - abar) / abar)
    x_t = math.sqrt(abar) * (x0 + sigma_t * torch.randn(x0.shape, generator=g))
    y = x0 + sigma_n * torch.randn(x0.shape, generator=g)
    mixed = mix_measurement(x_t, y, abar, sigma_n, torch.randn(x0.shape, generator=g))
    error = mixed / math.sqrt(abar) - x0
    assert float(error.std()) == pytest.approx(sigma_t, rel=0.03)  # on the marginal at time t
    # ... and it now carries the measurement: correlated with y's noise, weight lambda
    lam = mixing_weight(abar, sigma_n)
    assert float((error * (y - x0)).mean()) == pytest.approx(lam * sigma_n**2, rel=0.1)


def test_denoising_guidance_is_measurement_mixing_and_dps_descends():
    domain = ModelDomain({"kind": "percentile"}, 1, "denoise", False)
    y = torch.rand(1, 1, 8, 8)
    hook = make_guidance("projection", IdentityOperator(), y, 0.1, domain, schedule=object(),
                         noise=lambda s: torch.zeros(s))
    assert type(hook).__name__ == "MixingGuidance"

    op = ParallelBeamRadon(16, views=8, det_count=23)
    truth = torch.rand(1, 1, 16, 16)
    y = op.A(truth)
    dps = make_guidance("dps", op, y, 0.0, ModelDomain({"kind": "hu", "offset": -1000.0, "scale": 2000.0}, 1,
                                                       "ct", False), dps_scale=1e-3)
    assert isinstance(dps, DPSGuidance) and dps.requires_grad
    x_t = torch.zeros(1, 1, 16, 16, requires_grad=True)
    abar = 0.5
    x0_hat = x_t / math.sqrt(abar)  # the Tweedie estimate of a network that predicts no noise
    new_x_t, _ = dps(0, 0.5, x_t, x0_hat)
    assert residual_norm(op, new_x_t / math.sqrt(abar), y) < residual_norm(op, x0_hat.detach(), y)


def test_calibration_of_an_honest_an_overconfident_and_an_uninformative_std():
    g = np.random.default_rng(7)
    reference = g.random((4, 32, 32))
    std = 0.01 + 0.2 * g.random(reference.shape)
    honest = reference + std * g.standard_normal(reference.shape)
    figures = calibration(reference, honest, std)
    assert figures["coverage_2sigma"] == pytest.approx(0.954, abs=0.02)
    assert figures["spearman_std_error"] > 0.3  # large std where the errors are large

    assert calibration(reference, honest, std / 5)["coverage_2sigma"] < 0.5  # over-confident
    flat = calibration(reference, honest, np.full_like(std, 0.1))
    assert math.isnan(flat["spearman_std_error"])

    curve = calibration_curve(reference, honest, std, bins=5)
    assert sum(curve["count"]) == reference.size
    assert np.allclose(curve["rms_error"], curve["std"], rtol=0.25)  # on the diagonal


def test_calibration_compares_complex_means_by_magnitude_and_honours_a_mask():
    reference = torch.ones(1, 1, 4, 4)
    mean = torch.polar(torch.full((1, 1, 4, 4), 1.1), torch.full((1, 1, 4, 4), 2.0))
    std = torch.full((1, 1, 4, 4), 0.1)
    assert calibration(reference, mean, std)["coverage_2sigma"] == 1.0  # | |mean| - 1 | = 0.1 <= 0.2
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True
    std[..., 2:, :] = 0.0
    assert calibration(reference, mean, std, mask=mask)["coverage_2sigma"] == 1.0


def test_ideal_coverage_is_what_honest_finite_samples_reach():
    assert ideal_coverage(4) == pytest.approx(0.829, abs=0.002)
    assert ideal_coverage(10_000) == pytest.approx(0.9545, abs=0.001)
    # Simulate: truth and K samples drawn from the same per-pixel Gaussian posterior.
    g = np.random.default_rng(8)
    k, centre, spread = 4, g.random((64, 64)), 0.05 + 0.1 * g.random((64, 64))
    truth = centre + spread * g.standard_normal((200, 64, 64))
    samples = centre + spread * g.standard_normal((k, 200, 64, 64))
    std = samples.std(axis=0, ddof=1)
    got = calibration(truth, samples.mean(axis=0), std)["coverage_2sigma"]
    assert got == pytest.approx(ideal_coverage(k), abs=0.01)


def test_projection_guidance_uses_the_operators_own_data_consistency():
    """Guidance asks the operator (no type checks): an operator's closed form is what runs."""

    class Halving(IdentityOperator):
        is_identity = False  # not denoising: no measurement mixing

        def data_consistency(self, x, y, noise_level=0.0, *, iters=30):
            return 0.5 * (x + y)

    x0 = torch.zeros(2, 1, 4, 4)
    y = torch.ones(2, 1, 4, 4)
    domain = ModelDomain({"kind": "percentile"}, 1, "denoise", False)
    hook = make_guidance("projection", Halving(), y, 0.0, domain)
    _, corrected = hook(0, 0.5, x0, x0)
    assert torch.equal(corrected, torch.full_like(x0, 0.5))
    # The identity's own closed form: noiseless, the nearest consistent image is y itself.
    assert torch.equal(IdentityOperator().data_consistency(x0, y), y)
