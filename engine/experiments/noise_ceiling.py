"""How high can any MRI reconstruction score on a noisy reference? ``python -m diffrecon.experiments.noise_ceiling``.

Simulated undersampling keeps the reference's own k-space where the mask samples it. The
reference's noise in the *unsampled* k-space is independent of everything measured, so no
method, however good its prior, can predict it: it stays in every reconstruction's error.
This puts a ceiling on the PSNR that ``diffrecon bench`` can report on a noisy test scan,
and a target such as "TV + 2 dB" may lie above it.

Per slice (the same slices, mask and PSNR as ``bench``):

* **noise std**: Donoho's wavelet estimate of the reference's noise (what denoising uses);
* **white-noise ceiling**: ``peak^2 / ((1 - f) sigma^2)``, ``f`` the mask's sampled fraction:
  the PSNR of a reconstruction whose only error is the unpredictable noise;
* **TV**: the bench's TV on the same slice, for the gap.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from ..datasets import datasets_with, evaluation_slices, load_dataset
from ..measurements import MeasurementSettings, ProblemSource, _estimate_sigma
from ..physics.mri import MRIOperator
from ..reconstruct import ReconRequest, run_to_end


def white_noise_ceiling(reference: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """``(noise std, ceiling dB)`` of a real ``(H, W)`` reference under ``mask`` (``(H, W)`` bool):
    the PSNR (peak: the reference's maximum) of a reconstruction whose only error is the
    reference's white noise in the k-space the mask skips, ``(1 - f) sigma^2`` per pixel."""
    sigma = _estimate_sigma(reference[None, None])
    floor = (1.0 - float(mask.float().mean())) * sigma**2
    peak = float(reference.max())
    return sigma, float(10 * np.log10(peak**2 / floor)) if floor > 0 else float("inf")


def measure(subjects: list[str], acceleration: float, count: int, seed: int = 0) -> list[dict]:
    rows = []
    settings = MeasurementSettings("mri", acceleration=acceleration, seed=seed)
    for name in subjects:
        volume = load_dataset(name)
        for s in evaluation_slices(volume, name, count=count):
            source = ProblemSource(volume, settings, slices=[int(s)], simulate=True)
            problem = source.problem(np.array([int(s)]))
            assert problem.reference is not None
            reference = problem.reference[0, 0].float()
            operator = problem.operator
            assert isinstance(operator, MRIOperator)  # simulated single-coil MRI
            mask = operator.mask.reshape(operator.mask.shape[-2:]).bool()
            sigma, ceiling = white_noise_ceiling(reference, mask)
            tv = run_to_end(ReconRequest(volume, settings, ["tv"], simulate=True, slices=[int(s)], batch_size=1))
            tv_metrics = tv.outcomes["tv"].metrics
            assert tv_metrics is not None  # simulated: scored against the reference
            row = {"subject": name, "slice": int(s), "size": "x".join(map(str, reference.shape)), "noise_std": sigma,
                   "sampled_fraction": float(mask.float().mean()), "tv": tv_metrics["psnr"],
                   "white_noise_ceiling": ceiling}
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--accelerations", default="4,8")
    p.add_argument("--count", type=int, default=3, help="slices per subject (bench's --slices-per-subject)")
    p.add_argument("--role", default="test", help="test | validation")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    subjects = datasets_with("MR", args.role)
    out = {}
    for acc in (float(a) for a in args.accelerations.split(",")):
        rows = measure(subjects, acc, args.count)
        out[f"{acc:g}x"] = rows
        print(f"\nMRI {acc:g}x, {args.role} subjects ({', '.join(subjects)}), {args.count} slices each; PSNR dB")
        print("| subject | slice | image size | noise std (of the 99.5th pct.) | TV | TV + 2 | white-noise ceiling |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['subject']} | {r['slice']} | {r['size']} | {r['noise_std']:.3f} | {r['tv']:.2f} "
                  f"| {r['tv'] + 2:.2f} | {r['white_noise_ceiling']:.2f} |")
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("tv", "white_noise_ceiling")}
        print(f"| mean | | | | {mean['tv']:.2f} | {mean['tv'] + 2:.2f} | {mean['white_noise_ceiling']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
