"""The iterative solvers shared by physics, baselines and samplers, and their inner product.

* :func:`conjugate_gradient` solves ``M x = rhs`` for a Hermitian positive (semi)definite
  ``M`` given as a function (normal equations with or without Tikhonov weight).
* :func:`cgls` solves ``min ||A x - y||`` for an operator with ``A`` and ``A_adjoint``:
  conjugate gradients on the normal equations written so that the measurement residual
  is at hand (the discrepancy principle stops on it).

Both run one solve per batch item (a converged item stops; the others go on) and share
:func:`inner`, the batched real inner product.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch


class LinearMap(Protocol):
    """What the solvers need of an operator (any :class:`.base.LinearOperator`)."""

    def A(self, x: torch.Tensor) -> torch.Tensor: ...  # noqa: N802

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor: ...  # noqa: N802


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of ``<a, b>`` per batch item, shape ``(B,)``."""
    prod = (a.conj() * b).real if a.is_complex() else a * b
    return prod.reshape(prod.shape[0], -1).sum(dim=1)


def per_item(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` coefficient shaped to broadcast over ``like`` (images and measurements
    may have different numbers of dimensions)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


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
    rs = inner(r, r)
    stop = tol**2 * rs.clamp_min(1e-30)
    for _ in range(iters):
        if bool((rs <= stop).all()):
            break
        Ap = apply_A(p)
        denom = inner(p, Ap)
        curved = denom > 1e-10 * inner(p, p)
        alpha = torch.where(curved, rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        x = x + per_item(alpha, x) * p
        r = r - per_item(alpha, r) * Ap
        rs_new = inner(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + per_item(beta, p) * p
        rs = rs_new
    return x


def cgls(operator: LinearMap, y: torch.Tensor, x_init: torch.Tensor, *, iters: int,
         stop_residual: torch.Tensor | None = None) -> torch.Tensor:
    """Least squares ``min ||A x - y||`` by CGLS from ``x_init``, batch-wise.

    CGLS is conjugate gradients on the normal equations, written so that the
    measurement residual ``r = y - A x`` is at hand every iteration. An item stops (its
    steps become zero) once ``||r|| <= stop_residual[item]`` (the discrepancy principle)
    or its normal-equation gradient has fallen by 1e6; the others go on.
    """
    x = x_init.clone()
    r = y - operator.A(x)
    s = operator.A_adjoint(r)
    p = s.clone()
    gamma = inner(s, s)
    tiny = gamma * 1e-12
    stop2 = None if stop_residual is None else stop_residual.reshape(-1).square()
    ones = torch.ones_like(gamma)
    for _ in range(iters):
        active = gamma > tiny
        if stop2 is not None:
            active &= inner(r, r) > stop2
        if not bool(active.any()):
            break
        q = operator.A(p)
        qq = inner(q, q)
        active &= qq > 0
        # Finished items take zero steps and keep their search direction.
        alpha = torch.where(active, gamma / qq.where(active, ones), torch.zeros_like(gamma))
        x = x + per_item(alpha, x) * p
        r = r - per_item(alpha, r) * q
        s = operator.A_adjoint(r)
        gamma_new = inner(s, s)
        beta = torch.where(active, gamma_new / gamma.where(active, ones), torch.zeros_like(gamma))
        p = torch.where(per_item(active, p), s + per_item(beta, p) * p, p)
        gamma = torch.where(active, gamma_new, gamma)
    return x


def discrepancy(y: torch.Tensor, noise_level: float, items: int) -> torch.Tensor | None:
    """Morozov's discrepancy principle: stop fitting once ``||A x - y||`` is down to the noise,
    ``sqrt(m) sigma`` for ``m`` measurements of noise std ``sigma`` (None when noiseless)."""
    if noise_level <= 0:
        return None
    return torch.full((items,), math.sqrt(y[0].numel()) * noise_level, device=y.device)


def residual_norm(operator: LinearMap, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``||A x - y||`` per batch item, shape ``(B,)``."""
    r = operator.A(x) - y
    return inner(r, r).sqrt()
