"""L1-wavelet compressed sensing (Lustig, Donoho & Pauly 2007) for any linear operator.

Solves, per batch item,

    min_x  1/2 ||A x - y||²  +  lam_abs · ||W x||_1

with ``W`` an orthonormal 2D Daubechies wavelet transform (db4 by default, as sigpy's
``L1WaveletRecon``), by FISTA (Beck & Teboulle 2009) with adaptive restart (O'Donoghue &
Candès 2015: momentum is reset whenever it points uphill, which removes FISTA's
oscillations). ``lam_abs = lam · max|Aᴴy|`` as for TV (see :mod:`.tv`), so weights
transfer across scalings. All coefficients are penalised, the approximation band included
(as Lustig's sparseMRI and sigpy do): with few levels that band still spans undersampled
frequencies, and leaving it free measurably hurt (-0.3 to -3 dB on 4x brain MRI).

The transform is implemented in torch (strided convolutions with periodic boundaries,
the same coefficients as PyWavelets' ``mode="periodization"``, checked in the tests), so
it is batched, runs on the GPU with the rest of the pipeline and handles complex images
as two real ones. Measured on one CPU thread, forward plus inverse of a 128x128 complex
image at 4 levels: torch 1.75 ms, PyWavelets 1.35 ms (``wavedec2``/``waverec2`` on the
real and imaginary parts); the difference is ~40 ms per 100-iteration reconstruction,
against avoiding a device round trip per iteration on a GPU.

The number of iterations is a tuned parameter, not only a cost: with 1D (line)
undersampling the zero-filled image has a *smaller* wavelet L1 norm than the true one
(aliasing spreads energy thinly, and zero-filling removes energy), so the exact
minimiser drifts back towards aliasing; early stopping from the zero-filled start is
the better estimator (measured on colin27: the best PSNR comes at 50-100 iterations).

Images whose sides are not multiples of ``2**levels`` are zero-padded at the bottom and
right; the padded pixels are extra unknowns that the data term does not see (``A`` acts
on the crop), so the transform stays orthonormal and the prox exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pywt
import torch
import torch.nn.functional as F

from ..physics.base import LinearOperator
from ..physics.solvers import inner
from .tv import NORM_SAFETY, operator_norm, regularization_scale


class OrthoWavelet2D:
    """Orthonormal multi-level 2D DWT with periodic boundaries, coefficients in Mallat layout.

    ``forward`` maps ``(B, C, H, W)`` to coefficients of the same shape: the top-left
    ``(H, W) / 2**levels`` block is the approximation, the rest detail bands (as
    ``pywt.coeffs_to_array`` arranges them). ``inverse`` is its exact inverse and adjoint.
    ``H`` and ``W`` must be multiples of ``2**levels``.

    Each level is one strided 2D convolution with the four separable filters (analysis)
    and one convolution plus ``pixel_shuffle`` (synthesis, in polyphase form): fewer,
    larger operations than filtering rows and columns separately (which measured 2x
    slower on a CPU, as did transposed convolutions for the synthesis).
    """

    def __init__(self, wavelet: str = "db4", levels: int = 4):
        wave = pywt.Wavelet(wavelet)
        if not wave.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal")
        self.name, self.levels = wavelet, int(levels)
        # conv2d cross-correlates, so the analysis filters are reversed. Bands are ordered
        # (row filter, column filter): LL, LH, HL, HH.
        taps = torch.tensor([wave.dec_lo[::-1], wave.dec_hi[::-1]], dtype=torch.float64)
        self._analysis = torch.einsum("ri,cj->rcij", taps, taps).reshape(4, 1, taps.shape[1], taps.shape[1])
        # Periodic padding that reproduces PyWavelets' periodization alignment.
        self._pad = len(wave.dec_lo) // 2 - 1
        synthesis_1d, self._synthesis_pad = _polyphase_synthesis(wave)
        k = synthesis_1d.shape[-1]
        # (output parity row, parity col) x (band row, band col): pixel_shuffle's channel order.
        self._synthesis = torch.einsum("pak,qbl->pqabkl", synthesis_1d, synthesis_1d).reshape(4, 4, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _as_two_real_images(self._forward_real, x)

    def inverse(self, coeffs: torch.Tensor) -> torch.Tensor:
        return _as_two_real_images(self._inverse_real, coeffs)

    def _forward_real(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        coeffs = x.reshape(-1, 1, *shape[-2:]).clone()
        kernel = self._analysis.to(device=x.device, dtype=x.dtype)
        pad = (self._pad,) * 4
        height, width = shape[-2:]
        for _ in range(self.levels):
            bands = F.conv2d(F.pad(coeffs[..., :height, :width], pad, mode="circular"), kernel, stride=2)
            height, width = height // 2, width // 2
            coeffs[..., :height, :width] = bands[:, 0:1]
            coeffs[..., :height, width : 2 * width] = bands[:, 1:2]
            coeffs[..., height : 2 * height, :width] = bands[:, 2:3]
            coeffs[..., height : 2 * height, width : 2 * width] = bands[:, 3:4]
        return coeffs.reshape(shape)

    def _inverse_real(self, coeffs: torch.Tensor) -> torch.Tensor:
        shape = coeffs.shape
        x = coeffs.reshape(-1, 1, *shape[-2:]).clone()
        kernel = self._synthesis.to(device=x.device, dtype=x.dtype)
        left, right = self._synthesis_pad
        height, width = shape[-2] >> self.levels, shape[-1] >> self.levels
        for _ in range(self.levels):
            bands = torch.cat(
                [
                    x[..., :height, :width],
                    x[..., :height, width : 2 * width],
                    x[..., height : 2 * height, :width],
                    x[..., height : 2 * height, width : 2 * width],
                ],
                dim=1,
            )
            parities = F.conv2d(F.pad(bands, (left, right, left, right), mode="circular"), kernel)
            height, width = 2 * height, 2 * width
            x[..., :height, :width] = F.pixel_shuffle(parities, 2)
        return x.reshape(shape)


def _as_two_real_images(transform: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a real linear ``transform`` to a complex ``x`` part by part (real inputs pass through)."""
    if not x.is_complex():
        return transform(x)
    parts = torch.view_as_real(x).movedim(-1, 0)  # (2, ...): real and imaginary images
    return torch.view_as_complex(transform(parts).movedim(0, -1).contiguous())


def _polyphase_synthesis(wave: pywt.Wavelet) -> tuple[torch.Tensor, tuple[int, int]]:
    """1D synthesis (the adjoint of the analysis) as one convolution per output parity.

    With analysis ``c_b[k] = Σ_m h_b[m] x[2k + M - m]`` (``M`` half the filter length),
    the adjoint is ``x[2i + r] = Σ_b Σ_d w[r, b, d] c_b[i + d]`` where
    ``w[r, b, (r + m - M) / 2] = h_b[m]`` for each tap ``m`` of the right parity. Returns
    the kernel ``(2 parities, 2 bands, K)`` and the circular padding (left, right) of ``c``.
    """
    half = len(wave.dec_lo) // 2
    offsets = {
        (r, b, (r + m - half) // 2): tap
        for r in (0, 1)
        for b, taps in enumerate((wave.dec_lo, wave.dec_hi))
        for m, tap in enumerate(taps)
        if (r + m - half) % 2 == 0
    }
    low = min(d for _, _, d in offsets)
    high = max(d for _, _, d in offsets)
    kernel = torch.zeros(2, 2, high - low + 1, dtype=torch.float64)
    for (r, b, d), tap in offsets.items():
        kernel[r, b, d - low] = tap
    return kernel, (-low, high)


def default_levels(height: int, width: int, wavelet: str = "db4") -> int:
    """PyWavelets' (and sigpy's) maximum useful depth for the smaller side."""
    return max(1, pywt.dwt_max_level(min(height, width), pywt.Wavelet(wavelet).dec_len))


def _soft_threshold(c: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Shrink magnitudes by ``threshold`` (complex coefficients keep their phase)."""
    magnitude = c.abs()
    return c * (1.0 - threshold / magnitude.clamp_min(1e-30)).clamp_min(0.0)


def l1_wavelet_objective(
    operator: LinearOperator, y: torch.Tensor, x: torch.Tensor, lam: float, *, wavelet: str = "db4",
    levels: int | None = None,
) -> torch.Tensor:
    """``1/2||Ax - y||² + lam·max|Aᴴy|·||W x||_1`` per batch item, ``(B,)``.

    For images whose sides are multiples of ``2**levels`` (no padding involved).
    """
    levels = default_levels(*x.shape[-2:], wavelet) if levels is None else levels
    transform = OrthoWavelet2D(wavelet, levels)
    coeffs = transform.forward(x)
    data = 0.5 * (operator.A(x) - y).abs().square().flatten(1).sum(dim=1)
    return data + lam * regularization_scale(operator, y).flatten() * coeffs.abs().flatten(1).sum(dim=1)


def l1_wavelet_reconstruct(
    operator: LinearOperator,
    y: torch.Tensor,
    lam: float,
    *,
    iters: int = 100,
    x0: torch.Tensor | None = None,
    wavelet: str = "db4",
    levels: int | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """L1-wavelet regularised least squares by FISTA with restart; returns ``(B, C, H, W)``.

    ``lam`` is relative to ``max|Aᴴy|``. ``x0`` warm-starts (default: ``Aᴴy / ||A||²``).
    ``levels`` defaults to :func:`default_levels`. ``callback(k, x)`` sees each iterate.
    """
    if lam < 0:
        raise ValueError(f"the wavelet weight must be non-negative; got {lam}")
    with torch.no_grad():
        adjoint_y = operator.A_adjoint(y)
        height, width = adjoint_y.shape[-2:]
        levels = default_levels(height, width, wavelet) if levels is None else int(levels)
        transform = OrthoWavelet2D(wavelet, levels)
        block = 2**levels
        padded_h, padded_w = math.ceil(height / block) * block, math.ceil(width / block) * block

        def pad(v: torch.Tensor) -> torch.Tensor:
            return F.pad(v, (0, padded_w - width, 0, padded_h - height))

        norm_sq = (operator_norm(operator, adjoint_y) * NORM_SAFETY) ** 2
        if norm_sq == 0:
            return torch.zeros_like(adjoint_y)
        step = 1.0 / norm_sq  # 1 / Lipschitz constant of the data term's gradient
        threshold = step * lam * regularization_scale(operator, y)

        x = pad(adjoint_y * step if x0 is None else x0.to(adjoint_y.dtype))
        z, momentum = x.clone(), adjoint_y.real.new_ones(x.shape[0])
        for k in range(iters):
            image = z[..., :height, :width]
            grad = pad(operator.A_adjoint(operator.A(image) - y))
            x_next = transform.inverse(_soft_threshold(transform.forward(z - step * grad), threshold))
            # Restart: if the step moved against the extrapolation, drop the momentum.
            uphill = inner(z - x_next, x_next - x) > 0
            momentum = torch.where(uphill, torch.ones_like(momentum), momentum)
            momentum_next = (1.0 + torch.sqrt(1.0 + 4.0 * momentum**2)) / 2.0
            beta = ((momentum - 1.0) / momentum_next).view(-1, *([1] * (x.dim() - 1)))
            z = x_next + beta * (x_next - x)
            x, momentum = x_next, momentum_next
            if callback is not None:
                callback(k, x[..., :height, :width])
        return x[..., :height, :width].contiguous()
