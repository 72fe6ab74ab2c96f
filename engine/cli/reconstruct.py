"""``diffrecon reconstruct``: reconstruct (or denoise) a scan with one or more methods.

``--method diffusion`` runs a diffusion prior (``--model``, default per modality under
``resources/models/``) with measurement guidance; it writes the posterior mean as the
output and, with several samples, their per-voxel variance as ``<out>_var.*``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..errors import DiffreconError, SettingsError, VolumeReadError
from ..io import load_volume, save_volume
from ..io.loader import file_suffix
from ..runtime import resolve_device, thread_settings
from ..slices import slice_indices
from .choices import (
    ADAPT_PARAMETERS,
    BACKENDS,
    CLASSICAL_METHODS,
    DEVICES,
    DIFFUSION,
    GUIDANCE,
    MASK_KINDS,
    MODALITIES,
    NOISE_MODELS,
    SAMPLERS,
    STEPS_DEFAULTS,
    low_noise_expert_setting,
)

if TYPE_CHECKING:  # the engine (and torch) is imported when the command runs, not to parse it
    from ..io.volume import Volume
    from ..measurements import MeasurementSettings
    from ..reconstruct import DiffusionSetup, ReconRun


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruct or denoise a scan with classical methods (and compare them with --simulate)",
        description=(
            "Reconstruct a scan from its measurements (k-space in a fastMRI HDF5 file; a noisy image for "
            "denoising/ultrasound), or, with --simulate, treat the scan as the ground truth, simulate "
            "measurements from it and score each method against it."
        ),
    )
    p.add_argument("path", help="input scan (DICOM file/folder, NIfTI, HDF5, NumPy)")
    p.add_argument("--modality", choices=MODALITIES, help="default: from the scan (k-space, MR and NIfTI->mri, CT or HU->ct, US->ultrasound, "
                                                              "else denoise), as the viewer suggests")
    p.add_argument("--method", default="tv", help=f"one or more of {', '.join(CLASSICAL_METHODS + (DIFFUSION,))}, comma-separated (default: tv)")
    p.add_argument("--simulate", action="store_true", help="the input is the ground truth: simulate the measurements")
    p.add_argument("--out", required=True, help="output .nii.gz / .nii / .h5 / .npy / .npz, or a folder for a DICOM series")
    p.add_argument("--report", help="write settings, metrics and timings to this JSON file")
    p.add_argument("--save-input", action="store_true", help="also write the input image (zero-filled / FBP / noisy) as <out>_input")
    p.add_argument("--slices", help="slices to process, Python style: 40:60, 10, 0:100:5 or 3,9,12 (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed for masks and noise (default 0)")
    p.add_argument("--series", help="which DICOM series, when a folder holds several")
    p.add_argument("--batch-size", type=int, default=8, help="slices solved together (default 8)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the methods run: auto (CUDA when present, with bf16 there; else the CPU), cpu, cuda")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the diffusion network: torch (float32; default) or onnx-int8 (ONNX Runtime, "
                        "int8 weights and activations, CPU only; needs pip install 'diffrecon[int8]')")
    mri = p.add_argument_group("MRI")
    mri.add_argument("--acceleration", type=float, default=4.0, help="undersampling factor, 2-12 (default 4)")
    mri.add_argument("--mask", choices=MASK_KINDS, default="random", help="sampling pattern (default random)")
    mri.add_argument("--center-fraction", type=float, help="fully sampled centre fraction (default 0.32/acceleration)")
    mri.add_argument("--coils", type=int, default=0, help="simulate this many receive coils (default 0: single coil)")
    ct = p.add_argument_group("CT")
    ct.add_argument("--views", type=int, help="projection views over 180 degrees (default 60; 180 with --dose)")
    ct.add_argument("--dose", type=float, help="dose fraction for low-dose CT, e.g. 0.25 (Poisson noise, 4096 photons at full dose)")
    dn = p.add_argument_group("denoising and ultrasound")
    dn.add_argument("--noise", choices=NOISE_MODELS, default="gaussian", help="noise model to simulate (default gaussian)")
    dn.add_argument("--noise-sigma", type=float, default=0.1, help="noise std relative to the image's 99.5th percentile (default 0.1)")
    dn.add_argument("--noise-peak", type=float, default=30.0, help="Poisson: photons at full intensity (default 30)")
    dn.add_argument("--looks", type=float, default=1.0, help="speckle looks for gamma noise and ultrasound (default 1)")
    df = p.add_argument_group("diffusion (--method diffusion)")
    df.add_argument("--model", help="prior file (default: resources/models/mri-brain.safetensors for mri, "
                                    "ct-head.safetensors for ct)")
    df.add_argument("--sampler", choices=tuple(SAMPLERS), help="reverse-diffusion sampler (default: the modality's, "
                                                        "measured on validation slices)")
    df.add_argument("--guidance", choices=GUIDANCE,
                    help="data consistency: projection (hard; measurement mixing for denoising), dds (CG steps), "
                         "dds-tv (CG steps with a TV term; its weight chosen per scan from held-out "
                         "measurements), dps (likelihood gradient; slower) (default: the modality's)")
    df.add_argument("--cfg", type=float, default=None, metavar="W",
                    help="classifier-free guidance with scale W (0 = the prior's unconditional half, 1 = plain "
                         "conditional, >1 leans further on the condition): --model must be a conditional prior "
                         "(diffrecon train --conditional TASK) of this task; the condition is the degraded input "
                         "(MRI: the zero-filled image); guidance dds unless --guidance says otherwise")
    df.add_argument("--low-noise-expert", default=None, metavar="PRIOR",
                    help="a prior trained only at low noise levels (diffrecon train --noise-range --init-from "
                         "MODEL) that takes over the last sampling steps, where it learned the noise levels; a "
                         "file or a bundled prior's name, or 'none' (default: the bundled prior's own expert, "
                         "when it has one: mri-brain-lowt for mri-brain; ct-head-lowt for ct-head on noiseless CT "
                         "with 60 views or more, not at low dose)")
    df.add_argument("--tv-weight", default=None,
                    help="dds-tv's TV weight as a multiple of the TV baseline's tuned one, or 'auto' (default: "
                         "auto, chosen per scan by self-supervised hold-out; about 2.5x the time of dds)")
    df.add_argument("--blend-tv", action=argparse.BooleanOptionalAction, default=None,
                    help="blend the result with TV, the weight chosen per scan by how well each predicts "
                         "held-out measurements (one extra run of the same settings on the rest of the data); "
                         "default on for mri and ct, off with --cfg")
    df.add_argument("--adapt-steps", type=int, default=0, metavar="N",
                    help="test-time adaptation: N gradient steps per sampling step tune a copy of the prior to "
                         "this scan's measurements (default 0 = off; measured on validation subjects: no gain "
                         "over dds at 3-8x its time, resources/results/scan-adaptation.md)")
    df.add_argument("--adapt-parameters", choices=ADAPT_PARAMETERS, default="norm",
                    help="what adaptation tunes: norm (GroupNorm scales and shifts) or lora (rank-4 updates of "
                         "every 3x3 convolution) (default norm)")
    df.add_argument("--steps", type=int, default=None,
                    help=f"sampling steps (default: the task's: {STEPS_DEFAULTS})")
    df.add_argument("--samples", type=int, default=1,
                    help="posterior samples per slice, run as one batch: their mean is the output, their "
                         "variance <out>_var (default 1, which with symmetric sampling is a pair); 2 or more "
                         "switch to the stochastic sampler whose σ calibrated best on the validation subjects, "
                         "and σ is scaled by the prior's split-conformal factor (README: Uncertainty)")
    df.add_argument("--symmetric", action=argparse.BooleanOptionalAction,
                    help="pair every sample with one started from the negated noise and average (SRDS); "
                         "default: the modality's (on for all)")
    df.add_argument("--hot-start", action="store_true", default=None,
                    help="start at --hot-start-t from the TV reconstruction instead of noise (fewer steps)")
    df.add_argument("--hot-start-t", type=float, default=0.4, help="where the hot start enters, in (0, 1] (default 0.4)")
    df.add_argument("--eta", type=float, help="DDIM stochasticity, 0 (deterministic) to 1 (default: the modality's)")
    df.add_argument("--through-plane", type=float, metavar="W",
                    help="3D-consistent volumes: TV along the slice axis in the data-consistency step (dds, dds-tv), "
                         "W times the TV baseline's tuned weight; batches are tied to the slices next to them "
                         "(default: the modality's, on for MRI and CT)")
    df.add_argument("--independent-slices", action="store_true",
                    help="reconstruct every slice on its own (no through-plane term; same as --through-plane 0)")
    p.set_defaults(run=run)


def _output_path(out: str, method: str, several: bool) -> Path:
    p = Path(out)
    if not several:
        return p
    ext = file_suffix(p)
    stem = p.name[: len(p.name) - len(ext)] if ext else p.name
    return p.with_name(f"{stem}_{method}{ext}")


def run(args: argparse.Namespace) -> int:
    from ..measurements import MeasurementSettings
    from ..modalities import suggest_task
    from ..reconstruct import Reconstruction, ReconRequest, run_to_end

    volume = load_volume(args.path, series=args.series)
    modality = args.modality or suggest_task(volume)[0]
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    if not methods:
        raise SettingsError("--method names no method")
    settings = MeasurementSettings(
        modality=modality,
        acceleration=args.acceleration,
        mask=args.mask,
        center_fraction=args.center_fraction,
        coils=args.coils,
        views=args.views,
        dose=args.dose,
        noise=args.noise,
        noise_sigma=args.noise_sigma,
        noise_peak=args.noise_peak,
        looks=args.looks,
        seed=args.seed,
    )
    selection = slice_indices(args.slices, volume.n_slices)
    if args.batch_size < 1:
        raise SettingsError("--batch-size must be at least 1")
    device = resolve_device(args.device)
    diffusion = _diffusion_setup(args, settings, device.type) if DIFFUSION in methods else None
    run = Reconstruction(ReconRequest(volume, settings, methods, simulate=args.simulate, slices=selection,
                                      diffusion=diffusion, batch_size=args.batch_size, device=device.type))

    from tqdm import tqdm

    if sys.stderr.isatty():  # like tqdm's bar: progress for a person watching, never a line before an error
        print(f"diffrecon: {run.source.settings.describe()}, {len(run)} slice(s), methods: {', '.join(methods)}",
              file=sys.stderr)
    with tqdm(total=len(run), unit="slice", desc="reconstruct", file=sys.stderr, disable=None) as bar:
        try:
            result = run_to_end(run, progress=bar.update)
        except (SettingsError, VolumeReadError):
            raise
        except DiffreconError as exc:  # a problem found in the data (e.g. a blank reference): name the file
            raise VolumeReadError(args.path, str(exc)) from exc

    written = _write_outputs(args, volume, run.source, result, methods)
    for path in written:
        print(path)
    _print_summary(result)
    if args.report:
        report = result.report()
        report["input"] = str(args.path)
        report.setdefault("threads", thread_settings())  # results reproduce bit for bit at one thread count
        report["device"] = result.provenance["device"]
        report["outputs"] = [str(p) for p in written]
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2, allow_nan=True))
        print(args.report)
    return 0


def _diffusion_setup(args: argparse.Namespace, settings: MeasurementSettings, device: str = "cpu") -> DiffusionSetup:
    """The prior (``--model`` or the modality's default) and the sampling options for the task."""
    modality = settings.modality
    from ..diffusion.checkpoint import load_prior
    from ..reconstruct import default_prior_path, diffusion_setup

    path = Path(args.model) if args.model else default_prior_path(modality)
    if not path.is_file():
        hint = "pass --model" if args.model else "train it with diffrecon train or pass --model"
        raise DiffreconError(f"{path}: the diffusion prior file does not exist; {hint}")
    from ..diffusion.onnx_int8 import with_backend

    prior = with_backend(load_prior(path), args.backend, device)
    guidance = args.guidance or ("dds" if args.cfg is not None else None)  # dds-tv's hold-out would change the task
    return diffusion_setup(prior, modality, settings, sampler=args.sampler, guidance=guidance, steps=args.steps,
                           samples=args.samples, eta=args.eta, symmetric=args.symmetric, hot_start=args.hot_start,
                           hot_start_t=args.hot_start_t, seed=args.seed, tv_weight=_tv_weight(args.tv_weight),
                           adapt_steps=args.adapt_steps, adapt_parameters=args.adapt_parameters,
                           through_plane=0.0 if args.independent_slices else args.through_plane,
                           cfg_scale=args.cfg, low_noise_expert=low_noise_expert_setting(args.low_noise_expert),
                           # a guided run's hold-out would change its condition (the degraded input)
                           blend_tv=args.blend_tv if args.blend_tv is not None or args.cfg is None else False)


def _tv_weight(text: str | None) -> float | str | None:
    if text is None or text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"--tv-weight takes a number or 'auto', not {text!r}") from None


def _variance_path(out: Path) -> Path:
    """``brain.nii.gz`` -> ``brain_var.nii.gz``; a DICOM folder ``brain`` -> ``brain_var``."""
    ext = file_suffix(out)
    stem = out.name[: len(out.name) - len(ext)] if ext else out.name
    return out.with_name(f"{stem}_var{ext}")


def _provenance(args: argparse.Namespace, result: ReconRun, method: str) -> dict:
    return {
        "diffrecon_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": getattr(args, "command_line", None),
        "input": str(args.path),
        "simulate": bool(args.simulate),
        "method": method,
        "params": result.outcomes[method].params if method in result.outcomes else {},
        "settings": result.settings,
        "slices": [int(s) for s in result.slices],
        "model": result.outcomes[method].model if method in result.outcomes else None,
        "device": result.provenance.get("device"),
        # σ's units and the conformal scale applied to it, and the out-of-domain check (diffusion, K > 1)
        **({k: result.provenance[k] for k in ("sigma_units", "sigma_calibration", "out_of_domain")
            if k in result.provenance} if method == DIFFUSION else {}),
    }


def _write_outputs(args, volume, source, result: ReconRun, methods: list[str]) -> list[Path]:
    # each slice where it lay, on one affine (unevenly chosen slices: on their grid, see on_slice_grid)
    def placed(data: np.ndarray, **changes) -> "Volume":
        return volume.on_slice_grid(source.slice_index, data, **changes)

    written: list[Path] = []
    several = len(methods) > 1
    for m in methods:
        out = _output_path(args.out, m, several)
        outcome = result.outcomes[m]
        derived = placed(outcome.volume, window=volume.window)
        variance = None if outcome.variance is None else placed(outcome.variance, window=None,
                                                                 units=f"({volume.units})^2")
        written += save_volume(
            derived, out, provenance=_provenance(args, result, m),
            variance=None if variance is None else variance.data,
            description=f"diffrecon {m} ({source.settings.describe()})",
        )
        if variance is not None:
            written += save_volume(
                variance, _variance_path(out), provenance={**_provenance(args, result, m), "map": "variance"},
                description=f"diffrecon {m} variance ({source.settings.describe()})",
            )
    if args.save_input:
        out = _output_path(args.out, "input", True)
        derived = placed(result.observed.astype(np.float32), window=volume.window)
        written += save_volume(derived, out, provenance=_provenance(args, result, "input"),
                               description=f"diffrecon input ({source.settings.describe()})")
    return written


def _print_summary(result: ReconRun) -> None:
    warning = (result.provenance.get("out_of_domain") or {}).get("warning")
    if warning:
        print(f"diffrecon reconstruct: warning: {warning}", file=sys.stderr)
    if result.observed_metrics is None:
        return
    rows = [("input", result.observed_metrics, None)] + [
        (name, o.metrics, o.seconds_per_slice) for name, o in result.outcomes.items()
    ]
    print(f"{'method':<12} {'PSNR':>7} {'SSIM':>7} {'NMSE':>9} {'MAE':>9} {'s/slice':>8}", file=sys.stderr)
    for name, m, sec in rows:
        if m is None:  # every method is scored when the input is
            continue
        s = "" if sec is None else f"{sec:8.3f}"
        print(f"{name:<12} {m['psnr']:7.2f} {m['ssim']:7.4f} {m['nmse']:9.5f} {m['mae']:9.5f} {s:>8}", file=sys.stderr)
    for name, o in result.outcomes.items():
        if o.calibration is not None:
            c = o.calibration
            ideal = c.get("ideal_coverage_2sigma")
            honest = f" (an honest posterior: {ideal:.1%} with this many samples)" if ideal is not None else ""
            scale = (o.sigma_calibration or {}).get("scale")
            what = f"calibrated std (x{scale:.2f}, target 95 %)" if scale else "std (uncalibrated)"
            print(f"{name}: {c['coverage_2sigma']:.1%} of object pixels within 2 {what} of the truth{honest}; rank "
                  f"correlation of std with |error| {c['spearman_std_error']:.2f}", file=sys.stderr)
