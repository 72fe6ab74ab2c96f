"""The engine work behind the viewer, as plain generators (no Qt): they run on worker threads.

Each job turns a volume and a :class:`RunRequest` into display-ready numpy images in
the volume's own units (HU for CT), batch by batch or step by step, and checks a
``cancelled()`` callable between units of work so that a cancel takes effect within
one sampling step. Metrics are computed in the engine's working domain, exactly as
``diffrecon reconstruct`` computes them, so the viewer's table matches the CLI's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.errors import DiffreconError
from diffrecon.io.volume import Volume
from diffrecon.measurements import MeasurementSettings, ProblemSource, ReconProblem
from diffrecon.metrics import evaluate

Cancelled = Callable[[], bool]


@dataclass
class RunRequest:
    """Everything one Run needs; also what export records as provenance."""

    settings: MeasurementSettings
    simulate: bool
    slices: list[int]  # in processing order (the slice on screen first)
    baseline: str | None = "tv"
    options: DiffusionOptions = field(default_factory=DiffusionOptions)
    model: Path | None = None
    batch_size: int = 4

    def provenance(self) -> dict:
        return {
            "settings": self.settings.to_dict(),
            "simulate": self.simulate,
            "slices": sorted(int(s) for s in self.slices),
            "baseline": self.baseline,
            "diffusion": self.options.to_dict(),
            "model": None if self.model is None else str(self.model),
        }


@dataclass
class SliceImages:
    """Display images for some slices: ``images[i]`` is slice ``slices[i]``, in volume units."""

    layer: str  # "input" or "baseline" (see session.LAYERS)
    slices: np.ndarray
    images: np.ndarray  # (B, H, W) float32
    reference: np.ndarray | None = None  # (B, H, W) ground truth in volume units, when known


@dataclass
class DisplayFrame:
    """One sampling step, ready to draw (volume units)."""

    step: int  # within this batch, 1-based
    total: int  # steps per batch
    done_steps: int  # over the whole run, including this one
    total_steps: int  # over the whole run
    slices: np.ndarray
    estimate: np.ndarray  # (B, H, W): the x0 estimate (mean over samples)
    sample: np.ndarray  # (B, H, W): the first sample's noisy state x_t
    sigma: np.ndarray | None  # (B, H, W): per-pixel std over samples (None for one sample)
    t: float
    elapsed: float  # seconds since the run started

    @property
    def eta_seconds(self) -> float:
        return self.elapsed / max(self.done_steps, 1) * (self.total_steps - self.done_steps)


@dataclass
class JobSummary:
    """What a finished job reports: metrics per pane name (None without a reference)."""

    metrics: dict[str, dict[str, float]]
    seconds: float
    slices: np.ndarray


def make_source(volume: Volume, settings: MeasurementSettings, simulate: bool, slices: list[int]) -> ProblemSource:
    return ProblemSource(volume, settings, slices=list(slices), simulate=simulate)


def batches_of(slices: list[int], size: int) -> list[np.ndarray]:
    return [np.asarray(slices[i : i + size]) for i in range(0, len(slices), max(1, size))]


def _magnitude(x: torch.Tensor) -> np.ndarray:
    x = x[:, 0]
    return (x.abs() if x.is_complex() else x).float().numpy()


class _MetricAccumulator:
    """Working-domain magnitudes per pane, concatenated over batches, scored at the end."""

    def __init__(self, source: ProblemSource):
        self.source = source
        self.reference: list[np.ndarray] = []
        self.estimates: dict[str, list[np.ndarray]] = {}
        self.has_reference = True

    def add_reference(self, problem: ReconProblem) -> None:
        if problem.reference is None:
            self.has_reference = False
        else:
            self.reference.append(_magnitude(self.source.working_reference_crop(problem.reference)))

    def add(self, name: str, image: torch.Tensor) -> None:
        self.estimates.setdefault(name, []).append(_magnitude(self.source.working_reference_crop(image)))

    def result(self) -> dict[str, dict[str, float]]:
        if not self.has_reference or not self.reference:
            return {}
        ref = np.concatenate(self.reference)
        return {name: evaluate(ref, np.concatenate(parts)) for name, parts in self.estimates.items()}


def reference_images(source: ProblemSource, problem: ReconProblem) -> np.ndarray | None:
    return None if problem.reference is None else source.to_volume_units(problem.reference)


def input_images(volume: Volume, settings: MeasurementSettings, simulate: bool, slices: list[int],
                 cancelled: Cancelled, batch_size: int = 8) -> Iterator[SliceImages]:
    """The measured input image (zero-filled / FBP / noisy) and the reference, batch by batch."""
    source = make_source(volume, settings, simulate, slices)
    for idx in batches_of(list(source.slice_index), batch_size):
        if cancelled():
            return
        # inference mode per batch, never held across a yield (it would leak into the consumer)
        with torch.inference_mode():
            problem = source.problem(idx)
            images = SliceImages("input", idx, source.to_volume_units(problem.observed), reference_images(source, problem))
        yield images


def baseline_images(volume: Volume, request: RunRequest, cancelled: Cancelled) -> Iterator[SliceImages | JobSummary]:
    """The run's input images and classical baseline per batch, then the input's and baseline's metrics.

    The input is re-sent for the run's slices: its noise scale can depend on which slices
    are chosen (denoising), so the input pane shows exactly what the methods solved.
    """
    from diffrecon.reconstruct import solve

    start = time.perf_counter()
    source = make_source(volume, request.settings, request.simulate, request.slices)
    scores = _MetricAccumulator(source)
    for idx in batches_of(list(source.slice_index), request.batch_size):
        if cancelled():
            return
        with torch.inference_mode():  # per batch, never held across a yield
            problem = source.problem(idx)
            scores.add_reference(problem)
            scores.add("input", problem.observed)
            reference = reference_images(source, problem)
            images = SliceImages("input", idx, source.to_volume_units(problem.observed), reference)
        yield images
        if request.baseline:
            with torch.inference_mode():
                estimate = solve(request.baseline, problem)
                scores.add("baseline", estimate)
                images = SliceImages("baseline", idx, source.to_volume_units(estimate), reference)
            yield images
    yield JobSummary(scores.result(), time.perf_counter() - start, np.asarray(source.slice_index))


# Priors are cached by path and modification time: loading once per session, not per Run.
_PRIOR_CACHE: dict[tuple[str, float], object] = {}
_PRIOR_LOCK = threading.Lock()


def cached_prior(path: Path):
    from diffrecon.diffusion.checkpoint import load_prior

    path = Path(path)
    if not path.is_file():
        raise DiffreconError(f"{path}: no such prior file")
    key = (str(path.resolve()), path.stat().st_mtime)
    with _PRIOR_LOCK:
        if key not in _PRIOR_CACHE:
            _PRIOR_CACHE.clear()  # one prior in memory at a time
            _PRIOR_CACHE[key] = load_prior(path)
        return _PRIOR_CACHE[key]


def diffusion_frames(volume: Volume, request: RunRequest, cancelled: Cancelled) -> Iterator[DisplayFrame | JobSummary]:
    """Stream the diffusion reconstruction step by step over every batch, then a summary."""
    from diffrecon.diffusion.reconstruction import stream_reconstruction
    from diffrecon import modalities
    from diffrecon.reconstruct import solve

    if request.model is None:
        raise DiffreconError("no diffusion prior is chosen; pick a model file in the Model box")
    start = time.perf_counter()
    prior = cached_prior(request.model)
    source = make_source(volume, request.settings, request.simulate, request.slices)
    batches = batches_of(list(source.slice_index), request.batch_size)
    total_steps = int(request.options.steps) * len(batches)  # corrected by the first frame's own total
    done = 0
    scores = _MetricAccumulator(source)
    for idx in batches:
        if cancelled():
            return
        with torch.inference_mode():
            problem = source.problem(idx)
            hot = None
            if request.options.hot_start:  # the hot start enters from the classical estimate
                hot = solve(request.baseline or modalities.get(problem.modality).hot_start_baseline, problem)
        scores.add_reference(problem)
        frames = stream_reconstruction(problem, prior, request.options, baseline=hot)
        last = None
        try:
            for frame in frames:
                if done == 0:
                    total_steps = int(frame.total) * len(batches)
                done += 1
                last = frame
                with torch.inference_mode():
                    sigma = None if frame.variance is None else source.std_in_volume_units(frame.x0, frame.variance)
                    display = DisplayFrame(
                        step=frame.step, total=frame.total, done_steps=done, total_steps=total_steps,
                        slices=idx, estimate=source.to_volume_units(frame.x0.detach()),
                        sample=source.to_volume_units(frame.x_t.detach()), sigma=sigma, t=float(frame.t),
                        elapsed=time.perf_counter() - start,
                    )
                # Yield outside the `with`: a generator suspended inside inference_mode would
                # leave the consumer's thread in inference mode (and leak it if abandoned).
                yield display
                if cancelled():
                    return
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # stops the sampler between steps; nothing is left half-done
        if last is not None:
            scores.add("diffusion", last.x0.detach())
    yield JobSummary(scores.result(), time.perf_counter() - start, np.asarray(source.slice_index))
