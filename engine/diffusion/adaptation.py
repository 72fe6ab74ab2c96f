"""Adapting a reconstruction to the scan at hand without ground truth: self-supervised hold-out.

A prior trained on a few subjects may fit a new scan well or badly; the measurements
themselves can tell which, as SSDU (Yaman et al. 2020) does for training: set aside a
fraction of the measured data (MRI: k-space columns outside the fully sampled centre;
CT: views), reconstruct from the rest, and score each candidate setting by how well its
image predicts what was set aside. Two choices are made this way:

* :func:`choose_tv_weight`: the TV weight of the ``dds-tv`` guidance
  (:class:`.guidance.DDSTVGuidance`), among multiples of the TV baseline's tuned weight for
  the task, 0 being plain DDS. These runs are short (``SELECTION_STEPS`` steps): they rank
  weights, they do not have to be good images themselves.
* :func:`holdout_blend_steps` (``DiffusionOptions.blend_tv``): the weight ``w`` of the final
  ``w x + (1 - w) TV``. This one runs the *same* settings as the final run: a short run's
  image is worse than the final one, and a blend weight fitted to it leans on TV far more
  than the final image deserves (measured: 8-step runs gave ``w = 0`` on every MRI
  validation slice and cost CT 0.4 dB on the validation slab; full runs recovered it).

The chosen values then apply to all the data; the scores go into the result's provenance.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..physics.base import LinearOperator

if TYPE_CHECKING:
    from ..measurements import ReconProblem
    from .checkpoint import Prior
    from .options import DiffusionOptions

#: modalities whose measurements can be held out (k-space columns, CT views); denoising's
#: A = I measures each pixel once, so nothing can be set aside there
HOLDOUT_MODALITIES = ("mri", "ct")
#: fraction of the measured columns (MRI) or views (CT) set aside to score settings
HOLDOUT_FRACTION = 0.15
#: TV weights tried, as multiples of the TV baseline's tuned weight (0 = plain DDS)
TV_WEIGHT_CANDIDATES = (0.0, 1.0, 3.0)
#: sampling steps of each hold-out run
SELECTION_STEPS = 8


class HeldOutOperator(LinearOperator):
    """``A`` restricted to a subset of the measurements: ``keep * A(x)`` (``keep`` is 0/1 in
    measurement space), with the exact adjoint ``Aᴴ(keep * r)``."""

    def __init__(self, base: LinearOperator, keep: torch.Tensor):
        self.base, self.keep = base, keep
        self.image_dtype = base.image_dtype
        self.is_identity = False

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.base.A(x) * self.keep.to(x.device)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.base.A_adjoint(y * self.keep.to(y.device))

    def image_shape(self) -> tuple[int, ...] | None:
        return self.base.image_shape()

    def fbp(self, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The base operator's filtered back-projection of the kept views (CT warm starts)."""
        return self.base.fbp(y * self.keep.to(y.device), **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        # Other facts of the base operator (its views, its mask, its zero-filled image) are still true.
        if name in ("base", "keep"):
            raise AttributeError(name)
        return getattr(self.base, name)


def holdout_masks(problem: "ReconProblem", fraction: float = HOLDOUT_FRACTION,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep, held)``: 0/1 masks over the measurements, broadcastable to ``problem.y``.

    MRI holds out whole k-space columns (the phase-encode lines the mask runs along) among
    the measured ones, never the contiguous fully sampled centre (calibration and
    contrast live there); CT holds out whole views. The same seed gives the same split.
    """
    y = problem.y
    if problem.modality == "mri":
        axis = y.dim() - 1
        measured = (y.abs() > 0).flatten(0, -2).any(dim=0).cpu().numpy()  # per column
        centre = y.shape[-1] // 2
        lo = hi = centre
        while lo - 1 >= 0 and measured[lo - 1]:
            lo -= 1
        while hi + 1 < len(measured) and measured[hi + 1]:
            hi += 1
        eligible = np.array([i for i in np.flatnonzero(measured) if not lo <= i <= hi])
    elif problem.modality == "ct":
        axis = y.dim() - 2
        eligible = np.arange(y.shape[axis])
    else:
        raise ValueError(f"hold-out selection needs MRI or CT measurements, not {problem.modality}")
    n_held = max(1, int(round(fraction * len(eligible))))
    if n_held >= len(eligible):
        raise ValueError("too few measured lines outside the centre to hold any out")
    rng = np.random.default_rng(seed)
    held_idx = rng.choice(eligible, size=n_held, replace=False)
    shape = [1] * y.dim()
    shape[axis] = y.shape[axis]
    held = torch.zeros(shape, dtype=torch.float32)
    held.view(-1)[torch.as_tensor(held_idx)] = 1.0
    return 1.0 - held, held


def holdout_residual(operator: LinearOperator, y: torch.Tensor, held: torch.Tensor, x: torch.Tensor) -> float:
    """``||held (A x - y)||² / ||held y||²``: how badly ``x`` predicts the set-aside data."""
    r = (operator.A(x) - y) * held
    return float(r.abs().square().sum() / (y * held).abs().square().sum().clamp_min(1e-30))


def choose_tv_weight(problem: "ReconProblem", prior: "Prior", options: "DiffusionOptions",
                     candidates: tuple[float, ...] = TV_WEIGHT_CANDIDATES,
                     steps: int = SELECTION_STEPS) -> tuple[float, dict[str, Any]]:
    """The ``dds-tv`` weight (a multiple of the TV baseline's) whose image best predicts
    held-out measurements, and a report of every candidate's hold-out residual (TV's too)."""
    from ..baselines import run_baseline
    from ..measurements import ReconProblem
    from .reconstruction import reconstruct_to_end

    try:
        keep, held = holdout_masks(problem, seed=options.seed)
    except ValueError as exc:  # e.g. a tiny image: nothing to learn from, so TV's own weight
        return 1.0, {"method": f"none ({exc})", "tv_weight": 1.0}
    train = ReconProblem(problem.modality, HeldOutOperator(problem.operator, keep), problem.y * keep,
                         problem.observed, None, problem.noise_level, problem.slices)
    # A symmetric pair: its mean, not one sample's invented fine detail, is what predicts held-out data.
    quick = replace(options, guidance="dds-tv", steps=min(steps, options.steps), samples=1, symmetric=True,
                    hot_start=False, blend_tv=False, branch_t=1.0)
    scores: dict[str, float] = {}
    for c in candidates:
        frame = reconstruct_to_end(train, prior, replace(quick, tv_weight=float(c)))
        scores[f"{c:g}"] = holdout_residual(problem.operator, problem.y, held, frame.x0)
    with torch.inference_mode():
        tv = run_baseline("tv", train.operator, train.y, modality=problem.modality,
                          noise_level=problem.noise_level)
    best = min(scores, key=scores.__getitem__)
    report = {"method": "self-supervised hold-out", "held_out_fraction": HOLDOUT_FRACTION,
              "selection_steps": quick.steps, "holdout_residual": {k: round(v, 6) for k, v in scores.items()},
              "tv_holdout_residual": round(holdout_residual(problem.operator, problem.y, held, tv), 6),
              "tv_weight": float(best)}
    return float(best), report


def holdout_blend_steps(problem: "ReconProblem", prior: "Prior", options: "DiffusionOptions",
                        tv_weight: float | None = None) -> Generator[int, None, tuple[float, dict[str, Any]]]:
    """The weight ``w`` in [0, 1] for which ``w diffusion + (1 - w) TV`` best predicts held-out
    measurements, and its report, as the return value of a generator that yields the hold-out
    run's step numbers (a caller can show progress and stop between steps).

    Both images are made from the kept measurements alone, the diffusion one with the final
    run's own settings (steps, sampler, guidance; ``tv_weight`` the dds-tv weight already
    chosen), so that ``w`` is fitted to an image as good as the one it will weight. A run
    with K > 1 samples is represented by one symmetric pair (its mean, not a sample's
    invented detail, is what predicts held-out data); a hot start enters from TV on the kept
    measurements, so no held-out measurement reaches the image that is scored on it.
    """
    from ..baselines import run_baseline
    from ..measurements import ReconProblem
    from .reconstruction import stream_reconstruction

    try:
        keep, held = holdout_masks(problem, seed=options.seed)
    except ValueError as exc:  # e.g. a tiny image: nothing to learn from, so the prior's own result
        return 1.0, {"method": f"none ({exc})", "weight": 1.0}
    train = ReconProblem(problem.modality, HeldOutOperator(problem.operator, keep), problem.y * keep,
                         problem.observed, None, problem.noise_level, problem.slices)
    run = replace(options, blend_tv=False)
    if tv_weight is not None:
        run = replace(run, tv_weight=float(tv_weight))
    if run.samples > 1:
        run = replace(run, samples=1, symmetric=True, branch_t=1.0)
    with torch.inference_mode():
        tv = run_baseline(blend_baseline(problem, options), train.operator, train.y, modality=problem.modality,
                          noise_level=problem.noise_level, slices=problem.slices)
    frame = None
    frames = stream_reconstruction(train, prior, run, baseline=tv if run.hot_start else None)
    try:
        for frame in frames:
            yield frame.step
    finally:
        frames.close()
    assert frame is not None  # at least one step always runs
    weight = blend_weight(problem.operator, problem.y, held, frame.x0, tv)
    report = {"method": "self-supervised hold-out, same settings", "held_out_fraction": HOLDOUT_FRACTION,
              "steps": run.steps, "weight": round(weight, 4),
              "holdout_residual": round(holdout_residual(problem.operator, problem.y, held, frame.x0), 6),
              "tv_holdout_residual": round(holdout_residual(problem.operator, problem.y, held, tv), 6)}
    return weight, report


def blend_baseline(problem: "ReconProblem", options: "DiffusionOptions") -> str:
    """The classical method a result is blended with: TV, or 3D TV for a 3D-consistent run
    (2D TV's slices would bring back the stripes the through-plane term removed). The
    hold-out fits the weight against the same method. A hot start's TV is 2D TV: that one; so
    is a lone slice's (3D TV of one slice is a slower, worse 2D TV)."""
    if options.hot_start or int(problem.y.shape[0]) < 2:
        return "tv"
    return "tv-3d" if options.through_plane > 0 and problem.modality in ("mri", "ct") else "tv"


def blend_weight(operator: LinearOperator, y: torch.Tensor, held: torch.Tensor, diffusion: torch.Tensor,
                 tv: torch.Tensor) -> float:
    """``w`` in [0, 1] for which ``w diffusion + (1 - w) tv`` best predicts the held-out data.

    Least squares in one unknown: ``w = Re<H A(d - t), H (y - A t)> / ||H A(d - t)||²``. Where
    the prior fits the scan, w is near 1; where it does not, the result leans on TV, so
    diffusion is never much worse than TV on a scan unlike the prior's training data.
    """
    with torch.no_grad():
        ad = operator.A(diffusion - tv.to(diffusion.dtype)) * held
        rt = (y - operator.A(tv.to(diffusion.dtype))) * held
        num = float((ad.conj() * rt).real.sum()) if ad.is_complex() else float((ad * rt).sum())
        den = float(ad.abs().square().sum())
    return float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 1.0


def tv_weight_absolute(problem: "ReconProblem", multiple: float) -> float:
    """The TV baseline's tuned relative weight for this task times ``multiple``."""
    from ..baselines.defaults import default_params

    return multiple * float(default_params("tv", problem.modality, problem.operator, problem.noise_level)["lam"])
