"""Parallel-beam CT: the Radon transform, its exact adjoint, and filtered back-projection.

Model. A CT image holds linear attenuation coefficients ``mu`` in 1/mm. A parallel-beam
scanner measures, for each view angle ``theta`` and detector bin ``u``, the line integral

    p(theta, u) = integral of mu along the ray at offset u, direction theta   (dimensionless)

Discretisation (the geometry of scikit-image's ``radon``): the image rotates about pixel
``(N // 2, N // 2)``; the ray of detector bin ``j`` at offset ``u = j - D // 2`` is sampled at
unit steps ``v = s - D // 2`` (``s = 0 .. D - 1``) at the point

    column = N//2 + u cos(theta) + v sin(theta),   row = N//2 - u sin(theta) + v cos(theta),

by bilinear interpolation (zero outside the image), and the samples are summed and
multiplied by the pixel size in mm. With the default ``det_count = N`` the rays cover the
image's inscribed circle (scikit-image's ``circle=True``): objects must lie inside it; pass
``det_count = ceil(sqrt(2) N)`` to see the whole square.

Implementation. The weights of every ray are one sparse system matrix, built once per
geometry and cached (:mod:`.radon_matrix`; ~8 M entries at 256^2 and 60 views): the
forward projection is one sparse matrix product, and the adjoint the product with the
stored transpose of the same matrix, so it is exact by construction. Both run on torch's
sparse CSR kernels (MKL on a CPU, cuSPARSE on a GPU), and autograd goes through them
(DPS differentiates ``A``).

Filtered back-projection (Kak & Slaney, ch. 3) zero-pads each projection to a power of two
at least twice its length, filters it with the band-limited ramp (optionally apodised:
Shepp-Logan, cosine, Hann), and back-projects pixel by pixel with linear interpolation on
the detector, weighted by ``pi / (2 * views)`` as scikit-image's ``iradon`` does.

Low dose (Beer-Lambert with Poisson counting noise, as LoDoPaB-CT simulates it): a
detector bin that sees ``I0`` photons unattenuated counts ``N ~ Poisson(I0 exp(-p))``; the
measured line integral is ``-log(max(N, 0.1) / I0)``, where the clamp at 0.1 photon (the
value LoDoPaB-CT uses) keeps zero counts finite. Fewer photons -> noisier line integrals
(variance ~ exp(p) / I0).

Hounsfield units: ``HU = 1000 (mu - mu_water) / mu_water`` with ``mu_water = 0.0192 /mm``
(water at ~70 keV; air is taken as ``mu = 0``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SettingsError
from .base import LinearOperator
from .radon_matrix import RadonMatrices, radon_matrices

MU_WATER_PER_MM = 0.0192
FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hann")


class ParallelBeamRadon(LinearOperator):
    """Parallel-beam projector: image ``(B, C, N, N)`` -> sinogram ``(B, C, views, det_count)``.

    ``views`` is a number of views equally spaced over [0, 180) degrees, or the view angles
    in degrees. ``pixel_size_mm`` scales line integrals to physical units.
    """

    image_dtype = torch.float32

    def __init__(
        self,
        image_size: int | tuple[int, int],
        views: int | Sequence[float] = 180,
        det_count: int | None = None,
        pixel_size_mm: float = 1.0,
    ):
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) != 2 or size[0] != size[1] or size[0] < 8:
            raise SettingsError(f"The CT projector needs a square image of at least 8 x 8 pixels; got {size}.")
        self.size = int(size[0])
        if isinstance(views, (int, np.integer)):
            if views < 1:
                raise SettingsError(f"A CT scan needs at least one view; got {views}.")
            angles = np.arange(int(views)) * (180.0 / int(views))
        else:
            angles = np.asarray(views, dtype=np.float64).ravel()
            if angles.size == 0:
                raise SettingsError("A CT scan needs at least one view angle.")
        self.angles_deg = angles
        self.det_count = int(det_count) if det_count is not None else self.size
        if self.det_count < 2:
            raise SettingsError(f"The detector needs at least 2 bins; got {self.det_count}.")
        if pixel_size_mm <= 0:
            raise SettingsError(f"The pixel size must be positive; got {pixel_size_mm} mm.")
        self.pixel_size_mm = float(pixel_size_mm)
        self._matrices: RadonMatrices | None = None  # built on first use (lazily: may take ~1 s)

    @property
    def n_views(self) -> int:
        return int(self.angles_deg.size)

    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    def measurement_shape(self) -> tuple[int, int, int]:
        return (1, self.n_views, self.det_count)

    @property
    def matrices(self) -> RadonMatrices:
        """The system matrix ``A`` and its transpose (built or read from the cache on first use)."""
        if self._matrices is None:
            self._matrices = radon_matrices(self.size, self.angles_deg, self.det_count)
        return self._matrices

    # ------------------------------------------------------------------ operator

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        b, c, h, w = x.shape
        self._check_image(h, w)
        forward, adjoint = self.matrices.torch_pair(x.device, _real_dtype(x))
        # One column per image of the padded grid (the matrix's pixel order): (side^2, B C).
        columns = F.pad(x.reshape(b * c, h, w).to(forward.dtype), (1, 1, 1, 1)).reshape(b * c, -1).t()
        rays = _SparseProduct.apply(columns, forward, adjoint)
        return (rays.t() * self.pixel_size_mm).reshape(b, c, self.n_views, self.det_count)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        b, c = y.shape[:2]
        n, side = self.size, self.size + 2
        forward, adjoint = self.matrices.torch_pair(y.device, _real_dtype(y))
        columns = y.reshape(b * c, self.n_views * self.det_count).to(forward.dtype).t()
        padded = _SparseProduct.apply(columns, adjoint, forward)
        image = (padded.t() * self.pixel_size_mm).reshape(b * c, side, side)[:, 1 : n + 1, 1 : n + 1]
        return image.reshape(b, c, n, n)

    def _check_image(self, h: int, w: int) -> None:
        if (h, w) != (self.size, self.size):
            raise SettingsError(f"This CT projector takes {self.size} x {self.size} images; got {h} x {w}.")

    # ------------------------------------------------------------------ reconstruction

    def fbp(self, sinogram: torch.Tensor, filter: str = "ramp", *, circle: bool = True) -> torch.Tensor:  # noqa: A002
        """Filtered back-projection ``(B, C, views, D)`` -> ``(B, C, N, N)`` in 1/mm.

        Assumes views equally spaced over 180 degrees. ``circle`` zeroes the pixels outside
        the inscribed circle (which the default detector does not cover at every angle).
        """
        filtered = self._filter_projections(sinogram, filter)
        b, c = sinogram.shape[:2]
        n, d, views = self.size, self.det_count, self.n_views
        # One 1-row "image" per view; grid x = detector position of each pixel's ray, y = 0.
        projections = filtered.reshape(b * c, views, d).permute(1, 0, 2).unsqueeze(2)  # (V, BC, 1, D)
        coords = torch.arange(n, dtype=filtered.dtype, device=filtered.device) - n // 2
        theta = torch.from_numpy(np.deg2rad(self.angles_deg)).to(filtered)
        image = torch.zeros(b * c, n, n, dtype=filtered.dtype, device=filtered.device)
        for start in range(0, views, 32):  # chunks of views bound the (V, BC, N, N) temporary
            th = theta[start : start + 32].view(-1, 1, 1)
            t = coords.view(1, 1, -1) * th.cos() - coords.view(1, -1, 1) * th.sin() + d // 2  # (v, N, N)
            grid = torch.stack([t * (2.0 / (d - 1)) - 1.0, torch.zeros_like(t)], dim=-1)
            image += F.grid_sample(
                projections[start : start + 32], grid, mode="bilinear", padding_mode="zeros", align_corners=True
            ).sum(dim=0)
        image = image.view(b, c, n, n) * (math.pi / (2 * views) / self.pixel_size_mm)
        if circle:
            image = image * self._inscribed_circle(image)
        return image

    def _inscribed_circle(self, like: torch.Tensor) -> torch.Tensor:
        radius = self.size // 2
        coords = torch.arange(self.size, device=like.device) - radius
        return ((coords.view(-1, 1) ** 2 + coords.view(1, -1) ** 2) <= radius**2).to(like.dtype)

    def _filter_projections(self, sinogram: torch.Tensor, filter: str) -> torch.Tensor:  # noqa: A002
        if filter not in FBP_FILTERS:
            raise SettingsError(f"Unknown FBP filter {filter!r}; choose one of {', '.join(FBP_FILTERS)}.")
        d = sinogram.shape[-1]
        padded = max(64, 2 ** math.ceil(math.log2(2 * d)))
        response = fbp_filter_response(padded, filter).to(device=sinogram.device, dtype=sinogram.dtype)
        spectrum = torch.fft.rfft(sinogram, n=padded, dim=-1)
        return torch.fft.irfft(spectrum * response[: padded // 2 + 1], n=padded, dim=-1)[..., :d]


def _real_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class _SparseProduct(torch.autograd.Function):
    """``matrix @ columns`` whose gradient multiplies by the stored transpose.

    (torch would otherwise transpose the CSR matrix on every backward pass.)
    """

    @staticmethod
    def forward(ctx, columns: torch.Tensor, matrix: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose  # a constant of the operator: not saved as an input
        return _matmul(matrix, columns)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _matmul(ctx.transpose, grad), None, None


def _matmul(matrix: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    # torch's CPU CSR x dense costs ~1.4x a matrix-vector product for one column and ~3x
    # for two, ~4x for eight: columns one by one up to three, the batched kernel beyond.
    k = columns.shape[1]
    if k <= 3 and columns.device.type == "cpu":
        return torch.stack([torch.mv(matrix, columns[:, i].contiguous()) for i in range(k)], dim=1)
    return matrix @ columns.contiguous()


def fbp_filter_response(size: int, name: str = "ramp") -> torch.Tensor:
    """Frequency response (length ``size``, FFT order) of the band-limited ramp filter.

    The ramp is the DFT of its exact band-limited spatial kernel (Kak & Slaney eq. 61:
    ``h[0] = 1/4``, ``h[n] = -1 / (pi n)^2`` for odd ``n``, 0 for even ``n``), which avoids the
    DC offset of sampling ``|f|`` directly; the window multiplies it.
    """
    n = torch.arange(size, dtype=torch.float64)
    offset = torch.minimum(n, size - n)  # circular distance from 0
    kernel = torch.where(offset % 2 == 1, -1.0 / (math.pi * offset.clamp_min(1)) ** 2, torch.zeros_like(n))
    kernel[0] = 0.25
    response = 2.0 * torch.fft.fft(kernel).real
    freq = torch.fft.fftfreq(size, dtype=torch.float64)  # cycles per detector bin, in [-0.5, 0.5)
    if name == "shepp-logan":
        response = response * torch.sinc(freq)  # sin(pi f) / (pi f)
    elif name == "cosine":
        response = response * torch.cos(math.pi * freq)
    elif name == "hann":
        response = response * 0.5 * (1.0 + torch.cos(2.0 * math.pi * freq))
    elif name != "ramp":
        raise SettingsError(f"Unknown FBP filter {name!r}; choose one of {', '.join(FBP_FILTERS)}.")
    return response


# --------------------------------------------------------------------------- dose and units


def simulate_low_dose(
    sinogram: torch.Tensor,
    dose_fraction: float,
    photons_full_dose: float = 4096.0,
    seed: int | None = 0,
    *,
    min_count: float = 0.1,
) -> torch.Tensor:
    """Noisy line integrals for a scan at ``dose_fraction`` of ``photons_full_dose`` per bin.

    ``N ~ Poisson(I0 exp(-p))`` with ``I0 = photons_full_dose * dose_fraction``, then
    ``-log(max(N, min_count) / I0)``. Same seed, same noise.
    """
    if not 0.0 < dose_fraction <= 1.0:
        raise SettingsError(f"The dose fraction must be in (0, 1]; got {dose_fraction}.")
    if photons_full_dose <= 0:
        raise SettingsError(f"The full-dose photon count must be positive; got {photons_full_dose}.")
    incident = float(photons_full_dose) * float(dose_fraction)
    expected = incident * torch.exp(-sinogram)
    generator = torch.Generator(device=sinogram.device)
    if seed is not None:
        generator.manual_seed(int(seed))
    else:
        generator.seed()
    counts = torch.poisson(expected, generator=generator)
    return -torch.log(counts.clamp_min(min_count) / incident)


def hu_to_mu(hu: torch.Tensor | np.ndarray | float, mu_water: float = MU_WATER_PER_MM):
    """Hounsfield units -> linear attenuation in 1/mm (-1000 HU -> 0, 0 HU -> ``mu_water``)."""
    return mu_water * (1.0 + hu / 1000.0)


def mu_to_hu(mu: torch.Tensor | np.ndarray | float, mu_water: float = MU_WATER_PER_MM):
    """Linear attenuation in 1/mm -> Hounsfield units."""
    return 1000.0 * (mu - mu_water) / mu_water
