"""Where a displayed pixel is in the patient: edge labels, positions in mm, pixel size.

Panes show a slice with array rows downwards and columns to the right, exactly as
stored (no flips: a radiological axial scan stored with columns towards the patient's
left shows the patient's right on the viewer's left). The scene's coordinates are
millimetres (pixel ``(r, c)`` covers ``[c*dc, (c+1)*dc] x [r*dr, (r+1)*dr]``), so square
pixels and anisotropic ones both show at their true aspect ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# RAS+: +x towards the patient's Right, +y Anterior, +z Superior.
_POSITIVE = ("R", "A", "S")
_NEGATIVE = ("L", "P", "I")


def direction_label(vector: np.ndarray, oblique_threshold: float = 0.3) -> str:
    """Anatomical direction of a RAS vector: 'L', or 'LA' for an oblique one (main letter first)."""
    v = np.asarray(vector, float)
    norm = np.linalg.norm(v)
    if norm == 0:
        return "?"
    v = v / norm
    order = np.argsort(-np.abs(v))
    letters = [(_POSITIVE if v[i] > 0 else _NEGATIVE)[i] for i in order if abs(v[i]) >= oblique_threshold]
    return "".join(letters) or "?"


def opposite(label: str) -> str:
    swap = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S", "?": "?"}
    return "".join(swap[ch] for ch in label)


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry of a volume's slices, from its affine (array index -> RAS mm)."""

    affine: np.ndarray
    shape: tuple[int, int, int]  # (slices, rows, cols)
    spacing: tuple[float, float, float]  # mm along (slice, row, col)

    @classmethod
    def of(cls, volume) -> "SliceGeometry":
        return cls(np.asarray(volume.affine, float), tuple(volume.shape), tuple(volume.spacing))

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """(row, col) pixel size; a missing or zero spacing counts as 1 mm."""
        dr, dc = self.spacing[1], self.spacing[2]
        return (dr if dr > 0 else 1.0, dc if dc > 0 else 1.0)

    @property
    def extent_mm(self) -> tuple[float, float]:
        """(width, height) of a slice in mm."""
        dr, dc = self.pixel_mm
        return self.shape[2] * dc, self.shape[1] * dr

    def edge_labels(self) -> dict[str, str]:
        """Letters for the pane edges: where rows (down) and columns (right) point."""
        row_dir = direction_label(self.affine[:3, 1])
        col_dir = direction_label(self.affine[:3, 2])
        return {"right": col_dir, "left": opposite(col_dir), "bottom": row_dir, "top": opposite(row_dir)}

    def slice_label(self) -> str:
        """Direction the slice index increases towards (e.g. 'S' for axial slices going up)."""
        return direction_label(self.affine[:3, 0])

    def pixel_at(self, x_mm: float, y_mm: float) -> tuple[int, int] | None:
        """(row, col) under a scene position, or None outside the slice."""
        dr, dc = self.pixel_mm
        col, row = int(np.floor(x_mm / dc)), int(np.floor(y_mm / dr))
        if 0 <= row < self.shape[1] and 0 <= col < self.shape[2]:
            return row, col
        return None

    def patient_position(self, slice_index: float, row: float, col: float) -> np.ndarray:
        """RAS position in mm of a voxel centre."""
        return (self.affine @ np.array([slice_index, row, col, 1.0]))[:3]

    def format_position(self, slice_index: float, row: float, col: float) -> str:
        """Slicer-style position, e.g. 'R 12.0  P 31.5  S 20.0 mm'."""
        parts = []
        for axis, value in enumerate(self.patient_position(slice_index, row, col)):
            letter = _POSITIVE[axis] if value >= 0 else _NEGATIVE[axis]
            parts.append(f"{letter} {abs(value):.1f}")
        return "  ".join(parts) + " mm"

    def slice_location(self, slice_index: int) -> str:
        """Where a slice is along its main axis, as a scanner console shows it: 'S 20.0 mm'."""
        axis = int(np.argmax(np.abs(self.affine[:3, 0])))
        centre = self.patient_position(slice_index, (self.shape[1] - 1) / 2, (self.shape[2] - 1) / 2)
        value = float(centre[axis])
        letter = _POSITIVE[axis] if value >= 0 else _NEGATIVE[axis]
        return f"{letter} {abs(value):.1f} mm"
