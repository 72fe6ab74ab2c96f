"""The classical baselines: they solve their problems, beat the trivial inputs, and fail clearly."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import pywt
import torch
from conftest import make_phantom
from diffrecon.baselines import PARAMETERS, run_baseline, solve_tv
from diffrecon.baselines.defaults import DEFAULTS, default_params, task_for
from diffrecon.baselines.denoise import (
    bm3d_available,
    bm3d_denoise,
    median_denoise,
)
from diffrecon.baselines.tuning import (
    PSNR_TOLERANCE_DB,
    best_per_method,
    training_slices,
    tune,
)
from diffrecon.baselines.tv import (
    divergence,
    gradient,
    operator_norm,
    total_variation,
    tv_denoise,
    tv_objective,
    tv_reconstruct,
    tv_reconstruct_fista,
)
from diffrecon.baselines.wavelet import (
    OrthoWavelet2D,
    l1_wavelet_objective,
    l1_wavelet_reconstruct,
)
from diffrecon.datasets import load_dataset, training_blocks, validation_slices
from diffrecon.errors import DiffreconError, SettingsError
from diffrecon.measurements import MeasurementSettings
from diffrecon.metrics import psnr
from diffrecon.physics import (
    IdentityOperator,
    MRIOperator,
    ParallelBeamRadon,
    log_compress,
    make_mask,
    simulate_bmode,
)
from skimage.restoration import denoise_tv_chambolle
from diffrecon.physics.noise import PoissonNoise



def _image(size: int = 64, seed: int = 0) -> np.ndarray:
    """A phantom slice with smooth texture added, so it is not purely piecewise constant."""
    base = make_phantom(3, size, size, seed=seed)[1]
    yy, xx = np.mgrid[0:size, 0:size] / size
    texture = 0.08 * np.sin(9 * xx + 3 * yy) * np.cos(7 * yy) * (base > 0)
    return (base + texture).astype(np.float32)


def _complex_image(size: int = 64, seed: int = 0) -> torch.Tensor:
    """(1, 1, H, W) complex64 with a smooth phase, as MR images have."""
    magnitude = torch.from_numpy(_image(size, seed))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    phase = 0.8 * xx + 0.5 * yy**2
    return torch.polar(magnitude, phase)[None, None].to(torch.complex64)


def _psnr(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    return psnr(reference.abs()[:, 0].numpy(), estimate.abs()[:, 0].numpy())


@pytest.fixture(scope="module")
def mri_problem():
    x = _complex_image(64)
    op = MRIOperator(make_mask("random", (64, 64), 4, center_fraction=0.08, seed=0))
    return op, x, op.A(x)


@pytest.fixture(scope="module")
def ct_problem():
    n = 64
    x = torch.from_numpy(_image(n))[None, None] * 0.5
    op = ParallelBeamRadon(n, 60, det_count=math.ceil(math.sqrt(2) * n), pixel_size_mm=0.5)
    return op, x, op.A(x)


# --------------------------------------------------------------------------- building blocks


def test_divergence_is_minus_the_adjoint_of_the_gradient():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 1, 13, 17, dtype=torch.complex64, generator=g)
    v = torch.randn(2, 1, 2, 13, 17, dtype=torch.complex64, generator=g)
    lhs = (gradient(u).conj() * v).sum()
    rhs = -(u.conj() * divergence(v)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-5)


def test_total_variation_of_a_step_is_its_height_times_its_length():
    x = torch.zeros(1, 1, 10, 12)
    x[..., :, 6:] = 2.0  # a vertical edge of height 2, 10 pixels long
    assert total_variation(x).item() == pytest.approx(20.0)
    assert total_variation(x * 1j).item() == pytest.approx(20.0)  # complex: |complex gradient|


def test_operator_norm_is_estimated_and_cached():
    class CountingScaledIdentity(IdentityOperator):
        calls = 0

        def normal(self, x):
            CountingScaledIdentity.calls += 1
            return 9.0 * x  # ||A|| = 3

    op = CountingScaledIdentity()
    like = torch.zeros(1, 1, 8, 8)
    assert operator_norm(op, like) == pytest.approx(3.0, rel=1e-4)
    calls = CountingScaledIdentity.calls
    assert operator_norm(op, like) == pytest.approx(3.0, rel=1e-4)
    assert CountingScaledIdentity.calls == calls  # second call served from the cache
    mri = MRIOperator(make_mask("random", (32, 32), 4, seed=1))
    assert operator_norm(mri, torch.zeros(1, 1, 32, 32, dtype=torch.complex64)) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.filterwarnings("ignore:Level value")  # pywt warns when the filters wrap around: that is the point
@pytest.mark.parametrize("name, levels, shape", [("db4", 3, (64, 48)), ("haar", 4, (32, 32)), ("sym4", 2, (40, 24))])
def test_torch_wavelet_matches_pywavelets_and_is_orthonormal(name, levels, shape):
    transform = OrthoWavelet2D(name, levels)
    x = torch.randn(2, 1, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    coeffs = transform.forward(x)
    expected, _ = pywt.coeffs_to_array(pywt.wavedec2(x[1, 0].numpy(), name, mode="periodization", level=levels))
    np.testing.assert_allclose(coeffs[1, 0].numpy(), expected, atol=1e-12)
    # (PyWavelets' sym4 taps are orthonormal to ~1e-12 only.)
    torch.testing.assert_close(transform.inverse(coeffs), x, atol=1e-10, rtol=0)
    assert coeffs.square().sum().item() == pytest.approx(x.square().sum().item(), rel=1e-10)
    z = torch.randn(1, 1, *shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(transform.inverse(transform.forward(z)), z, atol=1e-10, rtol=0)


# --------------------------------------------------------------------------- MRI


def test_tv_and_l1_wavelet_beat_zero_filled_on_complex_mri(mri_problem):
    op, x, y = mri_problem
    zero_filled = _psnr(x, op.A_dagger(y))
    tv = tv_reconstruct(op, y, 1e-3, iters=150)
    wavelet = l1_wavelet_reconstruct(op, y, 3e-3, iters=60, levels=2)
    assert tv.is_complex() and wavelet.is_complex()
    assert _psnr(x, tv) > zero_filled + 3.0
    assert _psnr(x, wavelet) > zero_filled + 1.0
    # The phase is recovered too, not only the magnitude.
    inside = x.abs() > 0.2
    assert (tv / x)[inside].angle().abs().median() < 0.05


def test_objectives_decrease(mri_problem):
    op, _, y = mri_problem
    lam = 3e-3
    tv_objectives, wavelet_objectives = [], []
    def tv(x: torch.Tensor) -> float:
        return tv_objective(op, y, x, lam).item()

    def wavelet(x: torch.Tensor) -> float:
        return l1_wavelet_objective(op, y, x, lam, levels=2).item()

    tv_reconstruct(op, y, lam, iters=200, callback=lambda k, x: tv_objectives.append(tv(x)))
    l1_wavelet_reconstruct(op, y, lam, iters=100, levels=2, callback=lambda k, x: wavelet_objectives.append(wavelet(x)))
    starts = (tv(op.A_dagger(y)), wavelet(op.A_dagger(y)))
    for history, start in zip((tv_objectives, wavelet_objectives), starts):
        # Neither method is monotone step by step (PDHG, FISTA), but both are at checkpoints.
        checkpoints = [history[i] for i in (9, 24, 49, len(history) // 2, len(history) - 1)]
        assert checkpoints[-1] < start
        assert all(b <= a * (1 + 1e-4) for a, b in itertools.pairwise(checkpoints)), checkpoints
    # Near convergence the last steps change the objective by well under a percent.
    assert abs(tv_objectives[-1] - tv_objectives[-20]) < 5e-3 * tv_objectives[-1]


def test_batch_gives_the_same_images_as_single_slices():
    images = torch.cat([_complex_image(48, seed=s) for s in (0, 1)])
    op = MRIOperator(make_mask("random", (48, 48), 4, seed=2))
    y = op.A(images)
    for solve in (lambda yy: tv_reconstruct(op, yy, 3e-3, iters=40),
                  lambda yy: l1_wavelet_reconstruct(op, yy, 3e-3, iters=30)):
        batch = solve(y)
        singles = torch.cat([solve(y[i : i + 1]) for i in range(2)])
        torch.testing.assert_close(batch, singles, atol=1e-5, rtol=1e-4)


def test_weights_are_relative_so_scaling_the_data_scales_the_result(mri_problem):
    op, _, y = mri_problem
    for solve in (lambda yy: tv_reconstruct(op, yy, 3e-3, iters=50),
                  lambda yy: l1_wavelet_reconstruct(op, yy, 3e-3, iters=30, levels=2)):
        base = solve(y)
        torch.testing.assert_close(solve(250.0 * y) / 250.0, base, atol=1e-5, rtol=1e-3)


def test_a_good_warm_start_gets_there_sooner(mri_problem):
    op, _, y = mri_problem
    good = tv_reconstruct(op, y, 3e-3, iters=300)
    for iters in (10, 50):
        cold = tv_objective(op, y, tv_reconstruct(op, y, 3e-3, iters=iters), 3e-3).item()
        warm = tv_objective(op, y, tv_reconstruct(op, y, 3e-3, iters=iters, x0=good), 3e-3).item()
        assert warm < cold
    # (PDHG restarts its dual variables from zero, so it wanders a little before settling.)
    assert warm < tv_objective(op, y, good, 3e-3).item() * 1.03


def test_l1_wavelet_pads_sides_that_are_not_multiples_of_the_block():
    x = _complex_image(64)[..., :58, :45]
    op = MRIOperator(make_mask("random", (58, 45), 3, seed=4))
    y = op.A(x)
    out = l1_wavelet_reconstruct(op, y, 3e-3, iters=60, levels=3)
    assert out.shape == x.shape
    assert _psnr(x, out) > _psnr(x, op.A_dagger(y))


# --------------------------------------------------------------------------- CT


def test_tv_and_l1_wavelet_beat_fbp_on_sparse_view_ct(ct_problem):
    op, x, y = ct_problem
    fbp = op.fbp(y).clamp_min(0)
    tv = run_baseline("tv", op, y, modality="ct", params={"lam": 1e-3, "iters": 150})
    wavelet = run_baseline("l1-wavelet", op, y, modality="ct", params={"lam": 1e-4, "iters": 100, "levels": 2})
    assert not tv.is_complex() and tv.shape == x.shape
    assert float(tv.min()) >= 0.0  # attenuation is clipped at zero
    assert _psnr(x, tv) > _psnr(x, fbp) + 3.0
    assert _psnr(x, wavelet) > _psnr(x, fbp) + 3.0


def test_fista_solves_the_same_tv_problem_faster_than_pdhg(ct_problem):
    op, _, y = ct_problem
    lam = 1e-4
    def objective(x: torch.Tensor) -> float:
        return tv_objective(op, y, x, lam).item()

    start = op.fbp(y)
    pdhg = [objective(tv_reconstruct(op, y, lam, iters=n, x0=start)) for n in (30, 100)]
    fista = [objective(tv_reconstruct_fista(op, y, lam, iters=n, x0=start)) for n in (30, 100)]
    assert fista[0] < pdhg[0] and fista[1] < pdhg[1]  # lower objective at equal cost (one A and Aᴴ each)
    # Both head for one minimum: FISTA's 100 iterations are near PDHG's 1000.
    reference = objective(tv_reconstruct(op, y, lam, iters=1000, x0=start))
    assert fista[1] < reference * 1.02


def test_fista_keeps_attenuation_non_negative_and_continuation_ends_at_lam(ct_problem):
    op, x, y = ct_problem
    start = op.fbp(y)  # has negative ripples
    assert float(start.min()) < 0
    out = tv_reconstruct_fista(op, y, 1e-4, iters=60, x0=start, nonnegative=True, lam_start=1e-2)
    assert float(out.min()) >= 0.0
    # The continuation only changes the path: it ends minimising the objective with lam itself.
    plain = tv_reconstruct_fista(op, y, 1e-4, iters=400, x0=start, nonnegative=True)
    cont = tv_reconstruct_fista(op, y, 1e-4, iters=400, x0=start, nonnegative=True, lam_start=1e-2)
    plain_objective, cont_objective = (tv_objective(op, y, v, 1e-4).item() for v in (plain, cont))
    assert abs(cont_objective - plain_objective) < 0.02 * plain_objective


def test_ct_sparse_view_default_is_fista_and_beats_the_old_pdhg_default(ct_problem):
    op, x, y = ct_problem
    tuned = default_params("tv", "ct", op)
    assert tuned["solver"] == "fista" and tuned["iters"] < 300
    default = run_baseline("tv", op, y, modality="ct")
    old = run_baseline("tv", op, y, modality="ct", params={"solver": "pdhg", "iters": 300})
    assert _psnr(x, default) >= _psnr(x, old)
    torch.testing.assert_close(default, solve_tv(op, y, "ct", tuned, x0=op.fbp(y, filter="cosine")).clamp_min(0))
    with pytest.raises(SettingsError, match="solver must be one of pdhg, fista"):
        run_baseline("tv", op, y, modality="ct", params={"solver": "admm"})


# --------------------------------------------------------------------------- denoising


@pytest.fixture(scope="module")
def noisy_batch():
    clean = torch.from_numpy(np.stack([_image(64, s) for s in (0, 1)]))[:, None]
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(5))
    return clean, noisy


def test_median_and_tv_denoising_reduce_gaussian_noise(noisy_batch):
    clean, noisy = noisy_batch
    before = _psnr(clean, noisy)
    assert _psnr(clean, median_denoise(noisy, 3)) > before + 2.0
    assert _psnr(clean, tv_denoise(noisy, 0.08, iters=100)) > before + 4.0
    out = run_baseline("tv", IdentityOperator(), noisy, modality="denoise", noise_level=0.1)  # tuned defaults
    assert _psnr(clean, out) > before + 4.0


def test_tv_denoising_solves_the_rof_problem_as_well_as_skimage(noisy_batch):
    _, noisy = noisy_batch
    weight = 0.08  # skimage's weight is our absolute TV weight
    lam = weight / noisy[:1].abs().max().item()
    ours = tv_denoise(noisy[:1], lam, iters=200)
    theirs = torch.from_numpy(denoise_tv_chambolle(noisy[0, 0].numpy(), weight=weight, eps=1e-6, max_num_iter=500))

    def rof(u: torch.Tensor) -> float:
        return (0.5 * (u - noisy[:1]).square().sum() + weight * total_variation(u)).item()

    assert rof(ours) <= rof(theirs[None, None]) * (1 + 1e-4)


def test_median_filter_removes_impulses():
    image = torch.full((1, 1, 16, 16), 0.5)
    image[0, 0, 5, 7] = 10.0
    assert median_denoise(image, 3).max().item() == pytest.approx(0.5)


def test_ultrasound_is_denoised_in_the_log_domain_against_the_clean_reference():
    """The speckled B-mode shares the clean image's reference, so a plain median lands on it:
    no re-referencing after the fact (which the self-referenced simulation once needed)."""
    envelope = torch.from_numpy(np.stack([_image(64, s) for s in (0, 1)]))[:, None].clamp_min(0) + 0.02
    reference = float(envelope.max())
    bmode = simulate_bmode(envelope, looks=1.0, dynamic_range_db=50.0, seed=3, reference=reference)
    clean = log_compress(envelope, dynamic_range_db=50.0, reference=reference)
    out = run_baseline("median", IdentityOperator(), bmode, modality="ultrasound", params={"size": 5})
    torch.testing.assert_close(out, median_denoise(bmode, 5).clamp(0, 1))
    assert abs(float((out - clean).mean())) < 0.02  # no offset left between result and truth
    assert _psnr(clean, out) > _psnr(clean, bmode) + 3.0


def test_bm3d_is_optional_and_says_how_to_get_it(noisy_batch):
    clean, noisy = noisy_batch
    if bm3d_available():
        assert _psnr(clean, bm3d_denoise(noisy, 0.1)) > _psnr(clean, noisy) + 4.0
        return
    with pytest.raises(DiffreconError, match="pip install bm3d") as err:
        run_baseline("bm3d", IdentityOperator(), noisy, modality="denoise", noise_level=0.1)
    assert str(err.value).count(". ") == 0  # one sentence


def test_bm3d_denoises_poisson_noise_in_its_stabilised_domain():
    """Poisson noise is signal-dependent: BM3D at one global std (the noise's own empirical
    std) over-smooths the dark and under-smooths the bright; through the Anscombe transform it
    sees white noise of a known std, and does better."""
    pytest.importorskip("bm3d")
    phantom = torch.from_numpy(make_phantom(1, 64, 64))[:, None]
    clean = phantom.clamp_min(0) / phantom.max() * 0.9 + 0.05
    noisy = PoissonNoise(20.0).sample(clean, torch.Generator().manual_seed(0))
    empirical = float((noisy - clean).std())
    plain = run_baseline("bm3d", IdentityOperator(), noisy, modality="denoise", noise_level=empirical)
    stabilised = run_baseline("bm3d", IdentityOperator(), noisy, modality="denoise", noise_level=empirical,
                              noise={"kind": "poisson", "peak": 20.0})
    assert _psnr(clean, stabilised) > _psnr(clean, plain) + 0.3


# --------------------------------------------------------------------------- the entry point


def test_run_baseline_runs_every_method_its_modality_allows(mri_problem, ct_problem, noisy_batch):
    op, _, y = mri_problem
    torch.testing.assert_close(run_baseline("zero-filled", op, y, modality="mri"), op.A_dagger(y))
    ct_op, _, sinogram = ct_problem
    torch.testing.assert_close(run_baseline("fbp", ct_op, sinogram, modality="ct", params={"filter": "hann"}),
                               ct_op.fbp(sinogram, filter="hann").clamp_min(0))
    _, noisy = noisy_batch
    torch.testing.assert_close(run_baseline("median", IdentityOperator(), noisy, modality="denoise",
                                            params={"size": 5}), median_denoise(noisy, 5))


@pytest.mark.parametrize(
    "method, modality, params, message",
    [
        ("fbp", "mri", None, "fbp does not apply to mri"),
        ("zero-filled", "ct", None, "zero-filled does not apply to ct"),
        ("median", "mri", None, "median does not apply to mri"),
        ("l1-wavelet", "denoise", None, "l1-wavelet does not apply to denoise"),
        ("sart", "ct", None, "Unknown method 'sart'"),
        ("tv", "pet", None, "Unknown modality 'pet'"),
        ("tv", "mri", {"lambda": 0.1}, "tv does not take lambda"),
        ("tv", "mri", {"lam": 0}, "tv's lam must be above 0"),
        ("l1-wavelet", "mri", {"iters": 2.5}, "l1-wavelet's iters must be an integer"),
        ("l1-wavelet", "mri", {"lam": "strong"}, "l1-wavelet's lam must be a number"),
        ("l1-wavelet", "mri", {"wavelet": "bior2.2"}, "must be an orthogonal one"),
    ],
)
def test_run_baseline_refuses_what_makes_no_sense_in_one_sentence(mri_problem, method, modality, params, message):
    op, _, y = mri_problem
    with pytest.raises(SettingsError) as err:
        run_baseline(method, op, y, modality=modality, params=params)
    text = str(err.value)
    assert message in text
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0


def test_defaults_exist_for_every_task_and_follow_the_problem():
    for task, methods in DEFAULTS.items():
        for method, params in methods.items():
            assert set(params) <= set(PARAMETERS[method]), (task, method)
    eight = MRIOperator(make_mask("random", (64, 64), 7.5, seed=0))
    assert task_for("mri", eight) == "mri-8x"
    assert task_for("ct", None, noise_level=0.05) == "ct-low-dose" and task_for("ct") == "ct-sparse-view"
    # fewer views: the same solver, more iterations (FISTA 100 lost 1 dB to PDHG 300 at 30 views)
    assert task_for("ct", ParallelBeamRadon(32, 30)) == "ct-sparse-view-few"
    assert default_params("tv", "ct", ParallelBeamRadon(32, 30))["iters"] > default_params("tv", "ct")["iters"]
    # Denoising TV weights grow in proportion to the noise level between tuned points.
    low, high = (default_params("tv", "denoise", None, s)["lam"] for s in (0.09, 0.11))
    assert high / low == pytest.approx(0.11 / 0.09)


# --------------------------------------------------------------------------- tuning


def test_tuning_scores_every_grid_point_and_prefers_cheaper_runs():
    slices = make_phantom(2, 48, 48) * 800.0  # any intensity scale: the working domain rescales
    settings = MeasurementSettings(modality="denoise", noise_sigma=0.1, seed=0)
    rows = tune("denoise", slices, settings, methods=["median", "tv"], lams=[0.05, 0.1], iters=[5, 40])
    assert [r["method"] for r in rows].count("tv") == 4 and [r["method"] for r in rows].count("median") == 3
    noisy = rows[0]["psnr"]
    assert all(r["psnr"] > noisy for r in rows[1:])
    chosen = best_per_method(rows)
    assert chosen["tv"]["psnr"] >= max(r["psnr"] for r in rows if r["method"] == "tv") - PSNR_TOLERANCE_DB
    # Equal scores: the run with fewer iterations is chosen.
    equal = [{"method": "tv", "lam": 1.0, "iters": 200, "psnr": 30.0, "ssim": 0.9},
             {"method": "tv", "lam": 1.0, "iters": 100, "psnr": 29.95, "ssim": 0.9}]
    assert best_per_method(equal)["tv"]["iters"] == 100


def test_tuning_never_sees_the_held_out_slab():
    try:
        volume = load_dataset("colin27")
    except DiffreconError:
        pytest.skip("colin27 is not installed")
    picked = training_slices("colin27", 6)
    held_out = volume.data[validation_slices(volume, "colin27")]
    for image in picked:
        assert not any(np.array_equal(image, other) for other in held_out)
        assert any(np.array_equal(image, other) for block in training_blocks(volume, "colin27") for other in block)
