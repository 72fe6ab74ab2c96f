"""A 64-slice volume for viewer measurements: ``python -m diffrecon.experiments.demo_volume OUT.nii.gz``.

The multiplanar view and its stall target (the event loop stays within 50 ms while a
64-slice volume streams) need a whole volume; the bundled samples are 12-20 slice
slabs. This takes the Colin27 T1 (``mricron-data``; a *training* subject of the
bundled priors, so its scores say nothing about quality) and keeps 64 axial slices
2 mm apart around the middle, resampled in-plane to 128 rows (1.7 mm pixels): an
anisotropic volume of 64 x 128 x 107 voxels in its scanner orientation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from diffrecon.datasets import load_dataset
from diffrecon.io import save_volume
from diffrecon.io.volume import Volume


def demo_volume(slices: int = 64, rows: int = 128, slice_step: int = 2) -> Volume:
    from scipy.ndimage import zoom

    scan = load_dataset("colin27")  # (slices, rows, cols), 1 mm
    first = max(0, scan.n_slices // 2 - slices * slice_step // 2)
    picked = scan.data[first:first + slices * slice_step:slice_step].astype(np.float32)
    factor = rows / scan.shape[1]
    data = zoom(picked, (1.0, factor, factor), order=1).astype(np.float32)
    affine = np.array(scan.affine, float)
    origin = affine @ np.array([first, 0.0, 0.0, 1.0])
    affine[:3, 0] *= slice_step
    affine[:3, 1:3] /= factor
    affine[:3, 3] = origin[:3]
    spacing = (scan.spacing[0] * slice_step, scan.spacing[1] / factor, scan.spacing[2] / factor)
    return Volume(data, spacing, affine, modality="MR")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="NIfTI file to write")
    args = p.parse_args(argv)
    volume = demo_volume()
    save_volume(volume, args.out)
    print(f"{args.out}: {volume.shape[0]} x {volume.shape[1]} x {volume.shape[2]} voxels, "
          f"{' x '.join(f'{s:.2f}' for s in volume.spacing)} mm")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
