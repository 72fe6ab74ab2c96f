"""Noise schedules: how much signal and noise ``x_t`` holds at each time.

The forward process is variance preserving: ``x_t = sqrt(abar(t)) * x0 + sqrt(1 - abar(t)) * eps``.

A schedule is defined on the usual discrete grid of ``T`` steps (``betas``,
``alphas_cumprod``, exactly as in DDPM / Improved DDPM), and the same schedule is
also offered in **continuous time** ``t`` in ``[0, 1]`` for samplers that need it
(the VP-SDE view of Song et al. 2021). The two views agree exactly on the grid:

* discrete step ``i`` (0-based) is continuous time ``t_i = (i + 1) / T``; ``t = 0`` is
  the clean image (``abar(0) = 1``);
* between grid points ``log abar(t)`` is interpolated linearly, so the VP-SDE
  ``beta(t) = -d log abar / dt`` is piecewise constant (``~ T * betas[i]``).

The network is trained at continuous ``t`` (see :mod:`.training`), so any sampler may
evaluate it anywhere in ``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULE_KINDS = ("linear", "cosine")


def linear_betas(steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's schedule (Ho et al. 2020), rescaled so that other ``steps`` keep the same total noise."""
    scale = 1000.0 / steps
    return torch.linspace(scale * beta_start, scale * beta_end, steps, dtype=torch.float64)


def cosine_betas(steps: int = 1000, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021): ``abar(t) = f(t) / f(0)``."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
    abar = f / f[0]
    # Clipping keeps the last steps from being pure noise with beta = 1 (a singular step).
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


@dataclass(frozen=True)
class NoiseSchedule:
    """A variance-preserving schedule; build with :func:`make_schedule`.

    Tensors are float64 on the CPU (precision matters near ``t = 0``); methods
    taking ``t`` accept floats or tensors and return float32 tensors shaped like ``t``.
    """

    kind: str
    betas: torch.Tensor  # (T,)

    @property
    def steps(self) -> int:
        return int(self.betas.numel())

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """``abar`` after each discrete step, shape ``(T,)``: decreasing from ~1 to ~0."""
        return torch.cumprod(1 - self.betas, dim=0)

    @property
    def _log_abar_grid(self) -> torch.Tensor:
        """``log abar`` at ``t = 0, 1/T, ..., 1`` (``T + 1`` points)."""
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-self.betas), 0)])

    def to_metadata(self) -> dict:
        return {"kind": self.kind, "steps": self.steps}

    # ----- discrete <-> continuous -----

    def time_of_step(self, step: int | torch.Tensor) -> torch.Tensor:
        """Continuous time of discrete step ``i``: ``(i + 1) / T``."""
        return (torch.as_tensor(step, dtype=torch.float64) + 1) / self.steps

    # ----- continuous view -----

    def log_alpha_bar(self, t: float | torch.Tensor) -> torch.Tensor:
        """``log abar(t)``, linear in ``t`` between grid points; exact on the grid."""
        t64 = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
        pos = t64 * self.steps
        lo = pos.floor().clamp(max=self.steps - 1).long()
        frac = pos - lo
        grid = self._log_abar_grid
        return grid[lo] + frac * (grid[lo + 1] - grid[lo])

    def alpha_bar(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.log_alpha_bar(t).exp().float()

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean coefficient and std of ``x_t | x0``: ``(sqrt(abar), sqrt(1 - abar))``."""
        log_abar = self.log_alpha_bar(t)
        mean = (0.5 * log_abar).exp()
        std = (-torch.expm1(log_abar)).sqrt()  # expm1: exact for abar close to 1
        return mean.float(), std.float()

    def beta(self, t: float | torch.Tensor) -> torch.Tensor:
        """VP-SDE ``beta(t) = -d log abar / dt`` (piecewise constant, ``~ T * betas[i]``)."""
        t64 = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
        # A point on the grid belongs to the interval below it: the step that produced it.
        idx = (torch.ceil(t64 * self.steps) - 1).clamp(0, self.steps - 1).long()
        return (-self.steps * torch.log1p(-self.betas[idx])).float()

    # ----- the forward process and its inversion -----

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t`` from ``q(x_t | x0)`` with the given noise; ``t`` is ``(B,)``."""
        mean, std = (v.to(x0.device) for v in self.marginal(t))
        return _per_sample(mean, x0) * x0 + _per_sample(std, x0) * noise

    def x0_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Tweedie's estimate of the clean image: ``(x_t - sqrt(1 - abar) eps) / sqrt(abar)``."""
        mean, std = (v.to(x_t.device) for v in self.marginal(t))
        return (x_t - _per_sample(std, x_t) * eps) / _per_sample(mean, x_t)

    def eps_from_x0(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """The noise that takes ``x0`` to ``x_t`` at time ``t`` (inverse of :meth:`x0_from_eps`)."""
        mean, std = (v.to(x_t.device) for v in self.marginal(t))
        return (x_t - _per_sample(mean, x_t) * x0) / _per_sample(std, x_t)

    def score_from_eps(self, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """``grad log p_t(x_t) = -eps / sqrt(1 - abar)``."""
        _, std = self.marginal(t)
        return -eps / _per_sample(std.to(eps.device), eps)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or ``(B,)`` coefficient over ``(B, C, H, W)``."""
    v = v.to(like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1))) if v.ndim else v


def make_schedule(kind: str = "linear", steps: int = 1000) -> NoiseSchedule:
    """The named schedule on a grid of ``steps`` (1000 is what priors are trained with)."""
    if kind == "linear":
        return NoiseSchedule("linear", linear_betas(steps))
    if kind == "cosine":
        return NoiseSchedule("cosine", cosine_betas(steps))
    raise ValueError(f"unknown noise schedule {kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")


def schedule_from_metadata(meta: dict) -> NoiseSchedule:
    return make_schedule(str(meta["kind"]), int(meta["steps"]))
