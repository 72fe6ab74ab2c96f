"""A σ a reader can take at its word: split-conformal scaling, its storage in the prior,
the hallucination map and the out-of-domain score.

**Split-conformal scale** (Angelopoulos & Bates, "A gentle introduction to conformal
prediction", 2022; Angelopoulos et al. 2022, image-to-image regression). On calibration
subjects (validation role, never test) the normalised errors ``s = |mean - truth| / σ``
over the object's pixels are collected; with ``n`` of them, ``q`` is their
``ceil((n + 1) c) / n`` empirical quantile for the coverage ``c`` wanted (0.95), and the
calibrated std is ``σ_cal = σ q / 2``, so that ``±2 σ_cal`` covers a fraction ``c`` of the
calibration pixels (and, as far as a new scan is exchangeable with them, of its pixels).
One scale per prior, task (``mri-4x``, ``ct-views60``, ...) and sampler setting: a σ from
another sampler has another scale.

The scales live in the prior file's metadata under ``sigma_calibration`` (a JSON object
keyed by task); :func:`lookup` finds the one for a run, and every front end applies it
through :mod:`diffrecon.reconstruct`, which also records it in the output's provenance.

**Out-of-domain scores**, each with a threshold per task chosen on the calibration subjects
only (:data:`OOD_MARGIN` times the largest score seen there); the warning fires when any
score is above its threshold:

* ``sigma``: the mean calibrated σ over the object divided by the object's mean intensity
  (a relative spread, unit-free): where the prior is unsure, the samples disagree;
* ``intensity`` (CT only, where intensities are physical: HU): the mean absolute
  difference between the reconstruction's intensity quantiles and those of the
  calibration scans (a 1-Wasserstein distance, working domain). An abdomen has no air
  around a skull and no bone ring; MR intensities depend on the sequence, so MRI has no
  such score. Measured on the stent abdominal CT, the σ score alone went the wrong way
  (the head prior was *more* confident on the smooth, air-free abdomen than on heads).

**Hallucination map**: pixels where the reconstruction departs from a conservative,
data-consistent estimate (the classical baseline) by more than ``k σ_cal``, or where
``σ_cal`` itself is above a threshold (a fraction of the object's intensity range).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: what ±2σ_cal should cover
TARGET_COVERAGE = 0.95
WIDTH = 2.0
#: nominal coverages the calibration curve is drawn at (bench, experiments)
CURVE_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
#: pixels the figures count: the object (reference or estimate above this fraction of its peak,
#: in the working domain), not the air around it
OBJECT_FRACTION = 0.05
#: the out-of-domain threshold is this multiple of the largest score on the calibration subjects
OOD_MARGIN = 1.5
#: metadata key in a prior file
METADATA_KEY = "sigma_calibration"
#: the sampler fields a scale belongs to: σ from any other setting is not calibrated by it
SAMPLER_FIELDS = ("sampler", "eta", "symmetric", "guidance", "branch_t")
#: hallucination map: flag |recon - baseline| > K σ_cal, or σ_cal > this fraction of the object's range
FLAG_K = 3.0
FLAG_SIGMA_FRACTION = 0.15


def task_key(modality: str, settings: Any) -> str:
    """``mri-4x``, ``ct-views60``, ``ct-dose0.25``, ``denoise-sigma0.1``...: the task a scale belongs to."""
    get = settings.get if isinstance(settings, dict) else lambda k, d=None: getattr(settings, k, d)
    if modality == "mri":
        return f"mri-{float(get('acceleration', 4)):g}x"
    if modality == "ct":
        dose = get("dose", None)
        if dose is not None and float(dose) < 1.0:
            return f"ct-dose{float(dose):g}"
        return f"ct-views{int(get('views', 0) or 0)}"
    if modality == "denoise":
        return f"denoise-sigma{float(get('noise_sigma', 0) or 0):g}"
    return modality


def normalised_errors(reference: np.ndarray, estimate: np.ndarray, std: np.ndarray,
                      mask: np.ndarray | None = None) -> np.ndarray:
    """``|estimate - reference| / std`` over the masked pixels (std floored at a tiny value)."""
    error = np.abs(np.asarray(estimate, np.float64) - np.asarray(reference, np.float64))
    sd = np.maximum(np.asarray(std, np.float64), 1e-12)
    ratio = error / sd
    return ratio[mask] if mask is not None else ratio.ravel()


def conformal_quantile(scores: np.ndarray, coverage: float = TARGET_COVERAGE) -> float:
    """The split-conformal quantile: the ``ceil((n + 1) coverage)``-th smallest score
    (infinite when there are too few scores for that coverage)."""
    s = np.sort(np.asarray(scores, np.float64).ravel())
    n = s.size
    if n == 0:
        raise ValueError("no calibration scores")
    rank = math.ceil((n + 1) * coverage)
    return float("inf") if rank > n else float(s[rank - 1])


def conformal_scale(scores: np.ndarray, coverage: float = TARGET_COVERAGE, width: float = WIDTH) -> float:
    """The factor on σ so that ``±width σ_cal`` covers ``coverage`` of the calibration pixels."""
    return conformal_quantile(scores, coverage) / width


def coverage_curve(scores: np.ndarray, levels: tuple[float, ...] = CURVE_LEVELS) -> list[float]:
    """Observed coverage of Gaussian intervals at each nominal level: the fraction of
    normalised errors within ``z(level) = Φ⁻¹((1 + level) / 2)``."""
    from scipy.stats import norm

    s = np.asarray(scores, np.float64).ravel()
    return [float(np.mean(s <= norm.ppf(0.5 + level / 2.0))) for level in levels]


def object_mask(reference_working: np.ndarray) -> np.ndarray:
    """The object's pixels: above :data:`OBJECT_FRACTION` of the (working-domain) peak."""
    ref = np.abs(np.asarray(reference_working))
    return ref > OBJECT_FRACTION * float(ref.max())


def ood_score(estimate_working: np.ndarray, std_calibrated_working: np.ndarray) -> float:
    """Mean calibrated σ over the object over the object's mean intensity (working domain)."""
    est = np.abs(np.asarray(estimate_working, np.float64))
    mask = object_mask(est)
    if not mask.any():
        return float("nan")
    return float(np.mean(np.asarray(std_calibrated_working, np.float64)[mask]) / max(np.mean(est[mask]), 1e-12))


@dataclass
class SigmaModel:
    """How a run turns its K samples into the σ that the conformal scale then calibrates.

    ``σ² = G_s[spread² v + disagree² (|m| - |b|)²] · (G_s|b| / mean_object|b|)^(2 intensity)``

    with ``v`` the samples' per-pixel variance, ``m`` their mean before any blend, ``b`` a
    data-consistent classical estimate (TV), ``G_s`` a Gaussian blur of ``smooth`` pixels.
    Why each term (measured on validation slices: resources/results/uncertainty/README.md):
    where the prior and the classical estimate disagree, one of them is wrong; K samples give
    a noisy variance and the errors come in patches (the blur); brighter tissue carries larger
    absolute errors (the unit-free intensity factor). The default is the plain spread.
    """

    spread: float = 1.0
    disagree: float = 0.0
    smooth: float = 0.0
    intensity: float = 0.0

    @property
    def needs_baseline(self) -> bool:
        return self.disagree > 0 or self.intensity > 0

    @property
    def is_plain(self) -> bool:
        return self.spread == 1.0 and not self.needs_baseline and self.smooth <= 0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SigmaModel:
        data = data or {}
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__ if k in data})

    def variance(self, variance: np.ndarray, prior_mean: np.ndarray | None = None,
                 baseline: np.ndarray | None = None) -> np.ndarray:
        """σ² from arrays ``(..., H, W)`` in one (working-domain) unit; magnitudes of the means
        are compared (the errors are measured on magnitudes)."""
        var = self.spread**2 * np.real(np.asarray(variance)).astype(np.float64)
        base = None
        if self.needs_baseline:
            if baseline is None or (self.disagree > 0 and prior_mean is None):
                raise ValueError("this σ model needs the samples' mean and the classical baseline")
            base = np.abs(np.asarray(baseline)).astype(np.float64)
        if self.disagree > 0:
            gap = np.abs(np.asarray(prior_mean)).astype(np.float64) - base
            var = var + self.disagree**2 * gap**2
        var = self._blur(var)
        if self.intensity > 0 and base is not None:  # needs_baseline made sure of it
            level = self._blur(base)
            for index in np.ndindex(*level.shape[:-2]):  # per slice: unit-free
                inside = object_mask(base[index])
                norm = float(np.mean(base[index][inside])) if inside.any() else float(np.mean(base[index]))
                var[index] = var[index] * (np.maximum(level[index], 0.0) / max(norm, 1e-12)) ** (2 * self.intensity)
        return np.maximum(var, 0.0)

    def _blur(self, x: np.ndarray) -> np.ndarray:
        if self.smooth <= 0:
            return x
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(x, sigma=(0.0,) * (x.ndim - 2) + (self.smooth, self.smooth), mode="nearest")


def holdout_score(adaptations: list[dict[str, Any]] | None) -> float | None:
    """dds-tv's hold-out (:mod:`.adaptation`): how much worse the prior's best image predicts
    the set-aside measurements than TV's, ``min_w residual(w) / residual(TV)``, the median over
    the run's batches; None without a hold-out. A prior that does not know the anatomy
    predicts unseen k-space worse than a generic smoothness prior does."""
    ratios = []
    for a in adaptations or []:
        tv = a.get("tv_holdout_residual")
        residuals = a.get("holdout_residual") or {}
        if tv and residuals:
            ratios.append(min(float(v) for v in residuals.values()) / max(float(tv), 1e-30))
    return float(np.median(ratios)) if ratios else None


#: quantile levels of the intensity score
QUANTILES = tuple(float(q) for q in np.linspace(0.01, 0.99, 99))


def intensity_quantiles(image_working: np.ndarray) -> list[float]:
    """The image's intensity quantiles (working domain, magnitude)."""
    return [float(v) for v in np.quantile(np.abs(np.asarray(image_working, np.float64)), QUANTILES)]


def intensity_distance(image_working: np.ndarray, reference: list[float]) -> float:
    """Mean absolute difference of the image's quantiles and ``reference`` (1-Wasserstein)."""
    return float(np.mean(np.abs(np.asarray(intensity_quantiles(image_working)) - np.asarray(reference))))


@dataclass
class SigmaCalibration:
    """One task's split-conformal scale, and what it was fitted on."""

    task: str
    scale: float  # σ_cal = scale * σ
    coverage: float = TARGET_COVERAGE
    width: float = WIDTH
    sampler: dict[str, Any] = field(default_factory=dict)  # SAMPLER_FIELDS (+ samples, steps) it was fitted with
    subjects: list[str] = field(default_factory=list)
    n_slices: int = 0
    n_pixels: int = 0
    raw_coverage: float | None = None  # of ±2σ before scaling, on the calibration pixels
    ood_threshold: float | None = None  # ood_score above this: the scan looks unlike the training data
    ood_scores: list[float] = field(default_factory=list)  # per calibration slice
    intensity_reference: list[float] | None = None  # pooled QUANTILES of the calibration scans (CT)
    intensity_threshold: float | None = None
    intensity_scores: list[float] = field(default_factory=list)  # per calibration slice
    holdout_threshold: float | None = None  # holdout_score above this: unlike the training data (MRI)
    holdout_scores: list[float] = field(default_factory=list)  # per calibration slice
    fitted: str = ""  # date
    command: str = ""
    sigma_model: dict[str, float] = field(default_factory=dict)  # SigmaModel fields; empty: the plain spread
    # a pair's scale (stored in a low-noise expert's file): the prior whose steps the expert ends,
    # {"path", "weights_sha256"}; None for a prior's own scale
    with_prior: dict[str, Any] | None = None
    # whole-volume runs: the through-plane term ties each slice to its neighbours and narrows the
    # samples' spread, so a scale fitted on single slices under-covers there; this factor on
    # ``scale`` was fitted on whole validation volumes (experiments.volume_sigma). None: not fitted
    volume_factor: float | None = None
    volume_fit: dict[str, Any] = field(default_factory=dict)  # its subjects, slices, coverage, command

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SigmaCalibration:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def matches(self, options: Any) -> bool:
        """Was this scale fitted with the sampler setting of ``options``?"""
        return all(_same(self.sampler.get(k), getattr(options, k, None)) for k in SAMPLER_FIELDS
                   if k in self.sampler)

    def same_steps(self, steps: Any) -> bool:
        """Was it fitted at ``steps`` sampling steps? (σ's spread depends on them.)"""
        return _same(self.sampler.get("steps"), steps)

    def replaces(self, other: SigmaCalibration) -> bool:
        """Is this a refit of ``other`` (same task, sampler setting and steps)?"""
        fields = (*SAMPLER_FIELDS, "steps")
        return self.task == other.task and all(_same(self.sampler.get(k), other.sampler.get(k)) for k in fields)

    def provenance(self, *, extrapolated_from: str | None = None) -> dict[str, Any]:
        """What an output records about the scale applied to its σ."""
        out = {"method": "split-conformal", "task": self.task, "scale": self.scale,
               "coverage": self.coverage, "width": self.width, "subjects": self.subjects,
               "n_pixels": self.n_pixels, "sampler": self.sampler, "fitted": self.fitted,
               "sigma_model": SigmaModel.from_dict(self.sigma_model).to_dict()}
        if extrapolated_from:
            out["note"] = f"no scale for {extrapolated_from}; the one fitted for {self.task} was applied"
        return out

    def volume_scale(self) -> tuple[float, dict[str, Any]]:
        """The scale of a whole-volume run (through-plane term on), and what to record about it."""
        if self.volume_factor is None:
            return self.scale, {"volume_note": "fitted on single slices; a whole-volume run's through-plane term "
                                               "narrows the spread, so σ may cover less than stated"}
        return self.scale * self.volume_factor, {"volume_factor": self.volume_factor, "volume_fit": self.volume_fit}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) < 1e-9
    return a == b


def calibrations(metadata: dict[str, Any]) -> dict[str, SigmaCalibration]:
    """Every task's scale in a prior's (decoded) metadata; malformed entries are skipped."""
    raw = metadata.get(METADATA_KEY)
    if not isinstance(raw, dict):
        return {}
    out = {}
    for key, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        try:
            cal = SigmaCalibration.from_dict(entry)
        except TypeError:
            continue
        if isinstance(cal.scale, (int, float)) and math.isfinite(cal.scale) and cal.scale > 0:
            out[str(key)] = cal
    return out


def lookup(metadata: dict[str, Any], modality: str, settings: Any, options: Any
           ) -> tuple[SigmaCalibration | None, str | None]:
    """The scale for this task and sampler: the task's own, else (``note``) another task of
    the same modality fitted with this sampler setting; ``(None, None)`` when none fits."""
    key = task_key(modality, settings)
    steps = getattr(options, "steps", None)
    fitting = [cal for cal in calibrations(metadata).values() if cal.matches(options)]
    own = [cal for cal in fitting if cal.task == key]
    if own:  # one fitted at the run's steps first (a task may hold fits at several)
        return next((cal for cal in own if cal.same_steps(steps)), own[0]), None
    others = [cal for cal in fitting if cal.task.startswith(f"{modality}-")]
    if not others:
        return None, None
    # another task's: of the same kind first (a low-dose CT's σ is wider than a noiseless one's),
    # then at the run's steps
    family = _task_family(key)
    return max(others, key=lambda cal: (_task_family(cal.task) == family, cal.same_steps(steps))), key


def _task_family(key: str) -> str:
    """``ct-dose0.25`` -> ``ct-dose``, ``mri-4x`` -> ``mri-x``: what a task's number varies."""
    return "".join(ch for ch in key if not (ch.isdigit() or ch == "."))


def hallucination_map(recon: np.ndarray, baseline: np.ndarray, sigma: np.ndarray, *, k: float = FLAG_K,
                      sigma_fraction: float = FLAG_SIGMA_FRACTION, object_mask_: np.ndarray | None = None
                      ) -> tuple[np.ndarray, float]:
    """``(flags, fraction)``: boolean map of pixels where ``|recon - baseline| > k σ`` or
    ``σ > sigma_fraction`` of the object's intensity range (inside the object), and the
    fraction of the object flagged. Arrays in one unit system (the volume's)."""
    recon = np.asarray(recon, np.float64)
    baseline = np.asarray(baseline, np.float64)
    sigma = np.asarray(sigma, np.float64)
    if object_mask_ is None:
        low = float(np.percentile(baseline, 1))
        span = float(np.percentile(baseline, 99.5)) - low
        object_mask_ = (baseline - low) > OBJECT_FRACTION * max(span, 1e-12)
    inside = object_mask_
    values = recon[inside] if inside.any() else recon.ravel()
    spread = float(np.percentile(values, 99.5) - np.percentile(values, 0.5)) if values.size else 0.0
    flags = (np.abs(recon - baseline) > k * sigma) | (sigma > sigma_fraction * max(spread, 1e-12))
    flags &= inside
    fraction = float(flags.sum() / max(int(inside.sum()), 1))
    return flags, fraction


__all__ = [
    "CURVE_LEVELS", "FLAG_K", "FLAG_SIGMA_FRACTION", "METADATA_KEY", "OOD_MARGIN", "QUANTILES", "SigmaCalibration",
    "TARGET_COVERAGE", "calibrations", "conformal_quantile", "conformal_scale", "coverage_curve", "hallucination_map",
    "holdout_score", "intensity_distance", "intensity_quantiles", "lookup", "normalised_errors", "object_mask", "ood_score", "SigmaModel",
    "task_key",
]


def store_entries(path: Any, entries: dict[str, Any]) -> None:
    """Merge calibration entries into a prior file's metadata; the weights stay byte-identical
    (the experiments that fit σ write through this). An entry replaces a fit of the same task,
    sampler setting and steps; a fit of the task at other steps stays beside it, under
    ``<task>@<steps>steps`` (the first of a task is keyed by the task alone)."""
    from .checkpoint import read_metadata, update_metadata

    table = dict(read_metadata(path).get(METADATA_KEY) or {})
    for entry in entries.values():
        new = SigmaCalibration.from_dict(entry)
        table = {k: v for k, v in table.items()
                 if not (isinstance(v, dict) and new.replaces(SigmaCalibration.from_dict(v)))}
        key = new.task if new.task not in table else f"{new.task}@{new.sampler.get('steps')}steps"
        table[key] = entry
    update_metadata(path, {METADATA_KEY: table})
