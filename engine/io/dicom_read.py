"""Headers to pixels for one DICOM series: frames, their order and geometry, decoding.

``diffrecon.io.dicom`` is the front door (finding files, grouping them by series,
choosing one, assembling the Volume); this module holds the steps it runs:

* every 2D image becomes a :class:`Frame`, whether it is a single-frame file or one
  frame of an (enhanced or legacy) multi-frame object (:func:`frames_of`);
* frames are sorted by position along the slice normal, never by file name, and the
  LPS affine is built from the sorted positions (:func:`place_frames`);
* pixels are decoded, rescaled (CT to HU) and MONOCHROME1 is inverted, slice by
  slice (:func:`read_pixels`).

Duplicates: two *different* images at the same position (multi-echo, dynamic or
repeated acquisitions) are an error, since a 3D volume has one image per position.
(Copies of one file, recognised by SOPInstanceUID, are dropped by the front door.)
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import VolumeReadError
from . import checks

# Relative spread of the gaps between slice positions that still counts as "even".
SPACING_TOLERANCE = 0.1
# Positions closer than this (mm) along the normal are the same slice position.
SAME_POSITION_MM = 0.01
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """pydicom warns about every odd value it meets; the user gets one sentence instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---- reading tag values that may be missing or malformed -------------------------------


def text_value(ds: Dataset | None, keyword: str) -> str:
    """A tag as text ('' when missing or unreadable); multiple values joined by backslashes."""
    try:
        value = ds.get(keyword) if ds is not None else None
    except Exception:  # pydicom converts lazily; a garbled value fails here
        return ""
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def int_value(ds: Dataset | None, keyword: str) -> int | None:
    try:
        value = ds.get(keyword) if ds is not None else None
        return None if value in (None, "") else int(value)
    except Exception:
        return None


def float_values(ds: Dataset | None, keyword: str, count: int) -> np.ndarray | None:
    """The first ``count`` values of a numeric tag, or None when missing, short or not finite."""
    try:
        value = ds.get(keyword) if ds is not None else None
        if value is None or value == "":
            return None
        items = value if isinstance(value, (MultiValue, list, tuple)) else [value]
        numbers = np.array([float(v) for v in items][:count], dtype=np.float64)
    except Exception:
        return None
    return numbers if numbers.size == count and np.all(np.isfinite(numbers)) else None


def to_ras(affine: np.ndarray) -> np.ndarray:
    """DICOM's LPS patient axes to RAS+ and back (the same flip of x and y both ways)."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


@dataclass
class Frame:
    """One 2D image: a single-frame file, or frame ``frame`` of a multi-frame file."""

    path: Path
    frame: int | None
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # ImageOrientationPatient: row then column direction
    pixel_spacing: np.ndarray | None  # (between rows, between columns) mm
    thickness: float | None
    spacing_between: float | None
    slope: float
    intercept: float
    window: tuple[float, float] | None
    instance_number: int | None
    sop_uid: str
    sop_class: str


def n_frames(header: Dataset) -> int:
    n = int_value(header, "NumberOfFrames")
    return 1 if n is None else n


def _item(sequence_owner: Dataset | None, keyword: str) -> Dataset | None:
    if sequence_owner is None:
        return None
    seq = sequence_owner.get(keyword)
    return seq[0] if seq else None


def _group(per_frame: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    """A functional-group macro of one frame: its own if it has one, else the shared one."""
    return _item(per_frame, keyword) or _item(shared, keyword)


def _window(ds: Dataset | None) -> tuple[float, float] | None:
    center, width = float_values(ds, "WindowCenter", 1), float_values(ds, "WindowWidth", 1)
    if center is None or width is None or width[0] <= 0:
        return None
    return float(center[0]), float(width[0])


def _plain_pixel_spacing(ds: Dataset) -> np.ndarray | None:
    """PixelSpacing, else the detector's spacing, else an ultrasound region's calibration."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = float_values(ds, keyword, 2)
        if spacing is not None and np.all(spacing > 0):
            return spacing
    region = _item(ds, "SequenceOfUltrasoundRegions")
    if region is not None and int_value(region, "PhysicalUnitsXDirection") == 3:  # 3 = cm
        dx, dy = float_values(region, "PhysicalDeltaX", 1), float_values(region, "PhysicalDeltaY", 1)
        if dx is not None and dy is not None and dx[0] > 0 and dy[0] > 0:
            return np.array([abs(dy[0]) * 10.0, abs(dx[0]) * 10.0])
    return None


def frames_of(path: Path, header: Dataset) -> list[Frame]:
    """The 2D images in one file, with what each needs for ordering and rescaling."""
    sop_uid, sop_class = text_value(header, "SOPInstanceUID"), text_value(header, "SOPClassUID")
    slope = float_values(header, "RescaleSlope", 1)
    intercept = float_values(header, "RescaleIntercept", 1)
    base: dict[str, Any] = dict(
        path=path,
        position=float_values(header, "ImagePositionPatient", 3),
        orientation=float_values(header, "ImageOrientationPatient", 6),
        pixel_spacing=_plain_pixel_spacing(header),
        thickness=_positive(float_values(header, "SliceThickness", 1)),
        spacing_between=_positive(float_values(header, "SpacingBetweenSlices", 1)),
        slope=1.0 if slope is None or slope[0] == 0 else float(slope[0]),
        intercept=0.0 if intercept is None else float(intercept[0]),
        window=_window(header),
        instance_number=int_value(header, "InstanceNumber"),
        sop_uid=sop_uid,
        sop_class=sop_class,
    )
    count = n_frames(header)
    if count == 1 and "PerFrameFunctionalGroupsSequence" not in header:
        return [Frame(frame=None, **base)]
    per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
    shared = _item(header, "SharedFunctionalGroupsSequence")
    frames = []
    for index in range(count):
        if not per_frame:  # legacy multi-frame: only the first frame's position is known
            frames.append(Frame(**{**base, "frame": index, "position": base["position"] if index == 0 else None}))
            continue
        own = per_frame[index] if index < len(per_frame) else None
        measures = _group(own, shared, "PixelMeasuresSequence")
        transform = _group(own, shared, "PixelValueTransformationSequence")
        f_slope = float_values(transform, "RescaleSlope", 1)
        f_intercept = float_values(transform, "RescaleIntercept", 1)
        f_spacing = float_values(measures, "PixelSpacing", 2)
        frames.append(
            Frame(
                path=path,
                frame=index,
                position=float_values(_group(own, shared, "PlanePositionSequence"), "ImagePositionPatient", 3),
                orientation=float_values(
                    _group(own, shared, "PlaneOrientationSequence"), "ImageOrientationPatient", 6
                ),
                pixel_spacing=base["pixel_spacing"] if f_spacing is None else f_spacing,
                thickness=_positive(float_values(measures, "SliceThickness", 1)),
                spacing_between=_positive(float_values(measures, "SpacingBetweenSlices", 1)),
                slope=base["slope"] if f_slope is None or f_slope[0] == 0 else float(f_slope[0]),
                intercept=base["intercept"] if f_intercept is None else float(f_intercept[0]),
                window=_window(_group(own, shared, "FrameVOILUTSequence")) or base["window"],
                instance_number=int_value(_group(own, shared, "FrameContentSequence"), "InStackPositionNumber"),
                sop_uid=sop_uid,
                sop_class=sop_class,
            )
        )
    return frames


def _positive(values: np.ndarray | None) -> float | None:
    return float(values[0]) if values is not None and values[0] > 0 else None


def place_frames(frames: list[Frame], where: Path) -> tuple[list[Frame], np.ndarray, str]:
    """Sort frames along the slice normal; return them, the LPS affine, and how they were ordered."""
    first = frames[0]
    with_geometry = all(f.position is not None and f.orientation is not None for f in frames)
    orientation = first.orientation if first.orientation is not None else np.array([1.0, 0, 0, 0, 1, 0])
    along_row, along_col = orientation[:3], orientation[3:]
    normal = np.cross(along_row, along_col)
    if np.linalg.norm(along_row) < 0.5 or np.linalg.norm(along_col) < 0.5 or np.linalg.norm(normal) < 0.5:
        raise VolumeReadError(first.path, "its ImageOrientationPatient is not a pair of perpendicular directions")
    along_row, along_col = along_row / np.linalg.norm(along_row), along_col / np.linalg.norm(along_col)
    normal = normal / np.linalg.norm(normal)

    if with_geometry:
        for f in frames:
            if np.max(np.abs(f.orientation - orientation)) > 1e-3:  # type: ignore[operator]  # with_geometry
                raise VolumeReadError(
                    where,
                    "its images lie in different planes (a localizer?); diffrecon reads one stack of parallel slices",
                )
        depth = np.array([float(normal @ f.position) for f in frames])
        order = np.argsort(depth, kind="stable")
        frames, depth = [frames[i] for i in order], depth[order]
        gaps = np.diff(depth)
        if np.any(gaps < SAME_POSITION_MM):
            n_positions = 1 + int(np.count_nonzero(gaps >= SAME_POSITION_MM))
            raise VolumeReadError(
                where,
                f"its {len(frames)} images lie at only {n_positions} slice positions "
                "(a multi-echo, dynamic or repeated series?); diffrecon reads one image per position",
            )
        if len(frames) > 1:
            step = float(np.median(gaps))
            if np.max(np.abs(gaps - step)) > SPACING_TOLERANCE * step + SAME_POSITION_MM:
                raise VolumeReadError(
                    where,
                    f"its slices are unevenly spaced ({gaps.min():.4g} to {gaps.max():.4g} mm apart), "
                    "so a slice may be missing",
                )
            # The first-to-last step, not the normal: a tilted CT gantry shears the stack.
            slice_step = (frames[-1].position - frames[0].position) / (len(frames) - 1)  # type: ignore[operator]
        else:
            slice_step = normal * (first.spacing_between or first.thickness or 1.0)
        ordered_by = "position"
    else:
        frames = sorted(
            frames,
            key=lambda f: (f.instance_number if f.instance_number is not None else 1 << 31, str(f.path), f.frame or 0),
        )
        slice_step = normal * (first.spacing_between or first.thickness or 1.0)
        ordered_by = "instance number (the files give no slice positions)"

    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing is not None]
    if spacings and any(np.max(np.abs(s - spacings[0])) > 1e-4 for s in spacings):
        raise VolumeReadError(where, "its pixel spacing changes from slice to slice")
    row_mm, col_mm = spacings[0] if len(spacings) == len(frames) else (1.0, 1.0)

    affine = np.eye(4)
    affine[:3, 0] = slice_step
    affine[:3, 1] = along_col * row_mm  # moving down one row
    affine[:3, 2] = along_row * col_mm  # moving right one column
    affine[:3, 3] = frames[0].position if frames[0].position is not None else 0.0
    return frames, affine, ordered_by


def _install_hint(syntax: UID) -> str:
    if syntax in pydicom.uid.JPEG2000TransferSyntaxes or syntax.name.startswith("High-Throughput JPEG 2000"):
        return "pip install pylibjpeg pylibjpeg-openjpeg"
    if syntax in pydicom.uid.JPEGLSTransferSyntaxes:
        return "pip install pyjpegls"
    if syntax in pydicom.uid.JPEGTransferSyntaxes:
        return "pip install pylibjpeg pylibjpeg-libjpeg"
    if syntax in pydicom.uid.RLETransferSyntaxes:
        return "pip install pylibjpeg pylibjpeg-rle"
    return "pip install python-gdcm"


def _ensure_transfer_syntax(ds: Dataset) -> UID:
    """The dataset's transfer syntax; a raw dataset (no file meta) gets the one it was read with."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        implicit, little = ds.original_encoding
        meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return UID(str(meta.TransferSyntaxUID))


def _check_decodable(path: Path, ds: Dataset) -> None:
    """Say what is wrong before pydicom tries (and fails less clearly) to decode."""
    present = [k for k in _PIXEL_KEYWORDS if k in ds]
    if not present:
        raise VolumeReadError(path, "has no pixel data")
    syntax = _ensure_transfer_syntax(ds)
    if syntax.is_transfer_syntax and syntax.is_compressed:
        try:
            decoder = pydicom.pixels.get_decoder(syntax)
        except NotImplementedError:
            raise VolumeReadError(path, f"its pixel data uses {syntax.name}, which pydicom cannot decode") from None
        if not decoder.is_available:
            raise VolumeReadError(
                path,
                f"its pixel data is compressed as {syntax.name} and no decoder is installed ({_install_hint(syntax)})",
            )
        return
    rows, cols = int_value(ds, "Rows") or 0, int_value(ds, "Columns") or 0
    bits = int_value(ds, "BitsAllocated") or 0
    samples = int_value(ds, "SamplesPerPixel") or 1
    expected = (rows * cols * samples * n_frames(ds) * bits + 7) // 8
    actual = len(ds[present[0]].value or b"")
    if actual < expected:
        raise VolumeReadError(
            path,
            f"its pixel data holds {actual} bytes but its header declares {expected}, "
            "so the file is truncated or corrupt",
        )
    if actual > expected + 1:  # one byte pads odd lengths to an even one; more means the header is wrong
        raise VolumeReadError(
            path,
            f"its pixel data holds {actual} bytes, more than the {expected} its header declares "
            f"({rows}x{cols} pixels, {n_frames(ds)} frame(s), {bits} bits), so Rows, Columns or the frame count is wrong",
        )


def _decode(path: Path) -> tuple[np.ndarray, Dataset]:
    """All frames of one file as ``(frames, rows, cols)`` stored values, and its dataset."""
    with quiet():
        # The header pass already accepted this file; force also reads raw (preamble-less) datasets.
        with checks.open_regular(path) as fh:
            ds = pydicom.dcmread(fh, force=True)
        _check_decodable(path, ds)
        photometric = text_value(ds, "PhotometricInterpretation").upper()
        if photometric.startswith("PALETTE"):
            raise VolumeReadError(path, "is a PALETTE COLOR image, which diffrecon cannot read as intensities")
        try:
            pixels = np.asarray(ds.pixel_array)
        except Exception as exc:  # the decoder choked on this file's pixel stream
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise VolumeReadError(path, f"its pixel data could not be decoded ({reason})") from exc
    samples = int_value(ds, "SamplesPerPixel") or 1
    if samples == 3:  # colour (ultrasound often is): luminance, as a grey display would show it
        pixels = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if pixels.ndim == 2:
        pixels = pixels[None]
    return pixels, ds


def _invert_range(ds: Dataset, frame: Frame, image: np.ndarray) -> tuple[float, float]:
    """Lowest and highest rescaled values the stored bits can hold (MONOCHROME1 inversion)."""
    if image.dtype.kind == "f":
        return float(image.min()), float(image.max())
    bits = int_value(ds, "BitsStored") or int(image.dtype.itemsize * 8)
    if int_value(ds, "PixelRepresentation") == 1:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    ends = sorted((lo * frame.slope + frame.intercept, hi * frame.slope + frame.intercept))
    return ends[0], ends[1]


def read_pixels(frames: list[Frame], rows: int, cols: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Rescaled float32 ``(slices, rows, cols)`` in the frames' order, and facts about the pixels."""
    out = np.empty((len(frames), rows, cols), np.float32)
    decoded: dict[Path, tuple[np.ndarray, Dataset]] = {}
    facts: dict[str, Any] = {"inverted": False, "photometric": "", "first_range": None}
    for index, frame in enumerate(frames):
        if frame.path not in decoded:
            if frame.frame is None:
                decoded.clear()  # single-frame files are used once: keep memory flat
            decoded[frame.path] = _decode(frame.path)
        pixels, ds = decoded[frame.path]
        image = pixels[frame.frame or 0]
        if image.shape != (rows, cols):
            size = f"{image.shape[0]}x{image.shape[1]}"
            raise VolumeReadError(frame.path, f"its image is {size} pixels, not the {rows}x{cols} its header declares")
        values = image.astype(np.float64) * frame.slope + frame.intercept
        photometric = text_value(ds, "PhotometricInterpretation").upper()
        facts["photometric"] = facts["photometric"] or photometric
        if photometric == "MONOCHROME1":  # low values are white: flip so that they look like MONOCHROME2
            lo, hi = _invert_range(ds, frame, image)
            values = (lo + hi) - values
            facts["inverted"] = True
            facts["first_range"] = facts["first_range"] or (lo, hi)
        out[index] = values
    return out, facts
