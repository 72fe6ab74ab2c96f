"""The multiplanar view: axial, coronal and sagittal planes of the input, the
reconstruction, the baseline and σ, with one 3D crosshair.

Two layouts: every image in the three planes (rows = images, columns = planes), or one
image in three larger planes (the user picks which). A left click in any plane moves
the session's 3D cursor there; every plane then shows the slices through it and draws
the crosshair at it (a click in the coronal plane picks the axial slice, and so on).
The wheel and the arrow keys step a plane along its own normal. Each column's panes share
zoom and pan (same plane, same millimetres). Planes are drawn at their voxel spacing
(:mod:`.planes`), and slices a run has not reached yet are left empty in the reformats,
so a whole-volume run fills them in as its slices finish.
"""

from __future__ import annotations

from PySide6.QtCore import Signal

from .display import VARIANCE_MAP, PaneRenderer
from .pane_grid import PaneGrid
from .planes import Plane, planes_of
from .session import Session

IMAGES = (("input", "Input"), ("recon", "Diffusion"), ("baseline", "Baseline"), ("variance", "σ"))
COLUMNS = ("axial", "coronal", "sagittal")  # the planes, left to right (named from the affine once a scan opens)
MODES = ("all", "one")


def pane_name(image: str, column: int) -> str:
    return f"{image}:{column}"


class MprGrid(PaneGrid):
    """Four images x three planes of linked panes; ``set_mode`` shows all rows or one."""

    cursorPicked = Signal(int, int, int)  # a click put the 3D cursor on this voxel
    hoveredVoxel = Signal(int, int, int)  # the voxel under the mouse (the readout)
    stepRequested = Signal(int, int)  # move the cursor along this array axis by +1 / -1 (wheel, arrow keys)

    def __init__(self, parent=None):
        panes = [(pane_name(image, c), f"{title} · {COLUMNS[c]}") for image, title in IMAGES for c in range(3)]
        super().__init__(panes, layout="4x3", linked=False, layouts=("4x3",), parent=parent)
        self.link(*[[pane_name(image, c) for image, _ in IMAGES] for c in range(3)])  # each column: one plane
        self.crosshair_enabled = False  # the crosshair is the session's 3D cursor, not the mouse
        self.mode, self.one_image = "all", "recon"
        self.planes: list[Plane] = []
        self.index = [0, 0, 0]  # the slice each column shows along its plane's normal
        self.hoveredPane.connect(self._hovered_pane)
        for name, pane in self.panes.items():
            pane.clicked.connect(lambda x, y, n=name: self._clicked(n, x, y))
            pane.sliceStep.disconnect(self.sliceStep)
            pane.sliceStep.connect(lambda step, n=name: self._stepped(n, step))

    def column_of(self, name: str) -> int:
        return int(name.split(":")[1])

    def set_mode(self, mode: str, image: str | None = None) -> None:
        """"all": rows = images; "one": ``image`` alone in three planes."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        if image is not None:
            self.one_image = image
        for name, pane in self.panes.items():
            pane.setVisible(mode == "all" or name.startswith(self.one_image + ":"))
        rows = range(len(IMAGES)) if mode == "all" else [next(i for i, (n, _) in enumerate(IMAGES)
                                                              if n == self.one_image)]
        for i in range(len(IMAGES)):
            self._grid.setRowStretch(i, 1 if i in rows else 0)
        # Each column's zoom and pan follow a pane that is shown (a hidden leader has no size to fit).
        shown = self.visible_images()
        order = shown + [image for image, _ in IMAGES if image not in shown]
        self.link(*[[pane_name(image, c) for image in order] for c in range(3)])
        self._refit.start()

    def visible_images(self) -> list[str]:
        return [image for image, _ in IMAGES] if self.mode == "all" else [self.one_image]

    def set_planes(self, planes: list[Plane]) -> None:
        self.planes = planes
        for name, pane in self.panes.items():
            plane = planes[self.column_of(name)]
            image = name.split(":")[0]
            title = dict(IMAGES)[image]
            pane.set_title(f"{title} · {plane.name}")
            pane.set_slice_geometry(plane)
        self.fit()

    # ----- the mouse -----

    def _voxel(self, name: str, x_mm: float, y_mm: float):
        if not self.planes:
            return None
        column = self.column_of(name)
        return self.planes[column].voxel_at(x_mm, y_mm, self.index[column])

    def _clicked(self, name: str, x_mm: float, y_mm: float) -> None:
        voxel = self._voxel(name, x_mm, y_mm)
        if voxel is not None:
            self.cursorPicked.emit(*voxel)

    def _hovered_pane(self, name: str, x_mm: float, y_mm: float) -> None:
        voxel = self._voxel(name, x_mm, y_mm)
        if voxel is not None:
            self.hoveredVoxel.emit(*voxel)

    def _stepped(self, name: str, step: int) -> None:
        if not self.planes:
            return
        self.stepRequested.emit(self.planes[self.column_of(name)].normal, step)


class MprRenderer:
    """Draws the session's layers into an :class:`MprGrid`; follows the session's events.

    It takes its display choices (x0 estimate or x_t, σ or σ², the uncertainty scale)
    from the single-plane :class:`~.display.PaneRenderer`, so both views agree.
    """

    def __init__(self, grid: MprGrid, panes: PaneRenderer):
        self.grid = grid
        self.panes = panes
        self.session: Session | None = None
        self.active = False  # drawn only while shown: a hidden view costs nothing during a run
        self.show_crosshair = True
        grid.cursorPicked.connect(self._picked)
        grid.stepRequested.connect(self._step)

    def attach(self, session: Session) -> None:
        if self.session is not None:
            self._subscribe(self.session, False)
        self.session = session
        self._subscribe(session, True)
        self.grid.set_planes(planes_of(session.volume))
        self.draw_all()

    def _subscribe(self, session: Session, on: bool) -> None:
        e = session.events
        for event, handler in ((e.layers, self._layers_changed), (e.cleared, self._cleared),
                               (e.slice, self._moved), (e.cursor, self._moved), (e.window, self._window_changed)):
            (event.connect if on else event.disconnect)(handler)

    def set_active(self, active: bool) -> None:
        self.active = active
        if active:
            self.draw_all()

    # ----- events -----

    def _layers_changed(self, layers, slices) -> None:
        images = {image for layer in layers for image in _IMAGES_OF_LAYER.get(layer, ())}
        axial_only = self.session.slice_index not in slices
        for image in images:
            self.draw(image, columns=[c for c, p in enumerate(self.grid.planes) if not (axial_only and p.normal == 0)])

    def _cleared(self, layers) -> None:
        for image in {image for layer in layers for image in _IMAGES_OF_LAYER.get(layer, ())}:
            self.draw(image)

    def _moved(self, _value) -> None:
        self.draw_all()

    def _window_changed(self, _window) -> None:
        if not self.active:
            return
        levels = (self.session.window.low, self.session.window.high)
        for image in ("input", "recon", "baseline"):
            for c in range(3):
                self.grid[pane_name(image, c)].set_levels(levels)
        self.draw("variance")  # its scale is capped by the window width


    def _picked(self, s: int, r: int, c: int) -> None:
        if self.session is not None:
            self.session.set_cursor(s, r, c)

    def _step(self, axis: int, step: int) -> None:
        if self.session is None:
            return
        cursor = list(self.session.cursor)
        cursor[axis] += step
        self.session.set_cursor(*cursor)

    # ----- drawing -----

    def draw_all(self) -> None:
        for image, _ in IMAGES:
            self.draw(image)

    def draw(self, image: str, columns=None) -> None:
        s = self.session
        if s is None or not self.active or not self.grid.planes or image not in self.grid.visible_images():
            return
        cursor = s.cursor
        layer = self.panes._layer_for(image)
        stack = s.layers[layer]
        top = None
        for c in range(3) if columns is None else columns:
            plane = self.grid.planes[c]
            index = cursor[plane.normal]
            self.grid.index[c] = index
            pane = self.grid[pane_name(image, c)]
            data = plane.image(stack.data, index, stack.filled)
            if image == "variance":
                if data is not None and self.panes.options.variance_mode == "variance":
                    data = data**2
                if top is None:
                    top = self.panes.uncertainty_scale(data) if data is not None else 1.0
                pane.set_colormap(VARIANCE_MAP)
                pane.show_image(data, (0.0, top))
                pane.set_levels((0.0, top))
            else:
                pane.set_colormap(None)
                pane.show_image(data, (s.window.low, s.window.high))
            if data is None:
                pane.set_hint("Not computed yet." if image != "input" else "Computing the measured input...")
            x, y = plane.scene_position(cursor)
            pane.set_crosshair(x if self.show_crosshair else None, y if self.show_crosshair else None)
            pane.set_corners(f"{plane.name} {index + 1}/{plane.n_slices}",
                             "" if image == "variance" else s.window.describe(s.units))


_IMAGES_OF_LAYER = {"input": ("input",), "recon": ("recon",), "sample": ("recon",), "baseline": ("baseline",),
                    "sigma": ("variance",)}
