"""Test-time adaptation: tune a copy of the prior to the scan at hand while it samples.

A prior trained on a handful of subjects meets a new subject, scanner and contrast with
every user scan. Steerable Conditional Diffusion (Barbano et al. 2023) and Deep Diffusion
Image Prior (Chung & Ye 2024) let the measurements themselves correct the prior: before
the network's noise estimate at ``x_t`` is used, a few gradient steps move a small set of
its parameters down the measurement residual of its own Tweedie estimate,

    L(θ) = ||A x0_θ(x_t) - y||² / ||y||²,    x0_θ = (x_t - sqrt(1 - abar) eps_θ(x_t, t)) / sqrt(abar),

and the updated parameters carry over to the next sampling step, so the prior drifts
towards what this scan needs over the run. Only a *copy* is tuned (the loaded prior's
weights never change), and only a small set of parameters, so the update cannot memorise
the aliasing: ``"norm"`` = the affine parameters of every GroupNorm (about 0.1 % of the
network), ``"lora"`` = rank-r updates ``W + B A`` of every 3x3 convolution (Hu et al. 2021),
``B`` starting at zero so the adapted network starts as the prior.

Cost: each adaptation step is a forward and a backward pass (about 3 forwards) on the
whole batch, on top of the usual forward.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from ..physics.base import LinearOperator
from ..physics.solvers import inner
from .schedules import NoiseSchedule

#: which parameters a scan may tune
ADAPT_PARAMETERS = ("norm", "lora")


class LoRAConv2d(nn.Module):
    """A frozen 3x3 convolution plus a trainable low-rank update ``up(down(x))``.

    ``down`` is a ``rank``-channel 3x3 convolution, ``up`` a 1x1 back to the output
    channels, initialised at zero: at first the layer is exactly the original.
    """

    def __init__(self, conv: nn.Conv2d, rank: int, generator: torch.Generator | None = None):
        super().__init__()
        self.conv = conv
        self.down = nn.Conv2d(conv.in_channels, rank, 3, stride=conv.stride[0], padding=1, bias=False)
        self.up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5, generator=generator)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.up(self.down(x))


def _add_lora(net: nn.Module, rank: int, seed: int) -> list[torch.Tensor]:
    """Wrap every 3x3 convolution of ``net`` in :class:`LoRAConv2d`; return the new parameters."""
    generator = torch.Generator().manual_seed(seed)  # the run's seed fixes the result
    params: list[torch.Tensor] = []
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.padding == (1, 1):
                wrapped = LoRAConv2d(child, rank, generator)
                setattr(parent, name, wrapped)
                params += [wrapped.down.weight, wrapped.up.weight]
    return params


class ScanAdaptedModel(nn.Module):
    """An eps-model (``(x_t, t) -> eps``) that adapts a copy of ``model`` before each call.

    ``residual(x0_model)`` maps a model-domain clean estimate of the whole batch to its
    measurement residual ``A x0 - y`` (per item), ``y_norm2`` the ``||y||²`` that normalises it.
    """

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, residual: Callable[[torch.Tensor], torch.Tensor],
                 y_norm2: float, *, steps: int = 1, lr: float = 1e-3, parameters: str = "norm", rank: int = 4,
                 seed: int = 0):
        super().__init__()
        if parameters not in ADAPT_PARAMETERS:
            raise ValueError(f"unknown adaptation parameters {parameters!r}; choose one of {ADAPT_PARAMETERS}")
        # A copy, so the loaded prior stays as it was; in NCHW layout because GroupNorm's
        # channels-last backward crashes on CPU (torch 2.13, segfault).
        self.net = copy.deepcopy(model).float()
        self.net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        self.net.requires_grad_(False)
        if parameters == "norm":
            norms = [m for m in self.net.modules() if isinstance(m, nn.GroupNorm)]
            self.tuned: list[torch.Tensor] = [p for m in norms for p in m.parameters()]
        else:
            self.tuned = _add_lora(self.net, rank, seed)
        for p in self.tuned:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(self.tuned, lr=lr)
        self.schedule, self.residual, self.y_norm2, self.steps = schedule, residual, max(y_norm2, 1e-30), steps
        self.losses: list[float] = []  # the residual before each step's first update (for reports and tests)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            x_in, t_in = x.detach().contiguous().clone(), t.detach().clone()  # inference tensors cannot enter a graph
            for k in range(self.steps):
                eps = self.net(x_in, t_in)
                x0 = self.schedule.x0_from_eps(x_in, eps, t_in)
                r = self.residual(x0)
                loss = inner(r, r).real.sum() / self.y_norm2
                if k == 0:
                    self.losses.append(float(loss.detach()))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        with torch.no_grad():
            return self.net(x.contiguous(), t)

    def tuned_count(self) -> int:
        return sum(p.numel() for p in self.tuned)


def measurement_residual(operator: LinearOperator, y: torch.Tensor, from_model: Callable[[torch.Tensor], torch.Tensor],
                         batch: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x0_model -> A from_model(x0) - y`` for a batch of K samples of ``batch`` slices
    (sample-major, as the guidance sees them)."""
    from .guidance import _per_problem, autograd_ready

    operator = autograd_ready(operator)
    with torch.inference_mode(False):
        y = y.clone()

    def residual(x0: torch.Tensor) -> torch.Tensor:
        return _per_problem(lambda w: operator.A(w) - y, from_model(x0), batch)

    return residual


__all__ = ["ADAPT_PARAMETERS", "LoRAConv2d", "ScanAdaptedModel", "measurement_residual"]
