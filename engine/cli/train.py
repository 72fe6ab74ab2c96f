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

from ..errors import SettingsError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion prior on scans or built-in datasets",
        description="Train a diffusion prior (UNet noise predictor) on random crops of real scans.",
    )
    add_arguments(p)
    p.set_defaults(run=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="+", metavar="DATA", help="scan paths or dataset names (colin27, mni152, cranium)")
    p.add_argument("--modality", required=True, choices=("mri", "ct", "ultrasound"))
    p.add_argument("--out", required=True, metavar="NAME.safetensors", help="where the prior is written")
    p.add_argument("--resume", action="store_true", help="continue from NAME.train.safetensors if it exists")
    budget = p.add_argument_group("length (one or both; the first reached stops the run)")
    budget.add_argument("--steps", type=int, metavar="N", help="total optimizer steps (also the learning-rate horizon)")
    budget.add_argument("--minutes", type=float, metavar="M", help="stop cleanly and save after M minutes")
    p.add_argument("--size", type=int, default=64, help="training crop size in pixels (default 64)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    p.add_argument("--schedule", choices=("linear", "cosine"), default="linear")
    p.add_argument("--width", type=int, default=32, help="UNet base width (default 32: about 3.2 M parameters)")
    p.add_argument("--channels", type=int, choices=(1, 2), default=None,
                   help="2 = complex (real/imag), 1 = real; default 2 for MRI, 1 otherwise")
    p.add_argument("--freq-loss", type=float, default=0.1, help="weight of the |FFT| L1 loss (0 disables)")
    p.add_argument("--distill-from", metavar="TEACHER.safetensors",
                   help="distil this trained prior into the (smaller, faster) network being trained: regress its "
                        "noise prediction instead of the noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="for scans given by path: the fraction of axial slices held out (a middle block)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--no-autocast", action="store_true", help="train in float32 (bf16 autocast is ~2x faster)")
    p.add_argument("--exact-moments", action="store_true",
                   help="store AdamW moments in float32 so a resume is bit-exact (train file twice the size)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..diffusion.checkpoint import PriorPaths
    from ..diffusion.data import load_sources
    from ..diffusion.training import TrainConfig, Trainer

    if args.steps is None and args.minutes is None:
        raise SettingsError("say how long to train: --steps N, --minutes M, or both")
    if args.steps is not None and args.steps < 1 or args.minutes is not None and args.minutes <= 0:
        raise SettingsError("--steps and --minutes must be positive")
    if args.size < 8 or args.batch < 1 or args.width < 4:
        raise SettingsError("--size must be at least 8, --batch at least 1 and --width at least 4")
    paths = PriorPaths.for_weights(args.out)
    if paths.train_state.exists() and not args.resume:
        raise SettingsError(f"{paths.train_state} already exists; pass --resume to continue it, "
                            "or delete it to start over")
    config = TrainConfig(
        modality=args.modality,
        channels=args.channels or (2 if args.modality == "mri" else 1),
        size=args.size, batch=args.batch, lr=args.lr, total_steps=args.steps, max_minutes=args.minutes,
        schedule=args.schedule, width=args.width, freq_loss=args.freq_loss, seed=args.seed,
        autocast=not args.no_autocast, checkpoint_minutes=args.checkpoint_minutes,
        exact_moments=args.exact_moments, data=list(args.data), teacher=args.distill_from,
    )
    sources = load_sources(list(args.data), args.modality, args.val_fraction)
    trainer = Trainer(config, sources, paths.weights)
    resumed = args.resume and trainer.resume()
    if not resumed and paths.log.exists():
        paths.log.unlink()  # a fresh run starts a fresh validation log
    print(f"{'resuming at step ' + str(trainer.step) if resumed else 'training from scratch'}: "
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


if __name__ == "__main__":
    raise SystemExit(main())
