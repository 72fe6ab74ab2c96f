"""Shared helpers for the viewer tests: tiny real files, a tiny real prior, a window."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_phantom


def write_tiny_prior(path: Path) -> Path:
    """An untrained 2-channel MRI prior small enough to sample 64x64 images in milliseconds.

    Four levels keep the self-attention at 8x8 (attention cost is quadratic in pixels).
    """
    import torch

    from diffrecon.diffusion.checkpoint import Prior
    from diffrecon.diffusion.data import Normalisation
    from diffrecon.diffusion.schedules import make_schedule
    from diffrecon.diffusion.unet import UNet
    from tiny_priors import save_tiny_prior

    torch.manual_seed(0)
    net = UNet(in_channels=2, width=8, channel_mult=(1, 1, 1, 1), res_blocks=1, attention_heads=2)
    untrained = Prior(net, make_schedule("linear"), Normalisation.for_modality("mri").to_metadata(), "mri", 2, {}, None)
    return save_tiny_prior(path, untrained)


def write_mr_nifti(path: Path, slices: int = 5, size: int = 64) -> Path:
    from diffrecon.io import save_volume
    from diffrecon.io.volume import Volume, affine_from_spacing

    data = make_phantom(slices, size, size) * 800.0
    spacing = (2.0, 1.0, 1.0)
    save_volume(Volume(data.astype(np.float32), spacing, affine_from_spacing(spacing), modality="MR"), path)
    return path


def write_ct_dicom(folder: Path, slices: int = 3, size: int = 64) -> Path:
    from diffrecon.io import save_volume
    from diffrecon.io.volume import Volume, affine_from_spacing

    phantom = make_phantom(slices, size, size)
    hu = np.where(phantom > 0, phantom * 1400.0 - 300.0, -1000.0).astype(np.float32)
    spacing = (1.5, 0.8, 0.8)
    save_volume(Volume(hu, spacing, affine_from_spacing(spacing), modality="CT", units="HU"), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory) -> Path:
    return write_tiny_prior(tmp_path_factory.mktemp("prior") / "tiny-mri.safetensors")


@pytest.fixture
def mr_nifti(tmp_path) -> Path:
    return write_mr_nifti(tmp_path / "phantom.nii.gz")


@pytest.fixture
def window(qtbot, tmp_path):
    import torch
    from PySide6.QtCore import QSettings

    from diffrecon.viewer.app import reserve_a_core_for_the_gui
    from diffrecon.viewer.window import MainWindow

    threads = torch.get_num_threads()
    reserve_a_core_for_the_gui()  # as the app does: the GUI thread keeps a core
    w = MainWindow(QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    w.close()  # cancels and joins every worker thread
    torch.set_num_threads(threads)



def open_scan(qtbot, window, path, *, inputs: bool = True):
    """Open a file and wait until it is shown (and its measured input computed)."""
    with qtbot.waitSignal(window.scanLoaded, timeout=20_000):
        window.open_path(path)
    if inputs:
        qtbot.waitUntil(lambda: window.session.has("input"), timeout=20_000)
    return window.session


def quick_settings(window, prior: Path, steps: int = 3, samples: int = 2, baseline=None, blend: bool = False) -> None:
    """Small, fast runs; without the blend with TV (its hold-out run doubles the frames) unless asked."""
    c = window.controls
    c.set_model(prior)
    c.steps.setValue(steps)
    c.samples.setValue(samples)
    c.blend.setChecked(blend)
    c.baseline.setCurrentIndex(c.baseline.findData(baseline))


def run_to_end(qtbot, window, timeout: int = 40_000) -> bool:
    with qtbot.waitSignal(window.runner.runFinished, timeout=timeout) as blocker:
        assert window.start_run()
    return blocker.args[0]
