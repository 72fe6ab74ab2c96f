"""The summary of a run (:class:`ReconRun`): every method's images in the input's units,
working-domain metrics against the reference, the diffusion σ's calibration and
out-of-domain check, and the provenance.

:class:`RunScores` collects each batch as :class:`~diffrecon.reconstruct.Reconstruction`
produces it and builds the summary at the end; the run API (``reconstruct.py``) streams
the events, this module scores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import __version__
from .measurements import ProblemSource, ReconProblem
from .metrics import evaluate, evaluate_slices

if TYPE_CHECKING:
    from .diffusion.checkpoint import Prior
    from .reconstruct import DiffusionSetup, ReconRequest

#: the diffusion method's name among the methods of a request (the others are classical baselines)
DIFFUSION = "diffusion"
#: pixels the calibration figures count: the object, not the air around it
CALIBRATION_OBJECT_FRACTION = 0.05


@dataclass
class MethodOutcome:
    name: str
    volume: np.ndarray  # (n, H, W) float32 in the input's units
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] | None = None  # volume-level, working domain
    per_slice: list[dict[str, float]] | None = None
    variance: np.ndarray | None = None  # (n, H, W) in the input's units squared (diffusion, K > 1)
    calibration: dict[str, Any] | None = None  # against the reference, over the object
    model: dict[str, Any] | None = None  # the prior a diffusion result came from
    sigma_calibration: dict[str, Any] | None = None  # the conformal scale applied to σ (None: uncalibrated)
    out_of_domain: dict[str, Any] | None = None  # score, threshold, warning (diffusion with a calibrated σ)
    normalised_errors: np.ndarray | None = None  # |error| / σ over the object's pixels (with a reference)
    object_pixels: list[int] | None = None  # per slice, its share of normalised_errors (in slice order)

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
    settings: dict[str, Any]  # the measurement settings as run (measured MRI: the file's mask)
    provenance: dict[str, Any] = field(default_factory=dict)  # ReconRequest.provenance() as run

    def report(self) -> dict[str, Any]:
        """JSON-able summary: settings, per-method metrics and timings (and the out-of-domain
        warning, when the diffusion method's σ says the scan is unlike the prior's data)."""
        warning = (self.provenance.get("out_of_domain") or {}).get("warning")
        return {
            "diffrecon_version": __version__,
            **({"warnings": [warning]} if warning else {}),
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
                    **({"sigma_calibration": o.sigma_calibration} if o.sigma_calibration is not None else {}),
                    **({"out_of_domain": o.out_of_domain} if o.out_of_domain is not None else {}),
                }
                for name, o in self.outcomes.items()
            },
        }



class RunScores:
    """Working-domain magnitudes per method over the batches, scored at the end."""

    def __init__(self, source: ProblemSource, methods: list[str]):
        self.source, self.methods = source, methods
        self.observed: list[np.ndarray] = []
        self.observed_w: list[np.ndarray] = []
        self.reference_w: list[np.ndarray] = []
        self.has_reference = True
        self.outputs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        self.working: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        self.stds: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        self.stds_w: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        self.adaptations: list[dict[str, Any]] = []  # per batch, the diffusion method's own choices

    def add_problem(self, problem: ReconProblem) -> np.ndarray:
        """Keep a batch's input and reference; return the input in the input's units."""
        crop = self.source.working_reference_crop
        observed = self.source.to_volume_units(problem.observed)
        self.observed.append(observed)
        self.observed_w.append(_magnitude(crop(problem.observed)))
        if problem.reference is None:
            self.has_reference = False
        else:
            self.reference_w.append(_magnitude(crop(problem.reference)))
        return observed

    def add(self, method: str, x: torch.Tensor, variance: torch.Tensor | None = None
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """Keep a method's batch result; return it (and its std) in the input's units."""
        image = self.source.to_volume_units(x)
        self.outputs[method].append(image)
        self.working[method].append(_magnitude(self.source.working_reference_crop(x)))
        if variance is None:
            return image, None
        std = self.source.std_in_volume_units(x, variance)
        self.stds[method].append(std)
        self.stds_w[method].append(self.source.working_reference_crop(variance.clamp_min(0).sqrt())[:, 0].float().numpy())
        return image, std

    def run(self, seconds: dict[str, float], request: ReconRequest,
            sigma_calibration: dict[str, Any] | None = None) -> ReconRun:
        source, diffusion = self.source, request.diffusion
        ref = np.concatenate(self.reference_w) if self.has_reference and self.reference_w else None
        outcomes = {}
        for m in self.methods:
            est = np.concatenate(self.working[m])
            outcome = MethodOutcome(
                m,
                np.concatenate(self.outputs[m]),
                seconds.get(m, 0.0),
                params=diffusion.options.to_dict() if m == DIFFUSION and diffusion else dict(request.params.get(m) or {}),
                metrics=evaluate(ref, est) if ref is not None else None,
                per_slice=_tag_slices(evaluate_slices(ref, est), source.slice_index) if ref is not None else None,
            )
            if m == DIFFUSION and diffusion is not None:
                outcome.model = diffusion.describe()
                if self.adaptations:
                    outcome.params["adaptation"] = self.adaptations
                if self.stds[m]:
                    outcome.variance = np.square(np.concatenate(self.stds[m])).astype(np.float32)
                    std_w = np.concatenate(self.stds_w[m])
                    outcome.sigma_calibration = sigma_calibration
                    outcome.out_of_domain = _out_of_domain(est, std_w, sigma_calibration, diffusion, self.adaptations)
                    if ref is not None:
                        from .diffusion.calibration import CURVE_LEVELS, coverage_curve, normalised_errors
                        from .diffusion.uncertainty import calibration, ideal_coverage

                        obj = ref > CALIBRATION_OBJECT_FRACTION * float(ref.max())
                        outcome.calibration = dict(calibration(ref, est, std_w, mask=obj))
                        outcome.normalised_errors = normalised_errors(ref, est, std_w, obj).astype(np.float32)
                        outcome.object_pixels = [int(n) for n in obj.reshape(len(obj), -1).sum(1)]
                        outcome.calibration["curve"] = {
                            "nominal": list(CURVE_LEVELS), "observed": coverage_curve(outcome.normalised_errors)}
                        # the yardstick assumes independent, unscaled samples
                        if not diffusion.options.symmetric and sigma_calibration is None:
                            outcome.calibration["ideal_coverage_2sigma"] = ideal_coverage(diffusion.options.samples)
            outcomes[m] = outcome
        observed_metrics = evaluate(ref, np.concatenate(self.observed_w)) if ref is not None else None
        provenance = {**request.provenance(), "settings": source.settings.to_dict(),
                      "slices": [int(s) for s in source.slice_index]}
        diffusion_outcome = outcomes.get(DIFFUSION)
        if diffusion_outcome is not None and diffusion_outcome.variance is not None:
            provenance["sigma_units"] = request.volume.units or "a.u."
            provenance["sigma_calibration"] = sigma_calibration or {"method": "none", "note": uncalibrated_note(request)}
            if diffusion_outcome.out_of_domain is not None:
                provenance["out_of_domain"] = diffusion_outcome.out_of_domain
        return ReconRun(source.slice_index, np.concatenate(self.observed), outcomes, observed_metrics,
                        source.settings.to_dict(), provenance)


def resolve_calibration(request: ReconRequest) -> tuple[dict[str, Any] | None, float]:
    """The prior's conformal σ scale for this task and sampler, as provenance, and the factor."""
    setup, modality = request.diffusion, request.settings.modality
    cal, missing = _calibration_entry(request)
    if setup is None or cal is None or not _fitted_for(cal, setup.prior):
        return None, 1.0
    from .diffusion.calibration import task_key

    record = cal.provenance(extrapolated_from=missing)
    record["applied_to"] = task_key(modality, request.settings)
    fitted_steps = cal.sampler.get("steps")
    if fitted_steps is not None and int(fitted_steps) != setup.options.steps:
        # σ's spread depends on the number of steps (6 steps spread about twice as far as 25):
        # the scale still applies as the best estimate there is; the σ out-of-domain test does not
        record["steps_note"] = (f"fitted at {int(fitted_steps)} steps, applied to a run of {setup.options.steps}: "
                                f"σ's scale is approximate and σ's out-of-domain test is not made")
        record["run_steps"] = setup.options.steps
    record["ood_threshold"] = cal.ood_threshold
    if cal.holdout_threshold is not None:
        record["holdout_threshold"] = cal.holdout_threshold
    if cal.intensity_reference is not None and cal.intensity_threshold is not None:
        record["intensity_reference"] = cal.intensity_reference
        record["intensity_threshold"] = cal.intensity_threshold
    scale = float(cal.scale)
    if through_plane_is_on(request):
        # the volume factor brings σ back to the single-slice level, so σ's out-of-domain threshold holds as fitted
        scale, volume_record = cal.volume_scale()
        record.update(volume_record, scale=scale)
    return record, float(scale)


def through_plane_is_on(request: ReconRequest) -> bool:
    """Does this run tie slices together (a volume of several slices with a through-plane weight),
    as no single-slice calibration run did?"""
    setup = request.diffusion
    if setup is None or setup.options.through_plane <= 0:
        return False
    return int(np.arange(request.volume.n_slices)[request.slices].size) > 1


def uncalibrated_note(request: ReconRequest) -> str:
    """Why σ is the raw spread: no scale for this task and sampler, or (a pair with a low-noise
    expert) a scale fitted with other weights of the prior, which :func:`resolve_calibration` refuses."""
    cal, _ = _calibration_entry(request)  # again: only a run left uncalibrated asks why
    if request.diffusion is not None and cal is not None and not _fitted_for(cal, request.diffusion.prior):
        fitted = (cal.with_prior or {}).get("path") or "another prior"
        return (f"the low-noise expert's σ scale was fitted with {fitted}, not these weights (a retrained "
                f"or another prior; refit the pair: README, Uncertainty): σ is the raw spread of the samples")
    return "no calibration of this prior for this task and sampler: σ is the raw spread of the samples"


def _calibration_entry(request: ReconRequest) -> tuple[Any, str | None]:
    """The σ calibration entry for this run's task and sampler, and what it was extrapolated
    from: the prior's own, or with a low-noise expert the pair's (in the expert's file);
    ``(None, None)`` when the run calibrates nothing."""
    setup = request.diffusion
    if setup is None or DIFFUSION not in request.methods or not setup.calibrate:
        return None, None
    from .diffusion.calibration import lookup

    metadata = setup.prior.metadata
    if setup.options.low_noise_expert:  # σ of the pair was fitted for the pair: its scale is in the expert's file
        from .diffusion.experts import load_expert

        metadata = load_expert(setup.options.low_noise_expert, setup.prior).metadata
    return lookup(metadata, request.settings.modality, request.settings, setup.options)


def _fitted_for(cal: Any, prior: Any) -> bool:
    """Was a pair's scale fitted with this prior? (An expert's file holds the scale of the pair
    with the prior it was made for; with other weights, e.g. a retrained prior or the user's
    own, that scale would be silently wrong, so σ stays uncalibrated instead.)"""
    wanted = (cal.with_prior or {}).get("weights_sha256")
    if not wanted or not getattr(prior, "path", None) or not Path(prior.path).is_file():
        return True  # a prior's own scale, or one built in memory: nothing to check against
    from .diffusion.checkpoint import weights_digests

    return wanted in weights_digests(prior.path, prior.metadata)


def _out_of_domain(estimate: np.ndarray, std: np.ndarray, sigma_calibration: dict[str, Any] | None,
                   diffusion: DiffusionSetup, adaptations: list[dict[str, Any]] | None = None
                   ) -> dict[str, Any] | None:
    """The out-of-domain scores of a run and, above a calibrated threshold, the warning sentence."""
    from .diffusion.adaptation import SELECTION_STEPS
    from .diffusion.calibration import holdout_score, intensity_distance, ood_score

    cal = sigma_calibration or {}
    score = ood_score(estimate, std)
    # a run of other length than the calibration's: σ's threshold does not apply (resolve_calibration)
    threshold = None if "run_steps" in cal else cal.get("ood_threshold")
    out: dict[str, Any] = {"score": score, "threshold": threshold, "warning": None}
    fired = threshold is not None and np.isfinite(score) and score > float(threshold)
    held = holdout_score(adaptations)
    if held is not None and int(cal.get("run_steps", SELECTION_STEPS)) >= SELECTION_STEPS:
        # (the hold-out runs are min(steps, SELECTION_STEPS) long: shorter ones score worse)
        out["holdout_score"] = held
        out["holdout_threshold"] = cal.get("holdout_threshold")
        fired = fired or (out["holdout_threshold"] is not None and held > float(out["holdout_threshold"]))
    if cal.get("intensity_reference") is not None:
        out["intensity_score"] = intensity_distance(estimate, cal["intensity_reference"])
        out["intensity_threshold"] = cal.get("intensity_threshold")
        fired = fired or out["intensity_score"] > float(cal["intensity_threshold"])
    if fired:
        out["warning"] = out_of_domain_sentence(diffusion.prior)
    return out


def out_of_domain_sentence(prior: "Prior") -> str:
    """The one sentence a user sees when a scan looks unlike the prior's training data."""
    anatomy = {"mri": "brain MRI", "ct": "head CT", "ultrasound": "ultrasound"}.get(prior.modality, prior.modality)
    return (f"this scan looks unlike the {anatomy} the prior learned from (its posterior spread, its hold-out fit "
            f"or its intensities are far from those of the calibration scans); trust the classical baseline more")


def _magnitude(x: torch.Tensor) -> np.ndarray:
    x = x[:, 0]
    return (x.abs() if x.is_complex() else x).float().numpy()


def _tag_slices(rows: list[dict[str, float]], index: np.ndarray) -> list[dict[str, float]]:
    for row, s in zip(rows, index):
        row["slice"] = int(s)
    return rows
