"""Everything a bench run produced, as the one ``results.json`` dictionary (and its figures).

:func:`build_results` takes the runner's rows and images and adds the summaries and paired
tests (:mod:`.statistics`), draws the grids and the steps-ablation plot (:mod:`.figures`)
and records settings, data, model and environment; :func:`.report.write_results` writes it.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .figures import save_ablation_plot, save_calibration_plot, save_grid
from .runner import INPUT, BenchData, BenchRun
from .statistics import ablation_table, best_classical, paired_comparisons, summarise
from .tasks import MethodSpec, Task


def build_results(run: BenchRun, data: list[BenchData], tasks: list[Task], methods: list[MethodSpec], prior, *,
                  out: Path, seed: int, samples: int, quick: bool, command: str | None = None,
                  device: str = "cpu", cfg_prior=None) -> dict[str, Any]:
    """The results dictionary; the figures are written under ``out`` and listed in it."""
    summary = summarise(run.rows)
    classical = [m.label for m in methods if not m.is_diffusion]
    others = [m.label for m in methods if m.is_diffusion]
    comparisons = paired_comparisons(run.rows, summary, classical, others)
    figures = [save_grid(g, out / f"grid_{_slug(g.task)}_{_slug(g.data)}_{g.slice:03d}.png") for g in run.grids]
    calibration = calibration_table(run.rows)
    for task, per_method in calibration.items():
        figures.append(save_calibration_plot(per_method, out / f"calibration_{_slug(task)}.png", title=task))
    table = ablation_table(run.ablation) if run.ablation else []
    if table:
        task = tasks[0].label
        ref = best_classical(summary, task, classical)
        reference = (ref, summary[task][ref]["psnr"]["mean"]) if ref else None
        figures.append(save_ablation_plot(table, out / "ablation_steps.png", reference=reference,
                                          title=f"{run.ablation[0]['method']} · {task} · {data[0].label}"))
    return {
        "diffrecon_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "settings": {"modality": tasks[0].modality,
                     "tasks": [{"label": t.label, **t.settings(seed).to_dict()} for t in tasks],
                     "methods": [{"label": m.label, "method": m.base, "overrides": m.overrides} for m in methods],
                     "seed": seed, "samples": samples, "quick": quick},
        "data": [{"label": d.label, "slices": d.slices, "held_out": d.held_out, "role": d.role, "subject": d.subject,
                  "slices_text": _ranges(d.slices),
                  "source": str(d.volume.source_path) if d.volume.source_path else d.label} for d in data],
        "diffusion_options": run.options,  # per task and method, as they ran
        "model": model_description(prior),
        **({"cfg_model": {**(model_description(cfg_prior) or {}),
                          "conditioning": cfg_prior.metadata.get("conditioning")}} if cfg_prior is not None else {}),
        "environment": environment(device),
        "per_slice": run.rows,
        "summary": summary,
        "comparisons": comparisons,
        "calibration": calibration,
        "input_column": INPUT,
        "ablation": run.ablation,
        "ablation_table": table,
        "ablation_method": run.ablation[0]["method"] if run.ablation else None,
        "ablation_task": tasks[0].label if run.ablation else None,
        "figures": [str(f) for f in figures],
        "cases": [str(p) for p in run.case_dirs],
    }


def calibration_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and diffusion method: the calibration curve (nominal against observed coverage,
    mean over slices), ±2σ coverage, Spearman, the σ scale applied and the out-of-domain
    warnings per data set."""
    from ..diffusion.calibration import CURVE_LEVELS

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if "coverage_curve" not in r:
            continue
        entry = out.setdefault(r["task"], {}).setdefault(r["method"], {
            "nominal": list(CURVE_LEVELS), "curves": [], "coverage": [], "spearman": [], "scale": r.get("sigma_scale"),
            "ood": {}})
        entry["curves"].append(r["coverage_curve"])
        entry["coverage"].append(r["coverage_2sigma"])
        entry["spearman"].append(r["spearman_std_error"])
        flagged = entry["ood"].setdefault(r["data"], {"slices": 0, "warned": 0, "scores": []})
        flagged["slices"] += 1
        flagged["warned"] += int(bool(r.get("ood_warning")))
        flagged["scores"].append(r.get("ood_score"))
        for key in ("ood_holdout_score", "ood_intensity_score"):  # the other scores, when the run had them
            if r.get(key) is not None:
                flagged.setdefault(key.removeprefix("ood_") + "s", []).append(r[key])
    for per_method in out.values():
        for entry in per_method.values():
            entry["observed"] = [float(np.mean(c)) for c in zip(*entry.pop("curves"))]
            entry["coverage_2sigma"] = float(np.mean(entry.pop("coverage")))
            rhos = [x for x in entry.pop("spearman") if x is not None and np.isfinite(x)]
            entry["spearman_std_error"] = float(np.mean(rhos)) if rhos else float("nan")
    return out


def model_description(prior) -> dict | None:
    """The prior's file, training step, card and size (None without a prior)."""
    if prior is None:
        return None
    meta = prior.metadata
    path = Path(prior.path)
    card = path.with_suffix(".md")
    return {"path": str(path), "step": meta.get("step"), "modality": prior.modality,
            "model_card": str(card) if card.exists() else None, "schedule": meta.get("schedule"),
            # an int8 backend's network holds no torch parameters: count the prior's own (its unet_config)
            "parameters": _parameter_count(prior),
            "file_megabytes": round(path.stat().st_size / 1e6, 2) if path.is_file() else None,
            "backend": getattr(prior.model, "backend_info", {"backend": "torch"})}


def _parameter_count(prior) -> int:
    count = sum(p.numel() for p in prior.model.parameters())
    config = prior.metadata.get("unet_config")
    if count == 0 and config:
        import torch

        from ..diffusion.unet import build_unet

        with torch.device("meta"):
            count = build_unet(config).parameter_count()
    return int(count)


def environment(device: str = "cpu") -> dict:
    """What the timings ran on (the device with the network's precision, :func:`describe_device`)."""
    import torch

    from ..runtime import describe_device

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}".strip(),
            "python": platform.python_version(), "device": describe_device(device)}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c == "." else "-" for c in text).strip("-")


def _ranges(slices: list[int]) -> str:
    """[81, 82, 83, 90] -> '81-83, 90'."""
    parts: list[str] = []
    start: int | None = None
    prev: int | None = None
    for s in [*slices, None]:
        if start is None:
            start = prev = s
        elif s is not None and prev is not None and s == prev + 1:
            prev = s
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = s
    return ", ".join(parts)
