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

**One reference for the clean and the speckled image.** A scanner's gain does not
depend on the speckle: the speckled B-mode and the clean one it is compared with must
be log-compressed against the *same* ``A_ref``. And the log of speckle is biased
(``E[ln G] = digamma(L) - ln L``: -2.5 dB for one look), so a denoiser that removes the
zero-mean fluctuation in the display domain would land below the clean image.
:func:`simulate_bmode` with a ``reference`` therefore draws speckle of unit *geometric*
mean (:func:`log_unbiased_speckle`: its log is zero-mean, a gain of 2.5 dB at one look),
and compresses against that reference; the clean image is ``log_compress(R,
reference=A_ref)``. Denoised B-mode then needs no re-referencing afterwards.
"""

from __future__ import annotations

import math

import numpy as np
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


def log_unbiased_speckle(envelope: torch.Tensor, looks: float = 1.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`speckle` scaled so that ``E[ln(A / R)] = 0``: divided by
    ``exp((digamma(L) - ln L) / 2)``, the geometric mean of ``sqrt(G)``."""
    log_mean = 0.5 * (float(torch.special.digamma(torch.tensor(float(looks), dtype=torch.float64)))
                      - math.log(looks))
    return speckle(envelope, looks, generator) * math.exp(-log_mean)


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
    envelope: torch.Tensor, looks: float = 1.0, dynamic_range_db: float = 60.0, seed: int | None = 0,
    reference: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """A B-mode image in [0, 1] of the reflectivity ``envelope`` ``(B, C, H, W)``.

    With ``reference`` (the scanner's gain: the clean image is ``log_compress(envelope,
    reference=reference)``): log-unbiased speckle compressed against it (module
    docstring). Without: plain speckle against each image's brightest speckled value (a
    self-referenced display, several dB off the clean image's own reference)."""
    generator = torch.Generator(device=envelope.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    if reference is None:
        return log_compress(speckle(envelope, looks, generator), dynamic_range_db)
    return log_compress(log_unbiased_speckle(envelope, looks, generator), dynamic_range_db, reference)


def bmode_working_image(display: np.ndarray, dynamic_range_db: float = 50.0) -> np.ndarray:
    """What the simulated-ultrasound task works on, for a whole volume of display values:
    ``log_compress`` against the volume's maximum (:class:`UltrasoundMeasurements` uses
    the maximum over the chosen slices). Ultrasound priors train on this."""
    import numpy as np

    data = np.abs(np.asarray(display, np.float32))
    peak = float(data.max()) or 1.0
    return log_compress(torch.from_numpy(data), dynamic_range_db, peak).numpy()
