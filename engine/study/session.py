"""One reader working through a study: position, answers, back/next, time on each case.

The Qt-free model behind the reader window (``diffrecon.viewer.reader_study``), as
napari splits its components from their Qt views: everything that decides what is
shown and what is saved lives here and is tested without widgets.

* Positions run over the reader's stored order; ``position == n_items`` is the end.
* :meth:`ReadingSession.answer` commits to the database before it returns; only then
  may the caller move on. A failed commit raises :class:`StudyStoreError` and nothing
  moves.
* Time on a case counts while the case is shown and the window is visible
  (:meth:`set_visible`), summed over visits. It is saved with the next answer to that
  case, or when the reader leaves the case; what could not be saved is kept and retried.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ..io.volume import Volume
from .design import check_reader_name, ensure_reader
from .images import IMAGES_DIR, read_image
from .store import Question, StudyStore, StudyStoreError, check_value


class ReadingSession:
    def __init__(self, store: StudyStore, reader: str, *, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.reader = check_reader_name(reader)
        self.added_reader = ensure_reader(store, self.reader)
        self.order = store.reading_order(self.reader)
        self.questions = store.questions()
        self._answers = store.answers_by_item(self.reader)
        saved = store.reading_seconds(self.reader)
        self._saved_seconds = {item: s for (_, item), s in saved.items()}
        self._pending_seconds: dict[str, float] = {}
        self._clock = clock
        self._visible = False
        self._shown_since: float | None = None
        self.position = self.first_unscored()

    # ----- what there is -----

    @property
    def n_items(self) -> int:
        return len(self.order)

    @property
    def at_end(self) -> bool:
        return self.position >= self.n_items

    @property
    def current_item(self) -> str | None:
        return None if self.at_end else self.order[self.position]

    @property
    def required(self) -> list[Question]:
        return [q for q in self.questions if q.required]

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)

    def has(self, question_id: str) -> bool:
        return any(q.id == question_id for q in self.questions)

    def answers_for(self, item: str | None = None) -> dict[str, Any]:
        """The stored answers for ``item`` (default: the current one) by question id."""
        item = item if item is not None else self.current_item
        return dict(self._answers.get(item, {})) if item is not None else {}

    def is_scored(self, item: str) -> bool:
        """Every required question of ``item`` has an answer."""
        given = self._answers.get(item, {})
        return all(q.id in given for q in self.required)

    @property
    def n_scored(self) -> int:
        return sum(self.is_scored(item) for item in self.order)

    @property
    def complete(self) -> bool:
        return self.n_scored == self.n_items

    def first_unscored(self, start: int = 0) -> int:
        """The first position from ``start`` on (wrapping round) without a full score; n_items when none."""
        for k in range(self.n_items):
            position = (start + k) % self.n_items
            if not self.is_scored(self.order[position]):
                return position
        return self.n_items

    def progress_text(self) -> str:
        scored = f"{self.n_scored} scored"
        if self.at_end:
            return f"End of {self.n_items} cases · {scored}"
        return f"Case {self.position + 1} of {self.n_items} · {scored}"

    # ----- images -----

    def image(self, item: str | None = None) -> Volume:
        item = item if item is not None else self.current_item
        if item is None:
            raise StudyStoreError("there is no case to show at the end of the study")
        return read_image(self.store.folder / IMAGES_DIR, item)

    def reference_image(self, item: str | None = None) -> Volume | None:
        item = item if item is not None else self.current_item
        ref = self.store.reference_image(item) if item is not None else None
        return read_image(self.store.folder / IMAGES_DIR, ref) if ref else None

    # ----- answering -----

    def answer(self, question_id: str, value: Any) -> bool:
        """Commit an answer for the current case (with its reading time); True when it changed.

        Raises StudyStoreError when the database refused it; the position never moves here.
        """
        item = self.current_item
        if item is None:
            raise StudyStoreError("there is no case to answer at the end of the study")
        question = self.question(question_id)
        self._accrue()
        seconds = self._pending_seconds.get(item, 0.0)
        changed = self.store.answer(self.reader, item, question, value, add_seconds=seconds)
        # Committed: only now does the session believe it.
        self._pending_seconds.pop(item, None)
        self._saved_seconds[item] = self._saved_seconds.get(item, 0.0) + seconds
        self._answers.setdefault(item, {})[question_id] = check_value(question, value)
        return changed

    def seconds_on(self, item: str | None = None) -> float:
        """Seconds the case has been shown, over every visit (saved, pending and running)."""
        item = item if item is not None else self.current_item
        if item is None:
            return 0.0
        running = 0.0
        if item == self.current_item and self._shown_since is not None:
            running = self._clock() - self._shown_since
        return self._saved_seconds.get(item, 0.0) + self._pending_seconds.get(item, 0.0) + running

    # ----- moving -----

    def go_to(self, position: int) -> None:
        """Show another position (0..n_items; n_items is the end), saving the time spent here."""
        position = max(0, min(int(position), self.n_items))
        if position == self.position:
            return
        self._accrue()
        self.save_time()
        self.position = position
        self._restart_clock()

    def next(self) -> None:
        self.go_to(self.position + 1)

    def back(self) -> None:
        self.go_to(self.position - 1)

    def resume(self) -> None:
        """Go to the first case without a full score after this one (or the end)."""
        self.go_to(self.first_unscored(self.position if not self.at_end else 0))

    # ----- time -----

    def set_visible(self, visible: bool) -> None:
        """The window became visible (shown, restored) or not (hidden, minimised)."""
        if visible == self._visible:
            return
        self._accrue()
        self._visible = visible
        self._restart_clock()

    def _restart_clock(self) -> None:
        self._shown_since = self._clock() if self._visible and not self.at_end else None

    def _accrue(self) -> None:
        """Move the running time of the shown case into its pending seconds."""
        if self._shown_since is None or self.current_item is None:
            return
        now = self._clock()
        item = self.current_item
        self._pending_seconds[item] = self._pending_seconds.get(item, 0.0) + max(now - self._shown_since, 0.0)
        self._shown_since = now

    def save_time(self) -> str | None:
        """Commit the reading time not saved yet; returns the problem as a sentence, or None.

        A failure keeps the seconds pending (they go with the next answer or the next
        try), so reading time is never the reason a reader cannot move on.
        """
        self._accrue()
        for item, seconds in list(self._pending_seconds.items()):
            try:
                self.store.add_time(self.reader, item, seconds)
            except StudyStoreError as exc:
                return str(exc)
            self._pending_seconds.pop(item)
            self._saved_seconds[item] = self._saved_seconds.get(item, 0.0) + seconds
        return None

    def close(self) -> str | None:
        """Save the time and stop counting (the store stays open: the caller owns it)."""
        problem = self.save_time()
        self._visible = False
        self._shown_since = None
        return problem
