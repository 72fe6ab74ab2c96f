"""Which per-pixel σ points at the errors? Candidate σ maps measured on validation slices.

The sample spread of the diffusion posterior ranks the errors only weakly (Spearman 0.32 on
the MRI 4x validation slices, 0.42 on the test ones). This experiment runs the task's
uncertainty setting **once** per validation slice (``dump``: the samples, the pre- and
post-blend means, the full-data TV estimate, the per-step Tweedie means and the reference,
one ``.npz`` per slice) and then scores candidate σ maps built from those arrays without
running the network again (``evaluate``)::

    python -m diffrecon.experiments.sigma_features dump --task mri-4x --out /tmp/sigma-features
    python -m diffrecon.experiments.sigma_features evaluate --task mri-4x --out /tmp/sigma-features \
        --json resources/results/uncertainty/sigma_features_mri-4x.json

Candidates (:class:`diffrecon.diffusion.calibration.SigmaModel`, working domain, magnitudes):
``plain`` the samples' std (the old σ); ``spread_s`` its variance Gaussian-smoothed;
``disagree`` adds ``w² (|diffusion mean| - |TV|)²`` (where a data-consistent classical estimate
and the prior disagree, one of them is wrong); ``_i`` a unit-free intensity factor. For each,
the mean per-slice Spearman(σ, |error|) over the object's pixels and the leave-one-slice-out
coverage of its split-conformal ±2σ (what a new scan gets). ``fit`` then writes the chosen
model and its scale into the prior (as ``uncertainty fit`` does)::

    python -m diffrecon.experiments.sigma_features fit --task mri-4x --out /tmp/sigma-features \
        --model-params '{"disagree": 1, "smooth": 2, "intensity": 0.25}' --write
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..diffusion import reconstruction as recon_module
from ..diffusion.experts import resolve_expert_path
from ..diffusion.calibration import (
    OOD_MARGIN, SigmaModel, conformal_scale, coverage_curve, holdout_score, object_mask, ood_score,
)
from ..diffusion.uncertainty import calibration
from ..measurements import MeasurementSettings, ProblemSource
from ..reconstruct import solve
from ..diffusion.checkpoint import tensor_bytes_digest
from .uncertainty import SETTINGS, TASKS, _options, _prior_for, validation_cases


def _mag(x: torch.Tensor) -> np.ndarray:
    x = x.detach()
    return (x.abs() if x.is_complex() else x).double().numpy()


def dump_case(prior, task: str, options, volume, s: int, path: Path) -> None:
    """Run one slice; save what the candidate σ maps are built from."""
    modality, values, _, _ = TASKS[task]
    settings = MeasurementSettings(modality=modality, seed=options.seed, **values)
    source = ProblemSource(volume, settings, slices=[s], simulate=True)
    problem = next(source.batches(1))
    crop = source.working_reference_crop
    captured: dict[str, torch.Tensor] = {}
    original = recon_module._summarise

    def keep_samples(samples, n_samples, batch):  # instrumentation: the last step's samples
        captured["samples"] = samples.detach().clone()
        return original(samples, n_samples, batch)

    recon_module._summarise = keep_samples
    means = []
    try:
        with torch.inference_mode():
            tv = solve("tv", problem)
        # the reconstruction's own steps; a blend's hold-out run follows them (its samples are not these)
        n_main = recon_module.make_sampler(options, prior.schedule).n_steps
        for frame in recon_module.stream_reconstruction(problem, prior, options):
            last = frame
            if frame.step <= n_main:
                means.append(_mag(crop(frame.x0))[0, 0])
                pre_blend = captured["samples"]
    finally:
        recon_module._summarise = original
    n = options.samples * (2 if options.symmetric else 1)
    samples = pre_blend.reshape(n, 1, *pre_blend.shape[1:])[:, 0]
    prior_mean = samples.mean(dim=0, keepdim=True)
    if last.baseline is not None:  # the estimate a blend used: what a run's σ model is given too
        tv = last.baseline
    assert problem.reference is not None and last.variance is not None  # simulated, K > 1
    np.savez_compressed(
        path, reference=_mag(crop(problem.reference))[0, 0], mean=_mag(crop(last.x0))[0, 0],
        prior_mean=_mag(crop(prior_mean))[0, 0], variance=crop(last.variance).real.double().numpy()[0, 0],
        tv=_mag(crop(tv))[0, 0], samples=np.stack([_mag(crop(x[None]))[0, 0] for x in samples]),
        step_means=np.stack(means[-6:]), blend=float((last.adaptation or {}).get("blend_weight", 1.0)),
        adaptation=json.dumps(last.adaptation or {}))


def dump(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in args.task:
        prior = _prior_for(task, args.model)
        options = _options(task, SETTINGS[args.setting], args.seed, args.steps, args.low_noise_expert)
        for name, volume, s in validation_cases(task):
            path = out / f"{task}_{args.setting}_{name.replace(':', '-')}.npz"
            if path.exists():
                continue
            dump_case(prior, task, options, volume, s, path)
            print(f"wrote {path}", file=sys.stderr, flush=True)


#: candidate σ models (calibration.SigmaModel fields); "plain" is the samples' spread alone
CANDIDATES: dict[str, dict[str, float]] = {
    "plain": {},
    **{f"spread_s{s:g}": {"smooth": s} for s in (1.0, 2.0, 3.0)},
    **{f"disagree{w:g}_s{s:g}": {"disagree": w, "smooth": s} for w in (0.5, 1.0, 2.0) for s in (1.0, 2.0, 3.0)},
    **{f"disagree{w:g}_s{s:g}_i{i:g}": {"disagree": w, "smooth": s, "intensity": i}
       for w in (0.5, 1.0) for s in (1.0, 2.0, 3.0) for i in (0.125, 0.25, 0.5)},
}


def _load(task: str, setting: str, folder: str) -> tuple[list[Path], list[dict[str, Any]]]:
    files = sorted(Path(folder).glob(f"{task}_{setting}_*.npz"))
    if not files:
        raise SystemExit(f"no dumps for {task} {setting} in {folder}: run dump first")
    return files, [dict(np.load(f)) for f in files]


def score_model(cases: list[dict[str, Any]], model: SigmaModel) -> dict[str, Any]:
    """Per-slice Spearman, the conformal scale on all slices, leave-one-slice-out coverage."""
    rhos, scores, sds = [], [], []
    for c in cases:
        mask = object_mask(c["reference"])
        sd = np.sqrt(model.variance(c["variance"], c["prior_mean"], c["tv"]))
        sds.append(sd)
        rhos.append(calibration(c["reference"], c["mean"], sd, mask=mask)["spearman_std_error"])
        scores.append(np.abs(c["mean"] - c["reference"])[mask] / np.maximum(sd[mask], 1e-12))
    held = []
    for i in range(len(scores)):
        rest = [x for j, x in enumerate(scores) if j != i] or scores
        held.append(float(np.mean(scores[i] <= 2.0 * conformal_scale(np.concatenate(rest)))))
    everything = np.concatenate(scores)
    scale = conformal_scale(everything)
    return {"sigma_model": model.to_dict(), "spearman_mean": statistics.fmean(rhos), "spearman": rhos,
            "scale": scale, "loo_coverage": held, "n_pixels": int(everything.size),
            "raw_coverage_2sigma": float(np.mean(everything <= 2.0)),
            "ood_scores": [ood_score(c["mean"], scale * sd) for c, sd in zip(cases, sds)],
            "curve_calibrated": coverage_curve(everything / scale)}


def oracle_spearman(cases: list[dict[str, Any]], smooth: tuple[float, ...] = (1.0, 2.0, 3.0)) -> dict[float, float]:
    """Mean per-slice Spearman of the *true* squared error, Gaussian-blurred, with |error|:
    what a σ as smooth as the candidates' (``smooth`` 2) could reach at best. Part of each
    pixel's error is the reference's own noise and fine detail, which nothing predicts."""
    from scipy.ndimage import gaussian_filter

    out = {}
    for s in smooth:
        rhos = []
        for c in cases:
            mask = object_mask(c["reference"])
            err = np.abs(c["mean"] - c["reference"])
            rhos.append(calibration(c["reference"], c["mean"], np.sqrt(gaussian_filter(err**2, s)),
                                    mask=mask)["spearman_std_error"])
        out[s] = statistics.fmean(rhos)
    return out


def evaluate(args: argparse.Namespace) -> None:
    report: dict[str, Any] = {}
    for task in args.task:
        files, cases = _load(task, args.setting, args.out)
        rows = {}
        for label, params in CANDIDATES.items():
            row = score_model(cases, SigmaModel.from_dict(params))
            rows[label] = {k: v for k, v in row.items() if k != "curve_calibrated"}
            held = row["loo_coverage"]
            print(f"{task} {args.setting} {label:24s} rho {row['spearman_mean']:.3f} "
                  f"({' '.join(f'{r:.2f}' for r in row['spearman'])}) loo cov {statistics.fmean(held):.3f} "
                  f"({min(held):.3f}-{max(held):.3f}) scale {row['scale']:.2f}", flush=True)
        best = max(rows, key=lambda k: rows[k]["spearman_mean"])
        print(f"{task} {args.setting}: best by validation Spearman: {best}", flush=True)
        bounds = oracle_spearman(cases)
        print(f"{task} {args.setting}: bound, no σ can know it: the squared error itself blurred by "
              + ", ".join(f"{s:g} px rho {r:.3f}" for s, r in bounds.items()), flush=True)
        report[task] = {"setting": args.setting, "cases": [f.name for f in files], "candidates": rows, "best": best,
                        "oracle_blurred_error_spearman": {f"{s:g}": r for s, r in bounds.items()}}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def fit(args: argparse.Namespace) -> None:
    """The chosen σ model's scale from the dumps, written into the prior like uncertainty fit."""
    from .uncertainty import calibration_entry, write_fits

    command = "python -m diffrecon.experiments.sigma_features " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    model = SigmaModel.from_dict(json.loads(args.model_params))
    entries: dict[Path, dict[str, Any]] = {}
    for task in args.task:
        prior = _prior_for(task, args.model)
        files, cases = _load(task, args.setting, args.out)
        row = score_model(cases, model)
        summary = {**row, "slices": len(cases), "spearman": row["spearman_mean"],
                   "loo_coverage_mean": statistics.fmean(row["loo_coverage"])}
        options = _options(task, SETTINGS[args.setting], args.seed, args.steps, args.low_noise_expert).to_dict()
        subjects = sorted({f.stem.split("_", 2)[2].rsplit("-", 1)[0] for f in files})
        # a run with a low-noise expert is calibrated as the pair: its entry goes into the expert's file
        target = resolve_expert_path(args.low_noise_expert) if args.low_noise_expert else Path(prior.path)
        entry = calibration_entry(task, summary, options, subjects, target, command,
                                  estimates=[c["mean"] for c in cases])
        entry["sigma_model"] = model.to_dict()
        if args.low_noise_expert:  # the pair's scale: the prior whose last steps the expert takes
            entry["with_prior"] = {"path": Path(prior.path).name, "weights_sha256": tensor_bytes_digest(prior.path)}
        scored = [holdout_score([json.loads(str(c["adaptation"]))]) for c in cases if "adaptation" in c]
        held = [h for h in scored if h is not None]
        if held and len(held) == len(cases):  # dds-tv's hold-out ran on every slice (MRI)
            entry["holdout_scores"] = held
            entry["holdout_threshold"] = OOD_MARGIN * max(held)
        entry["spearman_per_slice"] = row["spearman"]
        entries.setdefault(target, {})[task] = entry
        print(json.dumps({k: v for k, v in entry.items() if k not in ("intensity_reference",)}, indent=1), flush=True)
    write_fits(entries, args.write, args.json)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffrecon.experiments.sigma_features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("dump", "evaluate", "fit"))
    parser.add_argument("--task", action="append", choices=list(TASKS), required=True)
    parser.add_argument("--setting", default="ddim-eta1", choices=list(SETTINGS))
    parser.add_argument("--out", default="/tmp/sigma-features")
    parser.add_argument("--model")
    parser.add_argument("--low-noise-expert", help="the prior's low-noise expert (fit: written into its file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--model-params", default="{}", help="fit: the SigmaModel fields as JSON")
    parser.add_argument("--write", action="store_true", help="fit: store the entry in the prior's metadata")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"dump": dump, "evaluate": evaluate, "fit": fit}[args.command](args)


if __name__ == "__main__":
    main()
