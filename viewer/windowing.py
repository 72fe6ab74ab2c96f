"""Window/level: the grey-scale mapping shared by the image panes, and its presets.

Presets come from ``resources/presets/window_level.json``: fixed (width, level) pairs in
Hounsfield units for CT, percentile windows ("auto") for MRI, whose intensities have no
absolute meaning. Nothing here knows about Qt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffrecon.errors import DiffreconError

from .paths import presets_file


@dataclass(frozen=True)
class WindowLevel:
    """A display window: ``level`` (centre) and ``width``, in the image's units."""

    level: float
    width: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2

    @classmethod
    def from_range(cls, low: float, high: float) -> "WindowLevel":
        if not high > low:
            high = low + 1.0
        return cls((low + high) / 2, high - low)

    def dragged(self, dx_px: float, dy_px: float, data_span: float) -> "WindowLevel":
        """Slicer's right-drag: right widens the window, up raises the level.

        One pixel of mouse travel moves by 1/500 of the data's span, so a drag across
        a pane sweeps the whole range whatever the units.
        """
        step = max(data_span, 1e-6) / 500.0
        width = max(self.width + dx_px * step, step)
        return WindowLevel(self.level - dy_px * step, width)

    def describe(self, units: str) -> str:
        u = f" {units}" if units and units != "a.u." else ""
        return f"W {self.width:.4g}{u}  L {self.level:.4g}{u}"


@dataclass(frozen=True)
class Preset:
    name: str
    width: float | None = None
    level: float | None = None
    auto_percentiles: tuple[float, float] | None = None
    shortcut: str | None = None

    def window_for(self, data: np.ndarray) -> WindowLevel:
        if self.auto_percentiles is None:
            return WindowLevel(float(self.level), float(self.width))
        return auto_window(data, *self.auto_percentiles)


def auto_window(data: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.5) -> WindowLevel:
    """A window spanning the given percentiles of the finite, non-background voxels."""
    values = np.asarray(data, dtype=np.float32)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return WindowLevel(0.5, 1.0)
    if values.size > 400_000:  # percentiles of a strided sample are as good and 10x faster
        values = values[:: values.size // 200_000]
    floor = float(values.min())
    body = values[values > floor]  # leave out the empty background (air, zero padding)
    if body.size < values.size * 0.05:
        body = values
    lo, hi = np.percentile(body, [low_pct, high_pct])
    return WindowLevel.from_range(float(lo), float(hi))


def load_presets(path: Path | None = None) -> dict[str, list[Preset]]:
    """Presets by DICOM modality code ("CT", "MR") plus "default"."""
    path = path or presets_file()
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DiffreconError(f"{path}: the window/level presets cannot be read ({exc})") from exc
    presets: dict[str, list[Preset]] = {}
    for key, entries in raw.items():
        if key.startswith("_"):
            continue
        presets[key] = [
            Preset(
                name=str(e["name"]),
                width=e.get("width"),
                level=e.get("level"),
                auto_percentiles=tuple(e["auto_percentiles"]) if "auto_percentiles" in e else None,
                shortcut=e.get("shortcut"),
            )
            for e in entries
        ]
    return presets


def presets_for(modality_code: str, units: str, presets: dict[str, list[Preset]]) -> list[Preset]:
    """CT presets for anything in HU; MR presets for MR; the defaults otherwise."""
    if units == "HU" or modality_code == "CT":
        return presets.get("CT", [])
    return presets.get(modality_code, presets.get("default", []))


def initial_window(data: np.ndarray, stored: tuple[float, float] | None, units: str) -> WindowLevel:
    """The file's own window (DICOM centre/width) when it has one; else soft tissue for CT, auto otherwise."""
    if stored is not None and stored[1] > 0:
        return WindowLevel(float(stored[0]), float(stored[1]))
    if units == "HU":
        return WindowLevel(40.0, 400.0)
    return auto_window(data)


# Words in the DICOM header (body part, study and series descriptions) naming a CT's anatomy,
# and the preset a radiologist reads that anatomy in first.
ANATOMY_WORDS = {
    "head": ("HEAD", "BRAIN", "SKULL", "CRANI", "NEURO", "CEREBR"),
    "lung": ("LUNG", "PULMO"),
}
ANATOMY_PRESETS = {"head": "Brain", "lung": "Lung"}
HEAD_WIDTH_MM = (100.0, 240.0)  # a head's extent across an axial slice; bodies are wider


def ct_anatomy(volume) -> str | None:
    """"head", "lung" or None for a CT volume: from its header's words, else from its shape.

    Without words (anonymised files, NIfTI), a head is recognised by what it looks like on
    the middle slice: tissue spanning 10-24 cm in both directions, inside a ring of bone.
    """
    if not (volume.units == "HU" or volume.modality == "CT"):
        return None
    meta = volume.metadata or {}
    tags = (meta.get("dicom_source") or {}).get("tags") or {}
    words = " ".join(str(v) for v in (tags.get("BodyPartExamined"), tags.get("StudyDescription"),
                                       tags.get("SeriesDescription"), meta.get("series_description")) if v).upper()
    for anatomy, keys in ANATOMY_WORDS.items():
        if any(k in words for k in keys):
            return anatomy
    image = np.asarray(volume.data[volume.n_slices // 2], dtype=np.float32)
    body = image > -500.0
    if body.mean() < 0.02:
        return None
    rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    height_mm = (rows[-1] - rows[0] + 1) * float(volume.spacing[1])
    width_mm = (cols[-1] - cols[0] + 1) * float(volume.spacing[2])
    bone = (image > 300.0).sum() / max(int(body.sum()), 1)
    lo, hi = HEAD_WIDTH_MM
    if lo <= height_mm <= hi and lo <= width_mm <= hi and 0.03 <= bone <= 0.6:
        return "head"
    return None


def anatomy_preset(volume, presets: list[Preset]) -> int | None:
    """Index in ``presets`` of the preset that fits the scan's anatomy (head CT: Brain), if any."""
    name = ANATOMY_PRESETS.get(ct_anatomy(volume) or "")
    for i, preset in enumerate(presets):
        if name is not None and preset.name == name:
            return i
    return None
