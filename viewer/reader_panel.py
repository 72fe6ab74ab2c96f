"""The reader's scoring panel and the end-of-study page: widgets only, no database.

The panel shows the questions of a study (a 1-5 scale with its anchors, yes/no, a
comment), progress, Back/Next and the keys for each; it says what the reader chose
through signals and shows what :class:`diffrecon.study.ReadingSession` stored. Nothing
here may name a method: the reader only ever sees positions and answers.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QFrame, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                               QPushButton, QVBoxLayout, QWidget)

from diffrecon.study import Question

# Keys, chosen so none clashes with the image pane (arrows and Page Up/Down scroll slices,
# +/- zoom, Home/F fit) or with typing in the comment field (which keeps its own keys).
KEY_BACK = "B"
KEY_NEXT = "Space"
KEY_RESET_WINDOW = "R"
YES_NO_KEYS = {"Y": 1, "N": 0}

SCORE_STYLE = """
QPushButton { text-align: left; padding: 6px 12px; font-size: 14px; border: 1px solid #5a5a60;
              border-radius: 4px; background: #3a3a3e; }
QPushButton:hover { background: #48484e; }
QPushButton:checked { background: #2f6fbf; border-color: #8fc1ff; color: white; }
"""
PROMPT_STYLE = "font-size: 15px; font-weight: bold; color: #f0f0f0;"
HINT_STYLE = "color: #a0a0a0; font-size: 12px;"
SAVED_STYLE = "color: #7fd18b; font-size: 13px;"
PROBLEM_STYLE = "color: #ff6a55; font-size: 13px;"


def _no_focus(button: QPushButton) -> QPushButton:
    """Buttons never take the keyboard: Space and the score keys must reach the window."""
    button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return button


class ScoringPanel(QWidget):
    likertChosen = Signal(str, int)  # question id, score
    yesNoChosen = Signal(str, int)  # question id, 1 yes / 0 no
    commentSubmitted = Signal()  # Enter in the comment field
    backRequested = Signal()
    nextRequested = Signal()

    def __init__(self, questions: list[Question], parent=None):
        super().__init__(parent)
        self.setObjectName("scoring-panel")
        self.setMinimumWidth(360)
        self.setMaximumWidth(420)
        self.questions = questions
        layout = QVBoxLayout(self)
        layout.setContentsMargins(14, 12, 14, 12)
        layout.setSpacing(8)

        self.progress_label = QLabel("")
        self.progress_label.setStyleSheet("font-size: 16px; font-weight: bold;")
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(False)
        self.progress_bar.setMaximumHeight(8)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.progress_bar)

        self.groups: dict[str, QButtonGroup] = {}
        self.buttons: dict[str, dict[int, QPushButton]] = {}
        self.comment: QLineEdit | None = None
        self.comment_question: str | None = None
        for q in questions:
            layout.addWidget(self._separator())
            prompt = QLabel(q.prompt)
            prompt.setStyleSheet(PROMPT_STYLE)
            prompt.setWordWrap(True)
            layout.addWidget(prompt)
            if q.kind == "likert":
                layout.addLayout(self._likert(q))
            elif q.kind == "yesno":
                layout.addLayout(self._yes_no(q))
            else:
                self.comment = QLineEdit()
                self.comment.setPlaceholderText("Optional; Enter saves it and goes on")
                readable = self.comment.palette()  # the dark theme's default placeholder is near-invisible
                readable.setColor(QPalette.ColorRole.PlaceholderText, QColor(135, 135, 140))
                self.comment.setPalette(readable)
                self.comment.returnPressed.connect(self.commentSubmitted)
                self.comment_question = q.id
                layout.addWidget(self.comment)

        layout.addWidget(self._separator())
        nav = QHBoxLayout()
        self.back_button = _no_focus(QPushButton(f"◀  Back  ({KEY_BACK})"))
        self.next_button = _no_focus(QPushButton(f"Next  ({KEY_NEXT})  ▶"))
        for b in (self.back_button, self.next_button):
            b.setMinimumHeight(34)
        self.back_button.clicked.connect(self.backRequested)
        self.next_button.clicked.connect(self.nextRequested)
        nav.addWidget(self.back_button)
        nav.addWidget(self.next_button)
        layout.addLayout(nav)
        self.advance = QCheckBox("Go to the next case once this one is scored")
        self.advance.setChecked(True)
        self.advance.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        layout.addWidget(self.advance)

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(40)
        self.status.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.status)
        layout.addStretch(1)
        keys = QLabel(self._key_help())
        keys.setStyleSheet(HINT_STYLE)
        keys.setWordWrap(True)
        layout.addWidget(keys)
        self._fade = QTimer(self)  # the "saved" line goes after a few seconds; problems stay
        self._fade.setSingleShot(True)
        self._fade.setInterval(4000)
        self._fade.timeout.connect(lambda: self.status.setText(""))

    # ----- building -----

    @staticmethod
    def _separator() -> QFrame:
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setStyleSheet("color: #505055;")
        return line

    def _likert(self, q: Question) -> QVBoxLayout:
        column = QVBoxLayout()
        column.setSpacing(5)
        group = QButtonGroup(self)
        group.setExclusive(False)  # exclusivity by hand: a group cannot show "no answer yet" otherwise
        self.groups[q.id], self.buttons[q.id] = group, {}
        for value in reversed(q.scale):  # best at the top, as the scale is usually printed
            name, _, detail = q.anchors[str(value)].partition(":")
            text = f"{value}   {name.strip()}" + (f"\n      {detail.strip()}" if detail else "")
            column.addWidget(self._answer_button(q.id, value, text, 48, self.likertChosen))
        return column

    def _yes_no(self, q: Question) -> QHBoxLayout:
        row = QHBoxLayout()
        group = QButtonGroup(self)
        group.setExclusive(False)
        self.groups[q.id], self.buttons[q.id] = group, {}
        for key, value in YES_NO_KEYS.items():
            row.addWidget(self._answer_button(q.id, value, f"{q.anchors[str(value)]}  ({key})", 36, self.yesNoChosen))
        return row

    def _answer_button(self, qid: str, value: int, text: str, height: int, chosen) -> QPushButton:
        """A checkable answer in question ``qid``'s group; clicking emits ``chosen(qid, value)``."""
        button = _no_focus(QPushButton(text))
        button.setCheckable(True)
        button.setStyleSheet(SCORE_STYLE)
        button.setMinimumHeight(height)
        button.clicked.connect(lambda _=False, v=value: chosen.emit(qid, v))
        self.groups[qid].addButton(button, value)
        self.buttons[qid][value] = button
        return button

    def _key_help(self) -> str:
        parts = []
        likert = [q for q in self.questions if q.kind == "likert"]
        if likert:
            parts.append(f"{likert[0].scale[0]}–{likert[0].scale[-1]} score")
        if any(q.kind == "yesno" for q in self.questions):
            parts.append("Y / N artefact")
        parts += [f"{KEY_BACK} back", f"{KEY_NEXT} next"]
        return ("Keys: " + " · ".join(parts) + "\nImage: wheel or ↑/↓ slices · right-drag window/level · "
                "Ctrl+wheel zoom · drag pan · double-click fit · R reset\nEsc or Ctrl+Q: close (answers are saved)")

    # ----- showing the session -----

    def show_answers(self, answers: dict) -> None:
        """Check the buttons of the stored answers (and only those), fill the comment."""
        for qid, buttons in self.buttons.items():
            for value, button in buttons.items():
                button.setChecked(answers.get(qid) == value)
        if self.comment is not None:
            self.comment.setText(str(answers.get(self.comment_question, "")))

    def comment_text(self) -> str | None:
        return None if self.comment is None else self.comment.text().strip()

    def set_progress(self, text: str, scored: int, total: int) -> None:
        self.progress_label.setText(text)
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(scored)

    def set_navigation(self, can_go_back: bool) -> None:
        self.back_button.setEnabled(can_go_back)

    def show_saved(self, text: str) -> None:
        self.status.setStyleSheet(SAVED_STYLE)
        self.status.setText("✓ " + text)
        self._fade.start()

    def show_problem(self, text: str) -> None:
        self._fade.stop()
        self.status.setStyleSheet(PROBLEM_STYLE)
        self.status.setText(text)


class EndPage(QWidget):
    """After the last case: thanks when everything is scored, else what is left."""

    revisitRequested = Signal()  # back to case 1
    unscoredRequested = Signal()  # to the first case still without a score
    closeRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("end-page")
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        self.message = QLabel("")
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.message.setStyleSheet("font-size: 22px; font-weight: bold;")
        self.detail = QLabel("")
        self.detail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.detail.setStyleSheet("font-size: 14px; color: #b0b0b0;")
        layout.addWidget(self.message)
        layout.addWidget(self.detail)
        row = QHBoxLayout()
        row.addStretch(1)
        self.unscored_button = _no_focus(QPushButton("Go to the first unscored case"))
        self.revisit_button = _no_focus(QPushButton("Revisit from case 1"))
        self.close_button = _no_focus(QPushButton("Close"))
        for b in (self.unscored_button, self.revisit_button, self.close_button):
            b.setMinimumHeight(36)
            b.setMinimumWidth(180)
            row.addWidget(b)
        row.addStretch(1)
        self.unscored_button.clicked.connect(self.unscoredRequested)
        self.revisit_button.clicked.connect(self.revisitRequested)
        self.close_button.clicked.connect(self.closeRequested)
        layout.addLayout(row)
        layout.addStretch(2)

    def show_state(self, n_items: int, n_scored: int) -> None:
        if n_scored >= n_items:
            self.message.setText(f"All {n_items} cases scored — thank you")
            self.detail.setText("Every answer is saved. You can close the window, or revisit cases to change "
                                "an answer (the earlier one is kept in the study's history).")
        else:
            left = n_items - n_scored
            self.message.setText(f"End of the list: {left} of {n_items} cases still need a score")
            self.detail.setText("Your answers so far are saved; you can also close and come back later.")
        self.unscored_button.setVisible(n_scored < n_items)
