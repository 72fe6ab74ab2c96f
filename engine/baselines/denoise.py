"""Classical denoisers: median filter, TV denoising and BM3D.

All take and return batched images ``(B, 1, H, W)`` (torch, real; complex images are
filtered as their real and imaginary parts) and work slice by slice.

* :func:`median_denoise`: ``scipy.ndimage.median_filter`` with a square window (edges
  mirrored). Robust to impulsive noise; the window size is the only parameter.
* TV denoising: :func:`diffrecon.baselines.tv.tv_denoise` (re-exported here).
* :func:`bm3d_denoise`: BM3D (Dabov et al. 2007; Mäkinen et al. 2020) through the
  optional ``bm3d`` package, whose licence forbids commercial use, so diffrecon never
  depends on it: installing it is the user's choice (``pip install bm3d``). BM3D needs
  the noise standard deviation; when it is not known it is estimated per slice from
  the finest wavelet band (Donoho's MAD estimator, ``skimage.restoration.estimate_sigma``).

Ultrasound: diffrecon's ultrasound images are log-compressed B-mode (see
:mod:`diffrecon.physics.ultrasound`). Speckle multiplies the envelope, so after the
logarithm it is *additive* (the log of a Gamma variable) and roughly stationary,
which is the noise these denoisers assume. The baselines therefore denoise the B-mode
image directly, in the log-compressed domain, never the linear envelope (where the
noise grows with the signal and a median or TV would smear bright structures).

The speckled image and the clean one are log-compressed against one reference (the scanner's
gain), with speckle whose log is zero-mean (:mod:`diffrecon.physics.ultrasound`), so a denoised
B-mode image needs no shift afterwards. (Until 2026-12 each image was referenced to its own
maximum, the speckled one to its brightest speckle peak, which put the input ~0.1 below the
clean image and needed a ``rereference_bmode`` shift of every result.)
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import median_filter

from ..errors import DiffreconError
from ..physics.noise import NoiseModel
from .tv import tv_denoise

__all__ = [
    "bm3d_available",
    "bm3d_denoise",
    "estimate_noise_sigma",
    "median_denoise",
    "tv_denoise",
]


def _per_slice(y: torch.Tensor, denoise_2d) -> torch.Tensor:
    """Apply a numpy ``(H, W) -> (H, W)`` function to every slice (and part, if complex)."""
    if y.is_complex():
        return torch.complex(_per_slice(y.real, denoise_2d), _per_slice(y.imag, denoise_2d))
    images = y.detach().cpu().numpy()
    out = np.empty_like(images)
    for b in range(images.shape[0]):
        for c in range(images.shape[1]):
            out[b, c] = denoise_2d(images[b, c])
    return torch.from_numpy(out).to(y.device)


def median_denoise(y: torch.Tensor, size: int = 3) -> torch.Tensor:
    """Median of each pixel's ``size x size`` neighbourhood, slice by slice."""
    if size < 1:
        raise ValueError(f"the median window must be at least 1 pixel; got {size}")
    return _per_slice(y, lambda image: median_filter(image, size=int(size), mode="reflect"))


def estimate_noise_sigma(y: torch.Tensor) -> float:
    """Gaussian noise std of a batch, averaged over slices (wavelet MAD estimator)."""
    from skimage.restoration import estimate_sigma

    images = y.detach().abs().cpu().numpy() if y.is_complex() else y.detach().cpu().numpy()
    return float(np.mean([estimate_sigma(image) for image in images.reshape(-1, *images.shape[-2:])]))


def bm3d_available() -> bool:
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


def bm3d_denoise(y: torch.Tensor, sigma: float | None = None, *, sigma_scale: float = 1.0,
                 noise: NoiseModel | None = None) -> torch.Tensor:
    """BM3D with noise std ``sigma`` (estimated when ``None``) times ``sigma_scale``.

    With a signal-dependent ``noise`` model (Poisson, Gamma speckle), BM3D runs on its
    variance-stabilised image (Anscombe, log) with the stabilised std and is mapped back,
    as Mäkinen & Foi prescribe for BM3D on Poisson data: the same transform the diffusion
    denoiser gets, so the two are compared fairly. ``sigma``, when given, is then the std
    in the stabilised domain. Raises :class:`~diffrecon.errors.DiffreconError` when the
    optional ``bm3d`` package is not installed.
    """
    try:
        import bm3d
    except ImportError:
        raise DiffreconError(
            "BM3D needs the optional bm3d package, which is free for non-commercial use only: pip install bm3d."
        ) from None
    stabilised = noise if noise is not None and noise.signal_dependent else None
    if stabilised is not None:
        y = stabilised.forward(y)
        sigma = sigma if sigma is not None and sigma > 0 else stabilised.stabilised_sigma
    if sigma is None or sigma <= 0:
        sigma = estimate_noise_sigma(y)
    psd = float(sigma) * float(sigma_scale)
    out = _per_slice(y, lambda image: np.asarray(bm3d.bm3d(image.astype(np.float64), sigma_psd=psd), image.dtype))
    return out if stabilised is None else stabilised.inverse(out)
