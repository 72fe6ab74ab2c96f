"""Data consistency for diffusion sampling: pulling a prior's guesses towards the measurements.

An unconditional sampler knows only the prior; a reconstruction must also agree with the
measurements ``y = A x + noise``. Every sampling step produces Tweedie's estimate of the
clean image, ``x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``, and the guidance acts on
it (or on ``x_t``) through the samplers' per-step hook (:mod:`.samplers`):

* ``projection`` (hard data consistency): replace ``x0_hat`` by the nearest image that
  explains the measurements, the operator's ``data_consistency`` (see
  :mod:`..physics.base`). MRI overrides it with k-space replacement (with
  ``noise_level > 0`` its noise-aware MAP fusion); any other operator runs CGLS on
  ``min ||A x - y||`` from ``x0_hat``: started there, its iterates stay in
  ``x0_hat + range(A^H)``, so they converge to the orthogonal projection onto
  ``{A x = y}``. With noise it stops at the discrepancy principle (``||A x - y||`` at the
  expected noise norm) instead of fitting the noise.
* ``dds`` (Chung et al. 2024, "Decomposed Diffusion Sampler"): only a few conjugate-
  gradient steps on ``A^H A x = A^H y`` from ``x0_hat`` (the operator's
  ``least_squares``, run as CGLS: plain CG on the normal equations stops relative to
  ``||A^H y||``, and once a singular system (undersampled MRI) is solved its next step
  divides rounding noise by rounding noise in the null space). The early-stopped
  Krylov solution stays close to the clean-image manifold; the sampler then re-noises it
  with the network's own noise estimate (DDIM), which keeps ``x_t`` on the noisy manifold.
* ``dps`` (Chung et al. 2023, "Diffusion Posterior Sampling"): a gradient step on
  ``x_t`` down ``||A x0_hat(x_t) - y||``, differentiated through the network (autograd:
  a step costs 2-4 plain ones on a CPU). The step is DPS's normalised one,
  ``zeta * grad ||r||^2 / ||r||``; the sampler then re-derives its noise estimate from
  the moved ``x_t`` (see the hook contract in :mod:`.samplers`).
* Denoising and ultrasound (``A = I``, noisy ``y``), for ``projection`` and ``dds``: the
  measurement mixing of Song et al. 2022 ("Solving inverse problems in medical imaging
  with score-based generative models"). Read ``x_t / sqrt(abar) = x0 + sigma_t z`` with
  ``sigma_t^2 = (1 - abar) / abar``; the measurement ``y = x0 + sigma_n n`` is a second
  noisy view of ``x0``. The inverse-variance fusion of the two puts ``lambda_t = sigma_t^2
  / (sigma_t^2 + sigma_n^2)`` on ``y``; fresh noise of variance ``lambda_t sigma_t^2``
  brings the fused state back to exactly the noise level ``sigma_t`` the sampler expects.
  Early (``sigma_t >> sigma_n``) the state follows ``y``; late the prior has the last word.
  The hook runs after the network's evaluation at ``x_t``, so the mixed state enters the
  sampler's update (and the next step's network call), not this step's estimate.

Everything here works in the problem's *working domain* (see :mod:`..measurements`);
:class:`ModelDomain` maps to and from the prior's input domain.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import SettingsError
from ..physics.base import LinearOperator
from ..physics.solvers import conjugate_gradient, inner

#: the guidance names the CLI, viewer and options use
GUIDANCE = ("projection", "dds", "dds-tv", "dps")


class ModelDomain:
    """Working-domain images ``(B, 1, H, W)`` <-> the prior's input ``(B, C, H, W)``.

    Intensities: CT's working domain is ``(HU + 1000) / 2000`` and a ``"hu"`` prior's is
    ``(HU - offset) / scale``: an affine map. Percentile-normalised priors (MRI, ultrasound)
    and the percentile-normalised working domains of MRI and denoising agree (both divide
    by the 99.5th percentile of the magnitude), so the map is the identity.
    Channels: a 2-channel prior reads complex images as real/imaginary (real images get a
    zero imaginary part and give back the real part); a 1-channel prior takes real images.
    """

    def __init__(self, normalisation: dict[str, Any], channels: int, modality: str, complex_working: bool):
        kind = normalisation.get("kind")
        if (kind == "hu") != (modality == "ct"):
            raise SettingsError(
                f"a prior normalised by {kind!r} does not fit {modality} data; use a "
                f"{'CT' if modality == 'ct' else 'non-CT'} prior"
            )
        if complex_working and channels != 2:
            raise SettingsError("complex MR images need a 2-channel (real/imaginary) prior, not a 1-channel one")
        if kind == "hu":  # working w: HU = 2000 w - 1000; model m = (HU - offset) / scale
            self.gain = 2000.0 / float(normalisation["scale"])
            self.offset = (-1000.0 - float(normalisation["offset"])) / float(normalisation["scale"])
        else:
            self.gain, self.offset = 1.0, 0.0
        self.channels = channels
        self.complex_working = complex_working

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 2:
            x = x if x.is_complex() else torch.complex(x, torch.zeros_like(x))
            x = torch.cat([x.real, x.imag], dim=1)
        return x * self.gain + self.offset

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.offset) / self.gain
        if self.channels == 2:
            return torch.complex(x[:, :1], x[:, 1:]) if self.complex_working else x[:, :1]
        return x


# --------------------------------------------------------------------------- measurement mixing


def mixing_weight(alpha_bar: float, noise_level: float) -> float:
    """``lambda_t = sigma_t^2 / (sigma_t^2 + sigma_n^2)`` with ``sigma_t^2 = (1 - abar) / abar``."""
    sigma_t2 = (1.0 - alpha_bar) / max(alpha_bar, 1e-12)
    return sigma_t2 / (sigma_t2 + noise_level**2) if sigma_t2 + noise_level**2 > 0 else 1.0


def mix_measurement(x_t: torch.Tensor, y: torch.Tensor, alpha_bar: float, noise_level: float,
                    noise: torch.Tensor) -> torch.Tensor:
    """Fuse the noisy state with a measurement ``y = x0 + noise_level n`` (module docstring).

    ``x_t``, ``y`` and ``noise`` (standard normal, shaped like ``x_t``) are model-domain.
    """
    lam = mixing_weight(alpha_bar, noise_level)
    sigma_t = math.sqrt((1.0 - alpha_bar) / max(alpha_bar, 1e-12))
    scaled = x_t / math.sqrt(alpha_bar)  # x0 + sigma_t z
    fused = (1.0 - lam) * scaled + lam * y + math.sqrt(lam) * sigma_t * noise
    return fused * math.sqrt(alpha_bar)


# --------------------------------------------------------------------------- per-step hooks


def _per_problem(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    """Apply ``fn`` to each run of ``batch`` items: the K posterior samples of a problem
    share its operator, whose per-slice tables (masks, coil maps) have ``batch`` items."""
    if x.shape[0] == batch:
        return fn(x)
    return torch.cat([fn(chunk) for chunk in x.split(batch)])


class Guidance:
    """A sampler hook ``(step, t, x_t, x0_hat) -> (x_t, x0_hat)`` on model-domain batches of
    ``K * B`` items (sample-major: item ``k * B + b`` is sample ``k`` of slice ``b``)."""

    requires_grad = False

    def __init__(self, operator: LinearOperator, y: torch.Tensor, noise_level: float, domain: ModelDomain):
        self.operator, self.y, self.noise_level, self.domain = operator, y, float(noise_level), domain
        self.batch = int(y.shape[0])

    def correct_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """The data-consistent version of a model-domain clean estimate (identity if none)."""
        return x0

    def __call__(self, step: int, t: float, x_t: torch.Tensor, x0_hat: torch.Tensor):
        return x_t, self.correct_x0(x0_hat)


class ProjectionGuidance(Guidance):
    def __init__(self, *args, iters: int = 30):
        super().__init__(*args)
        self.iters = iters

    def correct_x0(self, x0: torch.Tensor) -> torch.Tensor:
        solve = lambda w: self.operator.data_consistency(w, self.y, self.noise_level, iters=self.iters)  # noqa: E731
        return self.domain.to_model(_per_problem(solve, self.domain.from_model(x0), self.batch))


class DDSGuidance(Guidance):
    def __init__(self, *args, iters: int = 5):
        super().__init__(*args)
        self.iters = iters

    def correct_x0(self, x0: torch.Tensor) -> torch.Tensor:
        # With noise, stop at the noise level: fitting it loses ~10 dB on low-dose CT
        # (resources/results/diffusion-defaults.md).
        solve = lambda w: self.operator.least_squares(w, self.y, self.noise_level, iters=self.iters)  # noqa: E731
        return self.domain.to_model(_per_problem(solve, self.domain.from_model(x0), self.batch))


@dataclass
class ThroughPlane:
    """The through-plane (slice-axis) TV term of a batch of slices (3D-consistent reconstruction).

    ``lam``: the relative weight (a multiple of ``max|Aᴴy|`` over the batch, as the TV
    baseline's); ``pairs``: :func:`~diffrecon.baselines.tv.slice_pairs` of the batch;
    ``fixed``: finished neighbours outside the batch, ``(item, image)`` with ``image`` the
    working-domain ``(1, 1, H, W)`` result of the slice next to batch item ``item`` (so a
    volume reconstructed batch by batch has no seam where two batches meet).
    """

    lam: float
    pairs: torch.Tensor
    fixed: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.lam > 0 and (bool(self.pairs.sum() > 0) or bool(self.fixed))


def _one_system(apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, x0: torch.Tensor,
                iters: int) -> torch.Tensor:
    """CG on a system that couples the batch items (the slices of one volume): one step size
    for the whole batch, not one per item as :func:`conjugate_gradient` takes for a batch."""
    shape = rhs.shape

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(1, *shape)

    out = conjugate_gradient(lambda v: flat(apply(v.reshape(shape))), flat(rhs), x0=flat(x0), iters=iters)
    return out.reshape(shape)


class DDSTVGuidance(Guidance):
    """DDS with total-variation terms: a few CG steps on
    ``(AᴴA + lam_abs ∇ᴴ W ∇ + lam_z D_zᴴ W_z D_z) x = Aᴴ y`` from ``x0_hat``, with
    ``W = 1 / max(|∇ x0_hat|, eps)`` (in-plane) and ``W_z = 1 / max(|D_z x0_hat|, eps)``
    (``D_z``: the difference to the neighbouring slice).

    This is TV's lagged-diffusivity (IRLS) quadratic model at the network's current
    estimate, so the step minimises ``1/2 ||A x - y||² + lam_abs TV(x) + lam_z TV_z(x)`` to
    first order near ``x0_hat`` (DiffusionMBIR, Chung et al. 2023, adds TV along the slice
    axis to the data-consistency step with ADMM, so that 2D priors give 3D-consistent
    volumes; this keeps DDS's one CG solve). The in-plane weight is relative like the TV
    baseline's: ``lam_abs = lam · max|Aᴴy|``; either term may be off (``lam = 0`` and no
    ``through_plane`` is plain DDS: :func:`make_guidance` gives :class:`DDSGuidance` then).

    With the through-plane term the slices of a batch form one system (one CG over the
    batch). With measurement noise, fitting the data by CG would fit the noise (DDS stops
    at the discrepancy instead): then the step is DDS's own CGLS, followed by the
    through-plane term as a proximal step, ``argmin 1/2 ||x - x_dc||² + lam_z TV_z(x)``.
    """

    def __init__(self, *args, iters: int = 5, lam: float, through_plane: ThroughPlane | None = None):
        super().__init__(*args)
        from ..baselines.tv import regularization_scale

        self.iters, self.lam = iters, float(lam)
        self.through_plane = through_plane if through_plane is not None and through_plane.active else None
        with torch.no_grad():  # once per problem, not per sampling step
            self.rhs = self.operator.A_adjoint(self.y)
            scale = regularization_scale(self.operator, self.y).float()  # (B, 1, 1, 1)
            self.lam_abs = self.lam * scale
            self.lam_z = 0.0 if self.through_plane is None else self.through_plane.lam * float(scale.mean())

    def _through_plane_system(self, w: torch.Tensor, eps: torch.Tensor, lam_z: float):
        """``(apply, rhs_extra)`` of the IRLS through-plane term (weight ``lam_z``) at ``w``."""
        from ..baselines.tv import gradient_z, gradient_z_adjoint

        tp = self.through_plane
        assert tp is not None
        pairs = tp.pairs.to(w.device)
        weight_z = 1.0 / torch.maximum(gradient_z(w, pairs).abs(), eps)
        diagonal = torch.zeros(w.shape[0], 1, *w.shape[2:], device=w.device)
        extra = torch.zeros_like(w)
        for item, image in tp.fixed:
            image = image.to(w.dtype)
            wf = 1.0 / torch.maximum((w[item] - image[0]).abs(), eps)
            diagonal[item] += wf
            extra[item] += wf * image[0]
        items = w.shape[0]

        def apply(v: torch.Tensor) -> torch.Tensor:
            return lam_z * (gradient_z_adjoint(weight_z * gradient_z(v, pairs), pairs, items) + diagonal * v)

        return apply, lam_z * extra

    def correct_x0(self, x0: torch.Tensor) -> torch.Tensor:
        from ..baselines.tv import _gradient_magnitude, divergence, gradient

        def solve(w: torch.Tensor) -> torch.Tensor:
            lam = self.lam_abs.to(w.real.dtype)
            peak = w.abs().flatten(1).amax(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1, 1)
            terms: list[Callable[[torch.Tensor], torch.Tensor]] = []
            rhs = self.rhs if w.is_complex() else self.rhs.to(w.dtype)
            if self.lam > 0:
                # eps keeps flat regions from dominating: below 1 % of the peak per pixel, TV is quadratic.
                wgt = 1.0 / torch.maximum(_gradient_magnitude(gradient(w)), 0.01 * peak)  # (B, 1, 1, H, W)
                terms.append(lambda v: -lam * divergence(wgt * gradient(v)))

            def in_plane(v: torch.Tensor) -> torch.Tensor:
                return self.operator.normal(v) + sum(t(v) for t in terms)

            if self.through_plane is None:
                return conjugate_gradient(in_plane, rhs, x0=w, iters=self.iters)
            eps = 0.01 * peak.max()
            if self.noise_level > 0:  # data step first (DDS's stops at the noise), then the slice-axis prox
                if terms:
                    w = conjugate_gradient(in_plane, rhs, x0=w, iters=self.iters)
                else:
                    w = self.operator.least_squares(w, self.y, self.noise_level, iters=self.iters)
                # the prox's data term is the image itself: its weight's unit is the image's peak
                assert self.through_plane is not None
                z_term, z_rhs = self._through_plane_system(w, eps, self.through_plane.lam * float(peak.max()))
                return _one_system(lambda v: v + z_term(v), w + z_rhs, w, self.iters)
            z_term, z_rhs = self._through_plane_system(w, eps, self.lam_z)
            return _one_system(lambda v: in_plane(v) + z_term(v), rhs + z_rhs, w, self.iters)

        return self.domain.to_model(_per_problem(solve, self.domain.from_model(x0), self.batch))


def autograd_ready(operator: LinearOperator) -> LinearOperator:
    """``operator``, or a shallow copy whose inference-mode tensors are cloned to normal ones.

    An operator built under ``torch.inference_mode()`` (as the viewer builds its
    problems) holds tables autograd may not save for the backward pass; DPS needs it to.
    """
    tables = {k: v for k, v in vars(operator).items() if isinstance(v, torch.Tensor) and v.is_inference()}
    if not tables:
        return operator
    twin = copy.copy(operator)
    with torch.inference_mode(False):
        for name, table in tables.items():
            setattr(twin, name, table.clone())
    twin.__dict__.pop("_constant_cache", None)  # converted copies of the old tables
    return twin


class DPSGuidance(Guidance):
    """``x_t <- x_t - zeta grad_{x_t} ||A x0_hat(x_t) - y||^2 / ||A x0_hat - y||`` per item."""

    requires_grad = True

    def __init__(self, *args, scale: float = 1.0):
        super().__init__(*args)
        self.scale = float(scale)
        self.operator = autograd_ready(self.operator)

    def __call__(self, step: int, t: float, x_t: torch.Tensor, x0_hat: torch.Tensor):
        residual = lambda w: self.operator.A(w) - self.y  # noqa: E731
        r = _per_problem(residual, self.domain.from_model(x0_hat), self.batch)
        norms = inner(r, r).clamp_min(1e-30).sqrt()
        (grad,) = torch.autograd.grad(norms.sum(), x_t)
        # grad ||r||^2 / ||r|| = 2 grad ||r||
        return x_t.detach() - 2.0 * self.scale * grad, x0_hat.detach()


class MixingGuidance(Guidance):
    """Song et al. 2022 measurement mixing for ``A = I`` (module docstring).

    ``noise(shape)`` draws the fresh standard-normal noise (the caller's seeded stream).
    """

    def __init__(self, *args, schedule, noise: Callable[[tuple[int, ...]], torch.Tensor]):
        super().__init__(*args)
        self.schedule, self.noise = schedule, noise
        self.y_model = self.domain.to_model(self.y)
        self.sigma_model = self.noise_level * self.domain.gain

    def __call__(self, step: int, t: float, x_t: torch.Tensor, x0_hat: torch.Tensor):
        repeats = x_t.shape[0] // self.batch
        y = self.y_model.repeat(repeats, 1, 1, 1) if repeats > 1 else self.y_model
        mixed = mix_measurement(x_t, y, float(self.schedule.alpha_bar(t)), self.sigma_model, self.noise(x_t.shape))
        return mixed, x0_hat


def make_guidance(name: str, operator: LinearOperator, y: torch.Tensor, noise_level: float, domain: ModelDomain,
                  *, schedule=None, noise=None, cg_iters: int = 5, dps_scale: float = 1.0,
                  tv_weight: float = 0.0, through_plane: ThroughPlane | None = None) -> Guidance:
    """The hook for ``name`` (one of :data:`GUIDANCE`) on this problem; ``tv_weight`` is
    ``dds-tv``'s relative TV weight; ``through_plane`` adds the slice-axis TV term to
    ``dds`` and ``dds-tv`` (3D-consistent reconstruction)."""
    if name == "dps":
        return DPSGuidance(operator, y, noise_level, domain, scale=dps_scale)
    if name not in GUIDANCE:
        raise SettingsError(f"unknown guidance {name!r}; choose one of {', '.join(GUIDANCE)}")
    if operator.is_identity and noise_level > 0:
        if schedule is None or noise is None:
            raise ValueError("measurement mixing needs the schedule and a noise source")
        return MixingGuidance(operator, y, noise_level, domain, schedule=schedule, noise=noise)
    if name == "projection":
        return ProjectionGuidance(operator, y, noise_level, domain)
    in_plane = tv_weight if name == "dds-tv" else 0.0
    if in_plane > 0 or (through_plane is not None and through_plane.active):
        return DDSTVGuidance(operator, y, noise_level, domain, iters=cg_iters, lam=in_plane,
                             through_plane=through_plane)
    return DDSGuidance(operator, y, noise_level, domain, iters=cg_iters)
