"""The conjugate-gradient solver shared by the physics, baselines and guidance."""

from __future__ import annotations

import torch

from diffrecon.physics import MRIOperator, conjugate_gradient, make_mask


def test_cg_solves_a_batch_of_positive_definite_systems_each_at_its_own_pace():
    gen = torch.Generator().manual_seed(0)
    q = torch.linalg.qr(torch.randn(12, 12, generator=gen, dtype=torch.float64))[0]
    m = q @ torch.diag(torch.linspace(1, 50, 12, dtype=torch.float64)) @ q.T
    x_true = torch.randn(3, 12, generator=gen, dtype=torch.float64)
    x_true[1] = 0  # one item is already solved by the zero start
    rhs = x_true @ m
    x = conjugate_gradient(lambda v: v @ m, rhs, iters=40, tol=1e-10)
    assert torch.allclose(x, x_true, atol=1e-8)


def test_cg_on_the_singular_undersampled_mri_system_stays_finite_and_fits_the_data():
    """A^H A of a 4x mask is a projection: most directions have zero curvature. In float32,
    run past convergence (tol 0) from a warm start, the old solver divided round-off by
    round-off and reached |x| ~ 1e9."""
    gen = torch.Generator().manual_seed(1)
    op = MRIOperator(make_mask("random", (64, 64), 4.0, None, 0))
    y = op.A(torch.randn(2, 1, 64, 64, generator=gen, dtype=torch.complex64))
    x0 = torch.randn(2, 1, 64, 64, generator=gen, dtype=torch.complex64)
    for iters in (5, 100):
        x = conjugate_gradient(op.normal, op.A_adjoint(y), x0=x0, iters=iters, tol=0.0)
        assert torch.isfinite(x).all()
        assert (op.A(x) - y).abs().max() < 1e-5 * y.abs().max()
        # the null-space part of the warm start is kept, never amplified
        assert x.abs().max() < 2 * (x0.abs().max() + op.A_adjoint(y).abs().max())


def test_cg_from_an_exact_warm_start_changes_nothing():
    gen = torch.Generator().manual_seed(2)
    op = MRIOperator(make_mask("equispaced", (16, 16), 4.0, None, 0))
    x_true = op.A_adjoint(op.A(torch.randn(1, 1, 16, 16, generator=gen, dtype=torch.complex128)))
    rhs = op.normal(x_true)
    x = conjugate_gradient(op.normal, rhs, x0=x_true, iters=50)
    assert torch.equal(x, x_true)
