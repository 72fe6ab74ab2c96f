"""Starting the viewer: the Qt application, the first scan, and the scripted ``--run`` mode.

``diffrecon view [PATH]`` opens PATH (or, with none, the bundled T1 sample as ground
truth with the bundled prior, ready to run). With ``--run`` the current settings run
to completion and the window stays open for the user; ``--screenshot`` saves the four
panes as a PNG and the app exits, as does ``--exit``. A scripted run prints its metrics
line, frames per second and the longest event-loop stall it measured; ``--report``
writes them as JSON.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from diffrecon.errors import DiffreconError

from .export import metrics_line, write_run_report
from .paths import default_model_for
from .state import RunChoices, RunRequest, request_for


@dataclass
class ViewOptions(RunChoices):
    """The command line of ``diffrecon view``: the run's choices (:class:`RunChoices`) and how
    the window shows them."""

    path: Path | None = None
    run: bool = False
    screenshot: Path | None = None
    window_screenshot: Path | None = None
    exit_after: bool = False  # close when the run ends (a screenshot implies it)
    report: Path | None = None  # JSON with the run's settings, metrics and timings
    slice: int | None = None
    layout: str | None = None
    error_maps: bool = False
    hallucination_map: bool = False  # the H toggle on from the start
    preset: str | None = None
    size: tuple[int, int] = (1500, 950)
    threads_chosen: bool = False  # --threads given: do not second-guess it
    device: str = "auto"  # --device: auto (CUDA when present), cpu, cuda
    backend: str = "torch"  # --backend: torch, or onnx-int8 (diffrecon.diffusion.onnx_int8)

    def choices(self) -> RunChoices:
        """The settings of the run, as the Qt-free request builder takes them."""
        return RunChoices(**{f.name: getattr(self, f.name) for f in fields(RunChoices)})

    @property
    def exits_after_run(self) -> bool:
        return bool(self.run and (self.exit_after or self.screenshot or self.window_screenshot))


def threads_for_sampling(cores: int, load_1min: float) -> int:
    """Torch threads for the live view: every core on an idle machine, else leave room.

    Measured on this 2-core machine, MRI sample slice, 25 steps, symmetric pair: idle, 2
    threads drew 4.8-5.1 frames/s (longest stall 16-34 ms) against 3.0 with 1 thread. Busy
    (two training jobs), torch's 2 threads waited on each other while the GUI thread and
    the other jobs took the cores: sampling ran 15x slower and the event loop stalled for
    70 ms; 1 thread kept it responsive.
    """
    idle = cores - max(0.0, load_1min)
    if idle >= cores - 0.5:
        return max(1, cores)
    return max(1, min(cores - 1, int(idle)))


def reserve_a_core_for_the_gui(threads_chosen: bool = False) -> int:
    """Set torch's threads from the machine's load, unless the user chose (``--threads``,
    ``$DIFFRECON_THREADS``); see :func:`threads_for_sampling`."""
    import torch

    if threads_chosen or os.environ.get("DIFFRECON_THREADS"):
        return torch.get_num_threads()
    cores = os.cpu_count() or 2
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float(cores)
    threads = threads_for_sampling(cores, load)
    torch.set_num_threads(threads)
    return threads


def dark_palette(app: QApplication) -> None:
    """Reading rooms are dark: a dark theme keeps the images the brightest thing on screen."""
    app.setStyle("Fusion")
    p = QPalette()
    base, window, text = QColor(30, 30, 32), QColor(45, 45, 48), QColor(225, 225, 225)
    for role, color in ((QPalette.ColorRole.Window, window), (QPalette.ColorRole.WindowText, text),
                        (QPalette.ColorRole.Base, base), (QPalette.ColorRole.AlternateBase, window),
                        (QPalette.ColorRole.Text, text), (QPalette.ColorRole.Button, window),
                        (QPalette.ColorRole.ButtonText, text), (QPalette.ColorRole.ToolTipBase, base),
                        (QPalette.ColorRole.ToolTipText, text), (QPalette.ColorRole.Highlight, QColor(60, 110, 180)),
                        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))):
        p.setColor(role, color)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(120, 120, 120))
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(120, 120, 120))
    app.setPalette(p)


def apply_options(window, o: ViewOptions) -> RunRequest:
    """The command line's choices: the slice, layout and display options on the window, and
    the run as a request built from the scan and the options (not read back from the
    settings panel, which is set to show it). Returns the request; a choice that does not
    apply is one sentence."""
    window.controls.independent_slices = o.independent_slices  # later runs from the panel keep it
    if o.slice is not None:
        n = window.session.n_slices
        if not -n <= o.slice < n:
            raise DiffreconError(f"slice {o.slice} is outside the scan's {n} slices")
        window.set_slice(o.slice % n)
    if o.preset:
        names = [p.name.lower() for p in window.current_presets]
        matches = [i for i, n in enumerate(names) if n.startswith(o.preset.lower())]
        if not matches:
            raise DiffreconError(f"no window preset called {o.preset!r}; choose from {', '.join(names)}")
    session = window.session
    task, request = request_for(session.volume, session.slice_index, o.choices(), default_model=default_model_for)
    window.show_request(task, request)
    if o.layout:
        window.commands.set_layout(o.layout, remember=False)
    if o.error_maps:
        window.commands.set_error_maps(True)
    if o.hallucination_map:
        window.hallucination.action.setChecked(True)
    if o.preset:
        window.apply_preset(matches[0])
    return request


def choose_platform(options: ViewOptions) -> None:
    """Without a display, a scripted run renders offscreen; an interactive one cannot start."""
    choose_qt_platform(scripted=options.exits_after_run,
                       how_to_script="--run --screenshot out.png (or --run --exit)")


def choose_qt_platform(scripted: bool, how_to_script: str) -> None:
    """Render offscreen when ``scripted`` and there is no display; refuse an interactive start.

    (Qt would abort the process with a core dump; the user gets one sentence instead.)
    """
    if os.environ.get("QT_QPA_PLATFORM") or not sys.platform.startswith("linux"):
        return
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if scripted:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        return
    raise DiffreconError("no display found (DISPLAY is not set); run it in a desktop session, or script it "
                         f"with {how_to_script}, which needs no display")


def run_viewer(options: ViewOptions) -> int:
    from .window import MainWindow

    from diffrecon.runtime import resolve_device

    choose_platform(options)
    device = resolve_device(options.device).type  # --device cuda without a GPU: one sentence, before any window
    if options.backend != "torch":  # a missing onnxruntime or a GPU: one sentence, before any window
        from diffrecon.diffusion.onnx_int8 import require_onnxruntime
        from diffrecon.errors import SettingsError

        from . import engine_jobs

        require_onnxruntime()
        if device != "cpu":
            raise SettingsError("--backend onnx-int8 runs on the CPU only; use --device cpu with it")
        engine_jobs.PRIOR_BACKEND = options.backend
    reserve_a_core_for_the_gui(options.threads_chosen)
    # Workers hand Python's GIL over every 1 ms instead of 5: a repaint of the panes (Python
    # calls between Qt's) waits less for it while the sampler and a baseline run.
    sys.setswitchinterval(0.001)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("diffrecon")
    app.setOrganizationName("diffrecon")
    dark_palette(app)
    window = MainWindow(QSettings("diffrecon", "viewer"))
    window.runner.device = device
    window.resize(*options.size)
    window.show()
    outcome = {"code": 0}

    def fail(sentence: str) -> None:
        print(f"diffrecon: error: {sentence}", file=sys.stderr)
        outcome["code"] = 2
        app.quit()

    def loaded(_session) -> None:
        window.scanLoaded.disconnect(loaded)
        try:
            request = apply_options(window, options)
        except DiffreconError as exc:
            if options.run:
                fail(str(exc))
            else:
                window.show_status(str(exc), error=True)
            return
        if options.run:
            window.runner.runFinished.connect(finished)
            window.session.clear_inputs()  # the run measures its slices; the preview resumes after it, as run
            if not window.start_run(request):
                fail(window.last_status)
        else:
            window.start_inputs()  # the preview with the settings the panel now shows

    def finished(ok: bool) -> None:
        window.runner.runFinished.disconnect(finished)
        stats = window.runner.last_stats
        print(f"diffrecon view: {window.last_status}", file=sys.stderr)
        line = metrics_line(window.session.metrics)
        if line:
            print(f"diffrecon view: {line}", file=sys.stderr)
        print(f"diffrecon view: {stats.get('frames_drawn', 0)} frames drawn, {stats.get('fps', 0.0):.1f} frames/s, "
              f"longest event-loop stall {stats.get('longest_stall_ms', 0.0):.0f} ms "
              f"(99th percentile {stats.get('p99_stall_ms', 0.0):.0f} ms, "
              f"{stats.get('stalls_over_50ms', 0)} over 50 ms; "
              f"{stats.get('longest_stall_streaming_ms', 0.0):.0f} ms once the first frame was in; "
              f"the GUI thread computed for "
              f"{stats.get('gui_busy_in_longest_stall_ms', 0.0):.0f} ms of the longest, at most "
              f"{stats.get('longest_gui_busy_ms', 0.0):.0f} ms between two ticks, "
              f"{stats.get('longest_gui_busy_streaming_ms', 0.0):.0f} ms once streaming)",
              file=sys.stderr)
        if not ok:
            outcome["code"] = 1
        if options.report is not None:
            try:
                print(write_run_report(window.session, stats, ok, options.report))
            except DiffreconError as exc:
                print(f"diffrecon: error: {exc}", file=sys.stderr)
                outcome["code"] = 2
        if options.exits_after_run:
            # Let the last frame and the metrics paint before grabbing.
            QTimer.singleShot(300, lambda: save_and_quit(ok))

    def save_and_quit(ok: bool) -> None:
        if options.window_screenshot is not None:  # first, while the status bar still reports the run
            Path(options.window_screenshot).parent.mkdir(parents=True, exist_ok=True)
            window.grab().save(str(options.window_screenshot), "PNG")
            print(options.window_screenshot)
        if options.screenshot is not None and window.commands.save_png(options.screenshot):
            print(options.screenshot)
        window.close()
        app.quit()

    window.scanLoaded.connect(loaded)
    if options.run:
        window.loadFailed.connect(fail)
    if options.path is not None:
        window.open_path(options.path)
    else:
        window.open_default_sample()
    app.exec()
    window.runner.shutdown()
    return outcome["code"]
