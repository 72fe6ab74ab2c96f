"""Drawing the session's current slice into the four panes: images, levels, overlays, hints.

The renderer subscribes to the session's events (:class:`~.state.SessionEvents`): new
images of the slice on screen, a slice or window change, the run's state, each redraw
only the panes they touch.

Display choices live in :class:`DisplayOptions` (plain data): error maps instead of the
images, sigma or variance, the x0 estimate or the noisy sample x_t. Image panes share
one window/level; the uncertainty and error maps use a perceptual colour map (viridis,
inferno) with a colour bar, scaled to the current slice.
"""

from __future__ import annotations

import numpy as np

from diffrecon import modalities

from .pane_grid import PaneGrid
from .session import Session
from .state import DisplayOptions, RunState

__all__ = ["DisplayOptions", "PaneRenderer", "robust_max"]

IMAGE_PANES = ("input", "recon", "baseline")
PANES_OF_LAYER = {"input": ("input",), "recon": ("recon",), "sample": ("recon",), "baseline": ("baseline",),
                  "sigma": ("variance",)}


def _input_name(task: str) -> str:
    """What the task's unreconstructed input is called (zero-filled, FBP, noisy, B-mode)."""
    return modalities.REGISTRY[task].input_name if task in modalities.REGISTRY else "input"
VARIANCE_MAP, ERROR_MAP = "viridis", "inferno"


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
        self.running = False  # a run is under way: empty panes say they are waiting, not "press Run"
        self.frame_scaled = False  # the diffusion pane shows a frame scaled to the measurements' range

    def attach(self, session: Session) -> None:
        if self.session is not None:
            self._subscribe(self.session, False)
        self.session = session
        self._subscribe(session, True)
        self.running, self.progress_text = session.run_state.running, session.run_state.progress_text
        self.grid.set_slice_geometry(session.geometry)
        self.render_all()

    def _subscribe(self, session: Session, on: bool) -> None:
        e = session.events
        for event, handler in ((e.layers, self._layers_changed), (e.cleared, self._layers_changed),
                               (e.slice, self._slice_changed), (e.window, self._window_changed),
                               (e.run_state, self._run_state_changed)):
            (event.connect if on else event.disconnect)(handler)

    # ----- what the session announces -----

    def _layers_changed(self, layers: tuple[str, ...], slices=None) -> None:
        """Redraw the panes showing these layers, when the slice on screen is among ``slices``."""
        if slices is not None and self.session.slice_index not in slices:
            return
        if self.error_mode() and any(name in ("input", "reference", "recon", "baseline") for name in layers):
            self.render_all()  # one error scale for every map of the slice
            return
        panes = {pane for layer in layers for pane in PANES_OF_LAYER.get(layer, ())}
        for name in ("input", "recon", "baseline", "variance"):
            if name in panes:
                self.render(name)

    def _slice_changed(self, _index: int) -> None:
        self.render_all()

    def _window_changed(self, _window) -> None:
        self.update_levels()

    def _run_state_changed(self, state: RunState) -> None:
        was_running = self.running
        self.running, self.progress_text = state.running, state.progress_text
        if self.grid.isHidden():  # another page (the planes) is shown: drawn when it comes back
            return
        if state.running != was_running:
            self.render_all()  # empty panes change their hints, a finished frame is drawn unscaled
        else:  # the step counter in the titles
            self.grid["recon"].set_title(self._title("recon"))
            self.grid["variance"].set_title(self._variance_title())

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
        if self.grid.isHidden() and s is not None:  # the planes are shown: render_all when the panes return
            return
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
        self.frame_scaled = False
        if image is not None and name == "recon" and self.running:
            image = self._scaled_to_measurements(image)
        pane.show_image(image, (self.session.window.low, self.session.window.high))
        pane.set_title(self._title(name))
        if image is None:
            pane.set_hint(self._empty_hint(name))

    def _scaled_to_measurements(self, frame: np.ndarray) -> np.ndarray:
        """A mid-run frame whose spread far exceeds the measurements', mapped onto their range.

        The first x0 estimates of a sampler are mostly noise far outside any real value
        (-4800 to 3900 HU at step 1 of a CT run; magnitudes above every MR value): drawn as
        they are, the pane is a saturated block in any window. While the frame's 1-99th
        percentile spread is over 1.5x the measured input's, it is scaled linearly onto the
        input's; once the estimate settles it is drawn as it is, and the title says which.
        Stored values (readout, export, metrics) are never scaled.
        """
        measured = self.session.image("input")
        if measured is None or not np.isfinite(frame).any():
            return frame
        lo_m, hi_m = np.percentile(measured, [1.0, 99.0])
        lo_f, hi_f = np.nanpercentile(frame, [1.0, 99.0])
        if not (hi_m > lo_m) or (hi_f - lo_f) <= 1.5 * (hi_m - lo_m):
            return frame
        self.frame_scaled = True
        return ((frame - lo_f) * ((hi_m - lo_m) / (hi_f - lo_f)) + lo_m).astype(np.float32)

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
        if self.options.variance_mode == "variance":
            image = None if sigma is None else sigma**2
        else:
            image = sigma
        pane.set_colormap(VARIANCE_MAP)
        top = self.uncertainty_scale(image)
        pane.show_image(image, (0.0, top))
        pane.set_levels((0.0, top))
        pane.set_title(self._variance_title())
        if image is None:
            pane.set_hint(self._empty_hint("variance"))

    def _variance_title(self) -> str:
        units = self._units()
        if self.options.variance_mode == "variance":
            label = f"σ² ({units}²)" if units else "σ²"
        else:
            label = f"σ ({units})" if units else "σ"
        return f"Uncertainty {label}{self._calibration_note()}" + self._run_state()

    def _calibration_note(self) -> str:
        """Whether the finished run's σ carries the prior's conformal scale (fitted on validation
        subjects) or is the samples' raw spread: a reader should know which one is on screen."""
        run = self.session.run if self.session is not None else None
        cal = (getattr(run, "provenance", None) or {}).get("sigma_calibration") if run is not None else None
        if not cal:
            return ""
        if cal.get("method") == "none":
            return ", raw spread"
        # a whole-volume run's scale carries the factor fitted on whole volumes (or, without one, the
        # single-slice scale, which the through-plane term makes cover less): say which
        scope = " for volumes" if "volume_factor" in cal else " (slice fit)" if "volume_note" in cal else ""
        return f", calibrated x{float(cal['scale']):.2f}{scope}" + (" (approx.)" if cal.get("steps_note") else "")

    def uncertainty_scale(self, image: np.ndarray | None) -> float:
        """Top of the σ (or σ²) colour scale: the map's own range, capped by the image window.

        Early in sampling the posterior samples disagree by most of the data range (σ of
        1000 HU and more on CT), and a bar rescaled to that for the first frames says
        nothing. A spread wider than the grey window the images are read in is off the
        scale anyway: the cap is the window width (squared for variance).
        """
        if image is None:
            return 1.0
        top = robust_max(image)
        width = self.session.window.width if self.session is not None else 0.0
        if width > 0:
            top = min(top, width**2 if self.options.variance_mode == "variance" else width)
        return top if top > 0 else 1.0

    def _run_state(self, note: str = "") -> str:
        """The run's state for a pane title: "step 12/25", "done", or "cancelled at step 7/25"."""
        text = self.progress_text or (self.session.run.cancelled if self.session is not None else "")
        return f"  ({text}{note})" if text and text != "done" else ""

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
            scaled = ", scaled to the input's range" if self.frame_scaled and self.progress_text else ""
            return f"Diffusion {what}" + self._run_state(scaled)
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
        if self.running and name != "input":
            return {"recon": "The reconstruction appears here from the first sampling step.",
                    "baseline": "Computing the classical baseline...",
                    "variance": "The uncertainty appears here from the first sampling step."}[name]
        return {
            "input": "Computing the measured input...",
            "recon": "Press Run to watch the diffusion reconstruction form here.",
            "baseline": "The classical baseline appears here after Run.",
            "variance": "Per-pixel uncertainty (how much the posterior samples disagree) appears here during Run.",
        }[name]

    # ----- window/level -----

    def update_levels(self) -> None:
        """After a window change: only the grey panes follow it."""
        if self.session is None or self.grid.isHidden():
            return
        levels = (self.session.window.low, self.session.window.high)
        for name in IMAGE_PANES:
            if not self.is_error_pane(name):
                self.grid[name].set_levels(levels)
                self.grid[name].set_corners(self._slice_text(), self._corner_text(name))
        self._render_variance()  # its scale is capped by the window width
