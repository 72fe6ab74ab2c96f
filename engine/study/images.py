"""The study's blinded image copies: ``images/<id>.npy`` plus ``images/<id>.json``.

A reader's machine gets only these: float32 ``(slices, rows, cols)`` arrays named by
opaque ids, and beside each the geometry a viewer needs to show millimetres and
Hounsfield units (spacing, affine, modality, units, the file's own window). Nothing here
names the method or the source file (the volume's metadata and provenance are left
behind on purpose: a description like "diffrecon tv (...)" would unblind the reader).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import VolumeReadError
from ..io.checks import check_fits_in_memory, open_regular
from ..io.volume import Volume
from .store import StudyStoreError

IMAGES_DIR = "images"


def write_image(folder: Path, image_id: str, volume: Volume) -> list[Path]:
    """Write the blinded copy of ``volume`` as ``folder/<image_id>.npy`` and ``.json``."""
    data = np.abs(volume.data) if np.iscomplexobj(volume.data) else volume.data
    data = np.ascontiguousarray(data, dtype=np.float32)
    npy, sidecar = folder / f"{image_id}.npy", folder / f"{image_id}.json"
    np.save(npy, data, allow_pickle=False)
    geometry = {
        "shape": list(data.shape),
        "spacing_mm": [float(s) for s in volume.spacing],
        "affine": np.asarray(volume.affine, float).round(6).tolist(),
        "modality": volume.modality,
        "units": volume.units,
        # The file's own window when it has one; the viewer picks one for the rest, as it does for any scan.
        "window": [float(v) for v in volume.window] if volume.window else None,
    }
    sidecar.write_text(json.dumps(geometry) + "\n", encoding="utf-8")
    return [npy, sidecar]


def read_image(folder: Path, image_id: str) -> Volume:
    """Load a blinded image as a :class:`Volume` with its geometry only (no source path,
    metadata or provenance); a StudyStoreError (one sentence) when its files are missing or damaged."""
    npy, sidecar = folder / f"{image_id}.npy", folder / f"{image_id}.json"
    try:
        # Regular files only (a FIFO must not hang the reader window), the array's header
        # checked against the memory budget before its data is read.
        with open_regular(sidecar) as fh:
            geometry = json.loads(fh.read(1 << 20).decode("utf-8"))
        with open_regular(npy) as fh:
            version = np.lib.format.read_magic(fh)
            shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)(fh)
            check_fits_in_memory(npy, tuple(shape) or (0,), dtype.itemsize, "numpy")
            fh.seek(0)
            data = np.load(fh, allow_pickle=False)
    except FileNotFoundError as exc:
        raise StudyStoreError(f"{exc.filename}: an image of the study is missing; the study folder is incomplete") from exc
    except VolumeReadError as exc:
        raise StudyStoreError(str(exc)) from exc
    except (OSError, ValueError, AttributeError) as exc:
        raise StudyStoreError(f"{npy}: an image of the study cannot be read ({exc})") from exc
    if data.ndim != 3 or list(data.shape) != list(geometry.get("shape", [])):
        raise StudyStoreError(f"{npy}: an image of the study does not match its description; the study folder is damaged")
    window = geometry.get("window")
    return Volume(
        data=data.astype(np.float32, copy=False),
        spacing=tuple(float(s) for s in geometry["spacing_mm"]),  # type: ignore[arg-type]
        affine=np.asarray(geometry["affine"], float),
        modality=str(geometry.get("modality", "OT")),
        units=str(geometry.get("units", "a.u.")),
        window=(float(window[0]), float(window[1])) if window else None,
        source_format="study",
    )
