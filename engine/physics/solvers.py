"""Small iterative solvers shared by physics, baselines and samplers."""

from __future__ import annotations

from typing import Callable

import torch


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of <a, b> per batch item, shaped to broadcast over (B, ...)."""
    prod = (a.conj() * b) if a.is_complex() else a * b
    s = prod.reshape(prod.shape[0], -1).sum(dim=1)
    s = s.real if s.is_complex() else s
    return s.view(-1, *([1] * (a.dim() - 1)))


def conjugate_gradient(
    apply_A: Callable[[torch.Tensor], torch.Tensor],  # noqa: N803
    rhs: torch.Tensor,
    *,
    x0: torch.Tensor | None = None,
    iters: int = 20,
    tol: float = 1e-6,
) -> torch.Tensor:
    """Solve ``M x = rhs`` for a Hermitian positive (semi)definite ``M``, batch-wise.

    Each batch item runs its own CG (step sizes per item), so one converged image
    does not stop the others. Stops early when every item's residual norm falls
    below ``tol`` times its *initial* residual norm (a warm start ``x0`` that is nearly
    right then stops at once instead of chasing round-off). A search direction that
    ``M`` (nearly) annihilates, as happens on singular systems such as an undersampled
    MRI normal operator, takes no step: dividing by its tiny curvature blew up to 1e9.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - apply_A(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = _dot(r, r)
    stop = tol**2 * rs.clamp_min(1e-30)
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        Ap = apply_A(p)
        denom = _dot(p, Ap)
        curved = denom > 1e-10 * _dot(p, p)
        alpha = torch.where(curved, rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * Ap
        rs_new = _dot(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return x
