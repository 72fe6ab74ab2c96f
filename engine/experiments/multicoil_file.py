"""Write a fully sampled multi-coil fastMRI-style file from any scan (simulated receive coils).

    python -m diffrecon.experiments.multicoil_file someones-t1 --slices 24:28 --coils 8 --out ~/diffrecon-out/mc.h5
    diffrecon reconstruct ~/diffrecon-out/mc.h5 --method zero-filled,tv,l1-wavelet,diffusion --out ~/diffrecon-out/mc.nii.gz

No raw multi-coil k-space can be installed here, so this is how the measured multi-coil
path (ESPIRiT sensitivity maps from the calibration region, SENSE operator in every
method and in the diffusion guidance) is exercised on real anatomy: each slice times
smooth coil maps (:func:`diffrecon.physics.coils.simulate_coil_maps`) with a gentle smooth
phase, Fourier transformed (fastMRI's centred orthonormal FFT), stored as ``kspace``
``(slices, coils, rows, cols)`` with the root-sum-of-squares image as
``reconstruction_rss`` (the reference `reconstruct` scores against). The reader applies
the undersampling (``--acceleration``) retrospectively, as for any fully sampled file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    import h5py
    import torch

    from ..datasets import DATASETS, load_dataset
    from ..io import load_volume
    from ..physics.coils import simulate_coil_maps
    from ..physics.mri import fft2c
    from ..slices import slice_indices

    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.multicoil_file", description=__doc__.split("\n")[0])
    p.add_argument("data", help="a dataset name (diffrecon.datasets) or a scan")
    p.add_argument("--slices", help="slices to keep (default: all)")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    volume = load_dataset(args.data) if args.data in DATASETS else load_volume(args.data)
    index = slice_indices(args.slices, volume.n_slices)
    image = np.abs(volume.data[index]).astype(np.float32)
    image /= max(float(np.percentile(image, 99.5)), 1e-12)
    _, h, w = image.shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    phase = np.exp(1j * (0.6 * xx + 0.3 * yy)).astype(np.complex64)  # a smooth object phase, as scanners give
    maps = simulate_coil_maps(args.coils, h, w, seed=args.seed)
    coil_images = (image * phase)[:, None] * maps[None]
    kspace = fft2c(torch.from_numpy(coil_images)).numpy().astype(np.complex64)
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(axis=1)).astype(np.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(args.out, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_rss", data=rss)
        f.attrs["acquisition"] = "simulated multi-coil"
        f.attrs["max"] = float(rss.max())
        f.attrs["source"] = f"{args.data} slices {args.slices or 'all'}, {args.coils} simulated coils (seed {args.seed})"
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
