"""``diffrecon bench``: compare methods on simulated measurements; tables, image grids, ablation.

    diffrecon bench colin27 --modality mri --settings 4x,8x --methods zero-filled,tv,l1-wavelet,diffusion \
        --slices 88:92 --out bench/mri

Without DATA, a modality is scored on its **test subjects** (``diffrecon.datasets``: scans of
subjects no prior trained on and no default was tuned on). A dataset name scores that
subject (a training subject only on its held-out slab); any scan path works too (all its
slices).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DiffreconError
from .choices import BACKENDS, DEVICES, MODALITIES, low_noise_expert_setting


def default_data(modality: str) -> list[str]:
    """The test subjects a modality is benchmarked on when DATA is not given."""
    from ..datasets import datasets_with

    return datasets_with("CT" if modality == "ct" else "MR", "test")


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
                   help="scan paths or dataset names (README: Training data; a training subject such as "
                        "colin27 or cranium only on its held-out slab); default: the modality's test subjects "
                        "(MRI, denoise, ultrasound: someones-t1, someones-epi, dxsamples; CT: stent)")
    p.add_argument("--modality", choices=MODALITIES, required=True)
    p.add_argument("--settings", help="tasks, comma-separated: 4x,8x (MRI); views=30,views=60,dose=0.25 (CT); "
                                      "sigma=0.05,sigma=0.1 (denoise); looks=1 (ultrasound); join settings of "
                                      "one task with + (default: all of the modality's)")
    p.add_argument("--methods", help="comma-separated: the modality's baselines (zero-filled, fbp, tv, l1-wavelet, "
                                     "median, bm3d) and diffusion[:sampler/guidance/steps[/hot+blend+noblend+noexpert+grid2]] "
                                     "(default: every baseline and diffusion; noexpert: without the prior's "
                                     "low-noise expert; grid2, grid3: MRI on a 2x or 3x finer grid)")
    p.add_argument("--slices", help="slices of each scan, Python style: 88:92 (default: the held-out block, or all)")
    p.add_argument("--slices-per-subject", type=int, default=8, metavar="N",
                   help="slices scored per test or validation subject, spread evenly over its object slices "
                        "(default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed for masks, noise and sampling (default 0)")
    p.add_argument("--samples", type=int, default=1,
                   help="diffusion posterior samples per slice (default 1: a symmetric pair, which gives a variance)")
    p.add_argument("--model", help="diffusion prior (default: the bundled one for the modality)")
    p.add_argument("--cfg-model", metavar="PRIOR.safetensors",
                   help="the conditional prior (diffrecon train --conditional TASK) that diffusion:cfg/<w> methods "
                        "run with classifier-free guidance scale w")
    p.add_argument("--low-noise-expert", metavar="PRIOR",
                   help="the low-noise expert (diffrecon train --noise-range --init-from MODEL) that diffusion "
                        "methods without '+noexpert' run their last steps with (default: the bundled prior's own, "
                        "when it has one; 'none': the prior alone)")
    p.add_argument("--steps", dest="ablation", metavar="N,N,...",
                   help="steps ablation of the first diffusion method on the first task: e.g. 10,25,50,100,250,1000")
    p.add_argument("--ablation-slices", type=int, default=2,
                   help="slices the steps ablation runs on: the first N of the first scan (default 2)")
    p.add_argument("--grid-slices", type=int, default=2, help="slices per task drawn as image grids (default 2)")
    p.add_argument("--no-cases", action="store_true",
                   help="do not write cases/<case>/<method>.nii.gz (the volumes a reader study is built from)")
    p.add_argument("--quick", action="store_true",
                   help="two slices, 3 diffusion steps: checks that the whole report is produced, in seconds; "
                        "its figures mean nothing (diffusion with 3 steps scores below its own input)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the methods run: auto (CUDA when present, with bf16 there; else the CPU), cpu, cuda")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the diffusion network: torch (float32; default) or onnx-int8 (ONNX Runtime, "
                        "int8 weights and activations, CPU only; needs pip install 'diffrecon[int8]')")
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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bench import (
        load_bench_data,
        parse_methods,
        parse_settings,
        parse_steps,
        run_bench,
    )
    from ..bench.report import write_results
    from ..bench.results import build_results
    from ..errors import SettingsError

    modality = args.modality
    if args.samples < 1 or args.grid_slices < 0:
        raise SettingsError("--samples must be at least 1 and --grid-slices at least 0")
    tasks = parse_settings(args.settings, modality)
    from .. import modalities

    chosen = modalities.get(modality)
    have_default_prior = chosen.default_prior is not None or args.model is not None
    methods = parse_methods(args.methods, modality, have_prior=have_default_prior)
    expert = low_noise_expert_setting(args.low_noise_expert)
    if expert is not None:
        for m in methods:
            if m.is_diffusion and "cfg_scale" not in m.overrides:
                m.overrides.setdefault("low_noise_expert", expert)
    ablation_steps = parse_steps(args.ablation)
    if ablation_steps and not any(m.is_diffusion for m in methods):
        raise SettingsError("--steps (the steps ablation) needs a diffusion method in --methods")
    from ..runtime import resolve_device

    device = resolve_device(args.device)
    prior = _prior(args, modality, any(m.is_diffusion and "cfg_scale" not in m.overrides for m in methods))
    if prior is not None:
        from ..diffusion.onnx_int8 import with_backend

        prior = with_backend(prior, args.backend, device.type)
    cfg_prior = None
    if args.cfg_model:
        from ..diffusion.checkpoint import load_prior

        cfg_prior = load_prior(args.cfg_model)
    _check_cfg(methods, tasks, cfg_prior, modality, args.seed)
    if args.slices_per_subject < 1:
        raise SettingsError("--slices-per-subject must be at least 1")
    data = [load_bench_data(d, modality, args.slices, args.quick, args.slices_per_subject)
            for d in (args.data or default_data(modality))]
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise SettingsError(f"{out} exists and is not a folder")

    n_slices = sum(len(d.slices) for d in data)
    ablation_slices = min(max(1, args.ablation_slices), len(data[0].slices))
    total = len(tasks) * n_slices + len(ablation_steps) * ablation_slices
    print(f"diffrecon bench: {modality}, {len(tasks)} task(s) x {n_slices} slice(s), methods: "
          f"{', '.join(m.label for m in methods)}", file=sys.stderr)
    if args.quick:
        print("diffrecon bench: --quick checks the pipeline, not the methods: 3 diffusion steps on 2 slices "
              "score below the input; do not quote these figures", file=sys.stderr)
    with tqdm(total=total, unit="slice", desc="bench", file=sys.stderr, disable=None) as bar:
        run_ = run_bench(data, tasks, methods, prior=prior, seed=args.seed, samples=args.samples,
                         grid_slices=1 if args.quick else args.grid_slices,
                         cases_dir=None if args.no_cases else out / "cases", ablation_steps=ablation_steps,
                         ablation_slices=ablation_slices,
                         quick=args.quick, progress=lambda label: (bar.set_postfix_str(label), bar.update()),
                         device=device.type, cfg_prior=cfg_prior)

    results = build_results(run_, data, tasks, methods, prior, out=out, seed=args.seed, samples=args.samples,
                            quick=args.quick, command=getattr(args, "command_line", None), device=device.type,
                            cfg_prior=cfg_prior)
    json_path, md_path = write_results(out, results)
    _print_summary(results["summary"])
    if args.quick:  # repeated under the table, where the eye lands
        print("(--quick: pipeline check only; these figures mean nothing about quality)")
    for path in (json_path, md_path, *results["figures"]):
        print(path)
    return 0


def _check_cfg(methods, tasks, cfg_prior, modality: str, seed: int) -> None:
    """diffusion:cfg/<w> needs a conditional prior of every task's kind: said before any work starts."""
    if not any("cfg_scale" in m.overrides for m in methods):
        return
    from ..errors import SettingsError

    if cfg_prior is None:
        label = next(m.label for m in methods if "cfg_scale" in m.overrides)
        raise SettingsError(f"--methods: {label} needs a conditional prior: pass --cfg-model (one trained with "
                            "diffrecon train --conditional)")
    from ..diffusion.conditioning import check_task

    for task in tasks:
        settings = task.settings(seed)
        check_task(cfg_prior, modality, getattr(settings, "acceleration", None) if modality == "mri" else None)


def _print_summary(summary) -> None:
    for task, methods in summary.items():
        print(f"{task}:", file=sys.stderr)
        for method, stats in methods.items():
            psnr, ssim, sec = stats.get("psnr"), stats.get("ssim"), stats.get("seconds")
            if psnr is None:
                continue
            print(f"  {method:<28} PSNR {psnr['mean']:6.2f} ± {psnr['sd']:.2f}  SSIM {ssim['mean']:.4f}  "
                  f"{sec['mean']:7.2f} s/slice", file=sys.stderr)
