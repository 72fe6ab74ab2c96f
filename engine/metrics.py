"""Image-quality metrics with fastMRI's conventions, and a stopwatch for timings.

Every method diffrecon compares (diffusion samplers and classical baselines) is scored
here, so the numbers in a results table mean the same thing for all of them and match
what the fastMRI literature reports (``fastmri/evaluate.py``):

* inputs are magnitude volumes ``(slices, rows, cols)``; complex inputs are reduced to
  their magnitude, a single 2D image counts as one slice;
* **PSNR** uses ``data_range = max(reference volume)`` and the mean squared error over
  the whole volume (not the mean of per-slice PSNRs);
* **SSIM** is ``skimage.metrics.structural_similarity`` per slice (7x7 uniform window,
  skimage's defaults) with the same volume-wide ``data_range``, averaged over slices;
* **NMSE** is ``||ref - est||² / ||ref||²`` and **MAE** the mean absolute error.

Per-slice rows use the same volume-wide data range, so a slice's PSNR is comparable
with the volume's. :class:`Stopwatch` measures seconds per slice for the same tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from .errors import DiffreconError

#: SSIM window (fastMRI's evaluate.py relies on skimage's default of 7).
SSIM_WIN_SIZE = 7

METRIC_NAMES = ("psnr", "ssim", "nmse", "mae")


def _as_volumes(reference: Any, estimate: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float64 magnitude volumes of the same (slices, rows, cols) shape."""
    ref, est = np.asarray(reference), np.asarray(estimate)
    if ref.shape != est.shape:
        raise DiffreconError(
            f"the estimate has shape {est.shape} but the reference has shape {ref.shape}, so they cannot be compared."
        )
    if ref.ndim == 2:
        ref, est = ref[None], est[None]
    if ref.ndim != 3:
        raise DiffreconError(f"metrics need (slices, rows, cols) volumes; got {ref.ndim} dimensions.")
    # Magnitude first (complex MR images), then float64 so sums over big volumes stay exact.
    ref = np.abs(ref).astype(np.float64) if np.iscomplexobj(ref) else ref.astype(np.float64)
    est = np.abs(est).astype(np.float64) if np.iscomplexobj(est) else est.astype(np.float64)
    return ref, est


def _data_range(ref: np.ndarray) -> float:
    peak = float(ref.max())
    if not peak > 0:
        raise DiffreconError("the reference volume has no positive value, so PSNR and SSIM are undefined.")
    return peak


def psnr(reference: Any, estimate: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``data_range`` defaults to the reference volume's maximum."""
    ref, est = _as_volumes(reference, estimate)
    peak = _data_range(ref) if data_range is None else float(data_range)
    mse = float(np.mean((ref - est) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))


def ssim(reference: Any, estimate: Any, data_range: float | None = None) -> float:
    """Mean over slices of skimage's SSIM, with one data range for the whole volume."""
    ref, est = _as_volumes(reference, estimate)
    peak = _data_range(ref) if data_range is None else float(data_range)
    return float(np.mean(_ssim_per_slice(ref, est, peak)))


def _ssim_per_slice(ref: np.ndarray, est: np.ndarray, peak: float) -> np.ndarray:
    if min(ref.shape[1:]) < SSIM_WIN_SIZE:
        raise DiffreconError(
            f"SSIM needs slices of at least {SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} pixels; got {ref.shape[1:]}."
        )
    return np.array(
        [structural_similarity(r, e, data_range=peak, win_size=SSIM_WIN_SIZE) for r, e in zip(ref, est)]
    )


def nmse(reference: Any, estimate: Any) -> float:
    """Normalised mean squared error ``||ref - est||² / ||ref||²`` (0 is perfect)."""
    ref, est = _as_volumes(reference, estimate)
    energy = float(np.sum(ref**2))
    if energy == 0:
        raise DiffreconError("the reference volume is all zeros, so NMSE is undefined.")
    return float(np.sum((ref - est) ** 2) / energy)


def mae(reference: Any, estimate: Any) -> float:
    """Mean absolute error, in the images' own units."""
    ref, est = _as_volumes(reference, estimate)
    return float(np.mean(np.abs(ref - est)))


def evaluate(reference: Any, estimate: Any) -> dict[str, float]:
    """All volume-level metrics: ``{"psnr", "ssim", "nmse", "mae"}`` (fastMRI conventions)."""
    ref, est = _as_volumes(reference, estimate)
    peak = _data_range(ref)
    mse = float(np.mean((ref - est) ** 2))
    return {
        "psnr": float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse)),
        "ssim": float(np.mean(_ssim_per_slice(ref, est, peak))),
        "nmse": float(np.sum((ref - est) ** 2) / np.sum(ref**2)),
        "mae": float(np.mean(np.abs(ref - est))),
    }


def through_plane_metrics(reference: Any, estimate: Any) -> dict[str, float]:
    """How well a volume ``(slices, rows, cols)`` holds together across slices.

    * ``coronal_*`` / ``sagittal_*``: PSNR and SSIM of the reformats (the images at each
      row / column, slices running down), averaged over those images, with the volume's
      data range. Volume-wide PSNR is the same in every plane (the same voxels), so the
      PSNR here is the mean of the per-image figures; SSIM sees the through-plane
      structure (stripes) directly.
    * ``slice_diff_*``: PSNR and SSIM of the slice-to-slice difference image
      ``v[s + 1] - v[s]`` against the reference's (the volume's data range again), and
      ``slice_diff_nrmse``, ``||D_z est - D_z ref|| / ||D_z ref||``: what independent
      slices get wrong even where each slice alone looks right.
    """
    ref, est = _as_volumes(reference, estimate)
    if ref.shape[0] < 2:
        raise ValueError("through-plane metrics need at least two slices")
    peak = _data_range(ref)
    out: dict[str, float] = {}
    for plane, axes in (("coronal", (1, 0, 2)), ("sagittal", (2, 0, 1))):
        r, e = np.ascontiguousarray(ref.transpose(axes)), np.ascontiguousarray(est.transpose(axes))
        mse = np.mean((r - e) ** 2, axis=(1, 2))
        psnrs = 10.0 * np.log10(peak**2 / np.maximum(mse, 1e-30))
        out[f"{plane}_psnr"] = float(np.mean(psnrs))
        out[f"{plane}_ssim"] = float(np.mean(_ssim_per_slice(r, e, peak))) if min(r.shape[1:]) >= SSIM_WIN_SIZE \
            else float("nan")
    d_ref, d_est = np.diff(ref, axis=0), np.diff(est, axis=0)
    mse = float(np.mean((d_ref - d_est) ** 2))
    out["slice_diff_psnr"] = float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse))
    out["slice_diff_ssim"] = float(np.mean(_ssim_per_slice(d_ref, d_est, peak)))
    out["slice_diff_nrmse"] = float(np.sqrt(np.sum((d_ref - d_est) ** 2) / max(np.sum(d_ref**2), 1e-30)))
    return out


def evaluate_slices(reference: Any, estimate: Any) -> list[dict[str, float]]:
    """One row of metrics per slice (``slice`` index included), all with the volume's data range.

    NMSE per slice is normalised by that slice's own energy (a slice of zeros gets NaN).
    """
    ref, est = _as_volumes(reference, estimate)
    peak = _data_range(ref)
    ssims = _ssim_per_slice(ref, est, peak)
    rows = []
    for i, (r, e) in enumerate(zip(ref, est)):
        mse = float(np.mean((r - e) ** 2))
        energy = float(np.sum(r**2))
        rows.append(
            {
                "slice": i,
                "psnr": float("inf") if mse == 0 else float(10.0 * np.log10(peak**2 / mse)),
                "ssim": float(ssims[i]),
                "nmse": float(np.sum((r - e) ** 2) / energy) if energy > 0 else float("nan"),
                "mae": float(np.mean(np.abs(r - e))),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> str:
    """A plain-text table (one line per row) of metric dicts, for the CLI and the tuning script."""
    if not rows:
        return ""
    columns = columns or tuple(rows[0].keys())
    formats = {"psnr": "{:.2f}", "ssim": "{:.4f}", "nmse": "{:.5f}", "mae": "{:.5f}", "seconds_per_slice": "{:.3f}"}

    def cell(key: str, value: Any) -> str:
        if isinstance(value, float):
            return formats.get(key, "{:.4g}").format(value)
        return str(value)

    cells = [[cell(c, row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


@dataclass
class Stopwatch:
    """Accumulates wall-clock time over ``with watch.running():`` blocks.

    ``seconds_per_slice(n)`` divides the total by the number of slices processed, the
    figure results tables report next to PSNR/SSIM. Only the time inside the blocks
    counts, so loading and writing files can stay out of it.
    """

    seconds: float = 0.0
    laps: list[float] = field(default_factory=list)

    @contextmanager
    def running(self) -> Iterator[Stopwatch]:
        start = time.perf_counter()
        try:
            yield self
        finally:
            lap = time.perf_counter() - start
            self.laps.append(lap)
            self.seconds += lap

    def seconds_per_slice(self, n_slices: int) -> float:
        if n_slices <= 0:
            raise ValueError("n_slices must be positive")
        return self.seconds / n_slices
