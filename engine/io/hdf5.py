"""Reading and writing HDF5: fastMRI raw data, diffrecon's own outputs, plain arrays.

What a file is, is told by its content:

* a ``kspace`` dataset: a fastMRI file. Centred k-space ``(slices, ky, kx)``
  (single-coil) or ``(slices, coils, ky, kx)`` (multi-coil), an optional sampling
  ``mask`` over ``kx`` (test/challenge files), optional targets
  ``reconstruction_esc`` / ``reconstruction_rss`` and an ``ismrmrd_header`` XML
  string. The display image is fastMRI's: the root-sum-of-squares of the centred
  orthonormal inverse FFT, centre-cropped to the target's size.
* a ``reconstruction`` dataset: a file :func:`write_hdf5` wrote (geometry, modality,
  window, provenance and an optional ``variance`` map).
* anything else: the one 2D/3D numeric dataset in it, or the one ``key`` names.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import DiffreconError, VolumeReadError, VolumeWriteError
from .checks import check_finite, check_fits_in_memory, check_image_shape
from .numpy_io import as_volume_shape, describe_bytes, is_usable_affine
from .volume import MODALITIES, KSpace, Volume, affine_from_spacing

# fastMRI's target names: ESC for single-coil, RSS for multi-coil challenges.
TARGET_KEYS = {False: ("reconstruction_esc", "reconstruction_rss"), True: ("reconstruction_rss", "reconstruction_esc")}
ROOT_ATTRS_KEPT = 16  # at most this many root attributes go into metadata


def read_hdf5(path: str | Path, key: str | None = None) -> Volume:
    """Read a fastMRI, diffrecon or plain HDF5 file (``key`` names a dataset to show)."""
    import h5py

    p = Path(path)
    if not h5py.is_hdf5(p):
        raise VolumeReadError(p, "is not an HDF5 file (it has no HDF5 signature)")
    try:
        fh = h5py.File(p, "r")
    except OSError as exc:
        raise VolumeReadError(p, f"is not a readable HDF5 file; {_open_failure(exc)}") from exc
    try:
        with fh:
            if key in (None, "kspace") and "kspace" in fh:
                return _read_fastmri(p, fh)
            if key in (None, "reconstruction") and isinstance(fh.get("reconstruction"), h5py.Dataset):
                return _read_diffrecon(p, fh)
            return _read_plain(p, fh, key)
    except DiffreconError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:  # h5py on damaged data
        raise VolumeReadError(p, f"could not be read; the HDF5 file is corrupt ({_first_line(exc)})") from exc


# --- fastMRI ---------------------------------------------------------------------------


def _read_fastmri(p: Path, fh: Any) -> Volume:
    import h5py

    ds = fh["kspace"]
    if not isinstance(ds, h5py.Dataset):
        raise VolumeReadError(p, "'kspace' is a group, not a dataset")
    if ds.dtype.kind != "c":
        raise VolumeReadError(p, f"k-space must be complex; dataset 'kspace' is {ds.dtype}")
    if ds.ndim not in (3, 4):
        raise VolumeReadError(
            p,
            f"dataset 'kspace' has shape {_dims(ds.shape)}; "
            "fastMRI k-space is (slices, ky, kx) or (slices, coils, ky, kx)",
        )
    multicoil = ds.ndim == 4
    shape = tuple(int(s) for s in ds.shape) if multicoil else (ds.shape[0], 1, ds.shape[1], ds.shape[2])
    if min(shape) == 0:
        raise VolumeReadError(p, f"dataset 'kspace' is empty (shape {_dims(ds.shape)})")
    check_fits_in_memory(p, shape, itemsize=8)  # complex64
    kspace = np.empty(shape, np.complex64)
    for i in range(shape[0]):  # slice by slice: a complex128 file never needs a full double copy
        kspace[i] = np.asarray(ds[i]).reshape(shape[1:])
    bad = int(kspace.size - np.count_nonzero(np.isfinite(kspace)))
    if bad:
        samples = "sample is" if bad == 1 else "samples are"
        raise VolumeReadError(p, f"{bad} k-space {samples} NaN or infinite; diffrecon needs finite measurements")

    mask = _read_mask(p, fh, shape)
    metadata: dict[str, Any] = _root_attrs(fh)
    header = _read_ismrmrd(fh, metadata)
    target, target_key = _read_target(fh, multicoil, shape[0], metadata)

    image = kspace_to_rss_image(kspace)
    crop: tuple[int, int] | None = None
    if target is not None:
        crop = (target.shape[1], target.shape[2])
    elif header.get("recon_matrix"):
        crop = (header["recon_matrix"][0], header["recon_matrix"][1])
    if crop is not None:
        crop = (min(crop[0], image.shape[1]), min(crop[1], image.shape[2]))
        image = center_crop(image, crop)
        target = None if target is None else center_crop(target, crop)
    check_image_shape(p, image)

    spacing = header.get("spacing_mm", (1.0, 1.0, 1.0))
    metadata["kspace_layout"] = "centred (slices, coils, ky, kx); image = RSS of orthonormal centred IFFT"
    if target_key:
        metadata["reference_key"] = target_key
    if "spacing_mm" not in header:
        metadata["geometry_note"] = "no usable ismrmrd_header field of view; 1 mm voxels assumed"
    return Volume(
        data=image,
        spacing=spacing,
        affine=affine_from_spacing(spacing),
        modality="MR",
        source_path=p,
        source_format="fastmri-h5",
        metadata=metadata,
        kspace=KSpace(data=kspace, multicoil=multicoil, mask=mask, recon_size=crop),
        reference=target,
    )


def kspace_to_rss_image(kspace: np.ndarray) -> np.ndarray:
    """fastMRI's image of centred k-space ``(slices, coils, ky, kx)``: root-sum-of-squares
    over coils of ``fftshift(ifft2(ifftshift(k), norm="ortho"))``; float32 ``(slices, ky, kx)``."""
    import scipy.fft

    image = np.empty((kspace.shape[0],) + kspace.shape[2:], np.float32)
    for i, ks in enumerate(kspace):  # per slice keeps the complex working copies small
        coils = scipy.fft.fftshift(
            scipy.fft.ifft2(scipy.fft.ifftshift(ks, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
        )
        image[i] = np.sqrt(np.sum(np.abs(coils) ** 2, axis=0))
    return image


def center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The centred ``size`` window of the last two axes (fastMRI's rounding: start = (n - size) // 2)."""
    rows, cols = image.shape[-2:]
    r0, c0 = (rows - size[0]) // 2, (cols - size[1]) // 2
    return np.ascontiguousarray(image[..., r0 : r0 + size[0], c0 : c0 + size[1]])


def _read_mask(p: Path, fh: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The sampling mask as bool ``(1, kx)`` (fastMRI's column mask) or ``(ky, kx)``."""
    if "mask" not in fh:
        return None
    raw = np.asarray(fh["mask"][()])
    if raw.dtype.kind not in "biuf":
        raise VolumeReadError(p, f"the sampling mask must hold 0/1 values; dataset 'mask' is {raw.dtype}")
    ky, kx = shape[-2:]
    mask = raw != 0
    if mask.ndim == 1:
        if mask.size != kx:
            raise VolumeReadError(p, f"the sampling mask has {mask.size} entries but k-space has {kx} columns (kx)")
        mask = mask.reshape(1, kx)
    elif mask.shape != (ky, kx):
        raise VolumeReadError(
            p, f"the sampling mask has shape {_dims(mask.shape)}; expected ({kx},) or ({ky}x{kx}) to match k-space"
        )
    if not mask.any():
        raise VolumeReadError(p, "the sampling mask selects no k-space samples")
    return mask


def _read_target(fh: Any, multicoil: bool, slices: int, metadata: dict) -> tuple[np.ndarray | None, str | None]:
    """fastMRI's ground truth for this kind of file, if present and sound (else a note)."""
    for name in TARGET_KEYS[multicoil]:
        if name not in fh:
            continue
        ds = fh[name]
        if ds.ndim != 3 or ds.shape[0] != slices or ds.dtype.kind not in "biuf":
            metadata["reference_note"] = f"'{name}' ({_dims(ds.shape)} {ds.dtype}) does not match the k-space; ignored"
            return None, None
        check_fits_in_memory(fh.filename, ds.shape, itemsize=4)
        target = np.asarray(ds[()], dtype=np.float32)
        if not np.all(np.isfinite(target)):
            metadata["reference_note"] = f"'{name}' holds NaN or infinite values; ignored"
            return None, None
        return target, name
    return None, None


def parse_ismrmrd_header(xml: str | bytes) -> dict[str, Any]:
    """The facts diffrecon uses from an ISMRMRD XML header (missing ones are left out).

    ``recon_matrix``/``encoded_matrix`` are (x, y, z); fastMRI crops images to the
    reconSpace (x, y) as (rows, cols). ``spacing_mm`` is (slice, row, col) from the
    reconSpace field of view.
    """
    root = ElementTree.fromstring(xml)
    for el in root.iter():  # drop the ISMRMRD namespace so paths stay readable
        el.tag = el.tag.rsplit("}", 1)[-1]

    def numbers(path: str, kind: type) -> tuple | None:
        try:
            return tuple(kind(float(root.findtext(f"{path}/{ax}"))) for ax in "xyz")  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None

    facts: dict[str, Any] = {}
    for space in ("encodedSpace", "reconSpace"):
        matrix = numbers(f".//encoding/{space}/matrixSize", int)
        fov = numbers(f".//encoding/{space}/fieldOfView_mm", float)
        name = "encoded" if space == "encodedSpace" else "recon"
        if matrix:
            facts[f"{name}_matrix"] = list(matrix)
        if fov:
            facts[f"{name}_fov_mm"] = list(fov)
    matrix, fov = facts.get("recon_matrix"), facts.get("recon_fov_mm")
    if matrix and fov and min(matrix) > 0 and min(fov) > 0:
        facts["spacing_mm"] = (fov[2] / matrix[2], fov[0] / matrix[0], fov[1] / matrix[1])
    for key, path in (
        ("system_vendor", ".//acquisitionSystemInformation/systemVendor"),
        ("system_model", ".//acquisitionSystemInformation/systemModel"),
        ("field_strength_t", ".//acquisitionSystemInformation/systemFieldStrength_T"),
        ("protocol_name", ".//measurementInformation/protocolName"),
    ):
        text = root.findtext(path)
        if text:
            facts[key] = text.strip()
    return facts


def _read_ismrmrd(fh: Any, metadata: dict) -> dict[str, Any]:
    """Parse ``ismrmrd_header`` into ``metadata``; a broken header is noted, not fatal."""
    if "ismrmrd_header" not in fh:
        return {}
    try:
        raw = fh["ismrmrd_header"][()]
        header = parse_ismrmrd_header(raw.item() if isinstance(raw, np.ndarray) else raw)
    except (ElementTree.ParseError, ValueError, TypeError, UnicodeError) as exc:
        metadata["ismrmrd_header_note"] = f"unreadable ({_first_line(exc)})"
        return {}
    metadata.update({k: list(v) if isinstance(v, tuple) else v for k, v in header.items()})
    return header


# --- diffrecon outputs ---------------------------------------------------------------


def write_hdf5(
    volume: Volume,
    path: str | Path,
    variance: np.ndarray | None = None,
    provenance: dict[str, Any] | None = None,
    description: str | None = None,
) -> list[Path]:
    """Write a reconstruction (and its per-voxel ``variance``) with its geometry and provenance."""
    import h5py

    p = Path(path)
    data = volume.data.astype(np.complex64 if np.iscomplexobj(volume.data) else np.float32, copy=False)
    if variance is not None:
        variance = np.asarray(variance, dtype=np.float32)
        if variance.shape != data.shape:
            raise VolumeWriteError(
                p, f"the variance map is {_dims(variance.shape)} but the volume is {_dims(data.shape)}"
            )
    # One slice per chunk (the viewer reads slices); gzip + shuffle roughly halves float32 images.
    storage = dict(chunks=(1,) + data.shape[1:], compression="gzip", compression_opts=4, shuffle=True)
    # Write beside the target and rename, so a crash never leaves half a file under its name.
    partial = p.with_name(p.name + ".partial")
    try:
        with h5py.File(partial, "w") as f:
            f.create_dataset("reconstruction", data=data, **storage)
            if variance is not None:
                f.create_dataset("variance", data=variance, **storage)
            f.create_dataset("affine", data=np.asarray(volume.affine, np.float64))
            f.attrs["spacing"] = np.asarray(volume.spacing, np.float64)
            f.attrs["modality"] = volume.modality
            f.attrs["units"] = volume.units
            if volume.window is not None:
                f.attrs["window"] = np.asarray(volume.window, np.float64)
            f.attrs["provenance"] = json.dumps(provenance or {}, default=str)
            f.attrs["description"] = description or ""
            f.attrs["diffrecon_version"] = __version__
        os.replace(partial, p)
    finally:
        partial.unlink(missing_ok=True)
    return [p]


def _read_diffrecon(p: Path, fh: Any) -> Volume:
    ds = fh["reconstruction"]
    data = _read_dataset(p, ds, "reconstruction")
    attrs = fh.attrs
    affine, note = None, None
    if "affine" in fh:
        stored = np.asarray(fh["affine"][()], np.float64)
        if is_usable_affine(stored):
            affine = stored
        else:
            note = "the stored affine is not a usable 4x4 matrix"
    if affine is None:
        affine = affine_from_spacing(_spacing_attr(attrs) or (1.0, 1.0, 1.0))
    modality = _text(attrs.get("modality", "OT"))
    window = attrs.get("window")
    window_ok = window is not None and np.shape(window) == (2,) and np.all(np.isfinite(window)) and window[1] > 0
    provenance_text = _text(attrs.get("provenance", "{}"))
    try:
        provenance: Any = json.loads(provenance_text)
    except json.JSONDecodeError:
        provenance = provenance_text
    metadata: dict[str, Any] = {
        "provenance": provenance,
        "description": _text(attrs.get("description", "")),
        "diffrecon_version": _text(attrs.get("diffrecon_version", "")),
        "has_variance": "variance" in fh,
    }
    if note:
        metadata["geometry_note"] = note
    if modality not in MODALITIES:
        metadata["modality_note"] = f"unknown modality {modality!r}; shown as OT"
        modality = "OT"
    return Volume(
        data=data,
        spacing=tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0)),  # type: ignore[arg-type]
        affine=affine,
        modality=modality,
        units=_text(attrs.get("units", "a.u.")),
        window=(float(window[0]), float(window[1])) if window_ok else None,
        source_path=p,
        source_format="diffrecon-h5",
        metadata=metadata,
    )


def read_variance(path: str | Path) -> np.ndarray | None:
    """The per-voxel variance map of a diffrecon output, or None if it has none."""
    import h5py

    with h5py.File(path, "r") as fh:
        if "variance" not in fh:
            return None
        return _read_dataset(Path(path), fh["variance"], "variance")


# --- plain HDF5 arrays ---------------------------------------------------------------


def _read_plain(p: Path, fh: Any, key: str | None) -> Volume:
    import h5py

    names = _dataset_names(fh)
    if key is not None:
        if key not in fh:
            raise VolumeReadError(p, f"has no dataset {key!r} (found: {_listing(names)})")
        if not isinstance(fh[key], h5py.Dataset):
            raise VolumeReadError(p, f"{key!r} is a group, not a dataset")
        chosen = key
    else:
        images = [n for n in names if fh[n].dtype.kind in "biufc" and _squeezed_rank(fh[n].shape) in (2, 3)]
        if not images:
            raise VolumeReadError(
                p, f"has no 'kspace' dataset and no 2D or 3D image dataset (found: {_listing(names)})"
            )
        if len(images) > 1:
            raise VolumeReadError(p, f"holds several image datasets ({_listing(images)}); choose one with --key")
        chosen = images[0]
    ds = fh[chosen]
    data = _read_dataset(p, ds, chosen)
    spacing = _spacing_attr(ds.attrs) or (1.0, 1.0, 1.0)
    metadata = {"dataset": chosen, "hdf5_dtype": str(ds.dtype)}
    return Volume(
        data=data,
        spacing=spacing,
        affine=affine_from_spacing(spacing),
        source_path=p,
        source_format="hdf5",
        metadata=metadata,
    )


def _read_dataset(p: Path, ds: Any, name: str) -> np.ndarray:
    """A numeric 2D/3D dataset as a checked float32 (complex64) ``(slices, rows, cols)`` array."""
    if ds.dtype.kind not in "biufc":
        raise VolumeReadError(p, f"dataset {name!r} holds {ds.dtype} values, not numbers diffrecon can show")
    shape = as_volume_shape(p, tuple(int(s) for s in ds.shape))
    complex_data = ds.dtype.kind == "c"
    check_fits_in_memory(p, shape, itemsize=8 if complex_data else 4)
    data = np.asarray(ds[()], dtype=np.complex64 if complex_data else np.float32).reshape(shape)
    check_finite(p, data)
    check_image_shape(p, data)
    return data


def _dataset_names(fh: Any) -> list[str]:
    import h5py

    names: list[str] = []
    fh.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _squeezed_rank(shape: tuple[int, ...]) -> int:
    return len(shape) if len(shape) <= 3 else len([s for s in shape if s != 1])


# --- small helpers -------------------------------------------------------------------


def _root_attrs(fh: Any) -> dict[str, Any]:
    """fastMRI's file attributes (acquisition, max, norm, patient_id, ...) as JSON-able values."""
    out: dict[str, Any] = {}
    for name in list(fh.attrs)[:ROOT_ATTRS_KEPT]:
        value = fh.attrs[name]
        if isinstance(value, (bytes, str)):
            out[name] = _text(value)
        elif isinstance(value, np.generic):
            out[name] = value.item()
        elif isinstance(value, np.ndarray) and value.size <= 16 and value.dtype.kind in "biuf":
            out[name] = value.tolist()
    return out


def _spacing_attr(attrs: Any) -> tuple[float, float, float] | None:
    value = attrs.get("spacing")
    if value is None or np.shape(value) != (3,):
        return None
    spacing = np.asarray(value, np.float64)
    if not (np.all(np.isfinite(spacing)) and np.all(spacing > 0)):
        return None
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _listing(names: list[str], limit: int = 8) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape) if len(shape) else "scalar"


def _open_failure(exc: OSError) -> str:
    """HDF5's reason a file will not open, in words (a truncated download is the usual one)."""
    found = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", str(exc))
    if found:
        have, need = int(found.group(1)), int(found.group(2))
        return f"it is truncated ({describe_bytes(have)} of {describe_bytes(need)})"
    return f"it is corrupt ({_first_line(exc)})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
