"""Worker threads: run an engine job (a generator from :mod:`.engine_jobs`) off the GUI thread.

Every item the generator yields is sent to the GUI thread through a queued signal,
tagged with the job's id so that results of a cancelled or superseded job are ignored.
Errors become one sentence (``DiffreconError`` text, or a short description of an
unexpected exception, whose traceback goes to stderr), and the app keeps running.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import traceback
from typing import Callable, Iterator

from PySide6.QtCore import QThread, Signal

from diffrecon.errors import DiffreconError

_ids = itertools.count(1)


def error_sentence(exc: BaseException) -> str:
    """The one sentence the status bar shows for an exception."""
    if isinstance(exc, DiffreconError):
        text = str(exc).strip()
    else:
        traceback.print_exception(exc, file=sys.stderr)  # a bug: keep the details for the report
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        text = f"Internal error ({type(exc).__name__}{': ' + first if first else ''})"
    text = " ".join(text.split())
    return text if text.endswith((".", "!", "?")) else text + "."


class JobThread(QThread):
    """Runs ``job(cancelled)`` (a generator function) and emits what it yields.

    ``item(job_id, obj)`` per yielded object; ``failed(job_id, sentence)`` on an error;
    ``completed(job_id, was_cancelled)`` always, last.
    """

    item = Signal(int, object)
    failed = Signal(int, str)
    completed = Signal(int, bool)

    def __init__(self, name: str, job: Callable[[Callable[[], bool]], Iterator[object]], parent=None):
        super().__init__(parent)
        self.setObjectName(name)
        self.job_id = next(_ids)
        self._job = job
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Ask the job to stop at its next check (within one sampling step)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:  # runs on the worker thread
        _lower_this_threads_priority()
        try:
            for obj in self._job(self._cancel.is_set):
                if self._cancel.is_set():
                    break
                self.item.emit(self.job_id, obj)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the status bar
            if not self._cancel.is_set():
                self.failed.emit(self.job_id, error_sentence(exc))
        finally:
            self.completed.emit(self.job_id, self._cancel.is_set())


WORKER_NICENESS = 5


def _lower_this_threads_priority() -> None:
    """Let the GUI thread win the CPU whenever it wants it (Linux niceness is per thread).

    With the sampler, the baseline and the GUI on two busy cores, the event loop otherwise
    waits up to ~80 ms for a time slice; a niced worker loses nothing while the GUI idles.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


class JobSlot:
    """At most one live job of a kind (loading, inputs, baseline, diffusion).

    Starting a new job cancels the previous one; its late signals are ignored by id.
    Finished threads are kept referenced until they have really stopped.
    """

    def __init__(self, on_item, on_failed, on_completed):
        self.current: JobThread | None = None
        self._retired: list[JobThread] = []
        self._handlers = (on_item, on_failed, on_completed)

    def start(self, name: str, job) -> JobThread:
        self.cancel()
        thread = JobThread(name, job)
        on_item, on_failed, on_completed = self._handlers
        thread.item.connect(lambda jid, obj: jid == thread.job_id and thread is self.current and on_item(obj))
        thread.failed.connect(lambda jid, msg: thread is self.current and on_failed(msg))
        thread.completed.connect(lambda jid, was_cancelled: self._completed(thread, was_cancelled, on_completed))
        self.current = thread
        thread.start()
        return thread

    def _completed(self, thread: JobThread, was_cancelled: bool, on_completed) -> None:
        if thread is self.current:
            self.current = None
            on_completed(was_cancelled)
        self._retired = [t for t in self._retired if t.isRunning()]

    def cancel(self) -> None:
        if self.current is not None:
            self.current.cancel()
            self._retired.append(self.current)
            self.current = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    def wait_all(self) -> None:
        """Block until every thread of this slot has stopped (used on exit).

        No time limit: a cancelled job stops at its next check, but one unit of work (a CT
        baseline solve, a sampling step on a busy machine) can take longer than any fixed
        bound, and a QThread destroyed while it runs aborts the whole process.
        """
        for t in [*self._retired, *([self.current] if self.current else [])]:
            t.wait()
