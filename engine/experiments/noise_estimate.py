"""How far the noise-level estimator is off: ``python -m diffrecon.experiments.noise_estimate``.

Denoising a scan whose noise is not given (``diffrecon reconstruct noisy.nii.gz --modality
denoise``, no ``--simulate``) uses the std that :func:`diffrecon.measurements._estimate_sigma`
finds (Donoho's median absolute deviation of the finest diagonal wavelet band, through
scikit-image), and the noise-matched start enters the reverse process there. This adds
noise of known std to the validation and test subjects' slices and prints the estimate's
relative error, mean ± SD over slices, per noise level and kind (white; correlated noise,
whose finest band holds less of its energy, is underestimated by design of the estimator).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ..datasets import datasets_with, evaluation_slices, load_dataset
from ..measurements import MeasurementSettings, ProblemSource, _estimate_sigma


def measure(subjects: list[str], sigmas: list[float], kinds: list[str], count: int = 4) -> list[dict]:
    rows = []
    for kind in kinds:
        for sigma in sigmas:
            errors = []
            for name in subjects:
                vol = load_dataset(name)
                idx = evaluation_slices(vol, name, count=count)
                src = ProblemSource(vol, MeasurementSettings("denoise", noise=kind, noise_sigma=sigma),
                                    slices=idx, simulate=True)
                for i in idx:
                    problem = src.problem(np.array([i]))
                    estimate = _estimate_sigma(problem.y)
                    errors.append(estimate / sigma - 1.0)
            e = np.array(errors)
            rows.append({"noise": kind, "sigma": sigma, "slices": int(e.size), "mean_rel_error": float(e.mean()),
                         "sd_rel_error": float(e.std(ddof=1)) if e.size > 1 else 0.0,
                         "max_abs_rel_error": float(np.abs(e).max())})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sigmas", default="0.02,0.05,0.1,0.2")
    p.add_argument("--kinds", default="gaussian,correlated")
    p.add_argument("--count", type=int, default=4, help="slices per subject")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    subjects = datasets_with("MR", "validation") + datasets_with("MR", "test")
    rows = measure(subjects, [float(s) for s in args.sigmas.split(",")], args.kinds.split(","), args.count)
    print(f"subjects: {', '.join(subjects)}; {args.count} slices each")
    print("| noise | sigma | slices | relative error, mean ± SD | max |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['noise']} | {r['sigma']:g} | {r['slices']} | {r['mean_rel_error']:+.1%} ± {r['sd_rel_error']:.1%} "
              f"| {r['max_abs_rel_error']:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
