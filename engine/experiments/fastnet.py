"""Cheaper forwards of a prior on this CPU, side by side in one process:
``python -m diffrecon.experiments.fastnet [--size 256] [--rounds 4] [--pruned FILE]``.

Times one network forward (batch 1, one torch thread) of the MRI prior as the sampler runs
it (channels-last, inference mode) against: NCHW; ``torch.jit.freeze`` +
``optimize_for_inference`` (oneDNN fusion); the plain ``norm_silu`` path
(``unet.set_fast_inference(False)``); the ONNX Runtime int8 backend
(:mod:`diffrecon.diffusion.onnx_int8`, when onnxruntime is installed); a pruned prior
(``--pruned``) and the distilled ``mri-brain-fast``. The variants run in turn, round after
round, and each is timed in **process CPU seconds**, so the ratios hold on a machine
other jobs share (wall time there measures the queue). ``torch.compile`` is not among
them: its compilation takes minutes here, longer than the runs it would speed up.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch

from ..diffusion import unet
from ..diffusion.checkpoint import load_prior
from ..reconstruct import default_prior_path


def variants(size: int, pruned: str | None) -> tuple[dict[str, Callable[[], torch.Tensor]], torch.Tensor]:
    prior = load_prior(default_prior_path("mri"))
    net = prior.model.eval()
    x = torch.randn(1, prior.channels, size, size, generator=torch.Generator().manual_seed(0))
    xc, t = x.contiguous(memory_format=torch.channels_last), torch.full((1,), 0.5)
    shipped = copy.deepcopy(net).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(
            torch.jit.trace(copy.deepcopy(shipped), (xc, t), check_trace=False).eval()))

    def plain() -> torch.Tensor:
        before = unet.set_fast_inference(False)
        try:
            return shipped(xc, t)
        finally:
            unet.set_fast_inference(before)

    fns: dict[str, Callable[[], torch.Tensor]] = {
        "plain norm_silu (before)": plain,
        "fast path (shipped)": lambda: shipped(xc, t),
        "NCHW": lambda: net(x, t),
        "jit freeze + optimize_for_inference": lambda: frozen(xc, t),
    }
    try:
        from ..diffusion.onnx_int8 import OnnxInt8Network

        quantised = OnnxInt8Network(net, prior.schedule, threads=1)
        fns["onnx-int8"] = lambda: quantised(x, t)
    except Exception as exc:  # noqa: BLE001 (a missing optional backend only drops its row)
        print(f"onnx-int8 skipped: {exc}", file=sys.stderr)
    others = {"mri-brain-fast": str(default_prior_path("mri").with_name("mri-brain-fast.safetensors"))}
    if pruned:
        others = {"pruned": pruned, **others}
    for name, path in others.items():
        model = load_prior(path).model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        fns[name] = (lambda m: lambda: m(xc, t))(model)
    with torch.inference_mode():
        reference = plain()
    return fns, reference


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.fastnet", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--pruned", help="a pruned prior file to time as well")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    fns, reference = variants(args.size, args.pruned)
    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for name, f in fns.items():
            out = f()
            error = float((out - reference).abs().max() / reference.abs().max())
            print(f"{name:38s} max |difference| / max |output| {error:.1e}", flush=True)
        for _ in range(args.rounds):
            for name, f in fns.items():
                start = time.process_time()
                f()
                times[name].append(time.process_time() - start)
    base = next(iter(fns))
    print(f"one forward at {args.size}^2, batch 1, one thread; process CPU seconds, median of {args.rounds} rounds")
    for name, ts in times.items():
        ratios = [b / a for a, b in zip(ts, times[base])]
        print(f"  {name:38s} {statistics.median(ts):7.3f} s   speed-up {statistics.median(ratios):.2f}x "
              f"({min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
