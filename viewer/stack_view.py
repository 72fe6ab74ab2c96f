"""The stack view both windows show: linked panes over one slice stack, a readout line
under them (position in mm and values under the cursor) and a slice slider.

The main window hangs its four panes in it, the reader window the reference and the
image to score. The owner keeps the slice index: the view says when the user asks for
another slice (``sliceChosen`` from the slider, ``grid.sliceStep`` from the wheel and
keys) and shows the one it is given (``show_slice``). Other views of the same stack (the
main window's planes) hang beside the grid as pages.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QStackedWidget, QVBoxLayout, QWidget

from .pane_grid import LAYOUTS, PANES, PaneGrid


class StackView(QWidget):
    sliceChosen = Signal(int)  # the slider moved to this slice

    def __init__(self, panes: Sequence[tuple[str, str]] = PANES, layout: str = "2x2", linked: bool = True,
                 layouts: Sequence[str] = LAYOUTS, readout_style: str = "", parent=None):
        super().__init__(parent)
        self.grid = PaneGrid(panes, layout, linked, layouts)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setEnabled(False)
        self.slice_caption = QLabel("Slice")
        self.slice_label = QLabel("")
        self.slice_label.setMinimumWidth(90)
        self.readout = QLabel("")  # the pixel under the cursor: position in mm and every pane's value
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.readout.setMinimumHeight(18)
        if readout_style:
            self.readout.setStyleSheet(readout_style)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        self.pages = QStackedWidget()  # the pane grid, or another view of the same stack (the planes)
        self.pages.addWidget(self.grid)
        column.addWidget(self.pages, 1)
        readout_row = QHBoxLayout()
        readout_row.setContentsMargins(8, 2, 8, 0)
        readout_row.addWidget(self.readout, 1)
        column.addLayout(readout_row)
        slices = QHBoxLayout()
        slices.setContentsMargins(6, 2, 6, 4)
        slices.addWidget(self.slice_caption)
        slices.addWidget(self.slider, 1)
        slices.addWidget(self.slice_label)
        column.addLayout(slices)
        self.slider.valueChanged.connect(self.sliceChosen)

    def add_page(self, widget: QWidget) -> None:
        self.pages.addWidget(widget)

    def show_page(self, widget: QWidget) -> None:
        self.pages.setCurrentWidget(widget)

    @property
    def page(self) -> QWidget:
        """What shows the images now (the PNG export grabs it)."""
        return self.pages.currentWidget()

    @property
    def panes(self):
        return self.grid.panes

    def set_slice_count(self, n: int) -> None:
        """A stack of ``n`` slices: the slider spans them (and hides for a single slice when asked)."""
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(n - 1, 0))
        self.slider.setEnabled(n > 1)
        self.slider.blockSignals(False)

    def show_slice_row(self, visible: bool) -> None:
        for w in (self.slider, self.slice_caption, self.slice_label):
            w.setVisible(visible)

    def show_slice(self, index: int, n: int) -> None:
        """Move the slider and the "k / n" label to ``index`` without asking for it again."""
        if self.slider.value() != index:
            self.slider.blockSignals(True)
            self.slider.setValue(index)
            self.slider.blockSignals(False)
        self.slice_label.setText(f"{index + 1} / {n}")
