"""A corpus of broken inputs: each must give ``diffrecon info`` one sentence naming the problem.

Every case builds its file in ``tmp_path``; none may hang, allocate the header's
claimed size, or print a traceback.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Callable

import h5py
import nibabel as nib
import numpy as np
import pytest

from conftest import assert_one_sentence_error, make_phantom, run_cli


def _nifti(tmp: Path, name: str, data: np.ndarray) -> Path:
    path = tmp / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _volume_xyz() -> np.ndarray:
    return make_phantom(6, 16, 16).T.copy()  # (x, y, z) in file order


def _cut(path: Path, keep: float) -> Path:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def empty(name: str) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(b"")
        return tmp / name

    return build


def truncated_nii(tmp: Path) -> Path:
    return _cut(_nifti(tmp, "cut.nii", _volume_xyz()), 0.5)


def truncated_nii_gz(tmp: Path) -> Path:
    return _cut(_nifti(tmp, "cut.nii.gz", np.random.default_rng(0).random((40, 40, 20), np.float32)), 0.5)


def text_named_nii_gz(tmp: Path) -> Path:
    (tmp / "notes.nii.gz").write_text("patient notes, not an image\n" * 20)
    return tmp / "notes.nii.gz"


def gzip_of_text_nii_gz(tmp: Path) -> Path:
    (tmp / "text.nii.gz").write_bytes(gzip.compress(b"just some text, no NIfTI header here\n" * 30))
    return tmp / "text.nii.gz"


def nifti_rank1(tmp: Path) -> Path:
    return _nifti(tmp, "line.nii", np.arange(100, dtype=np.float32))


def nifti_rank5(tmp: Path) -> Path:
    return _nifti(tmp, "field.nii.gz", np.zeros((16, 16, 8, 1, 3), np.float32))


def nifti_time_series(tmp: Path) -> Path:
    return _nifti(tmp, "fmri.nii.gz", np.zeros((16, 16, 8, 64), np.float32))


def _nifti_bytes(shape: tuple[int, ...], dtype: type, voxel_bytes: bytes) -> bytes:
    """A NIfTI-1 single file whose header declares ``shape`` but which holds ``voxel_bytes``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4 + voxel_bytes  # 348-byte header, empty extension block


def nifti_dims_beyond_file(tmp: Path) -> Path:
    (tmp / "liar.nii").write_bytes(_nifti_bytes((512, 512, 400), np.int16, b"\1" * 2000))
    return tmp / "liar.nii"


def nifti_gz_dims_beyond_file(tmp: Path) -> Path:
    # 16 GiB declared in a few hundred compressed bytes: more than deflate can expand to.
    (tmp / "liar.nii.gz").write_bytes(gzip.compress(_nifti_bytes((2048, 2048, 1024), np.float32, b"\1" * 4000)))
    return tmp / "liar.nii.gz"


def nifti_too_big_for_memory(tmp: Path) -> Path:
    # Header and (sparse) file agree; only the machine's memory is short.
    path = tmp / "huge.nii"
    path.write_bytes(_nifti_bytes((8192, 8192, 4000), np.float32, b""))
    os.truncate(path, 352 + 8192 * 8192 * 4000 * 4)
    return path


def nifti_nan(tmp: Path) -> Path:
    data = _volume_xyz()
    data[3, 4, 2] = np.nan
    return _nifti(tmp, "nan.nii.gz", data)


def nifti_inf(tmp: Path) -> Path:
    data = _volume_xyz()
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    return _nifti(tmp, "inf.nii", data)


def nifti_tiny_slices(tmp: Path) -> Path:
    return _nifti(tmp, "tiny.nii", np.ones((4, 4, 10), np.float32))


def nifti_rgb(tmp: Path) -> Path:
    rgb = np.zeros((16, 16, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return _nifti(tmp, "rgb.nii", rgb)


def _h5(tmp: Path, name: str, **datasets: np.ndarray) -> Path:
    path = tmp / name
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def h5_without_kspace(tmp: Path) -> Path:
    return _h5(tmp, "nok.h5", labels=np.arange(10), notes=np.bytes_(b"hello"))


def h5_real_kspace(tmp: Path) -> Path:
    return _h5(tmp, "real.h5", kspace=np.zeros((2, 32, 32), np.float32))


def h5_rank2_kspace(tmp: Path) -> Path:
    return _h5(tmp, "rank2.h5", kspace=np.zeros((32, 32), np.complex64))


def h5_mask_mismatch(tmp: Path) -> Path:
    return _h5(tmp, "mask.h5", kspace=np.ones((2, 32, 24), np.complex64), mask=np.ones(30, bool))


def h5_empty_mask(tmp: Path) -> Path:
    return _h5(tmp, "nomask.h5", kspace=np.ones((2, 32, 24), np.complex64), mask=np.zeros(24, np.float32))


def h5_nan_kspace(tmp: Path) -> Path:
    kspace = np.ones((2, 4, 32, 24), np.complex64)
    kspace[1, 2, 3, 4] = complex(np.nan, 0)
    return _h5(tmp, "nank.h5", kspace=kspace)


def h5_truncated(tmp: Path) -> Path:
    rng = np.random.default_rng(1)
    kspace = (rng.standard_normal((4, 2, 64, 64)) + 1j * rng.standard_normal((4, 2, 64, 64))).astype(np.complex64)
    return _cut(_h5(tmp, "cut.h5", kspace=kspace), 0.5)


def h5_text(tmp: Path) -> Path:
    (tmp / "fake.h5").write_text("this is not HDF5\n" * 50)
    return tmp / "fake.h5"


def npy_object(tmp: Path) -> Path:
    np.save(tmp / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return tmp / "obj.npy"


def npy_header_beyond_file(tmp: Path) -> Path:
    path = tmp / "liar.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (4096, 4096, 4096)})
        fh.write(b"\0" * 1024)
    return path


def npy_text(tmp: Path) -> Path:
    (tmp / "text.npy").write_text("1 2 3\n4 5 6\n")
    return tmp / "text.npy"


def npy_1d(tmp: Path) -> Path:
    np.save(tmp / "line.npy", np.arange(50, dtype=np.float32))
    return tmp / "line.npy"


def npy_strings(tmp: Path) -> Path:
    np.save(tmp / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    return tmp / "str.npy"


def npz_several(tmp: Path) -> Path:
    np.savez(tmp / "many.npz", t1=np.zeros((2, 16, 16)), t2=np.ones((2, 16, 16)), flair=np.ones((2, 16, 16)))
    return tmp / "many.npz"


def npz_text(tmp: Path) -> Path:
    (tmp / "text.npz").write_text("a,b\n1,2\n")
    return tmp / "text.npz"


def npz_truncated(tmp: Path) -> Path:
    np.savez(tmp / "cut.npz", image=np.random.default_rng(2).random((4, 32, 32)))
    return _cut(tmp / "cut.npz", 0.5)


def unknown_extension(tmp: Path) -> Path:
    (tmp / "scan.txt").write_text("not an image")
    return tmp / "scan.txt"


def missing_path(tmp: Path) -> Path:
    return tmp / "nowhere" / "scan.nii.gz"


CASES = [
    ("empty .nii", empty("empty.nii"), "empty"),
    ("empty .nii.gz", empty("empty.nii.gz"), "empty"),
    ("empty .h5", empty("empty.h5"), "empty"),
    ("empty .npy", empty("empty.npy"), "empty"),
    ("truncated .nii", truncated_nii, "truncated"),
    ("truncated .nii.gz", truncated_nii_gz, "gzip stream is truncated"),
    ("text named .nii.gz", text_named_nii_gz, "not a gzip"),
    ("gzipped text named .nii.gz", gzip_of_text_nii_gz, "not a NIfTI file"),
    ("NIfTI rank 1", nifti_rank1, "is 1D (100 values)"),
    ("NIfTI rank 5", nifti_rank5, "is 5D (16x16x8x1x3)"),
    ("NIfTI 4D time series", nifti_time_series, "is 4D (64 volumes); diffrecon reads one 3D volume"),
    ("NIfTI dims far beyond the file", nifti_dims_beyond_file, "header declares 512x512x400 int16"),
    ("NIfTI .nii.gz dims far beyond the file", nifti_gz_dims_beyond_file, "gzip file cannot hold that much"),
    ("NIfTI larger than memory", nifti_too_big_for_memory, "of memory but only"),
    ("NIfTI NaN voxels", nifti_nan, "NaN or infinite"),
    ("NIfTI Inf voxels", nifti_inf, "2 voxels are NaN or infinite"),
    ("NIfTI slices too small", nifti_tiny_slices, "too small"),
    ("NIfTI RGB voxels", nifti_rgb, "colour (RGB) voxels"),
    ("HDF5 without kspace", h5_without_kspace, "no 'kspace' dataset and no 2D or 3D image dataset (found: labels, notes)"),
    ("HDF5 real k-space", h5_real_kspace, "k-space must be complex; dataset 'kspace' is float32"),
    ("HDF5 k-space rank 2", h5_rank2_kspace, "dataset 'kspace' has shape 32x32"),
    ("HDF5 mask length mismatch", h5_mask_mismatch, "mask has 30 entries but k-space has 24 columns"),
    ("HDF5 mask selecting nothing", h5_empty_mask, "selects no k-space samples"),
    ("HDF5 NaN k-space", h5_nan_kspace, "1 k-space sample is NaN or infinite"),
    ("truncated .h5", h5_truncated, "it is truncated ("),
    ("text named .h5", h5_text, "is not an HDF5 file"),
    (".npy with object dtype", npy_object, "holds Python objects; diffrecon never unpickles files"),
    (".npy header beyond the file", npy_header_beyond_file, "header declares 4096x4096x4096 float32"),
    ("text named .npy", npy_text, "not a valid NumPy .npy file"),
    ("1D .npy", npy_1d, "is 1D (50 values)"),
    (".npy of strings", npy_strings, "not numbers"),
    (".npz with several arrays", npz_several, "several arrays (t1, t2, flair); choose one with --key"),
    ("text named .npz", npz_text, "is not a readable .npz archive"),
    ("empty .npz", empty("empty.npz"), "empty"),
    ("truncated .npz", npz_truncated, "truncated or corrupt"),
    ("unknown extension", unknown_extension, "not a format diffrecon reads"),
    ("missing path", missing_path, "no such file"),
]


@pytest.mark.parametrize("builder, mention", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_gives_one_sentence(tmp_path, builder, mention):
    path = builder(tmp_path)
    line = assert_one_sentence_error(run_cli("info", path), mentions=mention)
    assert str(path.name) in line  # the user is told which file


def test_corpus_is_large_enough():
    assert len(CASES) >= 20
