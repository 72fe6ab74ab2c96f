"""A low-noise expert: a second prior that takes over the last sampling steps.

eDiff-I (Balaji et al. 2022) trains an ensemble of expert denoisers, each for one band of
noise levels, because one network's capacity is shared by every level while the fine detail
of the image is decided only at the lowest ones. Here the ensemble has two members: the
full prior for the early steps, and a prior trained only at low noise levels (``diffrecon
train --noise-range LO,HI --init-from FULL``) for every step whose noise level
``sqrt((1 - abar) / abar)`` is at most its ``HI``. Both must share the schedule, the
intensity normalisation, the channels and the modality, so that their states mean the same.

The expert is named by ``DiffusionOptions.low_noise_expert`` (a file, or the name of a
bundled prior) and recorded with the other options in every output's provenance.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch

from ..errors import SettingsError
from .checkpoint import Prior, load_prior
from .schedules import NoiseSchedule


def resolve_expert_path(name: str) -> Path:
    """A file as given, or else a bundled prior of that name (``models/NAME``)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    from ..bundled import models_dir

    bundled = models_dir() / (name if name.endswith(".safetensors") else f"{name}.safetensors")
    if bundled.is_file():
        return bundled
    raise SettingsError(f"the low-noise expert {name!r} is neither a file nor a bundled prior")


@functools.lru_cache(maxsize=2)
def _load_expert(path: str, mtime_ns: int) -> Prior:  # mtime in the key: a replaced file is read again
    return load_prior(path)


def load_expert(name: str, prior: Prior) -> Prior:
    """The expert named ``name``, checked against ``prior`` (one sentence if it does not fit)."""
    path = resolve_expert_path(name)
    expert = _load_expert(str(path), path.stat().st_mtime_ns)
    if expert.noise_range is None:
        raise SettingsError(f"{expert.name} was trained at every noise level: a low-noise expert is a prior "
                            "trained with --noise-range")
    mismatched = [what for what, a, b in (
        ("modality", expert.modality, prior.modality), ("channels", expert.channels, prior.channels),
        ("schedule", expert.schedule.to_metadata(), prior.schedule.to_metadata()),
        ("intensity normalisation", expert.normalisation, prior.normalisation)) if a != b]
    if mismatched:
        raise SettingsError(f"the low-noise expert {expert.name} differs from {prior.name} in its "
                            f"{' and '.join(mismatched)}, so it cannot continue that prior's sampling")
    return expert


class LowNoiseExperts(torch.nn.Module):
    """``eps(x, t)`` of ``expert`` for the batch items whose noise level at ``t`` is at most
    ``sigma_max``, of ``base`` for the others (a sampling step's items share ``t``, so each
    step runs one of the two networks)."""

    def __init__(self, base: torch.nn.Module, expert: torch.nn.Module, schedule: NoiseSchedule, sigma_max: float):
        super().__init__()
        self.base, self.expert = base, expert
        self.schedule = schedule
        self.sigma_max = float(sigma_max)
        # sigma(t) <= sigma_max  <=>  log abar(t) >= -log(1 + sigma_max^2)
        self._log_abar_min = -math.log1p(self.sigma_max**2)

    @classmethod
    def for_prior(cls, base: torch.nn.Module, prior: Prior, expert: Prior) -> LowNoiseExperts:
        assert expert.noise_range is not None  # load_expert checked it
        return cls(base, expert.model, prior.schedule, expert.noise_range[1])

    def expert_items(self, t: torch.Tensor) -> torch.Tensor:
        """Which items of a batch at times ``t`` the expert predicts."""
        return self.schedule.log_alpha_bar(t.detach().double().cpu()) >= self._log_abar_min - 1e-12

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:  # one time for the whole batch
            t = t.expand(x.shape[0])
        use = self.expert_items(t).to(x.device)
        if bool(use.all()):
            return self.expert(x, t)  # type: ignore[no-any-return]
        if not bool(use.any()):
            return self.base(x, t)  # type: ignore[no-any-return]
        out = self.base(x, t)
        return out.index_put((use,), self.expert(x[use], t[use]).to(out.dtype))
