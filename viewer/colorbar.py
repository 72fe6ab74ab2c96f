"""A light colour bar widget: a vertical gradient with a few tick labels, painted directly.

pyqtgraph's ColorBarItem needs a graphics view of its own and ~40 ms to build and first
paint; this one paints in a millisecond, so switching a pane to a colour map mid-run
never stalls the event loop.
"""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget

BAR_PX = 14


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) between low and high."""
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return [low]
    raw = span / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def format_tick(value: float, step: float) -> str:
    if step >= 1 or value == 0:
        return f"{value:.0f}"
    decimals = min(6, max(0, -int(math.floor(math.log10(step)))))
    return f"{value:.{decimals}f}"


class ColorBar(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.levels = (0.0, 1.0)
        self._gradient: QImage | None = None

    def set_lookup_table(self, lut: np.ndarray) -> None:
        """``lut``: (N, 3 or 4) uint8 colours from low to high."""
        rgb = np.ascontiguousarray(lut[::-1, :3], dtype=np.uint8)  # top of the bar = high values
        image = np.repeat(rgb[:, None, :], 2, axis=1)
        self._gradient = QImage(image.data, 2, image.shape[0], 6, QImage.Format.Format_RGB888).copy()
        self.update()

    def set_levels(self, low: float, high: float) -> None:
        if (low, high) != self.levels:
            self.levels = (float(low), float(high))
            self.update()

    def paintEvent(self, ev):
        if self._gradient is None:
            return
        p = QPainter(self)
        top, bottom = 28, self.height() - 28
        if bottom - top < 20:
            return
        bar = QRectF(4, top, BAR_PX, bottom - top)
        p.drawImage(bar, self._gradient)
        p.setPen(QPen(QColor(200, 200, 200)))
        p.drawRect(bar)
        low, high = self.levels
        ticks = nice_ticks(low, high)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        font = p.font()
        font.setPointSizeF(max(font.pointSizeF() - 1, 7))
        p.setFont(font)
        for value in ticks:
            y = bottom - (value - low) / (high - low) * (bottom - top) if high > low else bottom
            p.drawLine(int(bar.right()), int(y), int(bar.right()) + 4, int(y))
            p.drawText(int(bar.right()) + 7, int(y) + 5, format_tick(value, step))
        p.end()
