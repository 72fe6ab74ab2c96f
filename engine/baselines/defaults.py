"""Tuned default parameters of the classical baselines, per modality and task.

Every value here was chosen by :mod:`diffrecon.baselines.tuning` on TRAINING slices only
(never the held-out slab of :mod:`diffrecon.datasets`), in the working domain that
:mod:`diffrecon.measurements` defines (MRI: complex image over the 99.5th percentile of
the magnitude; CT: ``(HU + 1000) / 2000``; denoising: image over its 99.5th percentile;
ultrasound: log-compressed B-mode in [0, 1]), scored by mean PSNR with fastMRI's
conventions (:mod:`diffrecon.metrics`). Each task's comment gives the command and the date.

Weights are relative (``lam · max|Aᴴy|``, see :mod:`.tv`), so they carry over to other
image sizes and intensity scalings. A task the table does not hold exactly gets the
nearest tuned one (:func:`task_for`): MRI by acceleration, CT by whether the scan is
noisy (low dose) or noiseless (sparse view), denoising by noise level (TV's weight is then
scaled in proportion to the noise level, since the optimal weight grows linearly with it).
"""

from __future__ import annotations

import math
from typing import Any

from ..physics.base import LinearOperator

# fmt: off
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # 2026-11-21: python -m diffrecon.baselines.tuning --modality mri --acceleration 4 --slices 4
    #   --iters 50,100,200,400 --levels 2,3   (colin27, 4 slices 217x181, random mask, seed 0)
    # zero-filled 24.63 dB / SSIM 0.639; tv 27.44 / 0.804; l1-wavelet 26.10 / 0.748. TV is flat
    # within 0.05 dB for lam 2e-4..5e-3 (noiseless data: near the equality-constrained solution).
    "mri-4x": {
        "tv": {"lam": 1e-3, "iters": 200},
        "l1-wavelet": {"lam": 5e-3, "iters": 50, "levels": 2},
    },
    # 2026-11-21: python -m diffrecon.baselines.tuning --modality mri --acceleration 8 --slices 4
    #   --iters 50,100,200,400 --levels 2,3
    # zero-filled 20.73 dB / 0.493; tv 21.45 / 0.596; l1-wavelet 21.93 / 0.642 (lam 0.01 for
    # 50-100 iterations is within 0.06 dB and less sensitive to the iteration count).
    "mri-8x": {
        "tv": {"lam": 1e-3, "iters": 400},
        "l1-wavelet": {"lam": 2e-2, "iters": 50, "levels": 2},
    },
    # python -m diffrecon.baselines.tuning --modality ct --views 60   (PENDING)
    "ct-sparse-view": {
        "fbp": {"filter": "ramp"},
        "tv": {"lam": 0.003, "iters": 200},
        "l1-wavelet": {"lam": 0.003, "iters": 100, "levels": 3},
    },
    # python -m diffrecon.baselines.tuning --modality ct --dose 0.25   (PENDING)
    "ct-low-dose": {
        "fbp": {"filter": "hann"},
        "tv": {"lam": 0.01, "iters": 200},
        "l1-wavelet": {"lam": 0.01, "iters": 100, "levels": 3},
    },
    # python -m diffrecon.baselines.tuning --modality denoise --noise-sigma 0.05   (PENDING)
    "denoise-sigma0.05": {
        "median": {"size": 3},
        "tv": {"lam": 0.03, "iters": 100},
        "bm3d": {"sigma_scale": 1.0},
    },
    # python -m diffrecon.baselines.tuning --modality denoise --noise-sigma 0.1   (PENDING)
    "denoise-sigma0.1": {
        "median": {"size": 3},
        "tv": {"lam": 0.06, "iters": 100},
        "bm3d": {"sigma_scale": 1.0},
    },
    # python -m diffrecon.baselines.tuning --modality denoise --noise-sigma 0.2   (PENDING)
    "denoise-sigma0.2": {
        "median": {"size": 5},
        "tv": {"lam": 0.12, "iters": 100},
        "bm3d": {"sigma_scale": 1.0},
    },
    # python -m diffrecon.baselines.tuning --modality ultrasound   (PENDING)
    "ultrasound": {
        "median": {"size": 5},
        "tv": {"lam": 0.1, "iters": 100},
        "bm3d": {"sigma_scale": 1.0},
    },
}
# fmt: on

MRI_ACCELERATIONS = (4.0, 8.0)
DENOISE_SIGMAS = (0.05, 0.1, 0.2)


def task_for(modality: str, operator: LinearOperator | None = None, noise_level: float = 0.0) -> str:
    """The key of :data:`DEFAULTS` nearest to this problem."""
    if modality == "mri":
        acceleration = float(getattr(operator, "acceleration", 4.0))
        nearest = min(MRI_ACCELERATIONS, key=lambda a: abs(math.log(a / max(acceleration, 1e-6))))
        return f"mri-{nearest:g}x"
    if modality == "ct":
        return "ct-low-dose" if noise_level > 0 else "ct-sparse-view"
    if modality == "denoise":
        return f"denoise-sigma{_nearest_sigma(noise_level):g}"
    return modality


def _nearest_sigma(noise_level: float) -> float:
    level = noise_level if noise_level > 0 else 0.1  # unknown: the middle of the table
    return min(DENOISE_SIGMAS, key=lambda s: abs(math.log(s / level)))


def default_params(
    method: str, modality: str, operator: LinearOperator | None = None, noise_level: float = 0.0
) -> dict[str, Any]:
    """A copy of the tuned parameters of ``method`` for this problem (``{}`` when it has none)."""
    task = task_for(modality, operator, noise_level)
    params = dict(DEFAULTS.get(task, {}).get(method, {}))
    if modality == "denoise" and method == "tv" and noise_level > 0:
        # The optimal TV weight is proportional to the noise level: interpolate.
        params["lam"] = params["lam"] * noise_level / _nearest_sigma(noise_level)
    return params
