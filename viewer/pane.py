"""One image pane: a slice in physical millimetres, with the overlays a radiologist expects.

Mouse (as in 3D Slicer where it matters): wheel = next/previous slice, Ctrl+wheel =
zoom, left or middle drag = pan, right drag = window/level (horizontal = width,
vertical = level), double click = fit the slice. Arrow keys / Page Up/Down change
slice. Nearest-neighbour pixels, black background, no flips: the slice shows as stored.
"""

from __future__ import annotations

import functools

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtWidgets import QGraphicsView, QLabel

from .colorbar import ColorBar
from .geometry import SliceGeometry

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

COLORBAR_WIDTH = 64  # pixels at the right edge of a pane with a colour map
FIT_MARGIN_X, FIT_MARGIN_Y = 24, 40  # pixels around a fitted slice: the edge letters and title sit there

OVERLAY_STYLE = "color: #e8e8e8; background: transparent; font-size: 12px;"
LABEL_STYLE = "color: #ffd24a; background: transparent; font-size: 14px; font-weight: bold;"
HINT_STYLE = "color: #9a9a9a; background: transparent; font-size: 13px;"


@functools.lru_cache(maxsize=None)
def _lookup_table(name: str) -> np.ndarray:
    """256 colours of a named perceptual map (viridis, inferno), built once per session."""
    return pg.colormap.get(name).getLookupTable(nPts=256)


class SliceViewBox(pg.ViewBox):
    """A ViewBox whose wheel scrolls slices and whose right drag sets the window."""

    sliceStep = Signal(int)
    windowDrag = Signal(float, float)  # pixels moved right, down since the last event
    fitRequested = Signal()
    clicked = Signal(float, float)  # a left click (not a drag) at this scene position in mm

    def __init__(self):
        super().__init__(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.02)
        self.setMouseMode(pg.ViewBox.PanMode)
        self.setBackgroundColor("k")

    def wheelEvent(self, ev, axis=None):
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        if delta:
            self.sliceStep.emit(1 if delta > 0 else -1)
        ev.accept()

    def mouseDragEvent(self, ev, axis=None):
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            self.windowDrag.emit(float(d.x()), float(d.y()))
            return
        super().mouseDragEvent(ev, axis)

    def mouseClickEvent(self, ev):
        if ev.double():
            self.fitRequested.emit()
            ev.accept()
            return
        if ev.button() == Qt.MouseButton.LeftButton:
            p = self.mapSceneToView(ev.scenePos())
            self.clicked.emit(float(p.x()), float(p.y()))
        ev.accept()  # no context menu on right click: right is window/level


class ImagePane(pg.GraphicsLayoutWidget):
    """A named pane showing one 2D image of the current slice (or a hint when there is none)."""

    hovered = Signal(float, float)  # scene position in mm
    left = Signal()
    sliceStep = Signal(int)
    windowDrag = Signal(float, float)
    resized = Signal()
    userMovedView = Signal()  # a zoom or pan by the user (the slice is no longer "fitted")
    clicked = Signal(float, float)  # a left click at this scene position in mm (the multiplanar crosshair)

    def __init__(self, name: str, title: str, parent=None):
        super().__init__(parent)
        self.name = name
        self.setObjectName(f"pane-{name}")
        self.setBackground("k")
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.ci.layout.setContentsMargins(0, 0, 0, 0)
        # Repaint the whole pane on any change. Qt's minimal updates left the previous slice
        # around a hint after an image was cleared (its bounding rect was already empty) and
        # dashed crosshair lines behind when the overlays moved; a full repaint of a pane this
        # size costs well under a millisecond.
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
        self.view = SliceViewBox()
        self.addItem(self.view, row=0, col=0)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setAutoDownsample(False)  # every pixel as it is: no smoothing, no resampling
        self.view.addItem(self.image)
        pen = pg.mkPen((255, 210, 74, 150), width=1, style=Qt.PenStyle.DashLine)
        self.cross_v = pg.InfiniteLine(angle=90, movable=False, pen=pen)
        self.cross_h = pg.InfiniteLine(angle=0, movable=False, pen=pen)
        for line in (self.cross_v, self.cross_h):
            line.setVisible(False)
            self.view.addItem(line, ignoreBounds=True)
        # The colour bar floats over the right edge: inside the layout it would narrow this
        # pane's view box, and linked panes of different widths cannot share both the X and
        # Y ranges at a locked aspect ratio.
        self.colorbar = ColorBar(self)
        self.colorbar.setVisible(False)
        self._colormap: str | None = None
        self.slice_geometry: SliceGeometry | None = None
        self.has_image = False

        self._title_text = title
        self.title = self._overlay(title, OVERLAY_STYLE + "font-weight: bold;")
        self.corner_bl = self._overlay("", OVERLAY_STYLE)
        self.corner_br = self._overlay("", OVERLAY_STYLE)
        self.edges = {side: self._overlay("", LABEL_STYLE) for side in ("top", "bottom", "left", "right")}
        self.hint = self._overlay("", HINT_STYLE)
        self.hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hint.setWordWrap(True)

        self.view.sliceStep.connect(self.sliceStep)
        self.view.windowDrag.connect(self.windowDrag)
        self.view.fitRequested.connect(self.fit)
        self.view.clicked.connect(self.clicked)
        self.view.sigRangeChangedManually.connect(lambda *_: self.userMovedView.emit())
        self.scene().sigMouseMoved.connect(self._mouse_moved)

    # ----- overlays -----

    def _overlay(self, text: str, style: str) -> QLabel:
        label = QLabel(text, self)
        label.setStyleSheet(style)
        label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        label.setTextFormat(Qt.TextFormat.PlainText)
        return label

    def resizeEvent(self, ev):
        super().resizeEvent(ev)
        self._place_overlays()
        if hasattr(self, "hint"):
            self.resized.emit()

    def _place_overlays(self) -> None:
        """Title top left (elided to fit), slice and window bottom left/right, letters mid-edge.

        The top letter sits a row below the title; the bottom one moves up when it would
        touch a corner's text, so narrow panes (the 1 x 4 layout) stay readable.
        """
        if not hasattr(self, "hint"):  # pyqtgraph resizes during construction
            return
        w, h = self.width(), self.height()
        bar = 0  # keep the edge labels and corners clear of the colour bar
        if not self.colorbar.isHidden():
            bar = COLORBAR_WIDTH
            self.colorbar.setGeometry(w - bar, 0, bar, h)
        m, room = 6, max(w - bar, 20)
        self._set_title_lines(room - 2 * m)
        for label in (self.corner_bl, self.corner_br, *self.edges.values()):
            label.adjustSize()
        self.title.move(m, m)
        self.corner_bl.move(m, h - self.corner_bl.height() - m)
        self.corner_br.move(room - self.corner_br.width() - m, h - self.corner_br.height() - m)
        e = self.edges
        top_x = (room - e["top"].width()) // 2
        e["top"].move(top_x, self.title.y() + self.title.height() + 2)  # one row below the title, always
        bottom_x = (room - e["bottom"].width()) // 2
        clear = (self.corner_bl.x() + self.corner_bl.width() + 6 < bottom_x
                 and bottom_x + e["bottom"].width() + 6 < self.corner_br.x())
        bottom_y = h - e["bottom"].height() - m
        if not clear:
            bottom_y = self.corner_bl.y() - e["bottom"].height() - 2
        e["bottom"].move(bottom_x, bottom_y)
        e["left"].move(m, (h - e["left"].height()) // 2)
        e["right"].move(room - e["right"].width() - m, (h - e["right"].height()) // 2)
        self.hint.setGeometry(20, h // 2 - 40, max(room - 40, 10), 80)

    def _set_title_lines(self, width: int) -> None:
        """The title on one line, or wrapped onto two in narrow panes (the 1 x 4 layout);
        only a title longer than two lines is elided."""
        metrics = self.title.fontMetrics()
        text = self._title_text
        if metrics.horizontalAdvance(text) > width:
            words, first = text.split(" "), ""
            for i in range(len(words), 0, -1):  # the most words that fit on the first line
                candidate = " ".join(words[:i]).rstrip()
                if metrics.horizontalAdvance(candidate) <= width:
                    first, rest = candidate, " ".join(words[i:]).strip()
                    break
            if not first:
                first, rest = metrics.elidedText(text, Qt.TextElideMode.ElideRight, width), ""
            text = first + ("\n" + metrics.elidedText(rest, Qt.TextElideMode.ElideRight, width) if rest else "")
        self.title.setText(text)
        self.title.adjustSize()

    @property
    def title_text(self) -> str:
        """The whole title (the label shows it elided when the pane is narrow)."""
        return self._title_text

    def set_title(self, text: str) -> None:
        if text != self._title_text:  # overlay moves repaint the view under them: only on change
            self._title_text = text
            self._place_overlays()

    def set_corners(self, bottom_left: str, bottom_right: str) -> None:
        if (bottom_left, bottom_right) != (self.corner_bl.text(), self.corner_br.text()):
            self.corner_bl.setText(bottom_left)
            self.corner_br.setText(bottom_right)
            self._place_overlays()

    def set_hint(self, text: str) -> None:
        self.hint.setText(text)
        self.hint.setVisible(bool(text))

    # ----- geometry and image -----

    def set_slice_geometry(self, geometry: SliceGeometry) -> None:
        self.slice_geometry = geometry
        for side, letter in geometry.edge_labels().items():
            self.edges[side].setText(letter)
        width_mm, height_mm = geometry.extent_mm
        self.image.setRect(QRectF(0.0, 0.0, width_mm, height_mm))
        self._place_overlays()

    def show_image(self, data: np.ndarray | None, levels: tuple[float, float]) -> None:
        """Draw a 2D image (None clears the pane); ``levels`` are the black and white values."""
        self._show_colorbar(self._colormap is not None and data is not None)
        if data is None:
            self.image.clear()
            self.has_image = False
            return
        self.image.setImage(np.ascontiguousarray(data, dtype=np.float32), autoLevels=False, levels=levels)
        if self.slice_geometry is not None:  # setImage resets the rect to pixel units
            width_mm, height_mm = self.slice_geometry.extent_mm
            self.image.setRect(QRectF(0.0, 0.0, width_mm, height_mm))
        self.has_image = True
        self.set_hint("")

    def set_levels(self, levels: tuple[float, float]) -> None:
        if self.has_image:
            self.image.setLevels(levels)
        self.colorbar.set_levels(*levels)

    def set_colormap(self, name: str | None) -> None:
        """A perceptual colour map with a colour bar, or grey (None) without one.

        Panes are redrawn on every frame: a call that changes nothing returns at once.
        """
        if name == self._colormap:
            return
        self._colormap = name
        if name is None:
            self.image.setLookupTable(None)
            self._show_colorbar(False)
        else:
            lut = _lookup_table(name)
            self.image.setLookupTable(lut)
            self.colorbar.set_lookup_table(lut)
            self._show_colorbar(self.has_image)
        self._place_overlays()

    def _show_colorbar(self, visible: bool) -> None:
        if self.colorbar.isHidden() == visible:
            self.colorbar.setVisible(visible)
            self._place_overlays()

    def fit(self) -> None:
        """Show the whole slice with a margin, centred in the pane.

        The margin left and right is as wide as a colour bar, so the bar that floats over
        the right edge never hides part of the slice (linked panes share one range, and the
        uncertainty pane always has a bar), while the slice sits in the middle of the pane.
        """
        if self.slice_geometry is None:
            return
        width_mm, height_mm = self.slice_geometry.extent_mm
        rect = self.view.geometry()  # the view box in pixels
        w_px, h_px = max(rect.width(), 1.0), max(rect.height(), 1.0)
        side = min(COLORBAR_WIDTH + FIT_MARGIN_X, w_px / 4)
        scale = min((w_px - 2 * side) / width_mm, (h_px - 2 * FIT_MARGIN_Y) / height_mm)  # px per mm
        scale = max(scale, 1e-3)
        x0 = -((w_px / scale) - width_mm) / 2
        y0 = -((h_px / scale) - height_mm) / 2
        self.view.setRange(QRectF(x0, y0, w_px / scale, h_px / scale), padding=0)

    # ----- cursor -----

    def _mouse_moved(self, scene_pos: QPointF) -> None:
        if not self.view.sceneBoundingRect().contains(scene_pos):
            self.left.emit()
            return
        p = self.view.mapSceneToView(scene_pos)
        self.hovered.emit(float(p.x()), float(p.y()))

    def leaveEvent(self, ev):
        super().leaveEvent(ev)
        self.left.emit()

    def set_crosshair(self, x_mm: float | None, y_mm: float | None) -> None:
        visible = x_mm is not None and y_mm is not None
        self.cross_v.setVisible(visible)
        self.cross_h.setVisible(visible)
        if visible:
            self.cross_v.setPos(x_mm)
            self.cross_h.setPos(y_mm)

    def keyPressEvent(self, ev):
        key = ev.key()
        if key in (Qt.Key.Key_Up, Qt.Key.Key_PageUp, Qt.Key.Key_Right):
            self.sliceStep.emit(1)
        elif key in (Qt.Key.Key_Down, Qt.Key.Key_PageDown, Qt.Key.Key_Left):
            self.sliceStep.emit(-1)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.view.scaleBy((0.8, 0.8))
            self.userMovedView.emit()
        elif key == Qt.Key.Key_Minus:
            self.view.scaleBy((1.25, 1.25))
            self.userMovedView.emit()
        elif key in (Qt.Key.Key_Home, Qt.Key.Key_F):
            self.fit()
        else:
            super().keyPressEvent(ev)
            return
        ev.accept()
