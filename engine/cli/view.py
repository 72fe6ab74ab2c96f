"""``diffrecon view [PATH]``: the desktop viewer; ``--run --screenshot out.png`` scripts it.

The viewer (``diffrecon.viewer``, PySide6) is imported only when the command runs, so
the engine and the other subcommands stay headless.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .choices import BACKENDS, DEVICES, GUIDANCE, MASK_KINDS, MODALITIES, SAMPLERS, STEPS_DEFAULTS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="open the viewer: watch a diffusion reconstruction form, next to a baseline and its uncertainty",
        description=(
            "Open a scan in the diffrecon viewer (with no PATH: the bundled T1 brain sample, as ground truth). "
            "With --run the current settings run to completion and the window stays open; --screenshot saves the "
            "four panes and exits, --exit just exits. Scripted runs print the metrics; --report writes them as JSON."
        ),
    )
    p.add_argument("path", nargs="?", help="scan to open (DICOM file/folder, NIfTI, HDF5, NumPy)")
    p.add_argument("--run", dest="run_now", action="store_true", help="run the reconstruction at start")
    p.add_argument("--screenshot", type=Path, metavar="PNG", help="with --run: save the four panes here and exit")
    p.add_argument("--window-screenshot", type=Path, metavar="PNG", help="with --run: save the whole window and exit")
    p.add_argument("--exit", dest="exit_after", action="store_true",
                   help="with --run: close the viewer when the run ends (the exit status says whether it completed)")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="with --run: write the settings, metrics and timings of the run to this JSON file")
    p.add_argument("--modality", choices=MODALITIES, help="task (default: from the scan)")
    p.add_argument("--slice", type=int, help="slice to show and reconstruct (default: the middle one)")
    p.add_argument("--whole-volume", action="store_true", help="reconstruct every slice, not only the one shown")
    p.add_argument("--independent-slices", action="store_true",
                   help="with --whole-volume: reconstruct each slice on its own (no through-plane TV term)")
    p.add_argument("--seed", type=int, help="seed for masks, noise and sampling (default 0)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where runs compute: auto (CUDA when present, with bf16 there; else the CPU), cpu, cuda")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="what runs the diffusion network: torch (float32; default) or onnx-int8 (ONNX Runtime, "
                        "int8, CPU only; needs pip install 'diffrecon[int8]')")
    mri = p.add_argument_group("MRI")
    mri.add_argument("--acceleration", type=float, help="undersampling factor, 2-12 (default 4)")
    mri.add_argument("--mask", choices=MASK_KINDS, help="sampling pattern (default random)")
    ct = p.add_argument_group("CT")
    ct.add_argument("--views", type=int, help="projection views over 180 degrees (default 60; 180 with --dose)")
    ct.add_argument("--dose", type=float, help="dose fraction for low-dose CT, e.g. 0.25")
    dn = p.add_argument_group("denoising")
    dn.add_argument("--noise-sigma", type=float, help="noise std relative to the image's 99.5th percentile")
    df = p.add_argument_group("diffusion")
    df.add_argument("--model", type=Path, help="prior file (.safetensors; default: the bundled one for the task)")
    df.add_argument("--sampler", choices=tuple(SAMPLERS))
    df.add_argument("--guidance", choices=GUIDANCE)
    df.add_argument("--steps", type=int, help=f"sampling steps (default: the task's: {STEPS_DEFAULTS})")
    df.add_argument("--samples", type=int, help="posterior samples for the uncertainty map, each run as a symmetric pair (default 1)")
    disp = p.add_argument_group("display")
    disp.add_argument("--baseline", help="classical baseline: tv, l1-wavelet, median, bm3d or none")
    disp.add_argument("--layout", choices=("2x2", "1x4", "mpr", "mpr-one"),
                      help="pane layout (default 2x2); mpr: axial, coronal and sagittal planes of every image, "
                           "mpr-one: of the reconstruction alone")
    disp.add_argument("--error-maps", action="store_true", help="show |error| maps instead of images")
    disp.add_argument("--hallucination-map", action="store_true",
                      help="mark on the reconstruction what the prior may have invented (the H toggle)")
    disp.add_argument("--preset", help="window preset by name, e.g. brain, bone, lung")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import SettingsError

    for flag, given in (("--screenshot", args.screenshot is not None), ("--window-screenshot",
                        args.window_screenshot is not None), ("--exit", args.exit_after),
                        ("--report", args.report is not None)):
        if given and not args.run_now:
            raise SettingsError(f"{flag} needs --run (it acts when the run finishes)")
    from diffrecon.viewer.app import ViewOptions, run_viewer

    options = ViewOptions(
        path=Path(args.path) if args.path else None, run=args.run_now, screenshot=args.screenshot,
        window_screenshot=args.window_screenshot, exit_after=args.exit_after, report=args.report,
        modality=args.modality, acceleration=args.acceleration,
        mask=args.mask, views=args.views, dose=args.dose, noise_sigma=args.noise_sigma, steps=args.steps,
        samples=args.samples, sampler=args.sampler, guidance=args.guidance, seed=args.seed, slice=args.slice,
        model=args.model, baseline=args.baseline, whole_volume=args.whole_volume,
        independent_slices=args.independent_slices, layout=args.layout, error_maps=args.error_maps,
        hallucination_map=args.hallucination_map,
        preset=args.preset, threads_chosen=args.threads is not None, device=args.device,
        backend=args.backend,
    )
    return run_viewer(options)
