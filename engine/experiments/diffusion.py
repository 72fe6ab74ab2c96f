"""How fast, and how good, is diffusion reconstruction on this machine?

Speed (the default)::

    python -m diffrecon.experiments.diffusion --size 256 --steps 25 [--samples 1] [--guidance dds]

runs the run API (:func:`diffrecon.reconstruct.run_to_end`, as ``diffrecon reconstruct``
does) on a synthetic single-coil 4x MRI slice of ``size x size`` pixels with the prior (``--model``; default the
shipped MRI brain prior, else an untrained network of the same architecture: speed does
not depend on the weights) and prints the seconds per slice, the number of network
evaluations (NFE), the time of one network forward at the same batch size and settings
(bf16 autocast, channels_last, inference mode), and the overhead ratio
``wall time / (NFE x forward)``: 1.0 means all time goes to the network.

Quality (``--quality``): every combination of ``--samplers`` x ``--guidances`` x
``--hot`` on held-out validation slices (:func:`diffrecon.datasets.validation_slices`:
colin27 for MRI and denoising, cranium for CT; the priors never saw them), measured as
``diffrecon reconstruct --simulate`` measures (same working domain, masks, dose), scored
by volume PSNR/SSIM on the magnitude, and for ``--samples > 1`` the calibration figures of
:mod:`diffrecon.diffusion.uncertainty` over the object (reference > 5 % of its peak).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import modalities
from ..diffusion.checkpoint import Prior, load_prior
from ..diffusion.options import DiffusionOptions
from ..diffusion.reconstruction import AUTOCAST
from ..diffusion.schedules import make_schedule
from ..diffusion.unet import UNet, autocast_context
from ..io.volume import Volume
from ..measurements import MeasurementSettings
from ..metrics import format_table
from ..reconstruct import DIFFUSION, DiffusionSetup, ReconRequest, default_prior_path, run_to_end
from ..runtime import keep_freed_memory

#: the modalities the quality benchmark scores (those a shipped prior serves)
QUALITY_MODALITIES = ("mri", "ct", "denoise")


def default_model(modality: str) -> Path:
    """The modality's default prior, else that of the first modality whose priors suit it
    (denoising: the MRI prior)."""
    chosen = modalities.get(modality)
    return default_prior_path(modality if chosen.default_prior else chosen.prior_modalities[0])


class CountingModel(torch.nn.Module):
    """A network that counts its forward calls (the NFE of a run)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x, t)


def _prior(path: str | None, modality: str = "mri") -> Prior:
    target = Path(path) if path else default_model(modality)
    if target.is_file():
        return load_prior(target)
    if path is not None:
        raise SystemExit(f"{target}: no such prior")
    print(f"{target} not found: timing an untrained network of the MRI prior's architecture", file=sys.stderr)
    net = UNet(2, 32, (1, 2, 2, 3), 2, 4).eval().requires_grad_(False)
    return Prior(net, make_schedule("linear"), {"kind": "percentile", "percentile": 99.5}, "mri", 2, {}, target)


def _synthetic_mri(size: int, seed: int = 0) -> tuple[Volume, MeasurementSettings]:
    """A smooth ellipse phantom with texture, to be measured single coil, 4x random lines."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    image = 0.6 * ((xx / 0.75) ** 2 + (yy / 0.9) ** 2 < 1).float()
    image = image * (1 + 0.2 * torch.randn(1, 1, size // 8, size // 8, generator=g).repeat_interleave(8, -1)
                     .repeat_interleave(8, -2)[0, 0])
    volume = Volume(image[None].numpy().astype(np.float32), modality="MR")
    return volume, MeasurementSettings("mri", acceleration=4.0, mask="random", seed=seed)


def forward_seconds(net: torch.nn.Module, shape: tuple[int, ...], repeats: int = 5) -> float:
    """Median time of one network forward as the sampler runs it."""
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    t = torch.full((shape[0],), 0.5)
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    times = []
    with torch.inference_mode(), autocast_context(AUTOCAST):
        net(x, t)  # warm-up: oneDNN picks its kernels on the first call
        for _ in range(repeats):
            start = time.perf_counter()
            net(x, t)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(args: argparse.Namespace) -> dict[str, Any]:
    prior = _prior(args.model)
    counter = CountingModel(prior.model)
    prior.model = counter  # type: ignore[assignment]  # a UNet that counts its calls
    volume, settings = _synthetic_mri(args.size)
    options = DiffusionOptions(sampler=args.sampler, guidance=args.guidance, steps=args.steps,
                               samples=args.samples, hot_start=args.hot_start, symmetric=args.symmetric)

    def seconds(opts: DiffusionOptions) -> float:
        request = ReconRequest(volume, settings, [DIFFUSION], simulate=True, batch_size=1,
                               diffusion=DiffusionSetup(prior, opts))
        return run_to_end(request).outcomes[DIFFUSION].seconds

    seconds(DiffusionOptions(**{**options.to_dict(), "steps": 2}))  # warm-up
    walls = []
    for _ in range(args.repeats):
        counter.calls = 0
        walls.append(seconds(options))
    nfe = counter.calls
    batch = args.samples * (2 if args.symmetric else 1)
    forward = forward_seconds(counter.net, (batch, prior.channels, args.size, args.size))
    wall = statistics.median(walls)
    return {"size": args.size, "steps": args.steps, "samples": args.samples, "sampler": args.sampler,
            "guidance": args.guidance, "hot_start": args.hot_start, "symmetric": args.symmetric,
            "threads": torch.get_num_threads(),
            "seconds_per_slice": wall, "runs": [round(w, 3) for w in walls], "nfe": nfe,
            "forward_seconds": forward, "overhead_ratio": wall / (nfe * forward)}


# --------------------------------------------------------------------------- quality on validation slices


def validation_slices_of(modality: str, count: int, min_foreground: float = 0.3) -> tuple[Volume, list[int]]:
    """``count`` held-out slices, spread evenly over those that are mostly object."""
    from ..datasets import load_dataset, object_fraction, validation_slices

    name = modalities.get(modality).default_dataset
    volume = load_dataset(name)
    index = validation_slices(volume, name)
    full = index[object_fraction(volume.data, volume.units)[index] >= min_foreground]
    picks = full[np.linspace(0, len(full) - 1, min(count, len(full))).round().astype(int)]
    return volume, [int(s) for s in picks]


def quality(args: argparse.Namespace) -> list[dict[str, Any]]:
    settings = MeasurementSettings(modality=args.modality, acceleration=args.acceleration, views=args.views,
                                   dose=args.dose, noise_sigma=args.noise_sigma, seed=0)
    volume, picks = validation_slices_of(args.modality, args.slices)
    prior = _prior(args.model, args.modality)
    print(f"{settings.describe()}; {len(picks)} validation slices {picks}; "
          f"prior {prior.path} (step {prior.metadata.get('step')})", file=sys.stderr)
    classical = modalities.get(args.modality).hot_start_baseline

    def run(methods: list[str], setup: DiffusionSetup | None = None):
        # every pick in one batch: the volume metrics are those of one problem
        request = ReconRequest(volume, settings, methods, simulate=True, slices=picks, batch_size=len(picks),
                               diffusion=setup)
        return run_to_end(request)

    result = run([classical])
    rows = [{"method": "input", **result.observed_metrics},
            {"method": classical, **result.outcomes[classical].metrics,
             "s_per_slice": result.outcomes[classical].seconds_per_slice}]
    print(format_table(rows[-2:]), file=sys.stderr)
    for sampler in args.samplers.split(","):
        for guidance in args.guidances.split(","):
            for hot in args.hot.split(","):
                options = DiffusionOptions(sampler=sampler, guidance=guidance, steps=args.steps,
                                           samples=args.samples, eta=args.eta, hot_start=hot != "off",
                                           hot_start_t=args.hot_start_t, dps_scale=args.dps_scale, seed=0)
                setup = DiffusionSetup(prior, options, baseline=classical if hot == "tv" else None)
                outcome = run([DIFFUSION], setup).outcomes[DIFFUSION]
                row = {"method": "diffusion", "sampler": sampler, "guidance": guidance, "hot": hot,
                       **outcome.metrics, "s_per_slice": outcome.seconds_per_slice}
                if outcome.calibration is not None:
                    row.update({k: v for k, v in outcome.calibration.items() if k != "ideal_coverage_2sigma"})
                rows.append(row)
                print(format_table([row]), file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.diffusion", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="prior file (default: the shipped prior for the modality)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--sampler", default="ddim", help="speed: which sampler")
    p.add_argument("--guidance", default="dds", help="speed: which guidance")
    p.add_argument("--hot-start", action="store_true", help="speed: hot start (fewer steps)")
    p.add_argument("--symmetric", action="store_true", help="speed: symmetric pairs (twice the batch)")
    p.add_argument("--size", type=int, default=256, help="speed: image size")
    p.add_argument("--repeats", type=int, default=3, help="speed: timed runs (the median is reported)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    q = p.add_argument_group("quality (--quality)")
    q.add_argument("--quality", action="store_true", help="score settings on validation slices instead")
    q.add_argument("--modality", default="mri", choices=QUALITY_MODALITIES)
    q.add_argument("--slices", type=int, default=4)
    q.add_argument("--samplers", default="ddim")
    q.add_argument("--guidances", default="projection,dds,dps")
    q.add_argument("--hot", default="off", help="comma-separated: off | input (zero-filled/FBP/noisy) | tv")
    q.add_argument("--hot-start-t", type=float, default=0.4)
    q.add_argument("--eta", type=float, default=0.0)
    q.add_argument("--dps-scale", type=float, default=1.0)
    q.add_argument("--acceleration", type=float, default=4.0)
    q.add_argument("--views", type=int)
    q.add_argument("--dose", type=float)
    q.add_argument("--noise-sigma", type=float, default=0.1)
    p.add_argument("--malloc-default", action="store_true",
                   help="leave glibc's allocator as it is (to measure what keep_freed_memory saves)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.malloc_default:
        keep_freed_memory()  # as the CLI and viewer run
    if args.quality:
        result: Any = quality(args)
        columns = ("method", "sampler", "guidance", "hot", "psnr", "ssim", "coverage_2sigma",
                   "spearman_std_error", "s_per_slice")
        print(format_table(result, tuple(c for c in columns if any(c in r for r in result))))
    else:
        result = speed(args)
        print(f"{result['size']}^2, {result['steps']} steps, {result['samples']} sample(s)"
              f"{' x 2 (symmetric)' if result['symmetric'] else ''}, {result['sampler']} + {result['guidance']}"
              f"{' (hot start)' if result['hot_start'] else ''}, {result['threads']} thread(s)")
        print(f"  {result['seconds_per_slice']:.2f} s per slice (runs: {result['runs']})")
        print(f"  {result['nfe']} network evaluations x {result['forward_seconds']:.3f} s per forward")
        print(f"  overhead ratio wall / (NFE x forward) = {result['overhead_ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
