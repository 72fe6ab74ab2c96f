"""The parallel-beam Radon transform as a sparse system matrix, built once per geometry.

Row ``r = view * D + bin`` of the matrix holds the bilinear-interpolation weights of ray
``r`` (the sample points of :mod:`.ct`'s module docstring, summed along the ray), over the
pixels of the image *padded by one pixel on every side*: a sample between the last pixel
row and the zero outside then always has its four taps inside the padded grid, so no tap
needs a bounds test. The padding ring only ever meets zeros (``A`` pads, ``A_adjoint``
crops), so the operator on the image is unchanged.

Building (no loop over rays, all in NumPy/SciPy, in blocks of a few views built on
torch's threads, joined by ``hstack``):

1. the four taps of every sample that falls on the padded image (about half of a view's
   samples miss a square image and are dropped here), in ray order: a CSR matrix that
   still has duplicates, since neighbouring samples of a ray share pixels;
2. a stable counting sort to pixel-major order (SciPy's ``tocsc``): each pixel's taps are
   then ordered by ray, so a ray's duplicates sit next to each other and merge in one
   pass (``sum_duplicates`` on indices already in order). The result is already ``Aᵀ``
   in CSR form, rows sorted;
3. ``A`` is its transpose (one more counting sort over the merged entries).

Both are kept: torch's CPU sparse kernels are fast for ``CSR @ dense`` but not for a
transposed product, so the adjoint multiplies by the stored ``Aᵀ``, which is exactly the
transpose of ``A``: the adjoint is exact by construction.

Matrices are cached in memory per geometry, and on disk (``$DIFFRECON_CACHE_DIR``, default
``~/.cache/diffrecon``; ``off`` to disable) when building took long enough to be worth a
file.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

_FORMAT = 1  # bump when the matrix layout changes: old cache files are then ignored
_DISK_CACHE_AFTER_S = 0.3  # geometries that build faster are not worth a file
_MEMORY_CACHE: dict[tuple, "RadonMatrices"] = {}
_LOCK = threading.Lock()


@dataclass
class RadonMatrices:
    """``A`` (rays x padded pixels) and ``Aᵀ`` as SciPy CSR float32, and their torch copies."""

    forward: sp.csr_matrix
    adjoint: sp.csr_matrix
    build_seconds: float
    source: str  # "built", "disk"

    def __post_init__(self) -> None:
        self._torch: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def torch_pair(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, Aᵀ)`` as torch sparse CSR tensors on ``device`` in ``dtype`` (converted once)."""
        key = (device, dtype)
        pair = self._torch.get(key)
        if pair is None:
            # Built outside inference mode so that autograd (DPS) may use them later.
            with torch.inference_mode(False):
                pair = (_to_torch(self.forward, device, dtype), _to_torch(self.adjoint, device, dtype))
            self._torch[key] = pair
        return pair


def _to_torch(m: sp.csr_matrix, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int32)),
            torch.from_numpy(m.indices.astype(np.int32)),
            torch.from_numpy(m.data).to(dtype),
            size=m.shape,
            check_invariants=False,
        ).to(device)


def radon_matrices(size: int, angles_deg: np.ndarray, det_count: int) -> RadonMatrices:
    """The cached matrices of this geometry (built, or read from disk, on first use)."""
    angles = np.ascontiguousarray(angles_deg, dtype=np.float64)
    key = (int(size), int(det_count), angles.tobytes())
    with _LOCK:
        cached = _MEMORY_CACHE.get(key)
        if cached is None:
            cached = _load(size, angles, det_count) or _build_and_store(size, angles, det_count)
            _MEMORY_CACHE.clear()  # one geometry at a time: a 180-view matrix is ~200 MB
            _MEMORY_CACHE[key] = cached
        return cached


def _build_and_store(size: int, angles: np.ndarray, det_count: int) -> RadonMatrices:
    start = time.perf_counter()
    adjoint = build_adjoint_matrix(size, angles, det_count)
    forward = adjoint.T.tocsr()  # counting sort: rows of A come out with sorted columns
    matrices = RadonMatrices(forward, adjoint, time.perf_counter() - start, "built")
    if matrices.build_seconds >= _DISK_CACHE_AFTER_S:
        _store(size, angles, det_count, matrices)
    return matrices


def build_adjoint_matrix(size: int, angles_deg: np.ndarray, det_count: int, chunk_views: int = 4,
                         threads: int | None = None) -> sp.csr_matrix:
    """``Aᵀ`` (padded pixels x rays) in CSR form with float32 weights (module docstring).

    Blocks of ``chunk_views`` views are built on ``threads`` threads (default: torch's
    thread setting): NumPy and SciPy's sparse kernels release the GIL. Small blocks keep
    each one's arrays in cache: 4 views took 0.6x the CPU time of 16 on this machine.
    """
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    blocks = [theta[first : first + chunk_views] for first in range(0, theta.size, chunk_views)]
    workers = max(1, min(len(blocks), threads if threads is not None else torch.get_num_threads()))
    if workers == 1:
        parts = [_adjoint_block(int(size), th, int(det_count)) for th in blocks]
    else:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda th: _adjoint_block(int(size), th, int(det_count)), blocks))
    # The parts are column blocks (their views' rays): hstack appends each pixel's entries
    # part after part, so every row stays sorted by ray.
    return sp.hstack(parts, format="csr") if len(parts) > 1 else parts[0]


def _adjoint_block(n: int, th: np.ndarray, d: int) -> sp.csr_matrix:
    """The rows of ``Aᵀ`` for the views ``th`` (radians): pixels x (views x bins)."""
    offsets = (np.arange(d) - d // 2).astype(np.float32)  # detector offset u and ray position v
    centre = float(n // 2)
    side = n + 2  # padded
    pixels = side * side
    taps = np.array([0, 1, side, side + 1], dtype=np.int32)  # (r, c), (r, c+1), (r+1, c), (r+1, c+1)
    cos, sin = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
    u, v = offsets[None, :, None], offsets[None, None, :]
    # The per-ray terms in float64, the per-sample sums in float32 (half the memory
    # traffic; the weights still match scikit-image's to float32 rounding).
    col = ((centre + u * cos).astype(np.float32) + v * sin.astype(np.float32))
    row = ((centre - u * sin).astype(np.float32) + v * cos.astype(np.float32))
    c0, r0 = np.floor(col), np.floor(row)
    inside = (c0 >= -1) & (c0 < n) & (r0 >= -1) & (r0 < n)
    # About half of a view's samples miss a square image: drop them before the sort.
    col, row, c0, r0 = col[inside], row[inside], c0[inside], r0[inside]
    per_ray = inside.sum(axis=-1, dtype=np.int64).reshape(-1)
    del inside
    fc, fr = col - c0, row - r0
    r0 += 1
    r0 *= side
    r0 += c0
    r0 += 1
    base = r0.astype(np.int32)
    del col, row, c0, r0
    keys = np.empty(base.shape + (4,), dtype=np.int32)
    np.add(base[..., None], taps, out=keys)
    gc, gr = 1 - fc, 1 - fr
    weights = np.empty(base.shape + (4,), dtype=np.float32)
    np.multiply(gr, gc, out=weights[..., 0])
    np.multiply(gr, fc, out=weights[..., 1])
    np.multiply(fr, gc, out=weights[..., 2])
    np.multiply(fr, fc, out=weights[..., 3])
    rays = th.size * d
    indptr = np.zeros(rays + 1, dtype=np.int64)
    np.cumsum(4 * per_ray, out=indptr[1:])
    raw = sp.csr_matrix((weights.ravel(), keys.ravel(), indptr), shape=(rays, pixels))
    by_pixel = raw.tocsc()  # stable: each pixel's taps in (ray, sample) order
    # The same arrays read as CSR are Aᵀ with duplicates: a ray's taps on one pixel sit next
    # to each other, so one pass merges them (no sort: the indices are already in order).
    part = sp.csr_matrix((by_pixel.data, by_pixel.indices, by_pixel.indptr), shape=(pixels, rays))
    part.has_sorted_indices = True
    part.sum_duplicates()
    part.eliminate_zeros()  # axis-aligned views put exact zeros on the second tap
    return part


# --------------------------------------------------------------------------- disk cache


def _cache_dir() -> Path | None:
    setting = os.environ.get("DIFFRECON_CACHE_DIR", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    root = Path(setting) if setting else Path.home() / ".cache" / "diffrecon"
    return root / "radon"


def _cache_file(size: int, angles: np.ndarray, det_count: int) -> Path | None:
    folder = _cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(angles.tobytes()).hexdigest()[:16]
    return folder / f"v{_FORMAT}-n{size}-d{det_count}-a{angles.size}-{digest}.npz"


def _store(size: int, angles: np.ndarray, det_count: int, m: RadonMatrices) -> None:
    path = _cache_file(size, angles, det_count)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, angles=angles, shape=np.array(m.forward.shape),
                 f_data=m.forward.data, f_indices=m.forward.indices, f_indptr=m.forward.indptr,
                 a_data=m.adjoint.data, a_indices=m.adjoint.indices, a_indptr=m.adjoint.indptr)
        os.replace(tmp, path)  # readers never see half a file
    except OSError:
        pass  # a cache that cannot be written is only slower


def _load(size: int, angles: np.ndarray, det_count: int) -> RadonMatrices | None:
    path = _cache_file(size, angles, det_count)
    if path is None or not path.is_file():
        return None
    start = time.perf_counter()
    try:
        with np.load(path, allow_pickle=False) as f:  # our own arrays; never unpickle
            if not np.array_equal(f["angles"], angles):
                return None
            rows, cols = (int(s) for s in f["shape"])
            forward = sp.csr_matrix((f["f_data"], f["f_indices"], f["f_indptr"]), shape=(rows, cols))
            adjoint = sp.csr_matrix((f["a_data"], f["a_indices"], f["a_indptr"]), shape=(cols, rows))
    except (OSError, ValueError, KeyError):
        return None  # unreadable or from another version: build afresh
    side = size + 2
    if forward.shape != (angles.size * det_count, side * side):
        return None
    return RadonMatrices(forward, adjoint, time.perf_counter() - start, "disk")
