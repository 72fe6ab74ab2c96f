"""The run API: one request in, a stream of typed events out, for every front end.

A :class:`ReconRequest` names the scan and the task (volume, measurement settings, which
slices, simulate or not), the methods (classical baselines by name, and ``diffusion``
with a :class:`DiffusionSetup`: prior + options) and their options. A
:class:`Reconstruction` runs it as a generator of events:

* :class:`MeasurementsReady`: a batch of slices has its measurements (the problem, the
  unreconstructed input and the reference when one is known);
* :class:`BaselineReady`: a classical method's result for that batch;
* :class:`DiffusionFrame`: one sampling step of the diffusion method (only when the
  request asks for ``frames``: the viewer draws them, the CLI does not need them);
* :class:`SliceDone`: every method has finished the batch;
* :class:`Summary`: the whole run (:class:`ReconRun`): the images in the input's units,
  working-domain metrics against the reference, calibration of the diffusion variance,
  timings and provenance.

Every method solves the *same* measurements. Stopping the iteration (``close()``,
``break``) ends the run between two events with nothing left behind. :func:`run_to_end`
runs a request to its summary: ``diffrecon reconstruct``, ``diffrecon bench`` and the
speed benchmark use it; the viewer iterates the events and converts them to display
arrays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from . import __version__, modalities
from .baselines import METHODS as CLASSICAL_METHODS  # noqa: F401 (re-exported for the CLI and viewer)
from .baselines import METHODS_FOR_MODALITY as METHODS_FOR  # noqa: F401
from .baselines import run_baseline
from .errors import SettingsError
from .io.volume import Volume
from .measurements import MeasurementSettings, ProblemSource, ReconProblem
from .runtime import describe_device
from .run_summary import DIFFUSION, MethodOutcome, ReconRun, RunScores, resolve_calibration  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # torch-heavy diffusion modules load only when the method is used
    from .diffusion.checkpoint import Prior
    from .diffusion.options import DiffusionOptions
    from .diffusion.reconstruction import ReconFrame

#: the prior each modality uses unless another is given (under resources/models/)
DEFAULT_PRIORS = {name: m.default_prior for name, m in modalities.REGISTRY.items() if m.default_prior}


def solve(method: str, problem: ReconProblem, params: dict[str, Any] | None = None) -> torch.Tensor:
    """One method on one batch: a working-domain image ``(B, 1, H, W)``."""
    return run_baseline(method, problem.operator, problem.y, modality=problem.modality, params=params,
                        noise_level=problem.noise_level, slices=problem.slices, noise=problem.noise)


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
    #: apply the prior's split-conformal σ scale for the task (off only to fit one)
    calibrate: bool = True

    def __post_init__(self) -> None:
        self.options = with_bundled_expert(self.options, self.prior.path)

    def describe(self) -> dict[str, Any]:
        """The prior's file and metadata, for provenance (``"model"``) and reports."""
        from .diffusion.unet import fast_inference

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
            # the network's runtime: torch, or an int8 engine (diffusion.onnx_int8) standing in for it
            "backend": getattr(self.prior.model, "backend_info", {"backend": "torch"}),
            "network_fast_path": fast_inference(),
        }


def with_bundled_expert(options: "DiffusionOptions", prior_path: str | Path | None,
                        settings: MeasurementSettings | None = None) -> "DiffusionOptions":
    """``options`` with a bundled prior's own low-noise expert (:data:`.bundled.LOW_NOISE_EXPERTS`)
    for the task ``settings`` when they chose none (None; ``""`` is "off"), so that the run and
    its provenance name it. Without ``settings`` only an expert of every task is added."""
    if options.low_noise_expert is not None or options.cfg_scale is not None:
        return options
    from .bundled import bundled_low_noise_expert

    expert = bundled_low_noise_expert(prior_path, settings)
    return options if expert is None else replace(options, low_noise_expert=expert)


def diffusion_setup(prior: "Prior", modality: str, settings: MeasurementSettings | None = None,
                    **overrides: Any) -> DiffusionSetup:
    """``prior`` with the modality's measured options for the task ``settings`` and ``overrides``
    (None keeps a default), checked. A hot start enters from the modality's iterative baseline
    (TV), as the viewer's does."""
    chosen = modalities.get(modality)
    options = chosen.diffusion_options(settings, **overrides)  # DiffusionOptions checks itself
    return DiffusionSetup(prior, options, baseline=chosen.hot_start_baseline)


@dataclass
class ReconRequest:
    """What to run: the scan and task, the methods and their options.

    ``slices`` selects the slices (a Python slice or indices, in processing order).
    ``methods`` are classical baselines by name and/or ``"diffusion"`` (which needs
    ``diffusion``); none at all still measures and scores the input. ``params`` holds
    per-method parameters of the baselines. ``frames``: also stream every sampling step.
    """

    volume: Volume
    settings: MeasurementSettings
    methods: Sequence[str] = ()
    simulate: bool = False
    slices: slice | Sequence[int] | np.ndarray = field(default_factory=lambda: slice(None))
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    diffusion: DiffusionSetup | None = None
    batch_size: int = 8
    frames: bool = False
    device: str = "cpu"  # where the methods run ("cpu", "cuda"; runtime.resolve_device resolves "auto")

    def __post_init__(self) -> None:
        self.methods = tuple(dict.fromkeys(self.methods))
        if DIFFUSION in self.methods and self.diffusion is None:
            raise SettingsError("the diffusion method needs a prior (pass --model or install the default one)")
        if self.diffusion is not None:  # an expert that helps this task only (CT: noiseless), on a copy:
            # one setup may serve requests of several tasks (bench)
            options = with_bundled_expert(self.diffusion.options, self.diffusion.prior.path, self.settings)
            if options is not self.diffusion.options:
                self.diffusion = replace(self.diffusion, options=options)
        if self.batch_size < 1:
            raise SettingsError("--batch-size must be at least 1")

    def provenance(self) -> dict[str, Any]:
        """What an output records about how it was made (settings, model, version, threads)."""
        return {
            "diffrecon_version": __version__,
            "settings": self.settings.to_dict(),
            "simulate": bool(self.simulate),
            "methods": list(self.methods),
            "params": {m: dict(p) for m, p in self.params.items() if m in self.methods},
            "model": self.diffusion.describe() if self.diffusion is not None and DIFFUSION in self.methods else None,
            "threads": torch.get_num_threads(),
            "device": describe_device(self.device),
        }


@dataclass(frozen=True)
class MeasurementsReady:
    """A batch's measurements: ``problem`` (working domain), and in the input's units the
    unreconstructed ``observed`` image (zero-filled / FBP / noisy) and the ``reference``
    (None when unknown). ``source`` maps further working-domain images to the input's units."""

    source: ProblemSource
    problem: ReconProblem
    observed: np.ndarray
    reference: np.ndarray | None

    @property
    def slices(self) -> np.ndarray:
        return self.problem.slices


@dataclass(frozen=True)
class BaselineReady:
    """A classical method's result for one batch: ``image`` in the input's units, ``working``
    in the working domain."""

    method: str
    slices: np.ndarray
    image: np.ndarray
    working: torch.Tensor
    seconds: float  # this method's compute time so far


@dataclass(frozen=True)
class DiffusionFrame:
    """One sampling step of the diffusion method on one batch (working domain)."""

    source: ProblemSource
    slices: np.ndarray
    frame: ReconFrame
    done_steps: int  # over the whole run, including this one
    total_steps: int  # over the whole run
    elapsed: float  # wall seconds since the run started

    @property
    def eta_seconds(self) -> float:
        """Remaining time at the pace so far."""
        return self.elapsed / max(self.done_steps, 1) * (self.total_steps - self.done_steps)


@dataclass(frozen=True)
class SliceDone:
    """Every method has finished a batch: its images in the input's units (and the
    diffusion method's per-pixel std, with several samples)."""

    slices: np.ndarray
    images: dict[str, np.ndarray]
    std: dict[str, np.ndarray]


@dataclass(frozen=True)
class Summary:
    """The whole run: images, metrics, timings, provenance."""

    run: ReconRun


RunEvent = Union[MeasurementsReady, BaselineReady, DiffusionFrame, SliceDone, Summary]


class _Stopwatch:
    """Compute seconds per method, paused while the consumer holds an event."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, since: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - since


class Reconstruction:
    """Runs a :class:`ReconRequest`; iterate it for the events (module docstring).

    The measurement source is built when the object is made, so bad settings fail before
    any work starts.
    """

    def __init__(self, request: ReconRequest):
        self.request = request
        self.source = ProblemSource(request.volume, request.settings, slices=request.slices,
                                    simulate=request.simulate)
        self.sigma_calibration, self.sigma_scale = resolve_calibration(request)
        from .diffusion.calibration import SigmaModel

        self.sigma_model = SigmaModel.from_dict((self.sigma_calibration or {}).get("sigma_model"))

    def __len__(self) -> int:
        return len(self.source)

    def total_steps(self) -> int:
        """Sampling steps over the whole run (0 without the diffusion method)."""
        setup = self.request.diffusion
        if DIFFUSION not in self.request.methods or setup is None:
            return 0
        from .diffusion.reconstruction import run_length

        batches = -(-len(self.source) // self.request.batch_size)
        return run_length(setup.options, setup.prior.schedule, self.request.settings.modality) * batches

    def __iter__(self) -> Generator[RunEvent, None, None]:
        request, source = self.request, self.source
        methods = list(request.methods)
        scores = RunScores(source, methods)
        clock = _Stopwatch()
        started = time.perf_counter()
        total_steps, done_steps = self.total_steps(), 0
        device = torch.device(request.device)
        finished: dict[int, torch.Tensor] = {}  # diffusion results by slice: the next batches' neighbours
        for problem in source.batches(request.batch_size):
            observed = scores.add_problem(problem)
            reference = None if problem.reference is None else source.to_volume_units(problem.reference)
            yield MeasurementsReady(source, problem, observed, reference)
            problem = problem.to(device)  # events and scores get CPU tensors back
            images: dict[str, np.ndarray] = {}
            stds: dict[str, np.ndarray] = {}
            for m in methods:
                since = time.perf_counter()
                if m != DIFFUSION:
                    with torch.inference_mode():
                        x = solve(m, problem, request.params.get(m)).cpu()
                    clock.add(m, since)
                    images[m], _ = scores.add(m, x)
                    yield BaselineReady(m, problem.slices, images[m], x, clock.seconds[m])
                    continue
                last = None
                for last in self._diffusion(problem, finished):
                    clock.add(m, since)
                    done_steps += 1
                    if request.frames:
                        yield DiffusionFrame(source, problem.slices, last, done_steps, total_steps,
                                             time.perf_counter() - started)
                    since = time.perf_counter()
                assert last is not None  # at least one step always runs
                finished.update({int(s): last.x0[i].detach() for i, s in enumerate(problem.slices)})
                if last.adaptation is not None:  # what dds-tv chose for this batch, and why
                    scores.adaptations.append({"slices": [int(i) for i in problem.slices], **last.adaptation})
                images[m], std = scores.add(m, last.x0.detach(), None if last.variance is None else last.variance.detach())
                if std is not None:
                    stds[m] = std
            yield SliceDone(problem.slices, images, stds)
        yield Summary(scores.run(clock.seconds, request, self.sigma_calibration))

    def _diffusion(self, problem: ReconProblem, finished: dict[int, torch.Tensor] | None = None
                   ) -> Generator[ReconFrame, None, None]:
        """The diffusion method's frames on one batch (a hot start first solves its baseline);
        ``finished``: earlier batches' results, which a 3D-consistent run ties this batch to."""
        from .diffusion.reconstruction import stream_reconstruction

        setup = self.request.diffusion
        assert setup is not None
        baseline = None
        if setup.options.hot_start and setup.baseline is not None:
            with torch.inference_mode():
                baseline = solve(setup.baseline, problem)
        frames = stream_reconstruction(problem, setup.prior, setup.options, baseline=baseline, neighbours=finished)
        scale2 = self.sigma_scale**2
        try:
            for frame in frames:
                if frame.x0.device.type != "cpu":
                    frame = _frame_on_cpu(frame)
                if frame.done and frame.variance is not None and not self.sigma_model.is_plain:
                    # the calibrated σ model (calibration.SigmaModel) on the result; earlier
                    # frames show the scaled spread alone (a preview while sampling)
                    frame = replace(frame, variance=self._model_variance(frame, problem, baseline))
                if frame.variance is not None and scale2 != 1.0:  # σ_cal = scale σ, in every frame shown
                    frame = replace(frame, variance=frame.variance * scale2)
                yield frame
        finally:
            frames.close()  # cancellation: the sampler stops between two steps


    def _model_variance(self, frame: ReconFrame, problem: ReconProblem, hot_start: torch.Tensor | None
                        ) -> torch.Tensor:
        """The σ model's variance (before the scale) for the last frame: the classical estimate is
        the blend's (dds-tv), the hot start's when it was TV, else TV solved here (once per batch)."""
        model = self.sigma_model
        baseline = frame.baseline
        setup = self.request.diffusion
        if baseline is None and model.needs_baseline:
            tv = modalities.get(problem.modality).hot_start_baseline
            if hot_start is not None and setup is not None and setup.baseline == tv:
                baseline = hot_start
            else:
                with torch.inference_mode():
                    baseline = solve(tv, problem)
        prior_mean = frame.x0 if frame.prior_mean is None else frame.prior_mean
        assert frame.variance is not None
        def as_np(x: torch.Tensor) -> np.ndarray:
            return x.detach().cpu()[:, 0].numpy()

        var = model.variance(as_np(frame.variance.real if frame.variance.is_complex() else frame.variance),
                             as_np(prior_mean), None if baseline is None else as_np(baseline))
        return torch.from_numpy(var.astype(np.float32))[:, None]


def run_to_end(run: ReconRequest | Reconstruction, progress: Callable[[int], None] | None = None) -> ReconRun:
    """Run a request (or a prepared :class:`Reconstruction`) to its summary;
    ``progress(n_slices_done)`` after each batch."""
    for event in run if isinstance(run, Reconstruction) else Reconstruction(run):
        if isinstance(event, SliceDone) and progress is not None:
            progress(len(event.slices))
        elif isinstance(event, Summary):
            return event.run
    raise AssertionError("a reconstruction always ends with its summary")


def _frame_on_cpu(frame: "ReconFrame") -> "ReconFrame":
    """A GPU frame's images on the CPU, as every consumer of the events expects them."""
    from dataclasses import replace

    return replace(frame, x_t=frame.x_t.cpu(), x0=frame.x0.cpu(),
                   variance=None if frame.variance is None else frame.variance.cpu())
