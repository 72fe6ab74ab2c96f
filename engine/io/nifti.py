"""Reading and writing NIfTI-1/2 volumes (``.nii``, ``.nii.gz``) with nibabel.

On the way in, the voxels are turned into diffrecon's display layout: array axes
``(slice, row, col)`` increasing towards ``(S, P, L)`` (axial slices, rows from
anterior to posterior, columns from the patient's right to left: the radiological
convention of :func:`~diffrecon.io.volume.affine_from_spacing`), keeping the file's
own spacing, origin and any obliquity in ``Volume.affine``. How to undo that
(``source_ornt``) and the file's affine (``source_affine``) ride along, so that
:func:`write_nifti` writes a result back in the scan's own voxel order and geometry.

NIfTI records no modality: it is "OT", unless the intensities look like Hounsfield
units, in which case the volume is marked CT and ``metadata["modality_guess"]`` says why.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeReadError, VolumeWriteError
from .checks import check_finite, check_fits_in_memory, check_image_shape, open_regular
from .numpy_io import describe_bytes
from .sidecar import sidecar_path, write_sidecar
from .volume import Volume, reshape_to_source

# Display layout of a volume with several slices: axial (see module docstring).
AXIAL_CODES = ("S", "P", "L")
# A single slice keeps its own plane, shown as radiologists view that plane:
# rows run downwards towards the feet, columns towards the patient's left
# (coronal) or towards the back (sagittal, anterior on the left of the screen).
SINGLE_SLICE_CODES = {0: ("L", "I", "P"), 1: ("P", "I", "L"), 2: AXIAL_CODES}  # by world axis of the slice normal

# Intensities spanning at least this far below and above zero look like Hounsfield units.
HU_LOW, HU_HIGH = -500.0, 500.0
CT_SOFT_TISSUE_WINDOW = (40.0, 400.0)  # (center, width)

# Deflate expands at most ~1032-fold (258-byte matches coded in ~2 bits): a bound on
# what a .nii.gz of a given size can decompress to.
DEFLATE_MAX_RATIO = 1032

GZIP_MAGIC = b"\x1f\x8b"
DESCRIP_BYTES = 80  # the header's descrip field
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


def read_nifti(path: str | Path, *, modality: str | None = None) -> Volume:
    """Read a NIfTI file as one 3D volume in diffrecon's display layout.

    ``modality`` overrides the guess (NIfTI headers have no modality field).
    Raises :class:`VolumeReadError` with one sentence for anything that is not one
    readable, finite 3D volume.
    """
    p = Path(path)
    img = _open_image(p)
    header = img.header
    shape = _volume_shape(p, tuple(int(s) for s in img.shape))
    raw_dtype = np.dtype(header.get_data_dtype())
    if raw_dtype.fields is not None:
        raise VolumeReadError(p, "holds colour (RGB) voxels; diffrecon reads greyscale intensities")
    _check_declared_size(p, img, shape, raw_dtype)
    out_dtype = np.complex64 if raw_dtype.kind == "c" else np.float32
    # The raw voxels and their scaled float copy are both held while reading.
    check_fits_in_memory(p, _display_shape(shape, img.affine), raw_dtype.itemsize + (4 if raw_dtype.kind == "c" else 0),
                         "nifti")

    data = _read_voxels(p, img, out_dtype).reshape(shape)
    check_finite(p, data)

    unit_name = header.get_xyzt_units()[0] or "unknown"
    source_affine = np.asarray(img.affine, dtype=np.float64).copy()
    source_affine[:3, :] *= _UNIT_TO_MM.get(unit_name, 1.0)
    data, affine, to_source = _to_display_layout(data, source_affine)
    data = np.ascontiguousarray(data)
    check_image_shape(p, data)
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))

    metadata = _header_facts(img, unit_name)
    units, window = "a.u.", None
    if modality is None:
        modality = _sidecar_modality(p)
        if modality is not None:
            metadata["modality_source"] = "JSON sidecar (BIDS 'Modality')"
    if modality is None:
        modality = "OT"
        real = not np.iscomplexobj(data)
        lo, hi = (float(np.min(data)), float(np.max(data))) if real else (0.0, 0.0)
        if real and lo <= HU_LOW and hi >= HU_HIGH:
            modality, units, window = "CT", "HU", CT_SOFT_TISSUE_WINDOW
            metadata["modality_guess"] = (
                f"CT: intensities span {lo:g} to {hi:g}, which looks like Hounsfield units "
                "(NIfTI does not record the modality)"
            )
    elif modality == "CT":
        units, window = "HU", CT_SOFT_TISSUE_WINDOW
    return Volume(
        data=data,
        spacing=spacing,  # type: ignore[arg-type]
        affine=affine,
        modality=modality,
        units=units,
        window=window,
        source_path=p,
        source_format="nifti",
        metadata=metadata,
        source_ornt=to_source,
        source_affine=source_affine,
    )


def _open_image(p: Path) -> Any:
    """nibabel's image object (header only; voxels are read later)."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    if p.name.lower().endswith(".gz"):
        with open_regular(p) as fh:
            if fh.read(2) != GZIP_MAGIC:
                raise VolumeReadError(p, "is named .gz but is not a gzip-compressed file")
    try:
        # mmap=False: the voxels must not stay tied to a file the user may overwrite.
        img = nib.load(str(p), mmap=False)
    except ImageFileError as exc:
        raise VolumeReadError(p, "is not a NIfTI file (no valid NIfTI header)") from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise VolumeReadError(p, "the gzip stream is truncated or corrupt, so the NIfTI header cannot be read") from exc
    except Exception as exc:  # nibabel's header checks (HeaderDataError, ValueError, ...)
        raise VolumeReadError(p, f"has a NIfTI header nibabel cannot read ({_first_line(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeReadError(p, f"is a {type(img).__name__}, not a NIfTI-1 or NIfTI-2 image")
    return img


def _volume_shape(p: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The header's dims as one 3D volume, or one sentence saying why they are not."""
    while len(shape) > 3 and shape[-1] == 1:  # e.g. (x, y, z, 1) from tools that always write 4D
        shape = shape[:-1]
    if any(s < 1 for s in shape) or len(shape) == 0:
        raise VolumeReadError(p, f"the header declares an empty image (dims {shape})")
    if len(shape) == 1:
        raise VolumeReadError(p, f"is 1D ({shape[0]} values); diffrecon needs a 2D slice or a 3D volume")
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    if len(shape) == 4:
        raise VolumeReadError(p, f"is 4D ({shape[3]} volumes); diffrecon reads one 3D volume")
    if len(shape) >= 5:
        dims = "x".join(map(str, shape))
        raise VolumeReadError(p, f"is {len(shape)}D ({dims}); diffrecon reads one 3D volume")
    return shape  # type: ignore[return-value]


def _check_declared_size(p: Path, img: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The file must be able to hold all the voxels its header declares.

    Checked before reading so a damaged header cannot trigger a huge allocation.
    An uncompressed file must be that big; a gzip file cannot expand by more than
    deflate's limit (a short but plausible .nii.gz stream is caught while reading).
    """
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = p.stat().st_size
    dims = "x".join(map(str, shape))
    declared = f"the header declares {dims} {dtype.name} voxels ({describe_bytes(need)})"
    if p.name.lower().endswith(".gz"):
        if need > DEFLATE_MAX_RATIO * size:
            raise VolumeReadError(
                p, f"{declared} but a {describe_bytes(size)} gzip file cannot hold that much, so its header is wrong"
            )
        return
    have = max(size - int(getattr(img.dataobj, "offset", 0)), 0)
    if have < need:
        raise VolumeReadError(
            p,
            f"{declared} but the file holds only {describe_bytes(have)} of voxel data, "
            "so it is truncated or its header is wrong",
        )


def _read_voxels(p: Path, img: Any, dtype: type) -> np.ndarray:
    """Voxels with scl_slope/scl_inter applied, as float32 (complex64 for complex files)."""
    try:
        if dtype is np.complex64:
            return np.asarray(img.dataobj, dtype=np.complex64)
        return img.get_fdata(dtype=np.float32, caching="unchanged")
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise VolumeReadError(p, "the gzip stream is truncated or corrupt, so the voxels cannot be read") from exc
    except OSError as exc:
        # nibabel: "Expected N bytes, got M bytes": the data ends before the header says.
        raise VolumeReadError(p, f"the voxel data is incomplete ({_first_line(exc)})") from exc


def _display_codes(shape: tuple[int, int, int], affine: np.ndarray) -> tuple[str, str, str]:
    """Axial layout for volumes; a lone slice keeps its own plane (see SINGLE_SLICE_CODES)."""
    import nibabel.orientations as nio

    singleton = [axis for axis, n in enumerate(shape) if n == 1]
    if len(singleton) != 1:
        return AXIAL_CODES
    world_axis = int(nio.io_orientation(affine)[singleton[0], 0])
    return SINGLE_SLICE_CODES[world_axis]


def _display_shape(shape: tuple[int, int, int], source_affine: np.ndarray) -> tuple[int, int, int]:
    """``shape`` (file order) as ``(slices, rows, cols)`` in the display layout, from the header alone:
    the memory budget counts slices the way ``--slices`` does."""
    import nibabel.orientations as nio

    try:
        file_ornt = nio.io_orientation(np.asarray(source_affine, float))
        to_display = nio.ornt_transform(file_ornt, nio.axcodes2ornt(_display_codes(shape, source_affine)))
        out = [0, 0, 0]
        for axis, (target, _) in enumerate(to_display):
            out[int(target)] = shape[axis]
        return (out[0], out[1], out[2]) if 0 not in out else shape
    except Exception:  # noqa: BLE001 - a degenerate affine: count in file order
        return shape


def _to_display_layout(data: np.ndarray, source_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorient ``data`` (file voxel order) to the display layout.

    Returns the reoriented array, its affine (index -> RAS mm), and the nibabel
    orientation transform that takes the new array back to the file's voxel order.
    """
    import nibabel.orientations as nio

    file_ornt = nio.io_orientation(source_affine)
    display_ornt = nio.axcodes2ornt(_display_codes(data.shape, source_affine))
    to_display = nio.ornt_transform(file_ornt, display_ornt)
    shown = nio.apply_orientation(data, to_display)
    # inv_ornt_aff maps indices of the reoriented array to indices of the original one.
    affine = source_affine @ nio.inv_ornt_aff(to_display, data.shape)
    to_source = nio.ornt_transform(display_ornt, file_ornt)
    return shown, affine, to_source


def _header_facts(img: Any, unit_name: str) -> dict[str, Any]:
    """JSON-able header facts, including what write_nifti needs to keep the file's geometry."""
    import nibabel.orientations as nio

    header = img.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    descrip = bytes(header["descrip"].item()).split(b"\0")[0].decode("latin-1").strip()
    # nibabel moves scl_slope/scl_inter from the header onto the data proxy on load.
    slope, inter = getattr(img.dataobj, "slope", 1.0), getattr(img.dataobj, "inter", 0.0)
    facts: dict[str, Any] = {
        "nifti_version": 2 if type(img).__name__ == "Nifti2Image" else 1,
        "nifti_dtype": str(header.get_data_dtype()),
        "nifti_shape": [int(s) for s in img.shape],
        "source_orientation": "".join(nio.aff2axcodes(img.affine)),
        "qform_code": int(qcode or 0),
        "sform_code": int(scode or 0),
        "spatial_units": unit_name,
    }
    if qform is not None:
        facts["qform"] = np.asarray(qform, float).tolist()
    if sform is not None:
        facts["sform"] = np.asarray(sform, float).tolist()
    if not qcode and not scode:
        facts["geometry_note"] = "the header sets neither qform nor sform; orientation is nibabel's default guess"
    if slope != 1 or inter != 0:
        facts["scl_slope"], facts["scl_inter"] = float(slope), float(inter)
    if descrip:
        facts["description"] = descrip
    return facts


def write_nifti(
    volume: Volume,
    path: str | Path,
    provenance: dict[str, Any] | None = None,
    description: str | None = None,
) -> list[Path]:
    """Write ``volume`` as NIfTI (``.nii`` or ``.nii.gz``); return the files written.

    A volume read from a NIfTI file (or derived from one) goes back in that file's
    voxel order with its qform/sform and their codes; any other volume is written
    as it is, with its own affine. ``description`` goes into the header's
    ``descrip`` (cut to 80 bytes); ``provenance`` into ``<stem>.json`` beside it.
    """
    import nibabel as nib
    import nibabel.orientations as nio

    p = Path(path)
    data = volume.data
    if data.dtype != np.float32 and not np.iscomplexobj(data):
        data = data.astype(np.float32)
    elif np.iscomplexobj(data):
        data = data.astype(np.complex64)
    affine = np.asarray(volume.affine, float)
    codes = {"qform": 1, "sform": 1}  # "scanner": the affine holds patient coordinates
    exact: dict[str, np.ndarray] = {}
    if volume.source_ornt is not None:
        ornt = np.asarray(volume.source_ornt)
        affine = affine @ nio.inv_ornt_aff(ornt, data.shape)
        data = nio.apply_orientation(data, ornt)
        md = volume.metadata
        codes = {"qform": int(md.get("qform_code", 1)), "sform": int(md.get("sform_code", 1))}
        exact = _source_matrices(volume, affine)
        if exact:
            affine = exact.get("sform" if codes["sform"] else "qform", affine)
        data = reshape_to_source(data, md.get("nifti_shape"))
    if not np.all(np.isfinite(affine)):
        raise VolumeWriteError(p, "the volume's affine holds NaN or infinite values")

    image_type = nib.Nifti2Image if max(data.shape) > 32767 else nib.Nifti1Image
    img = image_type(np.ascontiguousarray(data), affine)
    img.set_qform(exact.get("qform", affine), code=codes["qform"])
    img.set_sform(exact.get("sform", affine), code=codes["sform"])
    img.header.set_xyzt_units("mm", "sec")
    if description:
        img.header["descrip"] = _fit_bytes(description, DESCRIP_BYTES)
    nib.save(img, str(p))
    written = [p]
    if provenance is not None or volume.modality != "OT":
        # BIDS sidecars carry the modality NIfTI lacks; read_nifti picks it up again.
        written.append(write_sidecar(p, {"Modality": volume.modality, **(provenance or {})}))
    return written


def _source_matrices(volume: Volume, affine: np.ndarray) -> dict[str, np.ndarray]:
    """The source file's own qform and sform, moved to the grid being written.

    ``affine`` (output voxel index -> mm, in the source's voxel order) lies on the
    source grid when it is the source affine times an index map (the identity, or the
    shift and stride of a slice selection). The source's matrices times that map keep
    them bit for bit where nothing moved (they may differ from each other, and
    recomputing them would add rounding). Empty when the file's units are not mm (its
    matrices are then in other units) or the volume has no source affine.
    """
    md = volume.metadata
    if volume.source_affine is None or md.get("spatial_units", "mm") not in ("mm", "unknown"):
        return {}
    source = np.asarray(volume.source_affine, float)
    try:
        index_map = np.linalg.inv(source) @ affine
    except np.linalg.LinAlgError:
        return {}
    rounded = np.round(index_map)
    if not np.allclose(index_map, rounded, atol=1e-4):
        return {}  # not on the source grid: the volume's own affine is the truth
    identity = np.array_equal(rounded, np.eye(4))
    return {name: np.asarray(md[name], float) if identity else np.asarray(md[name], float) @ rounded
            for name in ("qform", "sform") if md.get(name) is not None}


def _sidecar_modality(p: Path) -> str | None:
    """The modality a BIDS-style JSON sidecar (``scan.json`` beside ``scan.nii.gz``) records."""
    import json

    side = sidecar_path(p)
    try:
        with open_regular(side) as fh:  # a FIFO named scan.json must not hang the read
            value = json.loads(fh.read(1 << 20).decode("utf-8")).get("Modality")
    except (OSError, ValueError, AttributeError, VolumeReadError):
        return None
    value = str(value).upper() if value else None
    return value if value in ("MR", "CT", "US") else None


def _fit_bytes(text: str, limit: int) -> bytes:
    """``text`` as UTF-8 cut to ``limit`` bytes without splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
