"""Packed training data (what a lent GPU machine trains on): a round trip keeps the scans
within their quantisation steps, and ``train --packed`` trains on it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from diffrecon.diffusion.checkpoint import load_prior
from diffrecon.diffusion.data import TrainingSource
from diffrecon.diffusion.packed import MAGNITUDE_MAX, load_packed, pack_sources
from diffrecon.errors import DiffreconError
from test_training import run_train_cli


def _head(rng: np.random.Generator, complex_valued: bool) -> np.ndarray:
    """A (z, y, x) head-like blob in the model domain with air around it."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (10, 40, 36)), indexing="ij")
    inside = (x / 0.7) ** 2 + (y / 0.8) ** 2 + z**2 / 2 < 1
    vol = np.where(inside, 0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y) + 0.02 * rng.standard_normal(x.shape), 0.0)
    if complex_valued:
        return (vol * np.exp(1j * (0.8 * x + 0.4 * y))).astype(np.complex64)
    return vol.astype(np.float32)


@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_a_pack_round_trip_keeps_every_source_within_its_quantisation(tmp_path: Path, modality: str) -> None:
    rng = np.random.default_rng(0)
    sources = [TrainingSource(f"s{i}", [_head(rng, modality == "mri")], _head(rng, modality == "mri")[:2],
                              (1.0, 1.0, 2.0 + i), f"slices {i}", f"synthetic {i}") for i in range(2)]
    sources.append(TrainingSource("val", [], _head(rng, modality == "mri")[:3], (1.0, 1.0, 1.0), "all of it",
                                  "synthetic", role="validation"))
    path = pack_sources(sources, modality, tmp_path / f"{modality}.npz")
    with zipfile.ZipFile(path) as archive:  # LZMA, which np.load reads like numpy's own zlib
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_LZMA}
    loaded = load_packed(path, modality)
    assert [s.name for s in loaded] == ["s0", "s1", "val"] and loaded[2].role == "validation"
    assert loaded[1].spacing == (1.0, 1.0, 3.0) and loaded[0].provenance == "synthetic 0"
    # MRI: 8-bit magnitude and phase; CT: 16 bits over its range
    step = MAGNITUDE_MAX / 255 if modality == "mri" else 1.64 / 65535
    for original, back in zip(sources, loaded):
        assert np.abs(np.abs(back.validation) - np.abs(original.validation)).max() <= step
        for block, packed in zip(original.blocks, back.blocks):
            # blocks are cropped to the object plus a margin: the object's voxels all survive
            assert packed.shape[0] <= block.shape[0] and np.abs(packed).sum() == pytest.approx(
                np.abs(block).sum(), rel=0.02)
    other = "ct" if modality == "mri" else "mri"
    with pytest.raises(DiffreconError, match=f"holds {modality} training data, not {other}"):
        load_packed(path, other)


def test_train_runs_on_a_packed_file_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sources = [TrainingSource("ct", [_head(rng, False)], _head(rng, False)[:2], (1.0, 1.0, 1.0), "-", "synthetic")]
    packed = pack_sources(sources, "ct", tmp_path / "ct.npz")
    out = tmp_path / "ct-tiny.safetensors"
    code, _, err = run_train_cli("--packed", packed, "--modality", "ct", "--size", "16", "--width", "8",
                                 "--batch", "2", "--steps", "2", "--out", out, "--quiet", "--threads", "1")
    assert code == 0, err
    assert load_prior(out).modality == "ct"
