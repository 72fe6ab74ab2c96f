"""Reading and writing NumPy arrays (``.npy``, ``.npz``).

A ``.npy`` holds one 2D image or 3D ``(slices, rows, cols)`` volume; an ``.npz``
holds one such array (or several, with ``key`` choosing one) plus, when diffrecon
wrote it, ``affine`` and ``spacing`` arrays giving its geometry. Arrays without
geometry get 1 mm voxels in the layout of :func:`affine_from_spacing`.

Files are never unpickled (``allow_pickle=False`` throughout), and the ``.npy``
header is read first: its shape is checked against the file's size and the
machine's memory before a single value is loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import VolumeReadError, VolumeWriteError
from . import checks
from .checks import check_finite, check_fits_in_memory, check_image_shape
from .sidecar import write_sidecar
from .volume import Volume, affine_from_spacing

# Names of the geometry arrays write_numpy stores beside the data in an .npz.
GEOMETRY_KEYS = ("affine", "spacing")
DATA_KEY = "data"
GEOMETRY_MAX_BYTES = 4096


def read_numpy(path: str | Path, key: str | None = None) -> Volume:
    """Read a ``.npy`` or ``.npz`` file as a volume (``key`` picks an .npz array)."""
    p = Path(path)
    metadata: dict[str, Any] = {}
    affine: np.ndarray | None = None
    with checks.open_regular(p) as fh:
        is_archive = fh.read(2) == b"PK" or p.suffix.lower() == ".npz"  # .npz files are zip archives
    if is_archive:
        data, stored_dtype, chosen, affine, note = _read_npz(p, key)
        metadata["array_key"] = chosen
        if note:
            metadata["geometry_note"] = note
    else:
        if key is not None:
            raise VolumeReadError(p, f"is a single-array .npy file, so there is no array named {key!r} to choose")
        with checks.open_regular(p) as fh:
            shape, dtype = _read_header(p, fh, available=p.stat().st_size)
        # mmap: the float32 copy below is then the only one held in memory.
        raw = np.load(p, mmap_mode="r", allow_pickle=False)
        data = _as_volume_array(raw, shape)
        stored_dtype = dtype
    metadata["numpy_dtype"] = str(stored_dtype)
    check_finite(p, data)
    check_image_shape(p, data)
    if affine is None:
        affine = affine_from_spacing((1.0, 1.0, 1.0))
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    return Volume(
        data=data,
        spacing=spacing,  # type: ignore[arg-type]
        affine=affine,
        source_path=p,
        source_format="numpy",
        metadata=metadata,
    )


def _read_header(p: Path, fh: IO[bytes], available: int) -> tuple[tuple[int, int, int], np.dtype]:
    """Parse a .npy header from ``fh`` and refuse what cannot (or must not) be loaded.

    ``available`` is the number of bytes in the stream, header included. Returns the
    3D shape the array will have and its stored dtype; leaves ``fh`` at the data.
    """
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        # Version 3.0 differs from 2.0 only in allowing UTF-8 field names.
        reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = reader(fh)
    except (ValueError, EOFError, OSError) as exc:
        reason = "it does not start with NumPy's magic bytes" if "magic" in str(exc) else _first_line(exc)
        raise VolumeReadError(p, f"is not a valid NumPy .npy file ({reason})") from exc
    if dtype.hasobject:
        raise VolumeReadError(p, "holds Python objects; diffrecon never unpickles files")
    if dtype.kind not in "biufc" or dtype.fields is not None:
        raise VolumeReadError(p, f"holds {dtype} values, not numbers diffrecon can show")
    volume_shape = as_volume_shape(p, tuple(int(s) for s in shape))
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = max(available - fh.tell(), 0)
    if have < need:
        dims = "x".join(map(str, shape))
        raise VolumeReadError(
            p,
            f"the header declares {dims} {dtype.name} values ({describe_bytes(need)}) but the file holds only "
            f"{describe_bytes(have)} of data, so it is truncated or its header is wrong",
        )
    check_fits_in_memory(p, volume_shape, dtype.itemsize, "numpy")
    return volume_shape, dtype


def as_volume_shape(p: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``(slices, rows, cols)`` for an array's shape, or one sentence why it has none.

    2D is one slice; extra length-1 axes (a batch or channel axis of 1) are dropped.
    """
    if len(shape) > 3:
        kept = tuple(s for s in shape if s != 1)
        if len(kept) <= 3:
            shape = kept if len(kept) >= 2 else shape
    if len(shape) == 0:
        raise VolumeReadError(p, "holds a single number, not an image")
    if len(shape) == 1:
        raise VolumeReadError(p, f"is 1D ({shape[0]} values); diffrecon needs a 2D image or a 3D volume")
    if len(shape) == 2:
        return (1, shape[0], shape[1])
    if len(shape) > 3:
        dims = "x".join(map(str, shape))
        raise VolumeReadError(p, f"is {len(shape)}D ({dims}); diffrecon reads one 2D image or 3D volume")
    return shape  # type: ignore[return-value]


def _as_volume_array(raw: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """float32 (complex64 for complex input) copy of ``raw`` in ``shape``."""
    dtype = np.complex64 if np.iscomplexobj(raw) else np.float32
    return np.array(raw, dtype=dtype, copy=True).reshape(shape)


def _read_npz(p: Path, key: str | None) -> tuple[np.ndarray, np.dtype, str, np.ndarray | None, str | None]:
    """The chosen array of an .npz (as loaded, and its stored dtype), its key, the stored
    affine (if any) and a note on it."""
    try:
        archive = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        reason = f"it is truncated or corrupt ({_first_line(exc)})"
        raise VolumeReadError(p, f"is not a readable .npz archive; {reason}") from exc
    with archive:
        members = {name[: -len(".npy")]: name for name in archive.namelist() if name.endswith(".npy")}
        images = [k for k in members if k not in GEOMETRY_KEYS]
        if key is not None:
            if key not in members:
                raise VolumeReadError(p, f"has no array {key!r} (found: {', '.join(members) or 'none'})")
            chosen = key
        elif len(images) == 1:
            chosen = images[0]
        elif not images:
            raise VolumeReadError(p, "holds no image arrays (an .npz of .npy members was expected)")
        else:
            raise VolumeReadError(p, f"holds several arrays ({', '.join(images)}); choose one with --key")
        data, stored_dtype = _read_member(p, archive, members[chosen])
        affine, note = None, None
        if chosen not in GEOMETRY_KEYS:
            affine, note = _stored_geometry(archive, members)
    return data, stored_dtype, chosen, affine, note


# Deflate expands at most ~1032-fold: a member claiming more than that is not a real archive.
DEFLATE_MAX_RATIO = 1032


def _read_member(p: Path, archive: zipfile.ZipFile, name: str) -> tuple[np.ndarray, np.dtype]:
    info = archive.getinfo(name)
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > DEFLATE_MAX_RATIO * max(info.compress_size, 1):
        raise VolumeReadError(p, f"member {name!r} claims {describe_bytes(info.file_size)} from "
                                 f"{describe_bytes(info.compress_size)} compressed, more than deflate can expand, "
                                 "so the archive is corrupt or crafted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise VolumeReadError(p, f"member {name!r} uses a compression NumPy archives never use")
    try:
        # Vet the header first; then reopen so read_array parses it itself.
        with archive.open(info) as fh:
            shape, stored_dtype = _read_header(p, fh, available=info.file_size)
        with archive.open(info) as fh:
            raw = np.lib.format.read_array(fh, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise VolumeReadError(p, f"member {name!r} of the .npz archive is corrupt ({_first_line(exc)})") from exc
    return _as_volume_array(raw, shape), stored_dtype


def _stored_geometry(archive: zipfile.ZipFile, members: dict[str, str]) -> tuple[np.ndarray | None, str | None]:
    """The affine write_numpy stored (or one built from a stored spacing), if usable."""
    def small_array(key: str) -> np.ndarray | None:
        # A 4x4 float64 matrix is 256 bytes; anything much bigger is not ours.
        if key not in members or archive.getinfo(members[key]).file_size > GEOMETRY_MAX_BYTES:
            return None
        with archive.open(members[key]) as fh:
            return np.lib.format.read_array(fh, allow_pickle=False)

    try:
        affine, spacing = small_array("affine"), small_array("spacing")
    except (zipfile.BadZipFile, EOFError, ValueError, OSError):
        return None, "the stored affine/spacing arrays are unreadable; 1 mm voxels assumed"
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        if is_usable_affine(affine):
            return affine, None
        return None, f"the stored affine (shape {affine.shape}) is not a usable 4x4 matrix; 1 mm voxels assumed"
    if spacing is not None:
        spacing = np.asarray(spacing, dtype=np.float64).ravel()
        if spacing.shape == (3,) and np.all(np.isfinite(spacing)) and np.all(spacing > 0):
            return affine_from_spacing(tuple(spacing)), None  # type: ignore[arg-type]
        return None, "the stored spacing is not three positive numbers; 1 mm voxels assumed"
    return None, None


def is_usable_affine(affine: np.ndarray) -> bool:
    """A finite 4x4 matrix whose voxel axes all have a length (a stored affine we can trust)."""
    return (
        affine.shape == (4, 4)
        and bool(np.all(np.isfinite(affine)))
        and bool(np.all(np.linalg.norm(affine[:3, :3], axis=0) > 0))
    )


def write_numpy(volume: Volume, path: str | Path, provenance: dict[str, Any] | None = None) -> list[Path]:
    """Write ``volume.data`` as ``.npy`` (voxels only) or ``.npz`` (voxels as ``data``
    plus ``affine`` and ``spacing``); ``provenance`` goes to ``<stem>.json``."""
    p = Path(path)
    ext = p.suffix.lower()
    data = np.ascontiguousarray(volume.data)
    # Open the file ourselves: np.save/np.savez would append an extension to the name.
    with open(p, "wb") as fh:
        if ext == ".npy":
            np.save(fh, data, allow_pickle=False)
        elif ext == ".npz":
            np.savez_compressed(
                fh,
                **{DATA_KEY: data, "affine": np.asarray(volume.affine, np.float64),  # type: ignore[arg-type]
                   "spacing": np.asarray(volume.spacing, np.float64)},
            )
        else:
            raise VolumeWriteError(p, "a NumPy output must end in .npy or .npz")
    written = [p]
    if provenance is not None:
        written.append(write_sidecar(p, provenance))
    return written


def describe_bytes(n: int) -> str:
    """A byte count for people: ``'12 bytes'``, ``'3.5 KiB'``, ``'256.0 GiB'``."""
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}"
    return f"{n} bytes"  # unreachable


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
