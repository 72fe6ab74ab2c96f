"""Measuring that the GUI stays responsive while the engine samples.

:class:`StallMeter` runs a 10 ms timer on the GUI thread and records how late each tick
fires: the longest lateness is the longest time the event loop could not react (a
user's click or drag waited that long). It also reads the GUI thread's own CPU time
between ticks: a late tick whose gap the GUI thread spent computing is the viewer's own
work; one it spent waiting is the machine (other processes on the cores, or the worker
threads holding Python's GIL). :class:`FrameRate` counts frames drawn.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, Qt, QTimer


class StallMeter(QObject):
    INTERVAL_MS = 10

    def __init__(self, parent=None):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._last = 0.0
        self._last_cpu = 0.0
        self.longest_ms = 0.0
        self.busy_in_longest_ms = 0.0  # the GUI thread's CPU time within the longest gap
        self.longest_busy_ms = 0.0  # the most CPU time the GUI thread spent between two ticks
        self.longest_busy_streaming_ms = 0.0  # the same, since the first frame
        self.ticks = 0
        self.late_ms: list[float] = []
        self.streaming_from: int | None = None  # the tick of the first frame (see mark_streaming)

    def start(self) -> None:
        self.longest_ms = self.busy_in_longest_ms = self.longest_busy_ms = self.longest_busy_streaming_ms = 0.0
        self.ticks = 0
        self.late_ms = []
        self.streaming_from = None
        self._last = time.perf_counter()
        self._last_cpu = time.thread_time()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def _tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        late_ms = (now - self._last) * 1000.0 - self.INTERVAL_MS
        busy_ms = (cpu - self._last_cpu) * 1000.0
        self._last, self._last_cpu = now, cpu
        self.ticks += 1
        if late_ms > self.longest_ms:
            self.longest_ms, self.busy_in_longest_ms = late_ms, busy_ms
        self.longest_busy_ms = max(self.longest_busy_ms, busy_ms)
        if self.streaming_from is not None:
            self.longest_busy_streaming_ms = max(self.longest_busy_streaming_ms, busy_ms)
        self.late_ms.append(late_ms)

    def percentile_ms(self, q: float) -> float:
        """Lateness below which ``q`` percent of the ticks fired (one busy moment is not the norm)."""
        if not self.late_ms:
            return 0.0
        ordered = sorted(self.late_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100.0))]

    def mark_streaming(self) -> None:
        """From now on the results stream (the first frame is in): the start-up before it,
        when the workers import and load the prior, is measured apart."""
        if self.streaming_from is None:
            self.streaming_from = len(self.late_ms)

    @property
    def longest_streaming_ms(self) -> float:
        """The longest lateness since the first frame (0 when no frame came)."""
        if self.streaming_from is None:
            return 0.0
        return max(self.late_ms[self.streaming_from:], default=0.0)

    def count_over(self, ms: float) -> int:
        return sum(1 for late in self.late_ms if late > ms)


class FrameRate:
    """Frames drawn between start() and the last frame: frames per second while sampling."""

    def __init__(self):
        self.start()

    def start(self) -> None:
        self.frames = 0
        self._first = None
        self._last = None

    def frame(self) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first = now
        self._last = now
        self.frames += 1

    @property
    def per_second(self) -> float:
        if self.frames < 2 or self._last == self._first:
            return 0.0
        return (self.frames - 1) / (self._last - self._first)
