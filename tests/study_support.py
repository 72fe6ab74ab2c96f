"""Shared helpers for the reader-study tests: tiny case folders and studies on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import make_phantom

METHODS = ("diffusion", "zero-filled")


def write_cases(root: Path, n_cases: int = 3, methods=METHODS, *, slices: int = 3, size: int = 16,
                reference: str | None = None, nifti: bool = False) -> Path:
    """``root/caseNN/<method>.npy`` (or .nii.gz): the phantom with more noise for later methods."""
    from diffrecon.io import Volume, affine_from_spacing, save_volume

    rng = np.random.default_rng(1)
    for c in range(n_cases):
        folder = root / f"case{c + 1:02d}"
        folder.mkdir(parents=True)
        clean = make_phantom(slices, size, size, seed=c)
        for k, method in enumerate(methods):
            noisy = (clean + 0.05 * k * rng.standard_normal(clean.shape)).astype(np.float32)
            if nifti:
                spacing = (2.0, 0.9, 0.9)
                save_volume(Volume(noisy, spacing, affine_from_spacing(spacing), modality="MR"),
                            folder / f"{method}.nii.gz")
            else:
                np.save(folder / f"{method}.npy", noisy)
        if reference:
            np.save(folder / f"{reference}.npy", clean)
    return root


@pytest.fixture
def case_root(tmp_path) -> Path:
    return write_cases(tmp_path / "cases")


@pytest.fixture
def study(tmp_path, case_root) -> Path:
    from diffrecon.study import create_study

    return create_study([str(case_root)], tmp_path / "study", readers=["alice", "bob"]).folder
