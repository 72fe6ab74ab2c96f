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
3. a view that is a built one turned by 90 degrees, mirrored about the diagonal, or both,
   has the same rows of ``Aᵀ``, permuted (:func:`_plan_views`, :func:`_pixel_rows`): of
   equally spaced views over 180 degrees about a quarter are built;
4. each block transposed (a small counting sort) is a band of rows of ``A`` (a mirrored
   view's bins relabelled first); every requested view's rows are copied once from their
   band into ``A``, and ``Aᵀ`` is ``A`` transposed once more.

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
    block is a band of rows of ``A``; every view's rows are copied once into the result
    (``hstack`` of the ``Aᵀ`` blocks took 1 s of 1.5 at 180 views, a ``vstack`` then a row
    permutation 1 s of 1.5).

    Views that are a built view turned by 90 degrees, mirrored about the diagonal (θ and
    90° - θ) or both (180° - θ) are not built (:func:`_plan_views`): their rows of ``Aᵀ``
    are a built view's rows, permuted (:func:`_pixel_rows`). Of equally spaced views over
    180 degrees about a quarter are built.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    n, d = int(size), int(det_count)
    built, plan = _plan_views(angles, d)
    theta = np.deg2rad(angles[built])
    blocks = [np.arange(first, min(first + chunk_views, built.size)) for first in range(0, built.size, chunk_views)]
    needed = [sorted({t for b, t in plan if block[0] <= b <= block[-1]}) for block in blocks]
    extra = any(t != _SAME for _, t in plan)
    rows = _pixel_rows(n) if extra else {}
    workers = max(1, min(len(blocks), threads if threads is not None else torch.get_num_threads()))

    def job(index: int) -> list[sp.csr_matrix]:
        block = _adjoint_block(n, theta[blocks[index]], d, extra=extra)
        if not extra:
            return [block.T.tocsr()]
        return [_band(_select_rows(block, rows[t]), d, reverse_bins=t in _MIRRORED) for t in needed[index]]

    if workers == 1:
        bands = [job(i) for i in range(len(blocks))]
    else:
        with ThreadPoolExecutor(workers) as pool:
            bands = list(pool.map(job, range(len(blocks))))
    # Each requested view's rays are d consecutive rows of one band: copy them into place.
    where: dict[tuple[int, int], tuple[sp.csr_matrix, int]] = {}
    for block, kinds, made in zip(blocks, needed, bands):
        for t, band in zip(kinds, made):
            for k, b in enumerate(block):
                where[(int(b), t)] = (band, k * d)
    return _join_views([where[step] for step in plan], d, n_columns=bands[0][0].shape[1], threads=workers)


def _band(adjoint_rows: sp.csr_matrix, d: int, reverse_bins: bool) -> sp.csr_matrix:
    """Rows of ``Aᵀ`` (pixels x rays of a block) to rows of ``A``, the bins of each view
    reversed first if asked (a mirrored view: a relabelling of the columns, which the
    transpose's counting sort puts in order)."""
    if reverse_bins:
        rays = adjoint_rows.indices
        flipped = rays - rays % d + (d - 1 - rays % d)
        adjoint_rows = sp.csr_matrix((adjoint_rows.data, flipped.astype(rays.dtype), adjoint_rows.indptr),
                                     shape=adjoint_rows.shape)
    return adjoint_rows.T.tocsr()


def _join_views(pieces: list[tuple[sp.csr_matrix, int]], d: int, n_columns: int, threads: int = 1) -> sp.csr_matrix:
    """One CSR matrix of the ``d`` rows starting at row ``start`` of each ``(band, start)``,
    in that order: one copy of every entry (a ``vstack`` then a row permutation was two),
    on ``threads`` threads (NumPy's copies release the GIL)."""
    lengths = np.concatenate([np.diff(band.indptr[start : start + d + 1]) for band, start in pieces])
    total = int(lengths.sum())
    # int32 offsets when they fit, like the bands' indices: mixed widths would copy both to int64
    indptr = np.zeros(lengths.size + 1, dtype=np.int32 if total < 2**31 - 1 else np.int64)
    np.cumsum(lengths, out=indptr[1:])
    data = np.empty(int(indptr[-1]), dtype=np.float32)
    indices = np.empty(int(indptr[-1]), dtype=pieces[0][0].indices.dtype)

    def copy(views: range) -> None:
        for i in views:
            band, start = pieces[i]
            a, b, at = int(band.indptr[start]), int(band.indptr[start + d]), int(indptr[i * d])
            data[at : at + b - a] = band.data[a:b]
            indices[at : at + b - a] = band.indices[a:b]

    shares = [range(k, len(pieces), threads) for k in range(threads)]
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(copy, shares))
    else:
        copy(shares[0])
    out = sp.csr_matrix((data, indices, indptr), shape=(lengths.size, n_columns), copy=False)
    out.has_sorted_indices = True
    return out


#: how a requested view is made from a built one: itself, turned by 90 degrees (θ + 90°),
#: mirrored about the diagonal (90° - θ), turned and mirrored (180° - θ)
_SAME, _TURNED, _MIRROR, _TURNED_MIRROR = range(4)
_MIRRORED = (_MIRROR, _TURNED_MIRROR)


def _plan_views(angles: np.ndarray, det_count: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Which views to build (indices into ``angles``), and for every requested view the
    built view (index into that list) and the symmetry that makes it.

    Views in [0°, 45°] are built; any other view is made from a built one if it is one
    turned (θ + 90°), mirrored (90° - θ) or both (180° - θ), and built itself otherwise
    (angles that match no built view, e.g. uneven spacing). Mirroring reverses the detector
    (bin ``u`` becomes ``-u``), so it needs bins symmetric about the centre: an odd count.
    """
    tol = 1e-9
    built = [i for i, a in enumerate(angles) if -tol <= a <= 45.0 + tol]
    relations = [(lambda a: a - 90.0, _TURNED)]
    if det_count % 2 == 1:
        relations += [(lambda a: 90.0 - a, _MIRROR), (lambda a: 180.0 - a, _TURNED_MIRROR)]
    plan: list[tuple[int, int]] = []
    for i, a in enumerate(angles):
        if i in built:
            plan.append((built.index(i), _SAME))
            continue
        for source, kind in relations:
            match = [k for k, j in enumerate(built) if abs(angles[j] - source(a)) <= tol]
            if match:
                plan.append((match[0], kind))
                break
        else:
            built.append(i)
            plan.append((len(built) - 1, _SAME))
    return np.asarray(built, dtype=np.int64), plan


def _pixel_rows(n: int) -> dict[int, np.ndarray]:
    """For each pixel ``(r, c)`` of the padded grid (``-1 <= r, c <= N``) and each symmetry,
    its row in a block built on a grid one row and one column wider (indices up to ``N + 1``):
    the built view's pixel whose weight the requested view's pixel takes.

    With ``m = N // 2`` the rotation centre: turned by 90°, pixel ``(r, c)`` is ``(c, 2m - r)``
    of the built view; mirrored about the diagonal ``(c, r)``; both ``(2m - r, c)``. ``2m - r``
    can be ``N + 1``, hence the wider grid.
    """
    idx = np.arange(-1, n + 1)
    r, c = np.meshgrid(idx, idx, indexing="ij")
    wide, m2 = n + 3, 2 * (n // 2)

    def at(row: np.ndarray, col: np.ndarray) -> np.ndarray:
        return ((row + 1) * wide + (col + 1)).ravel().astype(np.int64)

    return {_SAME: at(r, c), _TURNED: at(c, m2 - r), _MIRROR: at(c, r), _TURNED_MIRROR: at(m2 - r, c)}


def _select_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``m[rows]`` for a CSR matrix whose rows are sorted (each row's order is kept)."""
    out = m[rows]
    out.has_sorted_indices = True
    return out


def _adjoint_block(n: int, th: np.ndarray, d: int, extra: bool = False) -> sp.csr_matrix:
    """The rows of ``Aᵀ`` for the views ``th`` (radians): pixels x (views x bins).

    ``extra`` builds on a grid one row and one column wider (index ``N + 1``), for
    :func:`_pixel_rows`.
    """
    offsets = (np.arange(d) - d // 2).astype(np.float32)  # detector offset u and ray position v
    centre = float(n // 2)
    rows_ = side = n + 2 + int(extra)  # padded
    pixels = rows_ * side
    taps = np.array([0, 1, side, side + 1], dtype=np.int32)  # (r, c), (r, c+1), (r+1, c), (r+1, c+1)
    cos, sin = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
    u, v = offsets[None, :, None], offsets[None, None, :]
    # The per-ray terms in float64, the per-sample sums in float32 (half the memory
    # traffic; the weights still match scikit-image's to float32 rounding).
    col = ((centre + u * cos).astype(np.float32) + v * sin.astype(np.float32))
    row = ((centre - u * sin).astype(np.float32) + v * cos.astype(np.float32))
    c0, r0 = np.floor(col), np.floor(row)
    inside = (c0 >= -1) & (c0 < n + int(extra)) & (r0 >= -1) & (r0 < n + int(extra))
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
