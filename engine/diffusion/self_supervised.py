"""DiffDenoise's self-supervised denoising (Demir et al. 2025), learnt from noisy scans alone.

No clean image is ever seen. Three stages (`diffrecon train --self-supervised`):

1. **Blind-spot network** (Noise2Void, Krull et al. 2019): a small UNet predicts each
   pixel from its surroundings. In every training batch about ``mask_fraction`` (1.5 %) of
   the pixels are replaced by a random neighbour (within ``radius`` pixels, never the pixel
   itself) and the loss is the squared error *at those pixels only*: the network never sees
   a masked pixel's own noise, and since the noise is independent between pixels, the best
   it can do is the clean value. Its output is a smooth, slightly blurred denoised image.
2. **A diffusion model conditioned on it**: the noisy crops themselves are the diffusion
   model's data ``x0``, the blind-spot network's output of the same crop its condition
   (task ``blind-spot`` of :mod:`.conditioning`, with condition dropout so classifier-free
   guidance works). It learns what the blind-spot estimate lost, noise included.
3. **Stabilised sampling** (:func:`stream_self_supervised`): DDIM from the blind-spot
   output noised with a pair of noises ``+eps`` and ``-eps`` (the symmetric pairs of
   :mod:`.noise_start` and :mod:`.reconstruction`) to a low ``t``, conditioned on that
   output; what each sample adds as noise it adds with opposite sign in its twin, so the
   pair's mean keeps the detail and cancels the noise. Entering low matters: the prior
   models the *noisy* scans, so a run from pure noise ends in a noisy image.

DiffDenoise's fourth stage, distilling the sampler into one fast network, is not built here.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import SettingsError
from .unet import UNet

if TYPE_CHECKING:
    from ..measurements import ReconProblem
    from .checkpoint import Prior
    from .data import TrainingSource
    from .options import DiffusionOptions

MASK_FRACTION = 0.015  # Noise2Void: 0.5-2 % of the pixels per patch
MASK_RADIUS = 2  # neighbours drawn from the 5x5 window around a masked pixel
BLIND_SPOT_T = 0.0  # the blind-spot network is a UNet at diffusion time 0 (its time input unused)
#: where stage 3 enters from the blind-spot estimate (validation subjects, sigma = 0.1, one step,
#: 4 pairs: t = 0.1 27.97 dB, 0.2 27.49, 0.35 26.88, 0.5 26.60; the blind-spot network alone
#: 27.53; from pure noise a pair's mean is a noisy image, 7.8 dB in 10 steps on the test subjects)
SELF_SUPERVISED_START_T = 0.1
#: ... as a multiple of the scan's noise std: t = 0.1 is a noise level of 0.339 (linear schedule),
#: 3.4x the sigma = 0.1 it was chosen at. A fixed t entered real scans with sigma 0.02-0.03 at 10x
#: their noise and blurred them (residual 2-5x the noise: README, DiffDenoise on real noisy scans),
#: so the entry follows the noise: the grid step whose noise level is 3.4x the scan's (estimated) std
SELF_SUPERVISED_START_FACTOR = 3.4


# --------------------------------------------------------------------------- stage 1: the blind-spot network


def blind_spot_mask(x: torch.Tensor, rng: np.random.Generator, fraction: float = MASK_FRACTION,
                    radius: int = MASK_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise2Void masking: ``fraction`` of each image's pixels (at least one) replaced by a random
    neighbour within ``radius`` (never itself). Returns the masked batch and the boolean mask
    ``(B, 1, H, W)`` of replaced pixels (all channels of a pixel are replaced together)."""
    b, c, h, w = x.shape
    n = max(1, round(fraction * h * w))
    out = x.clone()
    mask = torch.zeros((b, 1, h, w), dtype=torch.bool)
    for i in range(b):
        flat = rng.choice(h * w, size=n, replace=False)
        ys, xs = flat // w, flat % w
        dy = rng.integers(-radius, radius + 1, size=n)
        dx = rng.integers(-radius, radius + 1, size=n)
        same = (dy == 0) & (dx == 0)
        while same.any():  # never the pixel itself
            dy[same] = rng.integers(-radius, radius + 1, size=int(same.sum()))
            dx[same] = rng.integers(-radius, radius + 1, size=int(same.sum()))
            same = (dy == 0) & (dx == 0)
        # an offset leaving the crop is mirrored (-d): still a neighbour, never the pixel itself
        ny, nx = ys + dy, xs + dx
        ny = np.where((ny < 0) | (ny > h - 1), ys - dy, ny)
        nx = np.where((nx < 0) | (nx > w - 1), xs - dx, nx)
        out[i, :, ys, xs] = x[i, :, ny, nx]
        mask[i, 0, ys, xs] = True
    return out, mask


def blind_spot_network(channels: int, width: int = 16) -> UNet:
    """The stage-1 network: a small UNet (3 levels, one block each; about 0.25 M parameters at width 16)."""
    return UNet(channels, width=width, channel_mult=(1, 2, 2), res_blocks=1, attention_heads=4)


def blind_spot_loss(net: torch.nn.Module, noisy: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Squared error at the masked pixels only (Noise2Void)."""
    masked, mask = blind_spot_mask(noisy, rng)
    pred = net(masked, torch.full((noisy.shape[0],), BLIND_SPOT_T))
    sel = mask.expand_as(noisy)
    return (pred[sel] - noisy[sel]).square().mean()


def train_blind_spot(sources: list[TrainingSource], channels: int, out: Path, *, minutes: float, size: int = 64,
                     batch: int = 16, lr: float = 4e-4, width: int = 16, seed: int = 0,
                     progress: bool = True) -> dict[str, Any]:
    """Train the blind-spot network on noisy crops for ``minutes``; save it (prior-file format,
    ``role: blind-spot``) to ``out``; return its record (steps, validation loss)."""
    from .checkpoint import save_prior
    from .data import CropSampler, validation_crops
    from .schedules import make_schedule
    from .training import learning_rate

    torch.manual_seed(seed)
    net = blind_spot_network(channels, width)
    ema = copy.deepcopy(net).requires_grad_(False)
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    crops = CropSampler(sources, size, channels, seed=seed)
    rng = np.random.default_rng(seed + 3)
    val = torch.from_numpy(validation_crops(sources, size, channels, 32))
    val_rng_state = np.random.default_rng(4323)
    val_masked, val_mask = blind_spot_mask(val, val_rng_state)
    deadline = time.monotonic() + 60 * minutes
    step, horizon, losses, start = 0, None, [], time.monotonic()
    while time.monotonic() < deadline:
        x = torch.from_numpy(crops.sample(batch))
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, lr, 50, horizon or 10**9)
        net.train()
        loss = blind_spot_loss(net, x, rng)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        with torch.no_grad():
            decay = min(0.995, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
        step += 1
        losses.append(float(loss.detach()))
        if step == 20:  # horizon from the speed so far: the cosine decay ends with the budget
            per_step = (time.monotonic() - start) / 20
            horizon = step + int((deadline - time.monotonic()) / per_step)
        if progress and step % 50 == 0:
            print(f"blind-spot step {step}: loss {np.mean(losses[-50:]):.5f}", flush=True)
    ema.eval()
    with torch.no_grad():
        pred = ema(val_masked, torch.full((len(val),), BLIND_SPOT_T))
        val_loss = float((pred - val)[val_mask.expand_as(val)].square().mean())
    record = {"steps": step, "minutes": round((time.monotonic() - start) / 60, 2), "val_masked_mse": val_loss,
              "mask_fraction": MASK_FRACTION, "mask_radius": MASK_RADIUS, "width": width, "size": size,
              "batch": batch, "lr": lr, "seed": seed}
    meta = {"role": "blind-spot", "schedule": make_schedule("linear").to_metadata(),
            "normalisation": {"kind": "percentile", "percentile": 99.5}, "modality": "mri", "step": step,
            "blind_spot": record, "sources": [s.name for s in sources]}
    save_prior(out, ema, meta)
    return record


def load_blind_spot(prior: Prior) -> torch.nn.Module:
    """The blind-spot network a ``blind-spot`` conditional prior names (beside it, hash-checked)."""
    from .checkpoint import load_prior

    info = (prior.metadata.get("conditioning") or {}).get("blind_spot_file") or {}
    if not prior.path or not info.get("name"):
        raise SettingsError(f"{prior.name}: its metadata names no blind-spot network")
    path = Path(prior.path).parent / str(info["name"])
    if not path.is_file():
        raise SettingsError(f"{prior.name} needs its blind-spot network {path.name} beside it; it is missing")
    if info.get("sha256") and file_digest(path) != info["sha256"]:
        raise SettingsError(f"{path.name} is not the blind-spot network {prior.name} was trained with "
                            "(its hash differs)")
    return load_prior(path).model


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def noisy_sources(sources: list[TrainingSource], sigma: float, seed: int = 0) -> list[TrainingSource]:
    """The sources with white Gaussian noise of std ``sigma`` (model units) added once, a fixed
    realisation per voxel, as a noisy scan has (for simulating noisy scans from clean ones)."""
    rng = np.random.default_rng(seed + 11)
    out = []
    for s in sources:
        def noisy(a: np.ndarray) -> np.ndarray:
            return (a + sigma * rng.standard_normal(a.shape)).astype(a.dtype)
        out.append(replace(s, blocks=[noisy(b) for b in s.blocks], validation=noisy(s.validation),
                           provenance=f"{s.provenance}; white Gaussian noise sigma {sigma:g} added (fixed realisation)"))
    return out


# --------------------------------------------------------------------------- stage 3: stabilised sampling


def stream_self_supervised(problem: ReconProblem, prior: Prior, options: DiffusionOptions
                           ) -> Generator[Any, None, None]:
    """Denoise ``problem`` with a ``blind-spot`` conditional prior (module docstring, stage 3);
    yield a ReconFrame per step.

    The run enters at ``t0`` (``options.hot_start_t`` with ``options.hot_start``, else
    :func:`self_supervised_start`) from the blind-spot estimate noised to ``t0`` with
    ``+eps`` and ``-eps``, and takes ``round(t0 * options.steps)`` DDIM steps (at least one)
    down to 0, guidance scale ``options.cfg_scale`` (default 1: the plain conditional
    model). ``options.samples`` pairs per image, each over ``options.ensemble``
    flips/transposes of the image; the mean of all of them is the estimate."""
    from .conditioning import GuidedEps
    from .guidance import ModelDomain
    from .noise_start import dihedral, undo_dihedral
    from .reconstruction import ReconFrame, _own_generator, _summarise
    from .samplers import DDIMSampler

    if not problem.operator.is_identity:
        raise SettingsError("a self-supervised (blind-spot) prior denoises; it cannot reconstruct "
                            f"{problem.modality} measurements")
    domain = ModelDomain(prior.normalisation, prior.channels, problem.modality, False)
    bsn = load_blind_spot(prior)
    y = domain.to_model(problem.y.float())
    batch = int(y.shape[0])
    start_t = float(options.hot_start_t) if options.hot_start else self_supervised_start(problem, prior, domain)
    sampler = DDIMSampler.for_run(prior.schedule, max(1, round(start_t * options.steps)), start_t=start_t)
    abar = float(prior.schedule.alpha_bar(sampler.times()[0]))
    pairs, members = max(1, options.samples), max(1, min(options.ensemble, 8))
    scale = 1.0 if options.cfg_scale is None else float(options.cfg_scale)
    own = _own_generator(options.seed)
    runs = []
    for j in range(members):  # each flip: its own blind-spot estimate, noised with +eps and -eps
        flipped = dihedral(y, j)
        with torch.inference_mode():
            cond = bsn(flipped, torch.full((batch,), BLIND_SPOT_T)).float()
        half = torch.randn((pairs * batch, *flipped.shape[1:]), generator=own)
        noise = torch.cat([half, -half])
        x_init = abar**0.5 * cond.repeat(2 * pairs, 1, 1, 1) + (1 - abar) ** 0.5 * noise
        runs.append(sampler.frames(GuidedEps(prior.model, cond, scale), tuple(x_init.shape), seed=options.seed,
                                   x_init=x_init, autocast=True))
    n_items = 2 * pairs * members
    start = time.perf_counter()
    adaptation = {"self_supervised": "hot start from the blind-spot estimate, symmetric +-eps DDIM",
                  "start_t": round(start_t, 4), "pairs": pairs, "ensemble": members,
                  "network_evaluations": sampler.n_steps * n_items * (1 if scale in (0.0, 1.0) else 2)}
    try:
        for index in range(sampler.n_steps):
            with torch.inference_mode():
                images = []
                for j, frames in enumerate(runs):
                    frame = next(frames)
                    images.append(undo_dihedral(domain.from_model(frame.x_t if frame.last else frame.x0_hat), j))
                mean, variance = _summarise(torch.cat(images), n_items, batch)
            yield ReconFrame(step=index + 1, total=sampler.n_steps, t=float(frame.t), x_t=mean, x0=mean,
                             variance=variance, elapsed=time.perf_counter() - start, adaptation=adaptation)
    finally:
        for frames in runs:
            frames.close()


def self_supervised_start(problem: ReconProblem, prior: Prior, domain: Any) -> float:
    """Where stage 3 enters: the grid time whose noise level is :data:`SELF_SUPERVISED_START_FACTOR`
    times the problem's noise std (in the prior's units); :data:`SELF_SUPERVISED_START_T` when the
    noise std is unknown (0)."""
    from .noise_start import matched_step

    sigma = float(problem.noise_level) * float(domain.gain)
    if sigma <= 0:
        return SELF_SUPERVISED_START_T
    step = matched_step(prior.schedule.alphas_cumprod.double(), SELF_SUPERVISED_START_FACTOR * sigma)
    return float(prior.schedule.time_of_step(step))


def blind_spot_estimate(problem: ReconProblem, prior: Prior) -> torch.Tensor:
    """Stage 1 alone: the blind-spot network's output for the problem (working domain)."""
    from .guidance import ModelDomain

    domain = ModelDomain(prior.normalisation, prior.channels, problem.modality, False)
    y = domain.to_model(problem.y.float())
    with torch.inference_mode():
        return domain.from_model(load_blind_spot(prior)(y, torch.full((y.shape[0],), BLIND_SPOT_T)).float())


__all__ = ["MASK_FRACTION", "blind_spot_loss", "blind_spot_mask", "blind_spot_network", "load_blind_spot",
           "noisy_sources", "stream_self_supervised", "train_blind_spot"]
