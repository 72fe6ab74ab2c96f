"""σ of whole-volume runs: the factor on the single-slice scale that restores its coverage.

A whole-volume MRI or CT run ties each slice to its neighbours (the through-plane TV term in
the data-consistency step, :func:`diffrecon.diffusion.reconstruction.through_plane_term`). Both
members of the symmetric pair are pulled towards the same neighbours, so their spread narrows,
and the split-conformal scale fitted on single slices (:mod:`.sigma_features`) under-covers:
sessions 14-15 measured 84-92 % within ±2σ on MRI volumes and 85 % on a CT volume, against
the 95 % it states. This experiment runs the task's default reconstruction, as a user's
``diffrecon reconstruct`` of a volume does (the bundled low-noise expert, the slice scale
applied), on contiguous slabs of the task's **validation** subjects (never a test one), and
fits the conformal factor ``f`` on the pooled normalised errors, so that ``±2 f σ`` covers
95 % of the object's pixels (leave-one-slice-out coverage reported)::

    python -m diffrecon.experiments.volume_sigma --task mri-4x [--samples 8] --json fit.json [--write]

``--evaluate NAME:FIRST-LAST ...`` runs the same default whole-volume run on any subjects' slabs
(the test subjects, once, after the fit) and reports ±2σ coverage with the stored factor and with
the slice scale alone (the same run's errors over σ without the factor).

With ``--write`` the factor is stored in the entry the run used (``volume_factor`` of the
:class:`~diffrecon.diffusion.calibration.SigmaCalibration`, in the expert's file for a pair),
and every whole-volume run applies it (:func:`diffrecon.run_summary.resolve_calibration`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import datasets
from ..diffusion.calibration import METADATA_KEY, calibrations, conformal_scale, lookup
from ..diffusion.checkpoint import load_prior, read_metadata, tensor_bytes_digest, update_metadata
from ..diffusion.experts import resolve_expert_path
from ..measurements import MeasurementSettings
from ..reconstruct import DIFFUSION, ReconRequest, default_prior_path, diffusion_setup, run_to_end, with_bundled_expert
from ..run_summary import through_plane_is_on
from .uncertainty import MAX_SIZE, TASKS, _at_most


def validation_slabs(task: str, count: int) -> list[tuple[str, Any, list[int]]]:
    """``(dataset, volume, slices)``: up to ``count`` contiguous slices from the middle of each
    validation subject's scored slices (a training subject's held-out slab), block-averaged to
    at most :data:`MAX_SIZE` in-plane as the single-slice fits are; subjects of one slice are
    skipped (no neighbours, no through-plane term)."""
    _, _, names, _ = TASKS[task]
    slabs = []
    for name in names:
        if datasets.DATASETS[name].role == "test":  # the split is the point
            raise SystemExit(f"{name} is a test subject; calibration never reads one")
        volume = datasets.load_dataset(name)
        scored = datasets.evaluation_slices(volume, name)
        if scored.size < 2:
            continue
        middle = int(scored[scored.size // 2])
        lo = max(int(scored[0]), middle - count // 2)
        chosen = [s for s in range(lo, lo + count) if s <= int(scored[-1])]
        slabs.append((name, _at_most(volume.select_slices(chosen), MAX_SIZE), chosen))
    if not slabs:
        raise SystemExit(f"{task}: no validation subject has two or more slices")
    return slabs


def per_slice_scores(outcome: Any) -> list[np.ndarray]:
    """|error| / σ over each slice's object pixels: the run's own normalised errors (working
    domain, the object above :data:`~diffrecon.run_summary.CALIBRATION_OBJECT_FRACTION` of the
    slab's peak), split where each slice's pixels end."""
    assert outcome.normalised_errors is not None and outcome.object_pixels is not None  # a run with a reference
    return np.split(outcome.normalised_errors, np.cumsum(outcome.object_pixels)[:-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=list(TASKS))
    parser.add_argument("--model", help="the prior (default: the modality's bundled prior)")
    parser.add_argument("--low-noise-expert", default=None,
                        help="default: the bundled expert where the task runs it; '' for none")
    parser.add_argument("--samples", type=int, default=1,
                        help="K posterior samples, as --samples asks (default 1: one symmetric pair)")
    parser.add_argument("--slices", type=int, default=8, help="contiguous slices per validation subject (default 8)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices solved together (reconstruct's default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--evaluate", nargs="+", metavar="NAME:FIRST-LAST",
                        help="instead of fitting: coverage of these subjects' slabs (e.g. someones-t1:20-35)")
    parser.add_argument("--json", help="write the fit (or the evaluation) here")
    parser.add_argument("--write", action="store_true", help="store the factor in the calibration entry the run used")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m diffrecon.experiments.volume_sigma " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    modality, values, _, _ = TASKS[args.task]
    prior = load_prior(args.model or default_prior_path(modality))
    settings = MeasurementSettings(modality=modality, seed=args.seed, **values)
    setup = diffusion_setup(prior, modality, settings, seed=args.seed, samples=args.samples,
                            low_noise_expert=args.low_noise_expert)
    setup.options = with_bundled_expert(setup.options, prior.path, settings)
    if args.evaluate:
        evaluate(setup, settings, args.evaluate, args.batch_size, args.json, command)
        return

    scores: list[np.ndarray] = []
    rows = []
    for name, volume, chosen in validation_slabs(args.task, args.slices):
        request = ReconRequest(volume, settings, [DIFFUSION], simulate=True, diffusion=setup,
                               batch_size=args.batch_size)
        assert through_plane_is_on(request), "a volume run of the defaults ties its slices together"
        started = time.perf_counter()
        run = run_to_end(request)
        outcome = run.outcomes[DIFFUSION]
        cal = outcome.sigma_calibration
        if cal is None or outcome.metrics is None or outcome.calibration is None:
            raise SystemExit(f"{args.task}: the run's σ is uncalibrated; fit the single-slice scale first "
                             "(sigma_features), then the factor against it")
        stored = float(cal.get("volume_factor", 1.0))  # a refit: against the slice scale, as the first fit
        slab = [s * stored for s in per_slice_scores(outcome)]
        scores += slab
        slice_scale = float(cal["scale"]) / stored
        rows.append({"subject": name, "slices": chosen, "size": list(volume.data.shape),
                     "psnr": outcome.metrics["psnr"], "coverage_2sigma_slice_scale": float(np.mean(np.concatenate(slab) <= 2)),
                     "spearman": outcome.calibration["spearman_std_error"],
                     "warning": (outcome.out_of_domain or {}).get("warning"),
                     "seconds": time.perf_counter() - started})
        print(f"{name} {chosen[0]}-{chosen[-1]}: {rows[-1]['psnr']:.2f} dB, ±2σ "
              f"{rows[-1]['coverage_2sigma_slice_scale']:.1%} with the slice scale x{slice_scale:.2f}, "
              f"{rows[-1]['seconds']:.0f} s", flush=True)

    factor = conformal_scale(np.concatenate(scores))
    held = []
    for i in range(len(scores)):
        rest = np.concatenate([s for j, s in enumerate(scores) if j != i])
        held.append(float(np.mean(scores[i] <= 2.0 * conformal_scale(rest))))
    pooled = np.concatenate(scores)
    fit = {"task": args.task, "factor": factor, "slice_scale": slice_scale, "volume_scale": factor * slice_scale,
           "coverage_with_slice_scale": float(np.mean(pooled <= 2.0)),
           "loo_coverage_mean": statistics.fmean(held), "loo_coverage_min": min(held), "loo_coverage_max": max(held),
           "n_slices": len(scores), "n_pixels": int(pooled.size), "batch_size": args.batch_size,
           "options": setup.options.to_dict(), "volumes": rows, "fitted": datetime.date.today().isoformat(),
           "command": command}
    print(json.dumps({k: v for k, v in fit.items() if k not in ("options", "volumes")}, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(fit, indent=1))
    if args.write:
        store_factor(prior, setup.options, settings, fit)


def evaluate(setup: Any, settings: MeasurementSettings, specs: list[str], batch_size: int, json_path: str | None,
             command: str) -> None:
    """Coverage of ±2σ on whole-volume default runs of ``NAME:FIRST-LAST`` slabs, with the
    stored volume factor and with the slice scale alone."""
    results = {}
    for spec in specs:
        name, _, span = spec.partition(":")
        first, last = (int(v) for v in span.split("-"))
        volume = datasets.load_dataset(name).select_slices(list(range(first, last + 1)))
        started = time.perf_counter()
        run = run_to_end(ReconRequest(volume, settings, ["tv", DIFFUSION], simulate=True, diffusion=setup,
                                      batch_size=batch_size))
        outcome = run.outcomes[DIFFUSION]
        assert outcome.sigma_calibration is not None and outcome.calibration is not None
        factor = float(outcome.sigma_calibration.get("volume_factor", 1.0))
        per_slice = per_slice_scores(outcome)
        pooled = np.concatenate(per_slice)
        results[spec] = {
            "psnr": {m: (o.metrics or {}).get("psnr") for m, o in run.outcomes.items()},
            "scale": outcome.sigma_calibration["scale"], "volume_factor": factor,
            "coverage_2sigma": float(np.mean(pooled <= 2.0)),
            "coverage_2sigma_slice_scale": float(np.mean(pooled * factor <= 2.0)),
            "coverage_per_slice_min_max": [min(float(np.mean(p <= 2.0)) for p in per_slice),
                                           max(float(np.mean(p <= 2.0)) for p in per_slice)],
            "spearman": outcome.calibration["spearman_std_error"],
            "warning": (outcome.out_of_domain or {}).get("warning"), "seconds": time.perf_counter() - started}
        r = results[spec]
        print(f"{spec}: ±2σ {r['coverage_2sigma']:.1%} (slice scale alone {r['coverage_2sigma_slice_scale']:.1%}), "
              f"Spearman {r['spearman']:.2f}, {'warned' if r['warning'] else 'not warned'}; diffusion "
              f"{r['psnr'][DIFFUSION]:.2f} dB, TV {r['psnr']['tv']:.2f}", flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps({"command": command, "options": setup.options.to_dict(),
                                               "results": results}, indent=1))


def store_factor(prior: Any, options: Any, settings: MeasurementSettings, fit: dict[str, Any]) -> None:
    """Write ``fit``'s factor into the calibration entry this task's run uses (the weights stay
    byte-identical)."""
    path = Path(resolve_expert_path(options.low_noise_expert)) if options.low_noise_expert else Path(prior.path)
    metadata = read_metadata(path)
    cal, borrowed = lookup(metadata, settings.modality, settings, options)
    if cal is None or borrowed:
        raise SystemExit(f"{path.name}: no own calibration entry for {fit['task']} to attach the factor to")
    table = dict(metadata[METADATA_KEY])
    key = next(k for k, c in calibrations(metadata).items() if c == cal)
    table[key] = {**table[key], "volume_factor": fit["factor"],
                  "volume_fit": {k: fit[k] for k in ("loo_coverage_mean", "coverage_with_slice_scale", "n_slices",
                                                     "n_pixels", "batch_size", "fitted", "command")}
                  | {"subjects": sorted({r["subject"] for r in fit["volumes"]})}}
    before = tensor_bytes_digest(path)
    update_metadata(path, {METADATA_KEY: table})
    assert tensor_bytes_digest(path) == before
    print(f"wrote volume_factor {fit['factor']:.3f} into {path.name} ({key})", file=sys.stderr)


if __name__ == "__main__":
    main()
