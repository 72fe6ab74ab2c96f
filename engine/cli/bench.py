"""``diffrecon bench``: compare methods on simulated measurements; tables, image grids, ablation.

    diffrecon bench colin27 --modality mri --settings 4x,8x --methods zero-filled,tv,l1-wavelet,diffusion \
        --slices 88:92 --out bench/mri

With dataset names (colin27, mni152, cranium) the slices default to the validation block
held out from the shipped priors' training; any scan path works too (all its slices).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__
from ..errors import DiffreconError
from .choices import MODALITIES

#: scans a modality is benchmarked on when DATA is not given
DEFAULT_DATA = {"mri": ["colin27"], "ct": ["cranium"], "denoise": ["colin27"], "ultrasound": ["colin27"]}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="compare reconstruction methods: results.json/.md with paired tests, image grids, steps ablation",
        description=(
            "Simulate measurements from ground-truth scans (the same mask and noise for every method), run every "
            "method, and write results.json, results.md (mean ± SD, paired t-tests against the best classical "
            "method, Bonferroni-corrected), PNG image grids and, with --steps, a steps ablation."
        ),
    )
    p.add_argument("data", nargs="*", metavar="DATA",
                   help="scan paths or dataset names (colin27, mni152, cranium: their held-out validation slices); "
                        "default: colin27 for MRI/denoise/ultrasound, cranium for CT")
    p.add_argument("--modality", choices=MODALITIES, required=True)
    p.add_argument("--settings", help="tasks, comma-separated: 4x,8x (MRI); views=30,views=60,dose=0.25 (CT); "
                                      "sigma=0.05,sigma=0.1 (denoise); looks=1 (ultrasound); join settings of "
                                      "one task with + (default: all of the modality's)")
    p.add_argument("--methods", help="comma-separated: the modality's baselines (zero-filled, fbp, tv, l1-wavelet, "
                                     "median, bm3d) and diffusion[:sampler/guidance/steps[/hot]] "
                                     "(default: every baseline and diffusion)")
    p.add_argument("--slices", help="slices of each scan, Python style: 88:92 (default: the held-out block, or all)")
    p.add_argument("--seed", type=int, default=0, help="seed for masks, noise and sampling (default 0)")
    p.add_argument("--samples", type=int, default=1,
                   help="diffusion posterior samples per slice (default 1: a symmetric pair, which gives a variance)")
    p.add_argument("--model", help="diffusion prior (default: the bundled one for the modality)")
    p.add_argument("--steps", dest="ablation", metavar="N,N,...",
                   help="steps ablation of the first diffusion method on the first task: e.g. 10,25,50,100,250,1000")
    p.add_argument("--ablation-slices", type=int, default=2,
                   help="slices the steps ablation runs on: the first N of the first scan (default 2)")
    p.add_argument("--grid-slices", type=int, default=2, help="slices per task drawn as image grids (default 2)")
    p.add_argument("--no-cases", action="store_true",
                   help="do not write cases/<case>/<method>.nii.gz (the volumes a reader study is built from)")
    p.add_argument("--quick", action="store_true",
                   help="two slices, 3 diffusion steps: checks the whole report in seconds (for tests)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.set_defaults(run=run)


def _prior(args, modality: str, wanted: bool):
    if not wanted:
        return None
    from ..diffusion.checkpoint import load_prior
    from ..reconstruct import default_prior_path

    path = Path(args.model) if args.model else default_prior_path(modality)
    if not path.is_file():
        raise DiffreconError(f"{path}: the diffusion prior file does not exist; pass --model or drop diffusion "
                             f"from --methods")
    return load_prior(path)


def _environment() -> dict:
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}".strip(),
            "python": platform.python_version()}


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bench import (
        load_bench_data,
        parse_methods,
        parse_settings,
        parse_steps,
        run_bench,
    )
    from ..bench.figures import save_ablation_plot, save_grid
    from ..bench.report import write_results
    from ..bench.runner import INPUT
    from ..bench.statistics import (
        ablation_table,
        best_classical,
        paired_comparisons,
        summarise,
    )
    from ..errors import SettingsError

    modality = args.modality
    if args.samples < 1 or args.grid_slices < 0:
        raise SettingsError("--samples must be at least 1 and --grid-slices at least 0")
    tasks = parse_settings(args.settings, modality)
    have_default_prior = modality in ("mri", "ct") or args.model is not None
    methods = parse_methods(args.methods, modality, have_prior=have_default_prior)
    ablation_steps = parse_steps(args.ablation)
    if ablation_steps and not any(m.is_diffusion for m in methods):
        raise SettingsError("--steps (the steps ablation) needs a diffusion method in --methods")
    prior = _prior(args, modality, any(m.is_diffusion for m in methods))
    data = [load_bench_data(d, modality, args.slices, args.quick) for d in (args.data or DEFAULT_DATA[modality])]
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise SettingsError(f"{out} exists and is not a folder")

    n_slices = sum(len(d.slices) for d in data)
    ablation_slices = min(max(1, args.ablation_slices), len(data[0].slices))
    total = len(tasks) * n_slices + len(ablation_steps) * ablation_slices
    print(f"diffrecon bench: {modality}, {len(tasks)} task(s) x {n_slices} slice(s), methods: "
          f"{', '.join(m.label for m in methods)}", file=sys.stderr)
    with tqdm(total=total, unit="slice", desc="bench", file=sys.stderr, disable=None) as bar:
        run_ = run_bench(data, tasks, methods, prior=prior, seed=args.seed, samples=args.samples,
                         grid_slices=1 if args.quick else args.grid_slices,
                         cases_dir=None if args.no_cases else out / "cases", ablation_steps=ablation_steps,
                         ablation_slices=ablation_slices,
                         quick=args.quick, progress=lambda label: (bar.set_postfix_str(label), bar.update()))

    summary = summarise(run_.rows)
    classical = [m.label for m in methods if not m.is_diffusion]
    others = [m.label for m in methods if m.is_diffusion]
    comparisons = paired_comparisons(run_.rows, summary, classical, others)
    figures = [save_grid(g, out / f"grid_{_slug(g.task)}_{_slug(g.data)}_{g.slice:03d}.png") for g in run_.grids]
    table = ablation_table(run_.ablation) if run_.ablation else []
    if table:
        task = tasks[0].label
        ref = best_classical(summary, task, classical)
        reference = (ref, summary[task][ref]["psnr"]["mean"]) if ref else None
        figures.append(save_ablation_plot(table, out / "ablation_steps.png", reference=reference,
                                          title=f"{run_.ablation[0]['method']} · {task} · {data[0].label}"))
    results = {
        "diffrecon_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": getattr(args, "command_line", None),
        "settings": {"modality": modality, "tasks": [{"label": t.label, **t.settings(args.seed).to_dict()}
                                                     for t in tasks],
                     "methods": [{"label": m.label, "method": m.base, "overrides": m.overrides} for m in methods],
                     "seed": args.seed, "samples": args.samples, "quick": args.quick},
        "data": [{"label": d.label, "slices": d.slices, "held_out": d.held_out,
                  "slices_text": _ranges(d.slices),
                  "source": str(d.volume.source_path) if d.volume.source_path else d.label} for d in data],
        "model": _model_description(prior),
        "environment": _environment(),
        "per_slice": run_.rows,
        "summary": summary,
        "comparisons": comparisons,
        "input_column": INPUT,
        "ablation": run_.ablation,
        "ablation_table": table,
        "ablation_method": run_.ablation[0]["method"] if run_.ablation else None,
        "ablation_task": tasks[0].label if run_.ablation else None,
        "figures": [str(f) for f in figures],
        "cases": [str(p) for p in run_.case_dirs],
    }
    json_path, md_path = write_results(out, results)
    _print_summary(summary)
    for path in (json_path, md_path, *figures):
        print(path)
    return 0


def _model_description(prior) -> dict | None:
    if prior is None:
        return None
    meta = prior.metadata
    path = Path(prior.path)
    card = path.with_suffix(".md")
    return {"path": str(path), "step": meta.get("step"), "modality": prior.modality,
            "model_card": str(card) if card.exists() else None, "schedule": meta.get("schedule"),
            "parameters": sum(p.numel() for p in prior.model.parameters()),
            "file_megabytes": round(path.stat().st_size / 1e6, 2) if path.is_file() else None}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c == "." else "-" for c in text).strip("-")


def _ranges(slices: list[int]) -> str:
    """[81, 82, 83, 90] -> '81-83, 90'."""
    parts, start, prev = [], None, None
    for s in slices + [None]:
        if start is None:
            start = prev = s
        elif s is not None and s == prev + 1:
            prev = s
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = s
    return ", ".join(parts)


def _print_summary(summary) -> None:
    for task, methods in summary.items():
        print(f"{task}:", file=sys.stderr)
        for method, stats in methods.items():
            psnr, ssim, sec = stats.get("psnr"), stats.get("ssim"), stats.get("seconds")
            if psnr is None:
                continue
            print(f"  {method:<28} PSNR {psnr['mean']:6.2f} ± {psnr['sd']:.2f}  SSIM {ssim['mean']:.4f}  "
                  f"{sec['mean']:7.2f} s/slice", file=sys.stderr)
