"""Reverse-diffusion samplers: DDPM, DDIM and a VP-SDE sampler, each a time grid and a step.

Samplers are separate from the network (as in diffusers/MONAI): build one with a
:class:`.schedules.NoiseSchedule` and settings, then call ``sampler.frames(model, shape,
seed=...)``. As with diffusers' schedulers, a sampler only says *where* the network is
called (:meth:`Sampler.times`) and *how* one step moves the state (:meth:`Sampler.step`);
the loop around them (:meth:`Sampler.frames`: the network call, the hook, the frames) is
written once. ``model(x_t, t) -> eps`` is any epsilon predictor taking continuous ``t``
(see :mod:`.unet`). ``frames`` is a **generator** that yields a :class:`Frame` after
every step, which is how the viewer shows the reverse diffusion happen:

* **Seeded**: all randomness comes from a ``torch.Generator`` made from ``seed``, so
  the same seed gives the same frames bit for bit; no global RNG is touched.
* **Cancellable**: stop iterating at any time. Nothing is written outside the loop's
  local variables, grad mode and autocast are entered per step (never held across a
  ``yield``), and the caller's tensors are never modified in place.
* **Data-consistency hook**: ``hook(step, t, x_t, x0_hat) -> (x_t, x0_hat)`` is called
  exactly once per step, after the network's estimate and before the update; the
  update then uses what the hook returned. Return the same tensors to do nothing.

  - A corrected clean estimate ``x0_hat`` (DDS/DDNM-style data consistency): DDIM moves
    towards it keeping the network's noise estimate ``eps``; DDPM samples the posterior
    ``q(x_prev | x_t, x0_hat)``; the VP-SDE uses the score Tweedie's formula gives for
    the pair, ``-(x_t - sqrt(abar) x0_hat) / (1 - abar)``.
  - A new ``x_t`` (a DPS-style gradient step, or a projection of the noisy state onto
    the measurements): the update starts from it, and DDIM's ``eps`` is re-derived from
    the returned pair (``eps`` follows ``x_t`` only when the hook returns a different
    tensor object for it).
  - A hook whose ``requires_grad`` attribute is true gets ``x_t`` with ``requires_grad``
    set and ``x0_hat`` still attached to the network's graph, so it can differentiate
    through the network (DPS); otherwise it runs under ``no_grad``.
  - A hook may also offer ``correct_x0(x0) -> x0``: a sampler whose last output is a
    noise-free estimate no step's hook saw (the VP-SDE's closing Tweedie denoising)
    passes that output through it, so every sampler's last frame is data-consistent.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from .schedules import NoiseSchedule
from .unet import autocast_context

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StepHook(Protocol):
    def __call__(self, step: int, t: float, x_t: torch.Tensor, x0_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...


@dataclass(frozen=True)
class Frame:
    """The state after one step: ``x_t`` now lives at time ``t`` (0 after the last step,
    when ``x_t`` is the sample)."""

    step: int  # 0-based
    n_steps: int
    t: float
    x_t: torch.Tensor
    x0_hat: torch.Tensor  # the (possibly hook-corrected) clean estimate this step moved towards

    @property
    def last(self) -> bool:
        return self.step == self.n_steps - 1


def time_grid(schedule: NoiseSchedule, n_steps: int, start_t: float = 1.0) -> list[float]:
    """``n_steps`` times from ``start_t`` down to the first grid step ``1/T``, on the schedule's grid.

    Evenly spaced discrete steps ``i`` (so DDPM/DDIM see exactly the training table);
    the sampler's last update goes from ``1/T`` to the clean image at ``t = 0``. A
    ``start_t`` below 1 (a hot start) begins at the grid step nearest to it, and never
    takes more steps than the grid has below it.
    """
    T = schedule.steps
    if not 1 <= n_steps <= T:
        raise ValueError(f"steps must be between 1 and {T}; got {n_steps}")
    if not 0.0 < start_t <= 1.0:
        raise ValueError(f"the start time must be in (0, 1]; got {start_t}")
    top = min(T - 1, max(0, round(start_t * T) - 1))
    idx = torch.linspace(top, 0, min(n_steps, top + 1), dtype=torch.float64).round().long()
    return [float(schedule.time_of_step(i)) for i in idx]


class SamplingRun:
    """What one run's steps share: the network, the hook, the seeded noise source."""

    def __init__(self, schedule: NoiseSchedule, model: EpsModel, hook: StepHook | None, generator: torch.Generator,
                 autocast: bool, clip_x0: float | None):
        self.schedule, self.model, self.hook, self.generator = schedule, model, hook, generator
        self.autocast, self.clip_x0 = autocast, clip_x0

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``like``, from the run's seeded generator."""
        return torch.randn(like.shape, generator=self.generator, device=like.device)

    def eps(self, x_t: torch.Tensor, t: float) -> torch.Tensor:
        """The network's noise estimate at ``x_t`` and time ``t`` (float32)."""
        with autocast_context(self.autocast, x_t.device):
            return self.model(x_t, torch.full((x_t.shape[0],), t, device=x_t.device)).float()

    def predict(self, x_t: torch.Tensor, t: float, step: int, *, hook: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, x0_hat, eps)`` at this step, after the hook (unless ``hook`` is False)."""
        hook_fn = self.hook if hook else None
        wants_grad = hook_fn is not None and bool(getattr(hook_fn, "requires_grad", False))
        with torch.set_grad_enabled(wants_grad):
            if wants_grad:
                x_t = x_t.detach().requires_grad_(True)
            eps = self.eps(x_t, t)
            x0_hat = self.schedule.x0_from_eps(x_t, eps, t)
            if self.clip_x0 is not None:
                x0_hat = x0_hat.clamp(-self.clip_x0, self.clip_x0)
            if hook_fn is not None:
                new_x_t, new_x0 = hook_fn(step, t, x_t, x0_hat)
                if new_x_t is not x_t:  # the hook moved the noisy state: its own noise estimate follows
                    eps = self.schedule.eps_from_x0(new_x_t, new_x0, t)
                x_t, x0_hat = new_x_t, new_x0
        return x_t.detach(), x0_hat.detach(), eps.detach()

    def correct_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` through the hook's ``correct_x0`` when it has one (module docstring)."""
        correct = getattr(self.hook, "correct_x0", None)
        return x0 if correct is None else correct(x0)


class Sampler:
    """A time grid and a step; :meth:`frames` runs them (written once for every sampler).

    ``frames(model, shape, seed=0, hook=None, x_init=None, device="cpu", autocast=False,
    clip_x0=None)`` takes: ``shape`` ``(B, C, H, W)`` of the sample; ``x_init`` a starting
    ``x_1`` instead of fresh noise (copied, never modified); ``autocast`` bf16 network
    calls; ``clip_x0`` clamps ``x0_hat`` to ``[-clip, clip]`` before the hook sees it;
    ``branch = (k, K)``: the state is repeated K times (item-major blocks, sample-major
    batch) before step ``k``, so that K samples share the first ``k`` steps (a trunk run
    once) and go on independently after them (a stochastic sampler makes them differ).

    Every sampler takes ``start_t`` (default 1): a hot start begins part-way, at
    ``x_init`` = a classical estimate noised to ``start_t``, and runs only the steps below it.
    """

    schedule: NoiseSchedule
    n_steps: int
    start_t: float = 1.0

    @classmethod
    def fit_steps(cls, requested: int, schedule: NoiseSchedule, start_t: float = 1.0) -> int:
        """The steps a run asking for ``requested`` takes (samplers on the training grid
        take no more than the grid has below ``start_t``)."""
        return requested

    @classmethod
    def for_run(cls, schedule: NoiseSchedule, requested: int, *, start_t: float = 1.0, eta: float = 0.0) -> Sampler:
        """This sampler for a run asking for ``requested`` steps from ``start_t``
        (``eta``: the stochasticity of samplers that have one)."""
        return cls(schedule, cls.fit_steps(requested, schedule, start_t), start_t=start_t)  # type: ignore[call-arg]

    def times(self) -> list[float]:
        """``n_steps + 1`` decreasing times: the network is called at the first ``n_steps``,
        the last is where the last step ends."""
        raise NotImplementedError

    def step(self, run: SamplingRun, k: int, t: float, t_next: float, x_t: torch.Tensor, x0_hat: torch.Tensor,
             eps: torch.Tensor, last: bool) -> torch.Tensor:
        """Step ``k``: the state at ``t_next`` from the (hook-corrected) ``x_t``, ``x0_hat``
        and ``eps`` at ``t``; after the ``last`` step, the sample."""
        raise NotImplementedError

    def frames(self, model: EpsModel, shape: tuple[int, ...], seed: int = 0, hook: StepHook | None = None,
               x_init: torch.Tensor | None = None, device: torch.device | str = "cpu", autocast: bool = False,
               clip_x0: float | None = None, branch: tuple[int, int] | None = None) -> Generator[Frame, None, None]:
        run = SamplingRun(self.schedule, model, hook, torch.Generator(device=device).manual_seed(seed), autocast,
                          clip_x0)
        if x_init is not None:
            x = x_init.detach().clone().to(device)  # never alias the caller's tensor
        else:
            x = torch.randn(shape, generator=run.generator, device=device)
        times = self.times()
        n = len(times) - 1
        for k in range(n):
            last = k == n - 1
            if branch is not None and k == branch[0]:  # the shared trunk ends: K copies go on independently
                x = x.repeat(branch[1], *([1] * (x.dim() - 1)))
            x, x0_hat, eps = run.predict(x, times[k], k)
            x = self.step(run, k, times[k], times[k + 1], x, x0_hat, eps, last)
            yield Frame(k, n, 0.0 if last else times[k + 1], x, x0_hat)


class _GridSampler(Sampler):
    """Samplers on the schedule's discrete training grid (DDPM, DDIM), ending at ``t = 0``."""

    @classmethod
    def fit_steps(cls, requested: int, schedule: NoiseSchedule, start_t: float = 1.0) -> int:
        return min(requested, max(1, round(start_t * schedule.steps)))

    def times(self) -> list[float]:
        return [*time_grid(self.schedule, self.n_steps, self.start_t), 0.0]


class DDPMSampler(_GridSampler):
    """Ancestral sampling (Ho et al. 2020) with ``n_steps`` (1000: the original).

    Fewer steps use a respaced schedule (Nichol & Dhariwal 2021): the betas between
    the chosen times are ``1 - abar(t_k) / abar(t_prev)``. Each step samples the
    posterior ``q(x_prev | x_t, x0_hat)``, whose mean is a blend of ``x0_hat`` and ``x_t``.
    """

    def __init__(self, schedule: NoiseSchedule, n_steps: int | None = None, start_t: float = 1.0):
        self.schedule, self.n_steps, self.start_t = schedule, n_steps or schedule.steps, start_t

    def step(self, run: SamplingRun, k: int, t: float, t_next: float, x_t: torch.Tensor, x0_hat: torch.Tensor,
             eps: torch.Tensor, last: bool) -> torch.Tensor:
        abar, abar_prev = float(self.schedule.alpha_bar(t)), float(self.schedule.alpha_bar(t_next))
        beta = 1 - abar / abar_prev
        # DDPM eq. 7: posterior mean coefficients and variance.
        coef_x0 = abar_prev**0.5 * beta / (1 - abar)
        coef_xt = (1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar)
        var = beta * (1 - abar_prev) / (1 - abar)
        x = coef_x0 * x0_hat + coef_xt * x_t
        if t_next > 0:
            x = x + var**0.5 * run.noise(x)
        return x


class DDIMSampler(_GridSampler):
    """DDIM (Song, Meng & Ermon 2021) with any number of steps; ``eta = 0`` is deterministic.

    ``x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
    ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))``;
    ``eta = 1`` has DDPM's noise level.
    """

    def __init__(self, schedule: NoiseSchedule, n_steps: int = 25, eta: float = 0.0, start_t: float = 1.0):
        if eta < 0:
            raise ValueError(f"eta must be >= 0; got {eta}")
        self.schedule, self.n_steps, self.eta, self.start_t = schedule, n_steps, eta, start_t

    @classmethod
    def for_run(cls, schedule: NoiseSchedule, requested: int, *, start_t: float = 1.0, eta: float = 0.0) -> Sampler:
        return cls(schedule, cls.fit_steps(requested, schedule, start_t), eta, start_t=start_t)

    def step(self, run: SamplingRun, k: int, t: float, t_next: float, x_t: torch.Tensor, x0_hat: torch.Tensor,
             eps: torch.Tensor, last: bool) -> torch.Tensor:
        abar, abar_prev = float(self.schedule.alpha_bar(t)), float(self.schedule.alpha_bar(t_next))
        sigma = self.eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
        x = abar_prev**0.5 * x0_hat + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * run.noise(x)
        return x


class VPSDESampler(Sampler):
    """Reverse VP-SDE (Song et al. 2021): Euler-Maruyama predictor, optional Langevin corrector.

    Time runs from ``start_t`` (default 1) to ``t_min`` in ``n_steps`` equal steps of size ``h``::

        x <- x + h * (beta(t)/2 * x + beta(t) * score) + sqrt(beta(t) * h) * z

    with ``score = -(x - sqrt(abar) x0_hat) / (1 - abar)`` (``= -eps / sqrt(1 - abar)``
    when no hook changed ``x0_hat``). With ``corrector_steps > 0`` each step
    ends with that many Langevin moves at the new time (signal-to-noise ``snr``; each
    costs one more network call, and the hook sees only the predictor's estimate).
    The last step returns the Tweedie estimate at ``t_min`` (noise-free output), passed
    through the hook's ``correct_x0`` when it has one.
    """

    def __init__(self, schedule: NoiseSchedule, n_steps: int = 100, t_min: float = 1e-3,
                 corrector_steps: int = 0, snr: float = 0.16, start_t: float = 1.0):
        if n_steps < 1:
            raise ValueError(f"steps must be at least 1; got {n_steps}")
        if not t_min < start_t <= 1.0:
            raise ValueError(f"the start time must be in ({t_min}, 1]; got {start_t}")
        self.schedule, self.n_steps, self.t_min, self.start_t = schedule, n_steps, t_min, start_t
        self.corrector_steps, self.snr = corrector_steps, snr

    def times(self) -> list[float]:
        return torch.linspace(self.start_t, self.t_min, self.n_steps + 1, dtype=torch.float64).tolist()

    def step(self, run: SamplingRun, k: int, t: float, t_next: float, x_t: torch.Tensor, x0_hat: torch.Tensor,
             eps: torch.Tensor, last: bool) -> torch.Tensor:
        h = t - t_next
        beta = float(self.schedule.beta(t))
        mean, std = self.schedule.marginal(t)
        score = -(x_t - float(mean) * x0_hat) / float(std) ** 2  # Tweedie: honours a hook's x0_hat
        x = x_t + h * (0.5 * beta * x_t + beta * score)
        if last:
            # Final denoising: report the clean estimate at t_min, as score_sde does.
            _, x, _ = run.predict(x, t_next, k, hook=False)
            return run.correct_x0(x)
        x = x + (beta * h) ** 0.5 * run.noise(x)
        for _ in range(self.corrector_steps):
            x = self._langevin(run, x, t_next)
        return x

    def _langevin(self, run: SamplingRun, x: torch.Tensor, t: float) -> torch.Tensor:
        """One corrector move: a Langevin step sized from the target signal-to-noise ratio."""
        with torch.no_grad():
            eps = run.eps(x, t)
        score = self.schedule.score_from_eps(eps, t)
        z = run.noise(x)
        alpha = 1 - float(self.schedule.beta(t)) / self.schedule.steps  # this grid step's alpha
        dims = tuple(range(1, x.ndim))
        step = 2 * alpha * (self.snr * torch.linalg.vector_norm(z, dim=dims)
                            / torch.linalg.vector_norm(score, dim=dims).clamp_min(1e-12)) ** 2
        step = step.reshape(-1, *([1] * (x.ndim - 1)))
        return x + step * score + (2 * step).sqrt() * z


def run_to_end(frames: Iterator[Frame]) -> Frame:
    """Consume a sampler's frames; return the last one (the sample)."""
    last = None
    for last in frames:
        pass
    if last is None:
        raise ValueError("the sampler yielded no frames")
    return last


#: the samplers by the names the CLI, viewer and options use, DDIM (the product's default) first
SAMPLERS: dict[str, type[Sampler]] = {"ddim": DDIMSampler, "ddpm": DDPMSampler, "sde": VPSDESampler}
