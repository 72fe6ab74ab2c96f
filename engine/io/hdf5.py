"""Reading and writing HDF5: fastMRI raw data, diffrecon's own outputs, plain arrays.

What a file is, is told by its content:

* a ``kspace`` dataset: a fastMRI file, read by :mod:`diffrecon.io.fastmri`.
* a ``reconstruction`` dataset: a file :func:`write_hdf5` wrote (geometry, modality,
  window, provenance and an optional ``variance`` map).
* anything else: the one 2D/3D numeric dataset in it, or the one ``key`` names.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import DiffreconError, VolumeReadError, VolumeWriteError
from .checks import check_finite, check_fits_in_memory, check_hdf5_stored, check_image_shape
from .numpy_io import as_volume_shape, describe_bytes, is_usable_affine
from .volume import MODALITIES, Volume, affine_from_spacing, reshape_to_source

# fastMRI's target names: ESC for single-coil, RSS for multi-coil challenges.
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
                from .fastmri import read_fastmri  # imports this module's helpers

                return read_fastmri(p, fh)
            if key in (None, "reconstruction") and isinstance(fh.get("reconstruction"), h5py.Dataset):
                return _read_diffrecon(p, fh)
            return _read_plain(p, fh, key)
    except DiffreconError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:  # h5py on damaged data
        raise VolumeReadError(p, f"could not be read; the HDF5 file is corrupt ({_first_line(exc)})") from exc


# --- fastMRI ---------------------------------------------------------------------------


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
    # A result of a plain HDF5 array keeps that array's dims (a 2D image stays 2D).
    if volume.source_format in ("hdf5", "diffrecon-h5"):
        data = reshape_to_source(data, volume.metadata.get("hdf5_shape"))
    variance = None if variance is None else variance.reshape(data.shape)
    # One slice per chunk (the viewer reads slices); gzip + shuffle roughly halves float32 images.
    chunks = (1,) + data.shape[1:] if data.ndim == 3 else data.shape
    storage = dict(chunks=chunks, compression="gzip", compression_opts=4, shuffle=True)
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
        "hdf5_shape": [int(n) for n in ds.shape],
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
    metadata = {"dataset": chosen, "hdf5_dtype": str(ds.dtype), "hdf5_shape": [int(n) for n in ds.shape]}
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
    check_hdf5_stored(p, ds, name)
    check_fits_in_memory(p, shape, ds.dtype.itemsize, "hdf5")
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
