"""The three planes of a volume's voxel grid, for the multiplanar view (no Qt).

A plane holds one array axis fixed (its *normal*) and shows the other two. Which of
axial, coronal and sagittal it is comes from the affine: the patient axis (S, A or R)
its normal points along most. The stored slice plane shows as stored (rows down,
columns right, as the single-plane panes do). The two reformats put the in-plane axis
that runs most along S/I vertically, superior at the top (flipped when the index runs
towards S), and the other axis to the right as stored: for a usual axial scan, the
patient's right on the viewer's left in coronal views and anterior on the left in
sagittal ones. Every plane is drawn in millimetres (each axis at its own voxel
spacing), so anisotropic voxels keep their true aspect, and its edge letters come from
the affine's columns, oblique ones included ("LA").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import direction_label, opposite

PLANE_NAMES = {2: "axial", 1: "coronal", 0: "sagittal"}  # by the RAS axis (R=0, A=1, S=2) the normal follows
PLANE_ORDER = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class Plane:
    """One plane of a volume: ``normal`` fixed; ``down`` and ``right`` the array axes on screen."""

    affine: np.ndarray
    shape: tuple[int, int, int]  # (slices, rows, cols)
    spacing: tuple[float, float, float]  # mm along each array axis
    normal: int
    down: int
    right: int
    flip_down: bool  # index 0 of ``down`` at the bottom of the screen
    flip_right: bool

    @classmethod
    def of(cls, affine, shape, spacing, normal: int) -> "Plane":
        affine = np.asarray(affine, float)
        a, b = (axis for axis in range(3) if axis != normal)
        name = PLANE_NAMES[int(np.argmax(np.abs(affine[:3, normal])))]
        if name == "axial":
            down, right, flip_down = a, b, False  # as stored
        else:
            s_of = {axis: abs(affine[2, axis]) / max(np.linalg.norm(affine[:3, axis]), 1e-12) for axis in (a, b)}
            down = a if s_of[a] >= s_of[b] else b
            right = b if down == a else a
            flip_down = bool(affine[2, down] > 0)  # the index runs towards S: show it going up
        return cls(affine, tuple(int(n) for n in shape), tuple(float(s) if s > 0 else 1.0 for s in spacing),
                   normal, down, right, flip_down, False)

    @property
    def name(self) -> str:
        return PLANE_NAMES[int(np.argmax(np.abs(self.affine[:3, self.normal])))]

    @property
    def n_slices(self) -> int:
        return self.shape[self.normal]

    # ----- what SliceGeometry gives a pane: extent and edge letters -----

    @property
    def pixel_mm(self) -> tuple[float, float]:
        return self.spacing[self.down], self.spacing[self.right]

    @property
    def extent_mm(self) -> tuple[float, float]:
        """(width, height) of the plane in mm."""
        return self.shape[self.right] * self.spacing[self.right], self.shape[self.down] * self.spacing[self.down]

    def edge_labels(self) -> dict[str, str]:
        down = direction_label(self.affine[:3, self.down] * (-1 if self.flip_down else 1))
        right = direction_label(self.affine[:3, self.right] * (-1 if self.flip_right else 1))
        return {"right": right, "left": opposite(right), "bottom": down, "top": opposite(down)}

    def slice_label(self) -> str:
        return direction_label(self.affine[:3, self.normal])

    # ----- images and positions -----

    def image(self, data: np.ndarray, index: int, filled: np.ndarray | None = None) -> np.ndarray | None:
        """The plane at ``index`` of a ``(slices, rows, cols)`` stack, rows = ``down``.

        ``filled`` marks the computed slices: in a reformat the others are NaN (drawn
        empty), and a plane with none computed is None.
        """
        if filled is not None and not filled.any():
            return None
        if self.normal == 0 and filled is not None and not filled[index]:
            return None
        image = np.take(data, index, axis=self.normal)
        if filled is not None and self.normal != 0 and not filled.all():
            image = np.where(filled[:, None], image, np.nan).astype(np.float32)
        remaining = [axis for axis in range(3) if axis != self.normal]
        if remaining[0] != self.down:
            image = image.T
        if self.flip_down:
            image = image[::-1]
        if self.flip_right:
            image = image[:, ::-1]
        return np.ascontiguousarray(image, dtype=np.float32)

    def voxel_at(self, x_mm: float, y_mm: float, index: int) -> tuple[int, int, int] | None:
        """The voxel (slice, row, col) under a scene position of this plane at ``index``, or None outside."""
        d = int(np.floor(y_mm / self.spacing[self.down]))
        r = int(np.floor(x_mm / self.spacing[self.right]))
        n_down, n_right = self.shape[self.down], self.shape[self.right]
        if not (0 <= d < n_down and 0 <= r < n_right):
            return None
        voxel = [0, 0, 0]
        voxel[self.normal] = int(index)
        voxel[self.down] = n_down - 1 - d if self.flip_down else d
        voxel[self.right] = n_right - 1 - r if self.flip_right else r
        return voxel[0], voxel[1], voxel[2]

    def scene_position(self, voxel) -> tuple[float, float]:
        """Scene (x, y) in mm of a voxel's centre in this plane (the crosshair)."""
        d, r = int(voxel[self.down]), int(voxel[self.right])
        if self.flip_down:
            d = self.shape[self.down] - 1 - d
        if self.flip_right:
            r = self.shape[self.right] - 1 - r
        return (r + 0.5) * self.spacing[self.right], (d + 0.5) * self.spacing[self.down]


def planes_of(volume) -> list[Plane]:
    """The three planes of a volume, axial first, then coronal, then sagittal (by the affine)."""
    planes = [Plane.of(volume.affine, volume.shape, volume.spacing, normal) for normal in range(3)]
    return sorted(planes, key=lambda p: (PLANE_ORDER.index(p.name), p.normal))
