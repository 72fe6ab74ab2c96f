"""``diffrecon reconstruct`` writes its outputs on the input's own voxel grid.

Real files are written, the CLI runs on them, and the outputs are read back with the
format's own library (nibabel, pydicom, h5py), not with diffrecon's readers: a tool that
writes back what it read keeps the shape, axis order, affine and header codes.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import make_phantom, run_cli
from test_io_dicom import new_series, oblique_orientation, phantom_counts, write_series


def _denoise(src: Path, out: Path, *extra: str) -> None:
    """The cheapest method on the scan as it is (median filter, no simulation)."""
    result = run_cli("reconstruct", src, "--modality", "denoise", "--method", "median", "--out", out, *extra)
    assert result.code == 0, result.err


def _slice_signature(volume: np.ndarray, axis: int) -> np.ndarray:
    """Mean of every slice along ``axis``: which slice is which survives a median filter."""
    return volume.mean(axis=tuple(a for a in range(volume.ndim) if a != axis))


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray, qcode: int, scode: int,
           sform: np.ndarray | None = None) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine if sform is None else sform, code=scode)
    nib.save(img, str(path))


def _graded(shape: tuple[int, ...], axis: int) -> np.ndarray:
    """A phantom whose slices along ``axis`` have clearly different mean intensities."""
    base = make_phantom(shape[2], shape[0], shape[1]).transpose(1, 2, 0)  # (x, y, z) = shape
    ramp = np.linspace(1.0, 3.0, shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
    return (base * ramp).astype(np.float32)


def test_nifti_output_keeps_shape_axis_order_affine_and_codes(tmp_path):
    data = _graded((128, 128, 8), axis=2)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-57.0, -60.0, -12.0]
    _nifti(tmp_path / "in.nii.gz", data, affine, qcode=1, scode=2)

    _denoise(tmp_path / "in.nii.gz", tmp_path / "out.nii.gz")

    src, out = nib.load(tmp_path / "in.nii.gz"), nib.load(tmp_path / "out.nii.gz")
    assert out.shape == (128, 128, 8)
    np.testing.assert_array_equal(out.affine, src.affine)
    for coded in ("get_qform", "get_sform"):
        (theirs, their_code), (ours, our_code) = (getattr(i.header, coded)(coded=True) for i in (src, out))
        assert our_code == their_code
        np.testing.assert_array_equal(ours, theirs)
    # Same voxels in the same places: slice k of the output is slice k of the input, not flipped.
    got = out.get_fdata()
    np.testing.assert_allclose(_slice_signature(got, 2), _slice_signature(data, 2), rtol=0.05)
    assert np.corrcoef(got[:, :, 3].ravel(), data[:, :, 3].ravel())[0, 1] > 0.9


def test_nifti_slice_selection_stays_on_the_source_grid(tmp_path):
    """--slices 2:6 writes 4 of the 8 slices where they were, with both matrices moved."""
    data = _graded((64, 48, 8), axis=2)
    qform = np.diag([0.9, 0.8, 3.0, 1.0])
    qform[:3, 3] = [-30.0, -20.0, -12.0]
    sform = qform.copy()
    sform[:3, 3] += [0.25, -0.5, 0.0]  # a scanner whose sform differs from its qform
    _nifti(tmp_path / "in.nii", data, qform, qcode=1, scode=1, sform=sform)

    _denoise(tmp_path / "in.nii", tmp_path / "part.nii", "--slices", "2:6")

    out = nib.load(tmp_path / "part.nii")
    assert out.shape == (64, 48, 4)
    shift = np.eye(4)
    shift[2, 3] = 2  # output voxel (i, j, k) is source voxel (i, j, k + 2)
    np.testing.assert_allclose(out.header.get_qform(), qform @ shift, atol=1e-4)
    np.testing.assert_allclose(out.header.get_sform(), sform @ shift, atol=1e-4)
    np.testing.assert_allclose(_slice_signature(out.get_fdata(), 2), _slice_signature(data, 2)[2:6], rtol=0.05)


def test_unevenly_chosen_slices_are_written_where_they_lay(tmp_path):
    """--slices 1,4,5: no affine holds 1, 4 and 5 as consecutive slices; they are written on
    the grid 1..5 with slices 2 and 3 empty, not at 1, 2, 3 (where the affine would put them)."""
    data = _graded((64, 48, 8), axis=2)
    affine = np.diag([0.9, 0.8, 3.0, 1.0])
    affine[:3, 3] = [-30.0, -20.0, -12.0]
    _nifti(tmp_path / "in.nii", data, affine, qcode=1, scode=1)

    _denoise(tmp_path / "in.nii", tmp_path / "part.nii", "--slices", "5,1,4")

    out = nib.load(tmp_path / "part.nii")
    assert out.shape == (64, 48, 5)
    shift = np.eye(4)
    shift[2, 3] = 1  # output voxel (i, j, k) is source voxel (i, j, k + 1)
    np.testing.assert_allclose(out.affine, affine @ shift, atol=1e-4)
    written = _slice_signature(out.get_fdata(), 2)
    np.testing.assert_allclose(written[[0, 3, 4]], _slice_signature(data, 2)[[1, 4, 5]], rtol=0.05)
    assert np.all(written[[1, 2]] == 0)

    _denoise(tmp_path / "in.nii", tmp_path / "dcm", "--slices", "1,4,5")  # DICOM: every position true
    derived = sorted((pydicom.dcmread(p) for p in (tmp_path / "dcm").glob("*.dcm")),
                     key=lambda ds: float(ds.ImagePositionPatient[2]))
    z = [float(ds.ImagePositionPatient[2]) for ds in derived]
    np.testing.assert_allclose(z, -12.0 + 3.0 * np.arange(1, 6), atol=1e-4)
    means = [float(np.mean(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))) for ds in derived]
    np.testing.assert_allclose(np.array(means)[[0, 3, 4]], _slice_signature(data, 2)[[1, 4, 5]], rtol=0.05)
    assert max(abs(means[1]), abs(means[2])) < 1e-3
    # the blank images say they are gaps; the computed ones carry the provenance
    assert [ds.ImageComments.startswith("No image") for ds in derived] == [False, True, True, False, False]


def test_nifti_in_a_permuted_flipped_voxel_order_comes_back_in_that_order(tmp_path):
    """Voxel axes (A->P, S->I... ) as a sagittally stored file has them: kept, not made axial."""
    data = _graded((10, 40, 36), axis=0)
    affine = np.array([[0.0, 0.0, -1.1, 20.0],   # third axis -> towards L
                       [-0.9, 0.0, 0.0, 30.0],   # first axis -> towards P
                       [0.0, 1.2, 0.0, -40.0],   # second axis -> towards S
                       [0.0, 0.0, 0.0, 1.0]])
    _nifti(tmp_path / "sag.nii.gz", data, affine, qcode=2, scode=0)

    _denoise(tmp_path / "sag.nii.gz", tmp_path / "out.nii.gz")

    out = nib.load(tmp_path / "out.nii.gz")
    assert out.shape == data.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    assert (int(out.header["qform_code"]), int(out.header["sform_code"])) == (2, 0)
    # The filter works on axial display slices, so compare patterns, not values: a flip of
    # the ramped axis or a permutation would not correlate.
    assert np.corrcoef(_slice_signature(out.get_fdata(), 0), _slice_signature(data, 0))[0, 1] > 0.95
    assert np.corrcoef(out.get_fdata().ravel(), data.ravel())[0, 1] > 0.9


def test_2d_nifti_stays_2d(tmp_path):
    data = _graded((40, 32, 1), axis=0)[:, :, 0]
    _nifti(tmp_path / "one.nii", data, np.diag([0.7, 0.7, 5.0, 1.0]), qcode=1, scode=1)

    _denoise(tmp_path / "one.nii", tmp_path / "out.nii")

    out = nib.load(tmp_path / "out.nii")
    assert out.shape == (40, 32)
    np.testing.assert_allclose(out.affine, nib.load(tmp_path / "one.nii").affine)


def test_dicom_output_repeats_each_source_slice_geometry(tmp_path):
    """Oblique, unevenly spaced (within the reader's tolerance), shuffled instance numbers:
    every derived image lies exactly where its source slice lay and carries its number."""
    orientation = oblique_orientation()
    normal = np.cross(orientation[:3], orientation[3:])
    src = tmp_path / "src"
    expected = write_series(src, phantom_counts(6, 24, 20), modality="MR", orientation=orientation,
                            slice_step=normal * 2.5, series=new_series(5, "T2 OBL"), seed=3)
    # Nudge two slices off the even grid, as scanners' rounding does.
    for path, nudge in zip(sorted(expected["files"])[:2], (0.12, -0.09)):
        ds = pydicom.dcmread(path)
        position = np.array(ds.ImagePositionPatient, float) + nudge * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.save_as(path, enforce_file_format=True)
    sources = {}
    for path in src.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        sources[ds.SOPInstanceUID] = ds

    _denoise(src, tmp_path / "out")

    derived = [pydicom.dcmread(p) for p in sorted((tmp_path / "out").glob("*.dcm"))]
    assert len(derived) == len(sources)
    for ds in derived:
        source = sources[ds.SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose(np.array(ds.ImagePositionPatient, float),
                                   np.array(source.ImagePositionPatient, float), atol=1e-5)
        np.testing.assert_allclose(np.array(ds.ImageOrientationPatient, float),
                                   np.array(source.ImageOrientationPatient, float), atol=1e-7)
        np.testing.assert_allclose(np.array(ds.PixelSpacing, float), np.array(source.PixelSpacing, float))
        assert (ds.Rows, ds.Columns, ds.InstanceNumber) == (source.Rows, source.Columns, source.InstanceNumber)
        assert ds.FrameOfReferenceUID == source.FrameOfReferenceUID
        # The pixels are that slice's (a median filter keeps each slice's own pattern).
        mine, theirs = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), source.pixel_array
        assert np.corrcoef(mine.ravel(), theirs.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("shape", [(6, 40, 32), (40, 32)], ids=["3d", "2d"])
def test_hdf5_output_keeps_the_input_array_shape_and_geometry(tmp_path, shape):
    data = make_phantom(*((1,) + shape if len(shape) == 2 else shape)).reshape(shape) * 100
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f.create_dataset("image", data=data.astype(np.float32)).attrs["spacing"] = [2.0, 0.8, 0.7]

    _denoise(tmp_path / "in.h5", tmp_path / "out.h5")
    with h5py.File(tmp_path / "out.h5", "r") as f:
        out, affine = f["reconstruction"][()], f["affine"][()]
    assert out.shape == shape
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [2.0, 0.8, 0.7])
    assert np.corrcoef(out.ravel(), data.ravel())[0, 1] > 0.9

    # Written back again, a diffrecon HDF5 output keeps that shape too.
    _denoise(tmp_path / "out.h5", tmp_path / "again.h5")
    with h5py.File(tmp_path / "again.h5", "r") as f:
        assert f["reconstruction"].shape == shape
        np.testing.assert_allclose(f["affine"][()], affine)
