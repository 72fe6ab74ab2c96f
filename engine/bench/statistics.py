"""Summaries and paired comparisons of per-slice scores (scipy and statsmodels do the tests).

As the Diffusion-UNet paper reports them: every method against the best classical
baseline of the same task, slice by slice (the same measurements), with a paired
t-test; the p values of all comparisons in a run are Bonferroni-corrected together.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

METRICS = ("psnr", "ssim", "nmse", "mae", "seconds")
#: the diffusion methods' uncertainty calibration (see diffrecon.diffusion.uncertainty)
CALIBRATION = ("coverage_2sigma", "spearman_std_error")
#: higher is better for these; lower for the rest
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "nmse": False, "mae": False, "seconds": False}
COMPARED = ("psnr", "ssim")


def _by(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return groups


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{task: {method: {metric: {mean, sd, n}}}}`` in the order the rows came."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (task, method), group in _by(rows, "task", "method").items():
        stats = {}
        for metric in METRICS + CALIBRATION:
            values = np.array([r[metric] for r in group if r.get(metric) is not None], float)
            if values.size:
                stats[metric] = {"mean": float(values.mean()),
                                 "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                                 "n": int(values.size)}
        out.setdefault(task, {})[method] = stats
    return out


def best_classical(summary: dict[str, dict[str, dict]], task: str, classical: list[str]) -> str | None:
    """The classical method with the highest mean PSNR on ``task``."""
    scored = [(summary[task][m]["psnr"]["mean"], m) for m in classical if "psnr" in summary[task].get(m, {})]
    return max(scored)[1] if scored else None


def paired_comparisons(rows: list[dict[str, Any]], summary, classical: list[str],
                       others: list[str]) -> list[dict[str, Any]]:
    """Every method (but the reference) minus the best classical one, per task and metric.

    Each entry: mean and SD of the per-slice difference, the paired t-test's p and its
    Bonferroni-corrected value over all entries (``p_bonferroni``), and n.
    """
    from scipy.stats import ttest_rel
    from statsmodels.stats.multitest import multipletests

    out: list[dict[str, Any]] = []
    for task in summary:
        reference = best_classical(summary, task, classical)
        if reference is None:
            continue
        task_rows = [r for r in rows if r["task"] == task]
        ref_scores = {(r["data"], r["slice"]): r for r in task_rows if r["method"] == reference}
        for method in [m for m in classical + others if m != reference and m in summary[task]]:
            pairs = [(r, ref_scores[(r["data"], r["slice"])]) for r in task_rows
                     if r["method"] == method and (r["data"], r["slice"]) in ref_scores]
            for metric in COMPARED:
                a = np.array([p[0][metric] for p in pairs], float)
                b = np.array([p[1][metric] for p in pairs], float)
                diff = a - b
                p_value = math.nan
                if diff.size >= 2 and np.ptp(diff) > 0:
                    p_value = float(ttest_rel(a, b).pvalue)
                out.append({"task": task, "method": method, "reference": reference, "metric": metric,
                            "n": int(diff.size), "mean_difference": float(diff.mean()) if diff.size else math.nan,
                            "sd_difference": float(diff.std(ddof=1)) if diff.size > 1 else math.nan,
                            "p": p_value})
    valid = [c for c in out if not math.isnan(c["p"])]
    if valid:
        corrected = multipletests([c["p"] for c in valid], method="bonferroni")[1]
        for c, p in zip(valid, corrected):
            c["p_bonferroni"] = float(p)
    for c in out:
        c.setdefault("p_bonferroni", math.nan)
        c["comparisons"] = len(valid)
    return out


def ablation_table(ablation_rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean PSNR/SSIM and seconds per slice at each step count."""
    table = []
    for (steps,), group in sorted(_by(ablation_rows, "steps").items()):
        psnr = np.array([r["psnr"] for r in group], float)
        table.append({"steps": int(steps), "psnr": float(psnr.mean()),
                      "psnr_sd": float(psnr.std(ddof=1)) if psnr.size > 1 else 0.0,
                      "ssim": float(np.mean([r["ssim"] for r in group])),
                      "seconds_per_slice": float(np.mean([r["seconds"] for r in group])), "n": len(group)})
    return table
