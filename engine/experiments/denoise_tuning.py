"""The noise-start settings of denoising, chosen on the validation subjects:
``python -m diffrecon.experiments.denoise_tuning PRIOR.safetensors [--anchors] [--modality ultrasound]``.

``--modality ultrasound`` scores one-look speckle on the B-mode-like images the ultrasound
task simulates from the same (MRI validation) slices, never on the echo frames.

Scores PSNR (dB, mean over the validation subjects' bench slices: 1 of ``dipy-t1``, 4 of
``heudiconv-axasc35``; noise seed 0) of the noise start
(:func:`diffrecon.diffusion.noise_start.stream_noise_start`) with the denoise task's other
defaults, per noise, for each entry scale (x the noise's std, before the kind's
``START_FACTORS``) with and without the Wiener refinement. ``--anchors`` scores TV, BM3D
(``pip install bm3d``) and PRIOR with the shipped defaults on the same slices instead.
``resources/results/denoise-test/tuning.md`` has the numbers it printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .. import modalities
from ..bench.runner import BenchData, load_bench_data
from ..diffusion.checkpoint import load_prior
from ..diffusion.reconstruction import reconstruct_to_end
from ..measurements import MeasurementSettings, ProblemSource, ReconProblem
from ..metrics import psnr
from ..reconstruct import solve

NOISES: dict[str, dict[str, Any]] = {"sigma=0.05": {"noise_sigma": 0.05}, "sigma=0.1": {"noise_sigma": 0.1},
          "poisson": {"noise": "poisson", "noise_peak": 30.0},
          "correlated": {"noise": "correlated", "noise_sigma": 0.1}}
ULTRASOUND_NOISES: dict[str, dict[str, Any]] = {"looks=1": {"looks": 1.0}}
#: the validation subjects these experiments score on (never a test subject)
VALIDATION_SUBJECTS = ("dipy-t1", "heudiconv-axasc35")
#: (entry scale, Wiener) tried per noise
VARIANTS = {"sigma=0.05": [(0.9, False), (1.0, False), (1.1, False), (1.0, True)],
            "sigma=0.1": [(0.9, False), (1.0, False), (1.1, False), (1.0, True)],
            "poisson": [(1.0, True), (1.1, True), (1.2, True), (1.3, True), (1.5, True), (1.2, False)],
            "correlated": [(0.9, True), (1.0, True), (1.1, True), (1.2, True), (1.0, False)],
            "looks=1": [(1.0, True), (1.25, True), (1.5, True), (2.0, True), (1.5, False)]}


def validation_data(modality: str, per_subject: int) -> list[BenchData]:
    """The validation subjects and their bench slices (``per_subject`` each at most), read once."""
    return [load_bench_data(subject, modality, per_subject=per_subject) for subject in VALIDATION_SUBJECTS]


def validation_problems(data: list[BenchData], modality: str, **settings: Any) -> list[ReconProblem]:
    """One simulated problem of ``settings`` per slice of ``data`` (noise seed 0)."""
    measured = MeasurementSettings(modality, seed=0, **settings)
    return [ProblemSource(d.volume, measured, simulate=True).problem(np.array([s])) for d in data for s in d.slices]


def mean_psnr(problems: list[ReconProblem], estimate: Callable[[ReconProblem], torch.Tensor]) -> float:
    """Mean PSNR (dB) of ``estimate(problem)`` against each problem's reference."""
    values = []
    for p in problems:
        assert p.reference is not None  # simulated problems carry their reference
        values.append(psnr(p.reference[:, 0].numpy(), estimate(p)[:, 0].real.numpy()))
    return float(np.mean(values))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior")
    parser.add_argument("--anchors", action="store_true", help="TV, BM3D and the shipped defaults instead")
    parser.add_argument("--modality", choices=("denoise", "ultrasound"), default="denoise")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    task = modalities.get(args.modality)
    data = validation_data(args.modality, 4)
    for name, noise in (NOISES if args.modality == "denoise" else ULTRASOUND_NOISES).items():
        problems = validation_problems(data, args.modality, **noise)
        if args.anchors:
            shipped = task.diffusion_options()
            parts = [f"{m} {mean_psnr(problems, lambda p: solve(m, p)):.2f}" for m in ("tv", "bm3d")]
            parts.append(f"defaults {mean_psnr(problems, lambda p: reconstruct_to_end(p, prior, shipped).x0):.2f}")
        else:
            parts = []
            for scale, wiener in VARIANTS[name]:
                options = task.diffusion_options(noise_start_scale=scale, wiener=wiener)
                value = mean_psnr(problems, lambda p: reconstruct_to_end(p, prior, options).x0)
                parts.append(f"x{scale:g}{' + Wiener' if wiener else ''} {value:.2f}")
        print(f"{name}: " + " | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
