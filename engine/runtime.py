"""Process-wide settings: torch threads, the memory allocator, and the compute device.

Applied once, before any torch work: by the CLI (``--threads``, ``$DIFFRECON_THREADS``,
``--device``) and the viewer. Nothing here imports torch unless it must: commands that
need no torch (``--help``, ``info``, ``study status``) start in a fraction of a second.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

from .errors import DiffreconError

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 1 << 30


#: what ``--device`` accepts: ``auto`` is CUDA when torch sees a GPU, else the CPU
DEVICES = ("auto", "cpu", "cuda")


def configure_threads(threads: int | None, *, import_torch: bool = True) -> None:
    """Apply the thread-count setting (``threads``, else ``$DIFFRECON_THREADS``, else torch's).

    With ``import_torch=False`` torch is left unimported (if it is not loaded yet) and
    the setting goes to ``OMP_NUM_THREADS``, which torch reads when it is first imported.
    """
    n = threads if threads is not None else os.environ.get("DIFFRECON_THREADS")
    if n is None:
        return
    try:
        n = int(n)
    except ValueError:
        raise DiffreconError(f"$DIFFRECON_THREADS must be a whole number, got {n!r}") from None
    if n < 1:
        raise DiffreconError(f"--threads must be at least 1, got {n}")
    if not import_torch and "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(n)
        return
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


def resolve_device(name: str | None = "auto"):
    """``--device`` as a ``torch.device``: ``auto`` picks CUDA when present, else the CPU.

    Asking for ``cuda`` on a machine without one is the user's error (one sentence).
    """
    import torch

    name = (name or "auto").lower()
    if name not in DEVICES:
        raise DiffreconError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DiffreconError("--device cuda: torch sees no CUDA GPU on this machine (use --device cpu or auto)")
    return torch.device(name)


def describe_device(device) -> dict:
    """What outputs record about the device: its type, name and the network's precision
    (bf16 autocast where bf16 is native, :func:`bf16_is_fast`; float32 elsewhere)."""
    import torch

    device = torch.device(device)
    facts = {"device": device.type, "autocast": "bfloat16" if bf16_is_fast(device.type) else "float32"}
    if device.type == "cuda":
        facts["device_name"] = torch.cuda.get_device_name(device)
    else:
        facts["threads"] = torch.get_num_threads()
    return facts


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """Whether bf16 arithmetic is native on this device.

    On a CPU without AVX-512 BF16 or AMX (e.g. an AVX2-only machine), oneDNN emulates bf16
    and a UNet forward is about 25x *slower* than float32 (measured: 4.3 s float32 against
    over 115 s bf16 for a batch of 16 at 64x64 on one AVX2 core). So bf16 is only used where
    the hardware has it.
    """
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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
