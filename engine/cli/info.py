"""``diffrecon info PATH``: one screen about a scan."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..errors import quoted
from ..io import Volume, load_volume


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe a scan: format, shape, spacing, orientation, modality, intensities, k-space",
        description="Describe a scan (DICOM file or folder, NIfTI, fastMRI HDF5, NumPy) on one screen.",
    )
    p.add_argument("path", help="file or DICOM folder")
    p.add_argument("--series", help="which DICOM series, when a folder holds several (UID, number or description)")
    p.add_argument("--key", help="which array of an .npz / dataset of an .h5")
    p.add_argument("--json", action="store_true", help="print the facts as JSON")
    p.set_defaults(run=run)


def describe(vol: Volume) -> dict:
    """The facts ``info`` prints, as a JSON-able dict."""
    lo, hi = vol.intensity_range()
    facts = {
        "path": str(vol.source_path) if vol.source_path else None,
        "format": vol.source_format,
        "shape": list(vol.shape),
        "dtype": str(vol.data.dtype),
        "spacing_mm": [round(s, 4) for s in vol.spacing],
        "orientation": "".join(vol.orientation()),
        "modality": vol.modality,
        "units": vol.units,
        "intensity_range": [lo, hi],
        "window": list(vol.window) if vol.window else None,
        "kspace": None,
        "reference": vol.reference is not None,
    }
    if vol.kspace is not None:
        k = vol.kspace
        facts["kspace"] = {
            "shape": list(k.data.shape),
            "multicoil": k.multicoil,
            "coils": int(k.data.shape[1]),
            "fully_sampled": k.fully_sampled,
            "acceleration": round(k.acceleration, 2),
            "recon_size": list(k.recon_size) if k.recon_size else None,
        }
    for key in ("series_description", "series_uid", "series_number", "patient_id", "study_date", "series_available",
                "warnings"):
        if key in vol.metadata:
            facts[key] = vol.metadata[key]
    return facts


def _format(facts: dict) -> str:
    rows = [
        ("File", quoted(facts["path"])),
        ("Format", facts["format"]),
        ("Modality", facts["modality"]),
        ("Shape", " x ".join(map(str, facts["shape"])) + "  (slices x rows x cols)"),
        ("Spacing", " x ".join(f"{s:g}" for s in facts["spacing_mm"]) + " mm"),
        ("Orientation", f"{facts['orientation']}  (direction each axis increases towards)"),
        ("Intensities", f"{facts['intensity_range'][0]:.6g} .. {facts['intensity_range'][1]:.6g} {facts['units']}"),
    ]
    if facts["window"]:
        rows.append(("Window", f"center {facts['window'][0]:g}, width {facts['window'][1]:g}"))
    for key, label in (("series_description", "Series"), ("series_number", "Series no."), ("study_date", "Study date")):
        if facts.get(key) not in (None, ""):
            rows.append((label, str(facts[key])))
    k = facts["kspace"]
    if k:
        sampling = "fully sampled" if k["fully_sampled"] else f"undersampled, R = {k['acceleration']:g}"
        coils = f"{k['coils']} coils" if k["multicoil"] else "single coil"
        rows.append(("K-space", f"yes: {' x '.join(map(str, k['shape']))}, {coils}, {sampling}"))
    else:
        rows.append(("K-space", "no"))
    if facts["reference"]:
        rows.append(("Reference", "yes (a ground-truth image is stored with the data)"))
    if facts.get("series_available"):
        rows.append(("Other series", "; ".join(facts["series_available"])))
    for text in facts.get("warnings", []):  # what the reader noticed and did not refuse, one line each
        rows.append(("Warning", text))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _import_nibabel_without_pydicom() -> None:
    """Import nibabel as if pydicom were missing, unless something has loaded pydicom already.

    nibabel imports all of pydicom (with tqdm, PIL and urllib) at its own import, for DICOM
    headers inside NIfTI extensions, which ``info`` never reads: that was about 60 % of
    nibabel's import time and kept ``diffrecon info scan.nii.gz`` above its 0.5 s start-up
    target. ``info`` is single-threaded, so no other import can meet the blocked name; a
    DICOM file still imports pydicom itself, later, in full.
    """
    if "nibabel" in sys.modules or "pydicom" in sys.modules:
        return
    sys.modules["pydicom"] = None  # type: ignore[assignment]  # "not installed" to nibabel's optional_package
    try:
        import nibabel  # noqa: F401
    finally:
        del sys.modules["pydicom"]


def run(args: argparse.Namespace) -> int:
    _import_nibabel_without_pydicom()
    vol = load_volume(args.path, series=args.series, key=args.key)
    facts = describe(vol)
    if args.json:
        print(json.dumps(facts, indent=2, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    else:
        print(_format(facts))
    return 0
