"""CT: physical units of the projector, FBP, sparse views, low-dose noise, Hounsfield units.

(Adjointness and agreement with scikit-image's radon/iradon are in test_operators.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_phantom
from diffrecon.errors import SettingsError
from diffrecon.physics import MU_WATER_PER_MM, ParallelBeamRadon, hu_to_mu, mu_to_hu, simulate_low_dose


def _water_disc(n: int, radius_px: float) -> torch.Tensor:
    yy, xx = np.mgrid[:n, :n] - n // 2
    return torch.from_numpy(((yy**2 + xx**2) <= radius_px**2).astype(np.float32) * MU_WATER_PER_MM)[None, None]


def test_line_integrals_are_in_physical_units() -> None:
    """The central ray through a water disc of diameter 2 r pixels of 0.5 mm integrates to
    mu_water * 2 r * 0.5 mm, at every angle."""
    n, radius = 64, 20
    op = ParallelBeamRadon(n, 12, pixel_size_mm=0.5)
    sinogram = op.A(_water_disc(n, radius))[0, 0]
    central = sinogram[:, op.det_count // 2]
    expected = MU_WATER_PER_MM * (2 * radius + 1) * 0.5  # the disc spans 2r + 1 pixel centres
    assert torch.allclose(central, torch.full_like(central, expected), rtol=0.03)
    # FBP divides the pixel size back out: it returns 1/mm.
    recon = op.fbp(op.A(_water_disc(n, radius)))[0, 0]
    assert abs(float(recon[n // 2 - 5 : n // 2 + 5, n // 2 - 5 : n // 2 + 5].mean()) / MU_WATER_PER_MM - 1) < 0.02


def _circle_phantom(n: int) -> torch.Tensor:
    image = make_phantom(3, n, n)[1]
    yy, xx = np.mgrid[:n, :n] - n // 2
    return torch.from_numpy(image * ((yy**2 + xx**2) < (n // 2 - 2) ** 2))[None, None]


@pytest.mark.parametrize("filter_name", ["ramp", "shepp-logan", "cosine", "hann"])
def test_fbp_of_many_views_recovers_the_phantom(filter_name: str) -> None:
    n = 64
    image = _circle_phantom(n)
    op = ParallelBeamRadon(n, 180)
    recon = op.fbp(op.A(image), filter_name)
    error = float((recon - image).norm() / image.norm())
    # Smoothing windows trade resolution for noise: a clean phantom shows their blur.
    assert error < {"ramp": 0.09, "shepp-logan": 0.1, "cosine": 0.12, "hann": 0.14}[filter_name]


def test_fbp_with_a_wide_detector_and_odd_size() -> None:
    n = 47
    image = _circle_phantom(n)
    op = ParallelBeamRadon(n, 120, det_count=math.ceil(math.sqrt(2) * n))
    error = float((op.fbp(op.A(image)) - image).norm() / image.norm())
    assert error < 0.11


def test_sparse_views_streak_and_cost_accuracy() -> None:
    n = 64
    image = _circle_phantom(n)
    errors = []
    for views in (180, 30, 8):
        op = ParallelBeamRadon(n, views)
        assert op.A(image).shape == (1, 1, views, n)
        assert np.allclose(np.diff(op.angles_deg), 180 / views)  # spread over 180 degrees
        errors.append(float((op.fbp(op.A(image)) - image).norm() / image.norm()))
    assert errors[0] < errors[1] < errors[2]


def test_low_dose_noise_grows_as_dose_falls() -> None:
    n = 48
    op = ParallelBeamRadon(n, 60)
    clean = op.A(_water_disc(n, 18) * 10)  # ~0.2/mm: line integrals up to ~7, few photons
    variances = []
    for dose in (1.0, 0.25, 0.05):
        noisy = simulate_low_dose(clean, dose, photons_full_dose=4096, seed=3)
        assert torch.isfinite(noisy).all()
        variances.append(float((noisy - clean).var()))
    assert variances[0] < variances[1] < variances[2]
    # Poisson counting: the variance of a line integral p is about exp(p) / I0 (delta method)
    # where counts are plentiful: check it on the rays that miss the disc (p = 0).
    air = clean.abs() < 1e-6
    many = torch.cat([simulate_low_dose(clean, 0.5, seed=s)[air] for s in range(4)])
    assert abs(float(many.var()) * 4096 * 0.5 - 1) < 0.1


def test_low_dose_is_seeded_and_clamps_zero_counts() -> None:
    sinogram = torch.full((1, 1, 10, 20), 30.0)  # exp(-30) * 4096: nearly always zero photons
    noisy = simulate_low_dose(sinogram, 0.1, seed=0)
    assert torch.allclose(noisy, torch.full_like(noisy, -math.log(0.1 / 409.6)))
    b1 = simulate_low_dose(torch.ones(1, 1, 10, 20), 0.1, seed=5)
    b2 = simulate_low_dose(torch.ones(1, 1, 10, 20), 0.1, seed=5)
    b3 = simulate_low_dose(torch.ones(1, 1, 10, 20), 0.1, seed=6)
    assert torch.equal(b1, b2) and not torch.equal(b1, b3)


def test_hounsfield_units_round_trip() -> None:
    hu = torch.tensor([-1000.0, 0.0, 40.0, 1000.0])
    mu = hu_to_mu(hu)
    assert torch.allclose(mu[:2], torch.tensor([0.0, MU_WATER_PER_MM]))
    assert torch.allclose(mu_to_hu(mu), hu, atol=1e-3)
    assert abs(hu_to_mu(np.float64(1000.0)) - 2 * MU_WATER_PER_MM) < 1e-12


def test_the_system_matrix_is_built_once_per_geometry(monkeypatch) -> None:
    monkeypatch.setenv("DIFFRECON_CACHE_DIR", "off")
    op = ParallelBeamRadon(40, 45)
    x = torch.rand(2, 1, 40, 40)
    y = op.A(x)
    assert ParallelBeamRadon(40, 45).matrices is op.matrices  # same geometry: the cached matrices
    assert ParallelBeamRadon(40, 44).matrices is not op.matrices
    # A and its stored transpose are the same matrix (the adjoint is exact by construction).
    m = op.matrices
    assert abs(m.forward - m.adjoint.T).max() == 0
    assert torch.allclose(op.A(x.double()).float(), y, atol=1e-5)  # float64 tables, converted once
    assert op.matrices.torch_pair(x.device, torch.float64)[0] is op.matrices.torch_pair(x.device, torch.float64)[0]


def test_disk_cache_round_trips_and_survives_a_bad_file(monkeypatch, tmp_path) -> None:
    from diffrecon.physics import radon_matrix

    monkeypatch.setenv("DIFFRECON_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(radon_matrix, "_DISK_CACHE_AFTER_S", 0.0)  # small geometries are not cached otherwise
    monkeypatch.setattr(radon_matrix, "_MEMORY_CACHE", {})
    x = torch.rand(1, 1, 36, 36)
    built = ParallelBeamRadon(36, 20, det_count=51)
    expected = built.A(x)
    assert built.matrices.source == "built"
    files = list((tmp_path / "radon").glob("*.npz"))
    assert len(files) == 1
    radon_matrix._MEMORY_CACHE.clear()
    loaded = ParallelBeamRadon(36, 20, det_count=51)
    assert torch.equal(loaded.A(x), expected) and loaded.matrices.source == "disk"
    files[0].write_bytes(b"not a cache file")
    radon_matrix._MEMORY_CACHE.clear()
    rebuilt = ParallelBeamRadon(36, 20, det_count=51)
    assert torch.equal(rebuilt.A(x), expected) and rebuilt.matrices.source == "built"


def test_autograd_goes_through_the_projector() -> None:
    """DPS differentiates ||A x - y||: the gradient is 2 A^T (A x - y)."""
    op = ParallelBeamRadon(32, 12)
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    y = torch.rand(2, 1, 12, 32)
    ((op.A(x) - y) ** 2).sum().backward()
    expected = 2 * op.A_adjoint(op.A(x.detach()) - y)
    assert torch.allclose(x.grad, expected, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():  # the viewer builds and first runs its problems here
        op2 = ParallelBeamRadon(32, 13)
        op2.A(x.detach())
    z = torch.rand(1, 1, 32, 32, requires_grad=True)
    op2.A(z).sum().backward()
    assert torch.allclose(z.grad, op2.A_adjoint(torch.ones(1, 1, 13, 32)), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"image_size": (32, 40)}, "square image"),
        ({"image_size": 32, "views": 0}, "at least one view"),
        ({"image_size": 32, "views": []}, "at least one view"),
        ({"image_size": 32, "pixel_size_mm": 0.0}, "pixel size"),
    ],
)
def test_bad_geometry_raises_settings_error(kwargs, words) -> None:
    with pytest.raises(SettingsError, match=words):
        ParallelBeamRadon(**kwargs)


def test_bad_dose_and_filter_raise_settings_error() -> None:
    with pytest.raises(SettingsError, match="dose fraction"):
        simulate_low_dose(torch.zeros(1, 1, 4, 4), 0.0)
    op = ParallelBeamRadon(16, 4)
    with pytest.raises(SettingsError, match="FBP filter"):
        op.fbp(torch.zeros(1, 1, 4, 16), "hamming-ish")
    with pytest.raises(SettingsError, match="16 x 16"):
        op.A(torch.zeros(1, 1, 16, 17))


@pytest.mark.parametrize("views", [13, 26])  # 13: the last block is short; 26: half built, half turned
def test_the_system_matrix_does_not_depend_on_threads_or_blocks(views: int) -> None:
    from diffrecon.physics.radon_matrix import build_forward_matrix

    angles = np.linspace(0.0, 180.0, views, endpoint=False)
    one = build_forward_matrix(33, angles, 47, chunk_views=13, threads=1)
    for chunk, threads in ((4, 2), (1, 3), (5, 1)):
        other = build_forward_matrix(33, angles, 47, chunk_views=chunk, threads=threads)
        assert other.shape == one.shape and other.has_sorted_indices
        assert abs(other - one).max() == 0


@pytest.mark.parametrize(("size", "det", "n_built"), [(33, 47, 4), (32, 46, 6), (20, 31, 4)])
def test_views_built_by_symmetry_match_views_built_alone(size: int, det: int, n_built: int, monkeypatch) -> None:
    """Of 12 views 15 degrees apart, those in [0, 45] are built and the others turned by 90
    degrees, mirrored about the diagonal (90 - θ, detector reversed: odd bin counts only) or
    both (one pixel permutation each); on the image's pixels that is the matrix built view by
    view, to float32 rounding. Only the zero padding ring may differ, and the operator never
    sees it."""
    import scipy.sparse as sp

    from diffrecon.physics import radon_matrix
    from diffrecon.physics.radon_matrix import build_forward_matrix

    built: list[int] = []
    block = radon_matrix._adjoint_block
    monkeypatch.setattr(radon_matrix, "_adjoint_block", lambda n, th, d, **kw: built.append(th.size) or block(n, th, d, **kw))
    angles = np.arange(12) * 15.0
    turned = build_forward_matrix(size, angles, det, threads=2)
    assert sum(built) == n_built  # 0, 15, 30, 45 (and 60, 75 with an even bin count)
    monkeypatch.setattr(radon_matrix, "_adjoint_block", block)
    alone = sp.vstack([build_forward_matrix(size, angles[i : i + 1], det) for i in range(angles.size)], format="csr")
    side = size + 2
    image = np.arange(side * side).reshape(side, side)[1:-1, 1:-1].ravel()
    assert turned.shape == alone.shape and turned.has_sorted_indices
    assert abs(turned[:, image] - alone[:, image]).max() < 1e-5
    assert abs(turned[:, image]).sum() == pytest.approx(abs(alone[:, image]).sum(), rel=1e-6)
