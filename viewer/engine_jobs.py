"""The viewer's engine jobs: the run API's events as display arrays (no Qt: worker threads).

Each job runs a :class:`diffrecon.reconstruct.Reconstruction` and turns its events into
display-ready numpy images in the volume's own units (HU for CT), batch by batch or step
by step, checking a ``cancelled()`` callable after every event so that a cancel takes
effect within one sampling step. The engine computes the metrics (in its working domain,
as ``diffrecon reconstruct`` does), so the viewer's table matches the CLI's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffrecon.errors import DiffreconError
from diffrecon.io.volume import Volume
from diffrecon.measurements import MeasurementSettings
from diffrecon.reconstruct import (DIFFUSION, BaselineReady, DiffusionFrame, MeasurementsReady, Reconstruction,
                                   ReconRequest, SliceDone, Summary)

from .state import RunRequest

Cancelled = Callable[[], bool]


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
class JobPhase:
    """What a job is doing before its first frame (loading the prior, a hot start...), in plain words."""

    text: str


@dataclass
class SlicesFinished:
    """Every sampling step of these slices is done (a whole-volume run fills in slice by slice)."""

    slices: np.ndarray


@dataclass
class JobSummary:
    """What a finished job reports: metrics per pane name (None without a reference)."""

    metrics: dict[str, dict[str, float]]
    seconds: float
    slices: np.ndarray
    # for the run's provenance: sigma_units, sigma_calibration, out_of_domain (diffusion with K > 1),
    # adaptation (what the hold-outs chose, per batch)
    provenance: dict | None = None


def _events(request: ReconRequest, cancelled: Cancelled) -> Iterator:
    """The run's events until the consumer's ``cancelled()``; the run is closed either way."""
    events = iter(Reconstruction(request))
    try:
        for event in events:
            yield event
            if cancelled():
                return
    finally:
        events.close()  # stops the sampler between steps; nothing is left half-done


def input_images(volume: Volume, settings: MeasurementSettings, simulate: bool, slices: list[int],
                 cancelled: Cancelled, batch_size: int = 8) -> Iterator[SliceImages]:
    """The measured input image (zero-filled / FBP / noisy) and the reference, batch by batch."""
    request = ReconRequest(volume, settings, (), simulate=simulate, slices=list(slices), batch_size=batch_size)
    if cancelled():
        return
    for event in _events(request, cancelled):
        if isinstance(event, MeasurementsReady):
            yield SliceImages("input", event.slices, event.observed, event.reference)
        elif isinstance(event, SliceDone) and event.slices[-1] == request.slices[-1]:
            return  # the preview needs no scores


def baseline_images(volume: Volume, request: RunRequest, cancelled: Cancelled) -> Iterator[SliceImages | JobSummary]:
    """The run's input images and classical baseline per batch, then the input's and baseline's metrics.

    The input is re-sent for the run's slices: its noise scale can depend on which slices
    are chosen (denoising), so the input pane shows exactly what the methods solved.
    """
    start = time.perf_counter()
    run = request.baseline_request(volume)
    if cancelled():
        return
    reference = None
    for event in _events(run, cancelled):
        if isinstance(event, MeasurementsReady):
            reference = event.reference
            yield SliceImages("input", event.slices, event.observed, reference)
        elif isinstance(event, BaselineReady):
            yield SliceImages("baseline", event.slices, event.image, reference)
        elif isinstance(event, Summary):
            result = event.run
            metrics = {}
            if result.observed_metrics is not None:
                metrics["input"] = result.observed_metrics
                metrics.update({"baseline": o.metrics for o in result.outcomes.values() if o.metrics is not None})
            yield JobSummary(metrics, time.perf_counter() - start, np.asarray(result.slices))


# Priors are cached by path and modification time: loading once per session, not per Run.
_PRIOR_CACHE: dict[tuple[str, float, str], object] = {}
_PRIOR_LOCK = threading.Lock()
#: what runs the priors' networks (``diffrecon view --backend``): torch, or onnx-int8
PRIOR_BACKEND = "torch"


def cached_prior(path: Path):
    from diffrecon.diffusion.checkpoint import load_prior

    path = Path(path)
    if not path.is_file():
        raise DiffreconError(f"{path}: no such prior file")
    key = (str(path.resolve()), path.stat().st_mtime, PRIOR_BACKEND)
    with _PRIOR_LOCK:
        if key not in _PRIOR_CACHE:
            from diffrecon.diffusion.onnx_int8 import with_backend

            _PRIOR_CACHE.clear()  # one prior in memory at a time
            _PRIOR_CACHE[key] = with_backend(load_prior(path), PRIOR_BACKEND)
        return _PRIOR_CACHE[key]


def diffusion_frames(volume: Volume, request: RunRequest,
                     cancelled: Cancelled) -> Iterator[DisplayFrame | JobPhase | SlicesFinished | JobSummary]:
    """Stream the diffusion reconstruction step by step over every batch, then a summary."""
    if request.model is None:
        raise DiffreconError("no diffusion prior is chosen; pick a model file in the Model box")
    start = time.perf_counter()
    yield JobPhase(f"loading the prior {request.model.stem}")
    hot_start_from = request.hot_start_baseline
    run = request.diffusion_request(volume, cached_prior(request.model))
    if cancelled():
        return
    preparing = JobPhase("simulating the measurements" if request.simulate else "preparing the measurements")
    yield preparing
    for event in _events(run, cancelled):
        if isinstance(event, MeasurementsReady):
            if request.options.hot_start:  # the hot start enters from the classical estimate
                name = hot_start_from.upper() if hot_start_from == "tv" else hot_start_from
                yield JobPhase(f"starting point: {name} estimate")
            elif request.options.guidance == "dds-tv" and request.options.tv_weight == "auto":
                # Short runs on part of the data come first (diffusion.adaptation); no frame until they end.
                yield JobPhase("choosing the TV weight from held-out measurements")
            else:
                yield JobPhase("first sampling step")
        elif isinstance(event, DiffusionFrame):
            frame, source = event.frame, event.source
            with torch.inference_mode():
                sigma = None if frame.variance is None else source.std_in_volume_units(frame.x0, frame.variance)
                display = DisplayFrame(
                    step=frame.step, total=frame.total, done_steps=event.done_steps, total_steps=event.total_steps,
                    slices=event.slices, estimate=source.to_volume_units(frame.x0.detach()),
                    sample=source.to_volume_units(frame.x_t.detach()), sigma=sigma, t=float(frame.t),
                    elapsed=time.perf_counter() - start,
                )
            # Yield outside the `with`: a generator suspended inside inference_mode would
            # leave the consumer's thread in inference mode (and leak it if abandoned).
            yield display
        elif isinstance(event, SliceDone):
            yield SlicesFinished(np.asarray(event.slices))
            if event.slices[-1] != run.slices[-1]:
                yield preparing  # the next batch's measurements
        elif isinstance(event, Summary):
            outcome = event.run.outcomes[DIFFUSION]
            metrics = {} if outcome.metrics is None else {"diffusion": outcome.metrics}
            provenance = event.run.provenance
            facts = {k: provenance[k] for k in ("sigma_units", "sigma_calibration", "out_of_domain") if k in provenance}
            if outcome.params.get("adaptation"):
                facts["adaptation"] = outcome.params["adaptation"]
            yield JobSummary(metrics, time.perf_counter() - start, np.asarray(event.run.slices), facts or None)
