"""``diffrecon study``: run a blinded reader study on reconstructions.

``create`` builds a study folder from case folders (one volume per method, as
``reconstruct`` or ``bench`` write them), ``read`` opens the reader window for one
reader (the viewer is imported only then: the engine stays headless), ``report``
computes the statistics and writes report.md, scores_long.csv and a bar chart, and
``status`` shows how far each reader has got.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ..errors import SettingsError


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    return names or None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="blinded reader study: create it from reconstructions, score it in the viewer, report the statistics",
        description=(
            "Run a reader study: radiologists score reconstructions (method names hidden, order randomised per "
            "reader) on a 1-5 quality scale; the report gives per-method means with 95 % confidence intervals, "
            "Fleiss' and weighted Cohen's kappa and paired tests."
        ),
    )
    steps = p.add_subparsers(dest="study_command", metavar="STEP", required=True)

    c = steps.add_parser(
        "create", help="build a study folder from case folders (one volume per method)",
        description=(
            "Build a study from reconstructions. Each case is a folder with one volume per method, named by the "
            "method (tv.nii.gz, diffusion.nii.gz, zero-filled.npy, or a DICOM series folder fbp/); a `diffrecon "
            "bench` output folder (with its cases/ folder) or a folder of case folders stands for all its cases."
        ),
    )
    c.add_argument("--cases", nargs="+", required=True, metavar="DIR",
                   help="case folders, globs of them (quote them), or a bench output / folder of case folders")
    c.add_argument("--out", required=True, type=Path, metavar="STUDY", help="the study folder to create")
    c.add_argument("--methods", help="methods to score, comma-separated (default: those present in every case)")
    c.add_argument("--readers", help="readers, comma-separated (more can join later with `study read --reader`)")
    c.add_argument("--questions", default="quality",
                   help="quality (1-5 with anchors), artefact (yes/no), comment (free text); comma-separated "
                        "(default: quality)")
    c.add_argument("--key", type=Path, metavar="FILE",
                   help="where the key (which image shows which method) is written; keep it from the readers "
                        "(default: STUDY.key.json beside the study folder; never inside it)")
    c.add_argument("--slices", help="slices to keep, Python style: 40:60, 12 or 3,9,12 (default: the whole volume)")
    c.add_argument("--each-slice", action="store_true", help="score every kept slice as a case of its own")
    c.add_argument("--reference", metavar="NAME",
                   help="hang this image of each case (e.g. ground-truth) beside the scored one; it is not scored")
    c.set_defaults(run=run_create)

    r = steps.add_parser("read", help="score a study in the reader window (resumes at the first unscored case)",
                         description="Open the reader window for one reader. Method names are never shown.")
    r.add_argument("study", type=Path, help="the study folder")
    r.add_argument("--reader", required=True, help="your name (a new name joins the study with its own order)")
    r.add_argument("--screenshot", type=Path, metavar="PNG", help="save the window once it has drawn, then exit")
    r.add_argument("--size", default="1500x950", help="window size WIDTHxHEIGHT (default 1500x950)")
    r.set_defaults(run=run_read)

    rep = steps.add_parser("report", help="statistics, report.md, scores_long.csv and a bar chart",
                           description="Summarise the scores so far (the study may still be in progress).")
    rep.add_argument("study", type=Path, help="the study folder")
    rep.add_argument("--key", type=Path, metavar="FILE",
                     help="the study's key file from `study create` (default: STUDY.key.json beside the folder)")
    rep.add_argument("--out", type=Path, metavar="DIR", help="where the files go (default: STUDY.report beside the "
                                                             "study folder, so readers' copies never hold it)")
    rep.set_defaults(run=run_report)

    st = steps.add_parser("status", help="how many cases each reader has scored")
    st.add_argument("study", type=Path, help="the study folder")
    st.set_defaults(run=run_status)


def _create_command(args: argparse.Namespace) -> str:
    """The command line as it would be typed again (recorded in study.json)."""
    parts = ["diffrecon", "study", "create", "--cases", *args.cases, "--out", str(args.out)]
    for flag, value in (("--methods", args.methods), ("--readers", args.readers), ("--questions", args.questions),
                        ("--key", None if args.key is None else str(args.key)), ("--slices", args.slices),
                        ("--reference", args.reference)):
        if value is not None:
            parts += [flag, value]
    if args.each_slice:
        parts.append("--each-slice")
    return shlex.join(parts)


def run_create(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..study import create_study

    with tqdm(unit="case", desc="create", file=sys.stderr, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        created = create_study(
            args.cases, args.out, methods=_names(args.methods), readers=_names(args.readers),
            questions=_names(args.questions), slices=args.slices, each_slice=args.each_slice,
            reference=args.reference, key=args.key, command=_create_command(args), progress=progress,
        )
    readers = ", ".join(created.readers) if created.readers else "none yet"
    print(f"diffrecon: study with {len(created.cases)} cases x {len(created.methods)} methods "
          f"({', '.join(created.methods)}) = {created.items} images to score; questions: "
          f"{', '.join(created.questions)}; readers: {readers} ({created.seconds:.1f} s); the key (keep it from "
          f"the readers): {created.key}", file=sys.stderr)
    print(created.folder)
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SettingsError(f"--size must look like 1500x950, not {text!r}") from None
    if w < 400 or h < 300:
        raise SettingsError(f"--size {text} is too small for the reader window (at least 400x300)")
    return w, h


def run_read(args: argparse.Namespace) -> int:
    size = _size(args.size)
    from ..study import open_store

    open_store(args.study).close()  # a study problem is one sentence before any window opens
    from diffrecon.viewer.reader_study import run_reader_study

    return run_reader_study(args.study, args.reader, screenshot=args.screenshot, size=size)


def run_report(args: argparse.Namespace) -> int:
    from ..study import write_report
    from ..study.key import open_keyed
    from ..study.report import render_text

    keyed = open_keyed(args.study, args.key)
    try:
        report, files = write_report(keyed, args.out)
    finally:
        keyed.store.close()
    print(render_text(report))
    print()
    for f in files:
        print(f)
    print(f"diffrecon: report computed in {report.seconds_to_compute:.2f} s", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ..study import open_store
    from ..study.report import readers_table, text_table
    from ..study.statistics import completion

    with open_store(args.study) as store:
        done, seconds = completion(store)
        images = len(store.image_ids())
    print(f"{args.study}: {images} images per reader")
    print("\n".join(text_table(readers_table(done, seconds))[2:]))
    return 0
