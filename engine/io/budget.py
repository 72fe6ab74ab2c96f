"""How much memory a command will need for a volume, predicted from its header before any voxel is read.

A file's header says how many voxels it holds and in what type; a tiny file can declare
gigabytes (an HDF5 dataset that is all fill value, a .nii.gz or .npz of zeros). Each
reader calls :func:`check_budget` once it knows the shape and stored type, before it
reads pixel data, and it refuses with one sentence giving the figure and the way round
it when the prediction does not fit in the memory this process may still use.

The prediction is ``voxels x bytes per voxel``, both parts measured (peak resident
memory from ``/usr/bin/time -v`` over two volume sizes, the difference divided by the
difference in voxels, so the fixed cost of the imports drops out; rerun
``python tests/measure_memory_budget.py`` to redo them):

* reading: the stored type's bytes (the raw array) plus :data:`READ_BYTES_PER_VOXEL`
  of the format (the float32 volume and the reader's own copies);
* the command's work on the slices it processes: :data:`COMMAND_BYTES_PER_VOXEL`
  (``reconstruct`` holds the ground truth, the measurements, each method's output
  and the solvers' work arrays). ``--slices`` narrows that part, so the prediction uses
  the slices the command line chose (:func:`set_command`).
"""

from __future__ import annotations

import resource
from pathlib import Path

from ..errors import VolumeReadError

# Measured on 2026-12-01 (see the module docstring; `info`, 256x256 slices): bytes per voxel
# of reading beyond the raw stored array, by format, rounded up. Measured totals: NIfTI
# float32 8.0 and int16 10.0 (nibabel scales through float64), .npy 8.1, .npz 8.0, HDF5
# 6.4, DICOM int16 5.0.
READ_BYTES_PER_VOXEL = {"nifti": 8, "numpy": 4, "hdf5": 4, "dicom": 4}
# Peak bytes per processed voxel of each command's own work, on top of reading.
# `reconstruct` measured 95 (MRI zero-filled), 80 (zero-filled + l1-wavelet) and 75
# (median denoising) in total with an 8-byte read: 90 covers them. `info` computes on the
# volume it read and needs nothing more. Not measured, assumed: `bench` runs the same
# pipeline as `reconstruct` (90); the viewer reconstructs one slice at a time and keeps
# display copies of the volume (16); `study create` loads one case at a time and writes a
# copy per method (8); `train` keeps its scans whole with a few copies (16).
COMMAND_BYTES_PER_VOXEL = {"info": 0, "reconstruct": 90, "bench": 90, "view": 16, "study": 8, "train": 16}
# Keep this share of the memory that is free for everything the prediction does not count.
MEMORY_SHARE = 0.8

_command: str | None = None
_slices: str | None = None


def set_command(name: str | None, slices: str | None = None) -> None:
    """The command about to run and its ``--slices`` text: what :func:`check_budget` predicts for."""
    global _command, _slices
    _command, _slices = name, slices


def available_memory_bytes() -> int:
    """What this process may still allocate: the least of free RAM, its cgroup's headroom and ``ulimit -v``."""
    limits = [_meminfo_available(), _cgroup_headroom(), _address_space_headroom()]
    return min(v for v in limits if v is not None) if any(v is not None for v in limits) else 1 << 62


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()), 0)
    except (OSError, ValueError):
        return None


def _address_space_headroom() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return max(soft - int(line.split()[1]) * 1024, 0)
    except (OSError, ValueError):
        pass
    return soft


def selected_slices(text: str | None, n: int) -> int:
    """How many of ``n`` slices a ``--slices`` text keeps (all when absent or unreadable: the
    command itself says what is wrong with it later)."""
    if not text:
        return n
    try:
        if "," in text:
            return max(1, min(n, len([t for t in text.split(",") if t.strip()])))
        parts = [int(p) if p.strip() else None for p in text.split(":")]
        if len(parts) == 1:
            return 1
        return max(1, len(range(*slice(*parts[:3]).indices(n))))
    except (ValueError, TypeError):
        return n


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def predict(shape: tuple[int, ...], stored_itemsize: int, fmt: str, command: str | None = None,
            slices: str | None = None) -> tuple[int, int]:
    """(bytes to read the volume, bytes the command needs on top) for a ``(slices, rows, cols)`` shape."""
    dims = [max(int(s), 0) for s in shape]
    voxels = 1
    for s in dims:
        voxels *= s
    per_slice = voxels // dims[0] if dims and dims[0] else voxels
    kept = selected_slices(slices, dims[0]) if dims else 0
    reading = voxels * (stored_itemsize + READ_BYTES_PER_VOXEL.get(fmt, 8))
    work = kept * per_slice * COMMAND_BYTES_PER_VOXEL.get(command or "", 0)
    return reading, work


def check_budget(path: str | Path, shape: tuple[int, ...], stored_itemsize: int, fmt: str) -> None:
    """Refuse, in one sentence with the figure and the way round it, a volume the command cannot hold."""
    reading, work = predict(shape, stored_itemsize, fmt, _command, _slices)
    avail = available_memory_bytes()
    allowed = MEMORY_SHARE * avail
    if reading + work <= allowed:
        return
    dims = "x".join(str(int(s)) for s in shape)
    if reading > allowed:
        raise VolumeReadError(
            path, f"reading its {dims} voxels needs about {gib(reading)} of memory but only {gib(avail)} is "
                  "available; crop it into smaller volumes first (fewer slices or a smaller field of view)")
    n = int(shape[0])
    per_slice = work / max(selected_slices(_slices, n), 1)
    fit = int((allowed - reading) // per_slice) if per_slice else n
    hint = (f"process fewer slices with --slices (about {fit} fit, e.g. --slices 0:{fit})" if fit >= 1 else
            "crop it into smaller volumes first")
    scope = f"{selected_slices(_slices, n)} of its {n} slices" if _slices else f"all {n} slices"
    raise VolumeReadError(
        path, f"`{_command}` on {scope} ({dims} voxels) needs about {gib(reading + work)} of memory but only "
              f"{gib(avail)} is available; {hint}")
