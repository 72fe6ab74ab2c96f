"""The reader-study window: one blinded image (or a fixed hanging) at a time, scored 1-5.

``diffrecon study read STUDY --reader NAME`` opens it. The images are shown in the
viewer's own :class:`~.stack_view.StackView`, as the main window's (wheel or arrows scroll slices, right drag sets
the window, Ctrl+wheel zooms, drag pans, double click fits), beside the scoring panel
(:mod:`.reader_panel`). What is shown and saved is decided by the Qt-free
:class:`diffrecon.study.ReadingSession`; this window only renders it.

Rules this window keeps:

* every answer is committed to the study database before another case is shown; a
  failed commit is one sentence in the panel, and the case stays;
* nothing on screen (titles, labels, tooltips) names a method or a source file;
* time on a case counts only while the window is visible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QMainWindow, QStackedWidget, QWidget)

from diffrecon.io.volume import Volume
from diffrecon.study import ReadingSession, StudyStore, StudyStoreError, open_store

from .geometry import SliceGeometry
from .pane import ImagePane
from .reader_panel import KEY_BACK, YES_NO_KEYS, EndPage, ScoringPanel
from .stack_view import StackView
from .windowing import WindowLevel, initial_window

SLICE_KEYS_UP = (Qt.Key.Key_Up, Qt.Key.Key_PageUp, Qt.Key.Key_Right)
SLICE_KEYS_DOWN = (Qt.Key.Key_Down, Qt.Key.Key_PageDown, Qt.Key.Key_Left)


class ReaderStudyWindow(QMainWindow):
    caseShown = Signal(int)  # position in the reader's order; n_items for the end page
    answerSaved = Signal(str, object)  # question id, value

    def __init__(self, session: ReadingSession, parent=None, *, record_time: bool = True):
        super().__init__(parent)
        self.session = session
        self.record_time = record_time  # off for scripted screenshots: nobody is reading
        self.setWindowTitle(f"diffrecon reader study · {session.store.folder.resolve().name} · reader {session.reader}")
        self.resize(1500, 950)
        self.image: Volume | None = None
        self.reference: Volume | None = None
        self.geometry_of: dict[str, SliceGeometry] = {}
        self.window_level = WindowLevel(0.5, 1.0)
        self.slice_index = 0
        self._closing_refused = False

        # The main window's stack view with two panes: the reference beside the image to score.
        self.stack = StackView((("reference", "Reference"), ("image", "Image")), layout="1x2", linked=False,
                               layouts=("1x2",), readout_style="color: #c8c8c8;")
        grid = self.stack.grid
        grid.set_crosshair_enabled(False)
        self.image_pane, self.reference_pane = grid["image"], grid["reference"]
        self.reference_pane.setVisible(False)
        self.panes = (self.reference_pane, self.image_pane)
        grid.sliceStep.connect(self.step_slice)
        grid.windowDrag.connect(lambda _name, dx, dy: self._window_drag(dx, dy))
        grid.hoveredPane.connect(lambda name, x, y: self._hovered(grid[name], x, y))
        grid.left.connect(lambda: self.readout.setText(""))
        self.slider, self.slice_label, self.readout = self.stack.slider, self.stack.slice_label, self.stack.readout
        self.slice_caption = self.stack.slice_caption
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.stack.sliceChosen.connect(self.set_slice)
        self.panel = ScoringPanel(session.questions)
        self.end_page = EndPage()
        self._build_layout()

        self.panel.likertChosen.connect(self.answer)
        self.panel.yesNoChosen.connect(self.answer)
        self.panel.commentSubmitted.connect(self._comment_submitted)
        self.panel.backRequested.connect(self.go_back)
        self.panel.nextRequested.connect(self.go_next)
        self.end_page.revisitRequested.connect(lambda: self.go_to(0))
        self.end_page.unscoredRequested.connect(lambda: self.go_to(self.session.first_unscored()))
        self.end_page.closeRequested.connect(self.close)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence("Ctrl+Q"))  # spelled out: not every platform binds StandardKey.Quit
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)
        self.show_current()

    def _build_layout(self) -> None:
        reading = QWidget()
        split = QHBoxLayout(reading)
        split.setContentsMargins(0, 0, 0, 0)
        split.setSpacing(0)
        split.addWidget(self.stack, 1)
        split.addWidget(self.panel)
        self.pages = QStackedWidget()
        self.pages.addWidget(reading)
        self.pages.addWidget(self.end_page)
        self.setCentralWidget(self.pages)

    # ----- showing a case -----

    def show_current(self) -> None:
        """Draw the session's current case (or the end page), then say so with caseShown."""
        s = self.session
        self.panel.set_progress(s.progress_text(), s.n_scored, s.n_items)
        if s.at_end:
            self.image = self.reference = None
            self.end_page.show_state(s.n_items, s.n_scored)
            self.pages.setCurrentWidget(self.end_page)
            self.caseShown.emit(s.position)
            return
        self.pages.setCurrentWidget(self.pages.widget(0))
        try:
            self.image = s.image()
            self.reference = s.reference_image()
        except StudyStoreError as exc:
            self.image = self.reference = None
            for pane in self.panes:
                pane.show_image(None, (0.0, 1.0))
            self.image_pane.set_hint(str(exc))
            self.panel.show_problem(str(exc))
            self.caseShown.emit(s.position)
            return
        self.reference_pane.setVisible(self.reference is not None)
        self.image_pane.set_title("Image to score" if self.reference is not None else "Image")
        self.geometry_of = {"image": self._geometry(self.image)}
        if self.reference is not None:
            self.geometry_of["reference"] = self._geometry(self.reference)
        self._link_panes()
        # The window starts where the viewer would start it; with a reference, from the
        # reference, so every method of a case opens at the same window.
        shown = self.reference if self.reference is not None else self.image
        self.window_level = initial_window(shown.data, shown.window, shown.units)
        self.stack.set_slice_count(self.image.n_slices)
        self.stack.show_slice_row(self.image.n_slices > 1)
        self.set_slice(self.image.n_slices // 2, force=True)
        self.stack.grid.fit()
        self.panel.show_answers(s.answers_for())
        self.panel.set_navigation(s.position > 0)
        self.image_pane.setFocus()  # arrow keys scroll slices at once
        self.caseShown.emit(s.position)

    @staticmethod
    def _geometry(image: Volume) -> SliceGeometry:
        return SliceGeometry(image.affine, image.shape, image.spacing)

    def _link_panes(self) -> None:
        """Reference and scored image share zoom and pan when they cover the same millimetres."""
        same = ("reference" in self.geometry_of
                and np.allclose(self.geometry_of["reference"].extent_mm, self.geometry_of["image"].extent_mm))
        self.stack.grid.link(*([["image", "reference"]] if same else []))
        for name, pane in (("image", self.image_pane), ("reference", self.reference_pane)):
            if name in self.geometry_of:
                pane.set_slice_geometry(self.geometry_of[name])

    def _pairs(self):
        """(pane, image, geometry) for every pane showing something."""
        yield self.image_pane, self.image, self.geometry_of.get("image")
        if self.reference is not None:
            yield self.reference_pane, self.reference, self.geometry_of.get("reference")

    def set_slice(self, index: int, force: bool = False) -> None:
        if self.image is None:
            return
        index = int(np.clip(index, 0, self.image.n_slices - 1))
        if index == self.slice_index and not force:
            return
        self.slice_index = index
        self.stack.show_slice(index, self.image.n_slices)
        levels = (self.window_level.low, self.window_level.high)
        for pane, image, geometry in self._pairs():
            # A reference with other slices follows by position in its own stack.
            k = min(index, image.n_slices - 1)
            pane.show_image(image.data[k], levels)
            pane.set_corners(f"Slice {k + 1}/{image.n_slices}   {geometry.slice_location(k)}",
                             self.window_level.describe(image.units))

    def step_slice(self, step: int) -> None:
        self.set_slice(self.slice_index + step)

    def _window_drag(self, dx: float, dy: float) -> None:
        if self.image is None:
            return
        data = self.image.data
        span = float(np.nanmax(data) - np.nanmin(data)) if data.size else 1.0
        self.window_level = self.window_level.dragged(dx, dy, span)
        self._update_levels()

    def reset_window(self) -> None:
        shown = self.reference if self.reference is not None else self.image
        if shown is None:
            return
        self.window_level = initial_window(shown.data, shown.window, shown.units)
        self._update_levels()
        self.stack.grid.fit()

    def _update_levels(self) -> None:
        levels = (self.window_level.low, self.window_level.high)
        for pane, image, geometry in self._pairs():
            pane.set_levels(levels)
            k = min(self.slice_index, image.n_slices - 1)
            pane.set_corners(f"Slice {k + 1}/{image.n_slices}   {geometry.slice_location(k)}",
                             self.window_level.describe(image.units))

    def _hovered(self, pane: ImagePane, x_mm: float, y_mm: float) -> None:
        image = self.reference if pane is self.reference_pane else self.image
        geometry = self.geometry_of.get(pane.name)
        if image is None or geometry is None:
            return
        pixel = geometry.pixel_at(x_mm, y_mm)
        if pixel is None:
            self.readout.setText("")
            return
        k = min(self.slice_index, image.n_slices - 1)
        units = "" if image.units in ("a.u.", "") else f" {image.units}"
        self.readout.setText(f"{geometry.format_position(k, *pixel)}   value {image.data[k][pixel]:.4g}{units}")

    # ----- answering and moving -----

    def answer(self, question_id: str, value) -> bool:
        """Commit an answer; then (when the case is complete and auto-advance is on) show the next case.

        The database has the answer before anything else changes on screen. When the
        commit fails the reader sees why, the buttons show what is stored, and the case stays.
        """
        s = self.session
        if s.at_end or self.image is None or not s.has(question_id):
            return False
        try:
            s.answer(question_id, value)
        except StudyStoreError as exc:
            self.panel.show_answers(s.answers_for())
            self.panel.show_problem(_sentence(str(exc)) + " Try again; the case stays until it is saved.")
            return False
        self.answerSaved.emit(question_id, value)
        saved = self._describe(question_id, value)
        self.panel.show_answers({**s.answers_for(), **self._typed_comment()})
        self.panel.set_progress(s.progress_text(), s.n_scored, s.n_items)
        if self.panel.advance.isChecked() and s.is_scored(s.current_item) and question_id != self.panel.comment_question:
            case_number = s.position + 1
            answers = s.answers_for()
            everything = ", ".join(self._describe(q.id, answers[q.id]) for q in s.required)
            if self.go_next():
                self.panel.show_saved(f"Saved case {case_number}: {everything}")
            return True
        self.panel.show_saved(f"Saved: {saved}")
        return True

    def _describe(self, question_id: str, value) -> str:
        q = self.session.question(question_id)
        if q.kind == "likert":
            return f"{q.id} {value} ({q.anchors[str(value)].split(':')[0].lower()})"
        if q.kind == "yesno":
            return f"{q.id} {'yes' if int(value) else 'no'}"
        return "comment"

    def _typed_comment(self) -> dict:
        """The comment as typed (not yet saved), so re-checking buttons does not wipe it."""
        text = self.panel.comment_text()
        return {} if text is None else {self.panel.comment_question: text}

    def _save_comment(self) -> bool:
        """Save a changed comment before leaving the case; False (and stay) when that fails."""
        s = self.session
        text = self.panel.comment_text()
        if text is None or s.at_end or self.image is None:
            return True
        stored = s.answers_for().get(self.panel.comment_question, "")
        if text == stored:
            return True
        try:
            s.answer(self.panel.comment_question, text)
        except StudyStoreError as exc:
            self.panel.show_problem(_sentence(str(exc)) + " The comment is still in the field; try again.")
            return False
        self.answerSaved.emit(self.panel.comment_question, text)
        return True

    def _comment_submitted(self) -> None:
        if self._save_comment():
            self.go_next()

    def go_to(self, position: int) -> bool:
        if not self._save_comment():
            return False
        self.session.go_to(position)
        self.show_current()
        return True

    def go_next(self) -> bool:
        return self.go_to(self.session.position + 1)

    def go_back(self) -> bool:
        return self.go_to(self.session.position - 1)

    # ----- keys -----

    def keyPressEvent(self, ev):
        """Score and move from the keyboard; keys the panes or the comment field use never arrive here."""
        key, text = ev.key(), ev.text().upper()
        likert = next((q for q in self.session.questions if q.kind == "likert"), None)
        yes_no = next((q for q in self.session.questions if q.kind == "yesno"), None)
        if likert is not None and text.isdigit() and int(text) in likert.scale:
            self.answer(likert.id, int(text))
        elif yes_no is not None and text in YES_NO_KEYS:
            self.answer(yes_no.id, YES_NO_KEYS[text])
        elif text == KEY_BACK:
            self.go_back()
        elif key == Qt.Key.Key_Space:
            self.go_next()
        elif key in SLICE_KEYS_UP:
            self.step_slice(1)
        elif key in SLICE_KEYS_DOWN:
            self.step_slice(-1)
        elif text == "R":
            self.reset_window()
        elif key == Qt.Key.Key_Escape and self.panel.comment is not None and self.panel.comment.hasFocus():
            self.image_pane.setFocus()
        elif key == Qt.Key.Key_Escape:  # as Ctrl+Q: every answer is already saved; reading resumes here
            QTimer.singleShot(0, self.close)  # after this event: closing inside it pulls the pane away
        else:
            super().keyPressEvent(ev)
            return
        ev.accept()

    # ----- visibility (reading time) and closing -----

    def _visibility_changed(self) -> None:
        if self.record_time:
            self.session.set_visible(self.isVisible() and not self.isMinimized())

    def showEvent(self, ev):
        super().showEvent(ev)
        self._visibility_changed()

    def hideEvent(self, ev):
        super().hideEvent(ev)
        self._visibility_changed()

    def changeEvent(self, ev):
        super().changeEvent(ev)
        if ev.type() == QEvent.Type.WindowStateChange:
            self._visibility_changed()

    def closeEvent(self, ev):
        # A typed comment that cannot be saved stops the first close (the reader sees why).
        if not self._save_comment() and not self._closing_refused:
            self._closing_refused = True
            ev.ignore()
            return
        problem = self.session.close()
        if problem:
            print(f"diffrecon: warning: reading time not saved: {problem}", file=sys.stderr)
        super().closeEvent(ev)


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".") + "."
    return text[:1].upper() + text[1:]


def run_reader_study(study: str | Path, reader: str, *, screenshot: Path | None = None,
                     size: tuple[int, int] = (1500, 950)) -> int:
    """Open the reader window (or, with ``screenshot``, draw it once, save it and exit)."""
    from .app import choose_qt_platform, dark_palette

    choose_qt_platform(scripted=screenshot is not None, how_to_script="--screenshot out.png")
    store: StudyStore = open_store(study)
    try:
        session = ReadingSession(store, reader)
        if session.added_reader:
            print(f"diffrecon: {session.reader} joins the study with an order of their own", file=sys.stderr)
        app = QApplication.instance() or QApplication(sys.argv[:1])
        app.setApplicationName("diffrecon")
        dark_palette(app)
        window = ReaderStudyWindow(session, record_time=screenshot is None)
        window.resize(*size)
        window.show()
        outcome = {"code": 0}
        if screenshot is not None:
            def save_and_quit() -> None:
                try:
                    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                    saved = window.grab().save(str(screenshot), "PNG")
                except OSError:
                    saved = False
                if saved:
                    print(screenshot)
                else:
                    print(f"diffrecon: error: {screenshot}: the screenshot could not be written", file=sys.stderr)
                    outcome["code"] = 2
                window.close()
                app.quit()

            QTimer.singleShot(400, save_and_quit)
        app.exec()
        window.close()
        print(f"diffrecon: {session.reader}: {session.n_scored} of {session.n_items} cases scored", file=sys.stderr)
    finally:
        store.close()
    return outcome["code"]
