"""What a diffusion reconstruction is asked to do: :class:`DiffusionOptions`, checked when made.

The sampler and guidance names are those of :data:`.samplers.SAMPLERS` and
:data:`.guidance.GUIDANCE`; the reconstruction itself is
:func:`diffrecon.diffusion.reconstruction.stream_reconstruction`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import SettingsError
from .guidance import GUIDANCE
from .samplers import SAMPLERS


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
    # dds-tv: TV weight as a multiple of the TV baseline's tuned weight for the task, or "auto":
    # chosen per scan by self-supervised hold-out (see .adaptation)
    tv_weight: float | str = "auto"
    # Blend the result with TV on all the data, ``w x + (1 - w) TV``, ``w`` chosen per scan by
    # self-supervised hold-out from a run of these same settings on the other measurements
    # (.adaptation.holdout_blend_steps): never much worse than TV where the prior does not fit the
    # scan. One extra run.
    blend_tv: bool = False
    # Test-time adaptation (.scan_adaptation): gradient steps per sampling step that tune a copy
    # of the prior to this scan's measurements (0 = off); which parameters; Adam's step size
    adapt_steps: int = 0
    adapt_parameters: str = "norm"
    adapt_lr: float = 1e-3
    # 3D-consistent reconstruction: TV along the slice axis in the data-consistency step (dds and
    # dds-tv), a multiple of the TV baseline's tuned weight for the task; 0 = independent slices
    through_plane: float = 0.0
    symmetric: bool = False  # SRDS / DiffDenoise: run +eps and -eps initial noise and average
    # K > 1 samples share one trajectory down to this diffusion time, then branch (1 = independent
    # from the start). The trunk runs once, so K samples cost less than K runs; needs a
    # stochastic sampler (eta > 0, ddpm, sde), else the branches would stay identical
    branch_t: float = 1.0
    # denoising (A = I): start at the step matching the noise level (see .noise_start)
    noise_start: bool = False
    noise_start_scale: float = 1.0  # start where the model's sigma_t = this x the noise std
    ensemble: int = 1  # noise start: flips/transposes of the image denoised and averaged (1-8)
    # noise start: empirical Wiener refinement with the estimate as pilot (True, False, or "auto":
    # for every noise but white Gaussian, the one the prior was trained to remove; see .noise_start)
    wiener: bool | str = False
    # classifier-free guidance with a conditional prior (.conditioning): eps_uncond + w (eps_cond -
    # eps_uncond), the condition being the problem's degraded image; None = an unconditional prior
    cfg_scale: float | None = None
    # a prior trained only at low noise levels (train --noise-range) that takes over every step
    # whose noise level it learned (.experts); a file or a bundled prior's name; None or "" = off
    low_noise_expert: str | None = None
    # Cartesian MRI: reconstruct on a grid this many times finer than the scan's (its k-space
    # zero-padded), then crop back (.fine_grid); 1 = the scan's own grid. Costs fine_grid² the time
    fine_grid: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SettingsError` (one sentence) for settings no run can use."""
        if self.sampler not in SAMPLERS:
            raise SettingsError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if self.guidance not in GUIDANCE:
            raise SettingsError(f"unknown guidance {self.guidance!r}; choose one of {', '.join(GUIDANCE)}")
        if self.steps < 1 or self.samples < 1:
            raise SettingsError(f"steps and samples must be at least 1; got {self.steps} and {self.samples}")
        if self.hot_start and not 0.0 < self.hot_start_t <= 1.0:
            raise SettingsError(f"the hot-start time must be in (0, 1]; got {self.hot_start_t}")
        if self.tv_weight != "auto" and not (isinstance(self.tv_weight, (int, float)) and self.tv_weight >= 0):
            raise SettingsError(f"the TV weight must be 'auto' or a number >= 0; got {self.tv_weight!r}")
        if not (isinstance(self.through_plane, (int, float)) and self.through_plane >= 0):
            raise SettingsError(f"the through-plane weight must be a number >= 0; got {self.through_plane!r}")
        if self.wiener not in (True, False, "auto"):
            raise SettingsError(f"wiener must be true, false or 'auto'; got {self.wiener!r}")
        if not 0.0 < self.noise_start_scale <= 10.0 or not 1 <= self.ensemble <= 8:
            raise SettingsError(f"noise_start_scale must be in (0, 10] and ensemble in 1..8; got "
                                f"{self.noise_start_scale} and {self.ensemble}")
        if not 0.0 < self.branch_t <= 1.0:
            raise SettingsError(f"the branch time must be in (0, 1]; got {self.branch_t}")
        if self.branch_t < 1.0 and self.samples > 1 and (self.symmetric or (self.sampler == "ddim" and self.eta == 0)):
            raise SettingsError("branching samples from a shared trunk needs a stochastic sampler (ddim with eta > 0, "
                                "ddpm or sde) without symmetric pairs")
        if isinstance(self.fine_grid, bool) or not isinstance(self.fine_grid, int) or not 1 <= self.fine_grid <= 4:
            raise SettingsError(f"the fine grid factor must be a whole number from 1 to 4; got {self.fine_grid!r}")
        if self.eta < 0 or self.cg_iters < 1:
            raise SettingsError(f"eta must be >= 0 and cg_iters >= 1; got {self.eta} and {self.cg_iters}")

        if self.cfg_scale is not None:
            if isinstance(self.cfg_scale, bool) or not isinstance(self.cfg_scale, (int, float)) \
                    or not 0 <= self.cfg_scale <= 20:
                raise SettingsError(f"the guidance scale w must be a number from 0 to 20; got {self.cfg_scale!r}")
            if self.adapt_steps > 0:
                raise SettingsError("classifier-free guidance and test-time adaptation (adapt_steps) do not combine")
            if self.low_noise_expert:
                raise SettingsError("classifier-free guidance and a low-noise expert do not combine")

        if self.low_noise_expert is not None and not isinstance(self.low_noise_expert, str):
            raise SettingsError(f"the low-noise expert must be a prior's file or name; got {self.low_noise_expert!r}")

        from .scan_adaptation import ADAPT_PARAMETERS

        if self.adapt_steps < 0 or self.adapt_lr <= 0 or self.adapt_parameters not in ADAPT_PARAMETERS:
            raise SettingsError(
                f"adaptation needs adapt_steps >= 0, adapt_lr > 0 and parameters in {', '.join(ADAPT_PARAMETERS)}; "
                f"got {self.adapt_steps}, {self.adapt_lr} and {self.adapt_parameters!r}")

    def to_dict(self) -> dict:
        return asdict(self)
