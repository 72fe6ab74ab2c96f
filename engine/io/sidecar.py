"""The JSON sidecar that records how an output was made (settings, model, version).

NIfTI and NumPy outputs get ``<stem>.json`` beside them (``recon.nii.gz`` ->
``recon.json``, the BIDS convention); a DICOM series folder gets ``provenance.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def sidecar_path(output: str | Path) -> Path:
    """``<stem>.json`` beside ``output`` (``scan.nii.gz`` -> ``scan.json``)."""
    p = Path(output)
    name = p.name
    for ext in (".nii.gz", ".nii", ".npy", ".npz", ".h5", ".hdf5", ".gz"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = p.stem
    return p.with_name(name + ".json")


def write_sidecar(output: str | Path, provenance: dict[str, Any]) -> Path:
    """Write ``provenance`` as pretty JSON to :func:`sidecar_path` of ``output``."""
    return write_json(sidecar_path(output), provenance)


def jsonable(obj: Any) -> Any:
    """JSON fallback for the NumPy scalars/arrays and paths provenance dicts hold."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def write_json(target: Path, obj: dict[str, Any]) -> Path:
    """``obj`` as pretty UTF-8 JSON at ``target`` (NumPy values and paths made plain)."""
    target.write_text(json.dumps(obj, indent=2, default=jsonable, ensure_ascii=False) + "\n", encoding="utf-8")
    return target

