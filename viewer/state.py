"""The viewer's Qt-free state: events, the run's progress, display choices, the run request.

As napari's evented models do, the state says when it changes and the widgets listen:
:class:`Event` is a plain callback list (no Qt, so the state can be built and tested
without a display, and emitted only on the GUI thread, where every change is made).
:class:`RunState` is what the progress bar, the pane titles and the status line show of
a run; :class:`DisplayOptions` what the panes draw; :class:`RunRequest` what a Run runs
(it builds the engine's :class:`diffrecon.reconstruct.ReconRequest`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffrecon import modalities
from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.errors import DiffreconError
from diffrecon.measurements import MeasurementSettings
from diffrecon.reconstruct import DIFFUSION, DiffusionSetup, ReconRequest, with_bundled_expert

FRAME_LAYERS = ("recon", "sample", "sigma")  # what a diffusion frame fills, drawn at most 30 times a second


class Event:
    """Callbacks called in the order they connected, with the emitted arguments."""

    def __init__(self, name: str):
        self.name = name
        self._callbacks: list[Callable[..., Any]] = []

    def connect(self, callback: Callable[..., Any]) -> None:
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def disconnect(self, callback: Callable[..., Any]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        for callback in list(self._callbacks):
            callback(*args)

    def __len__(self) -> int:
        return len(self._callbacks)


class SessionEvents:
    """What a :class:`~.session.Session` announces.

    * ``layers(names, slices)``: these layers have new images for these slices;
    * ``slice(index)``: the slice on screen changed;
    * ``cursor(position)``: the 3D crosshair moved (slice, row, col voxel indices);
    * ``window(WindowLevel)``: the grey window changed;
    * ``metrics(dict)``: scores against the reference arrived (or were cleared);
    * ``run_state(RunState)``: a run started, advanced, was cancelled or ended;
    * ``cleared(names)``: these layers were emptied (a new run, new measurement settings).
    """

    def __init__(self) -> None:
        self.layers = Event("layers")
        self.slice = Event("slice")
        self.cursor = Event("cursor")
        self.window = Event("window")
        self.metrics = Event("metrics")
        self.run_state = Event("run_state")
        self.cleared = Event("cleared")


@dataclass(frozen=True)
class RunState:
    """A run as the user sees it: running or not, what it does, how far it is."""

    running: bool = False
    phase: str = ""  # before a batch's first frame, in plain words ("loading the prior mri-brain")
    step: int = 0  # within the current batch
    steps: int = 0  # per batch
    done_steps: int = 0  # over the whole run
    total_steps: int = 0
    slices_done: int = 0  # slices every method has finished
    slices_total: int = 0
    eta_seconds: float = math.nan  # for the whole run (volume), from the pace so far
    elapsed: float = 0.0
    cancelled: str = ""  # "cancelled at step 7/25" once cancelled
    finished: bool = False

    @property
    def progress_text(self) -> str:
        """What the diffusion pane's title says: "step 12/25", "loading the prior...", "done" or ""."""
        if not self.running:
            return "done" if self.finished and self.done_steps else ""
        if self.steps:
            return f"step {self.step}/{self.steps}"
        return f"{self.phase}..." if self.phase else ""

    @property
    def bar_text(self) -> str:
        """What the progress bar says: the phase before a batch's first step, else the steps and the ETA."""
        if not self.running:
            return self.cancelled or ("done" if self.finished else "")
        if self.phase or not self.done_steps:
            return f"{self.phase or 'starting'}..."
        text = f"step {self.done_steps}/{self.total_steps}"
        if self.slices_total > 1:
            text = f"slice {min(self.slices_done + 1, self.slices_total)}/{self.slices_total}, " + text
        return f"{text}   ETA {format_duration(self.eta_seconds)}"

    def advanced(self, **changes: Any) -> "RunState":
        return replace(self, **changes)


def format_duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


@dataclass
class DisplayOptions:
    error_maps: bool = False  # |image - reference| in the image panes (needs a reference)
    variance_mode: str = "sigma"  # "sigma" (std, image units) or "variance" (units squared)
    recon_shows: str = "estimate"  # "estimate" (x0) or "sample" (x_t, the noisy state)
    task: str = "mri"
    baseline_name: str | None = "TV"  # None: no baseline chosen
    measurement: str = ""  # e.g. "MRI 4x random mask"
    model_name: str | None = None  # the chosen prior (None: baseline only)


def processing_order(n_slices: int, current: int, whole_volume: bool) -> list[int]:
    """The slice on screen first, then the rest of the volume after it, then those before it."""
    if not whole_volume:
        return [current]
    return list(range(current, n_slices)) + list(range(0, current))


def simulate_for(task: str, simulate: bool, scan_has_kspace: bool) -> tuple[bool, bool]:
    """(simulate, may the user change it) for a task: an image-only MRI or any CT must be
    simulated; raw k-space reconstructs what was measured; other tasks keep the choice."""
    locked = task == "ct" or (task == "mri" and not scan_has_kspace)
    if locked:
        return True, False
    if task == "mri" and scan_has_kspace:
        return False, True
    return simulate, True


def baselines_for(task: str) -> list[str]:
    """The classical baselines the viewer offers for a task, the default first."""
    return list(modalities.get(task).baselines[1:])


@dataclass
class RunRequest:
    """Everything one Run needs; also what export records as provenance.

    The viewer runs the baseline and the diffusion as two jobs (the baseline shows while
    sampling goes on); each is one engine :class:`ReconRequest` built from this. The prior
    is named by its file: it is loaded on the worker thread, not here.
    """

    settings: MeasurementSettings
    simulate: bool
    slices: list[int]  # in processing order (the slice on screen first)
    baseline: str | None = "tv"
    options: DiffusionOptions = field(default_factory=DiffusionOptions)
    model: Path | None = None
    batch_size: int = 4
    device: str = "cpu"  # "cpu" or "cuda", resolved (diffrecon view --device)

    def provenance(self) -> dict:
        from diffrecon.diffusion.unet import fast_inference
        from diffrecon.runtime import describe_device

        return {
            "settings": self.settings.to_dict(),
            "simulate": self.simulate,
            "slices": sorted(int(s) for s in self.slices),
            "baseline": self.baseline,
            "diffusion": with_bundled_expert(self.options, self.model, self.settings).to_dict(),  # as the run has them
            "model": None if self.model is None else str(self.model),
            "device": describe_device(self.device),
            "backend": _prior_backend(),
            "network_fast_path": fast_inference(),
        }

    @property
    def hot_start_baseline(self) -> str | None:
        return self.baseline or modalities.get(self.settings.modality).hot_start_baseline

    def baseline_request(self, volume) -> ReconRequest:
        """The engine request of the baseline job (the measured input and the baseline, scored)."""
        return ReconRequest(volume, self.settings, [self.baseline] if self.baseline else [], simulate=self.simulate,
                            slices=list(self.slices), batch_size=self.batch_size, device=self.device)

    def diffusion_request(self, volume, prior) -> ReconRequest:
        """The engine request of the diffusion job, streaming every sampling step."""
        return ReconRequest(volume, self.settings, [DIFFUSION], simulate=self.simulate, slices=list(self.slices),
                            batch_size=self.batch_size, frames=True, device=self.device,
                            diffusion=DiffusionSetup(prior, self.options, self.hot_start_baseline))


@dataclass
class RunChoices:
    """The settings of a scripted run (``diffrecon view --run``); None keeps the task's default."""

    modality: str | None = None
    acceleration: float | None = None
    mask: str | None = None
    views: int | None = None
    dose: float | None = None
    noise_sigma: float | None = None
    steps: int | None = None
    samples: int | None = None
    sampler: str | None = None
    guidance: str | None = None
    seed: int | None = None
    model: Path | None = None
    baseline: str | None = None  # "none": no baseline
    whole_volume: bool = False
    independent_slices: bool = False  # whole-volume runs without the through-plane term


def request_for(volume, slice_index: int, choices: RunChoices, *, default_model=None) -> tuple[str, RunRequest]:
    """(task, request) for ``choices`` on ``volume``, with the defaults the settings panel starts
    from (the scan's suggested task, the task's measured diffusion options, its first baseline,
    its default prior); a choice that does not apply is one sentence.

    ``default_model(task)`` gives the prior when none is chosen (the viewer's resource lookup).
    """
    suggested, simulate = modalities.suggest_task(volume)
    task = choices.modality or suggested
    simulate, _ = simulate_for(task, simulate, volume.kspace is not None)
    offered = baselines_for(task)
    if choices.baseline is None:
        baseline = offered[0] if offered else None
    elif choices.baseline == "none":
        baseline = None
    elif choices.baseline in offered:
        baseline = choices.baseline
    else:
        raise DiffreconError(f"the baseline {choices.baseline!r} does not apply to {task}")
    c = choices
    settings = MeasurementSettings(
        modality=task, acceleration=4.0 if c.acceleration is None else c.acceleration, mask=c.mask or "random",
        # CT views left unset: MeasurementSettings' own rule (60 noiseless, 180 at low dose), as the CLI
        views=None if c.views is None else int(c.views), dose=c.dose if c.dose else None,
        noise_sigma=0.1 if c.noise_sigma is None else c.noise_sigma, seed=0 if c.seed is None else int(c.seed))
    measured = modalities.get(task).diffusion_defaults
    options = modalities.get(task).diffusion_options(
        settings, sampler=c.sampler or measured.get("sampler", "ddim"),
        guidance=c.guidance or measured.get("guidance", "dds"),
        # the task's steps (denoising and ultrasound take one, from the noise level; CT's depend
        # on its dose; with uncertainty the steps σ's calibration was fitted at)
        steps=None if c.steps is None else int(c.steps),
        samples=1 if c.samples is None else int(c.samples),
        seed=settings.seed, through_plane=0.0 if c.independent_slices else None)
    model = Path(c.model) if c.model is not None else (default_model(task) if default_model else None)
    request = RunRequest(settings=settings, simulate=simulate,
                         slices=processing_order(volume.n_slices, slice_index, c.whole_volume), baseline=baseline,
                         options=options, model=model, batch_size=4 if c.whole_volume else 1)
    return task, request


def _prior_backend() -> str:
    """What runs the priors' networks in this viewer (``diffrecon view --backend``)."""
    from . import engine_jobs

    return engine_jobs.PRIOR_BACKEND


