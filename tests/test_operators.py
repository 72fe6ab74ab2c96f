"""Every linear forward operator through the same checks, then each against a reference.

The shared checks: the adjoint is the exact transpose (<Ax, y> = <x, A^H y>), A is linear,
A_dagger is a pseudo-inverse, and a batch gives the same result as its items one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
from conftest import make_phantom
from diffrecon.baselines import run_baseline
from diffrecon.diffusion.adaptation import HeldOutOperator
from diffrecon.metrics import psnr
from diffrecon.physics import (
    IdentityOperator,
    LinearOperator,
    MRIOperator,
    ParallelBeamRadon,
    estimate_sensitivity_maps,
    make_mask,
    simulate_coil_maps,
)


@dataclass
class Case:
    build: Callable[[], LinearOperator]
    image_shape: tuple[int, int, int]  # (C, H, W) of one image
    complex_images: bool
    injective: bool  # A_dagger(A x) must give back x
    pinv_exact: bool = True  # A A_dagger A = A to float precision (else: CG residual check)


def _mri(kind: str, shape: tuple[int, int], acceleration: float = 4) -> Callable[[], LinearOperator]:
    return lambda: MRIOperator(make_mask(kind, shape, acceleration, seed=3))


def _per_item_mask() -> LinearOperator:
    masks = np.stack([make_mask("random", (32, 48), 4, seed=s) for s in range(3)])[:, None]  # (3, 1, H, W)
    return MRIOperator(masks)


CASES = {
    "mri-random": Case(_mri("random", (32, 48)), (1, 32, 48), True, False),
    "mri-equispaced-odd": Case(_mri("equispaced", (33, 65)), (1, 33, 65), True, False),
    "mri-gaussian2d": Case(_mri("gaussian2d", (40, 40), 8), (1, 40, 40), True, False),
    "mri-poisson": Case(_mri("poisson", (36, 44), 6), (1, 36, 44), True, False),
    "mri-per-item-masks": Case(_per_item_mask, (1, 32, 48), True, False),
    "mri-fully-sampled": Case(lambda: MRIOperator(np.ones((24, 31), bool)), (1, 24, 31), True, True),
    "mri-multicoil-4x": Case(
        lambda: MRIOperator(make_mask("equispaced", (32, 64), 4), simulate_coil_maps(4, 32, 64)),
        (1, 32, 64), True, False, pinv_exact=False,
    ),
    "mri-multicoil-full": Case(
        lambda: MRIOperator(np.ones((32, 40), bool), simulate_coil_maps(6, 32, 40, seed=1)),
        (1, 32, 40), True, True,
    ),
    "radon-32-90": Case(lambda: ParallelBeamRadon(32, 90), (1, 32, 32), False, False, pinv_exact=False),
    "radon-33-7-views": Case(lambda: ParallelBeamRadon(33, 7), (1, 33, 33), False, False, pinv_exact=False),
    "radon-40-1-view": Case(lambda: ParallelBeamRadon(40, [30.0]), (1, 40, 40), False, False, pinv_exact=False),
    "radon-31-wide-detector": Case(
        lambda: ParallelBeamRadon(31, 24, det_count=45, pixel_size_mm=0.7), (1, 31, 31), False, False,
        pinv_exact=False,
    ),
    "identity": Case(IdentityOperator, (1, 20, 30), False, True),
    # the self-supervised hold-out's restriction of an operator to part of its measurements
    "mri-held-out-columns": Case(
        lambda: HeldOutOperator(MRIOperator(make_mask("random", (32, 48), 4, seed=3)),
                                (torch.arange(48) % 5 != 2).float().view(1, 1, 1, 48)),
        (1, 32, 48), True, False,
    ),
    "radon-held-out-views": Case(
        lambda: HeldOutOperator(ParallelBeamRadon(32, 30), (torch.arange(30) % 4 != 1).float().view(1, 1, 30, 1)),
        (1, 32, 32), False, False, pinv_exact=False,
    ),
}
BATCH = 3


def _random_images(case: Case, batch: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn((batch, *case.image_shape), generator=generator, dtype=dtype)
    if case.complex_images:
        x = torch.complex(x, torch.randn(x.shape, generator=generator, dtype=dtype))
    return x


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> = sum conj(a) b, the inner product the adjoint is defined by."""
    return (a.conj() * b).sum() if a.is_complex() else (a * b).sum()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("name", list(CASES))
def test_linear_operator_contract(name: str) -> None:
    case = CASES[name]
    op = case.build()
    g = torch.Generator().manual_seed(0)

    # 1. Adjointness, in double precision (to 1e-9: only rounding can break it) and in the
    #    single precision the sampler uses (to 1e-5 of |Ax| |y|).
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        x = _random_images(case, BATCH, dtype, g)
        ax = op.A(x)
        y = torch.randn(ax.shape, generator=g, dtype=dtype)
        if ax.is_complex():
            y = torch.complex(y, torch.randn(ax.shape, generator=g, dtype=dtype))
        aty = op.A_adjoint(y)
        assert aty.shape == x.shape and ax.dtype == x.dtype and aty.dtype == x.dtype
        lhs, rhs = _inner(ax, y), _inner(x, aty)
        scale = ax.abs().square().sum().sqrt() * y.abs().square().sum().sqrt()
        if dtype == torch.float64:
            scale = lhs.abs()
        assert float((lhs - rhs).abs() / scale) < tol, f"adjointness fails in {dtype}"

    # 2. Linearity: A(a x1 + b x2) = a A x1 + b A x2.
    x1, x2 = _random_images(case, BATCH, torch.float32, g), _random_images(case, BATCH, torch.float32, g)
    a, b = (0.7 - 0.2j, -1.3 + 0.5j) if case.complex_images else (0.7, -1.3)
    assert _relative(op.A(a * x1 + b * x2), a * op.A(x1) + b * op.A(x2)) < 1e-5

    # 3. Pseudo-inverse: A_dagger(A x) = x when A is injective; always A A_dagger A x = A x
    #    (exactly for closed forms; CG must at least cut the residual of its starting point).
    x = _random_images(case, BATCH, torch.float32, g)
    ax = op.A(x)
    x_hat = op.A_dagger(ax)
    if case.injective:
        assert _relative(x_hat, x) < 1e-4
    if case.pinv_exact:
        assert _relative(op.A(x_hat), ax) < 1e-4
    else:
        start = (op.A(op.A_adjoint(ax)) - ax).norm()  # residual of the plain back-projection
        assert float((op.A(x_hat) - ax).norm()) < 0.3 * float(start)

    # 4. A batch gives its items' results, for A and for A_adjoint.
    if name != "mri-per-item-masks":  # its masks differ per item by design; see test below
        singles = torch.cat([op.A(x[i : i + 1]) for i in range(BATCH)])
        assert _relative(op.A(x), singles) < 1e-6
        back = torch.cat([op.A_adjoint(ax[i : i + 1]) for i in range(BATCH)])
        assert _relative(op.A_adjoint(ax), back) < 1e-6


def test_per_item_masks_apply_to_their_own_item() -> None:
    masks = np.stack([make_mask("random", (32, 48), 4, seed=s) for s in range(3)])
    batched = MRIOperator(masks[:, None])
    x = torch.randn(3, 1, 32, 48, dtype=torch.complex64)
    for i in range(3):
        single = MRIOperator(masks[i]).A(x[i : i + 1])
        assert torch.allclose(batched.A(x)[i : i + 1], single, atol=1e-6)


# --------------------------------------------------------------------------- references


def _numpy_fft2c(a: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(a, axes=axes), norm="ortho"), axes=axes)


@pytest.mark.parametrize("shape", [(32, 48), (33, 65)])
def test_mri_matches_numpy_fft(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    mask = make_mask("random", shape, 4)
    maps = simulate_coil_maps(3, *shape, seed=2)
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    xt = torch.from_numpy(x)[None, None]

    single = MRIOperator(mask).A(xt)[0, 0].numpy()
    np.testing.assert_allclose(single, _numpy_fft2c(x) * mask, atol=2e-5)
    multi = MRIOperator(mask, maps).A(xt)[0].numpy()
    np.testing.assert_allclose(multi, _numpy_fft2c(maps * x) * mask, atol=2e-5)

    # Single-coil A_dagger is the zero-filled inverse FFT; zero_filled is its magnitude.
    y = _numpy_fft2c(x) * mask
    zf = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(y), norm="ortho"))
    op = MRIOperator(mask)
    np.testing.assert_allclose(op.A_dagger(torch.from_numpy(y)[None, None])[0, 0].numpy(), zf, atol=2e-5)
    np.testing.assert_allclose(op.zero_filled(torch.from_numpy(y)[None, None])[0, 0].numpy(), np.abs(zf), atol=2e-5)


def _disc_phantom(n: int) -> np.ndarray:
    """A phantom that vanishes outside the inscribed circle (radon's circle=True geometry)."""
    image = make_phantom(3, n, n)[1]
    yy, xx = np.mgrid[:n, :n] - n // 2
    return image * ((yy**2 + xx**2) < (n // 2 - 1) ** 2)


@pytest.mark.parametrize("size, views", [(64, 30), (65, 17), (48, 90)])
def test_radon_and_fbp_match_scikit_image(size: int, views: int) -> None:
    from skimage.transform import iradon, radon

    image = _disc_phantom(size)
    op = ParallelBeamRadon(size, views)
    sinogram = op.A(torch.from_numpy(image)[None, None])[0, 0].numpy()
    reference = radon(image, op.angles_deg, circle=True).T  # skimage: (detector, view)
    # Same geometry and bilinear interpolation: agreement to float32 rounding.
    assert np.abs(sinogram - reference).max() < 1e-5 * np.abs(reference).max()

    # FBP with the same ramp agrees with iradon inside the circle (iradon's linear
    # interpolation differs from grid_sample only on the circle's last pixel ring).
    yy, xx = np.mgrid[:size, :size] - size // 2
    inner = (yy**2 + xx**2) < (size // 2 - 1) ** 2
    for name, tol in (("ramp", 5e-5), ("shepp-logan", 5e-5), ("cosine", 5e-5), ("hann", 2e-3)):
        ours = op.fbp(torch.from_numpy(reference.astype(np.float32))[None, None], name)[0, 0].numpy()
        theirs = iradon(reference.T, op.angles_deg, filter_name=name, circle=True)
        # hann: iradon's window is numpy's hanning(P), ours 0.5 (1 + cos(2 pi f)).
        assert np.abs(ours - theirs)[inner].max() < tol * np.abs(theirs).max(), name


def test_maps_from_a_narrow_calibration_region_cover_the_object() -> None:
    """A 4x random line mask keeps ~10 centre columns: ESPIRiT's eigenvalue then falls below
    the usual 0.95 crop inside the object too. The maps must still cover the object, and TV
    through them must come close to TV through the true maps (zero maps gave bands, -3 dB)."""
    size = 96
    image = make_phantom(3, size, size)[1] * np.exp(1j * np.linspace(0, 1.0, size))[None]
    true_maps = simulate_coil_maps(8, size, size, seed=0)
    mask = make_mask("random", (size, size), 4.0, seed=0)
    x = torch.from_numpy(image.astype(np.complex64))[None, None]
    kspace = MRIOperator(np.ones((size, size), bool), true_maps).A(x)[0].numpy() * mask
    maps = estimate_sensitivity_maps(kspace, mask=mask)
    support = np.abs(image) > 0
    assert np.sqrt((np.abs(maps) ** 2).sum(axis=0))[support].min() > 0.99

    def tv_psnr(m: np.ndarray) -> float:
        op = MRIOperator(mask, m)
        out = run_baseline("tv", op, op.A(x), modality="mri")
        return psnr(np.abs(image)[None], out.abs()[:, 0].numpy())

    assert tv_psnr(maps) > tv_psnr(true_maps) - 1.0


def test_sense_with_estimated_maps_reproduces_the_phantom() -> None:
    """ESPIRiT maps from fully sampled multi-coil k-space give back the object (in magnitude:
    the maps' phase is relative to coil 0) inside its support, then also from 2x data."""
    height, width = 64, 64
    image = make_phantom(3, height, width)[1] * np.exp(1j * np.linspace(0, 1.0, width))[None]
    true_maps = simulate_coil_maps(8, height, width, seed=4)
    x = torch.from_numpy(image.astype(np.complex64))[None, None]
    kspace = MRIOperator(np.ones((height, width), bool), true_maps).A(x)[0].numpy()

    maps = estimate_sensitivity_maps(kspace, calib_width=24)
    support = np.abs(image) > 0
    coil_norm = np.sqrt((np.abs(maps) ** 2).sum(axis=0))
    assert np.allclose(coil_norm[support], 1.0, atol=1e-4)
    # The estimated maps equal the true ones up to a per-pixel phase.
    assert np.abs((maps.conj() * true_maps).sum(axis=0))[support].min() > 0.995

    full = MRIOperator(np.ones((height, width), bool), maps)
    recon = full.A_adjoint(torch.from_numpy(kspace)[None])[0, 0].numpy()
    assert np.abs(np.abs(recon) - np.abs(image))[support].max() < 5e-3

    # Every third line plus 16 centre lines (a regular SENSE pattern: irregular masks leave
    # k-space gaps too wide for smooth coils to bridge, and no maps could fix that): maps
    # calibrated from the mask's centre, SENSE by CG.
    mask = np.zeros((height, width), bool)
    mask[:, ::3] = True
    mask[:, width // 2 - 8 : width // 2 + 8] = True
    op = MRIOperator(mask, estimate_sensitivity_maps(kspace * mask, mask=mask))
    sense = op.A_dagger(torch.from_numpy(kspace * mask)[None], iters=100)[0, 0].numpy()
    error = np.linalg.norm((np.abs(sense) - np.abs(image))[support]) / np.linalg.norm(image[support])
    assert error < 0.01


def test_data_consistency_single_coil() -> None:
    g = torch.Generator().manual_seed(0)
    mask = make_mask("random", (32, 32), 4)
    op = MRIOperator(mask)
    truth = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.complex64)
    y = op.A(truth)
    guess = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.complex64)

    hard = op.data_consistency(guess, y)
    assert torch.allclose(op.A(hard), y, atol=1e-5)  # measured samples replaced exactly
    unmeasured = torch.from_numpy(~mask)
    from diffrecon.physics import fft2c

    assert torch.allclose(fft2c(hard)[..., unmeasured], fft2c(guess)[..., unmeasured], atol=1e-5)

    # Soft: with noise sigma and prediction error tau, the measured samples move a fraction
    # tau^2 / (tau^2 + sigma^2) of the way; a consistent estimate is left alone.
    sigma = 0.5
    soft = op.data_consistency(guess, y, noise_level=sigma)
    residual = (y - op.A(guess))[..., torch.from_numpy(mask)]
    tau2 = (residual.abs().square().mean(dim=(1, 2)) - sigma**2).clamp_min(0)
    weight = tau2 / (tau2 + sigma**2)
    moved = (op.A(soft) - op.A(guess))[..., torch.from_numpy(mask)]
    assert torch.allclose(moved, weight.view(-1, 1, 1) * residual, atol=1e-5)
    assert torch.allclose(op.data_consistency(truth, y, noise_level=sigma), truth, atol=1e-5)


def test_data_consistency_multicoil_reduces_the_residual() -> None:
    maps = simulate_coil_maps(4, 32, 32, seed=0)
    op = MRIOperator(make_mask("equispaced", (32, 32), 4), maps)
    g = torch.Generator().manual_seed(1)
    truth = torch.randn(2, 1, 32, 32, generator=g, dtype=torch.complex64)
    y = op.A(truth)
    guess = truth + 0.5 * torch.randn(2, 1, 32, 32, generator=g, dtype=torch.complex64)
    before = (op.A(guess) - y).norm()
    after = (op.A(op.data_consistency(guess, y, iters=5)) - y).norm()
    assert after < 0.2 * before
    soft = op.data_consistency(guess, y, noise_level=0.1, iters=5)
    assert (op.A(soft) - y).norm() < before
    assert torch.allclose(op.data_consistency(truth, y, noise_level=0.1), truth, atol=1e-4)


def test_real_input_is_promoted_and_float64_kept() -> None:
    op = MRIOperator(make_mask("random", (32, 32), 4))
    assert op.A(torch.rand(1, 1, 32, 32)).dtype == torch.complex64
    assert op.A(torch.rand(1, 1, 32, 32, dtype=torch.float64)).dtype == torch.complex128
    radon = ParallelBeamRadon(32, 10)
    assert radon.A(torch.rand(2, 1, 32, 32, dtype=torch.float64)).dtype == torch.float64
