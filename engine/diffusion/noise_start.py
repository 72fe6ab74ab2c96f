"""Denoising that starts where the noise is: the reverse process entered at the measured noise level.

A noisy image ``y = x + sigma n`` already *is* a diffusion state: ``sqrt(abar_k) y`` is
``x_t`` at the grid step ``k`` whose ``sigma_k = sqrt((1 - abar_k) / abar_k)`` equals
``sigma``. Starting there instead of at pure noise leaves the prior only the noise that is
actually there, in 1-5 network evaluations instead of 25+. One run:

1. **Noise model -> white Gaussian** (:class:`NoiseModel`): Gaussian and correlated noise
   are used as they are (correlated noise by its per-pixel std; its exact covariance
   enters step 4); Poisson goes through the Anscombe transform (``sqrt(y + 3 / (8 peak))``,
   std ``1 / (2 sqrt(peak))``, inverted with Mäkinen & Foi's closed-form unbiased inverse);
   Gamma speckle through a log transform with its bias removed.
2. **Matched start**: the grid step with ``sigma_k >= scale * sigma`` (``scale``:
   ``options.noise_start_scale``, chosen on the validation subjects; correlated noise
   enters 3x higher and Poisson noise 1.3x, :func:`start_factor`). Noise is added
   where the state lacks it so that every channel carries exactly ``sigma_k``: in the
   image channel ``sqrt(sigma_k^2 - sigma^2)`` (none when ``scale <= 1``), and in the
   imaginary channel of a two-channel (complex MRI) prior all of ``sigma_k``; without
   that fill the prior reads a half-noisy state and under-denoises (-8 dB measured).
3. **Symmetric pairs (SRDS)** and a **dihedral ensemble**: every fill ``+eps`` has a twin
   ``-eps`` and each of ``options.ensemble`` flips/transposes of the image is denoised;
   the mean over all of them is the estimate, their spread the uncertainty map. DDIM
   runs ``options.steps`` steps from the matched step (1: Tweedie's estimate, the
   posterior mean itself). Network evaluations per image: ``steps * 2 * ensemble``.
4. **Wiener refinement** (``options.wiener``, :func:`refines`): the estimate is a pilot for an empirical
   Wiener filter of ``y`` on overlapping 4x4 DCT patches (BM3D's second stage, with the
   diffusion estimate as pilot): each coefficient of ``y`` is kept in proportion
   ``p^2 / (p^2 + v)``, ``v`` the noise variance of that coefficient (``sigma^2`` for white
   noise, ``d^T C d`` from the exact covariance of correlated noise).
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..errors import SettingsError
from ..physics.noise import NoiseModel
from ..measurements import ReconProblem
from .checkpoint import Prior
from .guidance import ModelDomain
from .options import DiffusionOptions
from .unet import autocast_context

if TYPE_CHECKING:  # reconstruction imports this module: the frame type only for the checker
    from .reconstruction import ReconFrame

WIENER_PATCH = 4  # 4x4 DCT, every pixel a patch corner: best of 4/8/16 and strides 1/2/4 on validation


#: how much higher than its (stabilised) std a noise is entered, by kind (validation subjects):
#: correlated noise's energy sits at low frequencies, where the prior reads it as stronger noise
#: (correlation 1.5 px, sigma 0.1, mri-brain: x1 28.0 dB, x2 28.9, x2.5 29.1, x3 29.2); Anscombe-
#: stabilised Poisson noise is only near-Gaussian, and entering higher removes more of it
#: (30 photons, the shipped mri-brain-denoise, 5 slices, factor x1.1 29.54 dB, x1.3 29.67,
#: x1.43 29.68, x1.56 29.65, x1.69 29.59, x1.95 29.45; its 929-step checkpoint: x1.0 29.19,
#: x1.3 29.63, x1.5 29.64)
START_FACTORS = {"correlated": 3.0, "poisson": 1.3}


def start_factor(noise: NoiseModel) -> float:
    """The entry's factor over the noise's (stabilised) std for this kind of noise (:data:`START_FACTORS`)."""
    return START_FACTORS.get(noise.kind, 1.0)


def refines(options: DiffusionOptions, noise: NoiseModel) -> bool:
    """Whether the run ends with the Wiener refinement. ``"auto"``: for every noise but white
    Gaussian. The prior removes exactly white Gaussian noise, so its estimate needs no
    correction there; after a variance-stabilising transform (Poisson, Gamma) or for correlated
    noise the prior's noise model is only approximate, and the Wiener step, which uses the exact
    noise variance per coefficient, corrects part of the mismatch (validation numbers: modalities)."""
    if options.wiener == "auto":
        return noise.kind != "gaussian"
    return bool(options.wiener)


def matched_step(alphas_cumprod: torch.Tensor, sigma: float) -> int:
    """The first grid step whose ``sqrt((1 - abar) / abar)`` reaches ``sigma``."""
    sigma_grid = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
    return int(min(int(torch.searchsorted(sigma_grid, torch.tensor(float(sigma), dtype=sigma_grid.dtype))),
                   len(sigma_grid) - 1))


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 flips/rotations of the last two axes (``k & 4``: transpose first)."""
    if k & 4:
        x = x.transpose(-1, -2)
    return torch.rot90(x, k & 3, (-2, -1))


def undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    x = torch.rot90(x, -(k & 3), (-2, -1))
    return x.transpose(-1, -2) if k & 4 else x


# --------------------------------------------------------------------------- Wiener refinement


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None] + 1) * k[:, None] / (2 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def coefficient_variance(noise: NoiseModel, patch: int = WIENER_PATCH) -> torch.Tensor:
    """Noise variance of each 2D DCT coefficient of a ``patch x patch`` patch, ``(patch, patch)``.

    White noise: ``sigma^2`` everywhere. Correlated noise (a separable Gaussian kernel of
    std ``s``, unit energy): the covariance of two pixels ``d`` apart along an axis is
    ``exp(-d^2 / (4 s^2))`` per axis, so the 1D coefficient variances are ``diag(D R D^T)``.
    """
    sigma = noise.stabilised_sigma
    if noise.kind != "correlated":
        return torch.full((patch, patch), sigma**2)
    d = torch.arange(patch, dtype=torch.float64)
    r = torch.exp(-((d[:, None] - d[None]) ** 2) / (4 * noise.correlation_px**2))
    dct = _dct_matrix(patch)
    var1 = torch.diagonal(dct @ r @ dct.T)
    return (sigma**2 * var1[:, None] * var1[None]).float()


def wiener_refine(y: torch.Tensor, pilot: torch.Tensor, variance: torch.Tensor, patch: int = WIENER_PATCH
                  ) -> torch.Tensor:
    """Empirical Wiener filter of ``y`` ``(B, 1, H, W)`` on every ``patch x patch`` DCT patch
    with ``pilot`` as the signal estimate; patches are averaged with BM3D's weights
    ``1 / sum(w^2)`` (patches the filter keeps less of are trusted more)."""
    b, _, h, w = y.shape
    pad = patch - 1
    dct = _dct_matrix(patch).float()
    var = variance.float()

    def patches(x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
        return F.unfold(padded, patch).transpose(1, 2).reshape(b, -1, patch, patch)

    yc = dct @ patches(y) @ dct.T
    pc = dct @ patches(pilot) @ dct.T
    gain = pc.square() / (pc.square() + var)
    estimate = dct.T @ (gain * yc) @ dct
    weight = 1.0 / (gain.square().sum((-2, -1), keepdim=True) + 1e-8)
    size = (h + 2 * pad, w + 2 * pad)
    n = estimate.shape[1]
    num = F.fold((estimate * weight).reshape(b, n, -1).transpose(1, 2), size, patch)
    den = F.fold(weight.expand_as(estimate).reshape(b, n, -1).transpose(1, 2), size, patch)
    return (num / den.clamp_min(1e-12))[..., pad : pad + h, pad : pad + w].to(y.dtype)


# --------------------------------------------------------------------------- the run


def stream_noise_start(problem: ReconProblem, prior: Prior, options: DiffusionOptions
                       ) -> Generator[ReconFrame, None, None]:
    """Denoise ``problem`` (``A = I``) from its matched noise level (module docstring); yield a
    :class:`~.reconstruction.ReconFrame` after every step, the last one refined."""
    from .reconstruction import ReconFrame

    if not problem.operator.is_identity:
        raise SettingsError("the noise-matched start is for denoising and ultrasound (no forward operator)")
    noise = NoiseModel.of(problem.noise, problem.noise_level)
    sigma = noise.stabilised_sigma
    if sigma <= 0:
        raise SettingsError("the noise-matched start needs a noise level above 0")
    domain = ModelDomain(prior.normalisation, prior.channels, problem.modality, False)
    schedule = prior.schedule
    abar = schedule.alphas_cumprod.double()
    sigma_model = sigma * domain.gain
    k0 = matched_step(abar, options.noise_start_scale * start_factor(noise) * sigma_model)
    steps = max(1, min(options.steps, k0 + 1))
    grid = torch.linspace(k0, 0, steps).round().long().tolist() if steps > 1 else [k0]
    sigma_k = math.sqrt(float((1 - abar[k0]) / abar[k0]))
    if prior.noise_range is not None and sigma_k > 1.05 * prior.noise_range[1]:
        raise SettingsError(f"this noise (std {sigma_k:.3g} where denoising enters, in the prior's units) is "
                            f"above the levels {prior.name} learned (up to {prior.noise_range[1]:g}); "
                            "use a full prior (--model)")

    z = noise.forward(problem.y.float())
    batch = int(z.shape[0])
    members = max(1, min(options.ensemble, 8))
    pairs = 2 if options.symmetric else 1
    own = torch.Generator().manual_seed(int(options.seed) * 7919 + 17)
    states, shapes = [], []
    for j in range(members):  # each member: a flip of the image, fill noise +eps (and -eps)
        zm = domain.to_model(dihedral(z, j))
        eps = torch.randn(zm.shape, generator=own, dtype=zm.dtype)
        fill = torch.empty_like(zm)
        fill[:, :1] = math.sqrt(max(sigma_k**2 - sigma_model**2, 0.0)) * eps[:, :1]
        fill[:, 1:] = sigma_k * eps[:, 1:]
        states += [zm + fill] + ([zm - fill] if pairs == 2 else [])
        shapes.append(zm.shape[-2:])
    same_shape = len({tuple(s) for s in shapes}) == 1
    model = prior.model
    start = time.perf_counter()
    adaptation = {"noise": noise.describe(), "stabilised_sigma": sigma, "start_step": k0,
                  "start_sigma_model": sigma_k, "network_evaluations": steps * pairs * members,
                  "ensemble": members, "wiener": refines(options, noise)}

    def estimate(x0s: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([undo_dihedral(domain.from_model(x), i // pairs) for i, x in enumerate(x0s)])
        return images.mean(0), images.var(0, unbiased=True) if len(images) > 1 else torch.zeros_like(images[0])

    xs = [s * math.sqrt(float(abar[k0])) for s in states]
    for index, k in enumerate(grid):
        t = float(schedule.time_of_step(k))
        a = float(abar[k])
        with torch.inference_mode():
            groups = [torch.cat(xs)] if same_shape else [x for x in xs]
            eps_out = []
            for g in groups:
                with autocast_context(True, g.device):
                    eps_out.append(model(g.contiguous(), torch.full((g.shape[0],), t)).float())
            eps_all = list(torch.cat(eps_out).split(batch)) if same_shape else eps_out
            x0s = [(x - math.sqrt(1 - a) * e) / math.sqrt(a) for x, e in zip(xs, eps_all)]
            last = index == len(grid) - 1
            if not last:
                a_next = float(abar[grid[index + 1]])
                xs = [math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * e for x0, e in zip(x0s, eps_all)]
            mean_z, var_z = estimate(x0s)
            if last and adaptation["wiener"]:
                mean_z = wiener_refine(z, mean_z, coefficient_variance(noise))
            x0 = noise.inverse(mean_z)
            # first-order spread through the inverse transform
            slope = (noise.inverse(mean_z + 1e-3) - noise.inverse(mean_z - 1e-3)) / 2e-3
            variance = var_z * slope.square()
        yield ReconFrame(step=index + 1, total=len(grid), t=0.0 if last else float(schedule.time_of_step(grid[index + 1])),
                         x_t=x0, x0=x0, variance=variance, elapsed=time.perf_counter() - start,
                         adaptation=adaptation)


__all__ = ["NoiseModel", "coefficient_variance", "matched_step", "stream_noise_start", "wiener_refine"]
