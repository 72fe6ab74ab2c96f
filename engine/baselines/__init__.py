"""Classical reconstruction and denoising baselines, the yardstick for the diffusion priors.

:func:`run_baseline` is the one entry point (the CLI and the viewer call it): it checks
that the method suits the modality, fills in the tuned defaults of
:mod:`.defaults`, and runs

==============  =====================================================  ==================
method          what it solves                                         modalities
==============  =====================================================  ==================
zero-filled     ``A†y`` (single coil: inverse FFT of zero-filled k)    mri
fbp             filtered back-projection                               ct
tv              ``min 1/2||Ax - y||² + lam TV(x)`` (:mod:`.tv`)        all
tv-3d           the same with the batch as one volume: 3D TV           mri, ct
l1-wavelet      ``min 1/2||Ax - y||² + lam ||Wx||_1`` (:mod:`.wavelet`)  mri, ct
median          median filter (:mod:`.denoise`)                        denoise, ultrasound
bm3d            BM3D, optional package (:mod:`.denoise`)               denoise, ultrasound
==============  =====================================================  ==================

Images are ``(B, 1, H, W)`` tensors in the working domain of
:mod:`diffrecon.measurements`; the result is too (complex for MRI). Every result then
obeys its modality's conventions (:func:`finish`): CT attenuation is clipped at zero,
and an ultrasound B-mode result is re-referenced to its own brightest pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pywt
import torch

from ..errors import SettingsError
from ..physics.base import LinearOperator
from ..physics.noise import NoiseModel
from .defaults import default_params
from .denoise import bm3d_denoise, median_denoise
from .tv import tv3d_reconstruct, tv_denoise, tv_reconstruct, tv_reconstruct_fista
from .wavelet import l1_wavelet_reconstruct

METHODS = ("zero-filled", "fbp", "tv", "l1-wavelet", "median", "bm3d", "tv-3d")
MODALITIES = ("mri", "ct", "denoise", "ultrasound")
METHODS_FOR_MODALITY: dict[str, tuple[str, ...]] = {
    "mri": ("zero-filled", "tv", "l1-wavelet", "tv-3d"),
    "ct": ("fbp", "tv", "l1-wavelet", "tv-3d"),
    "denoise": ("median", "tv", "bm3d"),
    "ultrasound": ("median", "tv", "bm3d"),
}
#: the parameters each method accepts (anything else is a user error)
PARAMETERS: dict[str, tuple[str, ...]] = {
    "zero-filled": (),
    "fbp": ("filter",),
    "tv": ("lam", "iters", "solver", "lam_start"),
    "tv-3d": ("lam", "iters"),
    "l1-wavelet": ("lam", "iters", "levels", "wavelet"),
    "median": ("size",),
    "bm3d": ("sigma", "sigma_scale"),
}


def run_baseline(
    method: str,
    operator: LinearOperator,
    y: torch.Tensor,
    *,
    modality: str,
    params: dict[str, Any] | None = None,
    noise_level: float = 0.0,
    slices: Any = None,
    noise: dict | None = None,
) -> torch.Tensor:
    """Reconstruct (or denoise) the batch ``y`` with a classical ``method``.

    ``params`` override the tuned defaults (keys per method in :data:`PARAMETERS`);
    ``noise_level`` is the measurement noise std in ``y``'s units (0 = noiseless or
    unknown), which picks the defaults (CT dose, denoising strength) and BM3D's sigma.
    Raises :class:`~diffrecon.errors.SettingsError` for a method that does not apply to
    the modality or an unknown parameter. ``slices``: the volume's slice index of each
    batch item (``tv-3d`` couples only neighbouring slices; None: the batch is consecutive).
    ``noise``: the problem's noise model (:class:`~diffrecon.physics.noise.NoiseModel`
    fields), so that BM3D denoises Poisson and Gamma noise in their stabilised domain.
    """
    if modality not in METHODS_FOR_MODALITY:
        raise SettingsError(f"Unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}.")
    if method not in METHODS:
        raise SettingsError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    if method not in METHODS_FOR_MODALITY[modality]:
        raise SettingsError(
            f"{method} does not apply to {modality}; use one of {', '.join(METHODS_FOR_MODALITY[modality])}."
        )
    unknown = sorted(set(params or {}) - set(PARAMETERS[method]))
    if unknown:
        accepted = ", ".join(PARAMETERS[method]) or "no parameters"
        raise SettingsError(f"{method} does not take {', '.join(unknown)} (it takes {accepted}).")
    settings = {**default_params(method, modality, operator, noise_level), **_checked(method, params or {})}

    if method == "zero-filled":
        return operator.A_dagger(y)
    if method == "fbp":
        return finish(operator.fbp(y, filter=settings.get("filter", "ramp")), modality, y)
    if method == "median":
        return finish(median_denoise(y, size=int(settings.get("size", 3))), modality, y)
    if method == "bm3d":
        model = NoiseModel.of(noise, noise_level) if noise else None
        # a signal-dependent model's std is the stabilised one (bm3d_denoise), not the measured noise_level
        stabilised = model is not None and model.signal_dependent
        sigma = settings.get("sigma", None if stabilised else (noise_level if noise_level > 0 else None))
        return finish(bm3d_denoise(y, sigma, sigma_scale=float(settings.get("sigma_scale", 1.0)), noise=model),
                      modality, y)

    lam, iters = float(settings["lam"]), int(settings["iters"])
    # The denoising "operator" is the identity: TV has a faster dedicated solver.
    if modality in ("denoise", "ultrasound"):
        return finish(tv_denoise(y, lam, iters=iters), modality, y)
    x0 = warm_start(operator, y, modality, noise_level)
    if method == "tv":
        return finish(solve_tv(operator, y, modality, settings, x0=x0), modality, y)
    if method == "tv-3d":
        index = range(y.shape[0]) if slices is None else slices
        return finish(tv3d_reconstruct(operator, y, lam, index, iters=iters, x0=x0), modality, y)
    return finish(
        l1_wavelet_reconstruct(
            operator, y, lam, iters=iters, x0=x0, levels=settings.get("levels"), wavelet=settings.get("wavelet", "db4")
        ),
        modality,
        y,
    )


TV_SOLVERS = ("pdhg", "fista")


def solve_tv(
    operator: LinearOperator,
    y: torch.Tensor,
    modality: str,
    settings: dict[str, Any],
    *,
    x0: torch.Tensor | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """TV reconstruction with ``settings`` (``lam``, ``iters``, optionally ``solver`` and
    ``lam_start``): PDHG by default, FISTA where the tuned defaults say so (CT, where the
    attenuation is also kept non-negative). The one place run_baseline and the tuning meet."""
    lam, iters = float(settings["lam"]), int(settings["iters"])
    if settings.get("solver", "pdhg") == "fista":
        return tv_reconstruct_fista(
            operator, y, lam, iters=iters, x0=x0, nonnegative=modality == "ct",
            lam_start=settings.get("lam_start"), callback=callback,
        )
    return tv_reconstruct(operator, y, lam, iters=iters, x0=x0, callback=callback)


#: numeric parameters: (type, bound, whether the bound itself is allowed)
_NUMERIC: dict[str, tuple[type, float, bool]] = {
    "lam": (float, 0.0, False),
    "iters": (int, 1, True),
    "levels": (int, 1, True),
    "size": (int, 1, True),
    "sigma": (float, 0.0, True),  # 0: estimate it from the image
    "sigma_scale": (float, 0.0, False),
    "lam_start": (float, 0.0, False),
}


def _checked(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """User parameters converted to their types; a bad value is a one-sentence SettingsError."""
    out = dict(params)
    for key in params.keys() & _NUMERIC.keys():
        kind, bound, inclusive = _NUMERIC[key]
        value = params[key]
        try:
            number = kind(value)
            if kind is int and number != float(value):  # 2.5 iterations
                raise ValueError
        except (TypeError, ValueError):
            what = "an integer" if kind is int else "a number"
            raise SettingsError(f"{method}'s {key} must be {what}, not {value!r}.") from None
        if number < bound or (number == bound and not inclusive):
            limit = "at least" if inclusive else "above"
            raise SettingsError(f"{method}'s {key} must be {limit} {bound:g}; got {value!r}.")
        out[key] = number
    if "solver" in params and params["solver"] not in TV_SOLVERS:
        raise SettingsError(f"{method}'s solver must be one of {', '.join(TV_SOLVERS)}, not {params['solver']!r}.")
    if "wavelet" in params and not _is_orthogonal_wavelet(params["wavelet"]):
        raise SettingsError(
            f"{method}'s wavelet must be an orthogonal one such as db4, haar or sym8, not {params['wavelet']!r}."
        )
    return out


def _is_orthogonal_wavelet(name: Any) -> bool:
    try:
        return bool(pywt.Wavelet(str(name)).orthogonal)
    except ValueError:  # not a discrete wavelet PyWavelets knows
        return False


def warm_start(
    operator: LinearOperator, y: torch.Tensor, modality: str, noise_level: float = 0.0
) -> torch.Tensor | None:
    """Where the iterative methods start: FBP (with its tuned filter) for CT; for MRI the
    solvers' own default, ``Aᴴy`` (the zero-filled image)."""
    if modality != "ct":
        return None
    return operator.fbp(y, filter=default_params("fbp", modality, operator, noise_level).get("filter", "ramp"))


def finish(x: torch.Tensor, modality: str, y: torch.Tensor) -> torch.Tensor:
    """Modality conventions every result obeys: CT attenuation is not negative (clipping
    only lowers the error); B-mode display values lie in [0, 1]."""
    if modality == "ct":
        return x.clamp_min(0.0)
    if modality == "ultrasound":
        return x.clamp(0.0, 1.0)
    return x


__all__ = ["METHODS", "METHODS_FOR_MODALITY", "PARAMETERS", "default_params", "finish", "run_baseline", "solve_tv", "warm_start"]
