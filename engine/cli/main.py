"""The ``diffrecon`` command: one subcommand per module in this folder.

Each subcommand module has ``add_parser(subparsers)`` and ``run(args) -> int``.
Problems with the user's input surface as ``diffrecon: error: <sentence>`` and exit
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import warnings

from .. import __version__
from ..errors import DiffreconError, one_line
from ..io.budget import set_command
from ..runtime import configure_threads, keep_freed_memory

# Subcommands in the order ``--help`` lists them. Register one here when it works,
# never as a stub.
SUBCOMMANDS = ("info", "reconstruct", "bench", "study", "train", "view")
# Commands that never touch torch: they must not pay its ~1-2 s import.
TORCH_FREE = {("info", None), ("study", "status"), ("study", "report")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffrecon",
        description="Reconstruct and denoise medical images with diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"diffrecon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch (default: $DIFFRECON_THREADS or all cores); "
        "use fewer when another process shares the machine",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning from a library as one line of ours (Python's own format takes two: place and source line)."""
    print(f"diffrecon: warning: {one_line(str(message))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    given = list(argv if argv is not None else sys.argv[1:])
    args = parser.parse_args(given)
    if args.command is None:
        # Bare `diffrecon` opens the desktop viewer on the bundled sample (global options kept).
        given.append("view")
        args = parser.parse_args(given)
    args.command_line = "diffrecon " + shlex.join(str(a) for a in given)  # recorded in outputs' provenance
    try:
        # The memory budget predicts this command's peak (on the slices it will process) before reading pixels.
        set_command(args.command, getattr(args, "slices", None))
        needs_torch = (args.command, getattr(args, "study_command", None)) not in TORCH_FREE
        configure_threads(args.threads, import_torch=needs_torch)
        keep_freed_memory()
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line  # restored when the block ends
            return int(args.run(args) or 0)
    except DiffreconError as exc:
        if args.debug:
            raise
        print(f"diffrecon: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffrecon: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`diffrecon info scan | head`): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        set_command(None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
