"""Total-variation (TV) reconstruction and denoising for any linear operator.

Reconstruction solves, per batch item,

    min_x  1/2 ||A x - y||²  +  lam_abs · TV(x),     TV(x) = Σ_pixels |∇x|,

with isotropic TV: ``|∇x|`` is the Euclidean norm of the forward differences along rows
and columns; for complex images it is the norm of the *complex* gradient
(``sqrt(|∂_r x|² + |∂_c x|²)``), so phase is regularised together with magnitude.

Algorithm: the primal-dual hybrid gradient method of Chambolle & Pock (2011) on
``K = [A; ∇]`` with both terms dualised (no inner solves, so it works for every
:class:`~diffrecon.physics.base.LinearOperator`). The operator is first normalised by a
power-iteration estimate of ``||A||`` (cached per operator and image shape), so that
``||K||² <= 1 + 8`` whatever the physics (an MRI operator has ``||A|| = 1``, a Radon
transform hundreds) and the same step-size rule works for all (see :func:`_step_sizes`).

CT uses :func:`tv_reconstruct_fista` instead: accelerated proximal gradient (FISTA) with the
non-negativity of attenuation and a decreasing TV weight (continuation). On 60-view head
CT it passes PDHG's 300-iteration PSNR in 100 iterations, each costing the same one
``A`` and one ``Aᴴ`` (figures in :mod:`.defaults`).

Denoising (``A = I``) uses the accelerated variant (Chambolle & Pock's Algorithm 2): the
data term ``1/2 ||x - y||²`` is strongly convex, which gives O(1/k²) convergence.

Regularisation weights are *relative*: ``lam_abs = lam · max|Aᴴy|`` per batch item. Both
sides of the objective then scale alike when the image is scaled, and when the operator
norm changes, so tuned defaults transfer across intensity scalings and image sizes.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from ..physics.base import LinearOperator

#: ||∇||² <= 8 for 2D forward differences with unit spacing.
GRADIENT_NORM_SQUARED = 8.0
#: step sizes use ||A|| times this, since power iteration approaches ||A|| from below.
NORM_SAFETY = 1.02
#: PDHG step-size constants (see :func:`_step_sizes`).
PRIMAL_STEP_TIMES_LAM = 0.02
DATA_SHARE = 0.5

_norm_cache: weakref.WeakKeyDictionary[LinearOperator, dict[tuple, float]] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- gradient and TV


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences of ``(B, C, H, W)`` images as ``(B, C, 2, H, W)`` (zero at the far edge)."""
    grad = x.new_zeros(x.shape[:2] + (2,) + x.shape[2:])
    grad[:, :, 0, :-1] = x[:, :, 1:] - x[:, :, :-1]
    grad[:, :, 1, :, :-1] = x[..., 1:] - x[..., :-1]
    return grad


def divergence(grad: torch.Tensor) -> torch.Tensor:
    """The negative adjoint of :func:`gradient`: ``<∇x, g> = -<x, div g>``."""
    rows, cols = grad[:, :, 0], grad[:, :, 1]
    div = torch.zeros_like(rows)
    div[:, :, :-1] += rows[:, :, :-1]
    div[:, :, 1:] -= rows[:, :, :-1]
    div[..., :-1] += cols[..., :-1]
    div[..., 1:] -= cols[..., :-1]
    return div


def _gradient_magnitude(grad: torch.Tensor) -> torch.Tensor:
    """Pixelwise ``|∇x|`` over directions and channels, shaped ``(B, 1, 1, H, W)``."""
    return grad.abs().square().sum(dim=(1, 2), keepdim=True).sqrt()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV of each batch item, ``(B,)``."""
    return _gradient_magnitude(gradient(x)).flatten(1).sum(dim=1)


# --------------------------------------------------------------------------- operator facts


def operator_norm(operator: LinearOperator, like: torch.Tensor, *, iters: int = 30, seed: int = 0) -> float:
    """``||A||`` (largest singular value) by power iteration on ``AᴴA``, for images shaped like ``like``.

    Cached per operator and image shape/dtype/device, so repeated reconstructions with the
    same physics pay for it once. The estimate approaches the true norm from below.
    """
    key = (tuple(like.shape), like.dtype, str(like.device))
    try:
        cached = _norm_cache.setdefault(operator, {})
    except TypeError:  # an unhashable or non-weakref-able operator: no caching
        cached = {}
    if key not in cached:
        generator = torch.Generator().manual_seed(seed)
        v = torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
        norm_sq = 0.0
        for _ in range(iters):
            v = v / v.abs().square().sum().sqrt().clamp_min(1e-30)
            w = operator.normal(v)
            # Rayleigh quotient <v, AᴴA v> of the unit vector v.
            norm_sq = float((v.conj() * w).real.sum() if v.is_complex() else (v * w).sum())
            v = w
        cached[key] = max(norm_sq, 0.0) ** 0.5
    return cached[key]


def regularization_scale(operator: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """``max|Aᴴy|`` per batch item, ``(B, 1, 1, 1)``: the unit of relative weights."""
    return operator.A_adjoint(y).abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)


def tv_objective(operator: LinearOperator, y: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """``1/2 ||Ax - y||² + lam · max|Aᴴy| · TV(x)`` per batch item, ``(B,)`` (``lam`` relative)."""
    data = 0.5 * (operator.A(x) - y).abs().square().flatten(1).sum(dim=1)
    return data + lam * regularization_scale(operator, y).flatten() * total_variation(x)


# --------------------------------------------------------------------------- solvers


def _project_to_ball(q: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Project each pixel's gradient vector onto the ball of ``radius`` (the prox of TV's conjugate)."""
    radius = radius.view(-1, 1, 1, 1, 1)
    return q / (_gradient_magnitude(q) / radius).clamp_min(1.0)


def _normalised(operator: LinearOperator, y: torch.Tensor, lam: float,
                x0: torch.Tensor | None) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(norm, y / norm, weight, x)``: the problem both TV solvers solve, and where they start.

    They work with ``A' = A / norm``, ``y' = y / norm``: ``1/2||A'x - y'||²`` is
    ``1/2||Ax - y||² / norm²``, so the TV weight becomes ``lam · max|Aᴴy| / norm²``. ``x``
    is ``x0``, or ``Aᴴy / ||A||²``, the first gradient step from zero (for a single-coil MRI
    operator, the zero-filled image). ``norm == 0`` (no data): ``x`` is zero, the answer.
    """
    if lam <= 0:
        raise ValueError(f"the TV weight must be positive; got {lam}")
    adjoint_y = operator.A_adjoint(y)
    norm = operator_norm(operator, adjoint_y) * NORM_SAFETY
    if norm == 0:
        return 0.0, y, torch.zeros(0), torch.zeros_like(adjoint_y)
    weight = lam * regularization_scale(operator, y).flatten() / norm**2
    x = adjoint_y / norm**2 if x0 is None else x0.to(adjoint_y.dtype).clone()
    return norm, y / norm, weight, x


def tv_reconstruct(
    operator: LinearOperator,
    y: torch.Tensor,
    lam: float,
    *,
    iters: int = 200,
    x0: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """TV-regularised least squares by Chambolle-Pock; returns the image ``(B, C, H, W)``.

    ``lam`` is relative to ``max|Aᴴy|`` (see the module docstring). ``x0`` warm-starts the
    primal variable; the default ``Aᴴy / ||A||²`` is the first gradient step from zero
    (for a single-coil MRI operator, the zero-filled image). ``callback(k, x)`` is called
    after every iteration (for objective histories). Each iteration applies ``A`` and
    ``Aᴴ`` once.
    """
    with torch.no_grad():
        norm, y_n, weight, x = _normalised(operator, y, lam, x0)
        if norm == 0:
            return x
        tau, sigma_data, sigma_tv = _step_sizes(lam)
        x_bar = x.clone()
        p = torch.zeros_like(y_n)  # dual of the data term
        q = torch.zeros_like(gradient(x))  # dual of TV
        for k in range(iters):
            # Dual ascent; the prox of the conjugate of 1/2||z - y'||² is (p - σy')/(1 + σ),
            # the prox of the conjugate of TV a projection onto the weight's ball.
            p = (p + sigma_data * (operator.A(x_bar) / norm - y_n)) / (1.0 + sigma_data)
            q = _project_to_ball(q + sigma_tv * gradient(x_bar), weight)
            x_next = x - tau * (operator.A_adjoint(p) / norm - divergence(q))
            x_bar = 2.0 * x_next - x
            x = x_next
            if callback is not None:
                callback(k, x)
        return x


def tv_reconstruct_fista(
    operator: LinearOperator,
    y: torch.Tensor,
    lam: float,
    *,
    iters: int = 100,
    x0: torch.Tensor | None = None,
    nonnegative: bool = False,
    lam_start: float | None = None,
    continuation: float = 0.8,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """The same TV problem as :func:`tv_reconstruct` (plus ``x >= 0`` with ``nonnegative``) by FISTA.

    Each iteration is a gradient step on the data term (step ``1/||A||²``, Beck & Teboulle
    2009, with O'Donoghue & Candès' adaptive restart) and the prox of TV, evaluated
    inexactly by one projected-gradient step on its dual (Chambolle 2004) from the previous
    iteration's dual: the dual moves little between iterations, so one step suffices (more
    inner steps changed the 60-view CT result by < 0.01 dB). ``lam_start`` (relative, like
    ``lam``) begins with a larger TV weight that decays geometrically to ``lam`` over the
    first ``continuation`` fraction of the iterations: early iterations then remove
    streaks instead of fitting them (noiseless sparse-view CT: +1.5 dB at 100 iterations).
    Each iteration applies ``A`` and ``Aᴴ`` once, as a PDHG iteration does.
    """
    with torch.no_grad():
        norm, y_n, weight, x = _normalised(operator, y, lam, x0)  # ||A/norm|| <= 1: the gradient step is 1
        if norm == 0:
            return x
        boost = max(1.0, (lam_start or lam) / lam)
        ramp = max(1, round(continuation * iters))
        if nonnegative:
            x = x.clamp_min(0.0)
        z, t = x.clone(), 1.0
        q = torch.zeros_like(gradient(x))  # the TV prox's dual, carried over iterations

        def prox(v: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
            nonlocal q
            inner = v + divergence(q)
            q = _project_to_ball(q + gradient(inner.clamp_min(0.0) if nonnegative else inner) / GRADIENT_NORM_SQUARED,
                                 radius)
            out = v + divergence(q)
            return out.clamp_min(0.0) if nonnegative else out

        for k in range(iters):
            step = operator.A_adjoint(operator.A(z) / norm - y_n) / norm
            radius = weight * boost ** max(0.0, 1.0 - k / ramp)
            x_next = prox(z - step, radius)
            t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            if float(((z - x_next).conj() * (x_next - x)).real.sum()) > 0:  # momentum points uphill: restart
                t_next = t = 1.0
            z = x_next + ((t - 1.0) / t_next) * (x_next - x)
            x, t = x_next, t_next
            if callback is not None:
                callback(k, x)
        return x


def _step_sizes(lam: float) -> tuple[float, float, float]:
    """(τ, σ_data, σ_TV) for PDHG on the normalised problem (||A|| <= 1, ||∇||² <= 8).

    Convergence needs ``τ (σ_data ||A||² + σ_TV ||∇||²) < 1`` (Pock & Chambolle's
    block-preconditioned condition); how that budget is split decides the speed. The
    TV dual lives in a ball of radius ``lam_abs`` while the image is of size
    ``lam_abs / lam``, so balancing the two sides gives ``τ ∝ 1/lam``. The constants were
    measured on 4x single-coil brain MRI and 60-view head CT (128x128): after 200
    iterations the objective is within 0.1-0.9 % of its minimum for lam in [3e-4, 3e-2],
    where the textbook ``τ = σ = 1/||K||`` is 0.15-6 % away on MRI and 3-55 % on CT (it
    wins only at MRI's largest weight). MRI alone would prefer ``τ·lam = 0.03``, CT ``0.01``.
    """
    tau = PRIMAL_STEP_TIMES_LAM / max(lam, 1e-6)
    sigma_data = 0.99 * DATA_SHARE / tau
    sigma_tv = 0.99 * (1.0 - DATA_SHARE) / (GRADIENT_NORM_SQUARED * tau)
    return tau, sigma_data, sigma_tv


def tv_denoise(
    y: torch.Tensor,
    lam: float,
    *,
    iters: int = 100,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """TV denoising ``min_x 1/2||x - y||² + lam·max|y|·TV(x)`` (accelerated Chambolle-Pock).

    ``y`` is ``(B, C, H, W)``, real or complex; ``lam`` is relative to ``max|y|`` per item.
    The step sizes shrink/grow each iteration as the strong convexity allows (O(1/k²));
    100 iterations bring the objective within about 1e-4 of its minimum.
    """
    with torch.no_grad():
        weight = lam * y.abs().flatten(1).amax(dim=1).clamp_min(1e-12)
        # τ0·σ0·||∇||² = 1 with τ0 = σ0; γ = 1 is the data term's strong convexity.
        tau = sigma = 1.0 / GRADIENT_NORM_SQUARED**0.5
        x = y.clone()
        x_bar = x.clone()
        q = torch.zeros_like(gradient(x))
        for k in range(iters):
            q = _project_to_ball(q + sigma * gradient(x_bar), weight)
            # prox of τ·1/2||· - y||²: a weighted average with the data.
            x_next = (x + tau * divergence(q) + tau * y) / (1.0 + tau)
            theta = 1.0 / (1.0 + 2.0 * tau) ** 0.5
            tau, sigma = theta * tau, sigma / theta
            x_bar = x_next + theta * (x_next - x)
            x = x_next
            if callback is not None:
                callback(k, x)
        return x


# --------------------------------------------------------------------------- 3D: the slice axis too

#: ||∇||² <= 12 for 3D forward differences with unit spacing.
GRADIENT_NORM_SQUARED_3D = 12.0


def slice_pairs(slices, like: torch.Tensor) -> torch.Tensor:
    """``(B - 1, 1, 1, 1)`` 0/1: whether batch items ``b`` and ``b + 1`` are neighbouring slices
    of the volume (their indices differ by one). A batch of scattered slices has no pairs, and
    the through-plane terms below then vanish."""
    import numpy as np

    index = np.asarray(slices, dtype=np.int64).reshape(-1)
    adjacent = (np.abs(np.diff(index)) == 1).astype(np.float32)
    return torch.from_numpy(adjacent).to(like.device).view(-1, 1, 1, 1)


def gradient_z(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Forward differences along the batch (slice) axis, ``(B - 1, C, H, W)``, zero between
    items that are not neighbours (``pairs``, see :func:`slice_pairs`)."""
    return (x[1:] - x[:-1]) * pairs.to(x.real.dtype)


def gradient_z_adjoint(g: torch.Tensor, pairs: torch.Tensor, items: int) -> torch.Tensor:
    """The adjoint of :func:`gradient_z`: ``<D_z x, g> = <x, D_zᴴ g>``, ``(items, C, H, W)``."""
    g = g * pairs.to(g.real.dtype)
    out = g.new_zeros((items, *g.shape[1:]))
    out[:-1] -= g
    out[1:] += g
    return out


def gradient3d(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``(B, C, 3, H, W)``: rows, columns and slices (the slice difference of item b is
    ``x[b + 1] - x[b]``, zero for the last item and for items without a neighbour)."""
    grad = x.new_zeros(x.shape[:2] + (3,) + x.shape[2:])
    grad[:, :, :2] = gradient(x)
    if x.shape[0] > 1:
        grad[:-1, :, 2] = gradient_z(x, pairs)
    return grad


def divergence3d(grad: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """The negative adjoint of :func:`gradient3d`."""
    div = divergence(grad[:, :, :2])
    if grad.shape[0] > 1:
        div = div - gradient_z_adjoint(grad[:-1, :, 2], pairs, grad.shape[0])
    return div


def tv3d_reconstruct(
    operator: LinearOperator,
    y: torch.Tensor,
    lam: float,
    slices,
    *,
    iters: int = 200,
    x0: torch.Tensor | None = None,
) -> torch.Tensor:
    """3D TV-regularised least squares over a batch of slices, by Chambolle-Pock.

    As :func:`tv_reconstruct`, but the batch is one volume: isotropic TV of the 3D gradient
    (rows, columns, and the difference to the next slice where ``slices`` says the next item
    is the volume's neighbouring slice; voxel units, whatever the spacing). The relative
    weight's unit is ``max|Aᴴy|`` over the whole batch, so every slice is regularised alike.
    """
    if lam <= 0:
        raise ValueError(f"the TV weight must be positive; got {lam}")
    with torch.no_grad():
        adjoint_y = operator.A_adjoint(y)
        norm = operator_norm(operator, adjoint_y) * NORM_SAFETY
        if norm == 0:
            return torch.zeros_like(adjoint_y)
        pairs = slice_pairs(slices, adjoint_y)
        y_n = y / norm
        weight = lam * regularization_scale(operator, y).flatten().max() / norm**2
        tau = PRIMAL_STEP_TIMES_LAM / max(lam, 1e-6)
        sigma_data = 0.99 * DATA_SHARE / tau
        sigma_tv = 0.99 * (1.0 - DATA_SHARE) / (GRADIENT_NORM_SQUARED_3D * tau)

        x = adjoint_y / norm**2 if x0 is None else x0.to(adjoint_y.dtype).clone()
        x_bar = x.clone()
        p = torch.zeros_like(y_n)
        q = torch.zeros_like(gradient3d(x, pairs))
        for _ in range(iters):
            p = (p + sigma_data * (operator.A(x_bar) / norm - y_n)) / (1.0 + sigma_data)
            q = q + sigma_tv * gradient3d(x_bar, pairs)
            q = q / (_gradient_magnitude(q) / weight).clamp_min(1.0)
            x_next = x - tau * (operator.A_adjoint(p) / norm - divergence3d(q, pairs))
            x_bar = 2.0 * x_next - x
            x = x_next
        return x


def total_variation_z(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV along the slice axis of a batch, a scalar: ``Σ |x[b + 1] - x[b]|``."""
    return gradient_z(x, pairs).abs().sum()
