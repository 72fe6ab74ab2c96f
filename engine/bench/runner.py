"""Run every method on every task, data set and slice; keep per-slice scores and a few images.

Each slice is its own run of the run API (:class:`~diffrecon.reconstruct.ReconRequest` on
one slice), so every method sees the same simulated measurements (the seed and slice
index fix the mask and noise) and its seconds are the seconds of that slice. Nothing here writes files except
the per-case volumes (``cases/<case>/<method>.nii.gz``), which a reader study can be
built from (``diffrecon study create --cases OUT``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import modalities
from ..datasets import DATASETS, evaluation_slices, load_dataset
from ..errors import SettingsError
from ..io import load_volume, save_volume
from ..io.loader import file_suffix
from ..io.volume import Volume
from ..measurements import MeasurementSettings
from ..slices import slice_indices
from ..reconstruct import (DIFFUSION, DiffusionSetup, ReconRequest, ReconRun, diffusion_setup, run_to_end,
                           with_bundled_expert)
from .tasks import MethodSpec, Task

INPUT = "input"  # the column of the unreconstructed input (zero-filled / FBP / noisy image)
GROUND_TRUTH = "ground-truth"


@dataclass
class BenchData:
    """A ground-truth scan and the slices the bench scores on."""

    label: str
    volume: Volume
    slices: list[int]
    held_out: bool  # no shipped prior trained on these slices
    role: str = "user scan"  # a dataset's role: test | validation | train (its held-out slab)
    subject: str = ""


#: slices scored per test or validation subject when --slices is not given (spread evenly)
SLICES_PER_SUBJECT = 8


def load_bench_data(spec: str, modality: str, slices: str | None = None, quick: bool = False,
                    per_subject: int = SLICES_PER_SUBJECT) -> BenchData:
    """A dataset name (a test/validation subject's object slices, or a training subject's
    held-out slab) or a scan path (all its slices)."""
    role, subject = "user scan", ""
    if spec in DATASETS:
        volume = load_dataset(spec)
        chosen = [int(s) for s in evaluation_slices(volume, spec, count=per_subject)]
        held_out = True
        label = spec
        role, subject = DATASETS[spec].role, DATASETS[spec].subject
    else:
        volume = load_volume(spec)
        chosen = list(range(volume.n_slices))
        held_out = False
        name = Path(spec).name
        label = name[: len(name) - len(file_suffix(Path(spec)))] or name
    if modality == "ct" and volume.units != "HU":
        raise SettingsError(f"{label}: CT benchmarks need a CT scan in Hounsfield units")
    if slices:
        picked = slice_indices(slices, volume.n_slices)
        if held_out and role == "train" and not set(picked.tolist()) <= set(chosen):
            raise SettingsError(f"{label}: slices {slices} leave the held-out block {chosen[0]}-{chosen[-1]} "
                                f"that the shipped priors never saw; pick slices inside it")
        chosen = [int(s) for s in picked]
    if quick:
        chosen = chosen[len(chosen) // 2 : len(chosen) // 2 + 2]  # two middle slices
    return BenchData(label, volume, chosen, held_out, role, subject)


@dataclass
class SliceImages:
    """What the image grid of one slice needs, in the scan's units."""

    task: str
    data: str
    slice: int
    ground_truth: np.ndarray
    images: dict[str, np.ndarray]  # method label (and INPUT) -> image
    std: np.ndarray | None  # the (first) diffusion method's per-pixel std
    std_method: str | None
    metrics: dict[str, dict[str, float]]
    units: str
    window: tuple[float, float] | None  # (level, width) of the scan, if it has one


@dataclass
class BenchRun:
    """Per-slice scores (one row per task x data x slice x method) and the grid images."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    grids: list[SliceImages] = field(default_factory=list)
    ablation: list[dict[str, Any]] = field(default_factory=list)
    case_dirs: list[Path] = field(default_factory=list)
    #: per task and diffusion method, the options as they ran (a task's own defaults and expert)
    options: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def _diffusion_setups(methods: list[MethodSpec], prior, settings: MeasurementSettings, seed: int, samples: int,
                      quick: bool, cfg_prior=None) -> dict[str, DiffusionSetup]:
    """Each diffusion method's prior and options for the task ``settings`` (a task's own
    defaults: CT's noiseless views take more steps than its low-dose tasks)."""
    setups = {}
    for m in methods:
        if not m.is_diffusion:
            continue
        overrides = {"samples": samples, "seed": seed, **m.overrides}
        if quick:
            overrides["steps"] = min(int(overrides.get("steps", 25)), 3)
        chosen = prior
        if "cfg_scale" in overrides:  # classifier-free guidance runs the conditional prior
            if cfg_prior is None:
                raise SettingsError(f"--methods: {m.label} needs a conditional prior: pass --cfg-model "
                                    "(one trained with diffrecon train --conditional)")
            chosen = cfg_prior
        if chosen is None:
            continue  # run_bench says that the diffusion method needs a prior
        setups[m.label] = diffusion_setup(chosen, settings.modality, settings, **overrides)
    return setups


def run_bench(
    data: list[BenchData],
    tasks: list[Task],
    methods: list[MethodSpec],
    *,
    prior=None,
    seed: int = 0,
    samples: int = 1,
    grid_slices: int = 2,
    cases_dir: Path | None = None,
    ablation_steps: list[int] | None = None,
    ablation_slices: int = 2,
    quick: bool = False,
    progress: Callable[[str], object] | None = None,
    device: str = "cpu",
    cfg_prior=None,
) -> BenchRun:
    """Score ``methods`` on every task x data x slice; ``progress(label)`` after each slice.

    ``grid_slices`` slices of each task (from the first data set) keep their images for
    the PNG grids. ``ablation_steps`` reruns the first diffusion method of the first task
    at each step count, on the first ``ablation_slices`` slices of the first data set
    (1000 steps cost 40x the 25 of the main run). Every method runs on ``device``.
    """
    modality = tasks[0].modality
    if any(m.is_diffusion and "cfg_scale" not in m.overrides for m in methods) and prior is None:
        raise SettingsError("the diffusion method needs a prior (pass --model or install the default one)")
    classical = [m.base for m in methods if not m.is_diffusion]
    show_input = not input_is_a_method(modality, methods)
    run = BenchRun()
    for task in tasks:
        settings = task.settings(seed)
        setups = _diffusion_setups(methods, prior, settings, seed, samples, quick, cfg_prior)
        run.options[task.label] = {label: with_bundled_expert(setup.options, setup.prior.path, settings).to_dict()
                                   for label, setup in setups.items()}
        for d_index, d in enumerate(data):
            for s_index, s in enumerate(d.slices):
                outcomes: dict[str, tuple[ReconRun, str]] = {}
                if classical:
                    result = run_to_end(_one_slice(d, settings, s, classical, device=device))
                    for m in methods:
                        if not m.is_diffusion:
                            outcomes[m.label] = (result, m.base)
                for label, setup in setups.items():
                    outcomes[label] = (run_to_end(_one_slice(d, settings, s, [DIFFUSION], setup, device=device)), DIFFUSION)
                first = next(iter(outcomes.values()))[0]
                rows = _rows(task, d, s, first, outcomes, show_input)
                run.rows += rows
                keep_images = d_index == 0 and s_index < grid_slices
                if keep_images or cases_dir is not None:
                    images = _slice_images(task, d, s, first, outcomes, rows, show_input)
                    if keep_images:
                        run.grids.append(images)
                    if cases_dir is not None:
                        run.case_dirs.append(_write_case(cases_dir, task, d, s, images, outcomes))
                if progress is not None:
                    progress(f"{task.label} {d.label}:{s}")
    if ablation_steps:
        first_setups = _diffusion_setups(methods, prior, tasks[0].settings(seed), seed, samples, quick, cfg_prior)
        run.ablation = _ablation(data[0], tasks[0], methods, first_setups, ablation_steps, seed, quick, progress,
                                 slices=data[0].slices[: max(1, ablation_slices)], device=device)
    return run


def _one_slice(d: BenchData, settings: MeasurementSettings, s: int, methods: list[str],
               diffusion: DiffusionSetup | None = None, *, device: str = "cpu") -> ReconRequest:
    """The run of ``methods`` on slice ``s`` of ``d``, simulated."""
    return ReconRequest(d.volume, settings, methods, simulate=True, slices=[s], diffusion=diffusion, batch_size=1,
                        device=device)


def input_is_a_method(modality: str, methods: list[MethodSpec]) -> bool:
    """MRI's input image *is* the zero-filled method: show it once."""
    input_method = modalities.get(modality).input_method
    return input_method is not None and any(m.base == input_method for m in methods)


def _rows(task: Task, d: BenchData, s: int, first: ReconRun, outcomes, show_input: bool) -> list[dict[str, Any]]:
    base = {"task": task.label, "data": d.label, "slice": int(s)}
    rows = [{**base, "method": INPUT, **_metrics(first.observed_metrics), "seconds": 0.0}] if show_input else []
    for label, (result, name) in outcomes.items():
        o = result.outcomes[name]
        row = {**base, "method": label, **_metrics(o.metrics), "seconds": round(o.seconds, 4)}
        if o.calibration is not None:
            row["coverage_2sigma"] = o.calibration.get("coverage_2sigma")
            row["spearman_std_error"] = o.calibration.get("spearman_std_error")
            if "curve" in o.calibration:  # observed coverage at the nominal levels (the calibration curve)
                row["coverage_curve"] = o.calibration["curve"]["observed"]
        if o.variance is not None:
            row["sigma_scale"] = (o.sigma_calibration or {}).get("scale")
            if o.out_of_domain is not None:
                row["ood_score"] = o.out_of_domain.get("score")
                row["ood_warning"] = bool(o.out_of_domain.get("warning"))
                for key in ("holdout_score", "intensity_score"):  # the other out-of-domain scores, when run
                    if o.out_of_domain.get(key) is not None:
                        row[f"ood_{key}"] = o.out_of_domain[key]
        rows.append(row)
    return rows


def _metrics(m: dict[str, float] | None) -> dict[str, float]:
    if m is None:
        return {}
    return {k: float(m[k]) for k in ("psnr", "ssim", "nmse", "mae") if k in m}


def _slice_images(task, d: BenchData, s: int, first: ReconRun, outcomes, rows, show_input: bool) -> SliceImages:
    raw = d.volume.data[s]
    # MR images may be complex (magnitude shown); CT keeps its sign (air is -1000 HU).
    gt = (np.abs(raw) if np.iscomplexobj(raw) else raw).astype(np.float32)
    images = {INPUT: first.observed[0]} if show_input else {}
    std, std_method = None, None
    for label, (result, name) in outcomes.items():
        o = result.outcomes[name]
        images[label] = o.volume[0]
        if o.variance is not None and std is None:
            std, std_method = np.sqrt(np.clip(o.variance[0], 0, None)), label
    metrics = {r["method"]: {k: r[k] for k in ("psnr", "ssim") if k in r} for r in rows}
    return SliceImages(task.label, d.label, int(s), gt, images, std, std_method, metrics, d.volume.units,
                       d.volume.window)


def case_name(task: Task, d: BenchData, s: int) -> str:
    data = "".join(c if c.isalnum() else "-" for c in d.label)
    return f"{task.slug}_{data}_{s:03d}"


def _write_case(cases_dir: Path, task: Task, d: BenchData, s: int, images: SliceImages, outcomes) -> Path:
    """One folder per case: ground truth, input and every method as single-slice NIfTI."""
    folder = cases_dir / case_name(task, d, s)
    one = d.volume.select_slices([s])
    device = next(iter(outcomes.values()))[0].provenance.get("device") if outcomes else None
    provenance_base = {"task": task.label, "data": d.label, "slice": int(s), "device": device}
    save_volume(one.derived(images.ground_truth[None]), folder / f"{GROUND_TRUTH}.nii.gz",
                provenance={**provenance_base, "method": GROUND_TRUTH})
    for label, image in images.images.items():
        method_slug = "".join(c if c.isalnum() or c in "-." else "-" for c in label)
        model = None
        if label in outcomes:
            result, name = outcomes[label]
            model = result.outcomes[name].model
        save_volume(one.derived(np.asarray(image, np.float32)[None]), folder / f"{method_slug}.nii.gz",
                    provenance={**provenance_base, "method": label, "model": model})
    return folder


def _ablation(d: BenchData, task: Task, methods, setups, steps_list, seed, quick, progress, *,
              slices: list[int], device: str = "cpu") -> list[dict[str, Any]]:
    """PSNR and seconds against the number of sampling steps (first diffusion method, first task)."""
    from dataclasses import replace

    label = next((m.label for m in methods if m.is_diffusion), None)
    if label is None:
        raise SettingsError("--steps (the steps ablation) needs a diffusion method in --methods")
    setup = setups[label]
    if quick:  # keep the shape of the ablation (several step counts), not its cost
        steps_list = sorted({min(n, 2 + i) for i, n in enumerate(steps_list)})
    out = []
    settings = task.settings(seed)
    for n in steps_list:
        variant = DiffusionSetup(setup.prior, replace(setup.options, steps=n), setup.baseline)
        for s in slices:
            o = run_to_end(_one_slice(d, settings, s, [DIFFUSION], variant, device=device)).outcomes[DIFFUSION]
            out.append({"task": task.label, "data": d.label, "slice": int(s), "method": label, "steps": n,
                        **_metrics(o.metrics), "seconds": round(o.seconds, 4)})
            if progress is not None:
                progress(f"{n} steps {d.label}:{s}")
    return out
