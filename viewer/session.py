"""What the viewer holds about the open scan and the last run: an evented model, no Qt.

Layers are full-size ``(slices, rows, cols)`` float32 stacks in the volume's own units
(HU for CT), filled slice by slice as jobs report; ``has(layer, slice)`` says whether a
slice was computed. Every change goes through a method that announces it on
``session.events`` (:class:`~.state.SessionEvents`): the panes, the progress bar and the
metrics table subscribe and redraw what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffrecon.io.volume import Volume

from .geometry import SliceGeometry
from .state import RunState, SessionEvents
from .windowing import WindowLevel, initial_window

# layer name -> what it holds
LAYERS = {
    "input": "measured input image (zero-filled / FBP / noisy)",
    "reference": "ground truth (the scan itself under simulation, or the file's target)",
    "recon": "diffusion estimate of the clean image (mean over samples)",
    "sample": "first sample's current noisy state x_t",
    "baseline": "classical baseline",
    "sigma": "per-pixel standard deviation over the samples (calibrated when the prior carries a scale)",
    "flags": "hallucination map: 1 where the reconstruction may be invented (viewer/hallucination.py)",
}


class Layer:
    """A stack with a per-slice 'computed' flag."""

    def __init__(self, shape: tuple[int, int, int]):
        self.data = np.zeros(shape, np.float32)
        self.filled = np.zeros(shape[0], bool)

    def put(self, slices: np.ndarray, images: np.ndarray) -> None:
        self.data[np.asarray(slices)] = images
        self.filled[np.asarray(slices)] = True

    def get(self, index: int) -> np.ndarray | None:
        return self.data[index] if self.filled[index] else None

    def clear(self) -> None:
        self.filled[:] = False


@dataclass
class RunRecord:
    """The last run's facts, for the window title, export and provenance."""

    provenance: dict = field(default_factory=dict)
    slices: list[int] = field(default_factory=list)
    steps_seen: list[tuple[int, int]] = field(default_factory=list)  # (slice batch start, step) in arrival order
    slices_finished: list[int] = field(default_factory=list)  # every step done, in finishing order
    finished: bool = False
    cancelled: str = ""  # e.g. "cancelled at step 7/25": the results are unfinished
    seconds: float = 0.0


class Session:
    def __init__(self, volume: Volume, path: Path | None = None):
        self.events = SessionEvents()
        self.volume = volume
        self.path = Path(path) if path is not None else volume.source_path
        self.geometry = SliceGeometry.of(volume)
        self.layers = {name: Layer(volume.shape) for name in LAYERS}
        self.metrics: dict[str, dict[str, float]] = {}  # pane name -> {"psnr", "ssim", "nmse", "mae"}
        self.slice_index = volume.n_slices // 2
        # The 3D crosshair in voxel indices (slice, row, col): its slice is the one on screen.
        self.cursor: tuple[int, int, int] = (self.slice_index, volume.shape[1] // 2, volume.shape[2] // 2)
        self._window: WindowLevel = initial_window(self.display_data(), volume.window, volume.units)
        self.run = RunRecord()
        self.run_state = RunState()

    # ----- facts about the scan -----

    @property
    def units(self) -> str:
        return self.volume.units

    @property
    def n_slices(self) -> int:
        return self.volume.n_slices

    def display_data(self) -> np.ndarray:
        """The scan as a magnitude stack (complex MR images show their magnitude)."""
        data = self.volume.data
        return np.abs(data).astype(np.float32) if np.iscomplexobj(data) else data

    def data_span(self) -> float:
        lo, hi = self.volume.intensity_range()
        return max(hi - lo, 1e-6)

    def title(self) -> str:
        name = self.path.name if self.path is not None else "scan"
        s, r, c = self.volume.shape
        return f"{name}  ({s} x {r} x {c}, {self.volume.modality})"

    # ----- slices and layers -----

    def set_slice(self, index: int) -> int:
        index = int(np.clip(index, 0, self.n_slices - 1))
        if index != self.slice_index:
            self.slice_index = index
            self.cursor = (index, *self.cursor[1:])
            self.events.slice.emit(index)
        return self.slice_index

    def set_cursor(self, slice_index: int, row: int, col: int) -> tuple[int, int, int]:
        """Move the 3D crosshair (clipped to the volume); its slice becomes the one on screen."""
        shape = self.volume.shape
        cursor = tuple(int(np.clip(v, 0, n - 1)) for v, n in zip((slice_index, row, col), shape))
        moved = cursor != self.cursor
        self.cursor = cursor  # type: ignore[assignment]
        self.set_slice(cursor[0])
        if moved:
            self.events.cursor.emit(self.cursor)
        return self.cursor

    @property
    def window(self) -> WindowLevel:
        return self._window

    @window.setter
    def window(self, value: WindowLevel) -> None:
        self._window = value
        self.events.window.emit(value)

    def put(self, layer: str, slices, images: np.ndarray, announce: bool = True) -> None:
        """Store images of some slices; ``announce=False`` leaves the announcement to
        :meth:`announce` (frames are stored as they come and announced at the drawing rate)."""
        self.layers[layer].put(slices, images)
        if announce:
            self.announce((layer,), slices)

    def announce(self, layers: tuple[str, ...], slices) -> None:
        self.events.layers.emit(tuple(layers), np.atleast_1d(np.asarray(slices)))

    def update_metrics(self, metrics: dict[str, dict[str, float]]) -> None:
        self.metrics.update(metrics)
        self.events.metrics.emit(self.metrics)

    def set_run_state(self, state: RunState) -> None:
        self.run_state = state
        self.run.cancelled = state.cancelled
        self.events.run_state.emit(state)

    def image(self, layer: str, index: int | None = None) -> np.ndarray | None:
        return self.layers[layer].get(self.slice_index if index is None else index)

    def has(self, layer: str, index: int | None = None) -> bool:
        return bool(self.layers[layer].filled[self.slice_index if index is None else index])

    def clear_results(self) -> None:
        """Forget the last run's outputs (a new run, or new measurement settings)."""
        names = ("recon", "sample", "baseline", "sigma", "flags")
        for name in names:
            self.layers[name].clear()
        self.metrics = {}
        self.run = RunRecord()
        self.events.cleared.emit(names)
        self.events.metrics.emit(self.metrics)

    def clear_inputs(self) -> None:
        self.layers["input"].clear()
        self.layers["reference"].clear()
        self.metrics.pop("input", None)
        self.events.cleared.emit(("input", "reference"))

    def error_image(self, layer: str, index: int | None = None) -> np.ndarray | None:
        """|layer - reference| for one slice, or None when either is missing."""
        img, ref = self.image(layer, index), self.image("reference", index)
        if img is None or ref is None:
            return None
        return np.abs(img - ref)

    def value_at(self, layer: str, row: int, col: int) -> float | None:
        img = self.image(layer)
        return None if img is None else float(img[row, col])
