"""Grid-search the baselines' parameters on training slices; prints a table and the winners.

    python -m diffrecon.baselines.tuning --modality mri --acceleration 4
    python -m diffrecon.baselines.tuning --modality ct --views 60
    python -m diffrecon.baselines.tuning --modality ct --dose 0.25
    python -m diffrecon.baselines.tuning --modality denoise --noise-sigma 0.1
    python -m diffrecon.baselines.tuning --modality ultrasound

Protocol (what makes the defaults in :mod:`.defaults` honest):

* slices come only from :func:`diffrecon.datasets.training_blocks` (never the held-out
  slab): ``--slices`` axial slices spaced evenly over those with at least 30 % of their
  pixels inside the object (colin27 for MRI, denoising and ultrasound, whose reflectivity
  map is the MR image; cranium for CT);
* measurements, working domain and reference are made by
  :class:`diffrecon.measurements.ProblemSource`, exactly as ``diffrecon reconstruct
  --simulate`` makes them (same scaling, masks, dose and speckle models, seed);
* each iterative run records the image at several iteration counts (one run per weight
  serves the whole iteration grid);
* the score is the volume PSNR and SSIM over the chosen slices (fastMRI's conventions,
  :func:`diffrecon.metrics.evaluate`); the chosen setting of each method is the cheapest
  (fewest iterations) within 0.1 dB of its best PSNR and 0.01 of its best SSIM.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from ..datasets import load_dataset, object_fraction, training_blocks
from ..io.volume import Volume
from ..measurements import MeasurementSettings, ProblemSource, ReconProblem
from ..metrics import evaluate, format_table
from . import METHODS_FOR_MODALITY, finish, solve_tv, warm_start
from .defaults import default_params
from .denoise import bm3d_available, bm3d_denoise, median_denoise
from .tv import tv_denoise
from .wavelet import l1_wavelet_reconstruct

DATASET_FOR = {"mri": "colin27", "ct": "cranium", "denoise": "colin27", "ultrasound": "colin27"}
#: default weight grids (relative weights; see diffrecon.baselines.tv)
LAMS = {
    "mri": (2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2),
    "ct": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
    "denoise": (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3),
    "ultrasound": (0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3),
}
ITERS = (50, 100, 200, 400)
#: a run this close to the best PSNR (dB) and SSIM with fewer iterations is preferred: it is cheaper
PSNR_TOLERANCE_DB = 0.1
SSIM_TOLERANCE = 0.01


def training_slices(name: str, count: int, min_foreground: float = 0.3) -> np.ndarray:
    """``count`` axial slices ``(count, H, W)`` from the training blocks of dataset ``name``."""
    vol = load_dataset(name)
    candidates = []
    for block in training_blocks(vol, name):
        for image in block:
            if object_fraction(image, vol.units)[0] >= min_foreground:
                candidates.append(image)
    if len(candidates) < count:
        raise SystemExit(f"only {len(candidates)} training slices of {name} qualify; ask for fewer")
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return np.stack([candidates[i] for i in picks])


def make_problem(
    modality: str, slices: np.ndarray, settings: MeasurementSettings
) -> tuple[ProblemSource, ReconProblem]:
    """The simulated problem ``diffrecon reconstruct --simulate`` would make from these slices."""
    is_ct = modality == "ct"
    volume = Volume(slices.astype(np.float32), modality="CT" if is_ct else "MR", units="HU" if is_ct else "a.u.")
    source = ProblemSource(volume, settings, simulate=True)
    return source, source.problem(source.slice_index)


def _score(source: ProblemSource, problem: ReconProblem, x: torch.Tensor) -> dict[str, float]:
    def magnitude(t: torch.Tensor) -> np.ndarray:
        t = source.working_reference_crop(t)[:, 0]
        return (t.abs() if t.is_complex() else t).float().numpy()

    return evaluate(magnitude(problem.reference), magnitude(x))


#: ``run(lam, iters, callback)``: one iterative reconstruction that reports each iterate
IterativeRun = Callable[[float, int, Callable[[int, torch.Tensor], None]], torch.Tensor]


def _iterative_rows(method: str, run: IterativeRun, lams: Iterable[float], iters: Iterable[int],
                    extra: dict[str, Any], source: ProblemSource, problem: ReconProblem,
                    *, run_per_checkpoint: bool = False) -> list[dict[str, Any]]:
    """One run per weight; the image is scored at every checkpoint in ``iters``.

    ``run_per_checkpoint``: one run per iteration count instead, for solvers whose schedule
    depends on the count (FISTA's continuation), so an early iterate is not what that many
    iterations give."""
    checkpoints = sorted({int(i) for i in iters})
    rows = []
    for lam in lams:
        for ends in ([[c] for c in checkpoints] if run_per_checkpoint else [checkpoints]):
            snapshots: dict[int, torch.Tensor] = {}

            def keep(k: int, x: torch.Tensor, snapshots: dict[int, torch.Tensor] = snapshots,
                     ends: list[int] = ends) -> None:
                if k + 1 in ends:
                    snapshots[k + 1] = x.clone()

            start = time.perf_counter()
            run(lam, ends[-1], keep)
            seconds = (time.perf_counter() - start) / problem.y.shape[0]
            for it in ends:
                x = finish(snapshots[it], problem.modality, problem.y)
                rows.append({"method": method, "lam": lam, "iters": it, **extra, **_score(source, problem, x),
                             "seconds_per_slice": seconds * it / ends[-1]})
    return rows


def tune(modality: str, slices: np.ndarray, settings: MeasurementSettings, *, methods: Iterable[str],
         lams: Iterable[float] | None = None, iters: Iterable[int] = ITERS,
         levels: Iterable[int] = (2, 3, 4), tv_solvers: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every grid point of every method, as rows of metrics. ``tv_solvers`` (``pdhg``, ``fista``)
    default to the task's tuned solver, with its other settings (``lam_start``)."""
    with torch.no_grad():  # scoped: a library call must not switch autograd off for its caller
        return _tune(modality, slices, settings, methods=methods, lams=lams, iters=iters, levels=levels,
                     tv_solvers=tv_solvers)


def _tune(modality: str, slices: np.ndarray, settings: MeasurementSettings, *, methods: Iterable[str],
          lams: Iterable[float] | None, iters: Iterable[int], levels: Iterable[int],
          tv_solvers: Iterable[str] | None = None) -> list[dict[str, Any]]:
    source, problem = make_problem(modality, slices, settings)
    op, y, sigma = problem.operator, problem.y, problem.noise_level
    denoising = modality in ("denoise", "ultrasound")
    lams = tuple(lams or LAMS[modality])
    rows = [{"method": "input", **_score(source, problem, problem.observed)}]
    x0 = warm_start(op, y, modality, sigma)
    for method in methods:
        if method == "fbp":
            for name in ("ramp", "shepp-logan", "cosine", "hann"):
                rows.append({"method": "fbp", "filter": name,
                             **_score(source, problem, finish(op.fbp(y, filter=name), modality, y))})
        elif method == "median":
            for size in (3, 5, 7):
                rows.append({"method": "median", "size": size,
                             **_score(source, problem, finish(median_denoise(y, size), modality, y))})
        elif method == "bm3d":
            if not bm3d_available():
                print("bm3d is not installed: skipped", file=sys.stderr)
                continue
            for scale in (0.8, 1.0, 1.25, 1.5):
                denoised = bm3d_denoise(y, sigma or None, sigma_scale=scale)
                rows.append({"method": "bm3d", "sigma_scale": scale,
                             **_score(source, problem, finish(denoised, modality, y))})
        elif method == "tv" and denoising:
            rows += _iterative_rows("tv", lambda lam, n, cb: tv_denoise(y, lam, iters=n, callback=cb),
                                    lams, iters, {}, source, problem)
        elif method == "tv":
            tuned = default_params("tv", modality, op, sigma)
            for solver in tv_solvers or [tuned.get("solver", "pdhg")]:
                fixed = {k: v for k, v in tuned.items() if k not in ("lam", "iters")} | {"solver": solver}

                def run_tv(lam: float, n: int, cb: Callable[[int, torch.Tensor], None],
                           fixed: dict[str, Any] = fixed) -> torch.Tensor:
                    return solve_tv(op, y, modality, {**fixed, "lam": lam, "iters": n}, x0=x0, callback=cb)

                rows += _iterative_rows("tv", run_tv, lams, iters, {"solver": solver}, source, problem,
                                        run_per_checkpoint=solver == "fista")
        elif method == "l1-wavelet":
            for level in levels:
                rows += _iterative_rows(
                    "l1-wavelet",
                    lambda lam, n, cb, level=level: l1_wavelet_reconstruct(op, y, lam, iters=n, x0=x0, levels=level,
                                                                           callback=cb),
                    lams, iters, {"levels": level}, source, problem)
        elif method != "zero-filled":
            raise SystemExit(f"unknown method {method}")
    return rows


def best_per_method(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each method's chosen row: the fewest iterations among the rows within
    ``PSNR_TOLERANCE_DB`` of its best PSNR and ``SSIM_TOLERANCE`` of its best SSIM (ties
    broken by PSNR); the best-PSNR row when no row is near both bests."""
    chosen: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        own = [r for r in rows if r["method"] == method]
        top_psnr, top_ssim = max(r["psnr"] for r in own), max(r["ssim"] for r in own)
        near = [r for r in own if r["psnr"] >= top_psnr - PSNR_TOLERANCE_DB and r["ssim"] >= top_ssim - SSIM_TOLERANCE]
        if near:
            chosen[method] = min(near, key=lambda r: (r.get("iters", 0), -r["psnr"]))
        else:
            chosen[method] = max(own, key=lambda r: r["psnr"])
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.baselines.tuning", description=__doc__.split("\n")[0])
    p.add_argument("--modality", required=True, choices=tuple(METHODS_FOR_MODALITY))
    p.add_argument("--methods", help="comma-separated (default: every method of the modality)")
    p.add_argument("--slices", type=int, default=6, help="training slices to score on (default 6)")
    p.add_argument("--dataset", help="default: colin27 (cranium for CT)")
    p.add_argument("--min-foreground", type=float, default=0.3,
                   help="fraction of a slice the object must fill to be scored (default 0.3; an echo sector fills less)")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--mask", default="random")
    p.add_argument("--views", type=int)
    p.add_argument("--dose", type=float)
    p.add_argument("--noise-sigma", type=float, default=0.1)
    p.add_argument("--looks", type=float, default=1.0)
    p.add_argument("--lams", help="comma-separated weights (default: a log grid)")
    p.add_argument("--iters", default=",".join(str(i) for i in ITERS), help="iteration checkpoints")
    p.add_argument("--levels", default="2,3,4", help="wavelet levels to try")
    p.add_argument("--tv-solvers", help="comma-separated TV solvers to compare: pdhg, fista (default: the tuned one)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    methods = args.methods.split(",") if args.methods else list(METHODS_FOR_MODALITY[args.modality])
    settings = MeasurementSettings(
        modality=args.modality, acceleration=args.acceleration, mask=args.mask, views=args.views, dose=args.dose,
        noise_sigma=args.noise_sigma, looks=args.looks, seed=0,
    )
    dataset = args.dataset or DATASET_FOR[args.modality]
    slices = training_slices(dataset, args.slices, args.min_foreground)
    print(f"{settings.describe()}; {len(slices)} training slices of {dataset} ({slices.shape[1]}x{slices.shape[2]})")
    rows = tune(
        args.modality, slices, settings, methods=methods,
        lams=[float(v) for v in args.lams.split(",")] if args.lams else None,
        iters=[int(v) for v in args.iters.split(",")], levels=[int(v) for v in args.levels.split(",")],
        tv_solvers=args.tv_solvers.split(",") if args.tv_solvers else None,
    )
    columns = ("method", "solver", "filter", "size", "sigma_scale", "levels", "lam", "iters", "psnr", "ssim", "seconds_per_slice")
    used = tuple(c for c in columns if any(c in r for r in rows))
    print(format_table(rows, used))
    print(f"\nchosen per method (fewest iterations within {PSNR_TOLERANCE_DB} dB of the best PSNR and "
          f"{SSIM_TOLERANCE} of the best SSIM):")
    for method, row in best_per_method(rows).items():
        keys = ("solver", "filter", "size", "sigma_scale", "levels", "lam", "iters")
        settings_text = ", ".join(f"{k}={row[k]}" for k in keys if k in row)
        print(f"  {method:<11} {settings_text:<40} PSNR {row['psnr']:.2f}  SSIM {row['ssim']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
