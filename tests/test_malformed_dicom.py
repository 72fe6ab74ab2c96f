"""A corpus of broken DICOM inputs: each must give one sentence, exit 2, no traceback.

Every case is generated here in ``tmp_path`` and run through ``diffrecon info``.
Documented non-errors: a folder holding an unparseable file (or a copy of a slice)
among good slices reads the good slices and records the skipped file in the
metadata. A broken file that *is* a slice of the series (a good header, broken
pixels) is an error naming that file, since dropping it would leave a gap.
The writer's refusals (a folder already holding DICOM, NaN voxels) are here too.
How fast each is refused is a benchmark, not a unit test: ``python tests/time_malformed_dicom.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    MediaStorageDirectoryStorage,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from conftest import assert_one_sentence_error, run_cli
from diffrecon.errors import VolumeWriteError
from diffrecon.io import Volume
from diffrecon.io.dicom import read_dicom, write_dicom_series


def mr_slice(z: float, *, rows: int = 16, cols: int = 16, series_uid: str = "1.2.3.4", number: int = 1,
             description: str = "T1", value: int = 100) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", series_uid
    ds.SeriesNumber, ds.SeriesDescription, ds.Modality = number, description, "MR"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, z], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.full((rows, cols), value, np.uint16).tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def stack(folder: Path, zs, **kwargs) -> Path:
    for i, z in enumerate(zs):
        save(mr_slice(z, value=100 + i, **kwargs), folder / f"s{i:02d}.dcm")
    return folder


def missing_decoder_syntax():
    for syntax in (JPEGLosslessSV1, JPEGLSLossless, HTJ2KLossless, JPEG2000Lossless):
        if not pydicom.pixels.get_decoder(syntax).is_available:
            return syntax
    return None


# ---- the corpus: each builder makes one broken input and names a word the error must use ----


def zero_byte(tmp: Path) -> tuple[Path, str]:
    (tmp / "empty.dcm").write_bytes(b"")
    return tmp / "empty.dcm", "empty"


def truncated(tmp: Path) -> tuple[Path, str]:
    path = save(mr_slice(0.0, rows=64, cols=64), tmp / "cut.dcm")
    path.write_bytes(path.read_bytes()[:-3000])  # header intact, pixel data cut short
    return path, "truncated"


def text_named_dcm(tmp: Path) -> tuple[Path, str]:
    (tmp / "notes.dcm").write_text("Patient scanned on Tuesday; images to follow.\n" * 10)
    return tmp / "notes.dcm", "not a DICOM file"


def dicm_then_garbage(tmp: Path) -> tuple[Path, str]:
    rng = np.random.default_rng(0)
    (tmp / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + rng.bytes(4000))
    return tmp / "garbage.dcm", "not a readable DICOM file"


def structured_report(tmp: Path) -> tuple[Path, str]:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = BasicTextSRStorage, generate_uid(), "SR"
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    return save(ds, tmp / "report.dcm"), "Basic Text SR"


def two_series(tmp: Path) -> tuple[Path, str]:
    stack(tmp / "mixed", [0, 2, 4], series_uid="1.2.3.4.1", number=5, description="AX T1")
    for i, z in enumerate([0, 3, 6, 9]):
        save(mr_slice(z, series_uid="1.2.3.4.2", number=6, description="COR T2"), tmp / "mixed" / f"t{i}.dcm")
    return tmp / "mixed", '6 "COR T2" (4 slices)'


def mixed_sizes(tmp: Path) -> tuple[Path, str]:
    stack(tmp / "sizes", [0, 2, 4])
    save(mr_slice(6, rows=20, cols=16), tmp / "sizes" / "odd.dcm")
    return tmp / "sizes", "different sizes"


def no_dicom_files(tmp: Path) -> tuple[Path, str]:
    (tmp / "docs").mkdir()
    (tmp / "docs" / "README").write_text("nothing to see\n")
    (tmp / "docs" / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    return tmp / "docs", "no DICOM files"


def empty_folder(tmp: Path) -> tuple[Path, str]:
    (tmp / "void").mkdir()
    return tmp / "void", "empty folder"


def short_pixel_data(tmp: Path) -> tuple[Path, str]:
    ds = mr_slice(0.0, rows=32, cols=32)
    ds.PixelData = b"\0" * 200  # a well-formed file whose header promises 2048 bytes
    return save(ds, tmp / "short.dcm"), "2048"


def absurd_size(tmp: Path) -> tuple[Path, str]:
    ds = mr_slice(0.0)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 60000, 60000, 500
    return save(ds, tmp / "huge.dcm"), "GiB"


def nan_float_pixels(tmp: Path) -> tuple[Path, str]:
    ds = mr_slice(0.0)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    image = np.ones((16, 16), np.float32)
    image[3, 4] = np.nan
    ds.FloatPixelData = image.tobytes()
    return save(ds, tmp / "float.dcm"), "NaN"


def compressed_without_decoder(tmp: Path) -> tuple[Path, str]:
    syntax = missing_decoder_syntax()
    if syntax is None:
        pytest.skip("every compressed syntax this test knows has a decoder installed here")
    ds = mr_slice(0.0)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\0" * 64 + b"\xff\xd9"])  # a frame no one will decode
    ds["PixelData"].VR = "OB"
    return save(ds, tmp / "jpeg.dcm"), "pip install"


def missing_slice(tmp: Path) -> tuple[Path, str]:
    return stack(tmp / "gap", [0, 2, 4, 8, 10]), "unevenly spaced"


def two_images_one_position(tmp: Path) -> tuple[Path, str]:
    return stack(tmp / "echoes", [0, 2, 2, 4]), "4 images lie at only 3 slice positions"


def localizer_planes(tmp: Path) -> tuple[Path, str]:
    stack(tmp / "loc", [0, 2])
    ds = mr_slice(4)
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    save(ds, tmp / "loc" / "sag.dcm")
    return tmp / "loc", "different planes"


def only_objects_without_images(tmp: Path) -> tuple[Path, str]:
    structured_report(tmp / "sr")
    return tmp / "sr", "no DICOM images"


def corrupt_slice_in_good_series(tmp: Path) -> tuple[Path, str]:
    stack(tmp / "bad1", [0, 2, 4, 6])
    victim = tmp / "bad1" / "s02.dcm"
    victim.write_bytes(victim.read_bytes()[:-100])
    return tmp / "bad1", "s02.dcm"


CORPUS = [
    zero_byte, truncated, text_named_dcm, dicm_then_garbage, structured_report, two_series, mixed_sizes,
    no_dicom_files, empty_folder, short_pixel_data, absurd_size, nan_float_pixels, compressed_without_decoder,
    missing_slice, two_images_one_position, localizer_planes, only_objects_without_images,
    corrupt_slice_in_good_series,
]


@pytest.mark.parametrize("build", CORPUS, ids=lambda f: f.__name__)
def test_malformed_input_gives_one_sentence(tmp_path, build):
    path, mentions = build(tmp_path)
    assert_one_sentence_error(run_cli("info", path), mentions=mentions)


def test_series_choice_matching_nothing_or_several(tmp_path):
    path, _ = two_series(tmp_path)
    line = assert_one_sentence_error(run_cli("info", path, "--series", "CORONAL"), mentions="no series matching")
    assert '5 "AX T1" (3 slices)' in line
    stack(path / "more", [0, 5], series_uid="1.2.3.4.3", number=7, description="COR T2 FS")
    assert_one_sentence_error(run_cli("info", path, "--series", "cor"), mentions="matches 2 series")


def test_copies_of_a_file_are_skipped_and_recorded(tmp_path):
    folder = stack(tmp_path / "copies", [0, 2, 4])
    (folder / "copy.dcm").write_bytes((folder / "s01.dcm").read_bytes())
    vol = read_dicom(folder)
    np.testing.assert_array_equal(vol.data[:, 0, 0], [100, 101, 102])
    # Files are scanned in name order, so the first name seen is kept.
    assert vol.metadata["skipped_files"] == ["s01.dcm (a copy of another file)"]


def test_writer_refuses_a_folder_holding_dicom_and_nan_voxels(tmp_path):
    vol = Volume(np.ones((3, 16, 16), np.float32), modality="MR")
    write_dicom_series(vol, tmp_path / "once")
    with pytest.raises(VolumeWriteError, match="already holds DICOM files"):
        write_dicom_series(vol, tmp_path / "once")
    with pytest.raises(VolumeWriteError, match="NaN"):
        write_dicom_series(Volume(np.full((2, 16, 16), np.nan, np.float32)), tmp_path / "nan")


def test_unparseable_file_among_good_slices_is_skipped_and_recorded(tmp_path):
    folder = stack(tmp_path / "mostly_good", [0, 2, 4])
    (folder / "zz_broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x13" * 500)
    directory = Dataset()  # what a DICOMDIR looks like to the scan: a DICOM object with no image
    directory.file_meta = FileMetaDataset()
    directory.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    directory.SOPClassUID, directory.SOPInstanceUID = MediaStorageDirectoryStorage, generate_uid()
    save(directory, folder / "DICOMDIR")
    vol = read_dicom(folder)
    assert vol.shape == (3, 16, 16)
    np.testing.assert_array_equal(vol.data[:, 0, 0], [100, 101, 102])
    assert vol.metadata["skipped_file_count"] == 2
    assert sorted(vol.metadata["skipped_files"]) == ["DICOMDIR (Media Storage Directory, no image)",
                                                     "zz_broken.dcm (not DICOM)"]
    assert run_cli("info", folder).code == 0
