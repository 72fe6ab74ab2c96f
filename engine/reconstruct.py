"""Run reconstruction methods over the chosen slices of a volume, and score them.

This is the engine behind ``diffrecon reconstruct`` (and later the viewer's baseline
pane and ``diffrecon bench``): a :class:`~diffrecon.measurements.ProblemSource` yields
batches of problems, every method solves the *same* measurements, and results come
back in the input's units together with working-domain metrics against the reference,
when one is known.

The ``diffusion`` method (a :class:`DiffusionSetup`: prior + options) runs
:func:`diffrecon.diffusion.reconstruction.stream_reconstruction` to its last frame: the
posterior mean is the image, and with several samples their per-pixel variance comes
back too, scored against the reference by the calibration figures of
:mod:`diffrecon.diffusion.uncertainty`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch

from . import __version__
from .errors import SettingsError
from .baselines import METHODS as CLASSICAL_METHODS  # noqa: F401 (re-exported for the CLI and viewer)
from .baselines import METHODS_FOR_MODALITY as METHODS_FOR  # noqa: F401
from .baselines import run_baseline
from .measurements import ProblemSource, ReconProblem
from .metrics import evaluate, evaluate_slices

if TYPE_CHECKING:  # torch-heavy diffusion modules load only when the method is used
    from .diffusion.checkpoint import Prior
    from .diffusion.frames import DiffusionOptions

DIFFUSION = "diffusion"
#: the prior each modality uses unless another is given (under resources/models/)
DEFAULT_PRIORS = {"mri": "mri-brain.safetensors", "ct": "ct-head.safetensors"}
#: pixels the calibration figures count: the object, not the air around it
CALIBRATION_OBJECT_FRACTION = 0.05


def solve(method: str, problem: ReconProblem, params: dict[str, Any] | None = None) -> torch.Tensor:
    """One method on one batch: a working-domain image ``(B, 1, H, W)``."""
    return run_baseline(method, problem.operator, problem.y, modality=problem.modality, params=params,
                        noise_level=problem.noise_level)


def default_prior_path(modality: str) -> Path:
    """``models/<prior>`` in the bundled resources (see :mod:`.bundled`), or a one-sentence error."""
    from .bundled import models_dir

    if modality not in DEFAULT_PRIORS:
        raise SettingsError(f"there is no default diffusion prior for {modality}; pass one with --model")
    return models_dir() / DEFAULT_PRIORS[modality]


@dataclass
class DiffusionSetup:
    """What the ``diffusion`` method runs with. ``baseline`` names the classical method
    whose result a hot start enters from (None: the problem's input image)."""

    prior: "Prior"
    options: "DiffusionOptions"
    baseline: str | None = None

    def describe(self) -> dict[str, Any]:
        """The prior's file and metadata, for provenance (``"model"``) and reports."""
        meta = self.prior.metadata
        return {
            "path": str(self.prior.path),
            "modality": self.prior.modality,
            "step": meta.get("step"),
            "format": meta.get("format"),
            "schedule": meta.get("schedule"),
            "normalisation": self.prior.normalisation,
            "unet_config": meta.get("unet_config"),
            "options": self.options.to_dict(),
            "hot_start_baseline": self.baseline if self.options.hot_start else None,
        }


def diffusion_setup(prior: "Prior", modality: str, **overrides: Any) -> DiffusionSetup:
    """``prior`` with the modality's measured options and ``overrides`` (None keeps a default),
    checked. A hot start enters from the modality's iterative baseline (TV), as the viewer's does."""
    from .diffusion.reconstruction import check_options, default_options

    options = default_options(modality, **overrides)
    check_options(options)
    return DiffusionSetup(prior, options, baseline=METHODS_FOR[modality][1])


def solve_diffusion(problem: ReconProblem, setup: DiffusionSetup):
    """The last :class:`~diffrecon.diffusion.frames.ReconFrame` of a diffusion run on ``problem``."""
    from .diffusion.reconstruction import reconstruct_to_end

    baseline = None
    if setup.options.hot_start and setup.baseline is not None:
        with torch.inference_mode():
            baseline = solve(setup.baseline, problem)
    return reconstruct_to_end(problem, setup.prior, setup.options, baseline=baseline)


def std_in_volume_units(source: ProblemSource, estimate: torch.Tensor, variance: torch.Tensor) -> np.ndarray:
    """Per-pixel std in the input's units: exact for the linear maps (MRI, CT, denoising),
    first order through the log compression of simulated ultrasound."""
    std = variance.real.clamp_min(0).sqrt().float() if variance.is_complex() else variance.clamp_min(0).sqrt().float()
    if source.settings.modality == "ultrasound" and source.simulate:
        base = estimate.abs().float() if estimate.is_complex() else estimate.float()
        return source.to_volume_units(base + std) - source.to_volume_units(base)
    return source.to_volume_units(std) - source.to_volume_units(torch.zeros_like(std))


@dataclass
class MethodOutcome:
    name: str
    volume: np.ndarray  # (n, H, W) float32 in the input's units
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] | None = None  # volume-level, working domain
    per_slice: list[dict[str, float]] | None = None
    variance: np.ndarray | None = None  # (n, H, W) in the input's units squared (diffusion, K > 1)
    calibration: dict[str, float] | None = None  # against the reference, over the object
    model: dict[str, Any] | None = None  # the prior a diffusion result came from

    @property
    def seconds_per_slice(self) -> float:
        return self.seconds / max(len(self.volume), 1)


@dataclass
class ReconRun:
    """Everything one run produced."""

    slices: np.ndarray
    observed: np.ndarray  # the input image (zero-filled / FBP / noisy) in the input's units
    outcomes: dict[str, MethodOutcome]
    observed_metrics: dict[str, float] | None
    settings: dict[str, Any]

    def report(self) -> dict[str, Any]:
        """JSON-able summary: settings, per-method metrics and timings."""
        return {
            "diffrecon_version": __version__,
            "settings": self.settings,
            "slices": [int(s) for s in self.slices],
            "input_metrics": self.observed_metrics,
            "methods": {
                name: {
                    "params": o.params,
                    "seconds": round(o.seconds, 4),
                    "seconds_per_slice": round(o.seconds_per_slice, 4),
                    "metrics": o.metrics,
                    "per_slice": o.per_slice,
                    **({"calibration": o.calibration} if o.calibration is not None else {}),
                    **({"model": o.model} if o.model is not None else {}),
                }
                for name, o in self.outcomes.items()
            },
        }


def reconstruct(
    source: ProblemSource,
    methods: Iterable[str],
    *,
    params: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    diffusion: DiffusionSetup | None = None,
) -> ReconRun:
    """Solve every batch with every method; ``progress(n_slices_done)`` after each batch.

    The ``diffusion`` method needs ``diffusion`` (its prior and options).
    """
    methods = list(dict.fromkeys(methods))
    if DIFFUSION in methods and diffusion is None:
        raise SettingsError("the diffusion method needs a prior (pass --model or install the default one)")
    params = params or {}
    outputs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    working: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    stds: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    stds_w: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    observed, observed_w, reference_w = [], [], []
    has_reference = True
    for problem in source.batches(batch_size):
        observed.append(source.to_volume_units(problem.observed))
        observed_w.append(_magnitude(source.working_reference_crop(problem.observed)))
        if problem.reference is None:
            has_reference = False
        else:
            reference_w.append(_magnitude(source.working_reference_crop(problem.reference)))
        for m in methods:
            start = time.perf_counter()
            if m == DIFFUSION:
                last = solve_diffusion(problem, diffusion)
                x = last.x0.detach()
                if last.variance is not None:
                    variance = last.variance.detach()
                    stds[m].append(std_in_volume_units(source, x, variance))
                    stds_w[m].append(source.working_reference_crop(variance.clamp_min(0).sqrt())[:, 0].float().numpy())
            else:
                with torch.inference_mode():
                    x = solve(m, problem, params.get(m))
            seconds[m] += time.perf_counter() - start
            outputs[m].append(source.to_volume_units(x))
            working[m].append(_magnitude(source.working_reference_crop(x)))
        if progress is not None:
            progress(len(problem.slices))

    outcomes = {}
    ref = np.concatenate(reference_w) if has_reference and reference_w else None
    for m in methods:
        est = np.concatenate(working[m])
        outcome = MethodOutcome(
            m,
            np.concatenate(outputs[m]),
            seconds[m],
            params=diffusion.options.to_dict() if m == DIFFUSION else dict(params.get(m) or {}),
            metrics=evaluate(ref, est) if ref is not None else None,
            per_slice=_tag_slices(evaluate_slices(ref, est), source.slice_index) if ref is not None else None,
        )
        if m == DIFFUSION:
            outcome.model = diffusion.describe()
            if stds[m]:
                outcome.variance = np.square(np.concatenate(stds[m])).astype(np.float32)
                if ref is not None:
                    from .diffusion.uncertainty import calibration, ideal_coverage

                    obj = ref > CALIBRATION_OBJECT_FRACTION * float(ref.max())
                    outcome.calibration = calibration(ref, est, np.concatenate(stds_w[m]), mask=obj)
                    if not diffusion.options.symmetric:  # the yardstick assumes independent samples
                        outcome.calibration["ideal_coverage_2sigma"] = ideal_coverage(diffusion.options.samples)
        outcomes[m] = outcome
    observed_metrics = evaluate(ref, np.concatenate(observed_w)) if ref is not None else None
    return ReconRun(source.slice_index, np.concatenate(observed), outcomes, observed_metrics,
                    source.settings.to_dict())


def _magnitude(x: torch.Tensor) -> np.ndarray:
    x = x[:, 0]
    return (x.abs() if x.is_complex() else x).float().numpy()


def _tag_slices(rows: list[dict[str, float]], index: np.ndarray) -> list[dict[str, float]]:
    for row, s in zip(rows, index):
        row["slice"] = int(s)
    return rows
