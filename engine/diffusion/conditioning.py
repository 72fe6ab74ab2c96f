"""Conditional priors and classifier-free guidance (Ho & Salimans 2022).

A *conditional* prior's UNet reads, besides the noisy image, the degraded image it is
asked to restore as extra input channels (:class:`.unet.UNet` ``cond_channels``): the
zero-filled (adjoint) image of undersampled MRI, the noisy image for denoising, or a
blind-spot network's estimate (the self-supervised pipeline). Training replaces the
condition by zeros with probability ``p_uncond`` (*condition dropout*, :func:`drop_condition`),
so the one network is also an unconditional prior: the zero condition means "none".

Sampling with guidance scale ``w`` (:class:`GuidedEps`) mixes the two predictions,
``eps = eps_uncond + w (eps_cond - eps_uncond)``, from one network call on a batch of
two: ``w = 0`` is the unconditional prior, ``w = 1`` the plain conditional one, ``w > 1``
leans further towards the condition. The mix is an epsilon predictor like any other, so
every sampler and data-consistency path (DDS, projection) runs on it unchanged.

The *task* a prior was conditioned on (``mri-4x``, ``denoise``, ...) is stored in its
metadata (``conditioning``); :func:`check_task` refuses a prior used for another task in
one sentence, since a condition from another degradation is an input it never saw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import SettingsError

if TYPE_CHECKING:  # the functions below import .checkpoint lazily; the type is for the checker only
    from .checkpoint import Prior

#: condition dropout rate of `diffrecon train --conditional` (Ho & Salimans use 0.1-0.2)
DEFAULT_P_UNCOND = 0.15
#: the tasks `diffrecon train --conditional` knows; mri-<A>x takes any acceleration 2..12
TASK_PATTERN = re.compile(r"^(mri-(\d+(?:\.\d+)?)x|denoise|blind-spot)$")
TASK_HELP = "mri-<A>x (e.g. mri-4x: zero-filled image of A-fold random-line undersampling), denoise, blind-spot"


@dataclass(frozen=True)
class ConditioningTask:
    """What a conditional prior is conditioned on, and how training makes that condition from a clean crop."""

    name: str
    p_uncond: float = DEFAULT_P_UNCOND
    #: denoise: the noise std range training draws from (per crop, model units)
    sigma_range: tuple[float, float] = (0.02, 0.2)

    @classmethod
    def parse(cls, name: str, p_uncond: float = DEFAULT_P_UNCOND) -> ConditioningTask:
        if not TASK_PATTERN.match(name or ""):
            raise SettingsError(f"--conditional: unknown task {name!r}; choose {TASK_HELP}")
        task = cls(name, p_uncond)
        if task.acceleration is not None and not 2 <= task.acceleration <= 12:
            raise SettingsError(f"--conditional: the acceleration of {name!r} must be from 2 to 12")
        if not 0.0 <= p_uncond < 1.0:
            raise SettingsError(f"the condition dropout rate must be in [0, 1); got {p_uncond}")
        return task

    @property
    def acceleration(self) -> float | None:
        m = TASK_PATTERN.match(self.name)
        return float(m.group(2)) if m and m.group(2) else None

    def to_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.name, "p_uncond": self.p_uncond, "null_condition": "zeros"}
        if self.acceleration is not None:
            out.update(mask="random", center_fraction="0.32 / acceleration", condition="zero-filled complex image A^H y")
        elif self.name == "denoise":
            out.update(sigma_range=list(self.sigma_range), condition="the noisy image")
        else:
            out.update(condition="the blind-spot network's estimate of the noisy image")
        return out

    def training_condition(self, x0: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """The degraded image of each clean crop ``x0`` ``(B, C, H, W)`` (model units), drawn with ``rng``.

        MRI: a fresh random-line mask per crop (``make_mask("random", ...)``, the bench's
        default kind, with the fastMRI centre fraction), applied in the centred orthonormal
        k-space of :mod:`..physics.mri`; the condition is the complex zero-filled image as
        real/imaginary channels, exactly what :func:`inference_condition` gives a scan.
        Denoise: ``x0 + sigma n`` with ``sigma`` uniform in ``sigma_range``.
        """
        if self.acceleration is not None:
            from ..physics.masks import make_mask
            from ..physics.mri import fft2c, ifft2c

            if x0.shape[1] != 2:
                raise SettingsError("an MRI conditional prior needs 2 channels (complex images)")
            h, w = x0.shape[-2:]
            masks = np.stack([make_mask("random", (h, w), self.acceleration, None, int(rng.integers(2**31)))
                              for _ in range(x0.shape[0])])
            image = torch.complex(x0[:, 0].float(), x0[:, 1].float())
            zero_filled = ifft2c(fft2c(image) * torch.from_numpy(masks))
            return torch.stack([zero_filled.real, zero_filled.imag], dim=1).to(x0.dtype)
        if self.name == "denoise":
            low, high = self.sigma_range
            sigma = torch.from_numpy(rng.uniform(low, high, size=(x0.shape[0], 1, 1, 1)).astype(np.float32))
            noise = torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
            return x0 + sigma * noise
        raise SettingsError("the blind-spot condition is made by the self-supervised pipeline, not from clean crops")


def drop_condition(cond: torch.Tensor, p_uncond: float, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Condition dropout: each item's condition replaced by zeros (the null condition) with
    probability ``p_uncond``; returns the new condition and which items were dropped."""
    dropped = rng.random(cond.shape[0]) < p_uncond
    keep = torch.from_numpy(~dropped).to(cond.device, cond.dtype).reshape(-1, *([1] * (cond.ndim - 1)))
    return cond * keep, dropped


class GuidedEps:
    """``eps = eps_uncond + w (eps_cond - eps_uncond)``: a conditional network with its condition
    bound, as an epsilon predictor ``(x, t) -> eps`` for the samplers.

    ``cond`` is ``(B, cond_channels, H, W)`` for a batch of ``B`` (or one item, repeated).
    ``w = 0`` and ``w = 1`` need one prediction and run one call; any other ``w`` runs the
    conditional and unconditional halves as one batch of ``2 B``.
    """

    def __init__(self, model: torch.nn.Module, cond: torch.Tensor, scale: float):
        if not np.isfinite(scale) or scale < 0:
            raise SettingsError(f"the guidance scale must be a number >= 0; got {scale}")
        self.model, self.cond, self.scale = model, cond, float(scale)

    def _cond_for(self, x: torch.Tensor) -> torch.Tensor:
        cond = self.cond.to(device=x.device, dtype=x.dtype)
        if cond.shape[0] != x.shape[0]:
            if x.shape[0] % cond.shape[0]:
                raise ValueError(f"a condition for {cond.shape[0]} item(s) does not fit a batch of {x.shape[0]}")
            cond = cond.repeat(x.shape[0] // cond.shape[0], 1, 1, 1)  # sample-major, like the reconstruction batch
        return cond.contiguous(memory_format=torch.channels_last) if x.is_contiguous(
            memory_format=torch.channels_last) else cond

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = self._cond_for(x)
        if self.scale == 0.0:
            return self.model(x, t, torch.zeros_like(cond))
        if self.scale == 1.0:
            return self.model(x, t, cond)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, torch.zeros_like(cond)]))
        eps_cond, eps_uncond = both.chunk(2)
        return eps_uncond + self.scale * (eps_cond - eps_uncond)


def load_unconditional_into(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load an unconditional prior's weights into a conditional network of the same shape:
    the stem's condition channels get zero weights, so the network starts as that prior.

    A complex prior may start a real one (its real channel,
    :func:`.checkpoint.real_channel_weights`), a far better start than random weights: DiffDenoise's diffusion stage
    on colin27 at σ = 0.1 began at a validation noise MSE of 0.16 from ``mri-brain`` against
    1.0 from nothing."""
    from ..errors import DiffreconError
    from .checkpoint import _read, load_fitting, real_channel_weights

    tensors, meta = _read(Path(path))
    wanted = model.state_dict()["stem.weight"]
    if int(getattr(model, "config", {}).get("in_channels", 0)) == 1:
        tensors = real_channel_weights(tensors, meta)
    stem = tensors.get("stem.weight")
    if stem is None or stem.shape[0] != wanted.shape[0] or stem.shape[2:] != wanted.shape[2:] \
            or stem.shape[1] >= wanted.shape[1]:
        raise DiffreconError(f"{path}: its stem does not fit a conditional network of this shape")
    padded = torch.zeros_like(wanted)
    padded[:, : stem.shape[1]] = stem
    tensors = {**tensors, "stem.weight": padded}
    load_fitting(model, tensors, f"{path}: its weights do not fit this conditional network")
    return meta


# --------------------------------------------------------------------------- which prior fits which task


def prior_task(metadata: dict[str, Any]) -> str | None:
    """The task a prior's metadata says it is conditioned on (None: an unconditional prior)."""
    cond = metadata.get("conditioning")
    return str(cond.get("task")) if isinstance(cond, dict) and cond.get("task") else None


def problem_task(modality: str, acceleration: float | None = None) -> str:
    """The conditioning task a reconstruction of ``modality`` needs (``mri-4x``, ``denoise``...)."""
    if modality == "mri":
        a = float(acceleration or 0)
        nominal = round(a) if a and abs(a / max(round(a), 1) - 1) <= 0.1 else round(a, 1)  # masks miss by < 10 %
        return f"mri-{nominal:g}x"
    return modality


def check_task(prior: Prior, modality: str, acceleration: float | None = None) -> str:
    """Refuse (one sentence) a prior that is not conditioned on this task; return the task."""
    name = prior.name
    have = prior_task(prior.metadata)
    want = problem_task(modality, acceleration)
    trained = TASK_PATTERN.match(have or "")
    if trained and trained.group(2) and acceleration is not None and modality == "mri" \
            and abs(acceleration / float(trained.group(2)) - 1) <= 0.1:
        return str(have)  # a mask's achieved acceleration is within 10 % of its nominal one (physics.masks)
    if have == "blind-spot" and modality == "denoise":
        return have
    if have == "blind-spot":
        raise SettingsError(f"{name} is a self-supervised denoising prior (blind-spot condition); it cannot "
                            f"reconstruct {modality}")
    if have is None:
        raise SettingsError(f"{name} is an unconditional prior, so classifier-free guidance cannot use it; give a "
                            f"prior trained with diffrecon train --conditional {want}")
    if have != want:
        raise SettingsError(f"{name} is conditioned on {have}, not on this {want} task; use it only for {have}, or "
                            f"train one with diffrecon train --conditional {want}")
    return have


def refuse_without_guidance(prior: Prior) -> None:
    """A conditional prior used as a plain (unconditional) prior: refused in one sentence."""
    name = prior.name
    if prior.metadata.get("role") == "blind-spot":
        raise SettingsError(f"{name} is a blind-spot network (stage 1 of diffrecon train --self-supervised), not a "
                            "diffusion prior; use the prior trained beside it")
    task = prior_task(prior.metadata)
    if task is not None:
        raise SettingsError(f"{name} is a conditional prior (task {task}); run it with classifier-free guidance "
                            f"(--cfg W, or diffusion:cfg/W in bench)")


def inference_condition(problem, domain) -> torch.Tensor:
    """The condition of a reconstruction problem, model domain ``(B, C, H, W)``: MRI's complex
    adjoint image ``A^H y`` (single coil: the zero-filled image with its phase), else the degraded input."""
    if problem.modality == "mri":
        return domain.to_model(problem.operator.A_dagger(problem.y)).float()
    return domain.to_model(problem.observed).float()


__all__ = ["DEFAULT_P_UNCOND", "ConditioningTask", "GuidedEps", "check_task", "drop_condition",
           "inference_condition", "load_unconditional_into", "prior_task", "problem_task", "refuse_without_guidance"]
