"""Tuned default parameters of the classical baselines, per modality and task.

Every value here was chosen by :mod:`diffrecon.baselines.tuning` on TRAINING slices only
(never the held-out slab of :mod:`diffrecon.datasets`), in the working domain that
:mod:`diffrecon.measurements` defines (MRI: complex image over the 99.5th percentile of
the magnitude; CT: ``(HU + 1000) / 2000``; denoising: image over its 99.5th percentile;
ultrasound: log-compressed B-mode in [0, 1]), scored by volume PSNR and SSIM with
fastMRI's conventions (:mod:`diffrecon.metrics`); the cheapest setting within 0.1 dB of
the best PSNR and 0.01 of the best SSIM wins. Each task's comment gives the command, the
date and the scores (input, then each method).

Weights are relative (``lam · max|Aᴴy|``, see :mod:`.tv`), so they carry over to other
image sizes and intensity scalings. A task the table does not hold exactly gets the
nearest tuned one (:func:`task_for`): MRI by acceleration, CT by whether the scan is
noisy (low dose) or noiseless (sparse view; fewer than 45 views need more TV iterations), denoising by noise level (TV's weight is then
scaled in proportion to the noise level: the tuned weights are 0.6-0.8 times sigma).
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
    # 2026-11-21: python -m diffrecon.baselines.tuning --modality ct --views 60 --slices 2
    #   --levels 2,3 --iters 100,200,300   (cranium, 2 slices 256x256, noiseless)
    # fbp (ramp) 29.52 dB / 0.754, cosine 29.63 / 0.799; tv 44.38 / 0.992; l1-wavelet 39.88 / 0.954.
    # Noiseless data: the smallest weight and the most iterations win (the equality-
    # constrained limit); tv still gives 40.3 dB after 100 iterations (lam 3e-4) at a third
    # of the cost (~0.25 s per iteration per 256x256 slice on one CPU thread).
    # TV since 2026-12-01: FISTA with x >= 0 and the weight decaying from 1e-3 to 3e-5 over 80 of 100
    # iterations (engine/baselines/tv.py), 3x fewer iterations of the same cost; chosen on 2 training
    # slices (python -m diffrecon.baselines.tuning --modality ct --views 60 --slices 2 --methods tv
    # --tv-solvers pdhg,fista --lams 3e-5 --iters 100,300): PDHG 300 iterations 44.37 dB, FISTA 100
    # iterations 45.03 (lam_start 3e-4: 43.25). Reported, not chosen, on the held-out cranium slab and
    # the stent test subject: python -m diffrecon.experiments.tv_ct (README "Where users wait").
    "ct-sparse-view": {
        "fbp": {"filter": "cosine"},
        "tv": {"lam": 3e-5, "iters": 100, "solver": "fista", "lam_start": 1e-3},
        "l1-wavelet": {"lam": 1e-4, "iters": 300, "levels": 3},
    },
    # Fewer than 45 views (task_for): FISTA needs 200 iterations to pass PDHG's 300 there.
    # 2026-12-01: python -m diffrecon.baselines.tuning --modality ct --views 30 --slices 2 --methods tv
    #   --tv-solvers pdhg,fista --lams 3e-5 --iters 100,200,300   (2 training slices of cranium)
    # PDHG 300 iterations 39.62 dB / 0.9706; FISTA 100 37.43 / 0.9555, 200 39.85 / 0.9762.
    "ct-sparse-view-few": {
        "fbp": {"filter": "cosine"},
        "tv": {"lam": 3e-5, "iters": 200, "solver": "fista", "lam_start": 1e-3},
        "l1-wavelet": {"lam": 1e-4, "iters": 300, "levels": 3},
    },
    # 2026-11-21: python -m diffrecon.baselines.tuning --modality ct --dose 0.25 --slices 2 --levels 3
    #   --lams 3e-4,1e-3,3e-3,1e-2,3e-2 --iters 50,100,200   (cranium, 180 views, 1024 photons/bin)
    # fbp ramp 22.24 dB / 0.313, hann 27.59 / 0.596; tv 33.95 / 0.921; l1-wavelet 30.44 / 0.845.
    # Both iterative methods are converged at 50 iterations (within 0.1 dB of 100 and 200).
    "ct-low-dose": {
        "fbp": {"filter": "hann"},
        "tv": {"lam": 3e-3, "iters": 50},
        "l1-wavelet": {"lam": 1e-2, "iters": 50, "levels": 3},
    },
    # 2026-11-21: python -m diffrecon.baselines.tuning --modality denoise --noise-sigma 0.05
    #   --slices 4 --iters 25,50,100,200   (colin27, 4 slices 217x181; bm3d 4.0.3 installed aside)
    # noisy 27.96 dB / 0.639; median 33.10 / 0.834; tv 34.30 / 0.899; bm3d 37.29 / 0.965.
    "denoise-sigma0.05": {
        "median": {"size": 3},
        "tv": {"lam": 0.03, "iters": 200},
        "bm3d": {"sigma_scale": 1.25},
    },
    # 2026-11-21: ... --modality denoise --noise-sigma 0.1 (same options)
    # noisy 21.94 dB / 0.408; median 29.34 / 0.725; tv 30.74 / 0.835; bm3d 33.73 / 0.923.
    "denoise-sigma0.1": {
        "median": {"size": 5},
        "tv": {"lam": 0.08, "iters": 50},
        "bm3d": {"sigma_scale": 1.0},
    },
    # 2026-11-21: ... --modality denoise --noise-sigma 0.2 (same options)
    # noisy 15.92 dB / 0.210; median 25.93 / 0.577; tv 27.44 / 0.688; bm3d 30.12 / 0.839.
    "denoise-sigma0.2": {
        "median": {"size": 7},
        "tv": {"lam": 0.12, "iters": 100},
        "bm3d": {"sigma_scale": 1.0},
    },
    # 2026-12-01, after the B-mode reference fix (session 4), on the real echo frames the
    # ultrasound prior trains on (frames 0-6; 7-9 are held out): python -m
    #   diffrecon.baselines.tuning --modality ultrasound --dataset echo --min-foreground 0.05
    #   --methods median,tv --slices 4 --iters 25,50,100,200 --threads 1
    # speckled input 29.78 dB / 0.968; median 3: 27.22 / 0.954 (every median is below the
    # input here); tv lam 0.05, 25 iters: 33.46 / 0.974. (On B-mode simulated from colin27 the
    # same search picks lam 0.12 and median 5, which score 1.5 dB lower on the echo frames.)
    # bm3d from 2026-11-21 (30.84 / 0.899 on colin27 then).
    "ultrasound": {
        "median": {"size": 3},
        "tv": {"lam": 0.05, "iters": 25},
        "bm3d": {"sigma_scale": 1.25},
    },
}
# fmt: on

MRI_ACCELERATIONS = (4.0, 8.0)
FEW_VIEWS = 45  # sparse-view CT below this many views gets "ct-sparse-view-few"
DENOISE_SIGMAS = (0.05, 0.1, 0.2)


def task_for(modality: str, operator: LinearOperator | None = None, noise_level: float = 0.0) -> str:
    """The key of :data:`DEFAULTS` nearest to this problem."""
    if modality == "mri":
        acceleration = float(getattr(operator, "acceleration", 4.0))
        nearest = min(MRI_ACCELERATIONS, key=lambda a: abs(math.log(a / max(acceleration, 1e-6))))
        return f"mri-{nearest:g}x"
    if modality == "ct":
        if noise_level > 0:
            return "ct-low-dose"
        return "ct-sparse-view-few" if int(getattr(operator, "n_views", 60)) < FEW_VIEWS else "ct-sparse-view"
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
    table = DEFAULTS.get(task, {})
    # 3D TV takes 2D TV's tuned weight: the same relative unit, one more direction.
    params = dict(table.get(method, table.get("tv", {}) if method == "tv-3d" else {}))
    if method == "tv-3d" and params.pop("solver", "pdhg") == "fista":
        # 3D TV runs PDHG, which needs the 300 iterations 2D TV had before FISTA (comments above).
        params.pop("lam_start", None)
        params["iters"] = 300
    if modality == "denoise" and method == "tv" and noise_level > 0:
        # The optimal TV weight is proportional to the noise level: interpolate.
        params["lam"] = params["lam"] * noise_level / _nearest_sigma(noise_level)
    return params
