"""DICOM reading and derived-series writing, on real series written with pydicom.

Every series here is written file by file with shuffled file names and shuffled
InstanceNumbers, so that only sorting by ImagePositionPatient puts slices in order.
Expected geometry is checked against the DICOM standard's own pixel-position formula
(PS3.3 C.7.6.2.1.1), applied to each file's header.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from conftest import assert_one_sentence_error, make_phantom, run_cli
from diffrecon.errors import VolumeReadError
from diffrecon.io import Volume, affine_from_spacing, load_volume, save_volume
from diffrecon.io.dicom import SeriesInfo, list_series, read_dicom, write_dicom_series

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
FLIP = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS


def oblique_orientation() -> tuple[float, ...]:
    """Row and column directions of a plane tilted about two axes."""
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    return (*rot[:, 0], *rot[:, 1])


def image_dataset(pixels: np.ndarray, *, modality: str, series: dict, position, orientation, pixel_spacing,
                  instance: int, slope: float | None = None, intercept: float | None = None,
                  photometric: str = "MONOCHROME2") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P123", "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = series["study"], "20240131", "101500"
    ds.SeriesInstanceUID, ds.SeriesNumber = series["uid"], series["number"]
    ds.SeriesDescription, ds.FrameOfReferenceUID = series["description"], series["frame_of_reference"]
    ds.Modality = modality
    ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.SliceThickness = "2.5"
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    ds.WindowCenter, ds.WindowWidth = ["40", "400"], ["400", "1500"]  # multi-valued: the first counts
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    bits = 12 if pixels.dtype == np.uint16 else 16  # unsigned slices use 12 of their 16 bits, as CT does
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0 if pixels.dtype == np.uint16 else 1
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def new_series(number: int, description: str) -> dict:
    return {"uid": generate_uid(), "study": "1.2.826.0.1.3680043.8.498.1", "number": number,
            "description": description, "frame_of_reference": "1.2.826.0.1.3680043.8.498.2"}


def write_series(folder: Path, stored: np.ndarray, *, modality: str = "MR", orientation=AXIAL,
                 origin=(-80.0, -90.0, 30.0), pixel_spacing=(0.8, 0.7), slice_step=None, slopes=None,
                 intercept: float = 0.0, photometric: str = "MONOCHROME2", series: dict | None = None,
                 seed: int = 0, positions: bool = True, compress: bool = False) -> dict:
    """One file per slice, in shuffled file-name and InstanceNumber order; returns what a reader should give.

    ``stored[i]`` is the slice at position ``origin + i * slice_step`` (LPS).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series = series or new_series(7, "T1 AX")
    n = stored.shape[0]
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    step = np.cross(row_dir, col_dir) * 2.5 if slice_step is None else np.asarray(slice_step, float)
    rng = np.random.default_rng(seed)
    names, instances = rng.permutation(n), rng.permutation(n) + 1
    files = []
    for i in range(n):
        slope = None if slopes is None else slopes[i]
        ds = image_dataset(stored[i], modality=modality, series=series,
                           position=np.asarray(origin) + i * step if positions else None,
                           orientation=orientation, pixel_spacing=pixel_spacing, instance=int(instances[i]),
                           slope=slope, intercept=None if slope is None else intercept, photometric=photometric)
        if compress:
            ds.compress(RLELossless, encoding_plugin="pydicom")
        path = folder / f"IM_{names[i]:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    slopes_arr = np.ones(n) if slopes is None else np.asarray(slopes, float)
    expected = stored.astype(np.float64) * slopes_arr[:, None, None] + (intercept if slopes is not None else 0.0)
    return {"data": expected, "files": files, "series": series, "step": step, "origin": np.asarray(origin)}


def dicom_pixel_position(path: Path, row: int, col: int) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1: where pixel (row, col) of a file lies, in RAS+ mm."""
    ds = pydicom.dcmread(path)
    ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return FLIP @ (ipp + iop[:3] * dc * col + iop[3:] * dr * row)


def assert_geometry_matches_files(vol: Volume, files: list[Path]) -> None:
    """Each slice's corner pixels are where its own file's header says they are."""
    for path in files:
        ds = pydicom.dcmread(path)
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        image = ds.pixel_array.astype(np.float64) * slope + intercept
        index = int(np.argmin([np.abs(vol.data[i] - image).max() for i in range(vol.n_slices)]))
        for row, col in ((0, 0), (vol.shape[1] - 1, 3), (5, vol.shape[2] - 1)):
            got = vol.affine @ np.array([index, row, col, 1.0])
            np.testing.assert_allclose(got[:3], dicom_pixel_position(path, row, col), atol=1e-4)


def phantom_counts(n: int = 6, rows: int = 24, cols: int = 20, top: int = 4000) -> np.ndarray:
    """Stored integers with a different pattern on every slice, so slice order is checkable."""
    vol = make_phantom(n, rows, cols) * top
    vol += np.arange(n)[:, None, None] * 7  # each slice distinct even where the phantom repeats
    return vol.astype(np.uint16)


def test_ct_series_sorted_by_position_with_hu_and_window(tmp_path):
    stored = phantom_counts()
    truth = write_series(tmp_path / "ct", stored, modality="CT", slopes=[1.0] * 6, intercept=-1024.0)
    vol = load_volume(tmp_path / "ct")
    assert vol.data.dtype == np.float32 and vol.modality == "CT" and vol.units == "HU"
    np.testing.assert_array_equal(vol.data, truth["data"])  # slice order = position order
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert vol.orientation() == ("S", "P", "L")
    assert vol.window == (40.0, 400.0)
    np.testing.assert_allclose(np.linalg.norm(vol.affine[:3, :3], axis=0), vol.spacing)
    assert_geometry_matches_files(vol, truth["files"])
    meta = vol.metadata
    assert meta["series_uid"] == truth["series"]["uid"] and meta["series_number"] == 7
    assert meta["patient_id"] == "P123" and meta["study_date"] == "20240131"
    assert meta["frame_of_reference_uid"] == truth["series"]["frame_of_reference"]
    assert meta["slice_order"] == "position"
    json.dumps(meta)  # metadata must be JSON-able


def test_per_slice_rescale_applied(tmp_path):
    stored = phantom_counts()
    slopes = [0.5, 1.0, 1.5, 2.0, 0.25, 3.0]
    truth = write_series(tmp_path / "s", stored, slopes=slopes, intercept=-10.0)
    vol = read_dicom(tmp_path / "s")
    np.testing.assert_allclose(vol.data, truth["data"], rtol=1e-6)
    assert vol.units == "a.u."  # MR: no physical unit


def test_oblique_and_tilted_geometry(tmp_path):
    orientation = oblique_orientation()
    normal = np.cross(orientation[:3], orientation[3:])
    # A tilted CT gantry: the stack is sheared, slice step not along the normal.
    step = normal * 3.0 + np.array(orientation[3:]) * 0.4
    truth = write_series(tmp_path / "o", phantom_counts(), orientation=orientation, slice_step=step,
                         origin=(12.5, -40.25, 77.0))
    vol = read_dicom(tmp_path / "o")
    np.testing.assert_array_equal(vol.data, truth["data"])
    np.testing.assert_allclose(vol.affine[:3, 0], FLIP @ step, atol=1e-5)
    assert vol.spacing[0] == pytest.approx(np.linalg.norm(step), abs=1e-5)
    assert_geometry_matches_files(vol, truth["files"])


def test_monochrome1_is_inverted_to_look_like_monochrome2(tmp_path):
    stored = phantom_counts(top=4000)  # 12 bits stored: 0..4095
    write_series(tmp_path / "m1", stored, photometric="MONOCHROME1")
    vol = read_dicom(tmp_path / "m1")
    np.testing.assert_array_equal(vol.data, 4095.0 - stored)
    assert vol.window == (4095.0 - 40.0, 400.0)


def test_no_positions_falls_back_to_instance_number(tmp_path):
    stored = phantom_counts()
    truth = write_series(tmp_path / "np", stored, positions=False)
    vol = read_dicom(tmp_path / "np")
    by_instance = {int(pydicom.dcmread(f).InstanceNumber): i for i, f in enumerate(truth["files"])}
    order = [by_instance[k] for k in sorted(by_instance)]
    np.testing.assert_array_equal(vol.data, stored[order].astype(np.float32))
    assert vol.metadata["slice_order"].startswith("instance number")


def test_rle_compressed_series_decodes_exactly(tmp_path):
    stored = phantom_counts()
    truth = write_series(tmp_path / "rle", stored, compress=True)
    assert pydicom.dcmread(truth["files"][0]).file_meta.TransferSyntaxUID == RLELossless
    vol = read_dicom(tmp_path / "rle")
    np.testing.assert_array_equal(vol.data, truth["data"])
    assert vol.metadata["transfer_syntax"] == "RLE Lossless"


def enhanced_dataset(stored: np.ndarray, frame_order: np.ndarray, slopes: np.ndarray) -> Dataset:
    """An Enhanced MR object whose frames are stored out of position order."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = generate_uid(), generate_uid(), 12
    ds.Modality, ds.SeriesDescription = "MR", "enhanced sag"
    orientation = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal
    shared = Dataset()
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = ["0.9", "1.1"], "2.0"
    plane.ImageOrientationPatient = list(orientation)
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([measures]), Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for position_index in frame_order:
        item, pos, rescale = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [-20.0 + 2.0 * float(position_index), 10.0, 50.0]
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = f"{slopes[position_index]:g}", "5", "US"
        item.PlanePositionSequence, item.PixelValueTransformationSequence = Sequence([pos]), Sequence([rescale])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = len(frame_order)
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(stored[frame_order]).tobytes()
    return ds


def test_enhanced_multiframe_uses_per_frame_geometry_and_rescale(tmp_path):
    stored = phantom_counts(5, 20, 24)
    frame_order = np.array([3, 0, 4, 1, 2])
    slopes = np.array([1.0, 2.0, 0.5, 1.5, 3.0])
    path = tmp_path / "enhanced.dcm"
    enhanced_dataset(stored, frame_order, slopes).save_as(path, enforce_file_format=True)
    vol = read_dicom(path)
    # The slice normal (row x column direction) points to patient right (-x in LPS), so
    # the frame with the largest x comes first.
    by_normal = np.arange(5)[::-1]
    np.testing.assert_allclose(vol.data, (stored * slopes[:, None, None] + 5.0)[by_normal], rtol=1e-6)
    assert vol.spacing == pytest.approx((2.0, 0.9, 1.1))
    assert vol.orientation() == ("R", "I", "P")
    np.testing.assert_allclose(vol.affine[:3, 3], FLIP @ np.array([-12.0, 10.0, 50.0]))
    sources = vol.metadata["dicom_source"]["source_images"]
    assert [s[2] for s in sources] == [int(np.where(frame_order == k)[0][0]) + 1 for k in by_normal]


def test_single_file_loads_that_slice_only(tmp_path):
    truth = write_series(tmp_path / "s", phantom_counts())
    one = sorted(truth["files"])[0]
    vol = load_volume(one)
    assert vol.shape == (1, 24, 20)
    assert vol.spacing[0] == pytest.approx(2.5)  # from SliceThickness: one slice has no neighbours


def two_series_folder(tmp_path: Path) -> tuple[Path, dict, dict]:
    folder = tmp_path / "study"
    t1 = write_series(folder / "a", phantom_counts(6), series=new_series(3, "T1 AX"), seed=1)
    t2 = write_series(folder / "b", phantom_counts(4) + 100, series=new_series(4, "T2 FLAIR"), seed=2)
    (folder / "README.txt").write_text("exported by a PACS\n")
    return folder, t1, t2


def test_two_series_need_a_choice_and_list_them(tmp_path):
    folder, t1, t2 = two_series_folder(tmp_path)
    with pytest.raises(VolumeReadError) as err:
        read_dicom(folder)
    message = str(err.value)
    assert '3 "T1 AX" (6 slices)' in message and '4 "T2 FLAIR" (4 slices)' in message and "--series" in message
    infos = list_series(folder)
    assert [(s.number, s.description, s.n_slices, s.rows, s.cols) for s in infos] == [
        (3, "T1 AX", 6, 24, 20), (4, "T2 FLAIR", 4, 24, 20)]
    assert isinstance(infos[0], SeriesInfo) and infos[1].uid == t2["series"]["uid"]


@pytest.mark.parametrize("choice", ["4", "t2", "T2 FLAIR", "uid"])
def test_series_chosen_by_number_description_or_uid(tmp_path, choice):
    folder, t1, t2 = two_series_folder(tmp_path)
    vol = read_dicom(folder, series=t2["series"]["uid"] if choice == "uid" else choice)
    np.testing.assert_array_equal(vol.data, t2["data"])
    assert len(vol.metadata["series_available"]) == 2
    assert vol.metadata["skipped_files"] == ["README.txt (not DICOM)"]


def test_info_cli_on_a_series(tmp_path):
    folder, _, _ = two_series_folder(tmp_path)
    out = run_cli("info", folder, "--series", "3")
    assert out.code == 0, out.err
    assert "6 x 24 x 20" in out.out and "2.5 x 0.8 x 0.7 mm" in out.out and "MR" in out.out
    assert "T1 AX" in out.out
    assert_one_sentence_error(run_cli("info", folder), mentions="--series")


# ---- writing a derived series ------------------------------------------------------------


def within_quantisation(readback: np.ndarray, original: np.ndarray, folder: Path) -> None:
    slope = float(pydicom.dcmread(folder / "IM00001.dcm").RescaleSlope)
    tolerance = slope / 2 + 1e-6 * float(np.abs(original).max())
    assert np.abs(readback - original).max() <= tolerance


def test_derived_series_from_dicom_keeps_study_and_references_sources(tmp_path):
    truth = write_series(tmp_path / "src", phantom_counts(), orientation=oblique_orientation(), origin=(3.0, 4.0, 5.0))
    source = read_dicom(tmp_path / "src")
    result = source.derived(source.data * 0.37 + 1.25)  # a float "reconstruction"
    files = save_volume(result, tmp_path / "out", provenance={"method": "ddim", "steps": 25},
                        description="diffrecon diffusion ddim/dds 25 steps")
    assert [f.name for f in files] == [f"IM{i:05d}.dcm" for i in range(1, 7)] + ["provenance.json"]
    back = read_dicom(tmp_path / "out")
    within_quantisation(back.data, result.data, tmp_path / "out")
    np.testing.assert_allclose(back.affine, source.affine, atol=1e-4)
    first = pydicom.dcmread(files[0])
    assert first.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and first.SOPClassUID == MRImageStorage
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"]
    assert first.SeriesInstanceUID != truth["series"]["uid"]
    assert first.StudyInstanceUID == truth["series"]["study"]
    assert first.FrameOfReferenceUID == truth["series"]["frame_of_reference"]
    assert str(first.PatientName) == "Test^Phantom" and first.PatientID == "P123"
    assert first.SeriesDescription == "diffrecon diffusion ddim/dds 25 steps"
    assert first.SoftwareVersions.startswith("diffrecon ")
    comments = json.loads(first.ImageComments)
    comments.pop("threads")
    assert comments == {"method": "ddim", "steps": 25}
    recorded = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert recorded.pop("threads")["torch_threads"] == 1  # save_volume adds the thread settings
    assert recorded == {"method": "ddim", "steps": 25}
    # Each derived slice references the source image at its own position.
    def position(ds: Dataset) -> tuple[float, ...]:
        return tuple(np.round(np.array(ds.ImagePositionPatient, float), 3))

    source_sop = {position(ds): ds.SOPInstanceUID for ds in map(pydicom.dcmread, truth["files"])}
    for ds in map(pydicom.dcmread, files[:-1]):
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == source_sop[position(ds)]


def test_plain_volume_round_trip_gets_a_new_study(tmp_path):
    data = make_phantom(5, 32, 28) * 3.7 - 0.4
    vol = Volume(data, spacing=(3.0, 0.9, 1.1), affine=affine_from_spacing((3.0, 0.9, 1.1)), modality="MR")
    write_dicom_series(vol, tmp_path / "plain", provenance=None, description=None)
    back = read_dicom(tmp_path / "plain")
    within_quantisation(back.data, data, tmp_path / "plain")
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    assert back.spacing == pytest.approx(vol.spacing)
    ds = pydicom.dcmread(tmp_path / "plain" / "IM00001.dcm")
    assert "SourceImageSequence" not in ds and "ImageComments" not in ds and ds.StudyInstanceUID
    assert not (tmp_path / "plain" / "provenance.json").exists()


def test_ct_round_trip_in_whole_hu_as_int16(tmp_path):
    data = (make_phantom(4, 24, 24) * 1400 - 1000).astype(np.float32) + 0.3
    vol = Volume(data, spacing=(1.0, 0.5, 0.5), affine=affine_from_spacing((1.0, 0.5, 0.5)), modality="CT", units="HU")
    write_dicom_series(vol, tmp_path / "ct", provenance={"x": 1}, description="ct")
    ds = pydicom.dcmread(tmp_path / "ct" / "IM00001.dcm")
    assert ds.SOPClassUID == CTImageStorage and ds.PixelRepresentation == 1 and float(ds.RescaleSlope) == 1.0
    back = read_dicom(tmp_path / "ct")
    assert back.units == "HU" and back.modality == "CT"
    np.testing.assert_array_equal(back.data, np.rint(data))


def test_secondary_capture_for_ot_and_integer_data_exact(tmp_path):
    data = np.arange(4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16)
    vol = Volume(data, affine=affine_from_spacing((1.0, 1.0, 1.0)), modality="OT")
    write_dicom_series(vol, tmp_path / "ot")
    back = read_dicom(tmp_path / "ot")
    np.testing.assert_array_equal(back.data, data)
    assert back.modality == "OT"


def test_slice_axis_against_the_normal_reads_back_reversed(tmp_path):
    affine = affine_from_spacing((2.0, 1.0, 1.0))
    affine[:3, 0] *= -1  # slices go inferior while rows x cols points superior
    data = make_phantom(4, 16, 16) + np.arange(4)[:, None, None]
    vol = Volume(data.astype(np.float32), spacing=(2.0, 1.0, 1.0), affine=affine, modality="MR")
    write_dicom_series(vol, tmp_path / "rev")
    back = read_dicom(tmp_path / "rev")
    within_quantisation(back.data, data[::-1], tmp_path / "rev")
    # Same voxels at the same places: the last slice of the input is the first read back.
    np.testing.assert_allclose(back.affine @ [0, 5, 7, 1], vol.affine @ [3, 5, 7, 1], atol=1e-4)


def test_long_provenance_is_cut_to_valid_json(tmp_path):
    provenance = {"method": "dps", "version": "0.1.0", "settings": {"notes": "x" * 5000}, "seed": 3}
    write_dicom_series(Volume(make_phantom(2, 16, 16), modality="MR"), tmp_path / "p", provenance=provenance)
    comment = json.loads(pydicom.dcmread(tmp_path / "p" / "IM00001.dcm").ImageComments)
    assert comment == {"full_provenance": "provenance.json", "method": "dps", "version": "0.1.0", "seed": 3}
    assert json.loads((tmp_path / "p" / "provenance.json").read_text()) == provenance


def test_ultrasound_rgb_becomes_luminance_with_region_calibration(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.6.1", generate_uid()  # US Image Storage
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "US"
    region = Dataset()
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 3, 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.02, 0.03
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 24, 32, 3, "RGB"
    ds.PlanarConfiguration, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 0, 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(tmp_path / "us.dcm", enforce_file_format=True)
    vol = read_dicom(tmp_path / "us.dcm")
    assert vol.modality == "US" and vol.shape == (1, 24, 32)
    assert vol.spacing[1:] == pytest.approx((0.3, 0.2))
    np.testing.assert_allclose(vol.data[0], rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-3)


def test_raw_dataset_without_preamble_is_read(tmp_path):
    """Old exports omit the 128-byte preamble and file meta: a bare Implicit VR dataset."""
    truth = write_series(tmp_path / "src", phantom_counts(2))
    ds = pydicom.dcmread(truth["files"][0])
    expected = ds.pixel_array
    del ds.file_meta
    ds.preamble = None
    pydicom.dcmwrite(tmp_path / "raw.dcm", ds, implicit_vr=True, little_endian=True)
    assert (tmp_path / "raw.dcm").read_bytes()[:2] == b"\x08\x00"
    np.testing.assert_array_equal(read_dicom(tmp_path / "raw.dcm").data[0], expected)
