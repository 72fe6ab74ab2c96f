"""Ultrasound B-mode: fully developed speckle on the envelope, then log compression.

Speckle model (Goodman's statistics of laser speckle, applied to ultrasound by Burckhardt
and by Wagner et al., "Statistics of speckle in ultrasound B-scans", 1983): with many
random scatterers per resolution cell the echo is a circular complex Gaussian, so its
*envelope* is Rayleigh distributed and its *intensity* (envelope squared) is exponential.
Averaging ``L`` independent looks (compounding) makes the intensity Gamma(L) distributed.
We therefore model the measured envelope of a tissue reflectivity map ``R`` (the
noise-free envelope) as

    A = R sqrt(G),   G ~ Gamma(L, 1/L)   (unit mean intensity factor),

which for ``L = 1`` is a Rayleigh envelope with ``E[A^2] = R^2``, whose speckle contrast
``std(A) / mean(A) = sqrt(4 / pi - 1) ~ 0.523``.

Display (log compression, as scanners do): ``d = 20 log10(A / A_ref)`` dB, clipped to the
dynamic range ``[-DR, 0]`` dB and mapped to ``[0, 1]``: ``b = 1 + d / DR``. ``A_ref`` is each
image's maximum unless given. :func:`log_decompress` inverts it (up to the clipping).
"""

from __future__ import annotations

import math

import torch

from ..errors import SettingsError
from .noise import standard_gamma

RAYLEIGH_SPECKLE_CONTRAST = math.sqrt(4.0 / math.pi - 1.0)


def speckle(envelope: torch.Tensor, looks: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Speckled envelope ``R sqrt(G)``, ``G ~ Gamma(looks, 1/looks)`` (see module docstring)."""
    if looks <= 0:
        raise SettingsError(f"The number of looks must be positive; got {looks}.")
    intensity_factor = standard_gamma(float(looks), tuple(envelope.shape), generator, envelope) / looks
    return envelope * intensity_factor.sqrt()


def log_compress(
    envelope: torch.Tensor, dynamic_range_db: float = 60.0, reference: torch.Tensor | float | None = None
) -> torch.Tensor:
    """B-mode display values in [0, 1]: ``1 + 20 log10(A / A_ref) / DR``, clipped.

    ``reference`` defaults to each image's maximum (per batch item over ``(C, H, W)``).
    """
    if dynamic_range_db <= 0:
        raise SettingsError(f"The dynamic range must be positive; got {dynamic_range_db} dB.")
    if reference is None:
        reference = envelope.abs().amax(dim=(-3, -2, -1), keepdim=True)
    reference = torch.as_tensor(reference, dtype=envelope.dtype, device=envelope.device)
    floor = torch.finfo(envelope.dtype).tiny
    decibels = 20.0 * torch.log10(envelope.abs().clamp_min(floor) / reference.clamp_min(floor))
    return (1.0 + decibels / dynamic_range_db).clamp(0.0, 1.0)


def log_decompress(
    bmode: torch.Tensor, dynamic_range_db: float = 60.0, reference: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """Envelope from display values: ``A_ref 10^((b - 1) DR / 20)`` (the inverse of
    :func:`log_compress` above its floor; 0 maps to the floor ``A_ref 10^(-DR/20)``)."""
    if dynamic_range_db <= 0:
        raise SettingsError(f"The dynamic range must be positive; got {dynamic_range_db} dB.")
    return reference * torch.pow(10.0, (bmode - 1.0) * dynamic_range_db / 20.0)


def simulate_bmode(
    envelope: torch.Tensor, looks: float = 1.0, dynamic_range_db: float = 60.0, seed: int | None = 0
) -> torch.Tensor:
    """A B-mode image in [0, 1] of the reflectivity ``envelope`` ``(B, C, H, W)``: speckle,
    then log compression against each image's brightest speckled value."""
    generator = torch.Generator(device=envelope.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    return log_compress(speckle(envelope, looks, generator), dynamic_range_db)
