"""Is the posterior spread honest? Calibration figures for a reconstruction's per-pixel std.

A diffusion reconstruction with ``K`` posterior samples gives a mean image and a
per-pixel standard deviation. Against a known ground truth, two figures say whether that
std can be trusted:

* ``coverage_2sigma``: the fraction of pixels whose error ``|mean - reference|`` is at
  most ``2 std``. For a Gaussian posterior that is honest about its spread this is about
  0.95; much lower means over-confident samples (too little spread), close to 1 with a
  large std means under-confident ones.
* ``spearman_std_error``: Spearman's rank correlation between ``std`` and ``|error|``
  over the pixels (scipy.stats.spearmanr). Positive means the std points at where the
  errors are, which is what a reader of the uncertainty map needs, whatever its scale.

:func:`calibration_curve` bins pixels by predicted std and reports the RMS error in each
bin (a reliability diagram: a calibrated std lies on the diagonal).

With few samples even an honest posterior covers less than 95 %: the mean of ``K``
samples misses the truth by ``N(0, sigma^2 (1 + 1/K))`` and the sample std has only
``K - 1`` degrees of freedom, so ``|error| / (std sqrt(1 + 1/K))`` is Student-t with
``K - 1`` degrees of freedom. :func:`ideal_coverage` is that yardstick (0.83 for
``K = 4``): compare ``coverage_2sigma`` with it, not with 0.95.

Complex (MR) means are compared by magnitude, as the reference is a magnitude image.
Pass ``mask`` to score only some pixels (e.g. the head, not the air around it, where
every method is trivially right).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

ArrayLike = np.ndarray | torch.Tensor


def _array(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.abs() if x.is_complex() else x
        return x.double().numpy()
    x = np.asarray(x)
    return np.abs(x).astype(np.float64) if np.iscomplexobj(x) else x.astype(np.float64)


def _pixels(reference: ArrayLike, mean: ArrayLike, std: ArrayLike,
            mask: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened ``|error|`` and ``std`` over the selected pixels."""
    ref, est, sd = _array(reference), _array(mean), _array(std)
    if not ref.shape == est.shape == sd.shape:
        raise ValueError(f"reference, mean and std must have one shape; got {ref.shape}, {est.shape}, {sd.shape}")
    error = np.abs(est - ref)
    if mask is not None:
        keep = np.broadcast_to(_array(mask) > 0, ref.shape)
        error, sd = error[keep], sd[keep]
    if error.size == 0:
        raise ValueError("no pixels to score (the mask selects none)")
    return error.ravel(), sd.ravel()


def calibration(reference: ArrayLike, mean: ArrayLike, std: ArrayLike,
                mask: ArrayLike | None = None) -> dict[str, float]:
    """``{"coverage_2sigma", "spearman_std_error"}`` (module docstring); the rank
    correlation is NaN when std or error is constant (no ranking to compare)."""
    error, sd = _pixels(reference, mean, std, mask)
    coverage = float(np.mean(error <= 2.0 * sd))
    if np.ptp(sd) == 0 or np.ptp(error) == 0:
        rho = float("nan")
    else:
        rho = float(stats.spearmanr(sd, error).statistic)
    return {"coverage_2sigma": coverage, "spearman_std_error": rho}


def ideal_coverage(samples: int, width: float = 2.0) -> float:
    """The ``coverage_2sigma`` an honest Gaussian posterior reaches with ``samples`` draws:
    ``P(|t_{K-1}| <= width / sqrt(1 + 1/K))`` (module docstring)."""
    if samples < 2:
        raise ValueError(f"a spread needs at least 2 samples; got {samples}")
    bound = width / np.sqrt(1.0 + 1.0 / samples)
    return float(2.0 * stats.t.cdf(bound, df=samples - 1) - 1.0)


def calibration_curve(reference: ArrayLike, mean: ArrayLike, std: ArrayLike, *, bins: int = 10,
                      mask: ArrayLike | None = None) -> dict[str, list[float]]:
    """Reliability diagram: pixels in ``bins`` equal-count bins of predicted std, with each
    bin's mean std, RMS error and pixel count (a calibrated std has rms_error ~ std)."""
    error, sd = _pixels(reference, mean, std, mask)
    order = np.argsort(sd, kind="stable")
    groups = [g for g in np.array_split(order, min(bins, sd.size)) if g.size]
    return {
        "std": [float(sd[g].mean()) for g in groups],
        "rms_error": [float(np.sqrt(np.mean(error[g] ** 2))) for g in groups],
        "count": [int(g.size) for g in groups],
    }


__all__ = ["calibration", "calibration_curve", "ideal_coverage"]
