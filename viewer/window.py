"""The main window: panes, settings, menus, status bar; opening files and exporting results."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QLabel, QMainWindow, QProgressBar, QScrollArea, QSplitter, QVBoxLayout,
                               QWidget)

from diffrecon.errors import DiffreconError
from diffrecon.io import load_volume
from diffrecon.modalities import suggest_task
from diffrecon.io.volume import Volume

from .controls import ControlPanel
from .display import PaneRenderer
from .hallucination import HallucinationOverlay
from .metrics_table import MetricsTable
from .mpr import MprGrid, MprRenderer
from .paths import default_sample
from .run_controller import RunController
from .session import Session
from .stack_view import StackView
from .state import RunRequest, RunState, processing_order
from .window_actions import WindowActions
from .windowing import anatomy_preset, ct_anatomy, load_presets, presets_for
from .workers import JobSlot


class MainWindow(QMainWindow):
    scanLoaded = Signal(object)  # the Session
    loadFailed = Signal(str)

    def __init__(self, settings: QSettings | None = None, parent=None):
        super().__init__(parent)
        self.settings = settings or QSettings("diffrecon", "viewer")
        self.session: Session | None = None
        self.presets = load_presets()
        self.setWindowTitle("diffrecon")
        self.setAcceptDrops(True)
        self.resize(1400, 900)

        self.stack = StackView()  # the four linked panes, the readout and the slice slider
        self.grid = self.stack.grid
        self.slider, self.slice_label, self.readout = self.stack.slider, self.stack.slice_label, self.stack.readout
        self.renderer = PaneRenderer(self.grid)
        self.mpr = MprGrid()  # the planes: another page of the stack view
        self.mpr_renderer = MprRenderer(self.mpr, self.renderer)
        self.stack.add_page(self.mpr)
        self.controls = ControlPanel()
        self.metrics = MetricsTable()
        self._build_layout()

        self.status_text = QLabel("")  # a label, not showMessage: it never times out or hides
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(260)
        self.progress.setMaximumWidth(320)
        self.progress.setTextVisible(True)
        self.progress.setVisible(False)
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.last_status = ""
        self.last_status_error = False

        self.runner = RunController(self)
        self.runner.status.connect(self.show_status)
        self.runner.inputsReady.connect(self._inputs_ready)
        self.loader = JobSlot(self._loaded, self._load_failed, lambda cancelled: None)
        self.commands = WindowActions(self)  # menus and toolbar (not "actions": QWidget.actions() exists)
        self.hallucination = HallucinationOverlay(self)
        self.preset_box = QComboBox()
        self.preset_box.setToolTip("Window/level preset (right-drag in a pane to adjust)")
        self.preset_box.setPlaceholderText("custom")
        self.preset_box.setMinimumWidth(150)
        self.preset_box.activated.connect(self._preset_chosen)
        self.commands.toolbar.addWidget(QLabel(" W/L "))
        self.commands.toolbar.addWidget(self.preset_box)

        self._inputs_timer = QTimer(self)  # debounce: settle the spin boxes before recomputing
        self._inputs_timer.setSingleShot(True)
        self._inputs_timer.setInterval(250)
        self._inputs_timer.timeout.connect(self.start_inputs)
        self.controls.measurementChanged.connect(self._measurement_changed)
        self.controls.taskChanged.connect(self._task_changed)
        self.controls.modelChanged.connect(self._model_changed)
        self.controls.baseline.currentIndexChanged.connect(self._baseline_changed)
        self.controls.runRequested.connect(self.start_run)
        self.controls.cancelRequested.connect(self.runner.cancel)
        self.grid.sliceStep.connect(lambda step: self.set_slice(self.slider.value() + step))
        self.grid.windowDrag.connect(self._window_drag)
        self.grid.hovered.connect(self._hovered)
        self.grid.left.connect(self._cursor_left)
        self.mpr.windowDrag.connect(lambda name, dx, dy: self._window_drag(name.split(":")[0], dx, dy))
        self.mpr.hoveredVoxel.connect(self._hovered_voxel)
        self.mpr.left.connect(self._cursor_left)
        self._cursor_mm: tuple[float, float] | None = None  # where the cursor is, to refresh the readout
        self.stack.sliceChosen.connect(self.set_slice)
        self.renderer.render_all()

    def _build_layout(self) -> None:
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidget(self.controls)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        side_layout.addWidget(scroll, 1)
        panel = self.controls.layout()
        panel.insertWidget(panel.count() - 1, self.metrics)  # right under Run, above the stretch
        side.setMaximumWidth(360)
        splitter = QSplitter()
        splitter.addWidget(side)
        splitter.addWidget(self.stack)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([330, 1070])
        self.setCentralWidget(splitter)

    # ----- status -----

    def show_status(self, text: str, error: bool = False) -> None:
        self.last_status, self.last_status_error = text, error
        self.status_text.setStyleSheet("color: #ff6a55;" if error else "")
        self.status_text.setText(text)
        self.status_text.setToolTip(text)

    def show_metrics(self) -> None:
        s = self.session
        if s is None:
            return
        if not s.metrics and s.run_state.running:
            text = "Running..."
        elif not s.metrics and s.layers["reference"].filled.any():
            text = "Scores against the reference appear after Run."
        elif not s.metrics:
            text = "No reference here: metrics need a ground truth (simulate) or a target in the file."
        else:
            n = len(s.run.slices)
            text = f"Against the reference, over {n} slice{'s' if n != 1 else ''} (working domain)."
        self.metrics.show_metrics(s.metrics, text)

    # ----- opening scans -----

    def open_path(self, path: str | Path) -> None:
        """Read a scan on a worker thread; errors go to the status bar, the current scan stays."""
        path = Path(path)
        self.show_status(f"Opening {path.name}...")
        self.loader.start("load", lambda cancelled: _load_then_warm_up(path))

    def open_default_sample(self) -> None:
        self.open_path(default_sample())

    def _load_failed(self, sentence: str) -> None:
        self.show_status(sentence, error=True)
        self.loadFailed.emit(sentence)

    def _loaded(self, item: tuple[Path, Volume]) -> None:
        path, volume = item
        self.runner.attach(None)  # the old scan's jobs stop before the new session exists
        self.session = Session(volume, path)
        task, simulate = suggest_task(volume)  # the CLI's rule too
        self.controls.set_task(task, simulate, volume.kspace is not None)
        self.renderer.options.task = task
        self.stack.set_slice_count(volume.n_slices)
        self.stack.show_slice(self.session.slice_index, volume.n_slices)
        self._fill_presets()
        fitting = anatomy_preset(volume, self.current_presets)
        if fitting is not None:  # a head CT opens in the brain window, not the header's (often W400)
            self.session.window = self.current_presets[fitting].window_for(self.session.display_data())
            self.preset_box.setCurrentIndex(fitting)
        self._update_descriptions()
        self.renderer.attach(self.session)
        self.mpr_renderer.attach(self.session)
        self.runner.attach(self.session)
        e = self.session.events
        e.slice.connect(self._slice_changed)
        e.metrics.connect(lambda _metrics: self.show_metrics())
        e.run_state.connect(self._run_state_changed)
        self.show_metrics()
        self.setWindowTitle(f"diffrecon: {self.session.title()}")
        self.commands.add_recent(path)
        window_note = ""
        if fitting is not None:
            name = self.current_presets[fitting].name
            window_note = f"; {name} window for a {ct_anatomy(volume)} CT (View > Window presets to change it)"
        self.show_status(f"Opened {self.session.title()}; orientation {''.join(volume.orientation())}{window_note}.")
        self._inputs_timer.stop()  # the task change above asked for inputs too: compute them once
        self.start_inputs()
        self._model_changed()
        self.scanLoaded.emit(self.session)

    # ----- runs: the panel's settings as a request; the session reports back -----

    def run_request(self) -> RunRequest:
        """The settings panel as a run request (a setting that cannot run raises one sentence)."""
        s, c = self.session, self.controls
        return RunRequest(
            settings=c.measurement_settings(), simulate=c.simulate.isChecked(),
            slices=processing_order(s.n_slices, s.slice_index, c.whole_volume), baseline=c.baseline_method,
            options=c.diffusion_options(), model=c.model_path, batch_size=4 if c.whole_volume else 1,
        )

    def show_request(self, task: str, request: RunRequest) -> None:
        """The panel shows ``request`` (built from the command line), and the panes its names."""
        self.controls.show_request(task, request)
        self.renderer.options.task = task
        self._update_descriptions()
        self._model_changed()

    def start_run(self, request: RunRequest | None = None) -> bool:
        """Run ``request``, or the panel's settings; False (and the status line says why) when it cannot start."""
        if self.session is None:
            self.show_status("Open a scan first.", error=True)
            return False
        if request is None:
            try:
                request = self.run_request()
            except DiffreconError as exc:
                self.show_status(str(exc), error=True)
                return False
        return self.runner.start_run(request)

    def start_inputs(self) -> None:
        """Recompute the measured input with the panel's measurement settings."""
        if self.session is None:
            return
        try:
            settings = self.controls.measurement_settings()
        except DiffreconError as exc:
            self.show_status(str(exc), error=True)
            return
        self.runner.start_inputs(settings, self.controls.simulate.isChecked())

    def _inputs_ready(self) -> None:
        self.show_metrics()  # the caption knows now whether there is a reference
        self.commands.error_maps.setEnabled(bool(self.session.layers["reference"].filled.any()))

    def _run_state_changed(self, state: RunState) -> None:
        p = self.progress
        if state.running:
            if p.maximum() != state.total_steps:
                p.setRange(0, state.total_steps)  # 0: a busy bar (the baseline alone has no steps)
            p.setValue(state.done_steps)
            p.setFormat(state.bar_text)
        if p.isVisible() != state.running:
            p.setVisible(state.running)
            self.controls.set_running(state.running)
            self.show_metrics()  # "Running..." while nothing is scored, never after the run

    # ----- settings changes -----

    def _measurement_changed(self) -> None:
        if self.session is None:
            return
        self._update_descriptions()
        self._inputs_timer.start()

    def _model_changed(self) -> None:
        path = self.controls.model_path
        self.renderer.options.model_name = None if path is None else path.stem
        if self.session is not None:
            self.renderer.render("recon")
            self.renderer.render("variance")

    def _task_changed(self, task: str) -> None:
        self.renderer.options.task = task
        self._update_descriptions()

    def _update_descriptions(self) -> None:
        kspace = self.session.volume.kspace if self.session is not None else None
        try:
            text = self.controls.measurement_settings().describe()
        except Exception:  # an impossible combination: the status bar says why at Run
            text = ""
        if (kspace is not None and not kspace.fully_sampled and self.controls.task == "mri"
                and not self.controls.simulate.isChecked()):
            text = f"MRI {kspace.acceleration:.1f}x, the file's own mask"  # the panel's mask does not apply
        self.renderer.options.measurement = text
        method = self.controls.baseline_method
        self.renderer.options.baseline_name = None if method is None else self.controls.baseline.currentText()

    def _baseline_changed(self) -> None:
        self._update_descriptions()
        if self.session is not None:
            self.renderer.render("baseline")

    # ----- slices, window/level, cursor -----

    def set_slice(self, index: int) -> None:
        if self.session is not None:
            self.session.set_slice(index)  # announced: the panes and _slice_changed follow

    def _slice_changed(self, index: int) -> None:
        self.stack.show_slice(index, self.session.n_slices)
        if self._cursor_mm is not None:  # the readout follows the slice, not only the mouse
            self._hovered(*self._cursor_mm)

    def _fill_presets(self) -> None:
        self.preset_box.clear()
        v = self.session.volume
        self.current_presets = presets_for(v.modality, v.units, self.presets)
        for preset in self.current_presets:
            self.preset_box.addItem(preset.name)
        self.preset_box.setCurrentIndex(-1)
        self.commands.set_preset_shortcuts(self.current_presets)

    def apply_preset(self, index: int) -> None:
        if self.session is None or not 0 <= index < len(self.current_presets):
            return
        preset = self.current_presets[index]
        self.session.window = preset.window_for(self.session.display_data())  # announced: the panes follow
        self.preset_box.setCurrentIndex(index)
        self.show_status(f"Window preset {preset.name}: {self.session.window.describe(self.session.units)}.")

    def _preset_chosen(self, index: int) -> None:
        self.apply_preset(index)

    def _window_drag(self, pane: str, dx: float, dy: float) -> None:
        if self.session is None or pane == "variance" or self.renderer.is_error_pane(pane):
            return
        self.session.window = self.session.window.dragged(dx, dy, self.session.data_span())
        self.preset_box.setCurrentIndex(-1)

    def _cursor_left(self) -> None:
        self._cursor_mm = None
        self.readout.setText("")

    def _hovered(self, x_mm: float, y_mm: float) -> None:
        self._cursor_mm = (x_mm, y_mm)
        s = self.session
        if s is None:
            return
        pixel = s.geometry.pixel_at(x_mm, y_mm)
        if pixel is None:
            self.readout.setText("")
            return
        self._readout_at(s.slice_index, *pixel)

    def _hovered_voxel(self, slice_index: int, row: int, col: int) -> None:
        self._cursor_mm = None  # a plane's readout does not follow the slider
        self._readout_at(slice_index, row, col)

    def _readout_at(self, slice_index: int, row: int, col: int) -> None:
        """The readout line: the voxel's position in mm and every layer's value there."""
        s = self.session
        units = "" if s.units in ("a.u.", "") else f" {s.units}"
        values = []
        for layer, label in (("input", "input"), ("recon", "diffusion"), ("baseline", "baseline"),
                             ("sigma", "σ"), ("reference", "reference")):
            image = s.image(layer, slice_index)
            if image is not None:
                values.append(f"{label} {float(image[row, col]):.4g}{units}")
        if not s.has("input", slice_index):
            values.insert(0, f"scan {s.display_data()[slice_index, row, col]:.4g}{units}")
        position = s.geometry.format_position(slice_index, row, col)
        self.readout.setText(f"{position}   voxel ({col}, {row}, {slice_index})   " + "   ".join(values))

    # ----- drag and drop, closing -----

    def dragEnterEvent(self, ev):
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):
        urls = [u for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_path(urls[0].toLocalFile())
            ev.acceptProposedAction()

    def closeEvent(self, ev):
        self.hide()  # gone at once for the user, while a running solve finishes its step below
        self._inputs_timer.stop()
        self.runner.shutdown()
        self.loader.cancel()
        self.loader.wait_all()
        super().closeEvent(ev)


def _load_then_warm_up(path: Path):
    """The scan, then (on the same worker thread, while the user looks at it) the modules a
    run imports: importing them when Run is pressed held Python's GIL for hundreds of
    milliseconds between the first frames."""
    yield path, load_volume(path)
    import diffrecon.diffusion.checkpoint  # noqa: F401
    import diffrecon.diffusion.reconstruction  # noqa: F401
    import diffrecon.diffusion.uncertainty  # noqa: F401
