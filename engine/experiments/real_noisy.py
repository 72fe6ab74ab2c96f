"""Denoising real noisy scans that have no clean twin: a picture and method-noise figures.

``python -m diffrecon.experiments.real_noisy --ss-model SS.safetensors --out DIR [NAME:SLICE ...]``

Each scan (a dataset of :mod:`diffrecon.datasets`, one axial slice) is denoised as a user's
scan is (``diffrecon reconstruct SCAN --modality denoise``, no ``--simulate``: the noise std is
estimated from the image): TV, BM3D (when installed), the default denoising prior, the
DiffDenoise model ``--ss-model`` (``train --self-supervised``) and its blind-spot network alone.
With no truth, each method is judged by its *method noise* (Buades et al. 2005), the residual
``noisy - denoised``: it should be noise, so its std should be near the estimated noise std
(``residual/σ``; much less: noise left in; much more: signal removed too), and it should not
follow the image (``structure``: Pearson correlation between the residual's local energy and
the denoised image's gradient magnitude, both smoothed over 2 pixels: positive, the residual
holds the image's edges, i.e. signal was removed; negative, less was removed at edges than in
flat regions, i.e. noise stays along them; near 0, neither). It
writes ``DIR/real-noisy.png`` (rows: scans; columns: methods; one grey window per row) and
``DIR/real-noisy.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from .. import datasets, modalities
from ..baselines.denoise import bm3d_available
from ..diffusion.checkpoint import load_prior
from ..measurements import MeasurementSettings, ProblemSource
from ..reconstruct import default_prior_path, solve

#: real noisy scans (DWI, EPI) and the slice shown; someones-epi is a test subject (never trained on)
DEFAULT_CASES = ("dipy-piesno:7", "someones-epi:16")


def method_noise(noisy: np.ndarray, denoised: np.ndarray, sigma: float, mask: np.ndarray) -> dict[str, float]:
    """``residual/σ`` and ``structure`` of the module docstring, over ``mask``."""
    residual = noisy - denoised
    energy = ndimage.gaussian_filter(residual**2, 2.0)
    gradient = ndimage.gaussian_filter(np.hypot(*np.gradient(ndimage.gaussian_filter(denoised, 1.0))), 2.0)
    structure = float(np.corrcoef(energy[mask], gradient[mask])[0, 1]) if mask.sum() > 2 else float("nan")
    return {"residual_over_sigma": float(residual[mask].std() / max(sigma, 1e-12)), "structure": structure}


def denoise_case(volume, index: int, ss_prior, default_prior) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """The noisy slice, each method's result and the estimated noise std, in the working domain
    (the image over its 99.5th percentile), as ``reconstruct --modality denoise`` runs them."""
    from ..diffusion.reconstruction import reconstruct_to_end

    problem = ProblemSource(volume, MeasurementSettings("denoise"), slices=[index]).problem(np.array([index]))
    task = modalities.get("denoise")
    results = {m: solve(m, problem) for m in ["tv"] + (["bm3d"] if bm3d_available() else [])}
    results["diffusion (default)"] = reconstruct_to_end(problem, default_prior, task.diffusion_options()).x0
    if ss_prior is not None:
        from ..diffusion.self_supervised import blind_spot_estimate

        results["blind-spot alone"] = blind_spot_estimate(problem, ss_prior)
        results["DiffDenoise"] = reconstruct_to_end(problem, ss_prior, task.diffusion_options(cfg_scale=1.0, steps=10)).x0
    as_np = {m: x[0, 0].real.double().numpy() for m, x in results.items()}
    return problem.y[0, 0].double().numpy(), as_np, float(problem.noise_level)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=list(DEFAULT_CASES), help="NAME:SLICE (datasets)")
    parser.add_argument("--ss-model", help="a diffrecon train --self-supervised prior (DiffDenoise)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    default_prior = load_prior(default_prior_path("denoise"))
    ss_prior = load_prior(args.ss_model) if args.ss_model else None
    rows = []
    cases: dict[str, Any] = {}
    report = {"command": "python -m diffrecon.experiments.real_noisy " + " ".join(argv if argv is not None else sys.argv[1:]), "cases": cases}
    for case in args.cases:
        name, _, index = case.partition(":")
        volume = datasets.load_dataset(name)
        noisy, results, sigma = denoise_case(volume, int(index), ss_prior, default_prior)
        mask = noisy > 0.1 * np.percentile(noisy, 99.5)
        figures = {m: method_noise(noisy, r, sigma, mask) for m, r in results.items()}
        cases[case] = {"role": datasets.DATASETS[name].role, "sigma_estimated": sigma, "methods": figures}
        print(case, f"σ estimated {sigma:.4g}", " | ".join(f"{m}: residual/σ {f['residual_over_sigma']:.2f}, "
                                                          f"structure {f['structure']:.2f}" for m, f in figures.items()),
              flush=True)
        rows.append((case, noisy, results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "real-noisy.json").write_text(json.dumps(report, indent=1))
    _picture(rows, args.out / "real-noisy.png")
    print(args.out / "real-noisy.png")


def _picture(rows: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], path: Path) -> None:
    from ..bench.figures import headless_pyplot, save_figure

    plt = headless_pyplot()

    columns = ["input"] + list(rows[0][2])
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2.4 * len(columns), 2.6 * len(rows)), squeeze=False)
    for r, (case, noisy, results) in enumerate(rows):
        low, high = np.percentile(noisy, [1, 99.5])
        for c, label in enumerate(columns):
            image: Any = noisy if label == "input" else results.get(label)
            ax = axes[r, c]
            ax.axis("off")
            if image is not None:
                ax.imshow(image, cmap="gray", vmin=low, vmax=high)
            ax.set_title(f"{case}\n{label}" if c == 0 else label, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
