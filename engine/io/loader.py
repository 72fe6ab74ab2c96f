"""Pick the right reader or writer for a path, and turn every failure into one sentence."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DiffreconError, VolumeReadError, VolumeWriteError
from ..errors import one_line as errors_one_line
from . import checks
from .volume import Volume

# Extensions of what we read, by format.
_NIFTI = (".nii", ".nii.gz")
_HDF5 = (".h5", ".hdf5")
_NUMPY = (".npy", ".npz")
_DICOM = (".dcm", ".dicom", ".ima")


def file_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def _magic(path: Path) -> bytes:
    with checks.open_regular(path) as fh:
        return fh.read(132)


def detect_format(path: str | Path) -> str:
    """``'dicom' | 'nifti' | 'hdf5' | 'numpy'`` for a path, or a VolumeReadError."""
    p = Path(path)
    if not p.exists():
        raise VolumeReadError(p, checks.link_problem(p) or "no such file or folder")
    if p.is_dir():
        return "dicom"
    if not p.is_file():
        kind = checks.special_kind(p.stat().st_mode) or "not a regular file"
        raise VolumeReadError(p, f"is {kind}, not a file diffrecon can read")
    if p.stat().st_size == 0:
        raise VolumeReadError(p, "the file is empty (0 bytes)")
    ext = file_suffix(p)
    try:
        head = _magic(p)
    except OSError as exc:
        raise VolumeReadError(p, f"cannot be opened ({exc.strerror or exc})") from exc
    if ext in _NIFTI:
        return "nifti"
    if ext in _HDF5 or head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if ext in _NUMPY or head.startswith(b"\x93NUMPY") or (ext == ".npz" and head.startswith(b"PK")):
        return "numpy"
    if ext in _DICOM or head[128:132] == b"DICM":
        return "dicom"
    # DICOM written without the 128-byte preamble starts with a group 0002 or 0008 tag.
    if ext == "" and head[:2] in (b"\x02\x00", b"\x08\x00"):
        return "dicom"
    raise VolumeReadError(
        p, "is not a format diffrecon reads (DICOM, NIfTI .nii/.nii.gz, HDF5 .h5, NumPy .npy/.npz)"
    )


def load_volume(path: str | Path, *, series: str | None = None, key: str | None = None) -> Volume:
    """Read any supported scan into a :class:`Volume`.

    ``series`` chooses one DICOM series (SeriesInstanceUID, its number, or a unique
    prefix of its description) when a folder holds several; ``key`` chooses the array
    of an ``.npz`` file or the dataset of an HDF5 file holding no k-space.
    """
    p = Path(path)
    fmt = detect_format(p)
    with checks.captured_messages() as messages:
        volume = _read(p, fmt, series, key)
    kept = list(volume.metadata.get("warnings", []))
    for text in messages:  # one line each, without repeats, for `info` and the provenance
        line = " ".join(errors_one_line(text).split())
        if line and line not in kept:
            kept.append(line)
    if kept:
        volume.metadata["warnings"] = kept[:20]
    return volume


def _read(p: Path, fmt: str, series: str | None, key: str | None) -> Volume:
    try:
        if fmt == "dicom":
            from .dicom import read_dicom

            return read_dicom(p, series=series)
        if fmt == "nifti":
            from .nifti import read_nifti

            return read_nifti(p)
        if fmt == "hdf5":
            from .hdf5 import read_hdf5

            return read_hdf5(p, key=key)
        from .numpy_io import read_numpy

        return read_numpy(p, key=key)
    except DiffreconError:
        raise
    except MemoryError as exc:
        raise VolumeReadError(p, "the volume does not fit in memory") from exc
    except OSError as exc:
        if exc.errno == errno.EACCES:
            raise VolumeReadError(p, "permission denied") from exc
        raise VolumeReadError(p, f"could not be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # a reader library choked on a malformed file
        raise VolumeReadError(p, f"is not a readable {fmt.upper() if fmt != 'numpy' else 'NumPy'} file ({_short(exc)})") from exc


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def save_volume(
    volume: Volume,
    path: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
    variance: np.ndarray | None = None,
    description: str | None = None,
) -> list[Path]:
    """Write ``volume`` where the extension of ``path`` says; return the files written.

    ``.nii``/``.nii.gz`` NIfTI, ``.h5`` HDF5 (with ``variance`` and ``provenance``
    as attributes), ``.npy``/``.npz``, or a folder path (no extension) for a DICOM
    derived series. ``provenance`` (settings, model, version) is recorded in every
    format: a JSON sidecar beside NIfTI/NumPy/DICOM outputs, attributes in HDF5.
    ``description`` is a short human label (e.g. "diffusion ddim/dds 25 steps").
    """
    p = Path(path)
    ext = file_suffix(p)
    if provenance is not None and "threads" not in provenance:
        from ..runtime import thread_settings

        # Results match bit for bit only at the same thread count: record it with every output.
        provenance = {**provenance, "threads": thread_settings()}
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        if ext in _NIFTI:
            from .nifti import write_nifti

            return write_nifti(volume, p, provenance=provenance, description=description)
        if ext in _HDF5:
            from .hdf5 import write_hdf5

            return write_hdf5(volume, p, variance=variance, provenance=provenance, description=description)
        if ext in _NUMPY:
            from .numpy_io import write_numpy

            return write_numpy(volume, p, provenance=provenance)
        if ext == "" or ext in _DICOM:
            from .dicom import write_dicom_series

            out_dir = p if ext == "" else p.with_suffix("")
            return write_dicom_series(volume, out_dir, provenance=provenance, description=description)
    except DiffreconError:
        raise
    except OSError as exc:
        raise VolumeWriteError(p, f"could not be written ({exc.strerror or exc})") from exc
    raise VolumeWriteError(p, "unknown output type; use .nii.gz, .nii, .h5, .npy, .npz or a folder for DICOM")
