"""Tiny diffusion priors for tests: ~12k-parameter UNets trained for a couple of seconds.

They learn 16x16 images of overlapping disks (complex with a smooth phase for MRI, real
for CT): enough to be a prior, small enough that every sampling run takes well under a
second. Shared by the streaming, CLI and bench tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffrecon.diffusion.checkpoint import Prior
from diffrecon.diffusion.schedules import make_schedule
from diffrecon.diffusion.unet import UNet

SIZE = 16


def disks(n: int, generator: torch.Generator, complex_phase: bool) -> torch.Tensor:
    """``n`` images of three overlapping disks, intensities in [0.3, 1]; (n, 2 or 1, S, S)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    c = torch.rand(n, 3, 4, generator=generator)
    img = torch.zeros(n, SIZE, SIZE)
    for k in range(3):
        cx, cy = (c[:, k, 0] - 0.5).view(-1, 1, 1), (c[:, k, 1] - 0.5).view(-1, 1, 1)
        r = (0.2 + 0.4 * c[:, k, 2]).view(-1, 1, 1)
        img = torch.where((xx - cx) ** 2 + (yy - cy) ** 2 < r**2, (0.3 + 0.7 * c[:, k, 3]).view(-1, 1, 1), img)
    img = img[:, None]
    if not complex_phase:
        return img
    phase = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * math.pi + 0.5 * xx
    return torch.cat([img * phase.cos(), img * phase.sin()], dim=1)


def train_tiny_prior(channels: int, steps: int = 30) -> Prior:
    torch.manual_seed(0)
    net = UNet(channels, width=4, channel_mult=(1, 2), res_blocks=1, attention_heads=1)
    schedule = make_schedule("linear")
    optimiser = torch.optim.AdamW(net.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x0 = disks(16, gen, channels == 2)
        t = torch.rand(16, generator=gen) * 0.999 + 0.001
        noise = torch.randn(x0.shape, generator=gen)
        loss = (net(schedule.add_noise(x0, noise, t), t) - noise).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval().requires_grad_(False)
    modality = "mri" if channels == 2 else "ct"
    norm = {"kind": "percentile", "percentile": 99.5} if channels == 2 else {"kind": "hu", "offset": -1000.0,
                                                                               "scale": 2000.0}
    return Prior(net, schedule, norm, modality, channels, {"step": steps}, None)


def save_tiny_prior(path: Path, prior: Prior) -> Path:
    """``prior`` as a prior file, what ``--model`` and the viewer's Model box read (the one
    writer every test uses)."""
    from diffrecon.diffusion.checkpoint import save_prior

    meta = {"schedule": prior.schedule.to_metadata(), "normalisation": prior.normalisation,
            "modality": prior.modality, **({"step": prior.metadata["step"]} if "step" in prior.metadata else {})}
    return save_prior(path, prior.model, meta)
