"""Rebuild the bundled sample scans from the real scans Debian ships.

    python resources/samples/make_samples.py

Every sample comes from the slab held out from training (engine/datasets.py), so a
prior shipped with diffrecon has never seen it. See README.md here for provenance.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from diffrecon import __version__
from diffrecon.datasets import DATASETS, load_dataset, validation_slices
from diffrecon.io import save_volume
from diffrecon.physics.mri import fft2c

import torch

HERE = Path(__file__).resolve().parent


def smooth_phase(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth random phase map (low-order polynomial, up to ~pi/2), like a scanner image's."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    c = rng.normal(0, 0.5, 6)
    return (c[0] + c[1] * x + c[2] * y + c[3] * x * y + c[4] * x**2 + c[5] * y**2).astype(np.float32)


def main() -> None:
    prov = {"made_by": f"resources/samples/make_samples.py (diffrecon {__version__})"}

    brain = load_dataset("colin27")
    slab = brain.select_slices(validation_slices(brain, "colin27"))
    slab.data = slab.data.astype(np.float32)
    save_volume(slab, HERE / "colin27-t1-slab.nii.gz", description="Colin27 T1 held-out slab",
                provenance={**prov, "source": DATASETS["colin27"].provenance})

    # fastMRI-style single-coil k-space: the magnitude slab times a smooth phase, centred
    # orthonormal FFT (fastMRI's convention), fully sampled, with the magnitude as target.
    mid = slab.select_slices(slice(5, 15))
    img = mid.data * np.exp(1j * np.stack([smooth_phase(mid.shape[1:], i) for i in range(mid.n_slices)]))
    kspace = fft2c(torch.from_numpy(img.astype(np.complex64))).numpy()
    h, w = mid.shape[1:]
    header = (
        "<?xml version='1.0'?><ismrmrdHeader><encoding>"
        f"<encodedSpace><matrixSize><x>{w}</x><y>{h}</y><z>1</z></matrixSize></encodedSpace>"
        f"<reconSpace><matrixSize><x>{w}</x><y>{h}</y><z>1</z></matrixSize></reconSpace>"
        "</encoding></ismrmrdHeader>"
    )
    # gzip with byte shuffle, one chunk per slice: lossless, 4.7 -> 3.1 MB
    packed = {"compression": "gzip", "compression_opts": 9, "shuffle": True, "chunks": (1, h, w)}
    with h5py.File(HERE / "colin27-kspace-singlecoil.h5", "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64), **packed)
        f.create_dataset("reconstruction_esc", data=np.abs(img).astype(np.float32), **packed)
        f.create_dataset("ismrmrd_header", data=header)
        f.attrs["acquisition"] = "synthetic (Colin27 T1 + smooth phase)"
        f.attrs["max"] = float(np.abs(img).max())
        f.attrs["patient_id"] = "colin27"

    ct = load_dataset("cranium")
    ct_slab = ct.select_slices(validation_slices(ct, "cranium"))
    out = HERE / "cranium-ct-slab"
    for old in out.glob("*"):
        old.unlink()
    save_volume(ct_slab, out, description="Head CT held-out slab",
                provenance={**prov, "source": DATASETS["cranium"].provenance})
    print("samples written to", HERE)


if __name__ == "__main__":
    main()
