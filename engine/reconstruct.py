"""Run reconstruction methods over the chosen slices of a volume, and score them.

This is the engine behind ``diffrecon reconstruct`` (and later the viewer's baseline
pane and ``diffrecon bench``): a :class:`~diffrecon.measurements.ProblemSource` yields
batches of problems, every method solves the *same* measurements, and results come
back in the input's units together with working-domain metrics against the reference,
when one is known.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import __version__
from .errors import SettingsError
from .measurements import ProblemSource, ReconProblem
from .metrics import evaluate, evaluate_slices

CLASSICAL_METHODS = ("zero-filled", "fbp", "tv", "l1-wavelet", "median", "bm3d")
#: which methods make sense for which modality (the first is the "input" image's method)
METHODS_FOR = {
    "mri": ("zero-filled", "tv", "l1-wavelet"),
    "ct": ("fbp", "tv", "l1-wavelet"),
    "denoise": ("median", "tv", "bm3d"),
    "ultrasound": ("median", "tv", "bm3d"),
}


def solve(method: str, problem: ReconProblem, params: dict[str, Any] | None = None) -> torch.Tensor:
    """One method on one batch: a working-domain image ``(B, 1, H, W)``."""
    from .baselines import run_baseline

    if method not in CLASSICAL_METHODS:
        raise SettingsError(f"unknown method {method!r}; choose from {', '.join(CLASSICAL_METHODS)}")
    if method not in METHODS_FOR[problem.modality]:
        raise SettingsError(
            f"{method} does not apply to {problem.modality}; use one of {', '.join(METHODS_FOR[problem.modality])}"
        )
    return run_baseline(method, problem.operator, problem.y, modality=problem.modality, params=params,
                        noise_level=problem.noise_level)


@dataclass
class MethodOutcome:
    name: str
    volume: np.ndarray  # (n, H, W) float32 in the input's units
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] | None = None  # volume-level, working domain
    per_slice: list[dict[str, float]] | None = None

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
) -> ReconRun:
    """Solve every batch with every method; ``progress(n_slices_done)`` after each batch."""
    methods = list(dict.fromkeys(methods))
    params = params or {}
    outputs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    working: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
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
        outcomes[m] = MethodOutcome(
            m,
            np.concatenate(outputs[m]),
            seconds[m],
            params=dict(params.get(m) or {}),
            metrics=evaluate(ref, est) if ref is not None else None,
            per_slice=_tag_slices(evaluate_slices(ref, est), source.slice_index) if ref is not None else None,
        )
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
