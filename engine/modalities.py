"""The modality registry: everything that differs between MRI, CT, denoising and ultrasound.

One :class:`Modality` per task holds its problem builder and working-domain mapping
(:mod:`.measurements`), its classical baselines and the one a diffusion hot start enters
from, its diffusion defaults and default prior, the name of its unreconstructed input, and
the data set its defaults were tuned on (``diffrecon bench`` itself scores the test subjects of
:mod:`.datasets`). Front ends (CLI, bench, viewer) look a modality up
here instead of comparing its name; :func:`suggest_task` is the one rule for which task a
scan starts in.

The diffusion defaults were chosen on held-out validation slices; the measurements behind
them are in ``resources/results/diffusion-defaults.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .baselines import METHODS_FOR_MODALITY
from .errors import SettingsError
from .measurements import BUILDERS, MODALITIES, MeasurementSettings, ModalityMeasurements

if TYPE_CHECKING:
    from .diffusion.options import DiffusionOptions
    from .io.volume import Volume


@dataclass(frozen=True)
class Modality:
    name: str  # "mri", "ct", "denoise", "ultrasound": the --modality value
    measurements: type[ModalityMeasurements]  # problem builder and working-domain mapping
    input_name: str  # what the unreconstructed input image is called (zero-filled, FBP, ...)
    default_dataset: str  # the held-out slab the quality sweep (experiments.diffusion) scores on
    bench_tasks: str  # the default `diffrecon bench --settings`
    diffusion_defaults: dict[str, Any] = field(default_factory=dict)  # DiffusionOptions fields
    default_prior: str | None = None  # file under resources/models/, None: no prior of its own
    prior_modalities: tuple[str, ...] = ()  # whose priors suit this task, best first
    input_method: str | None = None  # the baseline whose result *is* the input image (MRI: zero-filled)
    #: DiffusionOptions fields that replace the defaults when the user asks for uncertainty
    #: (samples >= 2): the sampler setting whose σ calibrated best on the validation subjects
    #: (resources/results/uncertainty/); explicit choices still win
    uncertainty_defaults: dict[str, Any] = field(default_factory=dict)
    #: DiffusionOptions fields that differ between this modality's tasks (CT: the steps of
    #: noiseless sparse views), given the task's settings; they replace the defaults, and the
    #: uncertainty defaults and explicit choices replace them
    task_defaults: Callable[[MeasurementSettings], dict[str, Any]] | None = None

    @property
    def baselines(self) -> tuple[str, ...]:
        """The classical methods that apply, the input-like one first."""
        return METHODS_FOR_MODALITY[self.name]

    @property
    def hot_start_baseline(self) -> str:
        """The classical method a diffusion hot start enters from (the iterative one: TV)."""
        return self.baselines[1]

    def diffusion_options(self, settings: MeasurementSettings | None = None, /, **overrides: Any) -> DiffusionOptions:
        """:class:`DiffusionOptions` with this modality's measured defaults for the task
        ``settings`` (None: the modality's own, those of no task in particular); ``overrides``
        that are not None win."""
        from .diffusion.options import DiffusionOptions

        given = {k: v for k, v in overrides.items() if v is not None}
        chosen = dict(self.diffusion_defaults)
        if settings is not None and self.task_defaults is not None:
            chosen.update(self.task_defaults(settings))
        if int(given.get("samples", chosen.get("samples", 1))) >= 2:
            chosen.update(self.uncertainty_defaults)
        merged = {**chosen, **given}
        if (self.name in ("mri", "ct") and "hot_start" not in given and not merged.get("hot_start")
                and int(merged.get("steps", 25)) < MIN_STEPS_FROM_NOISE):
            merged["hot_start"] = True  # a few steps from pure noise give no image: enter from TV
        return DiffusionOptions(**merged)


#: Fewer sampling steps than this start from the TV baseline (a hot start) unless the user
#: chose otherwise: from pure noise the first Tweedie estimates are the network's error
#: amplified ~100x (1 / sqrt(abar) at t = T) and too few steps remain to undo it. Colin27's
#: sample slice, MRI 4x, DDS, one sample (input 20.59 dB): 1 / 2 / 3 / 4 / 5 steps gave
#: -5.5 / -5.4 / 14.1 / 20.1 / 21.9 dB; hot-started, 1 and 2 steps 20.9 dB.
MIN_STEPS_FROM_NOISE = 5
_SYMMETRIC_DDIM = {"sampler": "ddim", "eta": 0.0, "symmetric": True}
_STOCHASTIC_DDIM = {"sampler": "ddim", "eta": 1.0, "symmetric": False}
#: the K samples share one trajectory down to t = 0.4 and branch there: 15 of 25 steps run once,
#: so K = 8 costs 3.8 runs' network work, not 8; on the MRI validation slices its calibrated σ
#: ranked the errors as well as independent samples did (Spearman 0.385 against 0.392, same mean)
_BRANCHED_DDIM = {**_STOCHASTIC_DDIM, "branch_t": 0.4}
#: 3D-consistent reconstruction (TV along the slice axis in the data-consistency step), as a
#: multiple of the TV baseline's tuned weight, chosen on validation subjects
#: (heudiconv-axasc35, cranium's held-out slab): resources/results/volume/README.md
THROUGH_PLANE = {"mri": 1.0, "ct": 4.0}
#: MRI's sampling steps (DDIM): a plain reconstruction, and a run with uncertainty (--samples >= 2),
#: whose σ calibration was fitted at 25 steps
MRI_STEPS = 50
CALIBRATED_STEPS = 25
#: CT's sampling steps for noiseless sparse views (no dose setting); low-dose tasks keep 25: on
#: cranium's validation slab 50 steps gained 1.5-2.0 dB at 30, 60 and 120 views, on every slice,
#: but lost 0.38 dB at 25 % dose, where more steps follow the noisy data further
#: (resources/results/diffusion-defaults.md)
CT_SPARSE_VIEW_STEPS = 50


def _ct_task_defaults(settings: MeasurementSettings) -> dict[str, Any]:
    return {"steps": CT_SPARSE_VIEW_STEPS} if settings.dose is None else {}


_NOISE_START = {"noise_start": True, "noise_start_scale": 0.9, "steps": 1, "ensemble": 4, "wiener": True}

REGISTRY: dict[str, Modality] = {
    m.name: m
    for m in (
        # MRI: dds-tv with its weight chosen per scan, and the result blended with TV by a weight
        # fitted per scan to a full-length run on held-out k-space (blend_tv). Measured on the
        # validation subjects dipy-t1 and heudiconv-axasc35, 4x: TV 28.00 dB, DDS 27.30, dds-tv
        # 27.61, dds-tv + blend 28.05 (resources/results/diffusion-defaults.md).
        # With samples >= 2 (the user asks for uncertainty): DDIM with eta = 1 (DDPM's noise level).
        # On the validation subjects its σ ranked the errors best (Spearman 0.32 against 0.26 for
        # symmetric pairs and 0.19 for the SDE, all calibrated to ~94-95 % by their conformal scale;
        # PSNR of the mean within 0.05 dB); branched at t = 0.4 it costs half and, with the prior's
        # σ model, ranks them as well (0.385 against 0.392): resources/results/uncertainty/.
        # 50 steps (session 14): the reconstruction was still improving at the last of 25 steps; on
        # the validation subjects the default scored 28.64 dB at 4x with 50 steps against 28.19 with
        # 25 (8x: 24.77 against 24.56; DDS alone 28.21 / 27.58, 100 steps 28.42), for 1.6x the time
        # (resources/results/diffusion-defaults.md). Uncertainty runs keep 25 steps: their σ scale
        # and out-of-domain thresholds were fitted there.
        Modality("mri", BUILDERS["mri"], "zero-filled", "colin27", "4x,8x",
                 {**_SYMMETRIC_DDIM, "guidance": "dds-tv", "through_plane": THROUGH_PLANE["mri"], "blend_tv": True,
                  "steps": MRI_STEPS},
                 "mri-brain.safetensors", ("mri",),
                 input_method="zero-filled", uncertainty_defaults={**_BRANCHED_DDIM, "steps": CALIBRATED_STEPS}),
        # CT: DDS, blended with TV by a weight fitted per scan to a full-length run on held-out
        # views (blend_tv): on the validation slab it keeps DDS's 44.55 dB (TV 41.37; weight 1);
        # on an abdomen the head prior never saw it leans on TV instead of losing to it.
        # CT keeps symmetric DDIM pairs for uncertainty too. Compared on the validation slab
        # (3 slices, K = 8 items each): DDIM eta = 1 samples rank the errors better by their raw
        # spread (Spearman 0.54 against 0.37), but with the prior's σ model (disagreement with TV)
        # both reach 0.70-0.72, and the pairs' mean is 1.2 dB better (36.74 against 35.58 dB):
        # resources/results/uncertainty/README.md.
        # 50 steps on noiseless views, 25 with dose noise and with uncertainty (CT_SPARSE_VIEW_STEPS).
        Modality("ct", BUILDERS["ct"], "FBP", "cranium", "views=30,views=60,views=120,dose=0.25",
                 {**_SYMMETRIC_DDIM, "guidance": "dds", "cg_iters": 10, "through_plane": THROUGH_PLANE["ct"],
                  "blend_tv": True},
                 "ct-head.safetensors", ("ct",),
                 uncertainty_defaults={"steps": CALIBRATED_STEPS}, task_defaults=_ct_task_defaults),
        # A = I: start at the noise level (diffusion.noise_start), symmetric pairs x 4 flips, one
        # step: 8 network evaluations, with the denoising prior (mri-brain's real channel trained
        # on the noise levels denoising enters at). Entered at the matched level (x1.0) and
        # refined by Wiener for every noise but white Gaussian: on 5 validation slices sigma = 0.1
        # x0.9 30.62 dB, x1.0 30.79, x1.1 30.76, x1.0 + Wiener 30.48; correlated x1.0 + Wiener
        # 26.08, without 25.66 (resources/results/denoise-test/tuning.md). Other priors of MRI and
        # CT (mri-brain: 2 channels read a real image as real + 0j) can be chosen with --model.
        Modality("denoise", BUILDERS["denoise"], "noisy", "colin27",
                 "sigma=0.05,sigma=0.1,noise=poisson,noise=correlated",
                 {**_SYMMETRIC_DDIM, "guidance": "projection", **_NOISE_START, "noise_start_scale": 1.0,
                  "wiener": "auto"}, "mri-brain-denoise.safetensors", ("mri", "ct")),
        # log-speckle is additive in the B-mode domain: denoised from its level like denoising,
        # with the echo prior (one subject: resources/models/us-echo.md). It enters 1.5x above
        # the log-speckle std (skewed, heavier than Gaussian): chosen on B-mode-like images
        # simulated from the MRI validation subjects (x1.0 34.61 dB, x1.5 37.27, x2 36.70, x3
        # 35.73; TV 37.28), never on the echo frames.
        Modality("ultrasound", BUILDERS["ultrasound"], "B-mode", "echo", "looks=1",
                 {**_SYMMETRIC_DDIM, "guidance": "projection", **_NOISE_START, "noise_start_scale": 1.5},
                 "us-echo.safetensors", ("ultrasound",)),
    )
}
assert tuple(REGISTRY) == MODALITIES  # one list of modalities


def get(name: str) -> Modality:
    """The modality called ``name``, or a one-sentence error."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise SettingsError(f"unknown modality {name!r}; choose one of {', '.join(REGISTRY)}") from None


def suggest_task(volume: Volume) -> tuple[str, bool]:
    """``(modality, simulate)`` a scan starts in, in the CLI and the viewer alike.

    Raw k-space: reconstruct it as measured. An image-only MR or CT scan can only be the
    ground truth of a simulation. NIfTI records no modality; such images are nearly always
    MRI (the bundled T1 sample is one), so they start as simulated MRI. Ultrasound images
    are despeckled as they are; anything else is simulated denoising.
    """
    if volume.kspace is not None:
        return "mri", False
    if volume.units == "HU" or volume.modality == "CT":
        return "ct", True
    if volume.modality == "MR" or volume.source_format == "nifti":
        return "mri", True
    if volume.modality == "US":
        return "ultrasound", False
    return "denoise", True
