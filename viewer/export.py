"""Writing what the viewer shows: reconstruction and uncertainty volumes, and the metrics table.

Volumes go through the engine's ``save_volume`` (NIfTI, DICOM derived series, HDF5)
with provenance: the run's settings, the model, the diffrecon version and the input
file. Only the slices the run computed are written, with their true positions (unevenly
spaced ones on the finest even grid that holds them, the slices between them zero).
The four-pane PNG is grabbed by the window (it needs Qt); everything here is headless.
"""

from __future__ import annotations

import csv
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from diffrecon import __version__
from diffrecon.errors import DiffreconError

from .session import Session

# What each exportable layer is called in files and provenance.
EXPORTS = {
    "recon": ("diffusion", "diffusion reconstruction"),
    "sigma": ("uncertainty", "per-pixel standard deviation over the posterior samples"),
    "flags": ("flags", "hallucination map: 1 where the reconstruction departs from the baseline by more than "
                       "k calibrated sigma or sigma is above its threshold"),
    "baseline": ("baseline", "classical baseline"),
    "input": ("input", "measured input image"),
}
VOLUME_FILTERS = "NIfTI (*.nii.gz *.nii);;HDF5 (*.h5);;DICOM series folder (*)"


def _run_record(session: Session, command: str) -> dict:
    """What every file the viewer writes says about the run behind it."""
    run = session.run.provenance
    return {
        "diffrecon_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "input": None if session.path is None else str(session.path),
        **{key: run.get(key) for key in ("settings", "simulate", "diffusion", "model", "slices", "device")},
        # what the hold-outs chose per batch (dds-tv's TV weight, the blend with TV), as reconstruct's --report
        **{key: run[key] for key in ("sigma_units", "sigma_calibration", "out_of_domain", "adaptation") if key in run},
    }


def provenance(session: Session, layer: str) -> dict:
    baseline = session.run.provenance.get("baseline")
    return {
        **_run_record(session, "diffrecon view"),
        "output": EXPORTS[layer][1],
        "method": {"recon": "diffusion", "sigma": "diffusion", "flags": "diffusion", "baseline": baseline}.get(layer, "input"),
        "state": session.run.cancelled or ("complete" if session.run.finished else "running"),
        "slices_finished": sorted(session.run.slices_finished),  # every step done (a cancel keeps them)
    }


def computed_slices(session: Session, layer: str) -> np.ndarray:
    done = np.flatnonzero(session.layers[layer].filled)
    if done.size == 0:
        raise DiffreconError(f"there is no {EXPORTS[layer][0]} to export yet; press Run first")
    return done


def export_volume(session: Session, layer: str, path: str | Path) -> list[Path]:
    """Write one layer (only its computed slices) where the extension says; return the files."""
    from diffrecon.io import save_volume

    slices = computed_slices(session, layer)
    data = session.layers[layer].data[slices].astype(np.float32)
    window = session.volume.window if layer not in ("sigma", "flags") else None
    # each slice where it lay: unevenly spaced computed slices go on their grid (Volume.on_slice_grid)
    out = session.volume.on_slice_grid(slices, data, window=window)
    variance = None
    path = Path(path)
    if layer == "recon" and path.name.lower().endswith((".h5", ".hdf5")):
        sigma = session.layers["sigma"]
        if sigma.filled[slices].all():  # HDF5 keeps the uncertainty next to the image
            variance = session.volume.on_slice_grid(slices, sigma.data[slices] ** 2).data
    label = EXPORTS[layer][0]
    description = f"diffrecon {label} ({session.run.provenance.get('settings', {}).get('modality', '')})".strip()
    return save_volume(out, path, provenance=provenance(session, layer), variance=variance, description=description)


def export_metrics_csv(session: Session, path: str | Path) -> Path:
    """One row per pane with PSNR, SSIM, NMSE, MAE, plus the settings that produced them."""
    if not session.metrics:
        raise DiffreconError("there are no metrics to export; run with a reference (simulate) first")
    path = Path(path)
    run = session.run.provenance
    settings = run.get("settings") or {}
    diffusion = run.get("diffusion") or {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["pane", "method", "psnr", "ssim", "nmse", "mae", "slices", "input", "settings",
                             "model", "sampler", "guidance", "steps", "samples", "diffrecon_version"])
            for pane, values in session.metrics.items():
                method = {"diffusion": "diffusion", "baseline": run.get("baseline"), "input": "input"}.get(pane, pane)
                writer.writerow([
                    pane, method, *(_number(values.get(k)) for k in ("psnr", "ssim", "nmse", "mae")),
                    " ".join(str(s) for s in run.get("slices", [])), "" if session.path is None else session.path,
                    " ".join(f"{k}={v}" for k, v in settings.items()), run.get("model") or "",
                    diffusion.get("sampler", ""), diffusion.get("guidance", ""), diffusion.get("steps", ""),
                    diffusion.get("samples", ""), __version__,
                ])
    except OSError as exc:
        raise DiffreconError(f"{path}: could not be written ({exc.strerror or exc})") from exc
    return path


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.6g}"


PANE_LABELS = (("input", "input"), ("diffusion", "diffusion"), ("baseline", "baseline"))


def metrics_line(metrics: dict[str, dict[str, float]]) -> str:
    """One line of scores for a scripted run, with the metrics table's digits
    ("against the reference: input PSNR 20.59 dB SSIM 0.5629 NMSE 0.0469; diffusion ...")."""
    from .metrics_table import format_metric

    parts = []
    for key, label in PANE_LABELS:
        values = metrics.get(key)
        if values:
            psnr, ssim, nmse = (format_metric(k, values.get(k)) for k in ("psnr", "ssim", "nmse"))
            parts.append(f"{label} PSNR {psnr} dB SSIM {ssim} NMSE {nmse}")
    return ("against the reference: " + "; ".join(parts)) if parts else ""


def run_report(session: Session, stats: dict, completed: bool) -> dict:
    """What ``view --run --report`` writes: the run's settings, its metrics and timings."""
    return {
        **_run_record(session, "diffrecon view --run"),
        "completed": bool(completed),  # False: cancelled or failed; the metrics then cover what finished
        "baseline": session.run.provenance.get("baseline"),
        "metrics": session.metrics,
        "display": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()},
    }


def write_run_report(session: Session, stats: dict, completed: bool, path: str | Path) -> Path:
    import json

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run_report(session, stats, completed), indent=2, allow_nan=True))
    except OSError as exc:
        raise DiffreconError(f"{path}: the report could not be written ({exc.strerror or exc})") from exc
    return path
