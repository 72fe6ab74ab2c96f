"""``diffrecon train DATA... --modality mri --out resources/models/NAME.safetensors``: train a prior.

DATA are scan paths (anything ``load_volume`` reads) or dataset names (colin27,
mni152, cranium; see ``diffrecon.datasets``). The run saves ``NAME.safetensors`` (EMA
weights, what the app loads), ``NAME.train.safetensors`` (to resume), ``NAME.md``
(model card) and ``NAME.train.jsonl`` (validation log) every ``--checkpoint-minutes``
and when it stops; Ctrl-C or ``kill PID`` (SIGTERM) stops cleanly and saves too.
"""

from __future__ import annotations

import argparse
import signal
from typing import TYPE_CHECKING

from ..errors import SettingsError

if TYPE_CHECKING:
    from ..diffusion.checkpoint import PriorPaths

#: TrainConfig.lr's default, here so that --help needs no torch
DEFAULT_LR = 2e-4


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion prior on scans or built-in datasets",
        description="Train a diffusion prior (UNet noise predictor) on random crops of real scans.",
    )
    add_arguments(p)
    p.set_defaults(run=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="*", metavar="DATA",
                   help="scan paths or dataset names (README: Training data); none with --packed")
    p.add_argument("--packed", metavar="FILE.npz",
                   help="train on the sources a --pack-to run wrote (a machine without the scans, e.g. a lent GPU)")
    p.add_argument("--pack-to", metavar="FILE.npz",
                   help="only pack DATA's training sources (normalised, cropped, quantised) into FILE.npz and stop")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where the network trains (auto: CUDA when present; default cpu)")
    p.add_argument("--modality", required=True, choices=("mri", "ct", "ultrasound"))
    p.add_argument("--out", metavar="NAME.safetensors", help="where the prior is written (required unless --pack-to)")
    p.add_argument("--resume", action="store_true", help="continue from NAME.train.safetensors if it exists")
    budget = p.add_argument_group("length (one or both; the first reached stops the run)")
    budget.add_argument("--steps", type=int, metavar="N", help="total optimizer steps (also the learning-rate horizon)")
    budget.add_argument("--minutes", type=float, metavar="M", help="stop cleanly and save after M minutes")
    p.add_argument("--size", type=int, default=64, help="training crop size in pixels (default 64)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default {DEFAULT_LR:g}; with --resume, the run's own)")
    p.add_argument("--schedule", choices=("linear", "cosine"), default="linear")
    p.add_argument("--width", type=int, default=32, help="UNet base width (default 32: about 3.2 M parameters)")
    p.add_argument("--channels", type=int, choices=(1, 2), default=None,
                   help="2 = complex (real/imag), 1 = real; default 2 for MRI, 1 otherwise")
    p.add_argument("--freq-loss", type=float, default=0.1, help="weight of the |FFT| L1 loss (0 disables)")
    p.add_argument("--distill-from", metavar="TEACHER.safetensors",
                   help="distil this trained prior into the (smaller, faster) network being trained: regress its "
                        "noise prediction instead of the noise")
    p.add_argument("--init-from", metavar="PRIOR.safetensors",
                   help="start from this trained prior's weights with a fresh optimizer (fine-tuning; how a "
                        "shipped prior is trained further in a new session, since resume states stay out of git; "
                        "with --self-supervised, the diffusion stage starts from it, a complex MRI prior giving "
                        "its real channel)")
    p.add_argument("--conditional", metavar="TASK",
                   help="train a conditional prior for classifier-free guidance: the degraded image of TASK "
                        "(mri-4x: the zero-filled image of 4x undersampling; denoise: the noisy image) is an "
                        "extra input, replaced by zeros with probability --p-uncond (with --init-from an "
                        "unconditional prior, the network starts as that prior)")
    p.add_argument("--p-uncond", type=float, default=0.15, metavar="P",
                   help="condition dropout rate of --conditional (default 0.15)")
    p.add_argument("--self-supervised", action="store_true",
                   help="DiffDenoise's pipeline on noisy scans alone (no clean image): a blind-spot network "
                        "(Noise2Void masking; first 35 %% of --minutes, written as NAME-blindspot.safetensors), then "
                        "a diffusion model of the noisy scans conditioned on its output (--conditional blind-spot); "
                        "1 channel, no augmentation (it would change the noise)")
    p.add_argument("--simulate-noise", type=float, metavar="SIGMA",
                   help="with --self-supervised: add white Gaussian noise of this std (normalised units, as "
                        "bench's sigma=) to DATA once, to learn from clean scans as if they were noisy ones")
    p.add_argument("--prune", type=float, metavar="FRACTION",
                   help="with --init-from: keep this fraction of the prior's channels (structured pruning by the "
                        "L1 norm of each channel's filters, e.g. 0.75), then fine-tune the narrower network")
    p.add_argument("--noise-range", metavar="LO,HI",
                   help="a denoising prior: train only the noise levels LO..HI (std relative to the image's "
                        "99.5th percentile, e.g. 0.01,0.5) that denoising enters at, not every diffusion time; "
                        "such a prior denoises and cannot reconstruct")
    p.add_argument("--augment", default="all", metavar="LIST",
                   help="generalising augmentations: 'all', 'none', or a comma list of "
                        "resolution,rotation,elastic,contrast,bias,noise (contrast and bias apply to MRI only; "
                        "default all)")
    p.add_argument("--sizes", default="", metavar="N,N",
                   help="extra crop sizes drawn besides --size, each step one size with the same pixels per "
                        "batch (e.g. 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="for scans given by path: the fraction of axial slices held out (a middle block)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--val-every", type=int, default=250, metavar="N", help="validate every N steps (default 250)")
    p.add_argument("--no-autocast", action="store_true", help="train in float32 (bf16 autocast is ~2x faster)")
    p.add_argument("--exact-moments", action="store_true",
                   help="store AdamW moments in float32 so a resume is bit-exact (train file twice the size)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..diffusion.checkpoint import PriorPaths
    from ..diffusion.data import load_sources
    from ..diffusion.training import TrainConfig, Trainer

    if args.pack_to:
        return _pack(args)
    if not args.out:
        raise SettingsError("say where the prior goes: --out NAME.safetensors")
    if args.steps is None and args.minutes is None:
        raise SettingsError("say how long to train: --steps N, --minutes M, or both")
    if args.steps is not None and args.steps < 1 or args.minutes is not None and args.minutes <= 0:
        raise SettingsError("--steps and --minutes must be positive")
    if args.prune is not None and not (0.0 < args.prune < 1.0 and args.init_from):
        raise SettingsError("--prune takes a fraction between 0 and 1 of the channels of an --init-from prior")
    if args.size < 8 or args.batch < 1 or args.width < 4:
        raise SettingsError("--size must be at least 8, --batch at least 1 and --width at least 4")
    from ..diffusion.augment import AUGMENTATION_NAMES

    if args.self_supervised:
        if args.minutes is None:
            raise SettingsError("--self-supervised trains two networks in turn: give the time for both with --minutes")
        if args.conditional or args.distill_from or args.packed or args.prune is not None:
            raise SettingsError("--self-supervised takes none of --conditional, --distill-from, --packed, --prune")
        args.conditional, args.augment = "blind-spot", "none"
        args.channels = args.channels or 1
    elif args.simulate_noise is not None:
        raise SettingsError("--simulate-noise goes with --self-supervised")
    elif args.conditional == "blind-spot":
        raise SettingsError("--conditional blind-spot is trained by --self-supervised")
    augment = _parse_augment(args.augment, AUGMENTATION_NAMES)
    try:
        sizes = tuple(int(v) for v in args.sizes.split(",") if v.strip())
    except ValueError:
        raise SettingsError(f"--sizes takes whole numbers separated by commas; got {args.sizes!r}") from None
    if any(v < 8 for v in sizes):
        raise SettingsError("every --sizes entry must be at least 8")
    noise_range = _parse_noise_range(args.noise_range)
    if noise_range and (args.self_supervised or args.conditional):
        raise SettingsError("--noise-range trains an unconditional denoising prior; drop --self-supervised "
                            "or --conditional")
    paths = PriorPaths.for_weights(args.out)
    if paths.train_state.exists() and not args.resume:
        raise SettingsError(f"{paths.train_state} already exists; pass --resume to continue it, "
                            "or delete it to start over")
    config = TrainConfig(
        modality=args.modality,
        channels=args.channels or (2 if args.modality == "mri" else 1),
        size=args.size, batch=args.batch, lr=_learning_rate(args, paths), total_steps=args.steps,
        max_minutes=args.minutes,
        schedule=args.schedule, width=args.width, freq_loss=args.freq_loss, seed=args.seed,
        autocast=not args.no_autocast, checkpoint_minutes=args.checkpoint_minutes,
        exact_moments=args.exact_moments, data=list(args.data), teacher=args.distill_from,
        init_from=args.init_from, prune=args.prune, augment=augment, sizes=sizes, val_every=args.val_every,
        device=_device(args.device), conditional=args.conditional, p_uncond=args.p_uncond,
        noise_range=noise_range,
    )
    if args.conditional:
        from ..diffusion.conditioning import ConditioningTask

        ConditioningTask.parse(args.conditional, args.p_uncond)  # one sentence before any scan is read
        if args.conditional.startswith("mri-") and config.channels != 2:
            raise SettingsError("--conditional mri-...: the MRI condition is complex, so it needs --channels 2")
    if args.packed:
        from ..diffusion.packed import load_packed

        if args.data:
            raise SettingsError("give DATA or --packed, not both")
        sources = load_packed(args.packed, args.modality)
    else:
        if not args.data:
            raise SettingsError("give the scans to train on (DATA) or a --packed file")
        sources = load_sources(list(args.data), args.modality, args.val_fraction)

    condition_network = None
    if args.self_supervised:
        config.max_minutes, condition_network, sources = _blind_spot_stage(args, config, sources, paths)
    trainer = Trainer(config, sources, paths.weights, condition_network=condition_network)
    resumed = args.resume and trainer.resume()
    if not resumed and paths.log.exists():
        paths.log.unlink()  # a fresh run starts a fresh validation log
    start = ("resuming at step " + str(trainer.step) if resumed
             else f"fine-tuning {args.init_from}" if args.init_from else "training from scratch")
    if config.conditional:
        start += f" (conditional on {config.conditional}, condition dropout {config.p_uncond:g})"
    print(f"{start}: "
          f"{trainer.model.parameter_count() / 1e6:.2f} M parameters, {config.channels} channel(s), "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    previous_handler = signal.signal(signal.SIGTERM, _stop_cleanly)
    try:
        record = trainer.run(progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"interrupted: saved step {trainer.step} to {paths.weights} and {paths.train_state}")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    print(f"step {trainer.step}: validation loss (EMA) {record.get('val_loss_ema')}")
    for label, path in (("prior", paths.weights), ("resume state", paths.train_state),
                        ("model card", paths.card), ("validation log", paths.log)):
        print(f"{label}: {path}")
    return 0


def _parse_noise_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SettingsError(f"--noise-range takes two noise levels LO,HI (e.g. 0.01,0.5); got {text!r}") from None
    if not 0 < lo < hi <= 10:
        raise SettingsError(f"--noise-range needs 0 < LO < HI <= 10; got {text!r}")
    return lo, hi


def _blind_spot_stage(args: argparse.Namespace, config, sources, paths):
    """Stage 1 of --self-supervised: train (or, with --resume, reuse) the blind-spot network;
    return stage 2's minutes, its condition network and the (noisy) sources."""
    from ..diffusion.checkpoint import load_prior
    from ..diffusion.self_supervised import file_digest, noisy_sources, train_blind_spot

    if args.simulate_noise is not None:
        if not 0 < args.simulate_noise <= 1:
            raise SettingsError("--simulate-noise must be above 0 and at most 1")
        sources = noisy_sources(sources, args.simulate_noise, args.seed)
    bsn_path = paths.weights.with_name(paths.name + "-blindspot.safetensors")
    minutes = float(args.minutes)
    if args.resume and bsn_path.exists():
        print(f"blind-spot network: reusing {bsn_path}", flush=True)
        stage2 = minutes
    else:
        record = train_blind_spot(sources, config.channels, bsn_path, minutes=0.35 * minutes, size=config.size,
                                  batch=config.batch, seed=config.seed, progress=not args.quiet)
        print(f"blind-spot network: {record['steps']} steps, masked-pixel validation MSE "
              f"{record['val_masked_mse']:.5f}: {bsn_path}", flush=True)
        stage2 = 0.65 * minutes
    bsn = load_prior(bsn_path).model
    meta = {"blind_spot_file": {"name": bsn_path.name, "sha256": file_digest(bsn_path)},
            **({"simulated_noise_sigma": args.simulate_noise} if args.simulate_noise is not None else {})}
    return stage2, (bsn, meta), sources


def _pack(args: argparse.Namespace) -> int:
    from ..diffusion.data import load_sources
    from ..diffusion.packed import pack_sources

    if not args.data:
        raise SettingsError("give the scans to pack (DATA)")
    sources = load_sources(list(args.data), args.modality, args.val_fraction)
    out = pack_sources(sources, args.modality, args.pack_to)
    print(f"packed {len(sources)} source(s) into {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingsError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return name


def _parse_augment(text: str, known: tuple[str, ...]) -> tuple[str, ...]:
    if text.strip() == "all":
        return known
    if text.strip() in ("none", ""):
        return ()
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SettingsError(f"--augment: unknown {', '.join(unknown)}; choose from all, none, {', '.join(known)}")
    return names


def _learning_rate(args: argparse.Namespace, paths: "PriorPaths") -> float:
    """``--lr``, else a resumed run's own peak rate (a resume without --lr once restarted a
    1e-4 fine-tune at the 2e-4 default), else the default."""
    from ..diffusion.checkpoint import read_metadata

    if args.lr is not None:
        return float(args.lr)
    if args.resume and paths.train_state.exists():
        saved = (read_metadata(paths.train_state).get("config") or {}).get("lr")
        if saved is not None:
            return float(saved)
    return DEFAULT_LR


def _stop_cleanly(signum: int, frame: object) -> None:
    """``kill PID`` stops a background run like Ctrl-C does: it saves before exiting."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """``python -m diffrecon.cli.train ...``: the same command without the other subcommands
    (long background runs then depend on nothing but the training code)."""
    import sys

    from ..errors import DiffreconError
    from ..runtime import configure_threads, keep_freed_memory

    parser = argparse.ArgumentParser(prog="python -m diffrecon.cli.train", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: $DIFFRECON_THREADS or all cores)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        configure_threads(args.threads)
        keep_freed_memory()
        return run(args)
    except DiffreconError as exc:
        if args.debug:
            raise
        print(f"diffrecon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: run() has saved and said so; no traceback
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
