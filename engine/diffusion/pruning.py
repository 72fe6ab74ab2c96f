"""Structured channel pruning of a prior's UNet: the same architecture, narrower, no retraining yet.

:func:`plan_pruning` decides which channels each layer keeps, :func:`prune` cuts them out
and returns an ordinary :class:`~.unet.UNet` (``width`` scaled by the factor, the parent's
time embedding kept through ``time_width``), which a short fine-tune
(``diffrecon train --init-from PRIOR --prune 0.75``) then adapts.

Channels are grouped into **channel spaces**: every tensor dimension that indexes the
same channels must keep the same ones. An identity skip ties a residual block's input
and output (``x + h``), so a level's residual stream is one space; a block whose skip
is a 1x1 convolution starts a new one; a decoder block reads the concatenation of two
spaces; inside a block the hidden channels (``conv1``, the time scale and shift,
``norm2``, ``conv2``'s input) are a space of their own; attention keeps the same
query/key dimensions per head (their dot product pairs them) and its value dimensions
apart. A space's channel importance is the L1 norm of the filters that write it (all of
them, for a residual stream), which needs no data and no batch-norm statistics.

Channels are dropped four at a time, aligned with the GroupNorm groups of four that every
norm of up to 128 channels uses (:func:`.unet.group_count`): the groups kept are
normalised exactly as before, so a network whose dropped channels feed nothing (their
consuming weights zero) computes the same output after pruning. Norms of more than 128
channels (the deepest decoder blocks, 32 groups of 5-6) change their grouping, which the
fine-tune absorbs. Query weights are rescaled by ``sqrt(d_new / d_old)`` so that
attention's ``1 / sqrt(d)`` scale is unchanged for the kept dimensions.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from .unet import ResBlock, UNet

GROUP = 4  # channels per GroupNorm group in every norm of up to 128 channels


@dataclass
class Space:
    """One set of channels that several tensor dimensions share."""

    name: str
    size: int
    kept: int
    importance: torch.Tensor  # (size,) L1 norm of the filters writing each channel
    heads: int = 0  # attention spaces: choose within each head
    keep: torch.Tensor | None = None  # sorted indices, set by plan_pruning


@dataclass
class PruningPlan:
    """Which channels every space keeps, and which dimension of which tensor each space indexes."""

    factor: float
    width: int
    spaces: dict[str, Space]
    # tensor name -> (spaces along dim 0, spaces along dim 1); () when that dim is not pruned
    dims: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    query_rows: str = ""  # the attention qkv tensor whose query rows are rescaled
    query_scale: float = 1.0

    def index(self, names: tuple[str, ...]) -> torch.Tensor:
        """The kept positions along a dimension made of ``names``' spaces, concatenated."""
        parts: list[torch.Tensor] = []
        offset = 0
        for name in names:
            space = self.spaces[name]
            assert space.keep is not None, "plan_pruning sets every space's channels"
            parts.append(space.keep + offset)
            offset += space.size
        return torch.cat(parts)

    def dropped(self, names: tuple[str, ...]) -> torch.Tensor:
        total = sum(self.spaces[n].size for n in names)
        mask = torch.ones(total, dtype=torch.bool)
        mask[self.index(names)] = False
        return mask.nonzero().flatten()


def _filter_l1(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().flatten(1).sum(dim=1).float()


class _Builder:
    def __init__(self, factor: float):
        self.factor = factor
        self.spaces: dict[str, Space] = {}
        self.dims: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def space(self, name: str, size: int, heads: int = 0) -> str:
        self.spaces[name] = Space(name, size, round(size * self.factor), torch.zeros(size), heads)
        return name

    def writes(self, space: str, rows: torch.Tensor) -> None:
        self.spaces[space].importance += rows

    def conv(self, prefix: str, module: nn.Conv2d, out: tuple[str, ...], inp: tuple[str, ...],
             producer: bool = True) -> None:
        self.dims[f"{prefix}.weight"] = (out, inp)
        if getattr(module, "bias", None) is not None:
            self.dims[f"{prefix}.bias"] = (out, ())
        if producer and len(out) == 1:
            self.writes(out[0], _filter_l1(module.weight))

    def norm(self, prefix: str, over: tuple[str, ...]) -> None:
        self.dims[f"{prefix}.weight"] = (over, ())
        self.dims[f"{prefix}.bias"] = (over, ())

    def resblock(self, prefix: str, block: ResBlock, inp: tuple[str, ...]) -> str:
        hidden = self.space(f"{prefix}.hidden", block.conv1.out_channels)
        if isinstance(block.skip, nn.Identity):
            if len(inp) != 1:
                raise ValueError(f"{prefix}: an identity skip over concatenated inputs")
            out = inp[0]
        else:
            out = self.space(f"{prefix}.out", block.conv2.out_channels)
            self.conv(f"{prefix}.skip", block.skip, (out,), inp)
        self.norm(f"{prefix}.norm1", inp)
        self.conv(f"{prefix}.conv1", block.conv1, (hidden,), inp)
        # time_proj's rows are the scale for every hidden channel, then the shift
        self.dims[f"{prefix}.time_proj.weight"] = ((hidden, hidden), ())
        self.dims[f"{prefix}.time_proj.bias"] = ((hidden, hidden), ())
        self.norm(f"{prefix}.norm2", (hidden,))
        self.conv(f"{prefix}.conv2", block.conv2, (out,), (hidden,))
        return out


def plan_pruning(net: UNet, factor: float) -> PruningPlan:
    """Choose the channels a ``factor``-width copy of ``net`` keeps (L1 of the filters writing them)."""
    if not 0.0 < factor <= 1.0:
        raise ValueError(f"the pruning factor must be in (0, 1]; got {factor}")
    config = net.config
    width = round(config["width"] * factor)
    heads = config["attention_heads"]
    for mult in config["channel_mult"]:
        if (width * mult) % GROUP or (config["width"] * mult) % GROUP:
            raise ValueError(f"width {config['width']} x {factor} = {width}: every level's channels must stay "
                             f"a multiple of {GROUP} (the GroupNorm groups)")
    if (width * config["channel_mult"][-1]) % heads:
        raise ValueError(f"width {width}: the deepest level's channels do not split into {heads} attention heads")
    b = _Builder(factor)
    stream = b.space("stem", net.stem.out_channels)
    b.conv("stem", net.stem, (stream,), ())
    skips = [stream]
    for i, layer in enumerate(net.down):
        if isinstance(layer, ResBlock):
            stream = b.resblock(f"down.{i}", layer, (stream,))
        else:  # a strided convolution: a new space
            conv = cast(nn.Conv2d, layer)
            new = b.space(f"down.{i}", conv.out_channels)
            b.conv(f"down.{i}", conv, (new,), (stream,))
            stream = new
        skips.append(stream)
    stream = b.resblock("mid1", net.mid1, (stream,))
    attn = net.mid_attn
    c = attn.proj.out_channels
    qk, v = b.space("mid_attn.qk", c, heads), b.space("mid_attn.v", c, heads)
    b.norm("mid_attn.norm", (stream,))
    b.conv("mid_attn.qkv", attn.qkv, (qk, qk, v), (stream,), producer=False)
    rows = _filter_l1(attn.qkv.weight)
    b.writes(qk, rows[:c] + rows[c:2 * c])
    b.writes(v, rows[2 * c:])
    b.conv("mid_attn.proj", attn.proj, (stream,), (v,))
    stream = b.resblock("mid2", net.mid2, (stream,))
    for i, layer in enumerate(net.up):
        if isinstance(layer, ResBlock):
            stream = b.resblock(f"up.{i}", layer, (stream, skips.pop()))
        else:  # Sequential(Upsample, Conv2d)
            conv = cast(nn.Conv2d, cast(nn.Sequential, layer)[1])
            new = b.space(f"up.{i}", conv.out_channels)
            b.conv(f"up.{i}.1", conv, (new,), (stream,))
            stream = new
    b.norm("head.0", (stream,))
    b.conv("head.2", cast(nn.Conv2d, net.head[2]), (), (stream,), producer=False)

    for space in b.spaces.values():
        space.keep = _choose(space)
    d_old = c // heads
    d_new = b.spaces[qk].kept // heads
    return PruningPlan(factor, width, b.spaces, b.dims, "mid_attn.qkv", math.sqrt(d_new / d_old))


def _choose(space: Space) -> torch.Tensor:
    """The most important channels: whole groups of four, or per head for attention."""
    if space.heads:
        d, k = space.size // space.heads, space.kept // space.heads
        per_head = space.importance.reshape(space.heads, d)
        top = per_head.topk(k, dim=1).indices.sort(dim=1).values
        return (top + torch.arange(space.heads)[:, None] * d).flatten()
    groups = space.importance.reshape(-1, GROUP).sum(dim=1)
    kept_groups = groups.topk(space.kept // GROUP).indices.sort().values
    return (kept_groups[:, None] * GROUP + torch.arange(GROUP)).flatten()


def prune(net: UNet, factor: float, plan: PruningPlan | None = None) -> tuple[UNet, PruningPlan]:
    """A ``factor``-width UNet holding ``net``'s kept channels, and the plan that chose them."""
    plan = plan or plan_pruning(net, factor)
    config = {**net.config, "width": plan.width, "time_width": net.time_width}
    small = UNet(**config)
    state = {}
    for name, tensor in net.state_dict().items():
        rows, cols = plan.dims.get(name, ((), ()))
        t = tensor.detach()
        if rows:
            t = t.index_select(0, plan.index(rows))
        if cols:
            t = t.index_select(1, plan.index(cols))
        if name.startswith(plan.query_rows + "."):
            t = t.clone()
            t[: small.mid_attn.proj.out_channels] *= plan.query_scale  # the query rows come first
        state[name] = t.clone()
    small.load_state_dict(state, strict=True)
    return small.to(next(net.parameters()).device).train(net.training), plan


def silence_dropped(net: UNet, plan: PruningPlan) -> UNet:
    """A copy of ``net`` whose dropped channels feed nothing: every weight reading them is zero.

    Pruning this copy changes nothing it computes (the module docstring says why), which
    is what the tests check; on a trained network it shows what pruning alone costs.
    """
    silent = copy.deepcopy(net)
    state = silent.state_dict()
    with torch.no_grad():
        for name, (rows, cols) in plan.dims.items():
            if cols:
                state[name].index_fill_(1, plan.dropped(cols), 0.0)
            if name == f"{plan.query_rows}.weight" or name == f"{plan.query_rows}.bias":
                # attention reads the query/key dimensions through their product: zero the queries
                c = silent.mid_attn.proj.out_channels
                state[name][:c].index_fill_(0, plan.dropped(rows[:1]), 0.0)
    return silent


def describe(plan: PruningPlan, before: UNet, after: UNet) -> dict:
    """What a pruned prior's metadata records about its pruning."""
    return {"factor": plan.factor, "criterion": "L1 norm of the filters writing each channel, groups of 4",
            "parameters_before": before.parameter_count(), "parameters_after": after.parameter_count(),
            "width_before": before.config["width"], "width_after": plan.width}
