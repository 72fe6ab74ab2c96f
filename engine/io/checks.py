"""Checks every loader runs before handing a volume to the rest of diffrecon."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import VolumeReadError, quoted  # noqa: F401 - quoted is used by the readers

def check_fits_in_memory(path: str | Path, shape: tuple[int, ...], stored_itemsize: int, fmt: str) -> None:
    """Raise before reading pixel data when the running command cannot hold this volume
    (the prediction and its measured figures live in :mod:`.budget`)."""
    from .budget import check_budget

    check_budget(path, shape, stored_itemsize, fmt)


def check_hdf5_stored(path: str | Path, ds, name: str) -> None:
    """Refuse an HDF5 dataset none of whose chunks was ever written: every voxel is its fill
    value, so a file of a kilobyte could declare (and make us allocate) gigabytes of nothing."""
    try:
        stored = int(ds.id.get_storage_size())
    except Exception:  # noqa: BLE001 - a virtual or external dataset: no storage to ask about
        return
    if stored == 0 and int(ds.size) > 0:
        dims = "x".join(str(int(s)) for s in ds.shape)
        raise VolumeReadError(path, f"dataset {name!r} ({dims}) stores no data: every voxel is its fill value, "
                                    "so there is no image in it")


@contextlib.contextmanager
def captured_messages() -> Iterator[list[str]]:
    """Collect what numpy, pydicom and nibabel would print (warnings, log lines) instead of printing it.

    Every message a user sees must be one line of ours: the readers turn what matters
    into a sentence (an overflow leaves non-finite voxels, which check_finite refuses)
    and the loader records the rest, one line each, in ``metadata["warnings"]``.
    """
    collected: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(record.getMessage())

    nib_logger = logging.getLogger("nibabel.global")
    old_handlers, old_propagate = nib_logger.handlers[:], nib_logger.propagate
    nib_logger.handlers, nib_logger.propagate = [_Keep()], False
    try:
        with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            yield collected
        collected.extend(str(w.message) for w in caught)
    finally:
        nib_logger.handlers, nib_logger.propagate = old_handlers, old_propagate


def special_kind(mode: int) -> str | None:
    """'a FIFO (named pipe)', 'a socket', 'a device'... for a mode that is not a plain file or folder."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file"
    return None


def link_problem(path: Path) -> str | None:
    """Why a path that does not resolve fails: a symlink loop or a dangling link (else None)."""
    try:
        os.stat(path)
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link that loops back on itself"
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"is a symbolic link to {target!r}, which does not exist"
        return None


def open_regular(path: str | Path) -> BinaryIO:
    """Open a regular file for reading, never blocking: a FIFO, socket or device is refused.

    O_NONBLOCK makes opening a FIFO return at once (a plain open waits for a writer
    forever); the fstat of the opened descriptor then refuses anything but a file, so
    a path swapped between a check and the open cannot slip through.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VolumeReadError(p, "is a symbolic link that loops back on itself") from exc
        if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket
            raise VolumeReadError(p, "is a socket, not a file") from exc
        raise
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None or stat.S_ISDIR(os.fstat(fd).st_mode):
            raise VolumeReadError(p, f"is {kind or 'a folder'}, not a file diffrecon can read")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_finite(path: str | Path, data: np.ndarray) -> None:
    """Reconstruction cannot work around NaN or infinite voxels: say so up front."""
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise VolumeReadError(
            path, f"{bad} voxel{'s are' if bad != 1 else ' is'} NaN or infinite; diffrecon needs finite intensities"
        )


def check_image_shape(path: str | Path, data: np.ndarray) -> None:
    """Slices must be 2D images of at least 8x8 pixels."""
    if data.ndim != 3:
        raise VolumeReadError(path, f"expected a 3D volume, got an array of shape {data.shape}")
    if min(data.shape[1:]) < 8 or data.shape[0] < 1:
        raise VolumeReadError(path, f"slices of {data.shape[1]}x{data.shape[2]} pixels are too small to reconstruct")
