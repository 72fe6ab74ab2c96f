"""Checks every loader runs before handing a volume to the rest of diffrecon."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError

# Refuse a volume whose float32 copy would take more than this share of the memory
# that is free now: the rest of the pipeline needs room for a few copies of it.
MEMORY_SHARE = 0.5


def available_memory_bytes() -> int:
    """Memory the kernel says is available now (Linux), else a large number."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_fits_in_memory(path: str | Path, shape: tuple[int, ...], itemsize: int = 4) -> None:
    """Raise before allocating when ``shape`` cannot be held in memory."""
    n = 1
    for s in shape:
        n *= int(s)
    need = n * itemsize
    avail = available_memory_bytes()
    if need > MEMORY_SHARE * avail:
        raise VolumeReadError(
            path,
            f"the volume {'x'.join(str(int(s)) for s in shape)} needs {need / 2**30:.1f} GiB, "
            f"more than this machine can spare ({avail / 2**30:.1f} GiB available)",
        )


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
