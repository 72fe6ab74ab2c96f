"""Menus, toolbar, recent files and the export dialogs of the main window."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QComboBox, QFileDialog, QLabel, QToolBar

from diffrecon.errors import DiffreconError

from .export import EXPORTS, VOLUME_FILTERS, export_metrics_csv, export_volume
from .mpr import IMAGES as MPR_IMAGES
from .paths import default_sample, resources_dir

MAX_RECENT = 8
LAYOUT_LABELS = {"2x2": "2 x 2 panes", "1x4": "1 x 4 panes", "mpr": "3 planes, every image",
                 "mpr-one": "3 planes, one image"}
SCAN_FILTER = "Scans (*.nii *.nii.gz *.h5 *.hdf5 *.dcm *.npy *.npz);;All files (*)"


class WindowActions:
    """Builds the window's menus and toolbar and handles what they trigger."""

    def __init__(self, window):
        self.w = window
        bar = window.menuBar()
        self.toolbar = QToolBar("Main")
        self.toolbar.setObjectName("main-toolbar")
        self.toolbar.setMovable(False)
        window.addToolBar(self.toolbar)

        file_menu = bar.addMenu("&File")
        self.open = self._action("&Open scan...", self.open_dialog, QKeySequence.StandardKey.Open)
        self.open_folder = self._action("Open &DICOM folder...", self.open_folder_dialog)
        self.open_sample = self._action("Open the &sample scan", window.open_default_sample)
        file_menu.addActions([self.open, self.open_folder, self.open_sample])
        self.recent_menu = file_menu.addMenu("&Recent files")
        file_menu.addSeparator()
        self.export_actions = {}
        for layer in ("recon", "sigma", "flags", "baseline", "input"):
            act = self._action(f"Export {EXPORTS[layer][0]}...", lambda _=False, name=layer: self.export_dialog(name))
            file_menu.addAction(act)
            self.export_actions[layer] = act
        self.export_png = self._action("Export panes as &PNG...", self.png_dialog)
        self.export_csv = self._action("Export &metrics as CSV...", self.csv_dialog)
        file_menu.addActions([self.export_png, self.export_csv])
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", window.close, "Ctrl+Q"))

        view = bar.addMenu("&View")
        group = QActionGroup(window)
        self.layouts = {}
        for name, label in LAYOUT_LABELS.items():
            act = self._action(label, lambda _=False, n=name: self.set_layout(n), checkable=True)
            act.setChecked(name == "2x2")
            group.addAction(act)
            view.addAction(act)
            self.layouts[name] = act
        view.addSeparator()
        self.fit = self._action("&Fit slice", lambda _=False: self.w.stack.page.fit(), "F")
        self.crosshair = self._action("&Crosshair", self.set_crosshair, "C", checkable=True)
        self.crosshair.setChecked(True)
        self.error_maps = self._action("&Error maps", self.set_error_maps, "E", checkable=True)
        self.error_maps.setToolTip("Show |image - reference| in the image panes (needs a reference)")
        view.addActions([self.fit, self.crosshair, self.error_maps])
        self.preset_menu = view.addMenu("&Window presets")

        run = bar.addMenu("&Run")
        self.run = self._action("&Run", lambda _=False: window.start_run(), "Ctrl+R")
        self.cancel = self._action("&Cancel", window.runner.cancel, "Esc")
        run.addActions([self.run, self.cancel])

        help_menu = bar.addMenu("&Help")
        self.guide = self._action("Quick &guide", lambda: self.show_help("guide"), "F1")
        self.keys = self._action("&Keyboard and mouse", lambda: self.show_help("keys"))
        help_menu.addActions([self.guide, self.keys])
        self.help_dialog = None

        self.recon_shows = QComboBox()
        self.recon_shows.addItem("x0 estimate", "estimate")
        self.recon_shows.addItem("noisy x_t", "sample")
        self.recon_shows.setItemData(0, "x0 estimate: the network's current guess of the clean image "
                                     "(the final image at the last step)", Qt.ItemDataRole.ToolTipRole)
        self.recon_shows.setItemData(1, "noisy x_t: the sampler's state itself, noise fading step by step",
                                     Qt.ItemDataRole.ToolTipRole)
        self.recon_shows.setToolTip("What the diffusion pane shows while sampling:\n"
                                    "x0 estimate = the current guess of the clean image;\n"
                                    "noisy x_t = the partly denoised state the sampler works on")
        self.recon_shows.currentIndexChanged.connect(self._display_changed)
        self.variance_mode = QComboBox()
        self.variance_mode.addItem("σ", "sigma")
        self.variance_mode.addItem("σ²", "variance")
        self.variance_mode.setToolTip("Uncertainty pane: how much the posterior samples disagree, per pixel, "
                                      "as a standard deviation σ (image units) or a variance σ²")
        self.variance_mode.currentIndexChanged.connect(self._display_changed)
        tb = self.toolbar
        tb.addActions([self.open, self.run, self.cancel])
        tb.addSeparator()
        tb.addActions([self.layouts["2x2"], self.layouts["1x4"], self.layouts["mpr"], self.layouts["mpr-one"]])
        self.planes_of = QComboBox()
        for image, title in MPR_IMAGES:
            self.planes_of.addItem(title, image)
        self.planes_of.setCurrentIndex(self.planes_of.findData("recon"))
        self.planes_of.setToolTip("The image shown in three planes (View > 3 planes, one image)")
        self.planes_of.currentIndexChanged.connect(self._planes_of_changed)
        self.planes_of.setEnabled(False)
        tb.addWidget(self.planes_of)
        tb.addActions([self.fit, self.crosshair, self.error_maps])
        tb.addSeparator()
        tb.addWidget(QLabel(" Diffusion pane "))
        tb.addWidget(self.recon_shows)
        tb.addWidget(QLabel(" Uncertainty "))
        tb.addWidget(self.variance_mode)
        self.refresh_recent()
        saved = str(self.w.settings.value("layout", "2x2"))
        if saved in self.layouts:
            self.set_layout(saved, remember=False)

    def _action(self, text, slot, shortcut=None, checkable=False) -> QAction:
        act = QAction(text, self.w)
        act.setCheckable(checkable)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        act.triggered.connect(slot)
        self.w.addAction(act)  # shortcuts work whatever has focus
        return act

    # ----- view -----

    def set_layout(self, name: str, remember: bool = True) -> None:
        """2x2 / 1x4: the four panes of the slice; mpr / mpr-one: axial, coronal and sagittal planes."""
        w = self.w
        planes = name in ("mpr", "mpr-one")
        if planes:
            w.mpr.set_mode("all" if name == "mpr" else "one", self.planes_of.currentData())
            w.stack.show_page(w.mpr)
        else:
            w.grid.set_layout(name)
            w.stack.show_page(w.grid)
            w.renderer.render_all()  # it skipped drawing while the planes were shown
        w.mpr_renderer.set_active(planes)
        self.planes_of.setEnabled(name == "mpr-one")
        self.layouts[name].setChecked(True)
        if remember:  # the user's choice holds at the next start (a command-line --layout does not)
            self.w.settings.setValue("layout", name)

    def _planes_of_changed(self) -> None:
        if self.layouts["mpr-one"].isChecked():
            self.w.mpr.set_mode("one", self.planes_of.currentData())
            self.w.mpr_renderer.draw_all()

    def set_crosshair(self, on: bool) -> None:
        self.w.grid.set_crosshair_enabled(on)
        self.w.mpr_renderer.show_crosshair = bool(on)
        self.w.mpr_renderer.draw_all()

    def set_error_maps(self, on: bool) -> None:
        self.error_maps.setChecked(on)
        self.w.renderer.options.error_maps = bool(on)
        if on and not self.w.renderer.has_reference():
            self.w.show_status("Error maps need a reference: simulate from the scan, or a file with a target.",
                               error=True)
        self.w.renderer.render_all()

    def _display_changed(self) -> None:
        o = self.w.renderer.options
        o.recon_shows = self.recon_shows.currentData()
        o.variance_mode = self.variance_mode.currentData()
        self.w.renderer.render_all()

    def show_help(self, which: str) -> None:
        """The quick guide or the key list, in one non-modal window beside the viewer."""
        from .help import GUIDE, HelpDialog, shortcuts_html

        title, html = ("Quick guide", GUIDE) if which == "guide" else ("Keyboard and mouse", shortcuts_html(self.w))
        if self.help_dialog is None:
            self.help_dialog = HelpDialog(title, html, self.w)
        self.help_dialog.setWindowTitle(f"diffrecon: {title}")
        self.help_dialog.text.setHtml(html)
        self.help_dialog.show()
        self.help_dialog.raise_()

    def set_preset_shortcuts(self, presets) -> None:
        self.preset_menu.clear()
        for i, preset in enumerate(presets):
            act = QAction(preset.name, self.w)
            if preset.shortcut:
                act.setShortcut(QKeySequence(preset.shortcut))
            act.triggered.connect(lambda _=False, i=i: self.w.apply_preset(i))
            self.preset_menu.addAction(act)

    # ----- recent files -----

    def recent(self) -> list[str]:
        value = self.w.settings.value("recent_files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def add_recent(self, path: Path) -> None:
        if Path(path).resolve() == default_sample().resolve():
            return  # the sample is always one click away
        entries = [str(Path(path).resolve())] + [p for p in self.recent() if p != str(Path(path).resolve())]
        self.w.settings.setValue("recent_files", entries[:MAX_RECENT])
        self.w.settings.sync()
        self.refresh_recent()

    def refresh_recent(self) -> None:
        self.recent_menu.clear()
        entries = self.recent()
        for path in entries:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.w.open_path(p))
        self.recent_menu.setEnabled(bool(entries))

    # ----- dialogs -----

    # Open and export remember their own folders: an export never lands among the inputs
    # (least of all in the bundled resources), and the first dialog starts where the user
    # launched diffrecon, not in the home folder of whoever installed it.

    def open_dir(self) -> str:
        return self._remembered("last_open_dir")

    def export_dir(self) -> str:
        return self._remembered("last_export_dir")

    def _remembered(self, key: str) -> str:
        saved = self.w.settings.value(key)
        if saved and Path(str(saved)).is_dir() and not _inside_resources(Path(str(saved))):
            return str(saved)
        return str(Path.cwd())

    def _remember(self, key: str, path: str) -> None:
        self.w.settings.setValue(key, str(Path(path).parent))

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.w, "Open a scan", self.open_dir(), SCAN_FILTER)
        if path:
            self._remember("last_open_dir", path)
            self.w.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.w, "Open a DICOM series folder", self.open_dir())
        if path:
            self._remember("last_open_dir", path)  # its parent: the next folder is likely a sibling
            self.w.open_path(path)

    def _stem(self) -> str:
        s = self.w.session
        name = s.path.name if s and s.path else "scan"
        for ext in (".nii.gz", ".nii", ".h5", ".hdf5", ".npy", ".npz", ".dcm"):
            if name.lower().endswith(ext):
                return name[: -len(ext)]
        return name

    def export_dialog(self, layer: str) -> None:
        if self.w.session is None:
            return
        suggestion = str(Path(self.export_dir()) / f"{self._stem()}_{EXPORTS[layer][0]}.nii.gz")
        path, chosen = QFileDialog.getSaveFileName(self.w, f"Export {EXPORTS[layer][0]}", suggestion, VOLUME_FILTERS)
        if path:
            if chosen.startswith("DICOM"):
                path = path.removesuffix(".nii.gz")
            self._remember("last_export_dir", path)
            self.export(layer, path)

    def export(self, layer: str, path: str | Path) -> list[Path]:
        try:
            written = export_volume(self.w.session, layer, path)
        except DiffreconError as exc:
            self.w.show_status(str(exc), error=True)
            return []
        self.w.show_status(f"Wrote {EXPORTS[layer][0]} to {Path(path)} ({len(written)} file(s)).")
        return written

    def png_dialog(self) -> None:
        suggestion = str(Path(self.export_dir()) / f"{self._stem()}_panes.png")
        path, _ = QFileDialog.getSaveFileName(self.w, "Export panes as PNG", suggestion, "PNG (*.png)")
        if path:
            self._remember("last_export_dir", path)
            self.save_png(path)

    def save_png(self, path: str | Path) -> bool:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = self.w.stack.page.grab().save(str(path), "PNG")  # the panes or the planes, as shown
        if ok:
            self.w.show_status(f"Wrote {path}.")
        else:
            self.w.show_status(f"{path}: the PNG could not be written.", error=True)
        return ok

    def csv_dialog(self) -> None:
        suggestion = str(Path(self.export_dir()) / f"{self._stem()}_metrics.csv")
        path, _ = QFileDialog.getSaveFileName(self.w, "Export metrics", suggestion, "CSV (*.csv)")
        if path:
            self._remember("last_export_dir", path)
            self.export_csv_to(path)

    def export_csv_to(self, path: str | Path) -> Path | None:
        try:
            out = export_metrics_csv(self.w.session, path)
        except DiffreconError as exc:
            self.w.show_status(str(exc), error=True)
            return None
        self.w.show_status(f"Wrote metrics to {out}.")
        return out


def _inside_resources(path: Path) -> bool:
    """Is ``path`` in the bundled resources (samples, priors)? Nothing is written there."""
    try:
        return path.resolve().is_relative_to(resources_dir().resolve())
    except OSError:
        return False
