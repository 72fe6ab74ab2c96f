"""What a diffusion reconstruction is asked to do, and what it streams back.

The reconstruction (``diffrecon.diffusion.reconstruction.stream_reconstruction``) is a
generator: it yields one :class:`ReconFrame` per sampling step and can be abandoned
between any two steps (the consumer stops iterating; nothing is left half-written).
The CLI, ``diffrecon bench`` and the viewer all consume the same frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .guidance import GUIDANCE
from .samplers import SAMPLERS as _SAMPLER_CLASSES

#: sampler names, DDIM first (the product's default); the classes are in :mod:`.samplers`
SAMPLERS = tuple(_SAMPLER_CLASSES)


@dataclass
class DiffusionOptions:
    """Settings of one diffusion reconstruction; recorded in every output's provenance."""

    sampler: str = "ddim"  # ddim | ddpm | sde
    guidance: str = "dds"  # projection (hard data consistency) | dds (CG on x0) | dps (likelihood gradient)
    steps: int = 25  # network evaluations per sample (DDPM: any T; DDIM: any number)
    samples: int = 1  # K posterior samples in one batch -> mean and per-pixel variance
    eta: float = 0.0  # DDIM stochasticity (0 = deterministic given the initial noise)
    hot_start: bool = False  # start at an intermediate t from the classical baseline's estimate
    hot_start_t: float = 0.4  # where the hot start enters (fraction of the diffusion time)
    cg_iters: int = 5  # DDS: conjugate-gradient steps on the x0 estimate per sampling step
    dps_scale: float = 1.0  # DPS: step size on the measurement-residual gradient
    symmetric: bool = False  # SRDS / DiffDenoise: run +eps and -eps initial noise and average
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


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

    @property
    def done(self) -> bool:
        return self.step >= self.total

    @property
    def eta_seconds(self) -> float:
        """Remaining time at the pace so far."""
        return self.elapsed / max(self.step, 1) * (self.total - self.step)
