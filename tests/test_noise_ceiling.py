"""The PSNR ceiling that a noisy reference puts on any MRI reconstruction (experiments.noise_ceiling)."""

from __future__ import annotations

import torch
from diffrecon.experiments.noise_ceiling import white_noise_ceiling
from diffrecon.metrics import psnr
from diffrecon.physics import make_mask
from diffrecon.physics.mri import fft2c, ifft2c


def test_the_ceiling_is_what_an_oracle_that_knows_the_clean_image_scores():
    """An oracle with the clean image, made consistent with the measured (noisy) k-space, keeps
    exactly the noise the mask skipped: its PSNR against the noisy reference is the ceiling."""
    n = 128
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    clean = ((xx / 0.8) ** 2 + (yy / 0.9) ** 2 < 1).float() * 0.6 + ((xx / 0.4) ** 2 + (yy / 0.5) ** 2 < 1).float() * 0.4
    clean = ifft2c(fft2c(clean.to(torch.complex64)) * torch.exp(-(xx**2 + yy**2) * 20)).real  # soft edges
    sigma = 0.02
    reference = clean + sigma * torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    mask = torch.from_numpy(make_mask("random", (n, n), 4.0, None, 0)).bool()
    estimated_sigma, ceiling = white_noise_ceiling(reference, mask)
    assert abs(estimated_sigma / sigma - 1) < 0.15
    oracle = ifft2c(torch.where(mask, fft2c(reference.to(torch.complex64)), fft2c(clean.to(torch.complex64)))).real
    scored = psnr(reference.numpy()[None], oracle.numpy()[None])
    assert abs(scored - ceiling) < 1.0, (scored, ceiling)
    # and nothing that keeps the measured k-space does better than the truth there
    assert psnr(reference.numpy()[None], ifft2c(torch.where(mask, fft2c(reference.to(torch.complex64)), 0)).real
                .numpy()[None]) < ceiling
