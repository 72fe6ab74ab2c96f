"""The four linked panes: input, reconstruction, baseline, uncertainty (2x2 or 1x4).

Linked means one zoom/pan for all (their view boxes share X and Y ranges: every pane
shows the same millimetres), one crosshair following the cursor in every pane, and one
slice (the window owns the slice index and redraws all panes).
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QGridLayout, QWidget

from .geometry import SliceGeometry
from .pane import ImagePane

PANES = (
    ("input", "Input"),
    ("recon", "Diffusion reconstruction"),
    ("baseline", "Baseline"),
    ("variance", "Uncertainty"),
)
LAYOUTS = ("2x2", "1x4")


class PaneGrid(QWidget):
    hovered = Signal(float, float)
    left = Signal()
    sliceStep = Signal(int)
    windowDrag = Signal(str, float, float)  # pane name, dx, dy

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setStyleSheet("background: black;")
        self.panes: dict[str, ImagePane] = {name: ImagePane(name, title) for name, title in PANES}
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(2)
        self.layout_name = "2x2"
        self.set_layout("2x2")
        first = self.panes["input"].view
        for pane in self.panes.values():
            if pane.view is not first:
                pane.view.setXLink(first)
                pane.view.setYLink(first)
            pane.hovered.connect(self._hovered)
            pane.left.connect(self._left)
            pane.sliceStep.connect(self.sliceStep)
            pane.windowDrag.connect(lambda dx, dy, n=pane.name: self.windowDrag.emit(n, dx, dy))
            pane.resized.connect(self._pane_resized)
            pane.userMovedView.connect(self._user_moved_view)
        self.crosshair_enabled = True
        # While the user has not zoomed or panned, the slice stays fitted to the panes
        # through window resizes and layout changes (as Slicer's "fit" does).
        self.fitted = True
        self._refit = QTimer(self)
        self._refit.setSingleShot(True)
        self._refit.setInterval(0)
        self._refit.timeout.connect(self._fit_if_fitted)

    def __getitem__(self, name: str) -> ImagePane:
        return self.panes[name]

    def set_layout(self, name: str) -> None:
        if name not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}")
        for pane in self.panes.values():
            self._grid.removeWidget(pane)
        for i, pane in enumerate(self.panes.values()):
            row, col = divmod(i, 2) if name == "2x2" else (0, i)
            self._grid.addWidget(pane, row, col)
        for i in range(4):
            self._grid.setRowStretch(i, 1 if (name == "2x2" and i < 2) or (name == "1x4" and i == 0) else 0)
            self._grid.setColumnStretch(i, 1 if (name == "2x2" and i < 2) or name == "1x4" else 0)
        self.layout_name = name

    def set_slice_geometry(self, geometry: SliceGeometry) -> None:
        for pane in self.panes.values():
            pane.set_slice_geometry(geometry)
        self.fit()

    def fit(self) -> None:
        self.panes["input"].fit()  # the others follow through the links
        self.fitted = True

    def _fit_if_fitted(self) -> None:
        if self.fitted:
            self.fit()

    def _pane_resized(self) -> None:
        self._refit.start()  # once, after every pane has its new size

    def _user_moved_view(self) -> None:
        self.fitted = False

    def view_range(self, name: str):
        return self.panes[name].view.viewRange()

    def _hovered(self, x_mm: float, y_mm: float) -> None:
        if self.crosshair_enabled:
            for pane in self.panes.values():
                pane.set_crosshair(x_mm, y_mm)
        self.hovered.emit(x_mm, y_mm)

    def _left(self) -> None:
        for pane in self.panes.values():
            pane.set_crosshair(None, None)
        self.left.emit()

    def set_crosshair_enabled(self, enabled: bool) -> None:
        self.crosshair_enabled = enabled
        if not enabled:
            self._left()
