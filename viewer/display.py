"""Drawing the session's current slice into the four panes: images, levels, overlays, hints.

Display choices live in :class:`DisplayOptions` (plain data): error maps instead of the
images, sigma or variance, the x0 estimate or the noisy sample x_t. Image panes share
one window/level; the uncertainty and error maps use a perceptual colour map (viridis,
inferno) with a colour bar, scaled to the current slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffrecon import modalities

from .pane_grid import PaneGrid
from .session import Session

IMAGE_PANES = ("input", "recon", "baseline")


def _input_name(task: str) -> str:
    """What the task's unreconstructed input is called (zero-filled, FBP, noisy, B-mode)."""
    return modalities.REGISTRY[task].input_name if task in modalities.REGISTRY else "input"
VARIANCE_MAP, ERROR_MAP = "viridis", "inferno"


@dataclass
class DisplayOptions:
    error_maps: bool = False  # |image - reference| in the image panes (needs a reference)
    variance_mode: str = "sigma"  # "sigma" (std, image units) or "variance" (units squared)
    recon_shows: str = "estimate"  # "estimate" (x0) or "sample" (x_t, the noisy state)
    task: str = "mri"
    baseline_name: str | None = "TV"  # None: no baseline chosen
    measurement: str = ""  # e.g. "MRI 4x random mask"
    model_name: str | None = None  # the chosen prior (None: baseline only)


def robust_max(image: np.ndarray, percentile: float = 99.5) -> float:
    values = image[np.isfinite(image)]
    if values.size == 0:
        return 1.0
    top = float(np.percentile(values, percentile))
    return top if top > 0 else float(values.max() or 1.0)


class PaneRenderer:
    def __init__(self, grid: PaneGrid):
        self.grid = grid
        self.options = DisplayOptions()
        self.session: Session | None = None
        self.progress_text = ""  # e.g. "step 12/25", shown in the diffusion pane's title

    def attach(self, session: Session) -> None:
        self.session = session
        self.grid.set_slice_geometry(session.geometry)
        self.render_all()

    # ----- what each pane shows -----

    def _layer_for(self, pane: str) -> str:
        if pane == "recon":
            return "sample" if self.options.recon_shows == "sample" else "recon"
        return {"input": "input", "baseline": "baseline", "variance": "sigma"}[pane]

    def has_reference(self) -> bool:
        return self.session is not None and self.session.has("reference")

    def error_mode(self) -> bool:
        return self.options.error_maps and self.has_reference()

    def is_error_pane(self, name: str) -> bool:
        """Does this pane show an error map now? (The noisy sample x_t never does.)"""
        return (self.error_mode() and name in IMAGE_PANES
                and not (name == "recon" and self.options.recon_shows == "sample"))

    def render_all(self) -> None:
        for name in ("input", "recon", "baseline", "variance"):
            self.render(name)

    def render(self, name: str) -> None:
        s = self.session
        pane = self.grid[name]
        if s is None:
            pane.show_image(None, (0, 1))
            pane.set_hint("Open a scan: File > Open, drag and drop, or the command line.")
            return
        if name == "variance":
            self._render_variance()
        elif self.is_error_pane(name):
            self._render_error(name)
        else:
            self._render_image(name)
        pane.set_corners(self._slice_text(), self._corner_text(name))

    def _render_image(self, name: str) -> None:
        pane = self.grid[name]
        pane.set_colormap(None)
        image = self.session.image(self._layer_for(name))
        pane.show_image(image, (self.session.window.low, self.session.window.high))
        pane.set_title(self._title(name))
        if image is None:
            pane.set_hint(self._empty_hint(name))

    def _render_error(self, name: str) -> None:
        pane = self.grid[name]
        error = self.session.error_image(self._layer_for(name))
        top = self.error_scale()
        pane.set_colormap(ERROR_MAP)
        pane.show_image(error, (0.0, top))
        pane.set_levels((0.0, top))
        units = f" ({self._units()})" if self._units() else ""
        pane.set_title(f"|error|{units}  " + self._title(name))
        if error is None:
            pane.set_hint(self._empty_hint(name))

    def error_scale(self) -> float:
        """One scale for every error map of the slice: the input's (the largest) error."""
        for layer in ("input", "recon", "baseline"):
            err = self.session.error_image(layer)
            if err is not None:
                return robust_max(err, 99.0)
        return 1.0

    def _render_variance(self) -> None:
        pane = self.grid["variance"]
        sigma = self.session.image("sigma")
        units = self._units()
        if self.options.variance_mode == "variance":
            image = None if sigma is None else sigma**2
            label = f"σ² ({units}²)" if units else "σ²"
        else:
            image, label = sigma, f"σ ({units})" if units else "σ"
        pane.set_colormap(VARIANCE_MAP)
        top = robust_max(image) if image is not None else 1.0
        pane.show_image(image, (0.0, top))
        pane.set_levels((0.0, top))
        pane.set_title(f"Uncertainty {label} over samples")
        if image is None:
            pane.set_hint(self._empty_hint("variance"))

    # ----- text -----

    def _units(self) -> str:
        u = self.session.units if self.session else ""
        return "" if u in ("a.u.", "") else u

    def _title(self, name: str) -> str:
        o = self.options
        if name == "input":
            return f"Input: {_input_name(o.task)}" + (f"  ({o.measurement})" if o.measurement else "")
        if name == "recon":
            what = "noisy sample x_t" if o.recon_shows == "sample" else "reconstruction"
            return f"Diffusion {what}" + (f"  {self.progress_text}" if self.progress_text else "")
        if name == "baseline":
            return f"Baseline: {o.baseline_name or 'none'}"
        return "Uncertainty"

    def _slice_text(self) -> str:
        s = self.session
        return f"Slice {s.slice_index + 1}/{s.n_slices}   {s.geometry.slice_location(s.slice_index)}"

    def _corner_text(self, name: str) -> str:
        if name == "variance" or self.is_error_pane(name):
            return ""
        return self.session.window.describe(self.session.units)

    def _empty_hint(self, name: str) -> str:
        s = self.session
        run = s.run
        computed_elsewhere = run.slices and s.slice_index not in run.slices
        if computed_elsewhere and name != "input":
            shown = ", ".join(str(i + 1) for i in sorted(run.slices)[:6])
            return f"Not computed for this slice (the run covered slice {shown}{'...' if len(run.slices) > 6 else ''})."
        if name == "baseline" and self.options.baseline_name is None:
            return "No baseline is chosen (Baseline box)."
        if name in ("recon", "variance") and self.options.model_name is None:
            return "No diffusion prior for this task: choose a .safetensors file in the Model box."
        return {
            "input": "Computing the measured input...",
            "recon": "Press Run to watch the diffusion reconstruction form here.",
            "baseline": "The classical baseline appears here after Run.",
            "variance": "Per-pixel uncertainty appears here (needs 2 or more samples).",
        }[name]

    # ----- window/level -----

    def update_levels(self) -> None:
        """After a window change: only the grey panes follow it."""
        if self.session is None:
            return
        levels = (self.session.window.low, self.session.window.high)
        for name in IMAGE_PANES:
            if not self.is_error_pane(name):
                self.grid[name].set_levels(levels)
                self.grid[name].set_corners(self._slice_text(), self._corner_text(name))
