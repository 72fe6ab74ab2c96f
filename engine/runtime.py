"""Process-wide settings for fast CPU inference: torch threads and the memory allocator.

Both are applied once, before any torch work: by the CLI (``--threads``,
``$DIFFRECON_THREADS``) and the viewer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

from .errors import DiffreconError

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30


def configure_threads(threads: int | None) -> None:
    """Apply the thread-count setting (``threads``, else ``$DIFFRECON_THREADS``, else torch's)."""
    n = threads if threads is not None else os.environ.get("DIFFRECON_THREADS")
    if n is None:
        return
    n = int(n)
    if n < 1:
        raise DiffreconError(f"--threads must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)


def thread_settings() -> dict:
    """The thread counts a result depends on, for every output's provenance.

    Results are reproducible bit for bit only at the same torch thread count: a
    different count splits the reductions inside convolutions differently, the sums
    round differently, and a diffusion sampler iterates those differences (README,
    "Reproducibility").
    """
    torch = sys.modules.get("torch")  # never import torch just to say it was not used
    return {
        "torch_threads": int(torch.get_num_threads()) if torch is not None else None,
        "torch_interop_threads": int(torch.get_num_interop_threads()) if torch is not None else None,
        "cpu_count": os.cpu_count(),
    }


def keep_freed_memory() -> bool:
    """Let glibc keep freed activation buffers for reuse instead of returning them to the OS.

    By default every activation over the (adaptive) mmap threshold is mapped fresh and
    unmapped when freed, so each forward pass of a prior page-faults on zeroed pages:
    about 20,000 minor faults per 224x192 forward here, some 10 % of its time. The cost
    is that the process keeps its peak heap. Returns False where this is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
