"""Where DiffDenoise's sampler enters, on the validation subjects:
``python -m diffrecon.experiments.diffdenoise PRIOR.safetensors [--sigma 0.1]``.

PRIOR is a ``diffrecon train --self-supervised`` prior (its blind-spot network beside it).
Scores, as PSNR (dB) over the validation subjects' bench slices (2 per subject) at white
Gaussian noise ``--sigma``: the blind-spot network alone, then the hot start from its
estimate (:func:`diffrecon.diffusion.self_supervised.stream_self_supervised`) at several
entry times, pairs and flips. ``SELF_SUPERVISED_START_T`` was chosen with it (and
``SELF_SUPERVISED_START_FACTOR`` is that entry over the sigma it was chosen at).
"""

from __future__ import annotations

import argparse

import torch

from .. import modalities
from ..diffusion.checkpoint import load_prior
from ..diffusion.reconstruction import reconstruct_to_end
from ..diffusion.self_supervised import blind_spot_estimate
from .denoise_tuning import mean_psnr, validation_data, validation_problems

#: (entry time, pairs, flips) tried
VARIANTS = ((0.05, 1, 4), (0.07, 1, 8), (0.1, 1, 4), (0.15, 1, 4), (0.1, 4, 1), (0.1, 1, 8), (0.1, 2, 8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior")
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    problems = validation_problems(validation_data("denoise", 2), "denoise", noise_sigma=args.sigma)
    print(f"{len(problems)} validation slices, sigma {args.sigma:g}")
    print(f"blind-spot network alone: {mean_psnr(problems, lambda p: blind_spot_estimate(p, prior)):.2f} dB", flush=True)
    for start_t, pairs, flips in VARIANTS:
        options = modalities.get("denoise").diffusion_options(steps=10, cfg_scale=1.0, hot_start=True,
                                                              hot_start_t=start_t, samples=pairs, ensemble=flips)
        value = mean_psnr(problems, lambda p: reconstruct_to_end(p, prior, options).x0)
        print(f"enter at t = {start_t:g}, {pairs} pair(s), {flips} flip(s): {value:.2f} dB", flush=True)


if __name__ == "__main__":
    main()
