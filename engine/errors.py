"""Errors the user sees as one sentence.

Every problem with the user's input (a file we cannot read, a setting that makes no
sense) is raised as a :class:`DiffreconError` subclass whose message is one plain
sentence. The CLI prints it as ``diffrecon: error: <file>: <sentence>`` and exits 2;
the viewer shows it in the status bar. Anything else escaping is a bug in diffrecon.
"""

from __future__ import annotations

from pathlib import Path


def quoted(name: str | Path) -> str:
    """A file name safe inside a one-line message: printable names as they are, others
    (a newline or another control character in the name) as a Python string literal."""
    text = str(name)
    return text if text.isprintable() else repr(text)


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped, so a message stays one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


class DiffreconError(Exception):
    """A problem the user can act on; ``str(err)`` is one sentence."""


class VolumeReadError(DiffreconError):
    """A file or folder could not be read as a volume.

    ``path`` names the file; ``reason`` is one sentence saying what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason.rstrip(".") + "."
        super().__init__(f"{quoted(self.path)}: {self.reason}")


class VolumeWriteError(DiffreconError):
    """An output could not be written (bad extension, unwritable folder, ...)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason.rstrip(".") + "."
        super().__init__(f"{quoted(self.path)}: {self.reason}")


class SettingsError(DiffreconError):
    """A combination of settings that cannot work (e.g. acceleration 40 on 64 lines)."""
