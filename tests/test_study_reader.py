"""The reader window with real widgets (offscreen) on a real study database.

Keys store the score before the next case appears, Back shows the earlier answer,
resume lands on the first unscored case, nothing on screen names a method, the image
pane scrolls slices and sets the window, reading time counts only while visible.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QAbstractButton, QLabel, QLineEdit, QWidget

from study_support import METHODS

pytest_plugins = ("study_support",)  # its fixtures: case_root, study

pytestmark = pytest.mark.gui


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _open(qtbot, folder, reader="alice", clock=None):
    from diffrecon.study import ReadingSession, open_store
    from diffrecon.viewer.reader_study import ReaderStudyWindow

    store = open_store(folder)
    session = ReadingSession(store, reader, clock=clock or FakeClock())
    window = ReaderStudyWindow(session)
    qtbot.addWidget(window)
    window.resize(1100, 700)
    window.show()
    qtbot.waitExposed(window)
    return window, store


def _stored(folder, reader, item, question="quality"):
    """What another connection (another process, in effect) reads from the database now."""
    con = sqlite3.connect(folder / "study.sqlite")
    try:
        row = con.execute("SELECT value FROM scores WHERE reader = ? AND item = ? AND question = ?",
                          (reader, item, question)).fetchone()
        return row[0] if row else None
    finally:
        con.close()


def test_keys_commit_each_score_before_the_next_case_and_back_shows_it(qtbot, study):
    window, store = _open(qtbot, study)
    session = window.session
    order = session.order
    assert session.position == 0 and window.panel.progress_label.text() == "Case 1 of 6 · 0 scored"

    seen_when_shown = []
    window.caseShown.connect(lambda pos: seen_when_shown.append(
        (pos, _stored(study, "alice", order[pos - 1]) if pos > 0 else None)))
    # The key goes to the image pane, which has the focus, and rises to the window.
    qtbot.keyClick(window.image_pane, "4")
    qtbot.keyClick(window.image_pane, "2")
    assert seen_when_shown == [(1, 4), (2, 2)]  # in the database before the next case was drawn
    assert session.position == 2 and "2 scored" in window.panel.progress_label.text()
    assert window.panel.status.text() == "✓ Saved case 2: quality 2 (poor)"

    qtbot.keyClick(window, "b")
    assert session.position == 1 and window.panel.buttons["quality"][2].isChecked()
    assert not window.panel.buttons["quality"][4].isChecked()
    window.panel.buttons["quality"][5].click()  # an edit by mouse; the old answer goes to the history
    assert _stored(study, "alice", order[1]) == 5
    assert [v for v, _, _ in store.history("alice", order[1], "quality")] == [2]
    assert session.position == 2
    qtbot.keyClick(window, Qt.Key.Key_Space)  # next without scoring
    assert session.position == 3 and _stored(study, "alice", order[2]) is None
    window.close()
    store.close()


def test_resume_lands_on_the_first_unscored_case_and_the_end_says_thank_you(qtbot, study):
    from diffrecon.study import open_store

    with open_store(study) as store:
        quality, order = store.questions()[0], store.reading_order("bob")
        for item in order[:2] + order[3:4]:
            store.answer("bob", item, quality, 3)
    window, store = _open(qtbot, study, "bob")
    assert window.session.position == 2 and window.panel.progress_label.text() == "Case 3 of 6 · 3 scored"
    for key in "5125":  # scoring moves to the next position, the already scored one included
        qtbot.keyClick(window, key)
    assert window.session.at_end and window.pages.currentWidget() is window.end_page
    assert window.end_page.message.text() == "All 6 cases scored — thank you"
    window.end_page.revisit_button.click()
    assert window.session.position == 0 and window.panel.buttons["quality"][3].isChecked()
    window.close()
    store.close()


def test_no_method_name_anywhere_on_screen(qtbot, tmp_path, case_root):
    from diffrecon.study import create_study

    folder = create_study([str(case_root)], tmp_path / "blind", readers=["alice"],
                          questions=["quality", "artefact", "comment"]).folder
    window, store = _open(qtbot, folder)
    for _ in range(window.session.n_items):
        texts = [window.windowTitle()]
        for w in window.findChildren(QWidget):
            if not w.isVisible():
                continue
            texts += [w.toolTip(), w.windowTitle(), w.accessibleName(), w.objectName()]
            if isinstance(w, (QLabel, QAbstractButton)):
                texts.append(w.text())
            if isinstance(w, QLineEdit):
                texts += [w.text(), w.placeholderText()]
        for pane in window.panes:
            texts += [pane.title_text, pane.corner_bl.text(), pane.corner_br.text()]
        blob = "\n".join(texts).lower()
        for secret in (*METHODS, "case0", str(case_root).lower(), window.session.current_item):
            assert secret not in blob, secret
        qtbot.keyClick(window, Qt.Key.Key_Space)
    window.close()
    store.close()


def test_artefact_and_comment_questions_and_slices_and_window_level_through_the_pane(qtbot, tmp_path, case_root):
    from diffrecon.study import create_study

    folder = create_study([str(case_root)], tmp_path / "full", readers=["alice"],
                          questions=["quality", "artefact", "comment"]).folder
    window, store = _open(qtbot, folder)
    item = window.session.current_item
    pane = window.image_pane

    # Slices: the wheel over the pane and the arrow keys, as in the main viewer.
    assert window.slice_index == 1 and window.slider.isVisible()
    centre = pane.viewport().rect().center()
    wheel = QWheelEvent(QPointF(centre), QPointF(pane.viewport().mapToGlobal(centre)), QPoint(0, 0), QPoint(0, -120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    from PySide6.QtWidgets import QApplication

    QApplication.sendEvent(pane.viewport(), wheel)
    assert window.slice_index == 0
    qtbot.keyClick(pane, Qt.Key.Key_Up)
    qtbot.keyClick(pane, Qt.Key.Key_Up)
    assert window.slice_index == 2
    assert np.array_equal(pane.image.image, window.image.data[2])
    assert pane.corner_bl.text().startswith("Slice 3/3")

    # Window/level: a right drag in the pane narrows/widens it and moves the level.
    before = window.window_level
    pane.windowDrag.emit(40.0, -20.0)
    assert window.window_level.width > before.width and window.window_level.level > before.level
    assert pane.image.levels[1] == pytest.approx(window.window_level.high)

    # Quality alone does not complete the case when the artefact question is asked.
    qtbot.keyClick(window, "3")
    assert window.session.current_item == item and _stored(folder, "alice", item) == 3
    window.panel.comment.setText("ringing near the skull")
    qtbot.keyClick(window, "n")  # the comment typed so far survives the re-check of the buttons
    assert window.session.current_item != item
    assert _stored(folder, "alice", item, "artefact") == 0
    assert _stored(folder, "alice", item, "comment") == "ringing near the skull"

    # Typing in the comment field types: digits and letters are not scores there.
    next_item = window.session.current_item
    window.panel.comment.setFocus()
    qtbot.keyClicks(window.panel.comment, "5 y")
    assert window.panel.comment.text() == "5 y" and _stored(folder, "alice", next_item) is None
    qtbot.keyClick(window.panel.comment, Qt.Key.Key_Return)  # saves the comment and moves on
    assert _stored(folder, "alice", next_item, "comment") == "5 y" and window.session.current_item != next_item
    window.close()
    store.close()


def test_reading_time_counts_only_while_visible_and_a_failed_commit_keeps_the_case(qtbot, study):
    from diffrecon.study import StudyStoreError

    clock = FakeClock()
    window, store = _open(qtbot, study, clock=clock)
    item = window.session.current_item
    clock.now += 12.0
    window.hide()
    clock.now += 100.0  # hidden: not counted
    window.show()
    qtbot.waitExposed(window)
    clock.now += 3.0

    def refuse(*args, **kwargs):
        raise StudyStoreError("the answer to 'quality' was not saved: the disk is full")

    real_answer = store.answer
    store.answer = refuse
    qtbot.keyClick(window, "4")
    assert window.session.current_item == item and not window.panel.buttons["quality"][4].isChecked()
    assert window.panel.status.text() == ("The answer to 'quality' was not saved: the disk is full. "
                                          "Try again; the case stays until it is saved.")
    store.answer = real_answer
    qtbot.keyClick(window, "4")
    assert window.session.current_item != item
    assert store.reading_seconds("alice")[("alice", item)] == pytest.approx(15.0)
    window.close()
    store.close()
