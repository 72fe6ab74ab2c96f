"""Runs the engine for the window: the input preview, the baseline, the streamed diffusion.

Three job slots (inputs, baseline, diffusion), each with at most one live worker
thread; starting a run cancels the previous one cleanly (its late results are ignored).
Frames are stored as they arrive and drawn by a 30 Hz refresh timer, so a fast sampler
cannot flood the event loop; the responsiveness meter runs while sampling.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from diffrecon.errors import DiffreconError

from .engine_jobs import (DisplayFrame, JobPhase, JobSummary, RunRequest, SliceImages, baseline_images,
                          diffusion_frames, input_images)
from .responsiveness import FrameRate, StallMeter
from .workers import JobSlot

REFRESH_MS = 33


def processing_order(n_slices: int, current: int, whole_volume: bool) -> list[int]:
    """The slice on screen first, then the rest of the volume after it, then those before it."""
    if not whole_volume:
        return [current]
    return list(range(current, n_slices)) + list(range(0, current))


class RunController(QObject):
    runFinished = Signal(bool)  # True when every job completed (not cancelled, no error)
    frameShown = Signal(int)  # a new diffusion frame was drawn (its step over the run)
    inputsReady = Signal()
    phaseShown = Signal(str)  # what the diffusion job does before a batch's first step, in plain words

    def __init__(self, window):
        super().__init__(window)
        self.w = window
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
        self._ok = True
        self._closed = False
        self.last_stats: dict[str, float] = {}
        self.device = "cpu"  # where runs compute (diffrecon view --device; run_viewer sets it)

    @property
    def running(self) -> bool:
        return bool(self._pending)

    # ----- the measured input, before any run -----

    def start_inputs(self, only_missing: bool = False) -> None:
        """Compute the measured input of every slice (the one on screen first) in the background.

        ``only_missing``: keep what is there (a run interrupted the preview; finish it).
        """
        s, c = self.w.session, self.w.controls
        if s is None or self._closed:
            return
        try:
            settings = c.measurement_settings()
        except DiffreconError as exc:
            self.w.show_status(str(exc), error=True)
            return
        if not only_missing:
            s.clear_inputs()
        order = [i for i in processing_order(s.n_slices, s.slice_index, True) if not s.has("input", i)]
        if not order:
            return
        self.inputs.start("inputs", partial(input_images, s.volume, settings, c.simulate.isChecked(), order))

    def _input_item(self, item: SliceImages) -> None:
        self._store(item)

    def _inputs_done(self, cancelled: bool) -> None:
        if not cancelled:
            self.w.show_metrics()  # the caption knows now whether there is a reference
            self.w.commands.error_maps.setEnabled(bool(self.w.session.layers["reference"].filled.any()))
            self.inputsReady.emit()

    def _store(self, item: SliceImages) -> None:
        s = self.w.session
        s.layers[item.layer].put(item.slices, item.images)
        if item.reference is not None:
            s.layers["reference"].put(item.slices, item.reference)
        if s.slice_index in item.slices:
            self.w.renderer.render_all() if self.w.renderer.error_mode() else self.w.renderer.render(item.layer)

    # ----- a run -----

    def start_run(self) -> bool:
        s, c = self.w.session, self.w.controls
        if self._closed:
            return False
        if s is None:
            self.w.show_status("Open a scan first.", error=True)
            return False
        self.cancel(quiet=True, restarting=True)
        try:
            request = RunRequest(
                settings=c.measurement_settings(), simulate=c.simulate.isChecked(),
                slices=processing_order(s.n_slices, s.slice_index, c.whole_volume), baseline=c.baseline_method,
                options=c.diffusion_options(), model=c.model_path, batch_size=4 if c.whole_volume else 1,
                device=self.device,
            )
        except DiffreconError as exc:
            self.w.show_status(str(exc), error=True)
            return False
        self.inputs.cancel()  # the run sends its own inputs; the preview resumes when it ends
        s.clear_results()
        s.run.provenance = request.provenance()
        s.run.slices = sorted(request.slices)
        self.w.metrics.show_metrics({}, "Running...")
        self._ok = True
        self._last_frame = None
        self.w.renderer.progress_text = ""
        self.w.renderer.running = True
        self.w.renderer.render_all()
        self._pending = {"baseline"}
        self.baseline.start("baseline", partial(baseline_images, s.volume, request))
        n_batches = -(-len(request.slices) // request.batch_size)
        if request.model is not None:
            self._pending.add("diffusion")
            self.diffusion.start("diffusion", partial(diffusion_frames, s.volume, request))
            self.w.progress.setRange(0, request.options.steps * n_batches)
            self.w.progress.setValue(0)
            self.w.progress.setFormat("loading the prior...")
            self.w.show_status(f"Sampling {len(request.slices)} slice(s) with {request.model.stem}...")
        else:
            self.w.progress.setRange(0, 0)
            self.w.show_status("No diffusion prior is chosen (Model box): running the baseline only.", error=True)
        self.w.progress.setVisible(True)
        c.set_running(True)
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
        s = self.w.session
        if s is not None:  # the half-finished result says so in its pane title and in exports
            s.run.cancelled = f"cancelled at step {frame.done_steps}/{frame.total_steps}" if frame else "cancelled"
        self._finish(resume_inputs=not restarting)
        if not quiet:
            where = f" at step {frame.done_steps} of {frame.total_steps}" if frame else ""
            self.w.show_status(f"Cancelled{where}: the panes keep the unfinished estimate.")

    def _diffusion_item(self, item) -> None:
        s = self.w.session
        if isinstance(item, JobSummary):
            self._merge_metrics(item)
            return
        if isinstance(item, JobPhase):  # before the first frame of a batch: say what takes the time
            self.w.progress.setFormat(f"{item.text}...")
            self.phaseShown.emit(item.text)
            if self._last_frame is None:
                self.w.renderer.progress_text = f"{item.text}..."
                self.w.renderer.render("recon")
            return
        frame: DisplayFrame = item
        s.layers["recon"].put(frame.slices, frame.estimate)
        s.layers["sample"].put(frame.slices, frame.sample)
        if frame.sigma is not None:
            s.layers["sigma"].put(frame.slices, frame.sigma)
        s.run.steps_seen.append((int(frame.slices[0]), frame.step))
        self._last_frame = frame
        self._dirty = True
        self.w.progress.setMaximum(frame.total_steps)
        self.w.progress.setValue(frame.done_steps)
        self.w.progress.setFormat(f"step {frame.done_steps}/{frame.total_steps}   ETA {_duration(frame.eta_seconds)}")

    def _draw_frame(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        frame = self._last_frame
        r = self.w.renderer
        r.progress_text = f"step {frame.step}/{frame.total}" if frame is not None else ""
        r.render("recon")
        r.render("variance")
        if frame is not None and self.w.session.slice_index in frame.slices:
            self.fps.frame()
            self.frameShown.emit(frame.done_steps)

    def _baseline_item(self, item) -> None:
        if isinstance(item, JobSummary):
            self._merge_metrics(item)
        else:
            self._store(item)

    def _merge_metrics(self, summary: JobSummary) -> None:
        s = self.w.session
        s.metrics.update(summary.metrics)
        self.w.show_metrics()

    def _failed(self, kind: str, sentence: str) -> None:
        if kind != "inputs":  # a failed preview does not spoil a run
            self._ok = False
        self.w.show_status(sentence, error=True)

    def _job_done(self, kind: str, cancelled: bool) -> None:
        self._pending.discard(kind)
        if not self._pending:
            self._finish()

    def _finish(self, resume_inputs: bool = True) -> None:
        self._refresh.stop()
        self._draw_frame()
        self.stall.stop()
        s = self.w.session
        frame = self._last_frame
        self.last_stats = {
            "frames_drawn": self.fps.frames,
            "fps": self.fps.per_second,
            "longest_stall_ms": self.stall.longest_ms,
            "p99_stall_ms": self.stall.percentile_ms(99.0),
            "stalls_over_50ms": self.stall.count_over(50.0),
            "seconds": frame.elapsed if frame else 0.0,
        }
        ok = self._ok
        s.run.finished = ok
        self.w.renderer.progress_text = "done" if ok and frame else ""
        self.w.renderer.running = False
        self.w.renderer.render_all()
        self.w.controls.set_running(False)
        self.w.progress.setVisible(False)
        self.w.show_metrics()  # never "Running..." after the run, whatever ended it
        if resume_inputs and not self._closed:
            self.start_inputs(only_missing=True)
        if ok:
            parts = [f"Done: {len(s.run.slices)} slice(s)"]
            if frame:
                parts.append(f"{frame.total_steps} steps in {frame.elapsed:.1f} s")
                parts.append(f"{self.fps.per_second:.1f} frames/s drawn")
            parts.append(f"longest GUI stall {self.stall.longest_ms:.0f} ms")
            self.w.show_status(", ".join(parts) + ".")
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


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"
