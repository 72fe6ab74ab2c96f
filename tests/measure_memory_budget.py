"""Measure the bytes per voxel that ``diffrecon.io.budget`` uses (not a test: a tool).

    .venv/bin/python tests/measure_memory_budget.py [--quick]

For each format and command it runs ``diffrecon`` under ``/usr/bin/time -f %M`` (peak
resident memory) on a small and a large volume of 256x256 slices and prints
``(peak_large - peak_small) / (voxels_large - voxels_small)``: the memory each extra voxel
costs, the fixed cost of the imports cancelling out. Prints one line per case.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent / "diffrecon"


def peak_kib(args: list[str]) -> int:
    done = subprocess.run(["/usr/bin/time", "-f", "%M", str(BIN), "--threads", "1", *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed: {args}: {done.stderr.strip().splitlines()[-2:]}")
    return int(done.stderr.strip().splitlines()[-1])


def write(folder: Path, fmt: str, slices: int, dtype: str) -> Path:
    from diffrecon.io import Volume, affine_from_spacing, save_volume

    data = (np.random.default_rng(0).random((slices, 256, 256)) * 1000).astype(dtype)
    spacing = (1.0, 1.0, 1.0)
    if fmt == "npz":
        path = folder / f"v{slices}{dtype}.npz"
        np.savez_compressed(path, image=data)
        return path
    suffix = {"nifti": ".nii.gz", "numpy": ".npy", "hdf5": ".h5", "dicom": ""}[fmt]
    path = folder / f"v{slices}{dtype}{suffix}"
    if fmt == "nifti" and dtype != "float32":
        import nibabel as nib

        nib.save(nib.Nifti1Image(data.T.copy(), np.eye(4)), path)
        return path
    save_volume(Volume(data.astype(np.float32), spacing, affine_from_spacing(spacing), modality="CT", units="HU"),
                path)
    return path


def main() -> None:
    quick = "--quick" in sys.argv
    small, large = (8, 40) if quick else (16, 96)
    extra = (large - small) * 256 * 256
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = [("info", fmt, dtype, []) for fmt, dtype in (("nifti", "float32"), ("nifti", "int16"),
                                                              ("numpy", "float32"), ("npz", "float32"),
                                                              ("hdf5", "float32"), ("dicom", "int16"))]
        out = str(folder / "out.nii.gz")
        cases += [("reconstruct", "numpy", "float32", ["--simulate", "--modality", "mri", "--method", m, "--out", out])
                  for m in ("zero-filled", "zero-filled,l1-wavelet")]
        cases += [("reconstruct", "numpy", "float32", ["--simulate", "--modality", "denoise", "--method", "median",
                                                       "--out", out])]
        for command, fmt, dtype, options in cases:
            paths = [write(folder, fmt, n, dtype) for n in (small, large)]
            peaks = [peak_kib([command, str(p), *options]) for p in paths]
            per_voxel = (peaks[1] - peaks[0]) * 1024 / extra
            print(f"{command:12s} {fmt:6s} {dtype:8s} {' '.join(options[-3:-2] if options else [])!s:24s} "
                  f"{per_voxel:6.1f} bytes/voxel (peaks {peaks[0] / 1024:.0f} and {peaks[1] / 1024:.0f} MiB)",
                  flush=True)


if __name__ == "__main__":
    main()
