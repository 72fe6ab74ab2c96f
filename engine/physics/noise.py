"""Denoising: the identity forward operator and the noise models that corrupt images.

Each noise model is a small class with ``sample(x, generator) -> y`` (batched ``(B, C, H,
W)``, seeded through a ``torch.Generator``, on the input's device) and ``describe()``, a
one-line description for reports:

* ``GaussianNoise(sigma)``: ``y = x + sigma n``, ``n ~ N(0, 1)`` white.
* ``PoissonNoise(peak)``: ``y = Poisson(peak * x) / peak`` (photon-limited imaging; the
  image is read as a fraction of ``peak`` photons, so ``Var[y] = x / peak``).
* ``GammaNoise(looks)``: multiplicative, ``y = x g`` with ``g ~ Gamma(L, 1/L)`` (unit mean,
  variance ``1/L``): the intensity speckle of ``L``-look averaging.
* ``CorrelatedGaussianNoise(sigma, correlation_px)``: white noise convolved with a Gaussian
  kernel of std ``correlation_px`` pixels, normalised to unit energy so that the per-pixel
  std is exactly ``sigma`` (spatially correlated noise, as in DiffDenoise's synthetic set).

:class:`NoiseModel` describes a problem's noise and its variance-stabilising transform,
which the denoisers (diffusion from the noise level, BM3D) work in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import SettingsError
from .base import LinearOperator


class IdentityOperator(LinearOperator):
    """``A = I``: the forward operator of denoising."""

    is_identity = True

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return y

    def A_dagger(self, y: torch.Tensor, *, iters: int = 50) -> torch.Tensor:  # noqa: N802
        return y

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def data_consistency(self, x: torch.Tensor, y: torch.Tensor, noise_level: float = 0.0, *,
                         iters: int = 30) -> torch.Tensor:
        """Noiseless: the measurement itself; noisy: the least-squares default."""
        if noise_level == 0.0:
            return y.clone()
        return super().data_consistency(x, y, noise_level, iters=iters)


def _noise_generator(generator: torch.Generator | None, like: torch.Tensor) -> torch.Generator | None:
    """The generator to draw with: the caller's, which must live on the input's device."""
    if generator is not None and generator.device.type != like.device.type:
        raise SettingsError(
            f"The random generator is on {generator.device.type} but the image is on {like.device.type}."
        )
    return generator


def standard_gamma(
    concentration: float, shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """Gamma(concentration, scale 1) samples drawn from ``generator`` (torch's own gamma
    sampler takes no generator). Marsaglia & Tsang's squeeze method (2000), vectorised:
    redraw only the rejected entries; for ``concentration < 1`` draw Gamma(a + 1) and
    multiply by ``U^(1/a)``."""
    boost = concentration < 1.0
    a = concentration + 1.0 if boost else concentration
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(shape, dtype=like.dtype, device=like.device)
    pending = torch.ones(shape, dtype=torch.bool, device=like.device)
    while bool(pending.any()):
        n = int(pending.sum())
        z = torch.randn(n, generator=generator, dtype=like.dtype, device=like.device)
        u = torch.rand(n, generator=generator, dtype=like.dtype, device=like.device)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        index = pending.nonzero(as_tuple=True)
        accepted = tuple(i[ok] for i in index)
        out[accepted] = (d * v)[ok]
        pending[accepted] = False  # ~2-5% are rejected per round at L >= 1
    if boost:
        u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
        out = out * u.clamp_min(1e-30) ** (1.0 / concentration)
    return out


class GaussianNoise:
    """Additive white Gaussian noise of standard deviation ``sigma``."""

    def __init__(self, sigma: float):
        if sigma < 0:
            raise SettingsError(f"The noise level sigma must not be negative; got {sigma}.")
        self.sigma = float(sigma)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = _noise_generator(generator, x)
        return x + self.sigma * torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)

    def describe(self) -> str:
        return f"additive white Gaussian noise, sigma {self.sigma:g}"


class PoissonNoise:
    """Photon-counting noise: ``y = Poisson(peak * x) / peak`` (negative ``x`` counts as 0)."""

    def __init__(self, peak: float):
        if peak <= 0:
            raise SettingsError(f"The Poisson peak (photons at intensity 1) must be positive; got {peak}.")
        self.peak = float(peak)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = _noise_generator(generator, x)
        return torch.poisson(x.clamp_min(0.0) * self.peak, generator=g) / self.peak

    def describe(self) -> str:
        return f"Poisson noise, {self.peak:g} photons at intensity 1"


class GammaNoise:
    """Multiplicative speckle ``y = x g``, ``g ~ Gamma(looks, 1/looks)`` (mean 1, variance 1/looks)."""

    def __init__(self, looks: float):
        if looks <= 0:
            raise SettingsError(f"The number of looks must be positive; got {looks}.")
        self.looks = float(looks)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = _noise_generator(generator, x)
        return x * standard_gamma(self.looks, tuple(x.shape), g, x) / self.looks

    def describe(self) -> str:
        return f"multiplicative Gamma speckle, {self.looks:g} looks"


class CorrelatedGaussianNoise:
    """Gaussian noise with a Gaussian autocorrelation and per-pixel std ``sigma``.

    White noise on a margin-padded field is filtered by a separable Gaussian kernel (std
    ``correlation_px``, truncated at 3 std) whose squared weights sum to 1, and the margin is
    cropped ("valid" convolution), so every output pixel has variance exactly ``sigma^2``.
    The autocorrelation is a Gaussian of std ``sqrt(2) correlation_px``.
    """

    def __init__(self, sigma: float, correlation_px: float):
        if sigma < 0:
            raise SettingsError(f"The noise level sigma must not be negative; got {sigma}.")
        if correlation_px <= 0:
            raise SettingsError(f"The noise correlation length must be positive; got {correlation_px} px.")
        self.sigma = float(sigma)
        self.correlation_px = float(correlation_px)
        radius = max(1, math.ceil(3 * self.correlation_px))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / self.correlation_px) ** 2)
        self.kernel = (taps / taps.square().sum().sqrt()).float()  # unit energy in 1D -> unit energy in 2D
        self.radius = radius
        self._kernels: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = _noise_generator(generator, x)
        b, c, h, w = x.shape
        r = self.radius
        white = torch.randn((b * c, 1, h + 2 * r, w + 2 * r), generator=g, dtype=x.dtype, device=x.device)
        key = (x.device, x.dtype)
        if key not in self._kernels:
            self._kernels[key] = self.kernel.to(device=x.device, dtype=x.dtype)
        taps = self._kernels[key]
        field = F.conv2d(white, taps.view(1, 1, -1, 1))  # along rows, valid
        field = F.conv2d(field, taps.view(1, 1, 1, -1))  # along columns, valid
        return x + self.sigma * field.view(b, c, h, w)

    def describe(self) -> str:
        return f"correlated Gaussian noise, sigma {self.sigma:g}, correlation {self.correlation_px:g} px"


GAMMA_FLOOR = 1e-3  # log of a zero pixel (speckle of black background) is clamped here


@dataclass(frozen=True)
class NoiseModel:
    """The noise of a denoising problem, in the working domain (:mod:`diffrecon.measurements`),
    and its variance-stabilising transform: ``forward(y)`` carries white Gaussian noise of
    std ``stabilised_sigma`` (Anscombe for Poisson, a debiased log for Gamma speckle, the
    identity otherwise); ``inverse`` maps a denoised ``forward(y)`` back (for Poisson,
    Mäkinen & Foi's closed-form exact unbiased inverse). Diffusion denoising and BM3D
    both denoise in the stabilised domain."""

    kind: str = "gaussian"  # gaussian | correlated | poisson | gamma
    sigma: float = 0.0  # gaussian/correlated: per-pixel std
    correlation_px: float = 0.0  # correlated: Gaussian kernel std in pixels
    peak: float = 0.0  # poisson: photons at intensity 1
    looks: float = 1.0  # gamma
    estimated: bool = False  # sigma came from the image (MAD), not from the settings

    @classmethod
    def of(cls, noise: dict | None, noise_level: float = 0.0) -> NoiseModel:
        """From a problem's ``noise`` dict (:class:`~diffrecon.measurements.ReconProblem`);
        without one, white Gaussian noise of std ``noise_level``."""
        return cls(**(noise or {"kind": "gaussian", "sigma": noise_level}))

    @property
    def signal_dependent(self) -> bool:
        """Poisson or Gamma: denoisers work on the stabilised image (``forward``), then ``inverse``."""
        return self.kind in ("poisson", "gamma")

    # ---- variance-stabilising transforms: y -> z with white Gaussian noise of std stabilised_sigma
    @property
    def stabilised_sigma(self) -> float:
        if self.kind == "poisson":
            return 0.5 / math.sqrt(self.peak)
        if self.kind == "gamma":
            return math.sqrt(float(torch.special.polygamma(1, torch.tensor(float(self.looks), dtype=torch.float64))))
        return self.sigma

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "poisson":
            return (y.clamp_min(0.0) + 3.0 / (8.0 * self.peak)).sqrt()
        if self.kind == "gamma":
            bias = float(torch.special.digamma(torch.tensor(float(self.looks), dtype=torch.float64))) - math.log(
                self.looks)
            return torch.log(y.clamp_min(GAMMA_FLOOR)) - bias
        return y

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "poisson":  # Mäkinen & Foi 2011, closed-form exact unbiased inverse (counts)
            d = (2.0 * math.sqrt(self.peak) * z).clamp_min(0.8)
            r = math.sqrt(1.5)
            counts = d**2 / 4 + r / (4 * d) - 11 / (8 * d**2) + 5 * r / (8 * d**3) - 0.125
            return counts.clamp_min(0.0) / self.peak
        if self.kind == "gamma":
            return torch.exp(z)
        return z

    def describe(self) -> dict:
        out = {"kind": self.kind, "sigma": self.sigma, "estimated": self.estimated}
        if self.kind == "correlated":
            out["correlation_px"] = self.correlation_px
        if self.kind == "poisson":
            out["peak"] = self.peak
        if self.kind == "gamma":
            out["looks"] = self.looks
        return out
