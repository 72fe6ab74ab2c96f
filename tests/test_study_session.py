"""The Qt-free reading session: positions, resume, progress and time on each case."""

from __future__ import annotations

import pytest

pytest_plugins = ("study_support",)  # its fixtures: case_root, study


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_moving_resuming_and_progress(study):
    from diffrecon.study import ReadingSession, open_store

    with open_store(study) as store:
        session = ReadingSession(store, "alice", clock=Clock())
        assert (session.position, session.n_items, session.n_scored) == (0, 6, 0)
        session.back()  # nothing before the first case
        assert session.position == 0
        for score in (3, 4):
            session.answer("quality", score)
            session.next()
        session.go_to(4)
        session.answer("quality", 1)
        assert session.progress_text() == "Case 5 of 6 · 3 scored"
        session.go_to(99)
        assert session.at_end and session.current_item is None and session.progress_text() == "End of 6 cases · 3 scored"
        session.resume()
        assert session.position == 2  # the first unscored, searching from the start at the end
        session.go_to(4)
        session.resume()
        assert session.position == 5  # from a case on, the next unscored after it
        assert ReadingSession(store, "alice").position == 2  # a reopened session starts at the first unscored
        assert session.answers_for(session.order[1]) == {"quality": 4}


def test_time_counts_while_visible_and_is_saved_on_leaving_or_with_the_answer(study):
    from diffrecon.study import ReadingSession, open_store

    clock = Clock()
    with open_store(study) as store:
        session = ReadingSession(store, "bob", clock=clock)
        first, second = session.order[:2]
        clock.now = 5.0  # not visible yet: not counted
        session.set_visible(True)
        clock.now = 12.0
        session.next()  # leaving saves the 7 s
        assert store.reading_seconds("bob") == {("bob", first): pytest.approx(7.0)}
        clock.now = 15.0
        session.set_visible(False)
        clock.now = 60.0
        session.set_visible(True)
        clock.now = 61.0
        assert session.seconds_on() == pytest.approx(4.0)
        session.answer("quality", 2)  # the answer carries the time with it
        assert store.reading_seconds("bob")[("bob", second)] == pytest.approx(4.0)
        session.back()
        clock.now = 63.0
        session.close()
        assert store.reading_seconds("bob")[("bob", first)] == pytest.approx(9.0)
