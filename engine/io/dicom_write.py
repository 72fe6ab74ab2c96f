"""Write a volume as a *derived* DICOM series: one file per slice, new series, same study.

A reconstruction of a DICOM scan is filed beside its source: the same patient,
study and frame of reference, a new SeriesInstanceUID, ImageType DERIVED\\SECONDARY
and a SourceImageSequence pointing at the source slice each image came from. A
volume from anywhere else (NIfTI, NumPy, fastMRI) gets a new study.

Intensities are stored as 16-bit integers with a RescaleSlope/Intercept chosen so
that reading back gives the float data within slope/2: CT in HU is stored as int16
whole HU (slope 1); anything else is spread over the full uint16 range unless it is
already integer-valued and fits (then slope 1, exact).

Geometry comes from the volume's affine; a slice lying where a slice of its DICOM source
lay repeats that slice's own ImagePositionPatient and InstanceNumber (and the series its
orientation and pixel spacing), so the derived series matches the source slice by slice
even where the source's positions stray from an even grid. A reader (this one included) orders slices
by position along the normal ``row direction x column direction``; when the volume's
slice axis points the other way, reading back returns the slices in reverse order
(the same voxels at the same places, with the slice axis of the affine flipped).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from .. import __version__
from ..errors import VolumeWriteError
from .sidecar import jsonable, write_json
from .volume import SLICES_WITH_DATA, Volume

_STORAGE = {"MR": MRImageStorage, "CT": CTImageStorage}
_UINT16_TOP = 65535
# ImageComments holds a short JSON copy of the provenance; the full one is the sidecar.
_COMMENT_LIMIT = 1024
_SIDECAR = "provenance.json"


#: ImageComments of a blank image between unevenly chosen slices
GAP_COMMENT = "No image: diffrecon computed no slice here (a gap between the slices chosen)"


def _ds(value: float) -> str:
    """A number as a DICOM decimal string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def _ds_ceil(value: float) -> float:
    """The smallest DS-representable number not below ``value`` (to about 1e-10)."""
    text = _ds(value)
    if float(text) < value:
        text = _ds(value * (1 + 1e-9) if value > 0 else value * (1 - 1e-9))
    return float(text)


def choose_storage(data: np.ndarray, modality: str, units: str) -> tuple[np.ndarray, float, float]:
    """Integer pixels and the (slope, intercept) that turn them back into ``data``.

    Reading back ``stored * slope + intercept`` is within ``slope / 2`` of ``data``;
    slope and intercept are exactly what their DS strings say.
    """
    if modality == "CT" and units == "HU":
        whole = np.rint(data)
        if whole.min() >= -32768 and whole.max() <= 32767:
            return whole.astype(np.int16), 1.0, 0.0
    lo, hi = float(data.min()), float(data.max())
    if np.array_equal(data, np.rint(data)):
        if lo >= 0 and hi <= _UINT16_TOP:
            return data.astype(np.uint16), 1.0, 0.0
        if lo >= -32768 and hi <= 32767:
            return data.astype(np.int16), 1.0, 0.0
    intercept = float(_ds(lo))
    slope = _ds_ceil((hi - intercept) / _UINT16_TOP) if hi > intercept else 1.0
    stored = np.clip(np.rint((data - intercept) / slope), 0, _UINT16_TOP).astype(np.uint16)
    return stored, slope, intercept


def plane_geometry(affine: np.ndarray, n_slices: int) -> dict[str, Any]:
    """ImageOrientation/Position, PixelSpacing and slice spacing (LPS) from a RAS+ affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, float)
    slice_step, row_step, col_step = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    row_mm, col_mm, slice_mm = (float(np.linalg.norm(v)) for v in (row_step, col_step, slice_step))
    if min(row_mm, col_mm, slice_mm) < 1e-9:
        raise ValueError("the volume's affine has a zero-length axis")
    along_row, along_col = col_step / col_mm, row_step / row_mm
    if abs(float(along_row @ along_col)) > 1e-4:
        raise ValueError("the volume's affine shears the image plane, which DICOM cannot describe")
    normal = np.cross(along_row, along_col)
    return {
        "orientation": [*along_row, *along_col],
        "pixel_spacing": [row_mm, col_mm],
        "positions": [lps[:3, 3] + i * slice_step for i in range(n_slices)],
        "spacing_between": abs(float(slice_step @ normal)),
    }


def provenance_comment(provenance: dict[str, Any]) -> str:
    """A short, always valid JSON copy of ``provenance`` for ImageComments."""
    full = json.dumps(provenance, default=jsonable, separators=(",", ":"), ensure_ascii=False)
    if len(full) <= _COMMENT_LIMIT:
        return full
    # Too long: keep the short top-level facts, and say where the rest is.
    short: dict[str, Any] = {"full_provenance": _SIDECAR}
    for key, value in provenance.items():
        trial = {**short, key: value}
        if isinstance(value, (str, int, float, bool)) or value is None:
            text = json.dumps(trial, default=jsonable, separators=(",", ":"), ensure_ascii=False)
            if len(text) <= _COMMENT_LIMIT:
                short = trial
    return json.dumps(short, default=jsonable, separators=(",", ":"), ensure_ascii=False)


def _prepare_folder(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise VolumeWriteError(out_dir, "is a file, not a folder for a DICOM series")
    if out_dir.is_dir() and any(p.suffix.lower() == ".dcm" for p in out_dir.iterdir()):
        # Two series mixed in one folder would make the folder ambiguous to read.
        raise VolumeWriteError(
            out_dir, "already holds DICOM files; choose a new or empty folder for the derived series"
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def _source_slice(source: dict[str, Any], position: np.ndarray) -> int | None:
    """Index of the source slice at ``position`` (LPS, on the source's even grid), if any."""
    for index, where in enumerate(source.get("slice_positions_lps", [])):
        if np.linalg.norm(np.asarray(where) - position) < 0.01:
            return index
    return None


def _source_references(source: dict[str, Any], index: int) -> Sequence | None:
    """SourceImageSequence for source slice ``index``, when it has a SOP instance."""
    images = source.get("source_images", [])
    if index >= len(images):
        return None
    sop_class, sop_uid, frame = images[index]
    if not sop_uid:
        return None
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    if frame is not None:
        item.ReferencedFrameNumber = int(frame)
    return Sequence([item])


def _per_source(source: dict[str, Any], key: str, index: int | None) -> Any:
    values = source.get(key) or []
    if key == "instance_numbers" and (None in values or len(set(values)) != len(values)):
        return None  # frames of one multi-frame file share its number: number the images afresh
    return values[index] if index is not None and index < len(values) else None


def _source_plane(source: dict[str, Any], geometry: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Orientation and pixel spacing as the source states them, when the volume keeps its plane."""
    orientation, spacing = geometry["orientation"], geometry["pixel_spacing"]
    theirs = source.get("orientation")
    if theirs is not None and np.allclose(theirs, orientation, atol=1e-4):
        orientation = theirs
    theirs = source.get("pixel_spacing")
    if theirs is not None and np.allclose(theirs, spacing, rtol=1e-5, atol=1e-6):
        spacing = theirs
    return list(orientation), list(spacing)


def _shared_header(volume: Volume, description: str | None, source: dict[str, Any]) -> Dataset:
    """The tags every slice of the derived series shares."""
    tags: dict[str, str] = source.get("tags", {})
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: descriptions and names may be any language
    ds.SOPClassUID = _STORAGE.get(volume.modality, SecondaryCaptureImageStorage)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, tags.get(keyword, ""))  # type 2: present even when empty
    for keyword in ("PatientAge", "StudyDescription", "BodyPartExamined", "PatientPosition"):
        if tags.get(keyword):
            setattr(ds, keyword, tags[keyword])
    ds.StudyInstanceUID = tags.get("StudyInstanceUID") or generate_uid()
    ds.StudyDate = tags.get("StudyDate", date if not source else "")
    ds.StudyTime = tags.get("StudyTime", time if not source else "")
    ds.StudyID = tags.get("StudyID", "")
    ds.AccessionNumber = tags.get("AccessionNumber", "")
    ds.ReferringPhysicianName = tags.get("ReferringPhysicianName", "")
    ds.Modality = volume.modality
    ds.SeriesInstanceUID = generate_uid()
    source_number = tags.get("SeriesNumber", "")
    ds.SeriesNumber = int(source_number) + 1000 if source_number.lstrip("-").isdigit() else 1000
    ds.SeriesDescription = (description or "diffrecon derived")[:64]
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.FrameOfReferenceUID = tags.get("FrameOfReferenceUID") or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "diffrecon"
    ds.SoftwareVersions = f"diffrecon {__version__}"
    ds.DerivationDescription = (description or "processed by diffrecon")[:1024]
    if volume.modality == "MR":  # type 1 in the MR Image module: the source's, or "research mode"
        ds.ScanningSequence = tags.get("ScanningSequence", "RM")
        ds.SequenceVariant = tags.get("SequenceVariant", "NONE")
        for keyword in ("ScanOptions", "MRAcquisitionType", "EchoTime", "RepetitionTime"):
            setattr(ds, keyword, tags.get(keyword, ""))
    elif volume.modality == "CT":
        ds.KVP = tags.get("KVP", "")
    else:
        ds.ConversionType = "WSD"  # Secondary Capture: made on a workstation
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    return ds


def write_dicom_series(
    volume: Volume,
    out_dir: Path,
    provenance: dict[str, Any] | None = None,
    description: str | None = None,
) -> list[Path]:
    """Write ``volume`` as a derived series ``out_dir/IM00001.dcm ...``; return the files written.

    ``provenance`` (settings, model, version) goes into ``provenance.json`` beside
    the images and, shortened, into each image's ImageComments.
    """
    out_dir = Path(out_dir)
    data = np.abs(volume.data) if np.iscomplexobj(volume.data) else np.asarray(volume.data)
    data = data.astype(np.float64)
    if not np.all(np.isfinite(data)):
        raise VolumeWriteError(out_dir, "the volume has NaN or infinite voxels, which DICOM cannot store")
    n, rows, cols = data.shape
    if max(rows, cols) > 65535:
        raise VolumeWriteError(out_dir, f"slices of {rows}x{cols} pixels are larger than DICOM allows (65535)")
    try:
        geometry = plane_geometry(volume.affine, n)
    except ValueError as exc:
        raise VolumeWriteError(out_dir, str(exc)) from None
    stored, slope, intercept = choose_storage(data, volume.modality, volume.units)
    source = volume.metadata.get("dicom_source") if volume.source_format == "dicom" else None
    source = source if isinstance(source, dict) else {}
    _prepare_folder(out_dir)

    shared = _shared_header(volume, description, source)
    shared.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    shared.RescaleIntercept, shared.RescaleSlope = _ds(intercept), _ds(slope)
    shared.RescaleType = "HU" if volume.modality == "CT" and volume.units == "HU" else "US"
    shared.Rows, shared.Columns = rows, cols
    orientation, pixel_spacing = _source_plane(source, geometry)
    shared.ImageOrientationPatient = [_ds(v) for v in orientation]
    shared.PixelSpacing = [_ds(v) for v in pixel_spacing]
    thickness = source.get("slice_thickness") or geometry["spacing_between"]
    shared.SliceThickness = _ds(thickness)
    shared.SpacingBetweenSlices = _ds(geometry["spacing_between"])
    center, width = volume.window or _default_window(data)
    shared.WindowCenter, shared.WindowWidth = _ds(center), _ds(max(width, 1e-6))
    if provenance is not None:
        shared.ImageComments = provenance_comment(provenance)

    # unevenly chosen slices lie on a grid with gaps (Volume.on_slice_grid); the gaps stay in
    # the series (diffrecon's reader, like many, wants one spacing) but each says what it is
    kept = volume.metadata.get(SLICES_WITH_DATA)
    gaps = set(range(n)) - {int(k) for k in kept} if isinstance(kept, list) and kept else set()
    written: list[Path] = []
    try:
        for index in range(n):
            ds = Dataset()
            ds.update(shared)
            ds.SOPInstanceUID = generate_uid()
            # A slice that lies where a source slice lay takes that slice's own position
            # and instance number, so the derived series matches its source slice by slice.
            match = _source_slice(source, geometry["positions"][index]) if source else None
            position = _per_source(source, "file_positions_lps", match)
            instance = _per_source(source, "instance_numbers", match)
            ds.InstanceNumber = instance if instance is not None else index + 1
            ds.ImagePositionPatient = [_ds(v) for v in (geometry["positions"][index] if position is None else position)]
            references = _source_references(source, match) if match is not None else None
            if references is not None:
                ds.SourceImageSequence = references
            if index in gaps:  # a new element: update() shares the header's elements between images
                ds.add_new(0x00204000, "LT", GAP_COMMENT)  # ImageComments
            ds.PixelData = np.ascontiguousarray(stored[index]).astype(stored.dtype.newbyteorder("<")).tobytes()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = out_dir / f"IM{index + 1:05d}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            written.append(path)
        if provenance is not None:
            written.append(write_json(out_dir / _SIDECAR, provenance))
    except OSError as exc:
        raise VolumeWriteError(out_dir, f"could not be written ({exc.strerror or exc})") from exc
    return written


def _default_window(data: np.ndarray) -> tuple[float, float]:
    """A display window spanning the bulk of the intensities (0.5 to 99.5 percentile)."""
    lo, hi = (float(v) for v in np.percentile(data, [0.5, 99.5]))
    return (lo + hi) / 2, max(hi - lo, 1e-6)
