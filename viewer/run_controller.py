"""Runs the engine for the open scan: the input preview, the baseline, the streamed diffusion.

The controller is given the :class:`~.session.Session` (``attach``) and a
:class:`~.state.RunRequest` per Run; it stores what the jobs report in the session, which
announces it (panes, progress bar and metrics table subscribe); it never touches a
widget. Three job slots (inputs, baseline, diffusion), each with at most one live worker
thread; starting a run cancels the previous one cleanly (its late results are ignored).
Frames are stored as they arrive and announced by a 30 Hz timer, so a fast sampler
cannot flood the event loop; the responsiveness meter runs while sampling.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from PySide6.QtCore import QObject, QTimer, Signal

from diffrecon.measurements import MeasurementSettings

from .engine_jobs import (DisplayFrame, JobPhase, JobSummary, SliceImages, SlicesFinished, baseline_images,
                          diffusion_frames, input_images)
from .responsiveness import FrameRate, StallMeter
from .session import Session
from .state import FRAME_LAYERS, RunRequest, RunState, processing_order
from .workers import JobSlot

__all__ = ["RunController", "processing_order"]

REFRESH_MS = 33


class RunController(QObject):
    runFinished = Signal(bool)  # True when every job completed (not cancelled, no error)
    frameShown = Signal(int)  # a new diffusion frame was drawn (its step over the run)
    inputsReady = Signal()
    phaseShown = Signal(str)  # what the diffusion job does before a batch's first step, in plain words
    status = Signal(str, bool)  # a sentence for the status line; True: it reports a problem

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: Session | None = None
        self.inputs = JobSlot(self._input_item, partial(self._failed, "inputs"), self._inputs_done)
        self.baseline = JobSlot(self._baseline_item, partial(self._failed, "baseline"),
                                partial(self._job_done, "baseline"))
        self.diffusion = JobSlot(self._diffusion_item, partial(self._failed, "diffusion"),
                                 partial(self._job_done, "diffusion"))
        self.stall = StallMeter(self)
        self.fps = FrameRate()
        self._refresh = QTimer(self)
        self._refresh.setInterval(REFRESH_MS)
        self._refresh.timeout.connect(self._draw_frame)
        self._pending: set[str] = set()
        self._dirty = False
        self._last_frame: DisplayFrame | None = None
        self._batches = (1, 1)  # (batches, slices per batch) of the current run
        self._input_args: tuple[MeasurementSettings, bool] | None = None  # the preview's settings, to resume it
        self._ok = True
        self._closed = False
        self.last_stats: dict[str, float] = {}
        self.device = "cpu"  # where runs compute (diffrecon view --device; run_viewer sets it)

    def attach(self, session: Session | None) -> None:
        """Work on this scan from now on (a newly opened one): the old scan's jobs stop."""
        self.cancel(quiet=True)
        self.inputs.cancel()
        self.session = session
        self._input_args = None

    @property
    def running(self) -> bool:
        return bool(self._pending)

    # ----- the measured input, before any run -----

    def start_inputs(self, settings: MeasurementSettings | None = None, simulate: bool | None = None,
                     only_missing: bool = False) -> None:
        """Compute the measured input of every slice (the one on screen first) in the background.

        Without settings: the last ones (a run interrupted the preview; finish it).
        ``only_missing``: keep what is there.
        """
        s = self.session
        if s is None or self._closed:
            return
        if settings is not None:
            self._input_args = (settings, bool(simulate))
        if self._input_args is None:
            return
        settings, simulate = self._input_args
        if not only_missing:
            s.clear_inputs()
        order = [i for i in processing_order(s.n_slices, s.slice_index, True) if not s.has("input", i)]
        if not order:
            return
        self.inputs.start("inputs", partial(input_images, s.volume, settings, simulate, order))

    def _input_item(self, item: SliceImages) -> None:
        self._store(item)

    def _inputs_done(self, cancelled: bool) -> None:
        if not cancelled:
            self.inputsReady.emit()

    def _store(self, item: SliceImages) -> None:
        s = self.session
        if item.reference is not None:  # first: an error map of the new layer needs it
            s.put("reference", item.slices, item.reference, announce=False)
        s.put(item.layer, item.slices, item.images)

    # ----- a run -----

    def start_run(self, request: RunRequest) -> bool:
        s = self.session
        if self._closed:
            return False
        if s is None:
            self.status.emit("Open a scan first.", True)
            return False
        self.cancel(quiet=True, restarting=True)
        if request.device != self.device:  # diffrecon view --device: every run computes there
            request = replace(request, device=self.device)
        self.inputs.cancel()  # the run sends its own inputs; the preview resumes when it ends
        self._input_args = (request.settings, request.simulate)
        s.clear_results()
        s.run.provenance = request.provenance()
        s.run.slices = sorted(request.slices)
        self._ok = True
        self._last_frame = None
        n_batches = -(-len(request.slices) // request.batch_size)
        self._batches = (n_batches, request.batch_size)  # the status line counts steps per batch
        self._pending = {"baseline"}
        total = 0
        if request.model is not None:
            self._pending.add("diffusion")
            total = request.options.steps * n_batches
        s.set_run_state(RunState(running=True, phase="loading the prior" if total else "", total_steps=total,
                                 steps=0, slices_total=len(request.slices)))
        self.baseline.start("baseline", partial(baseline_images, s.volume, request))
        if request.model is not None:
            self.diffusion.start("diffusion", partial(diffusion_frames, s.volume, request))
            self.status.emit(f"Sampling {len(request.slices)} slice(s) with {request.model.stem}...", False)
        else:
            self.status.emit("No diffusion prior is chosen (Model box): running the baseline only.", True)
        self.stall.start()
        self.fps.start()
        self._refresh.start()
        return True

    def cancel(self, quiet: bool = False, restarting: bool = False) -> None:
        """Stop the run within one sampling step (the threads finish on their own, ignored)."""
        if not self._pending:
            return
        self.baseline.cancel()
        self.diffusion.cancel()
        self._pending.clear()
        self._ok = False
        frame = self._last_frame
        s = self.session
        if s is not None:  # the half-finished result says so in its pane title and in exports
            s.run.cancelled = f"cancelled at step {frame.done_steps}/{frame.total_steps}" if frame else "cancelled"
        self._finish(resume_inputs=not restarting)
        if not quiet:
            where = f" at step {frame.done_steps} of {frame.total_steps}" if frame else ""
            self.status.emit(f"Cancelled{where}: the panes keep the unfinished estimate.", False)

    def _diffusion_item(self, item) -> None:
        s = self.session
        if isinstance(item, JobSummary):
            self._merge_metrics(item)
            return
        if isinstance(item, SlicesFinished):  # kept whatever happens next (a cancel keeps finished slices)
            self._draw_frame()  # the batch's last frame at once (when not drawn yet), then the count
            s.run.slices_finished.extend(int(i) for i in item.slices)
            s.set_run_state(s.run_state.advanced(slices_done=len(s.run.slices_finished)))
            return
        if isinstance(item, JobPhase):  # before the first frame of a batch: say what takes the time
            s.set_run_state(s.run_state.advanced(phase=item.text))
            self.phaseShown.emit(item.text)
            return
        frame: DisplayFrame = item
        # Stored now, announced by the 30 Hz refresh: a fast sampler cannot flood the event loop.
        s.put("recon", frame.slices, frame.estimate, announce=False)
        s.put("sample", frame.slices, frame.sample, announce=False)
        if frame.sigma is not None:
            s.put("sigma", frame.slices, frame.sigma, announce=False)
        s.run.steps_seen.append((int(frame.slices[0]), frame.step))
        self._last_frame = frame
        self._dirty = True

    def _draw_frame(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        frame = self._last_frame
        s = self.session
        if frame is None or s is None:
            return
        s.set_run_state(s.run_state.advanced(
            phase="", step=frame.step, steps=frame.total, done_steps=frame.done_steps, total_steps=frame.total_steps,
            eta_seconds=frame.eta_seconds, elapsed=frame.elapsed))
        s.announce(FRAME_LAYERS, frame.slices)
        self.stall.mark_streaming()
        if s.slice_index in frame.slices:
            self.fps.frame()
            self.frameShown.emit(frame.done_steps)

    def _baseline_item(self, item) -> None:
        if isinstance(item, JobSummary):
            self._merge_metrics(item)
        else:
            self._store(item)
            if item.layer == "baseline" and "diffusion" not in self._pending:  # else the diffusion counts slices
                s = self.session
                done = min(s.run_state.slices_done + len(item.slices), s.run_state.slices_total)
                s.set_run_state(s.run_state.advanced(slices_done=done))

    def _merge_metrics(self, summary: JobSummary) -> None:
        if summary.provenance:  # the σ calibration, the out-of-domain check and the hold-outs' choices go into exports
            self.session.run.provenance.update(summary.provenance)
        self.session.update_metrics(summary.metrics)

    def _failed(self, kind: str, sentence: str) -> None:
        if kind != "inputs":  # a failed preview does not spoil a run
            self._ok = False
        self.status.emit(sentence, True)

    def _job_done(self, kind: str, cancelled: bool) -> None:
        self._pending.discard(kind)
        if not self._pending:
            self._finish()

    def _finish(self, resume_inputs: bool = True) -> None:
        self._refresh.stop()
        self._draw_frame()
        self.stall.stop()
        s = self.session
        frame = self._last_frame
        self.last_stats = {
            "frames_drawn": self.fps.frames,
            "fps": self.fps.per_second,
            "longest_stall_ms": self.stall.longest_ms,
            "p99_stall_ms": self.stall.percentile_ms(99.0),
            "stalls_over_50ms": self.stall.count_over(50.0),
            "longest_stall_streaming_ms": self.stall.longest_streaming_ms,
            "gui_busy_in_longest_stall_ms": self.stall.busy_in_longest_ms,
            "longest_gui_busy_ms": self.stall.longest_busy_ms,
            "longest_gui_busy_streaming_ms": self.stall.longest_busy_streaming_ms,
            "seconds": frame.elapsed if frame else 0.0,
        }
        ok = self._ok
        if s is not None:
            s.run.finished = ok
            s.set_run_state(s.run_state.advanced(running=False, finished=ok, phase="",
                                                 cancelled=s.run.cancelled,
                                                 done_steps=frame.done_steps if frame else 0))
        if resume_inputs and not self._closed:
            self.start_inputs(only_missing=True)
        if ok and s is not None:
            parts = [f"Done: {len(s.run.slices)} slice(s)"]
            if frame:
                run = s.run.provenance
                blends = [float(a["blend_weight"]) for a in run.get("adaptation") or [] if "blend_weight" in a]
                n_batches, batch_size = self._batches
                n = frame.total_steps // max(n_batches, 1)  # the run's total counts every batch
                n = n // 2 if blends else n  # a blend's hold-out run has as many
                steps = f"{n} step{'' if n == 1 else 's'}"
                if n_batches > 1:
                    steps += f" per batch of {batch_size} slices"
                if run.get("model") and (run.get("diffusion") or {}).get("hot_start"):
                    # fewer steps than asked (modalities.MIN_STEPS_FROM_NOISE): say why
                    steps += " from the baseline (a hot start)"
                experts = [a for a in run.get("adaptation") or [] if a.get("low_noise_expert_steps")]
                if experts:  # a bundled prior's low-noise expert took the last steps (diffusion.experts)
                    name = str(experts[0]["low_noise_expert"]).removesuffix(".safetensors")
                    steps += f" (the last {int(experts[0]['low_noise_expert_steps'])} by {name})"
                if blends:
                    steps += " and a hold-out run of as many"
                parts.append(f"{steps} in {frame.elapsed:.1f} s")
                if blends:  # how far the held-out measurements let the prior's image count against TV's
                    prior_share = round(100 * sum(blends) / len(blends))
                    parts.append(f"{prior_share} % prior, {100 - prior_share} % TV by held-out data")
                if self.fps.frames >= 2:  # one frame (a one-step denoise) has no rate: "0.0 frames/s" misled
                    parts.append(f"{self.fps.per_second:.1f} frames/s drawn")
            parts.append(f"longest GUI stall {self.stall.longest_ms:.0f} ms")
            warning = (self.session.run.provenance.get("out_of_domain") or {}).get("warning")
            if warning:  # one sentence, first, in the status line's error colour
                self.status.emit(f"Warning: {warning}. " + ", ".join(parts) + ".", True)
            else:
                self.status.emit(", ".join(parts) + ".", False)
        self.runFinished.emit(ok)

    def shutdown(self) -> None:
        """Cancel everything and wait for the threads (window closing)."""
        self._closed = True
        self._refresh.stop()
        self.stall.stop()
        self._pending.clear()
        for slot in (self.inputs, self.baseline, self.diffusion):
            slot.cancel()
        for slot in (self.inputs, self.baseline, self.diffusion):
            slot.wait_all()

