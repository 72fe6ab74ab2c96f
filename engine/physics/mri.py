"""Cartesian MRI forward model: undersampled (multi-coil) centred Fourier transform.

Model (fastMRI's conventions): an image ``x`` of shape ``(B, 1, H, W)`` (complex64) is
measured as k-space ``y`` of shape ``(B, C, H, W)``:

    y_c = M F (S_c x)          F = fftshift . fft2(norm="ortho") . ifftshift

with ``S_c`` the coil sensitivity maps (``C = 1`` and ``S = 1`` for single-coil data) and
``M`` the 0/1 sampling mask. The adjoint is ``A^H y = sum_c conj(S_c) F^H (M y_c)``.

Because ``F`` is unitary and ``M`` a projection, the single-coil pseudo-inverse is
closed form: ``A^+ = F^H M`` (the zero-filled reconstruction). With coils, ``A^H A =
sum_c S_c^H F^H M F S_c`` has no closed-form inverse and ``A_dagger`` runs conjugate
gradients on the normal equations.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SettingsError
from .base import LinearOperator
from .solvers import conjugate_gradient

_DIMS = (-2, -1)


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two dimensions (DC in the middle)."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(image, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fft2c` (and its adjoint: the transform is unitary)."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=_DIMS), norm="ortho"), dim=_DIMS)


def _centring_phases(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables ``(in, out)`` of shape (1, 1, H, W) with ``fft2c(x) = out * fft2(in * x)``.

    Along an axis of length N with c = N // 2: ``ifftshift`` before the FFT rolls by c, which
    multiplies the spectrum by ``exp(2 pi i k c / N)``; ``fftshift`` after it rolls the
    spectrum by c, which is the FFT of the input modulated by ``exp(2 pi i n c / N)``. So
    ``in[n] = exp(2 pi i c n / N)`` and ``out[k] = exp(2 pi i c (k - c) / N)``; both are
    +-1 checkerboards for even N.
    """

    def axis(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = n // 2
        index = torch.arange(n, dtype=torch.float64)
        # reduce the exponent modulo n before the trigonometry keeps the tables exact
        return (torch.polar(torch.ones(n, dtype=torch.float64), 2 * torch.pi * ((c * index) % n) / n),
                torch.polar(torch.ones(n, dtype=torch.float64), 2 * torch.pi * ((c * (index - c)) % n) / n))

    in_y, out_y = axis(height)
    in_x, out_x = axis(width)
    in_phase = (in_y[:, None] * in_x[None, :]).to(torch.complex64)[None, None]
    out_phase = (out_y[:, None] * out_x[None, :]).to(torch.complex64)[None, None]
    return in_phase, out_phase


def _as_complex(x: torch.Tensor) -> torch.Tensor:
    """Promote real input to complex (float32 -> complex64, float64 -> complex128)."""
    return x if x.is_complex() else torch.complex(x, torch.zeros_like(x))


class MRIOperator(LinearOperator):
    """Undersampled Cartesian MRI, single-coil or multi-coil SENSE.

    ``mask``: bool/0-1 array ``(H, W)`` shared by the batch, or ``(B, 1, H, W)`` one per
    batch item. ``sensitivity_maps``: complex ``(C, H, W)`` shared, or ``(B, C, H, W)``;
    ``None`` for single-coil. Numpy arrays and torch tensors are both accepted.
    """

    image_dtype = torch.complex64

    def __init__(self, mask: np.ndarray | torch.Tensor, sensitivity_maps: np.ndarray | torch.Tensor | None = None):
        # Constants are built on the CPU; _constant() moves them to the input's device once.
        mask_t = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).detach().cpu()
        if mask_t.dim() == 2:
            mask_t = mask_t[None, None]
        elif mask_t.dim() == 3:  # (B, H, W)
            mask_t = mask_t[:, None]
        if mask_t.dim() != 4 or mask_t.shape[1] != 1:
            raise SettingsError(f"An MRI mask must be (H, W) or (B, 1, H, W); got shape {tuple(mask_t.shape)}.")
        self.height, self.width = int(mask_t.shape[-2]), int(mask_t.shape[-1])
        self.mask = mask_t.to(torch.float32)

        self.maps: torch.Tensor | None = None
        if sensitivity_maps is not None:
            maps = torch.as_tensor(sensitivity_maps).detach().cpu().to(torch.complex64)
            if maps.dim() == 3:
                maps = maps[None]
            if maps.dim() != 4 or tuple(maps.shape[-2:]) != (self.height, self.width):
                raise SettingsError(
                    f"Sensitivity maps must be (C, {self.height}, {self.width}) or (B, C, {self.height}, "
                    f"{self.width}); got shape {tuple(maps.shape)}."
                )
            self.maps = maps

        # The hot loop is A = diag(kspace_weight) fft2 diag(image_weight) and its adjoint
        # diag(conj image_weight) ifft2 diag(conj kspace_weight): the shifts of the centred
        # FFT become phase ramps folded into the mask and the maps (2 multiplies per call
        # instead of 2 rolls, a mask multiply and a maps multiply).
        in_phase, out_phase = _centring_phases(self.height, self.width)
        self.in_phase, self.out_phase = in_phase, out_phase
        self.kspace_weight = self.mask * out_phase
        self.kspace_weight_conj = self.kspace_weight.conj().resolve_conj()
        self.image_weight = in_phase if self.maps is None else in_phase * self.maps
        self.image_weight_conj = self.image_weight.conj().resolve_conj()

    # ------------------------------------------------------------------ facts

    @property
    def n_coils(self) -> int:
        return 1 if self.maps is None else int(self.maps.shape[1])

    @property
    def multicoil(self) -> bool:
        return self.maps is not None

    @property
    def acceleration(self) -> float:
        """Samples over acquired samples, averaged over the mask's batch items."""
        return float(self.mask.numel() / self.mask.sum().clamp_min(1))

    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.height, self.width)

    # ------------------------------------------------------------------ operator

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        x = _as_complex(x)
        coil_images = self._constant("image_weight", x) * x  # (B, C, H, W): S_c x, phase-ramped
        return self._constant("kspace_weight", x) * torch.fft.fft2(coil_images, norm="ortho")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        y = _as_complex(y)
        coil_images = torch.fft.ifft2(self._constant("kspace_weight_conj", y) * y, norm="ortho")
        image = self._constant("image_weight_conj", y) * coil_images
        return image if self.maps is None else image.sum(dim=1, keepdim=True)

    def A_dagger(self, y: torch.Tensor, *, iters: int = 50) -> torch.Tensor:  # noqa: N802
        """Least-squares image: ``F^H M y`` for single coil (exact), CG on the normal
        equations for multi-coil."""
        if self.maps is None:
            return self.A_adjoint(y)
        return super().A_dagger(y, iters=iters)

    def zero_filled(self, y: torch.Tensor) -> torch.Tensor:
        """fastMRI's zero-filled baseline, float32 ``(B, 1, H, W)``: the magnitude of ``F^H y``
        for single coil, the root sum of squares of the coil images for multi-coil."""
        coil_images = ifft2c(_as_complex(y))
        return coil_images.abs().square().sum(dim=1, keepdim=True).sqrt()

    def _fft2c(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`fft2c` with this operator's precomputed phase tables."""
        return self._constant("out_phase", x) * torch.fft.fft2(self._constant("in_phase", x) * x, norm="ortho")

    def _ifft2c(self, k: torch.Tensor) -> torch.Tensor:
        """:func:`ifft2c` with this operator's precomputed phase tables."""
        return self._constant("in_phase", k).conj() * torch.fft.ifft2(self._constant("out_phase", k).conj() * k,
                                                                      norm="ortho")

    # ------------------------------------------------------------------ data consistency

    def data_consistency(
        self, x: torch.Tensor, y: torch.Tensor, noise_level: float = 0.0, *, iters: int = 5
    ) -> torch.Tensor:
        """Pull an image estimate ``x`` towards the measurements ``y``.

        Single coil, ``noise_level == 0``: hard replacement of the measured k-space,
        ``x <- F^H[(1 - M) F x + M y]``.

        ``noise_level = sigma > 0`` (the std of the complex k-space noise per sample): the
        MAP fusion of the predicted k-space ``k = F x`` (error variance ``tau^2``) with the
        measurement (noise variance ``sigma^2``) at every sampled location,

            k <- (1 - M) k + M (sigma^2 k + tau^2 y) / (sigma^2 + tau^2),

        where ``tau^2 = max(mean_sampled |y - k|^2 - sigma^2, 0)`` is estimated per batch
        item from the residual (whose variance is ``tau^2 + sigma^2``). An estimate already
        consistent to within the noise is left alone instead of having noise pasted in.

        Multi-coil: ``iters`` conjugate-gradient steps from ``x`` on
        ``min ||A x - y||^2 (+ sigma^2 / tau^2 ||x - x_in||^2 when noise_level > 0)``, the same
        MAP problem, which the single-coil formula solves in closed form.
        """
        x = _as_complex(x)
        y = _as_complex(y)
        sigma2 = float(noise_level) ** 2
        if self.maps is None:
            mask = self._constant("mask", x)
            k = self._fft2c(x)
            residual = mask * (y - k)
            if sigma2 > 0.0:
                tau2 = self._prediction_variance(residual, sigma2, mask)
                residual = residual * (tau2 / (tau2 + sigma2))
            return self._ifft2c(k + residual)

        rhs = self.A_adjoint(y)
        if sigma2 == 0.0:
            return conjugate_gradient(self.normal, rhs, x0=x, iters=iters)
        tau2 = self._prediction_variance(y - self.A(x), sigma2, self._constant("mask", x))
        lam = sigma2 / tau2.clamp_min(sigma2 * 1e-6)  # tau^2 -> 0: keep the estimate
        return conjugate_gradient(lambda v: self.normal(v) + lam * v, rhs + lam * x, x0=x, iters=iters)

    def _prediction_variance(self, residual: torch.Tensor, sigma2: float, mask: torch.Tensor) -> torch.Tensor:
        """``max(mean |residual|^2 over sampled entries - sigma^2, 0)`` per batch item, (B, 1, 1, 1)."""
        sampled = mask.sum(dim=(1, 2, 3)) * residual.shape[1]  # coils x sampled locations
        power = (mask * residual.abs().square()).sum(dim=(1, 2, 3)) / sampled.clamp_min(1)
        return (power - sigma2).clamp_min(0.0).view(-1, 1, 1, 1)
