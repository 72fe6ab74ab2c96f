"""Where users wait, in one run: ``python -m diffrecon.experiments.speed [--quick]``.

Prints, at 256 x 256 on this machine:

1. start-up: ``diffrecon --help`` and ``diffrecon info`` on a NIfTI, each in a fresh
   interpreter, against a bare ``python -c pass`` (and whether torch was imported);
2. projectors: forward + adjoint of the CT projector (60 and 180 views, the detector
   ``diffrecon reconstruct`` uses) against the MRI operator's FFTs, and the CT matrix's
   build time from nothing (no cache);
3. diffusion (DDIM + DDS, 25 steps, 1 sample) on MRI 4x and CT 60 views with the shipped
   priors (the same network but for the input channels): seconds per slice, network
   evaluations (NFE), one forward, and ``wall / (NFE x forward)`` (1.0 = all time in
   the network), then CT / MRI;
4. TV: MRI 4x and CT 60 views, seconds per slice, CT / MRI;
5. whole volumes: seconds per slice when ``--volume-slices`` slices go through the
   network in batches of ``--batch`` against one slice at a time;
6. the device (``--device``), threads and the machine's load average before and after.

The ratios are what to quote on a shared machine: both sides of each ran in the same
process, interleaved, under the same load. Speed targets are checked here, never in timed
unit tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..runtime import describe_device, keep_freed_memory, resolve_device

SIZE = 256


def _median_seconds(call: Callable[[], object], repeats: int, device: torch.device) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        call()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- 1. start-up


def startup(repeats: int = 3) -> dict[str, Any]:
    """Median wall seconds of the torch-free commands in a fresh interpreter."""
    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "scan.nii.gz"
        nib.save(nib.Nifti1Image(np.random.default_rng(0).random((SIZE, SIZE, 4), dtype=np.float32), np.eye(4)),
                 scan)
        probe = ("import sys; from diffrecon.cli.main import main\n"
                 "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
                 "sys.stderr.write('TORCH=%d' % ('torch' in sys.modules))")
        commands = {"python -c pass": [sys.executable, "-c", "pass"],
                    "diffrecon --help": [sys.executable, "-c", probe, "--help"],
                    "diffrecon info scan.nii.gz": [sys.executable, "-c", probe, "info", str(scan)]}
        result: dict[str, Any] = {}
        for name, command in commands.items():
            walls, imported = [], False
            for _ in range(repeats + 1):
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, timeout=120)
                walls.append(time.perf_counter() - start)
                imported = "TORCH=1" in done.stderr
            result[name] = {"seconds": statistics.median(walls[1:]), "imports_torch": imported}
    return result


# --------------------------------------------------------------------------- 2. projectors


def projectors(device: torch.device, repeats: int = 5, views: tuple[int, ...] = (60, 180)) -> dict[str, Any]:
    from ..physics import MRIOperator, ParallelBeamRadon, make_mask
    from ..physics import radon_matrix

    mri = MRIOperator(make_mask("random", (SIZE, SIZE), 4))
    x = torch.randn(1, 1, SIZE, SIZE, dtype=torch.complex64, device=device)
    fft = _median_seconds(lambda: mri.A_adjoint(mri.A(x)), repeats, device)
    result: dict[str, Any] = {"mri_fft_ms": fft * 1e3}
    det = math.ceil(math.sqrt(2) * SIZE)  # the detector diffrecon reconstruct simulates
    previous = os.environ.get("DIFFRECON_CACHE_DIR")
    os.environ["DIFFRECON_CACHE_DIR"] = "off"  # time the build from nothing
    try:
        for n_views in views:
            radon_matrix._MEMORY_CACHE.clear()
            op = ParallelBeamRadon(SIZE, n_views, det_count=det)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            matrices = op.matrices
            build_wall, build_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            image = torch.rand(1, 1, SIZE, SIZE, device=device)
            def forward_and_adjoint(op=op, image=image) -> torch.Tensor:
                return op.A_adjoint(op.A(image))

            pair = _median_seconds(forward_and_adjoint, repeats, device)
            result[f"radon_{n_views}"] = {"build_s": build_wall, "build_cpu_s": build_cpu,
                                          "entries_millions": matrices.forward.nnz / 1e6,
                                          "forward_adjoint_ms": pair * 1e3, "vs_fft": pair / fft}
    finally:
        if previous is None:
            os.environ.pop("DIFFRECON_CACHE_DIR", None)
        else:
            os.environ["DIFFRECON_CACHE_DIR"] = previous
    return result


# --------------------------------------------------------------------------- problems


def _ct_problem(views: int = 60, slices: int = 1):
    """A synthetic 256 x 256 head-like CT slice (HU) measured with ``views`` views."""
    from ..io import Volume
    from ..measurements import MeasurementSettings, ProblemSource

    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE / 2) - 1.0
    head = ((xx / 0.8) ** 2 + (yy / 0.9) ** 2) < 1
    brain = ((xx / 0.72) ** 2 + (yy / 0.82) ** 2) < 1
    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    hu[head] = 1000.0  # skull
    hu[brain] = 35.0 + 5.0 * np.sin(8 * xx[brain]) * np.cos(6 * yy[brain])
    volume = Volume(np.repeat(hu[None], slices, axis=0), spacing=(1.0, 0.8, 0.8), modality="CT", units="HU")
    source = ProblemSource(volume, MeasurementSettings(modality="ct", views=views), simulate=True)
    return source.problem(source.slice_index)


def _mri_problem(slices: int = 1):
    from ..measurements import ProblemSource, ReconProblem
    from .diffusion import _synthetic_mri

    volume, settings = _synthetic_mri(SIZE)
    source = ProblemSource(volume, settings, simulate=True)
    one = source.problem(source.slice_index)
    if slices == 1:
        return one
    rep = lambda t: t.repeat(slices, *([1] * (t.ndim - 1)))  # noqa: E731
    return ReconProblem("mri", one.operator, rep(one.y), rep(one.observed), rep(one.reference), 0.0,
                        np.arange(slices))


# --------------------------------------------------------------------------- 3. diffusion, 5. volumes


def _prior(modality: str, device: torch.device):
    from .diffusion import _prior as load_or_untrained

    prior = load_or_untrained(None, modality)
    prior.model.to(device)
    return prior


def diffusion(device: torch.device, steps: int = 25, repeats: int = 1) -> dict[str, Any]:
    from ..diffusion.options import DiffusionOptions
    from ..diffusion.reconstruction import reconstruct_to_end
    from .diffusion import CountingModel, forward_seconds

    options = DiffusionOptions(sampler="ddim", guidance="dds", steps=steps, samples=1, symmetric=False)
    runs: dict[str, dict[str, Any]] = {}
    setups = {"mri": (_prior("mri", device), _mri_problem().to(device)),
              "ct": (_prior("ct", device), _ct_problem(60).to(device))}
    walls: dict[str, list[float]] = {name: [] for name in setups}
    for name, (prior, problem) in setups.items():  # warm-up: oneDNN kernels, the CT matrix
        reconstruct_to_end(problem, prior, DiffusionOptions(**{**options.to_dict(), "steps": 2}))
    nfe = {}
    for _ in range(repeats):
        for name, (prior, problem) in setups.items():  # interleaved: both see the same load
            network = prior.model
            prior.model = counter = CountingModel(network)
            try:
                _sync(device)
                start = time.perf_counter()
                reconstruct_to_end(problem, prior, options)
                _sync(device)
            finally:
                prior.model = network
            walls[name].append(time.perf_counter() - start)
            nfe[name] = counter.calls
    for name, (prior, problem) in setups.items():
        def one_forward(p=prior) -> None:
            _net_forward(p, device)

        forward = forward_seconds(prior.model, (1, prior.channels, SIZE, SIZE)) if device.type == "cpu" else \
            _median_seconds(one_forward, 5, device)
        wall = statistics.median(walls[name])
        runs[name] = {"seconds_per_slice": wall, "nfe": nfe[name], "forward_s": forward,
                      "overhead": wall / (nfe[name] * forward)}
    runs["ct_over_mri"] = runs["ct"]["seconds_per_slice"] / runs["mri"]["seconds_per_slice"]
    return runs


def _net_forward(prior, device: torch.device) -> None:
    from ..diffusion.reconstruction import AUTOCAST
    from ..diffusion.unet import autocast_context

    x = torch.randn(1, prior.channels, SIZE, SIZE, device=device)
    with torch.inference_mode(), autocast_context(AUTOCAST):
        prior.model(x, torch.full((1,), 0.5, device=device))


def volumes(device: torch.device, slices: int, batch: int, steps: int = 25) -> dict[str, Any]:
    """Seconds per slice: ``slices`` MRI slices in network batches of ``batch`` vs one slice."""
    from ..diffusion.options import DiffusionOptions
    from ..diffusion.reconstruction import reconstruct_to_end

    prior = _prior("mri", device)
    options = DiffusionOptions(sampler="ddim", guidance="dds", steps=steps, samples=1, symmetric=False)
    one = _mri_problem(1).to(device)
    reconstruct_to_end(one, prior, DiffusionOptions(**{**options.to_dict(), "steps": 2}))
    start = time.perf_counter()
    reconstruct_to_end(one, prior, options)
    single = time.perf_counter() - start
    start = time.perf_counter()
    done = 0
    while done < slices:
        count = min(batch, slices - done)
        reconstruct_to_end(_mri_problem(count).to(device), prior, options)
        done += count
    batched = (time.perf_counter() - start) / slices
    return {"slices": slices, "batch": batch, "steps": steps, "one_slice_s": single, "per_slice_in_volume_s": batched,
            "volume_over_single": batched / single}


# --------------------------------------------------------------------------- 4. TV


def total_variation(device: torch.device, repeats: int = 1) -> dict[str, Any]:
    from ..baselines import run_baseline

    problems = {"mri": _mri_problem().to(device), "ct": _ct_problem(60).to(device)}
    walls: dict[str, list[float]] = {name: [] for name in problems}
    with torch.inference_mode():
        for name, p in problems.items():  # warm-up (and the CT matrix, the operator norm)
            run_baseline("tv", p.operator, p.y, modality=p.modality, noise_level=p.noise_level)
        for _ in range(repeats):
            for name, p in problems.items():
                start = time.perf_counter()
                run_baseline("tv", p.operator, p.y, modality=p.modality, noise_level=p.noise_level)
                walls[name].append(time.perf_counter() - start)
    result: dict[str, Any] = {name: {"seconds_per_slice": statistics.median(w)} for name, w in walls.items()}
    result["ct_over_mri"] = result["ct"]["seconds_per_slice"] / result["mri"]["seconds_per_slice"]
    return result


# --------------------------------------------------------------------------- report


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    report: dict[str, Any] = {"machine": {"cpu_count": os.cpu_count(), **describe_device(device),
                                          "load_average_before": os.getloadavg()[0]}}
    report["startup"] = startup(repeats=2 if args.quick else 3)
    _print_startup(report["startup"])
    report["projectors"] = projectors(device, repeats=3 if args.quick else 5,
                                      views=(60,) if args.quick else (60, 180))
    _print_projectors(report["projectors"])
    report["diffusion"] = diffusion(device, steps=args.steps, repeats=1 if args.quick else args.repeats)
    _print_diffusion(report["diffusion"], args.steps)
    report["tv"] = total_variation(device, repeats=1 if args.quick else args.repeats)
    _print_tv(report["tv"])
    if args.volume_slices:
        report["volume"] = volumes(device, args.volume_slices, args.batch, args.volume_steps or args.steps)
        _print_volume(report["volume"])
    report["machine"]["load_average_after"] = os.getloadavg()[0]
    m = report["machine"]
    print(f"machine: {m['cpu_count']} cores, {m['device']}"
          f"{', ' + str(m.get('threads')) + ' torch threads' if 'threads' in m else ''}, "
          f"load average {m['load_average_before']:.1f} before, {m['load_average_after']:.1f} after")
    return report


def _print_startup(s: dict[str, Any]) -> None:
    base = s["python -c pass"]["seconds"]
    print("start-up (fresh interpreter, median wall s; x = over a bare python)")
    for name, row in s.items():
        torch_note = "imports torch" if row["imports_torch"] else "no torch"
        print(f"  {name:<28}{row['seconds']:7.2f} s  x{row['seconds'] / base:5.1f}  {torch_note}")


def _print_projectors(p: dict[str, Any]) -> None:
    print(f"projectors, {SIZE}^2 (forward + adjoint, median ms)")
    print(f"  MRI single-coil FFT           {p['mri_fft_ms']:7.1f} ms")
    for key, row in p.items():
        if key.startswith("radon_"):
            print(f"  CT {key[6:]:>3} views                  {row['forward_adjoint_ms']:7.1f} ms  "
                  f"x{row['vs_fft']:5.1f} FFT   build {row['build_s']:.2f} s wall / {row['build_cpu_s']:.2f} s CPU, "
                  f"{row['entries_millions']:.1f} M entries")


def _print_diffusion(d: dict[str, Any], steps: int) -> None:
    print(f"diffusion, DDIM + DDS, {steps} steps, 1 sample, {SIZE}^2")
    for name in ("mri", "ct"):
        r = d[name]
        print(f"  {name.upper():<4}{r['seconds_per_slice']:7.2f} s/slice  {r['nfe']} NFE x {r['forward_s']:.3f} s"
              f"  wall/(NFE x forward) {r['overhead']:.2f}")
    print(f"  CT / MRI  x{d['ct_over_mri']:.2f}")


def _print_tv(t: dict[str, Any]) -> None:
    print(f"TV, {SIZE}^2: MRI 4x {t['mri']['seconds_per_slice']:.2f} s/slice, "
          f"CT 60 views {t['ct']['seconds_per_slice']:.2f} s/slice, CT / MRI x{t['ct_over_mri']:.2f}")


def _print_volume(v: dict[str, Any]) -> None:
    print(f"volume ({v['steps']} steps): {v['slices']} slices in batches of {v['batch']}: "
          f"{v['per_slice_in_volume_s']:.2f} s/slice "
          f"against {v['one_slice_s']:.2f} s for one slice alone (x{v['volume_over_single']:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.experiments.speed", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats, 60 views only, no volume")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each diffusion and TV (median)")
    p.add_argument("--volume-slices", type=int, default=0, help="slices of the whole-volume figure (0: skip)")
    p.add_argument("--batch", type=int, default=8, help="slices per network batch for the volume figure")
    p.add_argument("--volume-steps", type=int,
                   help="sampling steps of the volume figure (default --steps; its ratio does not depend on them)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the CLI and viewer run
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
