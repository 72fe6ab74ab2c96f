"""fastMRI HDF5 files: raw k-space (single- or multi-coil), mask, targets, ISMRMRD header.

fastMRI's layout: ``kspace`` (slices, [coils,] ky, kx) complex, centred (DC in the
middle), optional ``mask`` over kx, targets ``reconstruction_esc`` (single-coil) /
``reconstruction_rss`` (multi-coil) cropped to the header's reconSpace. The display
image is the root sum of squares of the centred orthonormal inverse FFT, cropped the
same way, so it lines up with the targets.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeReadError
from .checks import check_fits_in_memory, check_hdf5_stored, check_image_shape
from .hdf5 import _dims, _first_line, _root_attrs
from .volume import KSpace, Volume, affine_from_spacing

TARGET_KEYS = {False: ("reconstruction_esc", "reconstruction_rss"), True: ("reconstruction_rss", "reconstruction_esc")}

def read_fastmri(p: Path, fh: Any) -> Volume:
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
    check_hdf5_stored(p, ds, "kspace")
    check_fits_in_memory(p, shape, 8, "hdf5")  # complex64
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
        if ds.id.get_storage_size() == 0:
            metadata["reference_note"] = f"'{name}' stores no data (only its fill value); ignored"
            return None, None
        check_fits_in_memory(fh.filename, ds.shape, ds.dtype.itemsize, "hdf5")
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


