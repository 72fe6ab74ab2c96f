"""int8 and narrower priors against the float32 prior, one network forward at 256 x 256:
``python -m diffrecon.experiments.int8 [--model PRIOR] [--threads 1]``.

Prints, per variant: parameters, weight bytes, median seconds of one forward (batch 1, the
sampler's channels-last layout for torch), the speed-up over torch float32 measured in the
same process, and the relative error of the predicted noise against float32 on noisy
images at t = 0.9, 0.5, 0.1:

* ``torch int8 convs``: every convolution quantised with torch's eager int8 path
  (``torch.ao.quantization``, x86 backend: per-channel int8 weights, per-tensor uint8
  activations calibrated on noisy images), the rest float32;
* ``ORT float32`` / ``ORT int8``: the network exported to ONNX and run by ONNX Runtime,
  the int8 one statically quantised (QDQ, per-channel weights) with the same calibration.
  Needs ``pip install onnxruntime onnx`` (the optional extra ``[int8]``). What ships as
  ``--backend onnx-int8`` (:mod:`diffrecon.diffusion.onnx_int8`) quantises the convolutions
  only, which is slower than this all-ops variant but 2-14 % off instead of 10-21 %;
* ``width x0.75`` / ``x0.5``: the same architecture with fewer channels per layer, built
  untrained: the speed a structured channel pruning to that width would give (its quality
  needs a fine-tune, not measured here).

This CPU is AVX2 only (no VNNI, no native bf16), so int8 is compared with float32, not
bf16 (emulated bf16 is ~25x slower than float32 here). Timing on a shared machine: read
the ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SIZE = 256
TIMES = (0.9, 0.5, 0.1)


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _calibration(channels: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(1, channels, SIZE, SIZE, generator=g) * scale, torch.full((1,), t))
            for t, scale in zip(TIMES, (1.0, 0.7, 0.3))]


def _relative_error(reference: Callable, candidate: Callable, inputs) -> float:
    errors = []
    for x, t in inputs:
        ref = np.asarray(reference(x, t), dtype=np.float64)
        errors.append(float(np.linalg.norm(np.asarray(candidate(x, t)) - ref) / np.linalg.norm(ref)))
    return max(errors)


class _QuantisedConv(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        from torch.ao.quantization import DeQuantStub, QuantStub

        super().__init__()
        self.quant, self.conv, self.dequant = QuantStub(), conv, DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.conv(self.quant(x.contiguous())))


def torch_int8_convs(model: nn.Module, inputs) -> nn.Module:
    from torch.ao.quantization import convert, get_default_qconfig, prepare

    torch.backends.quantized.engine = "x86"
    quantised = copy.deepcopy(model)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                wrapped = _QuantisedConv(child)
                wrapped.qconfig = get_default_qconfig("x86")  # type: ignore[assignment]
                setattr(module, name, wrapped)
            else:
                swap(child)

    swap(quantised)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        prepared = prepare(quantised)
        with torch.no_grad():
            for x, t in inputs:
                prepared(x, t)
        return convert(prepared)


def onnx_sessions(model: nn.Module, inputs, folder: Path, threads: int):
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    plain, pre, int8 = folder / "unet.onnx", folder / "unet.pre.onnx", folder / "unet.int8.onnx"
    x, t = inputs[0]
    torch.onnx.export(model, (x, t), str(plain), dynamo=False, opset_version=17, input_names=["x", "t"],
                      output_names=["eps"])
    feeds = [{"x": xi.numpy(), "t": ti.numpy()} for xi, ti in inputs]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self):
            return next(self.items, None)

    quant_pre_process(str(plain), str(pre))
    quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return {name: (ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), path)
            for name, path in (("ORT float32", plain), ("ORT int8", int8))}


def run(model_path: str, threads: int, repeats: int) -> list[dict[str, Any]]:
    from ..diffusion.checkpoint import load_prior
    from ..diffusion.unet import build_unet

    torch.set_num_threads(threads)
    prior = load_prior(model_path)
    net = prior.model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    inputs = _calibration(prior.channels)
    x1, t1 = inputs[1]

    def torch_call(m: nn.Module) -> Callable:
        def call(x: torch.Tensor, t: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                return m(x.contiguous(memory_format=torch.channels_last), t).numpy()
        return call

    reference = torch_call(net)
    base = _median_seconds(lambda: reference(x1, t1), repeats)
    params = sum(p.numel() for p in net.parameters())
    rows = [{"variant": "torch float32 (shipped)", "parameters": params, "weight_mb": params * 4 / 1e6,
             "seconds": base, "speedup": 1.0, "relative_error": 0.0}]
    quantised = torch_int8_convs(net, inputs)
    call = torch_call(quantised)
    seconds = _median_seconds(lambda: call(x1, t1), repeats)
    rows.append({"variant": "torch int8 convs", "parameters": params, "weight_mb": params / 1e6, "seconds": seconds,
                 "speedup": base / seconds, "relative_error": _relative_error(reference, call, inputs)})
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime is not installed (pip install onnxruntime onnx): ORT rows skipped", file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for name, (session, path) in onnx_sessions(net.to(memory_format=torch.contiguous_format), inputs,
                                                        Path(tmp), threads).items():
                def ort_call(x: torch.Tensor, t: torch.Tensor, session=session) -> np.ndarray:
                    return session.run(None, {"x": x.numpy(), "t": t.numpy()})[0]

                seconds = _median_seconds(lambda: ort_call(x1, t1), repeats)
                rows.append({"variant": name, "parameters": params, "weight_mb": path.stat().st_size / 1e6,
                             "seconds": seconds, "speedup": base / seconds,
                             "relative_error": _relative_error(reference, ort_call, inputs)})
    for factor in (0.75, 0.5):
        config = dict(prior.metadata["unet_config"])
        config["width"] = max(8, int(round(config["width"] * factor / 8)) * 8)
        narrow = build_unet(config).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        call = torch_call(narrow)
        seconds = _median_seconds(lambda: call(x1, t1), repeats)
        n = sum(p.numel() for p in narrow.parameters())
        rows.append({"variant": f"width x{factor} (width {config['width']}, untrained)", "parameters": n,
                     "weight_mb": n * 4 / 1e6, "seconds": seconds, "speedup": base / seconds, "relative_error": None})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.int8", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="prior file (default: the bundled MRI prior)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.model is None:
        from ..reconstruct import default_prior_path

        args.model = str(default_prior_path("mri"))
    rows = run(args.model, args.threads, args.repeats)
    print(f"{Path(args.model).name}, one forward at {SIZE}^2, batch 1, {args.threads} thread(s)")
    print(f"  {'variant':<42}{'parameters':>11}{'weights MB':>11}{'s/forward':>11}{'speed-up':>10}{'rel. error':>12}")
    for r in rows:
        error = "-" if r["relative_error"] is None else f"{r['relative_error']:.3f}"
        print(f"  {r['variant']:<42}{r['parameters']:>11,}{r['weight_mb']:>11.1f}{r['seconds']:>11.3f}"
              f"{'x' + format(r['speedup'], '.2f'):>10}{error:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
