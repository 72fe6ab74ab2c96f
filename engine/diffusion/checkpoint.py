"""Prior files on disk: safetensors only (never pickle), metadata as JSON strings in the header.

Each prior ``NAME`` lives in ``resources/models/`` as

* ``NAME.safetensors``: the EMA weights (float32 as trained; the bundled ones are stored as
  float16, :func:`save_half_precision`), what the app ships and loads, plus the
  metadata that rebuilds everything from the file alone: ``unet_config``, ``schedule``,
  ``normalisation``, ``modality``, ``channels``, ``training`` (a summary);
* ``NAME.train.safetensors``: what resuming needs besides the EMA weights above: raw
  weights, AdamW moments (bfloat16 by default to keep git small; float32 when the
  resume must be bit-exact), step, the learning-rate horizon and every RNG state;
* ``NAME.md``: the model card (:func:`.model_card.write_model_card`);
* ``NAME.train.jsonl``: one line per validation, for loss curves.

The two weight files carry the same ``step``; resuming refuses a pair that disagrees.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import DiffreconError, one_line
from .data import Normalisation
from .schedules import NoiseSchedule, schedule_from_metadata
from .unet import UNet, build_unet

PRIOR_FORMAT = "diffrecon-prior/1"
TRAIN_FORMAT = "diffrecon-train-state/1"


@dataclass(frozen=True)
class PriorPaths:
    weights: Path  # NAME.safetensors
    train_state: Path  # NAME.train.safetensors
    card: Path  # NAME.md
    log: Path  # NAME.train.jsonl

    @classmethod
    def for_weights(cls, weights: str | Path) -> PriorPaths:
        weights = Path(weights)
        if not weights.name.endswith(".safetensors") or weights.name.endswith(".train.safetensors"):
            raise DiffreconError(f"{weights}: a prior's file name must end in .safetensors (not .train.safetensors)")
        stem = weights.parent / weights.name[: -len(".safetensors")]
        return cls(weights, Path(f"{stem}.train.safetensors"), Path(f"{stem}.md"), Path(f"{stem}.train.jsonl"))

    @property
    def name(self) -> str:
        return self.weights.name[: -len(".safetensors")]


@dataclass
class Prior:
    """A loaded prior: the network (EMA weights, eval mode) and how to use it."""

    model: UNet
    schedule: NoiseSchedule
    normalisation: dict[str, Any]  # the header's entry, as written by Normalisation.to_metadata
    modality: str  # "mri" | "ct" | "ultrasound"
    channels: int
    metadata: dict[str, Any]  # every header entry, JSON-decoded
    path: Path

    @property
    def normaliser(self) -> Normalisation:
        """Maps a volume into this prior's intensity domain and back."""
        return Normalisation.from_metadata(self.normalisation)

    @property
    def name(self) -> str:
        """The file's name for messages ("the prior" for one built in memory, which has none)."""
        return Path(self.path).name if self.path else "the prior"

    @property
    def noise_range(self) -> tuple[float, float] | None:
        """A denoising prior's trained noise levels (``train --noise-range``); None for a full prior."""
        value = self.metadata.get("noise_range")
        return (float(value[0]), float(value[1])) if isinstance(value, list) and len(value) == 2 else None


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write beside the target and rename: a crash never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.chmod(tmp, 0o644)  # safetensors creates owner-only files; priors are meant to be shared
    os.replace(tmp, path)


def _encode(meta: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.is_file():
        raise DiffreconError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DiffreconError(f"{path}: is not a readable safetensors file ({one_line(str(exc))[:160]})") from exc
    return tensors, _decode(raw_meta)


def _decode(raw: dict[str, str]) -> dict[str, Any]:
    """Header values are JSON where they were not plain strings when written."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def save_prior(path: str | Path, ema_model: UNet, metadata: dict[str, Any]) -> Path:
    """Write the shipped weights file; ``metadata`` needs ``schedule``, ``normalisation``, ``modality``."""
    path = Path(path)
    meta = {"format": PRIOR_FORMAT, "unet_config": ema_model.config, "channels": ema_model.config["in_channels"],
            "prediction": "epsilon", "time_input": "continuous t in [0, 1]; step i of T is (i + 1) / T", **metadata}
    state = {k: v.float().cpu() for k, v in ema_model.state_dict().items()}
    _atomic_save(state, _encode(meta), path)
    return path


# Bounds on what a prior's metadata may ask for. Each is far beyond any prior diffrecon
# trains (width 32, four levels, two blocks, four heads, T = 1000) but small enough that
# a crafted file cannot make building the network or the schedule exhaust memory.
UNET_LIMITS = {"width": (1, 1024), "res_blocks": (1, 16), "attention_heads": (1, 64)}
CHANNEL_MULT_LIMITS = (1, 8)  # levels
CHANNEL_MULT_VALUE = (1, 16)
SCHEDULE_STEPS = (2, 100_000)
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights
PRIOR_MODALITIES = ("mri", "ct", "ultrasound")  # what `diffrecon train --modality` makes
WEIGHT_DTYPES = ("F32", "F16", "BF16", "F64")


def save_half_precision(src: str | Path, dst: str | Path) -> Path:
    """Rewrite a prior file with float16 weights: half the bytes, which is how the bundled
    priors ship (the repository, and the working tree a lent GPU receives, must stay small).
    :func:`load_prior` widens them back to float32, so only the stored values are rounded
    (relative error below 2^-11). The header is kept; ``stored_as`` records the conversion
    and the float32 weights' digest, which is what a ``weights_sha256`` written into the
    header before the conversion (a calibration's, say) refers to."""
    src, dst = Path(src), Path(dst)
    validate_prior_file(src)
    tensors, meta = _read(src)
    stored = meta.get("stored_as")
    if isinstance(stored, dict) and stored.get("dtype") == "float16":
        raise DiffreconError(f"{src}: is already stored as float16")
    meta["stored_as"] = {"dtype": "float16", "float32_weights_sha256": tensor_bytes_digest(src)}
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}
    _atomic_save(half, _encode(meta), dst)
    return dst


class PriorFileError(DiffreconError):
    """A ``--model`` file that is not a usable prior; the message is one sentence naming the file."""

    def __init__(self, path: Path, reason: str):
        from ..errors import quoted

        super().__init__(f"{quoted(path)}: {reason.rstrip('.')}.")


def _whole(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high], or the sentence saying why it is not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, not {value}")
    return value


def check_unet_config(config: Any) -> dict[str, Any]:
    """Type- and range-check a prior's ``unet_config`` before anything is built from it."""
    if not isinstance(config, dict):
        raise ValueError(f"unet_config must be a JSON object, not {type(config).__name__}")
    allowed = {"in_channels", "width", "channel_mult", "res_blocks", "attention_heads", "dropout", "cond_channels",
               "time_width"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"unet_config has unknown settings {', '.join(map(repr, unknown))}")
    missing = sorted(allowed - set(config) - {"dropout", "cond_channels", "time_width"})
    if missing:
        raise ValueError(f"unet_config lacks {', '.join(missing)}")
    out: dict[str, Any] = {"in_channels": _whole(config["in_channels"], "in_channels", 1, 2)}
    for key, (low, high) in UNET_LIMITS.items():
        out[key] = _whole(config[key], key, low, high)
    mult = config["channel_mult"]
    if not isinstance(mult, list) or not CHANNEL_MULT_LIMITS[0] <= len(mult) <= CHANNEL_MULT_LIMITS[1]:
        raise ValueError(f"channel_mult must be a list of {CHANNEL_MULT_LIMITS[0]} to {CHANNEL_MULT_LIMITS[1]} "
                         f"whole numbers, not {mult!r}")
    out["channel_mult"] = [_whole(m, "each channel_mult", *CHANNEL_MULT_VALUE) for m in mult]
    dropout = config.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number from 0 to below 1, not {dropout!r}")
    out["dropout"] = float(dropout)
    if "cond_channels" in config:  # a conditional prior (classifier-free guidance)
        out["cond_channels"] = _whole(config["cond_channels"], "cond_channels", 1, 4)
    if "time_width" in config:  # a pruned prior's time embedding (its parent's width)
        out["time_width"] = _whole(config["time_width"], "time_width", *UNET_LIMITS["width"])
    deepest = out["width"] * out["channel_mult"][-1]
    if deepest % out["attention_heads"]:
        raise ValueError(f"the {deepest} channels of the deepest level do not split into "
                         f"{out['attention_heads']} attention heads")
    return out


def check_schedule(meta: Any) -> dict[str, Any]:
    from .schedules import SCHEDULE_KINDS

    if not isinstance(meta, dict):
        raise ValueError(f"schedule must be a JSON object, not {type(meta).__name__}")
    kind = meta.get("kind")
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"schedule kind must be one of {', '.join(SCHEDULE_KINDS)}, not {kind!r}")
    return {"kind": kind, "steps": _whole(meta.get("steps"), "schedule steps", *SCHEDULE_STEPS)}


def check_normalisation(meta: Any) -> None:
    if not isinstance(meta, dict):
        raise ValueError(f"normalisation must be a JSON object, not {type(meta).__name__} {meta!r}"[:200])

    def number(key: str) -> float:
        value = meta.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"normalisation {key} must be a finite number, not {value!r}")
        return float(value)

    kind = meta.get("kind")
    if kind == "percentile":
        if not 0.0 < number("percentile") <= 100.0:
            raise ValueError(f"normalisation percentile must be above 0 and at most 100, not {meta['percentile']!r}")
    elif kind == "hu":
        number("offset")
        if number("scale") <= 0:
            raise ValueError(f"normalisation scale must be positive, not {meta['scale']!r}")
    else:
        raise ValueError(f"normalisation kind must be 'percentile' or 'hu', not {kind!r}")


def _tensor_table(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, Any]]:
    """Every tensor's name, shape and dtype, and the decoded metadata: the header only, no weights."""
    if not path.is_file():
        raise PriorFileError(path, "no such file" if not path.exists() else "is not a regular file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = f.metadata() or {}
            table = {k: (tuple(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise PriorFileError(path, f"is not a readable safetensors file ({one_line(str(exc))[:160]})") from exc
    return table, _decode(raw_meta)


def validate_prior_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a prior file's metadata and tensor table before anything is built or loaded.

    Returns (metadata, checked unet config). Raises PriorFileError (one sentence) for any
    field out of type or range, a missing or extra tensor, or a shape or dtype that
    does not match the network the config describes. The expected shapes come from the
    network built on torch's ``meta`` device, which allocates no memory.
    """
    path = Path(path)
    table, meta = _tensor_table(path)
    if meta.get("format") != PRIOR_FORMAT:
        raise PriorFileError(path, f"is not a diffrecon prior (its metadata lacks format={PRIOR_FORMAT!r})")
    missing = [k for k in ("unet_config", "schedule", "normalisation", "modality") if k not in meta]
    if missing:
        raise PriorFileError(path, f"the prior's metadata is missing {', '.join(missing)}")
    try:
        config = check_unet_config(meta["unet_config"])
        check_schedule(meta["schedule"])
        check_normalisation(meta["normalisation"])
        if meta["modality"] not in PRIOR_MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(PRIOR_MODALITIES)}, not {meta['modality']!r}"[:200])
        if "channels" in meta and meta["channels"] != config["in_channels"]:
            raise ValueError(f"channels ({meta['channels']!r}) differs from unet_config in_channels "
                             f"({config['in_channels']})")
    except ValueError as exc:
        raise PriorFileError(path, f"its metadata is invalid: {one_line(str(exc))}") from exc
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_unet(config).state_dict().items()}
    count = sum(math.prod(s) for s in expected.values())
    if count > MAX_PARAMETERS:
        raise PriorFileError(path, f"its network would have {count / 1e6:.0f} M parameters, more than the "
                             f"{MAX_PARAMETERS / 1e6:.0f} M diffrecon loads")
    absent = sorted(set(expected) - set(table))
    extra = sorted(set(table) - set(expected))
    if absent or extra:
        what = (f"lacks {len(absent)} tensor(s) the network needs (first {absent[0]!r})" if absent else
                f"holds {len(extra)} tensor(s) the network has no place for (first {extra[0]!r})")
        raise PriorFileError(path, f"its weights do not match its unet_config: it {what}")
    for name, shape in expected.items():
        got_shape, dtype = table[name]
        if got_shape != shape:
            raise PriorFileError(path, f"its tensor {name!r} has shape {list(got_shape)} where the network "
                                 f"needs {list(shape)}")
        if dtype not in WEIGHT_DTYPES:
            raise PriorFileError(path, f"its tensor {name!r} is {dtype}; weights must be floating point "
                                 f"({', '.join(WEIGHT_DTYPES)})")
    return meta, config


def load_prior(path: str | Path, device: str | torch.device = "cpu") -> Prior:
    """Rebuild a prior from its ``.safetensors`` file alone, or raise a one-sentence DiffreconError.

    Everything is validated (:func:`validate_prior_file`) before the network is built
    or a weight is read; weights that are NaN or infinite are refused after reading.
    """
    path = Path(path)
    meta, config = validate_prior_file(path)
    tensors, _ = _read(path)
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise PriorFileError(path, f"its tensor {name!r} holds {bad} NaN or infinite weight(s), "
                                 "so the prior cannot be used")
    model = build_unet(config)
    schedule = schedule_from_metadata(meta["schedule"])
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    model.to(device).eval().requires_grad_(False)
    return Prior(model, schedule, meta["normalisation"], str(meta["modality"]), int(model.config["in_channels"]), meta, path)


def save_training_state(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    metadata: dict[str, Any],
    rng_tensors: dict[str, torch.Tensor],
    moments_dtype: torch.dtype = torch.bfloat16,
) -> Path:
    """Everything (besides the EMA weights in the prior file) needed to continue training."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.float().cpu() for k, v in model.state_dict().items()}
    names = [name for name, _ in model.named_parameters()]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if len(params) != len(names):
        raise ValueError("the optimizer must hold exactly the model's parameters, in order")
    adam_steps = set()
    for name, p in zip(names, params):
        st = optimizer.state.get(p)
        if st:  # empty before the first step
            tensors[f"adam.exp_avg.{name}"] = st["exp_avg"].to(moments_dtype).cpu()
            tensors[f"adam.exp_avg_sq.{name}"] = st["exp_avg_sq"].to(moments_dtype).cpu()
            adam_steps.add(float(st["step"]))
    tensors.update({f"rng.{k}": v for k, v in rng_tensors.items()})
    meta = {"format": TRAIN_FORMAT, "adam_step": adam_steps.pop() if adam_steps else 0.0,
            "moments_dtype": str(moments_dtype).removeprefix("torch."), **metadata}
    _atomic_save(tensors, _encode(meta), Path(path))
    return Path(path)


def load_training_state(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore raw weights and AdamW moments in place; return (metadata, rng tensors)."""
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format") != TRAIN_FORMAT:
        raise DiffreconError(f"{path}: is not a diffrecon training state (metadata lacks format={TRAIN_FORMAT!r})")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DiffreconError(f"{path}: the saved weights do not fit this network ({first})") from exc
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for (name, _), p in zip(model.named_parameters(), params):
        key = f"adam.exp_avg.{name}"
        if key in tensors:
            optimizer.state[p] = {
                "step": torch.tensor(float(meta["adam_step"])),
                "exp_avg": tensors[key].to(p.dtype),
                "exp_avg_sq": tensors[f"adam.exp_avg_sq.{name}"].to(p.dtype),
            }
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return meta, rng


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON-decoded header of a safetensors file, without loading its tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise DiffreconError(f"{path}: is not a readable safetensors file ({exc})") from exc
    return _decode(raw)


def update_metadata(path: str | Path, updates: dict[str, Any]) -> Path:
    """Set header metadata entries of a safetensors file in place, leaving every tensor's
    bytes as they were (the tensor table and data are copied verbatim; only the
    ``__metadata__`` object of the JSON header changes). Written beside and renamed.

    safetensors' layout: an 8-byte little-endian header length, the JSON header (tensor
    offsets are relative to the data that follows it, so a longer header moves nothing),
    then the data buffer.
    """
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 8:
        raise DiffreconError(f"{path}: is not a safetensors file (too short)")
    length = int.from_bytes(raw[:8], "little")
    try:
        header = json.loads(raw[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffreconError(f"{path}: is not a safetensors file (its header is not JSON)") from exc
    meta = dict(header.get("__metadata__") or {})
    meta.update(_encode(updates))
    header["__metadata__"] = meta
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned, as safetensors writes it
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length :])
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def tensor_bytes_digest(path: str | Path) -> str:
    """SHA-256 of a safetensors file's data buffer (the tensors' bytes, not the header)."""
    import hashlib

    raw = Path(path).read_bytes()
    length = int.from_bytes(raw[:8], "little")
    return hashlib.sha256(raw[8 + length :]).hexdigest()


def weights_digests(path: str | Path, metadata: dict[str, Any] | None = None) -> set[str]:
    """Every digest a ``weights_sha256`` may use for this file's weights: its tensor bytes', and
    for a file stored as float16 (:func:`save_half_precision`) the float32 weights' it came from."""
    digests = {tensor_bytes_digest(path)}
    stored = (metadata or {}).get("stored_as")
    if isinstance(stored, dict) and isinstance(stored.get("float32_weights_sha256"), str):
        digests.add(stored["float32_weights_sha256"])
    return digests


def load_ema_weights(path: str | Path, ema_model: nn.Module) -> dict[str, Any]:
    """Load a prior file's weights into an existing network (used when resuming)."""
    tensors, meta = _read(Path(path))
    load_fitting(ema_model, tensors, f"{path}: the EMA weights do not fit this network")
    return meta


def real_channel_weights(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A complex (2-channel: real, imaginary) prior's weights cut to its real channel: the
    stem keeps the real channel's filters, the head its real output. That is a start for a
    real (1-channel) network, not the same network: the complex prior always saw noise in
    the imaginary channel, and here it sees none. Other priors' weights come back as they are."""
    stem = tensors.get("stem.weight")
    if int(meta.get("unet_config", {}).get("in_channels", 0) or 0) != 2 or stem is None or stem.shape[1] != 2:
        return tensors
    out_conv = ("head.2.weight", "head.2.bias")  # UNet.head = GroupNorm, SiLU, the output convolution
    return {**tensors, "stem.weight": stem[:, :1], **{k: tensors[k][:1] for k in out_conv if k in tensors}}


def load_real_channel_into(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load a prior's weights into a real (1-channel) network of the same shape, a complex
    prior giving its real channel (:func:`real_channel_weights`); return its metadata."""
    tensors, meta = _read(Path(path))
    load_fitting(model, real_channel_weights(tensors, meta), f"{path}: its weights do not fit this network")
    return meta


def load_fitting(model: nn.Module, tensors: dict[str, torch.Tensor], mismatch: str) -> None:
    """``model.load_state_dict(tensors, strict=True)``; a mismatch is one sentence: ``mismatch (torch's first line)``."""
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DiffreconError(f"{mismatch} ({first})") from exc
