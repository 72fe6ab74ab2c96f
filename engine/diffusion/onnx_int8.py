"""An int8 inference backend for a prior: the UNet run by ONNX Runtime with int8 weights and activations.

``--backend onnx-int8`` (``reconstruct``, ``bench``, ``view``) replaces the network's forward
by :class:`OnnxInt8Network`; everything else (samplers, guidance, data consistency) stays
in torch. On this project's AVX2 CPU it is about 2-2.5x faster per forward than torch
float32 (``python -m diffrecon.experiments.int8``); what it costs in PSNR is in README
("int8 and narrower priors").

The network is exported once per prior with dynamic batch, height and width (inputs are
padded to the network's multiple here, in torch, exactly as :meth:`.unet.UNet._pad` does,
so the exported graph never pads), then statically quantised (QDQ, per-channel int8
weights, uint8 activations) with activation ranges calibrated on a fixed, data-free set:
a synthetic head-like phantom noised at times across the schedule. The quantised model is
cached on disk (``$DIFFRECON_CACHE_DIR``, default ``~/.cache/diffrecon``, ``off`` to
disable: then it is rebuilt in a temporary folder each time) under the digest of the
prior's weights, so a changed prior never meets a stale model.

onnxruntime and onnx are an optional extra (``pip install 'diffrecon[int8]'``); without
them :func:`require_onnxruntime` stops with one sentence.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SettingsError
from .unet import UNet

BACKENDS = ("torch", "onnx-int8")  # what --backend accepts
_FORMAT = 1  # bump when export or quantisation settings change: old cache files are then ignored
_CALIBRATION_TIMES = (0.02, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
_CALIBRATION_SIZE = 96
QUANTISED_OPS = ("Conv",)
REDUCE_RANGE = True  # 7-bit weights: avoids u8s8 saturation on CPUs without VNNI


def require_onnxruntime() -> Any:
    """The onnxruntime module, or one sentence saying how to get it."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise SettingsError("--backend onnx-int8 needs onnxruntime and onnx, which are not installed: "
                            "pip install 'diffrecon[int8]' (or pip install onnxruntime onnx)") from None
    return onnxruntime


def _cache_dir() -> Path | None:
    setting = os.environ.get("DIFFRECON_CACHE_DIR", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    return (Path(setting) if setting else Path.home() / ".cache" / "diffrecon") / "int8"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the network's configuration and weights."""
    h = hashlib.sha256(repr(getattr(model, "config", {})).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _phantom(channels: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """A head-like image in a prior's domain (about [0, 1], complex with a smooth phase for 2 channels)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    head = ((xx / 0.8) ** 2 + (yy / 0.92) ** 2 < 1).float()
    brain = ((xx / 0.7) ** 2 + (yy / 0.82) ** 2 < 1).float()
    ventricles = (((xx - 0.12) / 0.1) ** 2 + (yy / 0.3) ** 2 < 1).float() + (((xx + 0.12) / 0.1) ** 2 + (yy / 0.3) ** 2 < 1).float()
    texture = F.interpolate(torch.rand(1, 1, size // 8, size // 8, generator=generator), size=(size, size),
                            mode="bilinear", align_corners=False)[0, 0]
    image = 0.9 * head - 0.3 * brain + brain * (0.35 + 0.3 * texture) - 0.3 * ventricles.clamp(max=1)
    image = image.clamp(min=0)
    if channels == 1:
        return image[None]
    phase = 0.6 * xx + 0.4 * yy
    return torch.stack([image * torch.cos(phase), image * torch.sin(phase)])


def calibration_inputs(channels: int, schedule) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Noisy phantoms ``x_t`` at times across the schedule, and their ``t`` (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    items = []
    for t in _CALIBRATION_TIMES:
        x0 = _phantom(channels, _CALIBRATION_SIZE, g)[None]
        mean, std = (float(v) for v in schedule.marginal(t))
        x_t = mean * x0 + std * torch.randn(x0.shape, generator=g)
        items.append((x_t.float(), torch.full((1,), float(t))))
    return items


class _Padded(nn.Module):
    """The UNet on inputs already padded to its multiple (so the exported graph has no padding branch)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, t)


def build_quantised(net: UNet, schedule, folder: Path) -> Path:
    """Export ``net`` to ONNX and quantise it statically to int8 in ``folder``; return the model's path."""
    require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder.mkdir(parents=True, exist_ok=True)
    plain, pre, out = folder / "plain.onnx", folder / "pre.onnx", folder / "int8.onnx"
    channels = int(net.config["in_channels"])
    inputs = calibration_inputs(channels, schedule)
    cpu = _Padded(net).to("cpu").to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing notes about the UNet's shape checks: inputs come padded
        torch.onnx.export(cpu, inputs[0], str(plain), dynamo=False, opset_version=17, input_names=["x", "t"],
                          output_names=["eps"], dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"},
                                                              "t": {0: "batch"}, "eps": {0: "batch", 2: "height",
                                                                                         3: "width"}})
    feeds = iter([{"x": x.numpy(), "t": t.numpy()} for x, t in inputs])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    quant_pre_process(str(plain), str(pre), skip_symbolic_shape=True)  # dynamic H, W defeat it
    # Only the convolutions (about 70 % of a forward): quantising the adds, products and
    # normalisations as well cost accuracy for little speed.
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(QUANTISED_OPS), reduce_range=REDUCE_RANGE)
    plain.unlink(missing_ok=True)
    pre.unlink(missing_ok=True)
    return out


def quantised_model_path(net: UNet, schedule) -> tuple[Path, bool]:
    """The cached int8 model of ``net`` (built on first use); and whether it came from the cache."""
    folder = _cache_dir()
    settings = f"{'-'.join(QUANTISED_OPS)}{'-rr' if REDUCE_RANGE else ''}"
    name = f"v{_FORMAT}-{settings}-{weights_digest(net)}.int8.onnx"
    if folder is not None and (folder / name).is_file():
        return folder / name, True
    with tempfile.TemporaryDirectory() as tmp:
        built = build_quantised(net, schedule, Path(tmp))
        if folder is None:  # no cache: keep it beside the process until it exits
            keep = Path(tempfile.mkdtemp(prefix="diffrecon-int8-")) / name
        else:
            keep = folder / name
            folder.mkdir(parents=True, exist_ok=True)
        partial = keep.with_name(f"{keep.name}.{os.getpid()}.partial")
        partial.write_bytes(built.read_bytes())
        os.replace(partial, keep)  # readers never see half a file
    return keep, False


class OnnxInt8Network(nn.Module):
    """A prior's network run by ONNX Runtime in int8: same call and output as the UNet.

    Inputs are padded as the UNet pads them, run, and cropped back; outputs are float32
    torch tensors on the input's device. It has no parameters of its own and no gradient.
    """

    def __init__(self, net: UNet, schedule, threads: int | None = None):
        super().__init__()
        ort = require_onnxruntime()
        self.config = dict(net.config)
        self.multiple = int(net.multiple)
        self._pad = net._pad  # the UNet's own padding (reflection, centred)
        self.path, self.cached = quantised_model_path(net, schedule)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        b, _, h, w = x.shape
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(b).contiguous()
        padded, (top, left) = self._pad(x.detach().float())
        eps = self.session.run(None, {"x": padded.cpu().contiguous().numpy(), "t": t.cpu().numpy()})[0]
        out = torch.from_numpy(eps)[..., top: top + h, left: left + w]
        return out.to(x.device)

    @property
    def backend_info(self) -> dict[str, Any]:
        """What outputs record about this backend (``DiffusionSetup.describe``)."""
        import onnxruntime

        return {"backend": "onnx-int8", "onnxruntime": onnxruntime.__version__, "quantisation":
                "static QDQ, per-channel int8 weights, uint8 activations calibrated on a synthetic phantom",
                "model_file": self.path.name, "from_cache": self.cached}


def with_backend(prior, backend: str, device: str = "cpu"):
    """``prior`` whose network runs on ``backend`` (:data:`BACKENDS`); the same object for ``torch``."""
    import dataclasses

    if backend not in BACKENDS:
        raise SettingsError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return prior
    if device != "cpu":
        raise SettingsError("--backend onnx-int8 runs on the CPU only; use --device cpu with it")
    return dataclasses.replace(prior, model=OnnxInt8Network(prior.model, prior.schedule))
