"""Which sampler gives an honest σ, and the split-conformal scale that makes it one.

On the **validation** subjects of :mod:`diffrecon.datasets` only (MRI: ``dipy-t1``,
``heudiconv-axasc35``; CT: the held-out slab of ``cranium``; test subjects are never
read here), every sampler setting is run with K posterior samples in one batch, as
``diffrecon reconstruct --simulate`` runs it, with the raw (uncalibrated) σ::

    python -m diffrecon.experiments.uncertainty sweep --task mri-4x --out resources/results/uncertainty
    python -m diffrecon.experiments.uncertainty sweep --task ct-views60 --out resources/results/uncertainty

prints and writes (``sweep_<task>.json``) per setting: PSNR of the mean, the raw ±2σ
coverage and Spearman(σ, |error|) over the object's pixels, the split-conformal scale
and the coverage it gives each slice when fitted on all *other* validation slices
(leave-one-slice-out: the honest estimate of what a new scan gets), seconds per slice,
and the out-of-domain score (:func:`diffrecon.diffusion.calibration.ood_score`).

The chosen setting (the modality's defaults for ``samples >= 2``, see
:mod:`diffrecon.modalities`) is then fitted on all validation slices and, with
``--write``, stored in the prior file's metadata (tensors untouched)::

    python -m diffrecon.experiments.uncertainty fit --task mri-4x --task ct-views60 --write

Run it once per prior change: a retrained prior needs its own scale.

What K samples cost against one (paired, in one process, so the ratio holds on a busy machine)::

    python -m diffrecon.experiments.uncertainty cost --size 128 --samples 8 --repeats 3

runs the MRI 4x task on a synthetic ``size``² slice, alternating K = ``samples`` with two
single runs: the default one result (a symmetric deterministic pair) and one sample of the
very sampler the K samples use; with plain DDS (the sampling cost itself) and with the task's
defaults (dds-tv: its hold-out and TV runs are paid once per slice, whatever K); every run
calibrated as a user's is (the σ model's cost included). Prints the median ratio of each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import datasets, modalities
from ..diffusion.calibration import (
    METADATA_KEY, OOD_MARGIN, store_entries, SAMPLER_FIELDS, SigmaCalibration, conformal_scale, coverage_curve,
    CURVE_LEVELS, intensity_distance, intensity_quantiles,
)
from ..diffusion.checkpoint import Prior, load_prior, tensor_bytes_digest
from ..diffusion.options import DiffusionOptions
from ..measurements import MeasurementSettings, ProblemSource
from ..reconstruct import DIFFUSION, DiffusionSetup, ReconRequest, default_prior_path, run_to_end

#: task key -> (modality, settings, validation datasets, slices per dataset)
TASKS: dict[str, tuple[str, dict[str, Any], tuple[str, ...], int]] = {
    "mri-4x": ("mri", {"acceleration": 4.0}, ("dipy-t1", "heudiconv-axasc35"), 3),
    "mri-8x": ("mri", {"acceleration": 8.0}, ("dipy-t1", "heudiconv-axasc35"), 3),
    "ct-views60": ("ct", {"views": 60}, ("cranium",), 3),
    "ct-views30": ("ct", {"views": 30}, ("cranium",), 3),
    # dose noise widens the spread: a noiseless task's σ threshold calls every low-dose head CT foreign
    "ct-dose0.25": ("ct", {"dose": 0.25}, ("cranium",), 3),
}

#: validation slices larger than this are block-averaged down to it (the shared CPU's budget; the
#: priors train on random pixel sizes 0.7-3 mm, and the test subjects are all at most 128²)
MAX_SIZE = 128

#: sampler settings compared by ``sweep`` (K samples each; the symmetric pair counts 2 per sample)
SETTINGS: dict[str, dict[str, Any]] = {
    "ddim-symmetric": {"sampler": "ddim", "eta": 0.0, "symmetric": True, "samples": 4},
    # one symmetric pair: what a run without --samples (the viewer's default) draws its σ from
    "ddim-pair": {"sampler": "ddim", "eta": 0.0, "symmetric": True, "samples": 1},
    "ddim-eta0.5": {"sampler": "ddim", "eta": 0.5, "symmetric": False, "samples": 8},
    "ddim-eta1": {"sampler": "ddim", "eta": 1.0, "symmetric": False, "samples": 8},
    "ddim-eta1-branch0.4": {"sampler": "ddim", "eta": 1.0, "symmetric": False, "samples": 8, "branch_t": 0.4},
    "ddim-eta1-branch0.5": {"sampler": "ddim", "eta": 1.0, "symmetric": False, "samples": 8, "branch_t": 0.5},
    "ddpm": {"sampler": "ddpm", "eta": 0.0, "symmetric": False, "samples": 8},
    "sde": {"sampler": "sde", "eta": 0.0, "symmetric": False, "samples": 8},
}


def validation_cases(task: str) -> list[tuple[str, Any, int]]:
    """``(dataset, volume, slice)`` for every validation slice of ``task`` (never a test subject)."""
    modality, _, names, per = TASKS[task]
    cases = []
    for name in names:
        if datasets.DATASETS[name].role == "test":  # belt and braces: the split is the point
            raise SystemExit(f"{name} is a test subject; calibration never reads one")
        volume = datasets.load_dataset(name)
        chosen = datasets.evaluation_slices(volume, name, count=per)
        if datasets.DATASETS[name].role == "train" and chosen.size > per:  # a held-out slab: spread evenly
            chosen = chosen[np.linspace(0, chosen.size - 1, per).round().astype(int)]
        small = _at_most(volume.select_slices(list(chosen)), MAX_SIZE)
        for i, s in enumerate(chosen):
            cases.append((f"{name}:{int(s)}", small, i))
    return cases


def _at_most(volume, size: int):
    """``volume`` block-averaged in-plane by the smallest whole factor that fits ``size``."""
    from dataclasses import replace

    factor = int(np.ceil(max(volume.data.shape[1:]) / size))
    if factor <= 1:
        return volume
    n, h, w = volume.data.shape
    h2, w2 = h // factor, w // factor
    data = volume.data[:, : h2 * factor, : w2 * factor].reshape(n, h2, factor, w2, factor).mean(axis=(2, 4))
    spacing = (volume.spacing[0], volume.spacing[1] * factor, volume.spacing[2] * factor)
    return replace(volume, data=data.astype(volume.data.dtype if np.iscomplexobj(volume.data) else np.float32),
                   spacing=spacing, affine=None, kspace=None, reference=None, source_ornt=None, source_affine=None)


def run_case(prior: Prior, task: str, options: DiffusionOptions, volume, s: int) -> dict[str, Any]:
    """One validation slice: raw σ, normalised errors over the object, PSNR, seconds, OOD score."""
    modality, values, _, _ = TASKS[task]
    chosen = modalities.get(modality)
    setup = DiffusionSetup(prior, options, baseline=chosen.hot_start_baseline, calibrate=False)
    settings = MeasurementSettings(modality=modality, seed=options.seed, **values)
    request = ReconRequest(volume, settings, [DIFFUSION], simulate=True, slices=[s], diffusion=setup, batch_size=1)
    started = time.perf_counter()
    outcome = run_to_end(request).outcomes[DIFFUSION]
    seconds = time.perf_counter() - started
    assert outcome.normalised_errors is not None and outcome.calibration is not None
    return {
        "psnr": float(outcome.metrics["psnr"]) if outcome.metrics else float("nan"),
        "coverage_2sigma": outcome.calibration["coverage_2sigma"],
        "spearman": outcome.calibration["spearman_std_error"],
        "ood_raw": float(outcome.out_of_domain["score"]) if outcome.out_of_domain else float("nan"),
        "seconds": seconds,
        "scores": outcome.normalised_errors,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Raw figures, the conformal scale on all slices, and leave-one-slice-out coverage."""
    scores = [r["scores"] for r in rows]
    everything = np.concatenate(scores)
    scale = conformal_scale(everything)
    held_out = []
    for i in range(len(scores)):
        rest = np.concatenate([s for j, s in enumerate(scores) if j != i]) if len(scores) > 1 else scores[i]
        k = conformal_scale(rest)
        held_out.append(float(np.mean(scores[i] <= 2.0 * k)))
    return {
        "slices": len(rows),
        "n_pixels": int(everything.size),
        "psnr": statistics.fmean(r["psnr"] for r in rows),
        "raw_coverage_2sigma": float(np.mean(everything <= 2.0)),
        "spearman": statistics.fmean(r["spearman"] for r in rows),
        "scale": scale,
        "loo_coverage_mean": statistics.fmean(held_out),
        "loo_coverage_min": min(held_out),
        "loo_coverage_max": max(held_out),
        "ood_scores": [r["ood_raw"] * scale for r in rows],
        "seconds_per_slice": statistics.fmean(r["seconds"] for r in rows),
        "curve_calibrated": coverage_curve(everything / scale),
    }


def _options(task: str, setting: dict[str, Any], seed: int, steps: int | None, expert: str | None = None
             ) -> DiffusionOptions:
    """The options a user's run of ``task`` with this sampler ``setting`` takes (the task's own
    defaults: e.g. 50 steps on noiseless CT views, 25 at dose), unless ``steps`` is given."""
    modality, values, _, _ = TASKS[task]
    overrides = {**setting, "seed": seed, "low_noise_expert": expert}
    if steps is not None:
        overrides["steps"] = steps
    return modalities.get(modality).diffusion_options(MeasurementSettings(modality=modality, **values), **overrides)


def _prior_for(task: str, path: str | None) -> Prior:
    return load_prior(path or default_prior_path(TASKS[task][0]))


def sweep(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in args.task:
        prior = _prior_for(task, args.model)
        cases = validation_cases(task)
        names = args.settings.split(",") if args.settings else list(SETTINGS)
        report: dict[str, Any] = {"task": task, "prior": str(prior.path), "cases": [n for n, _, _ in cases],
                                  "command": "python -m diffrecon.experiments.uncertainty "
                                             + " ".join(shlex.quote(a) for a in sys.argv[1:]), "settings": {}}
        for name in names:
            options = _options(task, SETTINGS[name], args.seed, args.steps)
            rows = []
            for dataset, volume, s in cases:
                rows.append(run_case(prior, task, options, volume, s))
                print(f"{task} {name} {dataset}:{s} psnr {rows[-1]['psnr']:.2f} cov {rows[-1]['coverage_2sigma']:.3f} "
                      f"rho {rows[-1]['spearman']:.3f} {rows[-1]['seconds']:.1f}s", file=sys.stderr, flush=True)
            summary = summarise(rows)
            summary["options"] = options.to_dict()
            report["settings"][name] = summary
            print(f"== {task} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()
                                                   if isinstance(v, float)), flush=True)
            (out / f"sweep_{task}.json").write_text(json.dumps(report, indent=1))


def intensity_calibration(task: str) -> tuple[list[float], list[float]]:
    """CT's intensity score: the validation slices' pooled working-domain quantiles, and each
    slice's distance to them (the threshold is :data:`OOD_MARGIN` times the largest)."""
    modality, values, _, _ = TASKS[task]
    per_slice = []
    for _, volume, s in validation_cases(task):
        source = ProblemSource(volume, MeasurementSettings(modality=modality, **values), slices=[s], simulate=True)
        for problem in source.batches(1):
            assert problem.reference is not None  # simulated: the scan is the reference
            reference = source.working_reference_crop(problem.reference)[:, 0]
            per_slice.append(intensity_quantiles(reference.abs().numpy() if reference.is_complex()
                                                 else reference.numpy()))
    pooled = [float(v) for v in np.mean(per_slice, axis=0)]
    scores = [float(np.mean(np.abs(np.asarray(q) - np.asarray(pooled)))) for q in per_slice]
    return pooled, scores


def allow_estimates(reference_scores: list[float], estimates: list[np.ndarray], reference: list[float]) -> list[float]:
    """Per validation slice, the larger of its reference's and its reconstruction's distance to
    the pooled reference intensities: the HU test then passes what the method itself makes of
    an in-domain scan (at low dose a noisier histogram than the scan's own)."""
    return [max(ref, intensity_distance(est, reference)) for ref, est in zip(reference_scores, estimates, strict=True)]


def calibration_entry(task: str, summary: dict[str, Any], options: dict[str, Any], subjects: list[str],
                      prior_path: Path, command: str, estimates: list[np.ndarray] | None = None) -> dict[str, Any]:
    """The metadata entry of one task's scale (a :class:`SigmaCalibration` plus its figures).
    ``estimates``: the validation slices' reconstructions (working domain), whose distance to the
    reference intensities the CT test also allows for (a low-dose estimate is noisier than its
    reference: a threshold from the references alone warned on the head CT's own slab)."""
    cal = SigmaCalibration(
        task=task, scale=summary["scale"],
        sampler={**{k: options[k] for k in SAMPLER_FIELDS}, "samples": options["samples"], "steps": options["steps"]},
        subjects=subjects, n_slices=summary["slices"], n_pixels=summary["n_pixels"],
        raw_coverage=summary["raw_coverage_2sigma"],
        ood_threshold=OOD_MARGIN * max(summary["ood_scores"]), ood_scores=summary["ood_scores"],
        fitted=datetime.date.today().isoformat(), command=command,
    )
    if TASKS[task][0] == "ct":  # HU are physical: a head CT's intensity distribution is a domain check
        cal.intensity_reference, cal.intensity_scores = intensity_calibration(task)
        if estimates:
            cal.intensity_scores = allow_estimates(cal.intensity_scores, estimates, cal.intensity_reference)
        cal.intensity_threshold = OOD_MARGIN * max(cal.intensity_scores)
    return {**cal.to_dict(), "loo_coverage_mean": summary["loo_coverage_mean"], "spearman": summary["spearman"],
            "curve": {"nominal": list(CURVE_LEVELS), "observed": summary["curve_calibrated"]},
            "weights_sha256": tensor_bytes_digest(prior_path)}


def fit(args: argparse.Namespace) -> None:
    """Fit the default setting's scale per task on all validation slices (or take a sweep's
    figures for one setting, ``--from-sweep``); write it into the prior with --write."""
    command = "python -m diffrecon.experiments.uncertainty " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    by_prior: dict[Path, dict[str, Any]] = {}
    for task in args.task:
        prior = _prior_for(task, args.model)
        if args.from_sweep:
            report = json.loads((Path(args.from_sweep) / f"sweep_{task}.json").read_text())
            summary = report["settings"][args.setting]
            options = summary["options"]
            subjects = sorted({n.split(":")[0] for n in report["cases"]})
        else:
            chosen = _options(task, {"samples": args.samples}, args.seed, args.steps)
            cases = validation_cases(task)
            summary = summarise([run_case(prior, task, chosen, volume, s) for _, volume, s in cases])
            options = chosen.to_dict()
            subjects = sorted({n.split(":")[0] for n, _, _ in cases})
        entry = calibration_entry(task, summary, options, subjects, Path(prior.path), command)
        by_prior.setdefault(Path(prior.path), {})[task] = entry
        print(json.dumps(entry, indent=1), flush=True)
    write_fits(by_prior, args.write, args.json)


def write_fits(by_prior: dict[Path, dict[str, Any]], write: bool, json_path: str | None) -> None:
    """Fitted calibration entries (per prior file, per task): into each prior's metadata with
    ``write``, and as JSON to ``json_path`` (``fit`` here and in ``sigma_features``)."""
    for path, entries in by_prior.items():
        if write:
            store_entries(path, entries)
            print(f"wrote {METADATA_KEY} ({', '.join(entries)}) into {path}", file=sys.stderr)
        if json_path:
            Path(json_path).write_text(json.dumps({str(path): entries}, indent=1))


def cost(args: argparse.Namespace) -> None:
    """Median wall-time ratio K samples / 1 sample on one synthetic slice, paired run by run."""
    from ..experiments.diffusion import _prior
    from ..io.volume import Volume

    prior = _prior(args.model, "mri")
    yy, xx = np.mgrid[-1:1:args.size * 1j, -1:1:args.size * 1j]
    phantom = ((xx**2 + yy**2 < 0.8) * 0.6 + (xx**2 + (yy / 0.5) ** 2 < 0.2) * 0.4).astype(np.float32)
    volume = Volume(phantom[None] * 800.0, (1.0, 1.0, 1.0), modality="MR")
    settings = MeasurementSettings(modality="mri", acceleration=4.0, seed=0)
    report: dict[str, Any] = {"size": args.size, "samples": args.samples, "threads": torch.get_num_threads()}
    mri = modalities.get("mri")
    for label, guidance in (("dds", "dds"), ("defaults", None)):
        if label not in args.variants.split(","):
            continue
        many = mri.diffusion_options(samples=args.samples, guidance=guidance)
        # one result as a user gets it without uncertainty (a symmetric deterministic pair), and one
        # sample of the very sampler the K samples use (one network item per step)
        runs = {"one_default": mri.diffusion_options(samples=1, guidance=guidance),
                "one_same_sampler": replace(many, samples=1, branch_t=1.0), "many": many}
        seconds: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for key, options in runs.items():
                setup = DiffusionSetup(prior, options)  # calibrated as a user's run is (the σ model's cost too)
                started = time.perf_counter()
                run_to_end(ReconRequest(volume, settings, [DIFFUSION], simulate=True, diffusion=setup))
                seconds[key].append(time.perf_counter() - started)
        entry: dict[str, Any] = {"seconds": seconds, "options_k": many.to_dict()}
        for key in ("one_default", "one_same_sampler"):
            ratios = [b / a for a, b in zip(seconds[key], seconds["many"])]
            entry[f"ratio_vs_{key}"] = {"pairs": ratios, "median": statistics.median(ratios)}
            print(f"{label}: K={args.samples} / {key} wall time, median of {args.repeats} pairs: "
                  f"{statistics.median(ratios):.2f} (pairs {', '.join(f'{r:.2f}' for r in ratios)}; "
                  f"{key} median {statistics.median(seconds[key]):.1f} s, K median "
                  f"{statistics.median(seconds['many']):.1f} s)", flush=True)
        report[label] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffrecon.experiments.uncertainty", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cost")
    c.add_argument("--size", type=int, default=128)
    c.add_argument("--samples", type=int, default=8)
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--model")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--json")
    c.add_argument("--variants", default="dds,defaults", help="dds (sampling alone), defaults (the task's)")
    for name in ("sweep", "fit"):
        p = sub.add_parser(name)
        p.add_argument("--task", action="append", choices=list(TASKS), required=True)
        p.add_argument("--model", help="prior file (default: the task's shipped prior)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--steps", type=int, help="sampling steps (default: the task's)")
        p.add_argument("--threads", type=int, default=1)
        if name == "sweep":
            p.add_argument("--settings", help=f"comma-separated subset of {', '.join(SETTINGS)}")
            p.add_argument("--out", default="resources/results/uncertainty")
        else:
            p.add_argument("--samples", type=int, default=8, help="K posterior samples (default 8)")
            p.add_argument("--write", action="store_true", help="store the scales in the prior files' metadata")
            p.add_argument("--json", help="also write the fitted entries here")
            p.add_argument("--from-sweep", help="a sweep's --out folder: take its figures for --setting, run nothing")
            p.add_argument("--setting", choices=list(SETTINGS), help="with --from-sweep: which setting")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"sweep": sweep, "fit": fit, "cost": cost}[args.command](args)


if __name__ == "__main__":
    main()
