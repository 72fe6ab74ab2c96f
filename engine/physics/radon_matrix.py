"""The parallel-beam Radon transform as a sparse system matrix, built once per geometry.

Row ``r = view * D + bin`` of the matrix holds the bilinear-interpolation weights of ray
``r`` (the sample points of :mod:`.ct`'s module docstring, summed along the ray), over the
pixels of the image *padded by one pixel on every side*: a sample between the last pixel
row and the zero outside then always has its four taps inside the padded grid, so no tap
needs a bounds test. The padding ring only ever meets zeros (``A`` pads, ``A_adjoint``
crops), so the operator on the image is unchanged.

Building (no loop over rays, all in NumPy/SciPy, in blocks of a few views built on
torch's threads):

1. the four taps of every sample that falls on the padded image (about half of a view's
   samples miss a square image and are dropped here), in ray order: a CSR matrix that
   still has duplicates, since neighbouring samples of a ray share pixels;
2. a stable counting sort to pixel-major order (SciPy's ``tocsc``): each pixel's taps are
   then ordered by ray, so a ray's duplicates sit next to each other and merge in one
   pass (``sum_duplicates`` on indices already in order): the block's rows of ``Aᵀ``;
3. if the views come in pairs 90 degrees apart, the turned view's rows of ``Aᵀ`` are the
   same rows permuted (:func:`_turn_rows`): half the views are built;
4. each block transposed (a small counting sort) is a band of rows of ``A``; the bands
   stack by concatenation, and ``Aᵀ`` is ``A`` transposed once more.

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
            torch.from_numpy(m.indptr.astype(np.int32, copy=False)),
            torch.from_numpy(m.indices.astype(np.int32, copy=False)),
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
    forward = build_forward_matrix(size, angles, det_count)
    adjoint = forward.T.tocsr()  # counting sort: rows of Aᵀ come out with sorted columns
    matrices = RadonMatrices(forward, adjoint, time.perf_counter() - start, "built")
    if matrices.build_seconds >= _DISK_CACHE_AFTER_S:
        _store(size, angles, det_count, matrices)
    return matrices


def build_forward_matrix(size: int, angles_deg: np.ndarray, det_count: int, chunk_views: int = 4,
                         threads: int | None = None) -> sp.csr_matrix:
    """``A`` (rays x padded pixels) in CSR form with float32 weights (module docstring).

    Blocks of ``chunk_views`` views are built on ``threads`` threads (default: torch's
    thread setting): NumPy and SciPy's sparse kernels release the GIL. Small blocks keep
    each one's arrays in cache: 4 views took 0.6x the CPU time of 16 on this machine. Each
    block is a band of rows of ``A``, so joining them is one concatenation (``hstack`` of
    the ``Aᵀ`` blocks took 1 s of 1.5 at 180 views: it copies entry by entry).

    When the second half of the views is the first half turned by 90 degrees (any even
    number of equally spaced views), only the first half is built: a view at θ + 90° samples
    pixel ``(2c - col, row)`` where the view at θ samples ``(row, col)`` (``c`` the rotation
    centre ``N // 2``), so its rows of ``Aᵀ`` are the first view's rows, permuted.
    """
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    n, d = int(size), int(det_count)
    half = theta.size // 2
    turned = (theta.size % 2 == 0 and half > 0
              and np.allclose(angles_deg[half:], np.asarray(angles_deg[:half]) + 90.0, rtol=0, atol=1e-9))
    built = theta[:half] if turned else theta
    blocks = [built[first : first + chunk_views] for first in range(0, built.size, chunk_views)]
    workers = max(1, min(len(blocks), threads if threads is not None else torch.get_num_threads()))
    if turned:
        direct, rotated = _turn_rows(n)

    def job(th: np.ndarray) -> list[sp.csr_matrix]:
        if not turned:
            return [_adjoint_block(n, th, d).T.tocsr()]
        wide = _adjoint_block(n, th, d, extra_column=True)
        return [_select_rows(wide, direct).T.tocsr(), _select_rows(wide, rotated).T.tocsr()]

    if workers == 1:
        bands = [job(th) for th in blocks]
    else:
        with ThreadPoolExecutor(workers) as pool:
            bands = list(pool.map(job, blocks))
    # Rays in view order: the built views, then (if any) the same views turned.
    parts = [band[0] for band in bands] + ([band[1] for band in bands] if turned else [])
    return sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]


def _turn_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of the padded grid, its row in a block built with one extra column:
    as the same view (``direct``) and as the view turned by 90 degrees (``rotated``).

    Pixel ``(r, c)`` (``-1 <= r, c <= N``) of the turned view is pixel ``(c, 2 N//2 - r)``
    of the built one; that column can be ``N + 1``, hence the extra column.
    """
    idx = np.arange(-1, n + 1)
    r, c = np.meshgrid(idx, idx, indexing="ij")
    wide = n + 3
    direct = (r + 1) * wide + (c + 1)
    rotated = (c + 1) * wide + (2 * (n // 2) - r + 1)
    return direct.ravel().astype(np.int64), rotated.ravel().astype(np.int64)


def _select_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``m[rows]`` for a CSR matrix whose rows are sorted (each row's order is kept)."""
    out = m[rows]
    out.has_sorted_indices = True
    return out


def _adjoint_block(n: int, th: np.ndarray, d: int, extra_column: bool = False) -> sp.csr_matrix:
    """The rows of ``Aᵀ`` for the views ``th`` (radians): pixels x (views x bins).

    ``extra_column`` builds on a grid one column wider (index ``N + 1``), for :func:`_turn_rows`.
    """
    offsets = (np.arange(d) - d // 2).astype(np.float32)  # detector offset u and ray position v
    centre = float(n // 2)
    rows_, side = n + 2, n + 2 + int(extra_column)  # padded
    pixels = rows_ * side
    taps = np.array([0, 1, side, side + 1], dtype=np.int32)  # (r, c), (r, c+1), (r+1, c), (r+1, c+1)
    cos, sin = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
    u, v = offsets[None, :, None], offsets[None, None, :]
    # The per-ray terms in float64, the per-sample sums in float32 (half the memory
    # traffic; the weights still match scikit-image's to float32 rounding).
    col = ((centre + u * cos).astype(np.float32) + v * sin.astype(np.float32))
    row = ((centre - u * sin).astype(np.float32) + v * cos.astype(np.float32))
    c0, r0 = np.floor(col), np.floor(row)
    inside = (c0 >= -1) & (c0 < n + int(extra_column)) & (r0 >= -1) & (r0 < n)
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
