"""CT TV's solvers side by side on subjects the defaults were not tuned on:
``python -m diffrecon.experiments.tv_ct [--views 60] [--threads 1]``.

For the held-out slab of ``cranium`` (validation) and the ``stent`` test subject, 60 views
simulated as ``diffrecon reconstruct --simulate`` does, it runs PDHG with 300 iterations
(the CT default until 2026-12-01) and the tuned default (:mod:`diffrecon.baselines.defaults`:
FISTA, ``x >= 0``, continuation, 100 iterations) and prints the volume PSNR and SSIM and
seconds per slice of each, and the time ratio (measured interleaved in one process, so it
holds on a busy machine). The choice itself was made on training slices
(``python -m diffrecon.baselines.tuning``); this only reports.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from ..baselines import default_params, finish, solve_tv, warm_start
from ..baselines.tuning import _score, make_problem
from ..datasets import evaluation_slices, load_dataset
from ..measurements import MeasurementSettings

SUBJECTS = {"cranium": "validation (held-out slab)", "stent": "test"}


def compare(views: int = 60, slices: int = 3) -> list[dict[str, Any]]:
    rows = []
    settings = MeasurementSettings(modality="ct", views=views, seed=0)
    for name, role in SUBJECTS.items():
        volume = load_dataset(name)
        index = evaluation_slices(volume, name, count=slices)
        source, problem = make_problem("ct", volume.data[index], settings)
        op, y = problem.operator, problem.y
        tuned = default_params("tv", "ct", op, problem.noise_level)
        candidates = {"pdhg 300 (before)": {"lam": tuned["lam"], "iters": 300, "solver": "pdhg"},
                      f"{tuned.get('solver', 'pdhg')} {tuned['iters']} (default)": tuned}
        with torch.no_grad():
            x0 = warm_start(op, y, "ct", problem.noise_level)
            solve_tv(op, y, "ct", {**tuned, "iters": 2}, x0=x0)  # warm-up: the matrix, the operator norm
            for label, params in candidates.items():
                start = time.perf_counter()
                x = finish(solve_tv(op, y, "ct", params, x0=x0), "ct", y)
                seconds = (time.perf_counter() - start) / len(index)
                rows.append({"subject": name, "role": role, "size": volume.shape[1:], "solver": label,
                             **_score(source, problem, x), "seconds_per_slice": seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.tv_ct", description=__doc__.split("\n")[0])
    p.add_argument("--views", type=int, default=60)
    p.add_argument("--slices", type=int, default=3, help="slices per subject, spread evenly (default 3)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = compare(args.views, args.slices)
    print(f"CT {args.views} views, TV, {args.threads} thread(s): volume PSNR dB / SSIM, s/slice")
    for subject in SUBJECTS:
        own = [r for r in rows if r["subject"] == subject]
        for r in own:
            print(f"  {r['subject']:<8} {r['role']:<26} {r['solver']:<22} {r['psnr']:6.2f} / {r['ssim']:.4f}"
                  f"  {r['seconds_per_slice']:6.2f} s")
        before, after = own
        print(f"  {'':<35} default - before: {after['psnr'] - before['psnr']:+.2f} dB, "
              f"time x{after['seconds_per_slice'] / before['seconds_per_slice']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
