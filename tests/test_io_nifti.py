"""NIfTI reading and writing: display reorientation, geometry, scaling, write-back."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import nibabel.orientations as nio
import numpy as np
import pytest

from conftest import make_phantom, run_cli
from diffrecon.io import Volume, affine_from_spacing, load_volume, save_volume
from diffrecon.io.nifti import read_nifti, write_nifti

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def affine_for(codes: str, zooms=(1.5, 2.0, 3.0), origin=(-40.0, 25.0, 12.0)) -> np.ndarray:
    """An affine whose voxel axes increase towards ``codes`` (e.g. "LAS"), with ``zooms`` mm."""
    ornt = nio.axcodes2ornt(tuple(codes))
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for voxel_axis, (world_axis, flip) in enumerate(ornt):
        affine[int(world_axis), voxel_axis] = flip * zooms[voxel_axis]
    affine[:3, 3] = origin
    return affine


def oblique_affine() -> np.ndarray:
    """LAS-like axes tilted 20 degrees about x, then 10 about z: an oblique acquisition."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rot_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = affine_for("LAS", zooms=(0.9, 1.1, 2.5))
    affine[:3, :3] = rot_z @ rot_x @ affine[:3, :3]
    return affine


def world(affine: np.ndarray, index) -> np.ndarray:
    return (affine @ np.array([*index, 1.0]))[:3]


@pytest.mark.parametrize(
    "name, affine",
    [("LAS", affine_for("LAS")), ("RPI", affine_for("RPI")), ("PSR", affine_for("PSR")), ("oblique", oblique_affine())],
)
def test_reorientation_keeps_every_voxel_at_its_world_position(tmp_path, name, affine):
    shape = (12, 10, 9)
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)  # each voxel unique
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(values, affine), path)

    vol = load_volume(path)

    assert vol.orientation() == ("S", "P", "L")
    assert vol.source_format == "nifti"
    assert np.allclose(vol.spacing, np.linalg.norm(vol.affine[:3, :3], axis=0))
    assert sorted(vol.spacing) == pytest.approx(sorted(np.linalg.norm(affine[:3, :3], axis=0)))
    for index in [(0, 0, 0), (11, 0, 0), (3, 9, 2), (11, 9, 8), (5, 4, 7)]:
        where = np.argwhere(vol.data == values[index])
        assert len(where) == 1
        assert np.allclose(world(vol.affine, where[0]), world(affine, index), atol=1e-6), index


def test_sagittal_psr_file_puts_superior_slices_last(tmp_path):
    # PSR: voxel i -> posterior, j -> superior, k -> right, so slices come from j.
    affine = affine_for("PSR", zooms=(1.0, 4.0, 2.0))
    data = np.zeros((10, 12, 9), np.float32)
    data[:, -1, :] = 7.0  # the most superior sagittal row
    path = tmp_path / "sag.nii"
    nib.save(nib.Nifti1Image(data, affine), path)
    vol = load_volume(path)
    assert vol.shape == (12, 10, 9)
    assert vol.spacing == (4.0, 1.0, 2.0)
    assert np.all(vol.data[-1] == 7.0) and not vol.data[:-1].any()
    # Columns run towards the patient's left: the file's k axis ran towards the right.
    assert vol.affine[0, 2] < 0


def test_written_result_goes_back_in_the_files_voxel_order_and_geometry(tmp_path):
    affine = affine_for("RPI", zooms=(0.8, 0.8, 2.0))
    raw = make_phantom(8, 16, 12).transpose(1, 2, 0)  # (16, 12, 8) in file order
    src = nib.Nifti1Image(raw, affine)
    src.set_qform(affine, code=1)
    src.set_sform(affine, code=4)  # MNI: a code that must survive
    src_path = tmp_path / "src.nii.gz"
    nib.save(src, src_path)

    vol = load_volume(src_path)
    result = vol.derived(vol.data * 2.0)
    written = write_nifti(result, tmp_path / "out.nii.gz", description="diffusion ddim/dds 25 steps")

    out = nib.load(written[0])
    assert written == [tmp_path / "out.nii.gz"]
    assert out.shape == raw.shape
    assert np.allclose(out.get_fdata(), raw * 2.0)
    # Bit for bit the source's (float32-stored) matrices, not a recomputed product.
    assert np.array_equal(out.affine, nib.load(src_path).affine)
    assert np.allclose(out.affine, affine)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 4
    assert out.header["descrip"].item() == b"diffusion ddim/dds 25 steps"
    # And reading the output gives the same display volume back.
    again = load_volume(written[0])
    assert np.allclose(again.data, result.data) and np.allclose(again.affine, vol.affine)


def test_nifti2_files_are_read(tmp_path):
    data = make_phantom(4, 16, 16).T.copy()
    nib.save(nib.Nifti2Image(data, affine_for("LAS")), tmp_path / "v2.nii")
    vol = load_volume(tmp_path / "v2.nii")
    assert vol.metadata["nifti_version"] == 2
    assert vol.shape == (4, 16, 16)
    # Display voxel (0, 0, 0) is the lowest, most anterior, rightmost: file voxel (0, 15, 0).
    assert np.allclose(world(vol.affine, (0, 0, 0)), world(affine_for("LAS"), (0, 15, 0)))
    assert vol.data[0, 0, 0] == data[0, 15, 0]


def test_volume_without_source_geometry_is_written_with_its_own_affine(tmp_path):
    data = make_phantom(5, 16, 20)
    vol = Volume(data, spacing=(3.0, 0.5, 0.7), affine=affine_from_spacing((3.0, 0.5, 0.7)))
    path = tmp_path / "plain.nii"
    save_volume(vol, path)
    back = load_volume(path)
    assert np.array_equal(back.data, data)
    assert np.allclose(back.affine, vol.affine)
    assert back.spacing == pytest.approx((3.0, 0.5, 0.7))
    assert nib.load(path).header.get_xyzt_units()[0] == "mm"


def test_sliced_volume_keeps_world_positions_when_written(tmp_path):
    path = tmp_path / "las.nii.gz"
    nib.save(nib.Nifti1Image(make_phantom(9, 16, 16), affine_for("LAS")), path)
    vol = load_volume(path)
    part = vol.select_slices(slice(2, 6))
    save_volume(part, tmp_path / "part.nii.gz")
    back = load_volume(tmp_path / "part.nii.gz")
    assert np.array_equal(back.data, part.data)
    assert np.allclose(world(back.affine, (0, 3, 5)), world(vol.affine, (2, 3, 5)))


def test_slices_are_placed_on_the_finest_grid_one_affine_describes():
    from diffrecon.io.volume import slice_grid

    assert list(slice_grid([12, 3, 9])) == [3, 6, 9, 12]
    assert list(slice_grid([4])) == [4]
    vol = Volume(make_phantom(9, 8, 8), spacing=(2.5, 1.0, 1.0))
    images = np.stack([np.full((8, 8), v, np.float32) for v in (1.0, 2.0, 3.0)])
    placed = vol.on_slice_grid([7, 1, 3], images)  # uneven: on 1, 3, 5, 7
    assert placed.n_slices == 4
    assert [float(placed.data[k, 0, 0]) for k in range(4)] == [2.0, 3.0, 0.0, 1.0]
    np.testing.assert_allclose(world(placed.affine, (3, 0, 0)), world(vol.affine, (7, 0, 0)))
    even = vol.on_slice_grid([6, 4, 2], images)  # evenly spaced, descending: as chosen, in that order
    np.testing.assert_array_equal(even.data, images)
    np.testing.assert_allclose(even.affine, vol.select_slices([6, 4, 2]).affine)


def test_scaling_is_applied_and_hu_range_guesses_ct(tmp_path):
    stored = np.linspace(0, 2000, 16 * 16 * 4).reshape(16, 16, 4).astype(np.int16)
    img = nib.Nifti1Image(stored, np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "ct.nii.gz"
    nib.save(img, path)
    vol = read_nifti(path)
    assert vol.data.dtype == np.float32
    assert vol.intensity_range() == pytest.approx((-1024.0, 2 * 2000 - 1024.0))
    assert (vol.modality, vol.units) == ("CT", "HU")
    assert "Hounsfield" in vol.metadata["modality_guess"]
    assert vol.metadata["scl_slope"] == 2.0


def test_mr_like_range_stays_ot_unless_the_caller_says(tmp_path):
    path = tmp_path / "mr.nii"
    nib.save(nib.Nifti1Image(make_phantom(4, 16, 16).T * 800, np.eye(4)), path)
    assert read_nifti(path).modality == "OT"
    assert "modality_guess" not in read_nifti(path).metadata
    assert read_nifti(path, modality="MR").modality == "MR"


def test_rank2_is_one_slice_and_singleton_4th_dim_is_dropped(tmp_path):
    image = make_phantom(1, 20, 16)[0]
    nib.save(nib.Nifti1Image(image.T.copy(), affine_for("LPS")), tmp_path / "slice.nii")
    one = load_volume(tmp_path / "slice.nii")
    # File axes run towards L (16) and P (20): the display's columns and rows.
    assert one.shape == (1, 20, 16)
    assert np.array_equal(one.data[0], image)
    assert one.orientation() == ("S", "P", "L")

    vol4 = make_phantom(6, 16, 16).T[..., None]  # (x, y, z, 1)
    nib.save(nib.Nifti1Image(vol4, np.eye(4)), tmp_path / "single.nii.gz")
    assert load_volume(tmp_path / "single.nii.gz").shape == (6, 16, 16)


def test_a_lone_sagittal_slice_is_shown_as_a_sagittal_image(tmp_path):
    data = make_phantom(1, 24, 20)[0].T[None].copy()  # (1, 20, 24): one voxel along x
    path = tmp_path / "sag1.nii"
    nib.save(nib.Nifti1Image(data, affine_for("RAS")), path)
    vol = load_volume(path)
    # Rows run head to feet, columns front to back.
    assert vol.shape == (1, 24, 20)
    assert vol.orientation()[1:] == ("I", "P")


def test_units_in_metres_become_millimetres(tmp_path):
    img = nib.Nifti1Image(make_phantom(4, 16, 16).T, np.diag([0.001, 0.001, 0.003, 1.0]))
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "m.nii")
    assert load_volume(tmp_path / "m.nii").spacing == pytest.approx((3.0, 1.0, 1.0))


def test_provenance_sidecar_and_long_description(tmp_path):
    vol = Volume(make_phantom(3, 16, 16))
    long_text = "ü" * 60  # 120 bytes of UTF-8
    written = save_volume(vol, tmp_path / "r.nii.gz", provenance={"model": "ddpm", "steps": 25}, description=long_text)
    assert written == [tmp_path / "r.nii.gz", tmp_path / "r.json"]
    recorded = json.loads((tmp_path / "r.json").read_text())
    assert recorded.pop("threads")["torch_threads"] == 1  # save_volume adds the thread settings
    assert recorded == {"Modality": "OT", "model": "ddpm", "steps": 25}
    descrip = nib.load(written[0]).header["descrip"].item()
    assert len(descrip) == 80 and descrip.decode("utf-8") == "ü" * 40


def test_header_without_qform_or_sform_round_trips(tmp_path):
    img = nib.Nifti1Image(make_phantom(5, 16, 12).T, np.diag([2.0, 2.0, 2.0, 1.0]))
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, tmp_path / "nogeo.nii")
    vol = load_volume(tmp_path / "nogeo.nii")
    assert "geometry_note" in vol.metadata
    save_volume(vol, tmp_path / "nogeo_out.nii")
    back = load_volume(tmp_path / "nogeo_out.nii")
    assert np.array_equal(back.data, vol.data) and np.allclose(back.affine, vol.affine)


def test_cli_info_describes_a_nifti(tmp_path):
    path = tmp_path / "las.nii.gz"
    nib.save(nib.Nifti1Image(make_phantom(6, 16, 16).T, affine_for("LAS")), path)
    result = run_cli("info", path)
    assert result.code == 0, result.err
    assert "nifti" in result.out and "SPL" in result.out
    assert "K-space" in result.out and "no" in result.out.split("K-space")[1].splitlines()[0]


@pytest.mark.skipif(not COLIN27.exists(), reason="Colin27 template (mricron) not installed")
def test_colin27_brain_comes_out_axial_radiological():
    vol = load_volume(COLIN27)
    assert vol.orientation() == ("S", "P", "L")
    assert vol.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert vol.shape == (181, 217, 181)
    assert vol.modality == "OT"
    # The head is in the middle of the field of view, the corners are air.
    assert vol.data[90, 108, 90] > vol.data[90, 2, 2]


def test_modality_round_trips_through_the_bids_sidecar(tmp_path):
    """NIfTI has no modality field: the JSON sidecar's BIDS 'Modality' carries it."""
    vol = Volume(make_phantom(3, 16, 16), affine=affine_from_spacing((1.0, 1.0, 1.0)), modality="MR")
    save_volume(vol, tmp_path / "mr.nii.gz")
    assert json.loads((tmp_path / "mr.json").read_text())["Modality"] == "MR"
    assert load_volume(tmp_path / "mr.nii.gz").modality == "MR"
    (tmp_path / "mr.json").write_text("not json")
    assert load_volume(tmp_path / "mr.nii.gz").modality == "OT"
