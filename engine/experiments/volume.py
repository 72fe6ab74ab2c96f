"""Through-plane quality of whole-volume reconstructions: 3D-consistent diffusion against
independent slices and 2D/3D TV (issue 14).

    python -m diffrecon.experiments.volume dxsamples --modality mri --slices 0:16 --out ~/diffrecon-out/vol-mri
    python -m diffrecon.experiments.volume stent --modality ct --views 60 --slices 120:136 --out ~/diffrecon-out/vol-ct
    python -m diffrecon.experiments.volume heudiconv-axasc35 --modality mri --slices 10:26 \\
        --through-plane 0,1,3,10 --methods diffusion --out ~/diffrecon-out/vol-tune     # tuning (validation)

A slab of consecutive slices (``--slices``) of a scan or a registered dataset is
simulated once (the seed and slice fix the mask or views) and reconstructed by

* ``tv`` and ``tv-3d``: the TV baseline slice by slice, and 3D TV over the slab (one batch);
* ``diffusion`` at every ``--through-plane`` weight (0 = independent slices), with the
  modality's defaults otherwise and the run API's batching (``--batch-size``, 8 as the
  CLI: later batches are tied to the finished slices next to them).

Scores (:func:`diffrecon.metrics.through_plane_metrics`): axial PSNR/SSIM, coronal and
sagittal reformat PSNR/SSIM and the slice-difference image's PSNR/SSIM/NRMSE. Writes
``results.json``, ``results.md`` and ``sagittal.png`` (the middle sagittal reformat of the
truth and every method, at the voxels' aspect ratio, one window) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..diffusion.checkpoint import load_prior
from ..io.volume import Volume
from ..measurements import MeasurementSettings
from ..metrics import evaluate, format_table, through_plane_metrics
from ..reconstruct import DIFFUSION, ReconRequest, default_prior_path, diffusion_setup, run_to_end
from ..slices import slice_indices


def load(data: str, downsample: int) -> Volume:
    """A registered dataset by name, else any scan; ``downsample`` averages k x k pixel blocks."""
    from ..datasets import DATASETS, load_dataset
    from ..io import load_volume

    volume = load_dataset(data) if data in DATASETS else load_volume(data)
    if downsample <= 1:
        return volume
    k = int(downsample)
    s, h, w = volume.shape
    block = volume.data[:, : h - h % k, : w - w % k].astype(np.float32)
    small = block.reshape(s, h // k, k, w // k, k).mean(axis=(2, 4))
    spacing = (volume.spacing[0], volume.spacing[1] * k, volume.spacing[2] * k)
    from dataclasses import replace

    from ..io.volume import affine_from_spacing

    return replace(volume, data=small, spacing=spacing, affine=affine_from_spacing(spacing))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.volume", description=__doc__.split("\n")[0])
    p.add_argument("data", help="a dataset name (diffrecon.datasets) or a scan")
    p.add_argument("--modality", required=True, choices=("mri", "ct"))
    p.add_argument("--slices", required=True, help="a slab of consecutive slices, e.g. 0:16")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--coils", type=int, default=0)
    p.add_argument("--views", type=int, default=60)
    p.add_argument("--dose", type=float)
    p.add_argument("--downsample", type=int, default=1, help="average k x k pixel blocks first (CPU time)")
    p.add_argument("--methods", default="tv,tv-3d,diffusion", help="from tv, tv-3d, diffusion")
    p.add_argument("--through-plane", default=None,
                   help="comma-separated through-plane weights for diffusion (default: 0 and the modality's)")
    p.add_argument("--model", help="prior (default: the modality's)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", help="diffusion guidance (default: the modality's)")
    p.add_argument("--tv-weight", help="dds-tv's in-plane TV weight, a number or auto (default: the modality's); "
                                       "a number also skips the hold-out blend with TV, so the prior's own result is scored")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from .. import modalities

    volume = load(args.data, args.downsample)
    slices = slice_indices(args.slices, volume.n_slices)
    if len(slices) < 2 or not np.all(np.diff(slices) == 1):
        raise SystemExit("--slices must name at least two consecutive slices")
    settings = MeasurementSettings(args.modality, acceleration=args.acceleration, coils=args.coils,
                                   views=args.views, dose=args.dose, seed=args.seed)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    default_w = modalities.get(args.modality).diffusion_defaults.get("through_plane", 0.0)
    weights = [float(w) for w in args.through_plane.split(",")] if args.through_plane else sorted({0.0, default_w})
    args.out.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {"command": "python -m diffrecon.experiments.volume " + " ".join(argv or sys.argv[1:]),
                               "data": args.data, "shape": list(volume.shape), "spacing": list(volume.spacing),
                               "slices": [int(s) for s in slices], "settings": settings.to_dict(),
                               "threads": args.threads, "methods": {}}
    volumes: dict[str, np.ndarray] = {}
    classical = [m for m in methods if m in ("tv", "tv-3d")]
    if classical:  # one batch: the whole slab, so tv-3d sees it all
        start = time.perf_counter()
        run = run_to_end(ReconRequest(volume, settings, classical, simulate=True, slices=slices,
                                      batch_size=len(slices)))
        for m in classical:
            volumes[m] = run.outcomes[m].volume
            results["methods"][m] = {"seconds": run.outcomes[m].seconds}
        print(f"classical done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if DIFFUSION in methods:
        prior = load_prior(Path(args.model) if args.model else default_prior_path(args.modality))
        for w in weights:
            label = "diffusion-3d" if w > 0 else "diffusion-independent"
            label += f"@{w:g}" if len(weights) > 2 or (w > 0 and w != default_w) else ""
            tv_weight = None if args.tv_weight in (None, "auto") else float(args.tv_weight)
            setup = diffusion_setup(prior, args.modality, steps=args.steps, seed=args.seed, through_plane=w,
                                    guidance=args.guidance, tv_weight=tv_weight,
                                    blend_tv=False if tv_weight is not None else None)
            start = time.perf_counter()
            run = run_to_end(ReconRequest(volume, settings, [DIFFUSION], simulate=True, slices=slices,
                                          diffusion=setup, batch_size=args.batch_size))
            volumes[label] = run.outcomes[DIFFUSION].volume
            results["methods"][label] = {"seconds": run.outcomes[DIFFUSION].seconds, "through_plane": w,
                                         "params": run.outcomes[DIFFUSION].params}
            print(f"{label} done in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    # The reference in the input's units: the simulation's ground truth over the same slices.
    reference = volume.data[slices].astype(np.float32)
    if args.modality == "mri":
        reference = np.abs(reference)
    else:  # CT: what the working domain clips (below -1000 HU) the scores must clip too
        reference = np.maximum(reference, -1000.0) + 1000.0
        volumes = {k: v + 1000.0 for k, v in volumes.items()}
    rows = []
    for name, est in volumes.items():
        scores = {**{f"axial_{k}": v for k, v in evaluate(reference, est).items() if k in ("psnr", "ssim")},
                  **through_plane_metrics(reference, est)}
        results["methods"][name]["metrics"] = scores
        rows.append({"method": name, **{k: round(v, 4) for k, v in scores.items()},
                     "s/slice": round(results["methods"][name]["seconds"] / len(slices), 2)})
    table = format_table(rows)
    print(table)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    (args.out / "results.md").write_text(f"`{results['command']}`\n\n{table}\n")
    # CT in a soft-tissue window (W400 L40; the scores' HU + 1000), MRI 0 to the 99.5th percentile
    window = (1000.0 - 160.0, 1000.0 + 240.0) if args.modality == "ct" else None
    sagittal_figure(reference, volumes, volume.spacing, args.out / "sagittal.png", window)
    return 0


def sagittal_figure(reference: np.ndarray, volumes: dict[str, np.ndarray], spacing, path: Path,
                    window: tuple[float, float] | None = None) -> None:
    """The middle sagittal reformat (slices running down, one row per image) of the truth and
    every method, at the voxels' aspect ratio, in one window (``window``, else 0 to the 99.5th
    percentile of the truth)."""
    from ..bench.figures import headless_pyplot, save_figure

    plt = headless_pyplot()

    column = reference.shape[2] // 2
    images = {"ground truth": reference, **volumes}
    lo, hi = window if window is not None else (0.0, float(np.percentile(reference, 99.5)))
    aspect = float(spacing[0]) / float(spacing[1])
    s, h = reference.shape[:2]
    row_height = 7.0 * s * aspect / h
    fig, axes = plt.subplots(len(images), 1, figsize=(7.0, (row_height + 0.3) * len(images)), squeeze=False)
    for ax, (name, vol) in zip(axes[:, 0], images.items()):
        ax.imshow(vol[:, :, column], cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=8, loc="left")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
