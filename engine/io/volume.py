"""The one in-memory type every loader returns and every writer takes.

Conventions (read these before touching a loader or a writer):

* ``Volume.data`` is ``(slices, rows, cols)``: slices first, as a viewer scrolls them.
  float32 for magnitude images; complex64 only where a complex MR image is the point.
* ``Volume.affine`` maps a homogeneous array index ``(slice, row, col, 1)`` to patient
  coordinates in millimetres in **RAS+** (NIfTI's convention: x to the patient's Right,
  y Anterior, z Superior). DICOM's LPS positions are converted on the way in and out.
* ``Volume.spacing`` is the voxel size in mm along ``(slice, row, col)``; it always
  agrees with the column norms of ``affine[:3, :3]``.
* Raw MRI measurements, when the file has them, ride along in ``Volume.kspace`` with
  fastMRI's layout: centred k-space ``(slices, coils, ky, kx)``, where ``coils`` is 1
  for single-coil data and the sampling mask runs along ``kx`` (the phase-encode
  columns of fastMRI's files).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

MODALITIES = ("MR", "CT", "US", "OT")


@dataclass
class KSpace:
    """Raw Cartesian MRI measurements as a fastMRI file stores them."""

    data: np.ndarray  # complex64 (slices, coils, ky, kx), centred (DC in the middle)
    multicoil: bool
    mask: np.ndarray | None = None  # bool, broadcastable to (slices, 1, ky, kx); None = fully sampled
    sensitivity_maps: np.ndarray | None = None  # complex64 (slices, coils, ky, kx) when known
    recon_size: tuple[int, int] | None = None  # (rows, cols) of the target, fastMRI's crop

    @property
    def fully_sampled(self) -> bool:
        return self.mask is None or bool(np.all(self.mask))

    @property
    def acceleration(self) -> float:
        """Ratio of all k-space samples to the acquired ones (1.0 when fully sampled)."""
        if self.mask is None:
            return 1.0
        m = np.broadcast_to(np.asarray(self.mask, bool), self.data.shape[-2:] if np.ndim(self.mask) <= 2 else np.shape(self.mask))
        return float(m.size / max(int(m.sum()), 1))


@dataclass
class Volume:
    data: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # None: the canonical axial layout from ``spacing``, set in __post_init__ (never None after it)
    affine: np.ndarray = None  # type: ignore[assignment]
    modality: str = "OT"
    units: str = "a.u."  # "HU" for CT after rescale
    window: tuple[float, float] | None = None  # (center, width) default display window
    source_path: Path | None = None
    source_format: str = "memory"  # dicom | nifti | fastmri-h5 | diffrecon-h5 | numpy | study | memory
    metadata: dict[str, Any] = field(default_factory=dict)  # JSON-able facts about the source
    kspace: KSpace | None = None
    reference: np.ndarray | None = None  # a ground-truth image the file carries (fastMRI targets)
    # How to put ``data`` back into the source file's own voxel order (nibabel ornt
    # from our axes to the source's), and the source file's affine (its whole grid, in
    # mm): writers use them to write a result, or some of its slices, on the grid of
    # the scan it came from. Both survive ``derived`` and ``select_slices``.
    source_ornt: np.ndarray | None = None
    source_affine: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"Volume.data must be (slices, rows, cols); got shape {self.data.shape}")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}; got {self.modality!r}")
        sz, sy, sx = (float(s) for s in self.spacing)
        self.spacing = (sz, sy, sx)
        # An array with no geometry of its own is stored the way diffrecon lays volumes out
        # (axial slices, S/P/L), so a written and re-read file keeps its slices.
        self.affine = affine_from_spacing(self.spacing) if self.affine is None else np.asarray(self.affine, np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[0])

    def intensity_range(self) -> tuple[float, float]:
        mag = np.abs(self.data) if np.iscomplexobj(self.data) else self.data
        return float(np.min(mag)), float(np.max(mag))

    def orientation(self) -> tuple[str, str, str]:
        """Direction each array axis increases towards, e.g. ``('S', 'P', 'L')``."""
        return axis_codes(self.affine)

    def derived(self, data: np.ndarray, **changes: Any) -> "Volume":
        """A new volume with the same geometry (and provenance) but other voxels.

        Used for reconstructions: the raw measurements are dropped, since they
        belong to the input, not to the result.
        """
        if data.shape[-2:] != self.data.shape[-2:] or data.ndim != 3:
            raise ValueError(f"derived data must have shape (n, {self.shape[1]}, {self.shape[2]}); got {data.shape}")
        return replace(self, data=data, kspace=None, reference=None, **changes)

    def on_slice_grid(self, slices: list[int] | np.ndarray, data: np.ndarray, **changes: Any) -> "Volume":
        """``data`` (one image per entry of ``slices``, in that order) where those slices lie.

        Evenly spaced slices are the volume of :meth:`select_slices`. Unevenly spaced ones
        (``--slices 3,9,12``; the viewer's computed slices) cannot share one affine, so
        they are written on :func:`slice_grid` (here 3, 6, 9, 12) with the grid's other
        slices zero: every file format then places every slice where it lay, instead of
        claiming consecutive positions. The grid slices that hold an image are listed in
        ``metadata["slices_with_data"]``, so a DICOM series can say in each blank image that
        it is a gap.
        """
        idx = np.arange(self.n_slices)[np.asarray(slices, int)]
        if _evenly_spaced(idx):
            return self.select_slices(idx).derived(data, **changes)
        grid = slice_grid(idx)
        placed = np.zeros((grid.size, *data.shape[1:]), dtype=data.dtype)
        filled = np.searchsorted(grid, idx)
        placed[filled] = data
        metadata = {**self.metadata, SLICES_WITH_DATA: sorted(int(k) for k in filled)}
        return self.select_slices(grid).derived(placed, **{"metadata": metadata, **changes})

    def select_slices(self, index: slice | list[int] | np.ndarray) -> "Volume":
        """The chosen slices, with the affine moved so positions stay true.

        Only an evenly spaced choice has one affine; for any other, the affine is that of
        the first slice with the source's own slice step, so writers take
        :meth:`on_slice_grid` instead."""
        idx = np.arange(self.n_slices)[index]
        if idx.size == 0:
            raise ValueError("no slices selected")
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.array([idx[0], 0.0, 0.0]) + self.affine[:3, 3]
        if idx.size > 1:
            step = int(idx[1] - idx[0])
            if np.all(np.diff(idx) == step):
                affine[:3, 0] = self.affine[:3, 0] * step
        ks = None
        if self.kspace is not None:
            k = self.kspace
            mask = k.mask
            if mask is not None and np.ndim(mask) >= 3 and np.shape(mask)[0] == self.n_slices:
                mask = mask[idx]
            ks = replace(
                k,
                data=k.data[idx],
                mask=mask,
                sensitivity_maps=None if k.sensitivity_maps is None else k.sensitivity_maps[idx],
            )
        ref = None if self.reference is None else self.reference[idx]
        spacing = (float(np.linalg.norm(affine[:3, 0])), self.spacing[1], self.spacing[2])
        # source_ornt/source_affine stay: the slices still lie on the source file's grid.
        return replace(self, data=self.data[idx], affine=affine, spacing=spacing, kspace=ks, reference=ref)


#: Volume.metadata key: the slices that hold an image when the others are gaps (on_slice_grid)
SLICES_WITH_DATA = "slices_with_data"


def _evenly_spaced(idx: np.ndarray) -> bool:
    return idx.size <= 2 or bool(np.all(np.diff(idx) == idx[1] - idx[0]))


def slice_grid(indices: list[int] | np.ndarray) -> np.ndarray:
    """The evenly spaced slice indices from the lowest to the highest of ``indices`` whose
    step divides every gap between them: the finest grid one affine can describe that holds
    them all (3, 9, 12 -> 3, 6, 9, 12)."""
    idx = np.unique(np.asarray(indices, int))
    if idx.size < 2:
        return idx
    return np.arange(idx[0], idx[-1] + 1, int(np.gcd.reduce(np.diff(idx))))


def axis_codes(affine: np.ndarray) -> tuple[str, str, str]:
    """Anatomical direction (R/L, A/P, S/I) each array axis increases towards."""
    import nibabel.orientations as nio

    return tuple(nio.aff2axcodes(np.asarray(affine, float)))  # type: ignore[return-value]


def reshape_to_source(data: np.ndarray, shape: Any) -> np.ndarray:
    """``data`` with the source file's dims when it holds all of its voxels: a 2D image
    stays 2D, a ``(x, y, z, 1)`` file keeps its trailing 1 (writers keep the reader's grid)."""
    if not shape:
        return data
    shape = tuple(int(s) for s in shape)
    # Adding or dropping length-1 axes keeps the voxels' order, so this is only a reshape.
    if shape != data.shape and [s for s in shape if s != 1] == [s for s in data.shape if s != 1]:
        return data.reshape(shape)
    return data


def affine_from_spacing(spacing: tuple[float, float, float]) -> np.ndarray:
    """The affine of an array with no geometry of its own: axial slices, rows towards
    posterior, columns towards the patient's left (DICOM's usual axial layout)."""
    ds, dr, dc = (float(s) for s in spacing)
    a = np.zeros((4, 4))
    a[0, 2] = -dc  # col -> towards L (x decreases in RAS)
    a[1, 1] = -dr  # row -> towards P
    a[2, 0] = ds  # slice -> towards S
    a[3, 3] = 1.0
    return a
