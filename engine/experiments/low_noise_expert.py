"""Does a low-noise expert help? Validation slices, with and without it:
``python -m diffrecon.experiments.low_noise_expert EXPERT.safetensors [--modality ct] [--acceleration 4 | --views 60 | --dose 0.25]``.

Scores PSNR (dB, mean over the validation slices; mask/noise seed 0) of reconstruction with
``--model`` (default the modality's bundled prior) alone and with ``EXPERT`` taking the
steps whose noise level it learned (:mod:`diffrecon.diffusion.experts`). MRI: the validation
subjects' bench slices (1 of ``dipy-t1``, 4 of ``heudiconv-axasc35``). CT has one training
subject, so its validation slices are ``cranium``'s held-out slab (slices 61, 64, 67, 70, as in
its card), never the test subject. Variants: ``tv``; ``dds`` (DDS alone, no blend with TV),
``ddsblend`` (DDS blended with TV by hold-out: the CT default, and MRI's without the dds-tv
weight choice) and ``default`` (the modality's default), each also with ``+e`` (the expert).
The bundled ``mri-brain-lowt`` and ``ct-head-lowt`` were chosen with it (their cards have the figures).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from .. import modalities
from ..bench.runner import load_bench_data
from ..diffusion.checkpoint import load_prior
from ..diffusion.reconstruction import reconstruct_to_end
from ..measurements import MeasurementSettings
from ..reconstruct import default_prior_path, solve
from .denoise_tuning import mean_psnr, validation_data, validation_problems

VARIANTS = ("tv", "dds", "dds+e", "ddsblend", "ddsblend+e", "default", "default+e")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expert")
    parser.add_argument("--model", help="the prior (default: the modality's bundled prior)")
    parser.add_argument("--modality", choices=("mri", "ct"), default="mri")
    parser.add_argument("--acceleration", type=float, default=4.0, help="MRI")
    parser.add_argument("--views", type=int, default=60, help="CT")
    parser.add_argument("--dose", type=float, help="CT: low dose (180 views with Poisson noise) instead of --views")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prior = load_prior(args.model or default_prior_path(args.modality))
    task = modalities.get(args.modality)
    if args.modality == "mri":
        setting: dict[str, Any] = {"acceleration": args.acceleration}
        problems = validation_problems(validation_data("mri", 4), "mri", **setting)
        print(f"{len(problems)} validation slices, MRI {args.acceleration:g}x", flush=True)
    else:
        setting = {"dose": args.dose} if args.dose else {"views": args.views}
        problems = validation_problems([load_bench_data("cranium", "ct", slices="61:71:3")], "ct", **setting)
        print(f"{len(problems)} held-out cranium slices, CT {setting}", flush=True)
    for variant in args.variants.split(","):
        started = time.perf_counter()
        if variant == "tv":
            value = mean_psnr(problems, lambda p: solve("tv", p))
        else:
            base, _, expert = variant.partition("+")
            if base not in ("dds", "ddsblend", "default") or expert not in ("", "e"):
                raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
            overrides = {"dds": {"guidance": "dds", "blend_tv": False}, "ddsblend": {"guidance": "dds", "blend_tv": True},
                         "default": {}}[base]
            # the task's own defaults (CT's steps differ with and without dose), as a user's run takes them
            options = task.diffusion_options(MeasurementSettings(args.modality, **setting), **overrides,
                                             low_noise_expert=args.expert if expert else "")
            value = mean_psnr(problems, lambda p: reconstruct_to_end(p, prior, options).x0)
        print(f"{variant}: {value:.2f} dB ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
