"""The hallucination map: a red overlay on the reconstruction pane and one line under it.

A pixel is flagged where the diffusion reconstruction departs from the classical
baseline (a conservative, data-consistent estimate) by more than ``k`` calibrated σ, or
where the calibrated σ itself is above a fraction of the object's intensity range
(:func:`diffrecon.diffusion.calibration.hallucination_map`). The line under the pane says
how much of the object is flagged ("2.1 % of the object flagged"). The flags are kept in
the session's ``flags`` layer, so File > Export flags writes them as σ is written.

Self-contained: it attaches to the window's recon pane, toolbar and session layers and
refreshes on the run controller's frames, slice changes and the end of a run.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel

from diffrecon.diffusion.calibration import FLAG_K, FLAG_SIGMA_FRACTION, hallucination_map

LINE_STYLE = "color: #ff8a7a; background: rgba(0, 0, 0, 150); font-size: 12px; padding: 1px 4px;"
FLAG_RGBA = (255, 40, 40, 150)


class HallucinationOverlay(QObject):
    """The toggle (toolbar and View menu, key H), the overlay image and the line under the pane."""

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.pane = window.grid["recon"]
        self.item = pg.ImageItem(axisOrder="row-major")
        self.item.setZValue(5)  # above the image, below the crosshair lines
        self.item.setVisible(False)
        self.pane.view.addItem(self.item)
        self.line = QLabel("", self.pane)
        self.line.setStyleSheet(LINE_STYLE)
        self.line.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.line.setVisible(False)
        self.pane.installEventFilter(self)  # keep the line at the pane's bottom edge on resize
        self.fraction: float | None = None
        self.action = QAction("Hallucination map", window)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("H"))
        self.action.setToolTip(f"Mark, on the reconstruction, pixels that depart from the baseline by more than "
                               f"{FLAG_K:g} calibrated σ or whose σ is above {FLAG_SIGMA_FRACTION:.0%} of the "
                               f"object's range: what the prior may have invented (H)")
        self.action.toggled.connect(lambda _on: self.refresh())
        window.commands.toolbar.addAction(self.action)
        window.runner.frameShown.connect(lambda _n: self.refresh())
        window.runner.runFinished.connect(lambda _ok: self.refresh())
        window.slider.valueChanged.connect(lambda _v: self.refresh())

    @property
    def enabled(self) -> bool:
        return self.action.isChecked()

    def eventFilter(self, watched, event):  # noqa: N802 (Qt's name)
        if watched is self.pane and event.type() == QEvent.Type.Resize:
            self._place_line()
        return False

    def _place_line(self) -> None:
        self.line.adjustSize()
        self.line.move((self.pane.width() - self.line.width()) // 2, self.pane.height() - self.line.height() - 24)

    def compute(self, index: int | None = None) -> tuple[np.ndarray, float] | None:
        """Flags and flagged fraction for one slice (the current one), stored in the ``flags``
        layer; None while the reconstruction or its σ is missing there."""
        s = self.w.session
        if s is None:
            return None
        index = s.slice_index if index is None else index
        recon, sigma = s.image("recon", index), s.image("sigma", index)
        if recon is None or sigma is None:
            return None
        baseline = s.image("baseline", index)
        # Without a baseline only the σ threshold can flag: compare the reconstruction with itself.
        flags, fraction = hallucination_map(recon, recon if baseline is None else baseline, sigma)
        s.layers["flags"].put(np.array([index]), flags.astype(np.float32)[None])
        return flags, fraction

    def refresh(self) -> None:
        result = self.compute() if self.enabled else None
        if result is None:
            self.item.setVisible(False)
            self.line.setVisible(False)
            self.fraction = None
            return
        flags, self.fraction = result
        rgba = np.zeros((*flags.shape, 4), np.uint8)
        rgba[flags] = FLAG_RGBA
        self.item.setImage(rgba, autoLevels=False)
        geometry = self.pane.slice_geometry
        if geometry is not None:
            width_mm, height_mm = geometry.extent_mm
            self.item.setRect(QRectF(0.0, 0.0, width_mm, height_mm))
        self.item.setVisible(True)
        self.line.setText(self.text())
        self.line.setVisible(True)
        self._place_line()

    def text(self) -> str:
        """The line under the pane."""
        if self.fraction is None:
            return ""
        return f"{100 * self.fraction:.1f} % of the object flagged"


__all__ = ["HallucinationOverlay"]
