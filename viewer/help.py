"""The Help menu's texts: a short guide in plain words and the keyboard and mouse bindings.

The key list is read from the window's own actions, so it cannot drift from what the
keys do; the mouse bindings are the panes' (see :mod:`.pane`).
"""

from __future__ import annotations

from html import escape

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

GUIDE = """\
<h3>diffrecon in five steps</h3>
<ol>
<li><b>Open a scan</b>: File &gt; Open, drag a file onto the window, or start with the bundled sample.
DICOM folders, NIfTI, HDF5 (fastMRI) and NumPy files open.</li>
<li><b>Choose the task</b> on the left. With <i>Scan is the ground truth</i>, the scan is treated as the
true image: diffrecon simulates a shorter MRI (<i>acceleration</i>) or a lower-dose CT (<i>views</i>,
<i>dose</i>) from it, so every result can be scored against the truth.</li>
<li><b>Press Run</b> (Ctrl+R). The top-left pane shows the <i>input</i>: what a plain reconstruction of
the measurements looks like. The diffusion pane fills step by step as the network turns noise into an
image that agrees with the measurements; the baseline pane shows a classical method for comparison.</li>
<li><b>Read the uncertainty</b>: the bottom-right pane shows, per pixel, how much several posterior
samples disagree (σ). Bright areas are where the reconstruction is least certain: check them against
the input.</li>
<li><b>Export</b> the reconstruction, the uncertainty or the metrics (File menu). Exports record the
settings and the model used.</li>
</ol>
<h3>Words used here</h3>
<dl>
<dt><b>Prior (Model)</b></dt><dd>a network trained on many scans of one kind; it knows what such images look like.</dd>
<dt><b>Sampler: DDIM, DDPM, VP-SDE</b></dt><dd>the recipe that turns noise into an image in a number of
<i>steps</i>. DDIM is fast and gives the same image for the same seed.</dd>
<dt><b>Guidance: projection, DDS (CG), DPS</b></dt><dd>how each step is kept faithful to the measurements.
<i>Projection</i> puts the measured data back exactly; <i>DDS (CG)</i> pulls the estimate towards them
with a few conjugate-gradient iterations (the default); <i>DPS</i> nudges it along the gradient of the
mismatch.</dd>
<dt><b>x0 estimate / noisy x_t</b></dt><dd>what the diffusion pane shows: the current guess of the clean
image, or the partly denoised state the sampler works on.</dd>
<dt><b>Samples</b></dt><dd>independent reconstructions (each run with its mirrored-noise twin); their
spread is the uncertainty σ.</dd>
<dt><b>Blend with TV</b></dt><dd>(MRI, CT) 15 % of the measurements are set aside, the same settings run on
the rest, and the result is mixed with TV by how well each predicted what was set aside; the status line
says how much of each. A prior that does not know the scan then leans on TV instead of losing to it.</dd>
<dt><b>PSNR, SSIM, NMSE</b></dt><dd>agreement with the ground truth: higher PSNR and SSIM, lower NMSE is better.</dd>
</dl>
"""

MOUSE = (
    ("Wheel", "next / previous slice"),
    ("Ctrl+wheel", "zoom"),
    ("Left or middle drag", "pan"),
    ("Right drag", "window/level: right widens the window, up raises the level"),
    ("Double click", "fit the slice to the pane"),
    ("Arrow keys, Page Up/Down", "next / previous slice (in a pane)"),
    ("+ / -", "zoom in / out (in a pane)"),
    ("Click (3 planes)", "move the 3D crosshair there: the other planes show the slices through it"),
    ("Wheel, arrows (3 planes)", "step that plane along its own axis"),
)


def shortcut_rows(window) -> list[tuple[str, str]]:
    """(keys, what) for every window action with a shortcut, then the mouse bindings."""
    rows = []
    for act in window.actions():
        keys = act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        if keys:
            rows.append((keys, act.text().replace("&", "").rstrip(".")))
    for act in window.commands.preset_menu.actions():
        keys = act.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        if keys:
            rows.append((keys, f"window preset {act.text()}"))
    return rows + list(MOUSE)


def shortcuts_html(window) -> str:
    body = "".join(f"<tr><td><b>{escape(k)}</b>&nbsp;&nbsp;</td><td>{escape(what)}</td></tr>"
                   for k, what in shortcut_rows(window))
    return f"<h3>Keyboard and mouse</h3><table>{body}</table>"


class HelpDialog(QDialog):
    """A non-modal window with rich text (the guide or the key list); Esc closes it."""

    def __init__(self, title: str, html: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        layout = QVBoxLayout(self)
        self.text = QTextBrowser()
        self.text.setHtml(html)
        self.text.setOpenExternalLinks(False)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout.addWidget(buttons)
        self.resize(660, 700)  # the guide fits without scrolling at the default font
