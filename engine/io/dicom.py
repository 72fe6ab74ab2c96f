"""DICOM in and out: find the series under a path, read one into a Volume, write a derived one.

Reading (:func:`read_dicom`, :func:`list_series`) accepts a single file (that file
only: one slice, or a multi-frame object), a folder, or a folder tree holding
several series. Headers are read first (no pixels) to group files by
SeriesInstanceUID; the pixel work lives in :mod:`diffrecon.io.dicom_read`.

What is skipped, and what is an error:

* files that are not DICOM (README, thumbnails, a corrupt file whose header cannot
  be parsed) and DICOM objects without an image (DICOMDIR, structured reports) are
  skipped and listed in ``metadata["skipped_files"]``; only when nothing readable is
  left is that an error;
* a second copy of a file (same SOPInstanceUID) is skipped the same way;
* a file of the chosen series whose *pixel data* is broken (truncated, undecodable)
  is an error naming that file: dropping a slice would silently leave a gap.

Writing (:func:`write_dicom_series`) lives in :mod:`diffrecon.io.dicom_write`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, MediaStorageDirectoryStorage

from ..errors import VolumeReadError
from . import checks
from .dicom_read import (
    Frame,
    frames_of,
    int_value,
    n_frames,
    place_frames,
    quiet,
    read_pixels,
    text_value,
    to_ras,
)
from .dicom_write import write_dicom_series
from .volume import Volume

__all__ = ["SeriesInfo", "list_series", "read_dicom", "write_dicom_series"]

# A folder tree bigger than this is not a scan folder (someone pointed at "/" or $HOME).
MAX_FILES = 20_000
# How many skipped files and series the metadata and messages name before "and N more".
_LIST_AT_MOST = 20


@dataclass(frozen=True)
class SeriesInfo:
    """One series found under a path, as ``list_series`` reports it."""

    uid: str
    number: int | None
    description: str
    modality: str
    n_slices: int
    rows: int
    cols: int
    files: tuple[Path, ...] = field(default=(), repr=False, compare=False)

    def label(self) -> str:
        """Short text naming the series for messages, e.g. ``3 "T1 AX" (20 slices)``."""
        number = "?" if self.number is None else str(self.number)
        description = f' "{self.description}"' if self.description else ""
        return f"{number}{description} ({self.n_slices} slice{'s' if self.n_slices != 1 else ''})"


def _is_image(header: Dataset) -> bool:
    return "Rows" in header and "Columns" in header


_DICOMDIR_NAME = "Media Storage Directory"


def _is_dicomdir(header: Dataset) -> bool:
    return text_value(header, "SOPClassUID") == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in header


def _dicomdir_folders(header: Dataset | None, index: Path) -> str:
    """' (e.g. "DICOM/ST1/SE1")': folders of the images a DICOMDIR references, for the message."""
    folders: list[str] = []
    records = header.get("DirectoryRecordSequence") if header is not None else None
    for record in records or []:
        ref = record.get("ReferencedFileID")
        if not ref or record.get("DirectoryRecordType", "") != "IMAGE":
            continue
        parts = [ref] if isinstance(ref, str) else [str(v) for v in ref]
        folder = str(Path(index.parent, *parts[:-1]))
        if folder not in folders:
            folders.append(folder)
        if len(folders) >= 3:
            break
    return f" (e.g. {', '.join(checks.quoted(f) for f in folders)})" if folders else ""


def _object_name(header: Dataset) -> str:
    """'Basic Text SR' for a structured report, and so on."""
    uid = UID(text_value(header, "SOPClassUID"))
    if uid and uid.name != str(uid):
        return uid.name.removesuffix(" Storage")
    return f"DICOM object of SOP class {uid}" if uid else "DICOM object without a SOP class"


def _looks_like_raw_dicom(path: Path) -> bool:
    """A DICOM dataset written without the 128-byte preamble starts with group 0008 or 0002."""
    try:
        with checks.open_regular(path) as fh:
            return fh.read(2) in (b"\x08\x00", b"\x02\x00")
    except (OSError, VolumeReadError):
        return False


def read_header(path: Path) -> tuple[Dataset | None, str]:
    """The header (no pixels) of a DICOM file, or None and a reason it is not one."""
    try:
        with quiet(), checks.open_regular(path) as fh:
            header = pydicom.dcmread(fh, stop_before_pixels=True)
    except VolumeReadError as exc:
        return None, exc.reason
    except InvalidDicomError:
        if not _looks_like_raw_dicom(path):
            return None, "is not a DICOM file (it has no DICM marker and does not start with DICOM tags)"
        try:
            with quiet(), checks.open_regular(path) as fh:
                header = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a corrupt header raises anything from struct to KeyError
            return None, "is not a readable DICOM file (its header is corrupt)"
    except OSError as exc:
        return None, f"could not be read ({exc.strerror or exc})"
    except Exception:  # noqa: BLE001
        return None, "is not a readable DICOM file (its header is corrupt or truncated)"
    # Garbage after a DICM marker parses as a dataset of nonsense tags: demand real ones.
    if "SOPClassUID" not in header and not _is_image(header):
        return None, "is not a readable DICOM file (its header holds no DICOM object)"
    return header, ""


def _files_under(folder: Path, skipped: list[str]) -> list[Path]:
    """Regular files under ``folder``; FIFOs, sockets, devices and broken links go to ``skipped``.

    Only regular files are ever opened: opening a FIFO would wait for a writer forever.
    Symlinked folders are not followed (os.walk's default), so a link loop cannot recurse.
    """
    found: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            file = Path(root) / name
            try:
                kind = checks.special_kind(os.stat(file).st_mode)
            except OSError:
                kind = (checks.link_problem(file) or "unreadable").removeprefix("is ")
            if kind is not None:
                skipped.append(f"{checks.quoted(file.relative_to(folder))} ({kind}, not read)")
                continue
            found.append(file)
            if len(found) > MAX_FILES:
                raise VolumeReadError(
                    folder,
                    f"holds more than {MAX_FILES} files, too many for one scan; point diffrecon at the series folder",
                )
    return found


def _scan(path: Path) -> tuple[list[SeriesInfo], dict[Path, Dataset], list[str]]:
    """Group the DICOM images under ``path`` by series; list what was skipped and why."""
    single = path.is_file()
    skipped: list[str] = []
    candidates = [path] if single else _files_under(path, skipped)
    if not candidates:
        raise VolumeReadError(path, "is an empty folder" if not skipped else
                              f"holds no regular files (only {skipped[0]}{' and more' if len(skipped) > 1 else ''})")
    headers: dict[Path, Dataset] = {}
    non_images: list[str] = []
    seen_sops: set[str] = set()
    for file in candidates:
        if not single and file.name == "provenance.json":
            continue  # our own writer's sidecar, not a stray file worth mentioning
        header, reason = read_header(file)
        if header is None:
            if single:
                raise VolumeReadError(file, reason)
            skipped.append(f"{checks.quoted(file.relative_to(path))} (not DICOM)")
            continue
        if not _is_image(header) or text_value(header, "SOPClassUID") == MediaStorageDirectoryStorage:
            if single and _is_dicomdir(header):
                raise VolumeReadError(file, "is a DICOMDIR, an index of the files on a DICOM disc, not an image; "
                                      f"point diffrecon at a series folder it lists{_dicomdir_folders(header, file)}")
            if single:
                raise VolumeReadError(file, f"has no image data (it is a {_object_name(header)})")
            non_images.append(_object_name(header))
            skipped.append(f"{checks.quoted(file.relative_to(path))} ({_object_name(header)}, no image)")
            continue
        sop = text_value(header, "SOPInstanceUID")
        if sop and sop in seen_sops:
            skipped.append(f"{checks.quoted(file.relative_to(path))} (a copy of another file)")
            continue
        seen_sops.add(sop)
        headers[file] = header
    if not headers:
        if non_images and set(non_images) == {_DICOMDIR_NAME}:
            index = next((f for f in candidates if f.name.upper() == "DICOMDIR"), path)
            listed = _dicomdir_folders(read_header(index)[0], index) if index != path else ""
            raise VolumeReadError(path, "holds only a DICOMDIR, an index of the files on a DICOM disc, and no "
                                  f"images; point diffrecon at a series folder it lists{listed}")
        if non_images:
            kinds = ", ".join(sorted(set(non_images)))
            raise VolumeReadError(path, f"holds no DICOM images, only objects without image data ({kinds})")
        checked = f"{len(candidates)} file{'s' if len(candidates) != 1 else ''} checked"
        raise VolumeReadError(path, f"holds no DICOM files ({checked})")

    by_uid: dict[str, list[Path]] = {}
    for file, header in headers.items():
        by_uid.setdefault(text_value(header, "SeriesInstanceUID"), []).append(file)
    series = []
    for uid, files in by_uid.items():
        first = headers[files[0]]
        series.append(
            SeriesInfo(
                uid=uid,
                number=int_value(first, "SeriesNumber"),
                description=text_value(first, "SeriesDescription"),
                modality=text_value(first, "Modality") or "OT",
                n_slices=sum(n_frames(headers[f]) for f in files),
                rows=int_value(first, "Rows") or 0,
                cols=int_value(first, "Columns") or 0,
                files=tuple(files),
            )
        )
    series.sort(key=lambda s: (s.number if s.number is not None else 1 << 31, s.description, s.uid))
    return series, headers, skipped


def list_series(path: str | Path) -> list[SeriesInfo]:
    """Every image series under a DICOM file or folder tree, ordered by series number."""
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(p, "no such file or folder")
    return _scan(p)[0]


def _listing(series: list[SeriesInfo]) -> str:
    labels = [s.label() for s in series[:_LIST_AT_MOST]]
    more = len(series) - len(labels)
    return ", ".join(labels) + (f" and {more} more" if more else "")


def choose_series(series: list[SeriesInfo], wanted: str | None, where: Path) -> SeriesInfo:
    """The series ``wanted`` names: its UID, its number, or a unique prefix of its description."""
    if wanted is None:
        if len(series) == 1:
            return series[0]
        raise VolumeReadError(
            where,
            f"holds {len(series)} series: {_listing(series)}; "
            "choose one with --series and its number, UID or description",
        )
    key = wanted.strip()
    for rule in (
        lambda s: s.uid == key,
        lambda s: s.number is not None and str(s.number) == key,
        lambda s: s.description.lower() == key.lower(),
        lambda s: bool(key) and s.description.lower().startswith(key.lower()),
    ):
        matches = [s for s in series if rule(s)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise VolumeReadError(
                where, f"--series {wanted!r} matches {len(matches)} series ({_listing(matches)}); be more specific"
            )
    raise VolumeReadError(where, f"has no series matching --series {wanted!r}; it holds {_listing(series)}")


def read_dicom(path: str | Path, series: str | None = None) -> Volume:
    """Read one DICOM series (chosen by ``series`` when the path holds several) into a Volume."""
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(p, checks.link_problem(p) or "no such file or folder")
    found, headers, skipped = _scan(p)
    chosen = choose_series(found, series, p)
    extra: dict[str, Any] = {}
    if len(found) > 1:
        extra["series_available"] = [s.label() for s in found]
    if skipped:
        extra["skipped_files"] = skipped[:_LIST_AT_MOST]
        extra["skipped_file_count"] = len(skipped)
    return read_series([(f, headers[f]) for f in chosen.files], p, extra)


# Tags a derived series copies from its source, so that it files under the same
# patient and study and overlays on the same frame of reference.
SOURCE_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription", "FrameOfReferenceUID", "Modality",
    "BodyPartExamined", "PatientPosition", "SeriesNumber", "SeriesDescription",
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
    "EchoTime", "RepetitionTime", "MagneticFieldStrength", "KVP", "SliceThickness",
    "BitsStored", "PixelRepresentation", "RescaleSlope", "RescaleIntercept",
)  # fmt: skip


def source_record(header: Dataset, frames: list[Frame], affine_lps: np.ndarray) -> dict[str, Any]:
    """A JSON-able summary of the source the writer needs to make a derived series."""
    first = frames[0]
    tags = {k: text_value(header, k) for k in SOURCE_TAGS}
    return {
        "tags": {k: v for k, v in tags.items() if v != ""},
        # One entry per slice in volume order: what SourceImageSequence references.
        "slice_thickness": frames[0].thickness,
        "source_images": [[f.sop_class, f.sop_uid, None if f.frame is None else f.frame + 1] for f in frames],
        "slice_positions_lps": [
            [float(v) for v in affine_lps[:3, 0] * i + affine_lps[:3, 3]] for i in range(len(frames))
        ],
        # Each slice's own geometry as its file states it (positions may stray from the
        # even grid above by the reader's spacing tolerance): a derived series repeats it.
        "file_positions_lps": [None if f.position is None else [float(v) for v in f.position] for f in frames],
        "instance_numbers": [f.instance_number for f in frames],
        "orientation": None if first.orientation is None else [float(v) for v in first.orientation],
        "pixel_spacing": None if first.pixel_spacing is None else [float(v) for v in first.pixel_spacing],
    }


def read_series(files: list[tuple[Path, Dataset]], where: Path, extra_metadata: dict[str, Any]) -> Volume:
    """Read one series (its files' headers already parsed) into a Volume."""
    sizes: dict[tuple[int, int], Path] = {}
    for path, header in files:
        rows, cols = int_value(header, "Rows"), int_value(header, "Columns")
        if not rows or not cols or rows < 0 or cols < 0:
            raise VolumeReadError(path, "its Rows or Columns are missing or not positive numbers")
        if n_frames(header) < 1:
            raise VolumeReadError(path, "its NumberOfFrames is not a positive number")
        sizes.setdefault((rows, cols), path)
    if len(sizes) > 1:
        (size_a, file_a), (size_b, file_b) = list(sizes.items())[:2]
        raise VolumeReadError(
            where,
            f"its slices have different sizes ({size_a[0]}x{size_a[1]} in {file_a.name}, "
            f"{size_b[0]}x{size_b[1]} in {file_b.name})",
        )
    (rows, cols), _ = sizes.popitem()
    multi = [path for path, header in files if n_frames(header) > 1]
    if multi and len(files) > 1:
        raise VolumeReadError(
            where, f"its series mixes a multi-frame object ({multi[0].name}) with other images; open one file at a time"
        )
    total = sum(n_frames(header) for _, header in files)
    stored_bytes = ((int_value(files[0][1], "BitsAllocated") or 16) + 7) // 8
    # Checked before any frame list or pixel buffer exists: headers can declare terabytes.
    checks.check_fits_in_memory(where, (total, rows, cols), stored_bytes, "dicom")

    frames = [frame for path, header in files for frame in frames_of(path, header)]
    frames, affine_lps, ordered_by = place_frames(frames, where)
    data, facts = read_pixels(frames, rows, cols)
    checks.check_finite(where, data)
    checks.check_image_shape(where, data)

    first_header = dict(files)[frames[0].path]
    modality = text_value(first_header, "Modality").upper()
    modality = modality if modality in ("MR", "CT", "US") else "OT"
    rescale_type = text_value(first_header, "RescaleType").upper()
    hu = modality == "CT" and rescale_type in ("", "HU") and not facts["inverted"]
    window = frames[0].window
    if window is not None and facts["inverted"]:  # the window moves with the inverted values
        lo, hi = facts["first_range"]
        window = (lo + hi - window[0], window[1])

    affine = to_ras(affine_lps)
    metadata = {
        "series_uid": text_value(first_header, "SeriesInstanceUID"),
        "study_uid": text_value(first_header, "StudyInstanceUID"),
        "series_number": int_value(first_header, "SeriesNumber"),
        "series_description": text_value(first_header, "SeriesDescription"),
        "patient_id": text_value(first_header, "PatientID"),
        "study_date": text_value(first_header, "StudyDate"),
        "frame_of_reference_uid": text_value(first_header, "FrameOfReferenceUID"),
        "sop_class": _object_name(first_header),
        "transfer_syntax": _syntax_name(first_header),
        "photometric": facts["photometric"],
        "n_files": len(files),
        "slice_order": ordered_by,
        "dicom_source": source_record(first_header, frames, affine_lps),
        **extra_metadata,
    }
    guesses = _geometry_guesses(first_header, frames)
    if guesses:
        metadata["warnings"] = guesses
    return Volume(
        data=data,
        spacing=(float(np.linalg.norm(affine[:3, 0])), float(np.linalg.norm(affine[:3, 1])),
                 float(np.linalg.norm(affine[:3, 2]))),
        affine=affine,
        modality=modality,
        units="HU" if hu else "a.u.",
        window=window,
        source_path=where,
        source_format="dicom",
        metadata=metadata,
    )


def _geometry_guesses(header: Dataset, frames: list[Frame]) -> list[str]:
    """Sentences for every geometry the reader had to assume: never a silent guess."""
    said: list[str] = []
    if any(f.pixel_spacing is None for f in frames):
        raw = text_value(header, "PixelSpacing")
        if raw:
            said.append(f"its PixelSpacing ({raw}) is not a pair of positive numbers, so 1 mm pixels are assumed")
        else:
            said.append("it records no pixel spacing, so 1 mm pixels are assumed")
    if len(frames) == 1 and frames[0].spacing_between is None and frames[0].thickness is None:
        raw = text_value(header, "SliceThickness")
        if raw:
            said.append(f"its SliceThickness ({raw}) is not a positive number, so 1 mm slices are assumed")
    return said


def _syntax_name(header: Dataset) -> str:
    meta = getattr(header, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return UID(str(uid)).name if uid else "Implicit VR Little Endian (assumed)"
