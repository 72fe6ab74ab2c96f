"""The settings panel: task and measurement settings, diffusion settings, Run and Cancel.

It knows nothing of threads or volumes: it turns its widgets into a
``MeasurementSettings`` + ``DiffusionOptions`` pair and says when they change.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from diffrecon.diffusion.adaptation import HOLDOUT_MODALITIES
from diffrecon.diffusion.guidance import GUIDANCE
from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.diffusion.samplers import SAMPLERS
from diffrecon import modalities
from diffrecon.measurements import MeasurementSettings
from diffrecon.physics.masks import MASK_KINDS

from .paths import available_models, default_model_for, prior_label
from .state import RunRequest, baselines_for, simulate_for

TASKS = (("mri", "MRI reconstruction"), ("ct", "CT reconstruction"), ("denoise", "Denoising"),
         ("ultrasound", "Ultrasound despeckling"))
BROWSE = "Browse..."


def _combo(items, current=None) -> QComboBox:
    box = QComboBox()
    for value, label in items:
        box.addItem(label, value)
    if current is not None:
        box.setCurrentIndex(max(box.findData(current), 0))
    return box


def _spin(lo, hi, value, step=1.0, decimals=None, suffix="", special=None):
    box = QDoubleSpinBox() if decimals is not None else QSpinBox()
    if decimals is not None:
        box.setDecimals(decimals)
        box.setSingleStep(step)
    box.setRange(lo, hi)
    box.setValue(value)
    if suffix:
        box.setSuffix(suffix)
    if special:
        box.setSpecialValueText(special)
    return box


SAMPLER_HELP = {
    "ddim": "DDIM: a fixed path from noise to image; fast, the same result for the same seed.",
    "ddpm": "DDPM: the original sampler, fresh noise at every step; needs many steps.",
    "sde": "VP-SDE: noise-driven steps (stochastic differential equation); more varied samples.",
}
GUIDANCE_HELP = {
    "projection": "projection: after each step, put the measured data back in exactly (simple, fast).",
    "dds": "DDS (CG): after each step, a few conjugate-gradient iterations pull the estimate towards "
           "the measurements; the default for MRI and CT.",
    "dds-tv": "DDS + TV: DDS whose conjugate-gradient step also smooths flat regions (total variation); "
              "its strength is chosen per scan from a held-out part of the measurements.",
    "dps": "DPS: steers each step with the gradient of the data mismatch; slower, needs no exact model.",
}


def _explain(box: QComboBox, summary: str, choices: dict[str, str]) -> None:
    """A plain-words tooltip on the box (all choices) and on each entry (its own)."""
    lines = [choices[box.itemData(i)] for i in range(box.count()) if box.itemData(i) in choices]
    box.setToolTip("\n".join([summary, *lines]))
    for i in range(box.count()):
        if box.itemData(i) in choices:
            box.setItemData(i, choices[box.itemData(i)], Qt.ItemDataRole.ToolTipRole)


class ControlPanel(QWidget):
    measurementChanged = Signal()  # the input image must be recomputed
    taskChanged = Signal(str)
    modelChanged = Signal()
    runRequested = Signal()
    cancelRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumWidth(250)
        self.setMaximumWidth(330)
        outer = QVBoxLayout(self)

        task = QGroupBox("Task and measurements")
        form = QFormLayout(task)
        self.modality = _combo(TASKS, "mri")
        self.simulate = QCheckBox("Scan is the ground truth (simulate)")
        self.simulate.setToolTip("Simulate measurements from the scan and score every method against it")
        self.acceleration = _spin(2.0, 12.0, 4.0, 0.5, 1, "x")
        self.acceleration.setToolTip("MRI speed-up: 4x keeps one k-space line in four (a scan 4 times shorter)")
        self.mask_kind = _combo([(m, m) for m in MASK_KINDS], "random")
        self.mask_kind.setToolTip("Which k-space lines are kept: random, evenly spaced (equispaced), ...")
        self.views = _spin(2, 720, 60)
        self.views.setToolTip("CT projection angles over 180 degrees: fewer views, less dose, more streaks "
                              "(default 60 noiseless, 180 with dose noise, as the CLI; follows the dose while "
                              "left at its default)")
        self.dose = _spin(0.0, 1.0, 0.0, 0.05, 2, special="noiseless")
        self.dose.setToolTip("Dose fraction of 4096 photons per detector bin; 'noiseless' adds no noise")
        self.noise_sigma = _spin(0.005, 1.0, 0.1, 0.01, 3)
        self.noise_sigma.setToolTip("Noise added for denoising, relative to the image's bright end (0.1 = 10 %)")
        self.seed = _spin(0, 2**31 - 1, 0)
        self.seed.setToolTip("Fixes the random mask, noise and sampling: the same seed gives the same result")
        form.addRow("Task", self.modality)
        form.addRow(self.simulate)
        form.addRow("Acceleration", self.acceleration)
        form.addRow("Mask", self.mask_kind)
        form.addRow("CT views", self.views)
        form.addRow("CT dose", self.dose)
        form.addRow("Noise sigma", self.noise_sigma)
        form.addRow("Seed", self.seed)
        self._task_form = form
        outer.addWidget(task)

        diffusion = QGroupBox("Diffusion")
        dform = QFormLayout(diffusion)
        self._diffusion_form = dform
        self.model = QComboBox()
        self.model.setToolTip("The diffusion prior: a network trained on many scans of one kind (brain MRI, "
                              "head CT) that knows what such images look like. A .safetensors file.")
        self.sampler = _combo([(s, s.upper() if s != "sde" else "VP-SDE") for s in SAMPLERS], "ddim")
        _explain(self.sampler, "How the image is drawn out of noise, one step at a time.", SAMPLER_HELP)
        guidance_names = {"projection": "projection", "dds": "DDS (CG)", "dds-tv": "DDS + TV", "dps": "DPS"}
        self.guidance = _combo([(g, guidance_names.get(g, g)) for g in GUIDANCE], "dds")
        _explain(self.guidance, "How each step is kept faithful to what was measured.", GUIDANCE_HELP)
        self.steps = _spin(1, 1000, 25)
        self.steps.setToolTip("Denoising steps from pure noise to the image: more steps are slower and "
                              "usually a little sharper (the measured default: MRI 50, or 25 with 2 or more "
                              "samples, where σ was calibrated; CT 50 for noiseless views, 25 with dose "
                              "noise or 2 or more samples)")
        # One sample runs as a symmetric pair (+noise and -noise, SRDS): already a variance map, and
        # the fastest live view; more samples sharpen the uncertainty map at a proportional cost.
        self.samples = _spin(1, 16, 1)
        self.samples.setToolTip("Posterior samples. 1: a mirrored-noise pair, the fastest uncertainty map; "
                                "2 or more: independent stochastic samples (the setting whose σ calibrated best "
                                "on validation scans), their spread scaled by the prior's conformal factor")
        self.blend = QCheckBox("Blend with TV where the scan says so")
        self.blend.setToolTip("Set aside 15 % of the measurements, run these settings on the rest, and mix the "
                              "result with TV by how well each predicts what was set aside: never much worse "
                              "than TV on a scan the prior does not know (about twice the time). Off: the "
                              "prior's own image")
        self.scope = _combo([("slice", "Current slice"), ("volume", "Whole volume")], "slice")
        self.scope.setToolTip("Reconstruct only the slice on screen (fast), or every slice of the scan")
        dform.addRow("Model", self.model)
        dform.addRow("Sampler", self.sampler)
        dform.addRow("Guidance", self.guidance)
        dform.addRow("Steps", self.steps)
        dform.addRow("Samples", self.samples)
        self.samples.valueChanged.connect(lambda _: self._follow_default_steps())
        self._shown_default_steps = int(self.steps.value())  # the task default the Steps box last showed
        dform.addRow("Slices", self.scope)
        dform.addRow(self.blend)
        outer.addWidget(diffusion)

        base = QGroupBox("Baseline")
        bform = QFormLayout(base)
        self.baseline = QComboBox()
        self.baseline.setToolTip("A classical (non-learned) reconstruction to compare with: TV smooths while "
                                 "keeping edges, l1-wavelet keeps sparse detail, median and BM3D denoise")
        bform.addRow("Method", self.baseline)
        outer.addWidget(base)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.setToolTip("Reconstruct with the settings above (Ctrl+R)")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop after the current step (Esc)")
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        outer.addLayout(buttons)
        outer.addStretch(1)

        self._scan_has_kspace = False
        self._fill_models()
        self._task_changed()
        self.modality.currentIndexChanged.connect(self._task_changed)
        for w in (self.acceleration, self.views, self.dose, self.noise_sigma, self.seed):
            w.valueChanged.connect(self.measurementChanged)
        self._shown_default_views = self._default_views()  # the views default the box last showed
        self.dose.valueChanged.connect(lambda _: self._follow_default_views())
        for w in (self.views, self.dose):  # CT's steps differ with and without noise
            w.valueChanged.connect(lambda _: self._follow_default_steps())
        self.mask_kind.currentIndexChanged.connect(self.measurementChanged)
        self.simulate.toggled.connect(self.measurementChanged)
        self.model.activated.connect(self._model_activated)
        self.run_button.clicked.connect(self.runRequested)
        self.cancel_button.clicked.connect(self.cancelRequested)

    # ----- model list -----

    def _fill_models(self, select: Path | None = None) -> None:
        """Priors found in resources/models (labelled with their modality), 'none', 'Browse...'."""
        self.model.blockSignals(True)
        self.model.clear()
        priors = available_models()
        if select is not None and str(select) not in map(str, priors):
            priors.append(Path(select))
        for path in priors:  # the panel may cut a long label short: the tooltip has it whole, with the file
            label = prior_label(path)
            self.model.addItem(label, str(path))
            self.model.setItemData(self.model.count() - 1, f"{label}\n{path}", Qt.ItemDataRole.ToolTipRole)
        self.model.addItem("none (baseline only)", "")
        self.model.addItem(BROWSE, None)
        if select is not None:
            self.model.setCurrentIndex(self.model.findData(str(select)))
        else:
            default = default_model_for(self.task)
            self.model.setCurrentIndex(self.model.findData(str(default) if default else ""))
        self.model.blockSignals(False)

    def _model_activated(self, index: int) -> None:
        if self.model.itemData(index) is None:
            path, _ = QFileDialog.getOpenFileName(self, "Choose a diffusion prior", "", "Priors (*.safetensors)")
            self._fill_models(Path(path) if path else None)
        self.modelChanged.emit()

    def set_model(self, path: Path | None) -> None:
        self._fill_models(path)
        self.modelChanged.emit()

    def refresh_models(self) -> None:
        """Pick up priors that appeared since start (e.g. a training run's first checkpoint)."""
        self._fill_models(self.model_path)

    @property
    def model_path(self) -> Path | None:
        data = self.model.currentData()
        return Path(data) if data else None

    # ----- task -----

    @property
    def task(self) -> str:
        return self.modality.currentData()

    def _task_changed(self) -> None:
        task = self.task
        simulate, changeable = simulate_for(task, self.simulate.isChecked(), self._scan_has_kspace)
        locked = not changeable
        self.simulate.blockSignals(True)
        self.simulate.setChecked(simulate)  # raw k-space: reconstruct what was measured
        self.simulate.setEnabled(changeable)
        self.simulate.setToolTip("An image-only scan can only be the ground truth of a simulation" if locked else
                                 "Simulate measurements from the scan and score every method against it")
        self.simulate.blockSignals(False)
        rows = {self.acceleration: task == "mri", self.mask_kind: task == "mri", self.views: task == "ct",
                self.dose: task == "ct", self.noise_sigma: task == "denoise"}
        for widget, visible in rows.items():
            self._task_form.setRowVisible(widget, visible)
        measured = modalities.get(task).diffusion_defaults  # each task's sampler and guidance, chosen on validation slices
        self.sampler.setCurrentIndex(max(0, self.sampler.findData(measured.get("sampler", "ddim"))))
        self.guidance.setCurrentIndex(max(0, self.guidance.findData(measured.get("guidance", "dds"))))
        # denoising and ultrasound start at the noise level: one step (8 network evaluations)
        self._shown_default_steps = self._default_steps()
        self.steps.setValue(self._shown_default_steps)
        self.blend.setChecked(bool(measured.get("blend_tv", False)))
        self._diffusion_form.setRowVisible(self.blend, task in HOLDOUT_MODALITIES)  # a hold-out needs measurements
        current = self.baseline.currentData()
        self.baseline.blockSignals(True)
        self.baseline.clear()
        for method in baselines_for(task):
            self.baseline.addItem(method.upper() if method == "tv" else method, method)
        self.baseline.addItem("none", None)
        keep = current is not None and self.baseline.findData(current) >= 0
        self.baseline.setCurrentIndex(self.baseline.findData(current) if keep else 0)
        self.baseline.blockSignals(False)
        default = default_model_for(task)  # a prior fits one modality: follow the task
        self.model.setCurrentIndex(self.model.findData(str(default) if default else ""))
        self.modelChanged.emit()
        self.taskChanged.emit(task)
        self.measurementChanged.emit()

    def set_task(self, task: str, simulate: bool, scan_has_kspace: bool) -> None:
        """Set by the window from the scan: e.g. an image-only MRI file must be simulated."""
        self._scan_has_kspace = scan_has_kspace
        self.modality.blockSignals(True)
        self.modality.setCurrentIndex(self.modality.findData(task))
        self.modality.blockSignals(False)
        self.simulate.blockSignals(True)
        self.simulate.setChecked(simulate)
        self.simulate.blockSignals(False)
        self._task_changed()

    def show_request(self, task: str, request: RunRequest) -> None:
        """Show what a request built elsewhere (``diffrecon view --run``) runs.

        The panel's own signals stay quiet: the caller runs the request as it is, and
        updates what depends on the panel once.
        """
        self.blockSignals(True)
        try:
            self.modality.setCurrentIndex(self.modality.findData(task))  # the task's rows, baselines, defaults
            self.simulate.setChecked(request.simulate)
            m, o = request.settings, request.options
            self.acceleration.setValue(m.acceleration)
            self.mask_kind.setCurrentIndex(max(0, self.mask_kind.findData(m.mask)))
            if m.views is not None:
                self.views.setValue(m.views)
            self.dose.setValue(m.dose or 0.0)
            self._shown_default_views = self._default_views()
            self.noise_sigma.setValue(m.noise_sigma)
            self.seed.setValue(m.seed)
            self.sampler.setCurrentIndex(max(0, self.sampler.findData(o.sampler)))
            self.guidance.setCurrentIndex(max(0, self.guidance.findData(o.guidance)))
            self.samples.setValue(o.samples)
            self.steps.setValue(o.steps)  # after what its default follows
            self._shown_default_steps = self._default_steps()
            self.blend.setChecked(o.blend_tv)
            self.baseline.setCurrentIndex(max(0, self.baseline.findData(request.baseline)))
            self._fill_models(request.model)
            self.scope.setCurrentIndex(self.scope.findData("volume" if len(request.slices) > 1 else "slice"))
        finally:
            self.blockSignals(False)

    # ----- settings out -----

    def measurement_settings(self) -> MeasurementSettings:
        dose = self.dose.value()
        return MeasurementSettings(
            modality=self.task, acceleration=self.acceleration.value(), mask=self.mask_kind.currentData(),
            views=int(self.views.value()), dose=dose if dose > 0 else None,
            noise_sigma=self.noise_sigma.value(), seed=int(self.seed.value()),
        )

    def _default_views(self) -> int:
        """CT's views for the dose shown, by :class:`MeasurementSettings`' one rule (60 noiseless,
        180 with dose noise), so the panel's "25 % dose" is the CLI's."""
        dose = self.dose.value()
        views = MeasurementSettings(modality="ct", dose=dose if dose > 0 else None).views
        assert views is not None  # the rule always fills CT's views
        return views

    def _follow_default_views(self) -> None:
        """Views left at the default follow the dose; a number the user typed stays."""
        default = self._default_views()
        if self.views.value() == self._shown_default_views:
            self.views.setValue(default)
        self._shown_default_views = default

    def _default_steps(self) -> int:
        """The task's steps for these measurements and samples (with uncertainty: where σ was
        calibrated), as the task's own options resolve them."""
        return modalities.get(self.task).diffusion_options(
            self.measurement_settings(), samples=int(self.samples.value())).steps

    def _follow_default_steps(self) -> None:
        """Steps left at the task's default follow it when the samples or the measurements change
        it (MRI: 50, 25 with σ; CT: 50 for noiseless views, 25 with dose or σ); a number the
        user typed stays."""
        default = self._default_steps()
        if self.steps.value() == self._shown_default_steps:
            self.steps.setValue(default)
        self._shown_default_steps = default

    def diffusion_options(self) -> DiffusionOptions:
        """The task's measured defaults (symmetric pairs, eta) with the choices made here."""
        return modalities.get(self.task).diffusion_options(
            self.measurement_settings(),
            sampler=self.sampler.currentData(), guidance=self.guidance.currentData(), steps=int(self.steps.value()),
            samples=int(self.samples.value()), seed=int(self.seed.value()),
            blend_tv=self.blend.isChecked() and self.task in HOLDOUT_MODALITIES,
            through_plane=0.0 if getattr(self, "independent_slices", False) else None)

    @property
    def baseline_method(self) -> str | None:
        return self.baseline.currentData()

    @property
    def whole_volume(self) -> bool:
        return self.scope.currentData() == "volume"

    def set_running(self, running: bool) -> None:
        self.cancel_button.setEnabled(running)
        self.run_button.setText("Restart" if running else "Run")
