"""Measurement-conditioned diffusion reconstruction, streamed one sampling step at a time.

:func:`stream_reconstruction` turns a :class:`~diffrecon.measurements.ReconProblem` and a
prior into a generator of :class:`ReconFrame`: the viewer draws every frame, the
CLI keeps the last. One run:

1. maps the problem into the prior's domain (:class:`.guidance.ModelDomain`: complex MR
   images as real/imaginary channels, CT's ``(HU + 1000) / 2000`` to the prior's HU map);
2. stacks ``K = options.samples`` posterior samples of each of the ``B`` slices into one
   batch of ``K * B`` (sample-major), so the network runs once per step for all of them;
   with ``options.symmetric`` (SRDS / DiffDenoise symmetric sampling) every sample gets
   an antithetic twin started from the negated noise, ``2 K * B`` items in all;
3. runs one of the samplers (:mod:`.samplers`: DDIM, DDPM ancestral, VP-SDE) with the
   data-consistency hook of :mod:`.guidance` (projection, DDS, DPS, or measurement
   mixing for denoising);
4. after each step reports the mean over the samples of the (data-consistent) clean
   estimate and its per-pixel variance, in the working domain.

**Hot start** (Chung et al. 2022, "Come-Closer-Diffuse-Faster"): instead of pure noise
at ``t = 1``, start at ``t0 = options.hot_start_t`` from a classical estimate (``baseline``,
else the zero-filled / FBP / noisy input) noised to that level,
``x_t0 = sqrt(abar(t0)) x_baseline + sqrt(1 - abar(t0)) z``. A good starting point
leaves only the fine detail to the prior, so ``round(t0 * steps)`` steps suffice.

Reproducible and cancellable: the initial noise (and the mixing noise) come from a
generator seeded by ``options.seed``, the samplers' own noise from theirs; grad and
inference modes are entered per step, never held across a ``yield``. Stopping the
iteration (``close()``, ``break``, garbage collection) ends the run between two steps
with nothing left behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace

import torch

from ..errors import SettingsError
from ..measurements import ReconProblem
from .checkpoint import Prior
from .guidance import Guidance, ModelDomain, ThroughPlane, make_guidance
from .options import DiffusionOptions
from .samplers import SAMPLERS, Sampler
from .schedules import NoiseSchedule

#: Per guidance: clamp Tweedie estimates to [-c, c] (model domain) before the guidance sees
#: them, or None. At the first steps ``1 / sqrt(abar)`` amplifies the network's error ~100x.
#: Projection and DDS rein the estimate in themselves (a clamp cost them PSNR); DPS only
#: nudges, and without the clamp weak priors run away (resources/results/diffusion-defaults.md).
CLIP_X0: dict[str, float | None] = {"projection": None, "dds": None, "dds-tv": None, "dps": 3.0}
AUTOCAST = True  # bf16 network calls: the priors are trained under bf16 autocast as well

def make_sampler(options: DiffusionOptions, schedule: NoiseSchedule) -> Sampler:
    """The sampler for ``options``: ``options.steps`` steps, or for a hot start
    ``round(hot_start_t * steps)`` steps from ``hot_start_t`` (never more than a sampler on
    the training grid has below its start)."""
    if options.hot_start:
        start, requested = options.hot_start_t, max(1, round(options.hot_start_t * options.steps))
    else:
        start, requested = 1.0, options.steps
    return SAMPLERS[options.sampler].for_run(schedule, requested, start_t=start, eta=options.eta)


def trunk_steps(sampler: Sampler, options: DiffusionOptions) -> int:
    """Steps the K samples share (``options.branch_t``): those that start above the branch
    time, but at least the last two steps branch (every sampler's last step adds no noise,
    so a branch made there would leave K identical samples); 0 for independent samples."""
    if options.samples < 2 or options.branch_t >= 1.0:
        return 0
    starts = sampler.times()[:-1]
    return max(0, min(sum(1 for t in starts if t > options.branch_t), len(starts) - 2))


@dataclass
class ReconFrame:
    """The state after one sampling step, in the problem's working domain.

    Tensors are ``(B, 1, H, W)`` for the B slices of the problem (complex for MRI);
    ``x_t`` is the first posterior sample's current noisy state, ``x0`` the current
    estimate of the clean image averaged over the K samples, ``variance`` the per-pixel
    variance of the K samples' x0 estimates (None when K = 1).
    """

    step: int  # 1-based index of the step just finished
    total: int  # steps in this run
    t: float  # diffusion time of x_t, in [0, 1] (0 = clean)
    x_t: torch.Tensor
    x0: torch.Tensor
    variance: torch.Tensor | None
    elapsed: float  # seconds since the run started
    adaptation: dict | None = None  # what was chosen for this scan, and how (dds-tv's and the blend's hold-outs)
    # after a blend with the classical estimate (blend_tv): the samples' own mean and that estimate
    # (a σ model compares them: calibration.SigmaModel); None when x0 is the samples' mean
    prior_mean: torch.Tensor | None = None
    baseline: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def eta_seconds(self) -> float:
        """Remaining time at the pace so far."""
        return self.elapsed / max(self.step, 1) * (self.total - self.step)


# --------------------------------------------------------------------------- the run


def _own_generator(seed: int) -> torch.Generator:
    """Initial and mixing noise: a stream apart from the sampler's (which is seeded by ``seed``)."""
    return torch.Generator().manual_seed((int(seed) * 6364136223846793005 + 1442695040888963407) % 2**63)


def _hot_start_image(problem: ReconProblem, baseline: torch.Tensor | None) -> torch.Tensor:
    """The working-domain image a hot start noises: ``baseline``, else the problem's input.

    MR images are complex, but zero-filled inputs and many baselines are magnitudes:
    those borrow the phase of the least-squares image ``A^+ y``.
    """
    complex_working = problem.operator.image_dtype.is_complex
    if baseline is None and complex_working:
        return problem.operator.A_dagger(problem.y)
    image = (problem.observed if baseline is None else baseline).detach()
    if complex_working and not image.is_complex():
        phase = torch.angle(problem.operator.A_dagger(problem.y))
        image = torch.polar(image.float(), phase)
    return image


def _summarise(samples: torch.Tensor, n_samples: int, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean and unbiased per-pixel variance over the samples (``|x - mean|^2`` for complex)."""
    stacked = samples.reshape(n_samples, batch, *samples.shape[1:])
    mean = stacked.mean(dim=0)
    if n_samples == 1:
        return mean, None
    spread = (stacked - mean).abs().square() if stacked.is_complex() else (stacked - mean).square()
    return mean, spread.sum(dim=0) / (n_samples - 1)


def through_plane_term(problem: ReconProblem, options: DiffusionOptions,
                       neighbours: Mapping[int, torch.Tensor] | None = None) -> tuple[ThroughPlane | None, dict | None]:
    """The slice-axis TV term of ``options.through_plane`` for this batch, and its record.

    ``neighbours``: finished results (working domain, ``(1, H, W)`` or ``(1, 1, H, W)``) by
    slice index; a batch slice whose neighbour is among them is tied to it.
    """
    if options.through_plane <= 0:
        return None, None
    from ..baselines.tv import slice_pairs
    from .adaptation import tv_weight_absolute

    lam = tv_weight_absolute(problem, float(options.through_plane))
    pairs = slice_pairs(problem.slices, problem.y)
    inside = {int(s) for s in problem.slices}
    fixed = []
    for item, index in enumerate(int(s) for s in problem.slices):
        for other in (index - 1, index + 1):
            if other not in inside and neighbours is not None and other in neighbours:
                fixed.append((item, neighbours[other].reshape(1, 1, *neighbours[other].shape[-2:])))
    record = {"through_plane": float(options.through_plane), "through_plane_lam": lam,
              "slice_pairs": int(pairs.sum()), "fixed_neighbours": len(fixed)}
    return ThroughPlane(lam, pairs, fixed), record


def stream_reconstruction(problem: ReconProblem, prior: Prior, options: DiffusionOptions, *,
                          baseline: torch.Tensor | None = None,
                          neighbours: Mapping[int, torch.Tensor] | None = None) -> Generator[ReconFrame, None, None]:
    """Reconstruct ``problem`` with ``prior``; yield a :class:`ReconFrame` after every step.

    ``baseline``: a working-domain ``(B, 1, H, W)`` classical estimate for the hot start.
    ``neighbours``: finished slices next to this batch (see :func:`through_plane_term`).
    The last frame (``frame.done``) holds the result: ``x0`` the posterior mean over the
    samples, ``variance`` their per-pixel variance (None for a single sample).
    """
    options.validate()  # a caller may have changed a field since it was made
    if options.fine_grid > 1:
        from .fine_grid import stream_on_fine_grid

        yield from stream_on_fine_grid(problem, prior, options, baseline=baseline, neighbours=neighbours)
        return
    cfg_condition = _check_conditioning(problem, prior, options)
    if cfg_condition == "blind-spot":  # DiffDenoise's self-supervised prior: its own sampler
        from .self_supervised import stream_self_supervised

        yield from stream_self_supervised(problem, prior, options)
        return
    if options.noise_start and problem.operator.is_identity and problem.noise_level > 0:
        from .noise_start import stream_noise_start

        yield from stream_noise_start(problem, prior, options)
        return
    if prior.noise_range is not None:
        raise SettingsError(f"{prior.name} is a denoising prior (it learned noise levels up to "
                            f"{prior.noise_range[1]:g} only): it denoises from the noise level, and cannot "
                            "reconstruct or start from pure noise; use a full prior")
    operator, y = problem.operator, problem.y
    complex_working = operator.image_dtype.is_complex
    domain = ModelDomain(prior.normalisation, prior.channels, problem.modality, complex_working)
    batch = int(y.shape[0])
    height, width = problem.observed.shape[-2:]
    n_samples = options.samples * (2 if options.symmetric else 1)
    shape = (n_samples * batch, prior.channels, int(height), int(width))
    schedule = prior.schedule
    own = _own_generator(options.seed)

    device = y.device  # the problem's: the network, noise and sampler follow it

    def fresh_noise(item_shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal noise; with ``symmetric`` the second half is the first half negated.
        Drawn on the CPU on every device, so a seed gives the same starting noise on a GPU."""
        if not options.symmetric:
            return torch.randn(item_shape, generator=own).to(device)
        half = torch.randn((item_shape[0] // 2, *item_shape[1:]), generator=own)
        return torch.cat([half, -half]).to(device)

    adaptation, tv_lam = None, 0.0
    if options.guidance == "dds-tv":
        from .adaptation import choose_tv_weight, tv_weight_absolute

        multiple = options.tv_weight
        if multiple == "auto":
            multiple, adaptation = choose_tv_weight(problem, prior, options)
        tv_lam = tv_weight_absolute(problem, float(multiple))
        adaptation = {**(adaptation or {}), "tv_weight": float(multiple), "tv_lam": tv_lam}
    through_plane, z_record = through_plane_term(problem, options, neighbours)
    if z_record is not None:
        adaptation = {**(adaptation or {}), **z_record}

    with torch.inference_mode(False):  # tensors the DPS graph may use must not be inference tensors
        y = y.clone()
        guidance: Guidance = make_guidance(
            options.guidance, operator, y, problem.noise_level, domain, schedule=schedule, noise=fresh_noise,
            cg_iters=options.cg_iters, dps_scale=options.dps_scale, tv_weight=tv_lam, through_plane=through_plane,
        )
        sampler = make_sampler(options, schedule)
        trunk = trunk_steps(sampler, options)
        start_items = batch if trunk > 0 else n_samples * batch  # a shared trunk starts as one sample
        x_init = fresh_noise((start_items, *shape[1:]))
        if options.hot_start:
            start_t = options.hot_start_t
            clean = domain.to_model(_hot_start_image(problem, baseline)).float()
            clean = clean.repeat(start_items // batch, 1, 1, 1)
            mean, std = (float(v) for v in schedule.marginal(start_t))
            x_init = mean * clean + std * x_init

    model: torch.nn.Module = prior.model
    if hasattr(model, "backend_info") and (guidance.requires_grad or options.adapt_steps > 0):
        raise SettingsError("the int8 backend has no gradients: DPS guidance and scan adaptation need "
                            "--backend torch")
    if options.low_noise_expert:
        from .experts import LowNoiseExperts, load_expert

        expert = load_expert(options.low_noise_expert, prior)
        model = LowNoiseExperts.for_prior(model, prior, expert)
        taken = int(model.expert_items(torch.tensor(sampler.times()[:sampler.n_steps])).sum())
        adaptation = {**(adaptation or {}), "low_noise_expert": expert.name, "low_noise_expert_steps": taken}
    model.to(device=device)
    eps_model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    if options.adapt_steps > 0:
        from .scan_adaptation import ScanAdaptedModel, measurement_residual

        with torch.inference_mode(False):
            y_norm2 = float(y.abs().square().sum()) * n_samples  # the batch holds n_samples copies of y
            model = ScanAdaptedModel(model, schedule, measurement_residual(operator, y, domain.from_model, batch),
                                     y_norm2, steps=options.adapt_steps, lr=options.adapt_lr,
                                     parameters=options.adapt_parameters, seed=options.seed)

        eps_model = model  # keeps its own (NCHW) layout: see ScanAdaptedModel
    elif cfg_condition is not None:
        from .conditioning import GuidedEps, inference_condition

        assert options.cfg_scale is not None  # cfg_condition is set only for a guided run
        guided = GuidedEps(model, inference_condition(problem, domain).to(device), float(options.cfg_scale))

        def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return guided(x.contiguous(memory_format=torch.channels_last), t)

        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    else:
        def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(x.contiguous(memory_format=torch.channels_last), t)  # type: ignore[no-any-return]

        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # oneDNN's fast layout on CPUs
    frames = sampler.frames(eps_model, shape, seed=options.seed, hook=guidance, x_init=x_init, device=device,
                            autocast=AUTOCAST, clip_x0=CLIP_X0[options.guidance],
                            branch=(trunk, n_samples) if trunk > 0 else None)
    n_main = sampler.n_steps
    total = frames_for(n_main, options, problem.modality)
    start = time.perf_counter()
    try:
        for index in range(n_main):
            # DPS differentiates through the network; everything else runs without autograd.
            with torch.inference_mode(not guidance.requires_grad):
                frame = next(frames)
                # The last frame's x_t is the (data-consistent) sample itself.
                x0_samples = domain.from_model(frame.x_t if frame.last else frame.x0_hat)
                # on the shared trunk there is one sample so far (no spread yet)
                x0_mean, variance = _summarise(x0_samples, x0_samples.shape[0] // batch, batch)
                x_t = domain.from_model(frame.x_t[:batch])
            out = ReconFrame(step=index + 1, total=total, t=float(frame.t), x_t=x_t, x0=x0_mean, variance=variance,
                             elapsed=time.perf_counter() - start, adaptation=adaptation)
            yield out
    finally:
        frames.close()  # cancellation: the sampler's generator ends here too
    if total > n_main:
        yield from _blended(problem, prior, options, out, baseline, start)


def blends_with_tv(options: DiffusionOptions, modality: str) -> bool:
    """Does a run end with the hold-out blend with TV (only measurements can be held out)?"""
    from .adaptation import HOLDOUT_MODALITIES

    return options.blend_tv and modality in HOLDOUT_MODALITIES


def frames_for(n_steps: int, options: DiffusionOptions, modality: str) -> int:
    """Frames a run of ``n_steps`` sampler steps yields: twice as many with the blend's
    hold-out run (as long as the main run) after them."""
    return 2 * n_steps if blends_with_tv(options, modality) else n_steps


def run_length(options: DiffusionOptions, schedule: NoiseSchedule, modality: str) -> int:
    """Frames a run of ``options`` yields, before it starts (:func:`frames_for` of its sampler)."""
    return frames_for(make_sampler(options, schedule).n_steps, options, modality)


def _blended(problem: ReconProblem, prior: Prior, options: DiffusionOptions, result: ReconFrame,
             baseline: torch.Tensor | None, start: float) -> Generator[ReconFrame, None, None]:
    """After the run: the hold-out run that fits the blend weight, one frame per step (showing the
    finished result, so a viewer stays live and a cancel lands between steps), then the blend.

    It runs after the reconstruction rather than before so that the first frames come at once.
    """
    from .adaptation import holdout_blend_steps

    adaptation = result.adaptation
    steps = holdout_blend_steps(problem, prior, options, tv_weight=(adaptation or {}).get("tv_weight"))
    try:
        while True:
            step = result.step + next(steps)
            if step < result.total:  # the last hold-out step is the blended frame below
                yield replace(result, step=step, elapsed=time.perf_counter() - start)
    except StopIteration as stop:
        weight, report = stop.value
    finally:
        steps.close()
    adaptation = {**(adaptation or {}), "blend_weight": weight, "blend": report}
    final = replace(result, step=result.total, elapsed=time.perf_counter() - start, adaptation=adaptation)
    if weight < 1.0:
        final = blend_with_baseline(final, _full_data_tv(problem, baseline, options), weight)
    yield final


def _check_conditioning(problem: ReconProblem, prior: Prior, options: DiffusionOptions) -> str | None:
    """The conditioning task of a classifier-free guided run (None for a plain one); a conditional
    prior without guidance, guidance without one, or a prior of another task is refused in one sentence."""
    from .conditioning import check_task, prior_task, refuse_without_guidance

    if options.cfg_scale is None:
        if prior_task(prior.metadata) == "blind-spot":
            return check_task(prior, problem.modality)  # guidance scale 1 unless given
        refuse_without_guidance(prior)
        return None
    acceleration = float(getattr(problem.operator, "acceleration")) if problem.modality == "mri" else None
    return check_task(prior, problem.modality, acceleration)


def _full_data_tv(problem: ReconProblem, baseline: torch.Tensor | None, options: DiffusionOptions) -> torch.Tensor:
    """TV on all the measurements (the hot start's baseline when it was TV already)."""
    if baseline is not None and options.hot_start:
        return baseline
    from ..baselines import run_baseline
    from .adaptation import blend_baseline

    with torch.inference_mode():
        return run_baseline(blend_baseline(problem, options), problem.operator, problem.y, modality=problem.modality,
                            noise_level=problem.noise_level, slices=problem.slices)


def blend_with_baseline(frame: ReconFrame, baseline: torch.Tensor, weight: float) -> ReconFrame:
    """``weight * frame.x0 + (1 - weight) * baseline``: the hold-out-chosen mix of
    :func:`.adaptation.blend_weight`. The variance stays the diffusion samples' own: scaling
    it by ``weight²`` would claim certainty exactly where the prior was judged unfit (a
    blend leaning on TV says the prior does not know this scan, not that nothing is unknown)."""
    x0 = weight * frame.x0 + (1.0 - weight) * baseline.to(frame.x0.dtype)
    return replace(frame, x0=x0, prior_mean=frame.x0, baseline=baseline)


def reconstruct_to_end(problem: ReconProblem, prior: Prior, options: DiffusionOptions, *,
                       baseline: torch.Tensor | None = None) -> ReconFrame:
    """Run :func:`stream_reconstruction` to the end; return the last frame."""
    last = None
    for last in stream_reconstruction(problem, prior, options, baseline=baseline):
        pass
    assert last is not None  # at least one step always runs
    return last


__all__ = ["CLIP_X0", "ReconFrame", "make_sampler", "reconstruct_to_end", "stream_reconstruction",
           "through_plane_term", "trunk_steps"]
