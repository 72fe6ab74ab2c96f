"""Does test-time adaptation (:mod:`diffrecon.diffusion.scan_adaptation`) pay on unseen subjects?

    python -m diffrecon.experiments.scan_adaptation --datasets dipy-t1,heudiconv-axasc35 \\
        --variants "adapt_steps=0;adapt_steps=1,adapt_lr=1e-4;adapt_steps=1,adapt_parameters=lora,adapt_lr=1e-3"

scores TV and each variant of the MRI prior's default diffusion (DDIM + DDS, 25 steps)
on up to ``--slices`` object slices of each dataset (validation subjects only, for
tuning: the test subjects stay for the bench), simulated as ``diffrecon reconstruct
--simulate`` does (random mask, ``--acceleration``), and prints PSNR/SSIM and seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from ..datasets import DATASETS, evaluation_slices, load_dataset
from ..diffusion.checkpoint import load_prior
from ..diffusion.options import DiffusionOptions
from ..measurements import MeasurementSettings
from ..metrics import format_table
from ..reconstruct import DIFFUSION, DiffusionSetup, ReconRequest, default_prior_path, run_to_end
from ..runtime import keep_freed_memory

_TEXT_FIELDS = ("sampler", "guidance", "adapt_parameters", "tv_weight")
_INT_FIELDS = ("steps", "samples", "cg_iters", "adapt_steps", "seed")


def parse_variant(text: str) -> dict[str, Any]:
    """``"adapt_steps=1,adapt_lr=1e-4"`` -> DiffusionOptions overrides."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        out[key] = value if key in _TEXT_FIELDS else int(value) if key in _INT_FIELDS else float(value)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.scan_adaptation",
                                description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="dipy-t1,heudiconv-axasc35")
    p.add_argument("--variants", default="adapt_steps=0;adapt_steps=1,adapt_lr=1e-4")
    p.add_argument("--acceleration", type=float, default=4.0)
    p.add_argument("--slices", type=int, default=2)
    p.add_argument("--model", help="prior file (default: the shipped MRI prior)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    prior = load_prior(args.model or default_prior_path("mri"))
    settings = MeasurementSettings("mri", acceleration=args.acceleration, mask="random", seed=0)
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        if DATASETS[name].role == "test":
            raise SystemExit(f"{name} is a test subject: tune on validation subjects only")
        volume = load_dataset(name)
        picks = [int(s) for s in evaluation_slices(volume, name, args.slices)]

        def run(methods: list[str], setup: DiffusionSetup | None = None):
            return run_to_end(ReconRequest(volume, settings, methods, simulate=True, slices=picks,
                                           batch_size=len(picks), diffusion=setup))

        tv = run(["tv"]).outcomes["tv"]
        rows.append({"dataset": name, "method": "tv", **tv.metrics, "s_per_slice": tv.seconds_per_slice})
        print(format_table(rows[-1:]), file=sys.stderr)
        for variant in args.variants.split(";"):
            options = DiffusionOptions(**{"guidance": "dds", **parse_variant(variant)})
            start = time.perf_counter()
            outcome = run([DIFFUSION], DiffusionSetup(prior, options)).outcomes[DIFFUSION]
            rows.append({"dataset": name, "method": f"diffusion {variant}", **outcome.metrics,
                         "s_per_slice": (time.perf_counter() - start) / len(picks)})
            print(format_table(rows[-1:]), file=sys.stderr)
    print(format_table(rows, ("dataset", "method", "psnr", "ssim", "s_per_slice")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
