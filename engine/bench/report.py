"""The bench's written results: ``results.json`` (everything) and ``results.md`` (for people)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..io.sidecar import write_json
from .statistics import HIGHER_IS_BETTER


def _role_text(d: dict) -> str:
    """How a scan relates to the shipped priors' training."""
    role = d.get("role")
    if role == "test":
        return f" (test subject {d.get('subject')}: no prior trained and no default was tuned on it)"
    if role == "validation":
        return f" (validation subject {d.get('subject')}: defaults were tuned on it)"
    if d.get("held_out"):
        return " (held-out slab of a training subject)"
    return ""


def _fmt(value: float, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if metric == "psnr":
        return f"{value:.2f}"
    if metric == "ssim":
        return f"{value:.4f}"
    if metric == "seconds":
        return f"{value:.2f}"
    return f"{value:.3g}"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def glance_table(results: dict[str, Any]) -> list[str]:
    """One row per method, one column per task: PSNR ± SD / SSIM (the README's table)."""
    tasks = list(results["summary"])
    methods = list(dict.fromkeys(m for t in tasks for m in results["summary"][t]))
    lines = ["| method | " + " | ".join(f"{t}: PSNR dB / SSIM" for t in tasks) + " | s/slice |",
             "|---|" + "---|" * len(tasks) + "---|"]
    for m in methods:
        cells, seconds = [], []
        for t in tasks:
            st = results["summary"][t].get(m, {})
            if "psnr" not in st:
                cells.append("–")
                continue
            cells.append(f"{st['psnr']['mean']:.2f} ± {st['psnr']['sd']:.2f} / {st['ssim']['mean']:.3f}")
            seconds.append(st["seconds"]["mean"])
        sec = f"{sum(seconds) / len(seconds):.2f}" if seconds and m != results.get("input_column") else "–"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {sec} |")
    return lines


def per_subject_table(results: dict[str, Any], task: str) -> list[str]:
    """PSNR dB / SSIM per method (rows) and data set (columns), means over each set's slices:
    a result that holds on one subject only shows here. Empty with a single data set."""
    rows = [r for r in results.get("per_slice", []) if r.get("task") == task and "psnr" in r]
    data = list(dict.fromkeys(r["data"] for r in rows))
    if len(data) < 2:
        return []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(data) + " |", "|---|" + "---|" * len(data)]
    for m in methods:
        cells = []
        for d in data:
            mine = [r for r in rows if r["method"] == m and r["data"] == d]
            cells.append(f"{sum(r['psnr'] for r in mine) / len(mine):.2f} / {sum(r['ssim'] for r in mine) / len(mine):.3f}"
                         if mine else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """Per task: mean ± SD per method, then the paired differences to the best classical method."""
    s = results["settings"]
    lines = [
        f"# diffrecon bench: {s['modality']}",
        "",
        f"{results['created']} · diffrecon {results['diffrecon_version']} · torch {results['environment']['torch']}"
        f" · {results['environment']['threads']} thread(s) on {results['environment']['cpu_count']} core(s)"
        f" ({results['environment']['machine']})",
        "",
        f"Command: `{results['command']}`",
        "",
        "Data: " + "; ".join(f"{d['label']} slices {d['slices_text']}" + _role_text(d) for d in results["data"]),
        "",
    ]
    lines += ["## At a glance", ""] + glance_table(results) + [""]
    model = results.get("model")
    if model:
        size = (f", {model['parameters'] / 1e6:.2f} M parameters, {model['file_megabytes']:.1f} MB"
                if model.get("parameters") and model.get("file_megabytes") else "")
        lines += [f"Prior: `{model['path']}` (step {model.get('step')}{size}); diffusion options per method in "
                  f"results.json.", ""]
    cfg = results.get("cfg_model")
    if cfg:
        task = (cfg.get("conditioning") or {}).get("task")
        lines += [f"Conditional prior of the `diffusion:cfg/<w>` methods: `{cfg['path']}` (step {cfg.get('step')}, "
                  f"conditioned on {task}).", ""]
    for task, methods in results["summary"].items():
        lines += [f"## {task}", "", "| method | PSNR (dB) | SSIM | NMSE | MAE | s/slice | n |",
                  "|---|---|---|---|---|---|---|"]
        for method, stats in methods.items():
            cells = []
            for metric in ("psnr", "ssim", "nmse", "mae", "seconds"):
                st = stats.get(metric)
                cells.append("–" if st is None else f"{_fmt(st['mean'], metric)} ± {_fmt(st['sd'], metric)}")
            n = stats.get("psnr", {}).get("n", 0)
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {n} |")
        subjects = per_subject_table(results, task)
        if subjects:
            lines += ["", "Per data set (PSNR dB / SSIM, mean over its slices):", ""] + subjects
        calibrated = {m: st for m, st in methods.items() if "coverage_2sigma" in st}
        if calibrated:
            curves = results.get("calibration", {}).get(task, {})
            lines += ["", "Uncertainty calibration over the object (reference > 5 % of its peak): the fraction of "
                          "pixels whose error lies within ±2σ (σ as shown and written: scaled by the prior's "
                          "split-conformal factor when it has one), the rank correlation of σ with |error|, and "
                          "the out-of-domain warning (slices warned / scored, per data set):", "",
                      "| method | within ±2σ | Spearman(σ, abs error) | σ scale | out-of-domain warning |",
                      "|---|---|---|---|---|"]
            for m, st in calibrated.items():
                rho = st.get("spearman_std_error", {}).get("mean", math.nan)
                entry = curves.get(m, {})
                scale = entry.get("scale")
                ood = ", ".join(f"{d} {v['warned']}/{v['slices']}" for d, v in entry.get("ood", {}).items()) or "–"
                lines.append(f"| {m} | {st['coverage_2sigma']['mean']:.1%} | {rho:.2f} | "
                             f"{'x%.2f' % scale if scale else 'uncalibrated'} | {ood} |")
            if entry.get("observed"):
                lines += ["", "Calibration curve (nominal → observed coverage): "
                          + ", ".join(f"{n:.0%} → {o:.1%}" for n, o in zip(entry["nominal"], entry["observed"]))]
        comps = [c for c in results["comparisons"] if c["task"] == task]
        if comps:
            ref = comps[0]["reference"]
            lines += ["", f"Paired differences to the best classical method ({ref}), per slice; paired t-test, "
                          f"Bonferroni-corrected over all {comps[0]['comparisons']} comparisons of this run:", "",
                      "| method | ΔPSNR (dB) | p | p (Bonferroni) | ΔSSIM | p | p (Bonferroni) |",
                      "|---|---|---|---|---|---|---|"]
            by_method: dict[str, dict[str, dict]] = {}
            for c in comps:
                by_method.setdefault(c["method"], {})[c["metric"]] = c
            for method, per in by_method.items():
                cells = []
                for metric in ("psnr", "ssim"):
                    c = per.get(metric)
                    if c is None:
                        cells += ["–"] * 3
                        continue
                    cells += [f"{c['mean_difference']:+.{2 if metric == 'psnr' else 4}f} ± "
                              f"{_fmt(c['sd_difference'], metric)}", _p(c["p"]), _p(c["p_bonferroni"])]
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.get("ablation_table"):
        ablated = sorted({(r["data"], r["slice"]) for r in results["ablation"]})
        where = ", ".join(f"{d} slice {s}" for d, s in ablated)
        lines += ["## Steps ablation", "", f"{results['ablation_method']} on {results['ablation_task']}, {where}:", "",
                  "| steps | PSNR (dB) | SSIM | s/slice | n |", "|---|---|---|---|---|"]
        for r in results["ablation_table"]:
            lines.append(f"| {r['steps']} | {r['psnr']:.2f} ± {r['psnr_sd']:.2f} | {r['ssim']:.4f} | "
                         f"{r['seconds_per_slice']:.2f} | {r['n']} |")
        lines.append("")
    if results.get("figures"):
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in results["figures"]] + [""]
    lines += ["Higher is better for " + ", ".join(k.upper() for k, v in HIGHER_IS_BETTER.items() if v)
              + "; lower for NMSE, MAE and seconds. Metrics follow fastMRI's conventions, in the working domain "
                "(see `diffrecon.metrics`).", ""]
    return "\n".join(lines)


def write_results(out: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "results.json", results)
    md_path = out / "results.md"
    md_path.write_text(markdown(results), encoding="utf-8")
    return json_path, md_path
