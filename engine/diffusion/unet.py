"""The UNet that predicts the noise in a noisy image: the learned part of every prior.

Conventions (the samplers, training loop and checkpoints rely on them):

* **Input** ``x``: ``(B, C, H, W)`` float, ``C`` = 1 (a real image) or 2 (a complex MR
  image as real/imaginary channels), any ``H, W``. The network is fully convolutional:
  it pads ``x`` (reflecting) to a multiple of ``2 ** (levels - 1)`` and crops the output
  back, so a prior trained on 64x64 crops runs on a whole 256x320 slice.
* **Time** ``t``: ``(B,)`` or scalar, *continuous* in ``[0, 1]`` (0 = clean, 1 = pure
  noise). Discrete step ``i`` of a ``T``-step schedule is ``t = (i + 1) / T`` (see
  :mod:`.schedules`). The sinusoidal embedding sees ``1000 * t`` so its frequencies
  are the usual ones for ``T = 1000``; continuous-time samplers may ask for any ``t``.
* **Output**: the predicted noise ``eps`` (epsilon-prediction), same shape as ``x``.
* :attr:`UNet.config` is a plain JSON-able dict; ``UNet(**config)`` rebuilds the same
  network, which is how a checkpoint file alone is enough to load a prior.

Self-attention runs only at the lowest resolution, where it is cheap. For CPU speed,
bf16 autocast (:func:`autocast_context`) and the channels-last layout
(:func:`to_channels_last`) are switches. Measured on this project's 2-core CPU, one
torch thread, the 3.2 M-parameter MRI prior (other processes sharing the machine):

* training, batch 16 of 64x64: 8.5 img/s float32, 10.9 float32 + channels-last,
  21.4 bf16, 17.5 bf16 + channels-last: training uses bf16 only;
* one forward at 256x256: 1.7 s float32, 1.4 s bf16, 0.67 s bf16 + channels-last
  (0.19 s vs 0.52 s at 128x128): inference should use both.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import bf16_is_fast  # noqa: F401 (autocast_context's check; tests patch it here)

TIME_SCALE = 1000.0  # the embedding sees 1000 * t, like an integer DDPM step

#: The inference fast path of :func:`norm_silu` (float32, no autograd); ``DIFFRECON_FAST_NET=0``
#: or :func:`set_fast_inference` turns it off. Outputs record it (``network_fast_path``).
FAST_INFERENCE = os.environ.get("DIFFRECON_FAST_NET", "1").strip().lower() not in ("0", "off", "false", "no")


def fast_inference() -> bool:
    """Whether the inference fast path is on (what outputs record as ``network_fast_path``)."""
    return bool(FAST_INFERENCE)


def set_fast_inference(enabled: bool) -> bool:
    """Turn the inference fast path on or off; return the previous setting."""
    global FAST_INFERENCE
    previous, FAST_INFERENCE = FAST_INFERENCE, bool(enabled)
    return previous


def group_count(channels: int) -> int:
    """GroupNorm groups: 32 for wide layers, fewer (but >= 4 channels each) for tiny test nets."""
    groups = min(32, max(1, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of continuous ``t`` in [0, 1], shape ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = (TIME_SCALE * t.float())[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def norm_silu(norm: nn.GroupNorm, x: torch.Tensor, scale: torch.Tensor | None = None,
              shift: torch.Tensor | None = None, silu: bool = True) -> torch.Tensor:
    """GroupNorm, then the time modulation ``* (1 + scale) + shift`` if given, then SiLU.

    Inference on bf16 activations stays in bf16: CPU autocast runs GroupNorm in float32,
    which upcast every activation up to the next convolution. GroupNorm, SiLU and the
    modulation were 58 % of a forward; in bf16 (statistics still accumulate in float32)
    they run 4x faster, equal to the float32 path up to bf16 rounding. Training (grad
    enabled) and float32 inference take the plain path.
    """
    if x.dtype is torch.bfloat16 and not torch.is_grad_enabled():
        with torch.autocast(x.device.type, enabled=False):
            h = F.group_norm(x, norm.num_groups, norm.weight.to(x.dtype), norm.bias.to(x.dtype), norm.eps)
            if scale is not None:
                h = torch.addcmul(shift.to(h.dtype), h, (1 + scale).to(h.dtype))
            return F.silu(h, inplace=True) if silu else h
    if FAST_INFERENCE and not torch.is_grad_enabled():
        # float32 inference: modulation in one addcmul and SiLU in place, no temporaries
        # (1.12x per 256² forward of the MRI prior on this AVX2 CPU, same result to 1e-6)
        h = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        if scale is not None:
            h = torch.addcmul(shift, h, 1 + scale)
        return F.silu(h, inplace=True) if silu else h
    h = norm(x)
    if scale is not None:
        h = h * (1 + scale) + shift
    return F.silu(h) if silu else h


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding as a per-channel scale and shift."""

    def __init__(self, in_ch: int, out_ch: int, time_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(group_count(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # Zero init: each block starts as the identity, which keeps deep UNets stable early on.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(norm_silu(self.norm1, x))
        scale, shift = self.time_proj(temb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(self.dropout(norm_silu(self.norm2, h, scale, shift)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over all pixels of a (low-resolution) feature map."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(norm_silu(self.norm, x, silu=False)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, c/heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class UNet(nn.Module):
    """Epsilon-predicting UNet; see the module docstring for its input/output conventions.

    ``width`` is the channel count of the first level; level ``k`` has
    ``width * channel_mult[k]`` channels and ``res_blocks`` residual blocks, and each
    level but the last halves the resolution.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        channel_mult: tuple[int, ...] | list[int] = (1, 2, 2, 2),
        res_blocks: int = 2,
        attention_heads: int = 4,
        dropout: float = 0.0,
        cond_channels: int = 0,
        time_width: int | None = None,
    ):
        super().__init__()
        if in_channels not in (1, 2):
            raise ValueError(f"in_channels must be 1 (real) or 2 (complex as real/imag); got {in_channels}")
        channel_mult = tuple(int(m) for m in channel_mult)
        self.config: dict[str, Any] = {
            "in_channels": int(in_channels),
            "width": int(width),
            "channel_mult": list(channel_mult),
            "res_blocks": int(res_blocks),
            "attention_heads": int(attention_heads),
            "dropout": float(dropout),
        }
        if cond_channels:  # conditional priors only: unconditional configs (and their files) stay as they were
            self.config["cond_channels"] = int(cond_channels)
        # A pruned network (.pruning) keeps its parent's time embedding: its sinusoid has the
        # parent's frequencies, so the embedding width is recorded apart from ``width``.
        if time_width is not None and int(time_width) != int(width):
            self.config["time_width"] = int(time_width)
        self.time_width = int(time_width or width)
        self.levels = len(channel_mult)
        time_dim = 4 * self.time_width
        self.time_mlp = nn.Sequential(nn.Linear(self.time_width, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        # A conditional prior (classifier-free guidance, .conditioning) reads its condition as extra input channels.
        self.stem = nn.Conv2d(in_channels + int(cond_channels), width, 3, padding=1)

        # Encoder: remember every feature map's channel count for the skip connections.
        self.down = nn.ModuleList()
        skip_channels = [width]
        ch = width
        for level, mult in enumerate(channel_mult):
            for _ in range(res_blocks):
                self.down.append(ResBlock(ch, width * mult, time_dim, dropout))
                ch = width * mult
                skip_channels.append(ch)
            if level < self.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)

        self.mid1 = ResBlock(ch, ch, time_dim, dropout)
        self.mid_attn = SelfAttention(ch, attention_heads)
        self.mid2 = ResBlock(ch, ch, time_dim, dropout)

        # Decoder mirrors the encoder, one more block per level to consume the downsample skips.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(res_blocks + 1):
                self.up.append(ResBlock(ch + skip_channels.pop(), width * mult, time_dim, dropout))
                ch = width * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))

        self.head = nn.Sequential(nn.GroupNorm(group_count(ch), ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def multiple(self) -> int:
        """Input sizes the layers need: a multiple of this (other sizes are padded)."""
        return 2 ** (self.levels - 1)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"UNet expects (B, {self.config['in_channels']}, H, W); got {tuple(x.shape)}")
        b, _, h, w = x.shape
        n_cond = self.config.get("cond_channels", 0)
        if n_cond:  # no condition = the zero condition, the unconditional half of a CFG prior
            cond = torch.zeros((b, n_cond, h, w), dtype=x.dtype, device=x.device) if cond is None else cond
            if cond.shape != (b, n_cond, h, w):
                raise ValueError(f"UNet expects a condition (B, {n_cond}, H, W) = {(b, n_cond, h, w)}; "
                                 f"got {tuple(cond.shape)}")
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        elif cond is not None:
            raise ValueError("this UNet is unconditional; it takes no condition")
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1).expand(b)
        x, crop = self._pad(x)
        temb = self.time_mlp(timestep_embedding(t, self.time_width))

        hs = [self.stem(x)]
        for layer in self.down:
            hs.append(layer(hs[-1], temb) if isinstance(layer, ResBlock) else layer(hs[-1]))
        h_ = self.mid2(self.mid_attn(self.mid1(hs[-1], temb)), temb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h_ = layer(torch.cat([h_, hs.pop()], dim=1), temb)
            else:
                h_ = layer(h_)
        norm, _, conv = self.head  # GroupNorm, SiLU, conv (a Sequential so checkpoints keep their keys)
        out = conv(norm_silu(norm, h_))
        return out[..., crop[0] : crop[0] + h, crop[1] : crop[1] + w].float()

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pad H and W up to a multiple of :attr:`multiple`, centred; return the offsets."""
        m = self.multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph == 0 and pw == 0:
            return x, (0, 0)
        top, left = ph // 2, pw // 2
        pads = (left, pw - left, top, ph - top)
        # Reflection keeps the noise statistics at the border; it needs pads smaller than the image.
        mode = "reflect" if max(pads) < min(h, w) else "replicate"
        return F.pad(x, pads, mode=mode), (top, left)


def build_unet(config: dict[str, Any]) -> UNet:
    """Rebuild a network from its :attr:`UNet.config` (e.g. read from a checkpoint)."""
    allowed = {"in_channels", "width", "channel_mult", "res_blocks", "attention_heads", "dropout", "cond_channels",
               "time_width"}
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"unknown UNet settings {sorted(unknown)}")
    return UNet(**config)


@contextlib.contextmanager
def autocast_context(enabled: bool, device: torch.device | str = "cpu") -> Iterator[None]:
    """bf16 autocast (about 2x faster forwards where bf16 is native), or nothing when disabled
    or when the device would emulate bf16 (:func:`bf16_is_fast`)."""
    device_type = torch.device(device).type
    if not enabled or not bf16_is_fast(device_type):
        yield
        return
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        yield


def to_channels_last(model: nn.Module) -> nn.Module:
    """NHWC memory layout: oneDNN's fast path for convolutions on CPU."""
    return model.to(memory_format=torch.channels_last)
