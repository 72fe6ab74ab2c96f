"""Cartesian k-space undersampling masks.

Every mask is a boolean array ``(H, W)`` over centred k-space (DC at ``(H // 2, W // 2)``),
True where a sample is acquired. The layout follows fastMRI: 1D masks select whole
phase-encode *columns* (``kx``, the last axis) and leave a block of low-frequency
columns fully sampled, so that coil sensitivities can be calibrated from it.

Kinds (``make_mask(kind, ...)``):

* ``random``: the centre block plus outer columns drawn uniformly without replacement
  (fastMRI's ``RandomMaskFunc`` draws each column with a probability instead; we draw an
  exact count so that the achieved acceleration is the requested one, not a random
  variable around it).
* ``equispaced``: the centre block plus outer columns at a constant spacing chosen so that
  the *total* (centre included) matches the acceleration, with a seeded offset (the idea
  of fastMRI's ``EquispacedMaskFractionFunc``).
* ``gaussian2d``: a centred calibration box plus points drawn without replacement with a
  Gaussian variable density (2D undersampling, as for 3D acquisitions' ky-kz plane).
* ``poisson``: a centred calibration box plus variable-density Poisson-disc points: random
  points no two of which are closer than a radius that grows linearly with the distance
  from the k-space centre. The radius scale is found by bisection to hit the acceleration.

The acceleration is ``H * W / (number of samples)``. ``center_fraction`` is the fraction of
columns (1D) or of each axis (2D calibration box) that is fully sampled; its default is
``0.32 / acceleration`` (0.08 at 4x, 0.04 at 8x, fastMRI's pairs).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import SettingsError

MASK_KINDS = ("random", "equispaced", "gaussian2d", "poisson")
MIN_ACCELERATION, MAX_ACCELERATION = 2.0, 12.0
#: how far the achieved acceleration may be from the request before we refuse
ACCELERATION_TOLERANCE = 0.10


def default_center_fraction(acceleration: float) -> float:
    """fastMRI's pairs (0.08 at 4x, 0.04 at 8x), extended as ``0.32 / acceleration``."""
    return 0.32 / float(acceleration)


def make_mask(
    kind: str,
    shape: tuple[int, int],
    acceleration: float,
    center_fraction: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """A boolean ``(H, W)`` sampling mask of the given kind; the same seed gives the same mask."""
    builders = {
        "random": random_line_mask,
        "equispaced": equispaced_line_mask,
        "gaussian2d": gaussian2d_mask,
        "poisson": poisson_disc_mask,
    }
    if kind not in builders:
        raise SettingsError(f"Unknown mask kind {kind!r}; choose one of {', '.join(MASK_KINDS)}.")
    return builders[kind](shape, acceleration, center_fraction, seed)


def achieved_acceleration(mask: np.ndarray) -> float:
    """All samples over acquired samples (``inf`` for an empty mask)."""
    n = int(np.count_nonzero(mask))
    return math.inf if n == 0 else float(np.size(mask) / n)


# --------------------------------------------------------------------------- 1D line masks


def random_line_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """Fully sampled centre columns plus outer columns drawn uniformly without replacement."""
    height, width, n_center, n_outer = _line_budget(shape, acceleration, center_fraction)
    rng = np.random.default_rng(seed)
    columns = _center_columns(width, n_center)
    outer = np.setdiff1d(np.arange(width), columns)
    chosen = rng.choice(outer, size=n_outer, replace=False) if n_outer else np.zeros(0, int)
    return _columns_to_mask(height, width, np.concatenate([columns, chosen]))


def equispaced_line_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """Fully sampled centre columns plus outer columns at a constant spacing.

    The spacing is taken over the columns *outside* the centre block, ``(W - n_center) /
    n_outer``, so the total number of columns is exactly ``round(W / acceleration)`` (a
    plain ``W / acceleration`` spacing would overshoot, since some of its lines would fall
    inside the centre block). The seed picks the offset of the first line.
    """
    height, width, n_center, n_outer = _line_budget(shape, acceleration, center_fraction)
    rng = np.random.default_rng(seed)
    columns = _center_columns(width, n_center)
    outer = np.setdiff1d(np.arange(width), columns)
    if n_outer:
        spacing = outer.size / n_outer  # >= 1, so the floored positions below are distinct
        offset = rng.uniform(0.0, spacing)
        positions = np.floor(offset + spacing * np.arange(n_outer)).astype(int)
        columns = np.concatenate([columns, outer[positions]])
    return _columns_to_mask(height, width, columns)


def _line_budget(
    shape: tuple[int, int], acceleration: float, center_fraction: float | None
) -> tuple[int, int, int, int]:
    """(H, W, centre columns, outer columns) for a 1D mask, after checking the settings."""
    height, width = _check_shape(shape)
    acceleration, center_fraction = _check_settings(acceleration, center_fraction)
    n_total = max(1, round(width / acceleration))
    n_center = max(1, round(width * center_fraction))
    _check_budget(n_total, n_center, width, acceleration, "phase-encode lines")
    return height, width, n_center, n_total - n_center


def _center_columns(width: int, n_center: int) -> np.ndarray:
    """Indices of ``n_center`` contiguous columns that contain the DC column ``width // 2``."""
    start = (width - n_center + 1) // 2
    return np.arange(start, start + n_center)


def _columns_to_mask(height: int, width: int, columns: np.ndarray) -> np.ndarray:
    line = np.zeros(width, bool)
    line[columns] = True
    return np.broadcast_to(line, (height, width)).copy()


# --------------------------------------------------------------------------- 2D point masks


def gaussian2d_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """A fully sampled calibration box plus points drawn with a Gaussian variable density.

    Points are drawn without replacement with probability proportional to
    ``exp(-(u^2 + v^2) / (2 * 0.35^2))`` (``u, v`` in ``[-1, 1]`` across each axis), using
    exponential keys ``E / p`` and keeping the smallest (weighted sampling without
    replacement, Efraimidis & Spirakis), so the count is exact.
    """
    height, width, calib, n_outer = _point_budget(shape, acceleration, center_fraction)
    rng = np.random.default_rng(seed)
    u, v = _normalised_coordinates(height, width)
    density = np.exp(-(u**2 + v**2) / (2 * 0.35**2)).ravel()
    keys = rng.exponential(size=density.size) / density
    keys[calib.ravel()] = np.inf  # already sampled
    mask = calib.copy()
    if n_outer:
        chosen = np.argpartition(keys, n_outer - 1)[:n_outer]
        mask.ravel()[chosen] = True
    return mask


def poisson_disc_mask(
    shape: tuple[int, int], acceleration: float, center_fraction: float | None = None, seed: int = 0
) -> np.ndarray:
    """A fully sampled calibration box plus variable-density Poisson-disc points.

    Dart throwing on the grid: visit every k-space location once in a seeded random order
    and accept it unless it lies within ``r`` of an accepted point, where
    ``r = scale * (1 + 2 * rho)`` pixels and ``rho`` is the normalised distance from the
    centre (so the edge of k-space is about 9x sparser than the centre). ``scale`` is
    bisected until the sample count is within 2% of the target.
    """
    height, width, calib, n_outer = _point_budget(shape, acceleration, center_fraction)
    n_target = n_outer + int(calib.sum())
    rng = np.random.default_rng(seed)
    order = rng.permutation(height * width)
    u, v = _normalised_coordinates(height, width)
    rho = np.sqrt(u**2 + v**2)

    def mask_at(scale: float) -> np.ndarray:
        return _dart_throw(calib, scale * (1.0 + 2.0 * rho), order)

    # Random sequential packing of discs of radius r fills about 0.55 of the plane with
    # discs of radius r / 2, which gives a starting guess for the bisection.
    guess = math.sqrt(0.547 * acceleration * 4 / math.pi) / 2.0
    low, high = 0.0, 4.0 * guess
    best, best_error = calib, math.inf
    for _ in range(30):
        scale = 0.5 * (low + high)
        mask = mask_at(scale)
        count = int(mask.sum())
        error = abs(count - n_target) / n_target
        if error < best_error:
            best, best_error = mask, error
        if error <= 0.02:
            break
        if count > n_target:
            low = scale
        else:
            high = scale
    return best


def _dart_throw(calib: np.ndarray, radius: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Accept points in ``order`` unless blocked; each accepted point blocks a disc of its radius."""
    height, width = calib.shape
    accepted = calib.copy()
    blocked = calib.copy()
    flat_blocked = blocked.ravel()  # a view: writes through the 2D slices below show here
    for index in order:
        if flat_blocked[index]:
            continue
        y, x = divmod(int(index), width)
        accepted[y, x] = True
        r = radius[y, x]
        if r <= 1.0:  # blocks nothing but itself
            flat_blocked[index] = True
            continue
        stencil = _disc_stencil(round(r * 4) / 4)
        half = stencil.shape[0] // 2
        y0, y1 = max(0, y - half), min(height, y + half + 1)
        x0, x1 = max(0, x - half), min(width, x + half + 1)
        blocked[y0:y1, x0:x1] |= stencil[y0 - y + half : y1 - y + half, x0 - x + half : x1 - x + half]
    return accepted


@lru_cache(maxsize=256)
def _disc_stencil(radius: float) -> np.ndarray:
    """Boolean square stencil of the offsets closer than ``radius`` to its centre."""
    half = math.ceil(radius)
    d = np.arange(-half, half + 1)
    return (d[:, None] ** 2 + d[None, :] ** 2) < radius**2


def _point_budget(
    shape: tuple[int, int], acceleration: float, center_fraction: float | None
) -> tuple[int, int, np.ndarray, int]:
    """(H, W, calibration box mask, points to add outside it) for a 2D mask."""
    height, width = _check_shape(shape)
    acceleration, center_fraction = _check_settings(acceleration, center_fraction)
    n_total = max(1, round(height * width / acceleration))
    box_h, box_w = (max(1, round(n * center_fraction)) for n in (height, width))
    calib = np.zeros((height, width), bool)
    y0, x0 = (height - box_h + 1) // 2, (width - box_w + 1) // 2
    calib[y0 : y0 + box_h, x0 : x0 + box_w] = True
    _check_budget(n_total, box_h * box_w, height * width, acceleration, "k-space samples")
    return height, width, calib, n_total - box_h * box_w


def _normalised_coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(u, v)`` of every k-space location, 0 at DC and about +-1 at the edges."""
    ky = (np.arange(height) - height // 2) / (height / 2)
    kx = (np.arange(width) - width // 2) / (width / 2)
    return np.meshgrid(ky, kx, indexing="ij")


# --------------------------------------------------------------------------- checks


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(int(s) for s in shape) < 8:
        raise SettingsError(f"A sampling mask needs a 2D shape of at least 8 x 8; got {tuple(shape)}.")
    return int(shape[0]), int(shape[1])


def _check_settings(acceleration: float, center_fraction: float | None) -> tuple[float, float]:
    acceleration = float(acceleration)
    if not MIN_ACCELERATION <= acceleration <= MAX_ACCELERATION:
        raise SettingsError(
            f"Acceleration {acceleration:g} is outside the supported range "
            f"{MIN_ACCELERATION:g} to {MAX_ACCELERATION:g}."
        )
    if center_fraction is None:
        center_fraction = default_center_fraction(acceleration)
    center_fraction = float(center_fraction)
    if not 0.0 < center_fraction < 1.0 / acceleration:
        raise SettingsError(
            f"Centre fraction {center_fraction:g} must be above 0 and below 1/acceleration "
            f"({1.0 / acceleration:.3g})."
        )
    return acceleration, center_fraction


def _check_budget(n_total: int, n_center: int, n_all: int, acceleration: float, what: str) -> None:
    achieved = n_all / n_total
    if abs(achieved / acceleration - 1.0) > ACCELERATION_TOLERANCE:
        raise SettingsError(
            f"Acceleration {acceleration:g} cannot be matched within 10% on {n_all} {what}; "
            "use a lower acceleration or a larger image."
        )
    if n_center > n_total:
        raise SettingsError(
            f"The fully sampled centre ({n_center} {what}) exceeds the {n_total} that acceleration "
            f"{acceleration:g} allows; lower the centre fraction."
        )


def calibration_region(mask: np.ndarray) -> tuple[int, int]:
    """Size ``(rows, cols)`` of the largest fully sampled box centred on DC.

    Grows a centred box one row/column at a time while every location in it is
    sampled; for a 1D line mask that is ``(H, n_center)``.
    """
    mask = np.asarray(mask, bool)
    while mask.ndim > 2:  # per-item masks: the region sampled in every item
        mask = mask.all(axis=0)
    height, width = mask.shape
    cy, cx = height // 2, width // 2
    if not mask[cy, cx]:
        return (0, 0)

    def box(rows: int, cols: int) -> bool:
        if rows > height or cols > width:
            return False
        # The same placement as the centre block of the masks above.
        y0, x0 = (height - rows + 1) // 2, (width - cols + 1) // 2
        return bool(mask[y0 : y0 + rows, x0 : x0 + cols].all())

    rows = cols = 1
    grew = True
    while grew:
        grew = False
        if box(rows, cols + 1):
            cols, grew = cols + 1, True
        if box(rows + 1, cols):
            rows, grew = rows + 1, True
    return rows, cols
