"""Linked image panes in a grid: the main window's four, the reader window's two.

Linked means one zoom/pan for all linked panes (their view boxes share X and Y ranges:
every pane shows the same millimetres), one crosshair following the cursor, and one
slice (the owner keeps the slice index and redraws the panes). While the user has not
zoomed or panned, the slice stays fitted to the panes through resizes and layout
changes (as Slicer's "fit" does).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def arrangement(name: str, n: int) -> list[tuple[int, int]]:
    """(row, column) of each of ``n`` panes in a named layout: "RxC" fills C columns row by row
    ("2x2", "4x3"); "1xN" is one row."""
    rows, _, cols = name.partition("x")
    columns = n if rows == "1" else int(cols)
    return [divmod(i, columns) for i in range(n)]


class PaneGrid(QWidget):
    hovered = Signal(float, float)
    hoveredPane = Signal(str, float, float)  # which pane, scene position in mm
    left = Signal()
    sliceStep = Signal(int)
    windowDrag = Signal(str, float, float)  # pane name, dx, dy

    def __init__(self, panes: Sequence[tuple[str, str]] = PANES, layout: str = "2x2", linked: bool = True,
                 layouts: Sequence[str] = LAYOUTS, parent=None):
        super().__init__(parent)
        self.setStyleSheet("background: black;")
        self.layouts = tuple(layouts)
        self.panes: dict[str, ImagePane] = {name: ImagePane(name, title) for name, title in panes}
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(2)
        self.layout_name = layout
        self.set_layout(layout)
        for pane in self.panes.values():
            pane.hovered.connect(lambda x, y, n=pane.name: self._hovered(n, x, y))
            pane.left.connect(self._left)
            pane.sliceStep.connect(self.sliceStep)
            pane.windowDrag.connect(lambda dx, dy, n=pane.name: self.windowDrag.emit(n, dx, dy))
            pane.resized.connect(self._pane_resized)
            pane.userMovedView.connect(self._user_moved_view)
        if linked:
            self.link(list(self.panes))
        self.crosshair_enabled = True
        self.fitted = True
        self._refit = QTimer(self)
        self._refit.setSingleShot(True)
        self._refit.setInterval(0)
        self._refit.timeout.connect(self._fit_if_fitted)

    def __getitem__(self, name: str) -> ImagePane:
        return self.panes[name]

    def set_layout(self, name: str) -> None:
        if name not in self.layouts:
            raise ValueError(f"layout must be one of {self.layouts}")
        for pane in self.panes.values():
            self._grid.removeWidget(pane)
        cells = arrangement(name, len(self.panes))
        for pane, (row, col) in zip(self.panes.values(), cells):
            self._grid.addWidget(pane, row, col)
        rows = {r for r, _ in cells}
        cols = {c for _, c in cells}
        for i in range(max(len(self.panes), 4)):
            self._grid.setRowStretch(i, 1 if i in rows else 0)
            self._grid.setColumnStretch(i, 1 if i in cols else 0)
        self.layout_name = name

    def link(self, *groups: Sequence[str]) -> None:
        """Share zoom and pan within each group of panes (its first leads); the rest are unlinked."""
        leader_of = {}
        for group in groups:
            for name in group[1:]:
                leader_of[name] = self.panes[group[0]].view
        for name, pane in self.panes.items():
            pane.view.setXLink(leader_of.get(name))
            pane.view.setYLink(leader_of.get(name))

    def set_slice_geometry(self, geometry: SliceGeometry, names: Sequence[str] | None = None) -> None:
        for name in names if names is not None else self.panes:
            self.panes[name].set_slice_geometry(geometry)
        self.fit()

    def fit(self) -> None:
        """Fit every pane that leads its link (the linked ones follow)."""
        for pane in self.panes.values():
            if pane.view.linkedView(0) is None and pane.slice_geometry is not None:
                pane.fit()
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

    def _hovered(self, name: str, x_mm: float, y_mm: float) -> None:
        if self.crosshair_enabled:
            for pane in self.panes.values():
                pane.set_crosshair(x_mm, y_mm)
        self.hovered.emit(x_mm, y_mm)
        self.hoveredPane.emit(name, x_mm, y_mm)

    def _left(self) -> None:
        for pane in self.panes.values():
            pane.set_crosshair(None, None)
        self.left.emit()

    def set_crosshair_enabled(self, enabled: bool) -> None:
        self.crosshair_enabled = enabled
        if not enabled:
            self._left()
