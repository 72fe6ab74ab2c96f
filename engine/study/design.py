"""Building a reader study: cases x methods, the questions, the readers and their orders.

Input layout: each case is a folder holding one volume per method, the method being
the file's stem (``tv.nii.gz``, ``diffusion.nii.gz``, ``zero-filled.npy``) or a DICOM
series subfolder (``fbp/``). A folder with a ``cases/`` subfolder (what ``diffrecon
bench`` writes) stands for every case in it, as does a folder whose subfolders are
cases. ``diffrecon reconstruct --method tv,diffusion --out case01/recon.nii.gz`` names
its outputs ``recon_tv``, ``recon_diffusion``: when every volume of a case shares such
a ``<prefix>_`` the prefix is dropped, so the methods read ``tv``, ``diffusion``.

Blinding: each (case, method) volume is copied to ``images/<id>.npy`` under a random id
from the operating system's cryptographic generator (``secrets``), written in a
shuffled order with one common file time, so neither the names, the write order nor
the timestamps tell methods apart, and no seed or recorded setting lets anyone
recompute them. The id -> (case, method, source) mapping is written only to the key
file beside the study folder (:mod:`.key`); the folder itself (images, ``study.json``,
the database) names no method. Each reader sees every item once, in a random
permutation (``secrets`` too) stored when the reader is added, so a resumed session
shows the same order.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import DiffreconError, SettingsError
from ..io import load_volume
from ..io.loader import file_suffix
from ..io.sidecar import write_json
from ..slices import parse_slices
from .images import IMAGES_DIR, write_image
from .key import StudyKey, default_key_path, write_key
from .store import DB_NAME, Question, StudyStore, StudyStoreError, open_store

MANIFEST = "study.json"
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npy", ".npz", ".h5", ".hdf5", ".dcm", ".dicom", ".ima")
VARIANCE_SUFFIX = "_var"  # reconstruct's per-voxel variance maps: not images to score

# Anchors as radiology reader studies phrase them (overall diagnostic image quality).
QUALITY_ANCHORS = {
    "1": "Non-diagnostic: structures cannot be assessed",
    "2": "Poor: marked artefacts, limited confidence",
    "3": "Acceptable: moderate artefacts, diagnostic",
    "4": "Good: minor artefacts, no effect on diagnosis",
    "5": "Excellent: no artefacts, fully diagnostic",
}
QUESTIONS = {
    "quality": Question("quality", "likert", "Overall diagnostic image quality", QUALITY_ANCHORS, True),
    "artefact": Question("artefact", "yesno", "Artefact or hallucinated structure present?",
                         {"1": "Yes", "0": "No"}, True),
    "comment": Question("comment", "text", "Comment (optional)", {}, False),
}
DEFAULT_QUESTIONS = ("quality",)


class StudyDesignError(DiffreconError):
    """The cases, methods or settings given to ``study create`` cannot make a study."""


@dataclass
class CaseSource:
    case_id: str
    folder: Path
    volumes: dict[str, Path] = field(default_factory=dict)  # method -> file or DICOM folder


@dataclass
class CreatedStudy:
    folder: Path
    key: Path
    cases: list[str]
    methods: list[str]
    readers: list[str]
    questions: list[str]
    items: int
    seconds: float


# ----- finding the cases -----

def _is_volume_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and file_suffix(path) in VOLUME_SUFFIXES


def _stem(path: Path) -> str:
    ext = file_suffix(path)
    return path.name[: len(path.name) - len(ext)] if ext and path.is_file() else path.name


def _volumes_in(folder: Path) -> dict[str, Path]:
    """method -> volume path for one case folder (files by stem, subfolders as DICOM series)."""
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() or _is_volume_file(entry):
            name = _stem(entry)
            if name in found:
                raise StudyDesignError(f"{folder}: holds two volumes for the method {name!r} "
                                       f"({found[name].name} and {entry.name}); keep one")
            found[name] = entry
    return _drop_shared_prefix(found)


def _drop_shared_prefix(volumes: dict[str, Path]) -> dict[str, Path]:
    """``recon_tv``, ``recon_diffusion`` -> ``tv``, ``diffusion`` (reconstruct's naming)."""
    if len(volumes) < 2 or not all("_" in name for name in volumes):
        return volumes
    prefixes = {name.split("_", 1)[0] for name in volumes}
    if len(prefixes) != 1:
        return volumes
    renamed = {name.split("_", 1)[1]: path for name, path in volumes.items()}
    return renamed if len(renamed) == len(volumes) and all(renamed) else volumes


def _looks_like_parent_of_cases(folder: Path) -> bool:
    """A folder with no volume files of its own whose subfolders are cases, not DICOM series.

    A DICOM series folder holds only image files; a case folder holds NIfTI/NumPy/HDF5
    files or series subfolders.
    """
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    if any(_is_volume_file(e) for e in entries):
        return False
    subfolders = [e for e in entries if e.is_dir()]
    if not subfolders:
        return False
    for sub in subfolders:
        inner = [e for e in sub.iterdir() if not e.name.startswith(".")]
        if not any(e.is_dir() or (_is_volume_file(e) and file_suffix(e) not in (".dcm", ".dicom", ".ima"))
                   for e in inner):
            return False
    return True


def _expand(arg: str) -> list[Path]:
    """One ``--cases`` argument -> case folders (a glob, a bench output, a folder of cases, or one case)."""
    if any(ch in arg for ch in "*?["):
        matches = sorted(Path(m) for m in glob.glob(arg))
        folders = [m for m in matches if m.is_dir()]
        if not folders:
            raise StudyDesignError(f"{arg}: no folder matches this pattern")
        return folders
    p = Path(arg)
    if not p.exists():
        raise StudyDesignError(f"{p}: no such case folder")
    if not p.is_dir():
        raise StudyDesignError(f"{p}: is a file; --cases takes folders, each holding one volume per method")
    if (p / "cases").is_dir():  # a `diffrecon bench` output folder
        p = p / "cases"
    if _looks_like_parent_of_cases(p):
        return sorted(e for e in p.iterdir() if e.is_dir() and not e.name.startswith("."))
    return [p]


def discover_cases(args: list[str]) -> list[CaseSource]:
    """The case folders ``--cases`` names, each with its volumes by method."""
    folders: list[Path] = []
    for arg in args:
        for folder in _expand(str(arg)):
            if folder.resolve() not in {f.resolve() for f in folders}:
                folders.append(folder)
    if not folders:
        raise StudyDesignError("--cases names no case folder")
    cases: list[CaseSource] = []
    names = [f.name for f in folders]
    for folder in folders:
        # A case is named by its folder; two folders of one name are told apart by their parent.
        case_id = folder.name if names.count(folder.name) == 1 else f"{folder.parent.name}/{folder.name}"
        if any(c.case_id == case_id for c in cases):
            raise StudyDesignError(f"{folder}: two case folders are both called {case_id!r}; rename one")
        volumes = _volumes_in(folder)
        if not volumes:
            raise StudyDesignError(f"{folder}: this case folder holds no images "
                                   f"(expected one volume per method, e.g. tv.nii.gz, diffusion.nii.gz)")
        cases.append(CaseSource(case_id, folder, volumes))
    return cases


def choose_methods(cases: list[CaseSource], wanted: list[str] | None, reference: str | None) -> list[str]:
    """The scored methods: ``wanted`` (each checked in every case) or those every case has."""
    if reference is not None:
        for case in cases:
            if reference not in case.volumes:
                raise StudyDesignError(f"{case.folder}: case {case.case_id!r} has no reference image {reference!r} "
                                       f"(it has {', '.join(sorted(case.volumes))})")
    if wanted:
        if len(set(wanted)) != len(wanted):
            raise SettingsError("--methods names a method twice")
        if reference in wanted:
            raise SettingsError(f"{reference!r} is the reference shown beside every image, so it cannot also be scored")
        for case in cases:
            for method in wanted:
                if method not in case.volumes:
                    raise StudyDesignError(f"{case.folder}: case {case.case_id!r} has no volume for the method "
                                           f"{method!r} (it has {', '.join(sorted(case.volumes))})")
        return list(wanted)
    common = set(cases[0].volumes)
    for case in cases[1:]:
        common &= set(case.volumes)
    common = {m for m in common if m != reference and not m.endswith(VARIANCE_SUFFIX)}
    if not common:
        first, other = cases[0], next((c for c in cases[1:] if not set(c.volumes) & set(cases[0].volumes)), cases[-1])
        raise StudyDesignError(f"no method is present in every case (case {first.case_id!r} has "
                               f"{', '.join(sorted(first.volumes))}; case {other.case_id!r} has "
                               f"{', '.join(sorted(other.volumes))}); name them with --methods")
    return sorted(common)


def _select(volume, selection, path: Path, text: str | None):
    if selection is None:
        return volume
    n = volume.n_slices
    if isinstance(selection, list):
        bad = [i for i in selection if not -n <= i < n]
        if bad:
            raise StudyDesignError(f"{path}: slice {bad[0]} is outside its {n} slices (--slices {text})")
        return volume.select_slices([i % n for i in selection])
    if len(range(*selection.indices(n))) == 0:
        raise StudyDesignError(f"{path}: --slices {text} selects none of its {n} slices")
    return volume.select_slices(selection)


# ----- readers -----

def reading_order_for(items: list[str]) -> list[str]:
    """``items`` in a fresh random order from the cryptographic generator."""
    order = list(items)
    secrets.SystemRandom().shuffle(order)
    return order


def check_reader_name(name: str) -> str:
    clean = " ".join(str(name).split())
    if not clean:
        raise SettingsError("a reader needs a name")
    if len(clean) > 80:
        raise SettingsError("a reader's name must be at most 80 characters")
    return clean


def ensure_reader(store: StudyStore, name: str) -> bool:
    """Add ``name`` to the study with its own order unless already there; True when added."""
    name = check_reader_name(name)
    if name in store.readers():
        return False
    return store.add_reader(name, reading_order_for(store.image_ids()))


# ----- creating a study -----

def _image_ids(count: int, taken: set[str]) -> list[str]:
    """``count`` new random ids (16 hex digits) from the cryptographic generator."""
    ids: list[str] = []
    while len(ids) < count:
        token = secrets.token_hex(8)
        if token not in taken and token not in ids:
            ids.append(token)
    return ids


def _check_target(out: Path) -> None:
    """Refuse a folder holding scores (or anything that is not a study): never lose a score."""
    if not out.exists():
        return
    if not out.is_dir():
        raise StudyDesignError(f"{out}: exists and is a file; choose a new folder for the study")
    entries = [e for e in out.iterdir()]
    if not entries:
        return
    if not (out / DB_NAME).is_file():
        raise StudyDesignError(f"{out}: exists and is not a study; choose a new folder for the study")
    try:
        with open_store(out) as store:
            answers = store.count_answers()
    except StudyStoreError as exc:
        raise StudyDesignError(f"{out}: holds a study whose database cannot be read, so it is kept as it is "
                               f"({exc})") from exc
    if answers:
        raise StudyDesignError(f"{out}: already holds a study with {answers} answers; it is never overwritten, "
                               f"so choose a new folder")


def create_study(case_args: list[str], out: str | Path, *, methods: list[str] | None = None,
                 readers: list[str] | None = None, questions: list[str] | None = None,
                 slices: str | None = None, each_slice: bool = False, reference: str | None = None,
                 key: str | Path | None = None, command: str | None = None, progress=None) -> CreatedStudy:
    """Build the study folder ``out`` (blinded images, the database, ``study.json``) and its key.

    The key (image id -> case, method, source) goes to ``key`` (default
    ``OUT.key.json`` beside the folder), never inside the folder readers receive.

    Everything is written to a temporary sibling folder first and moved into place at
    the end, so a failure (an unreadable volume, a full disk) leaves no half study. A
    folder holding a study without answers is replaced; one with answers never is.
    ``command`` (the command line that made it) is recorded in ``study.json``;
    ``progress(cases_done, cases)`` is called after each case is written.
    """
    started = time.perf_counter()
    out = Path(out)
    question_ids = list(questions or DEFAULT_QUESTIONS)
    unknown = [q for q in question_ids if q not in QUESTIONS]
    if unknown:
        raise SettingsError(f"unknown question {unknown[0]!r}; choose from {', '.join(QUESTIONS)}")
    if not any(QUESTIONS[q].kind != "text" for q in question_ids):
        raise SettingsError("a study needs a question to score (quality or artefact), not only comments")
    question_ids = [q for q in QUESTIONS if q in question_ids]  # one canonical order, no repeats
    reader_names = [check_reader_name(r) for r in (readers or [])]
    if len(set(reader_names)) != len(reader_names):
        raise SettingsError("--readers names a reader twice")
    key_path = Path(key) if key is not None else default_key_path(out)
    if key_path.resolve().is_relative_to(out.resolve()):
        raise SettingsError(f"the key file {key_path} must not be inside the study folder: readers receive that "
                            "folder, and the key says which method each image shows")
    selection = parse_slices(slices)  # checked against each case's volume by _select

    cases = discover_cases(case_args)
    chosen = choose_methods(cases, methods, reference)
    _check_target(out)

    rng = np.random.default_rng(secrets.randbits(128))  # write order only; never recorded
    staging = out.parent / f".{out.name}.creating-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    images = staging / IMAGES_DIR
    # Written: (image id, case id, method or None for the reference, source path).
    jobs: list[tuple[str, str, str | None, Path]] = []
    taken: set[str] = set()
    case_rows: list[tuple[str, str]] = []
    try:
        images.mkdir(parents=True)
        for number, case in enumerate(cases):
            shown = chosen + ([reference] if reference else [])
            # One case at a time: its volumes are loaded once, even when every slice becomes a case.
            volumes = {m: _select(_load(case.volumes[m]), selection, case.volumes[m], slices) for m in shown}
            volumes = _with_shared_geometry(volumes, chosen, reference)
            if each_slice:
                counts = {m: v.n_slices for m, v in volumes.items()}
                if len(set(counts.values())) != 1:
                    listed = ", ".join(f"{m} {n}" for m, n in counts.items())
                    raise StudyDesignError(f"{case.folder}: --each-slice needs the same number of slices for "
                                           f"every method, and case {case.case_id!r} has {listed}")
                parts: list[tuple[str, list[int] | None]] = [(f"{case.case_id}/slice{s + 1:03d}", [s]) for s in range(next(iter(counts.values())))]
            else:
                parts = [(case.case_id, None)]
            for case_id, index in parts:
                case_rows.append((case_id, str(case.folder)))
                todo = [(case_id, None if m == reference else m, m) for m in shown]
                ids = _image_ids(len(todo), taken)
                taken.update(ids)
                # Shuffled within the case: the order files are written in says nothing about methods.
                for k in rng.permutation(len(todo)):
                    _, method, name = todo[k]
                    volume = volumes[name] if index is None else volumes[name].select_slices(index)
                    write_image(images, ids[k], volume)
                    jobs.append((ids[k], case_id, method, case.volumes[name]))
            if progress is not None:
                progress(number + 1, len(cases))
        stamp = time.time()
        for f in images.iterdir():  # one file time for all: modification times say nothing
            os.utime(f, (stamp, stamp))

        # Items in the canonical order (case, then method); the images were written shuffled.
        rank = {m: i for i, m in enumerate(chosen)}
        case_rank = {c: i for i, (c, _) in enumerate(case_rows)}
        scored = [(i, c, m, p) for i, c, m, p in jobs if m is not None]
        scored.sort(key=lambda j: (case_rank[j[1]], rank[j[2]]))
        items = [(image_id, case_id, method, str(path)) for image_id, case_id, method, path in scored]
        refs = [(case_id, image_id, str(path)) for image_id, case_id, method, path in jobs if method is None]
        study_id = secrets.token_hex(16)
        created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        hanging_text = "a reference image beside each scored image" if reference else "one image at a time"
        # What the readers' folder records: nothing that names a method, a case source or a setting
        # from which the blinding could be recomputed.
        blind = {"study_id": study_id, "created": created_at, "diffrecon_version": __version__,
                 "hanging": hanging_text}
        by_case_ref = {case_id: image_id for image_id, case_id, method, _ in jobs if method is None}
        store = StudyStore.create(staging / DB_NAME)
        try:
            store.initialise(meta=blind, items=[i for i, _, _, _ in items],
                             hanging={i: by_case_ref[c] for i, c, _, _ in items if c in by_case_ref},
                             questions=[QUESTIONS[q] for q in question_ids])
            for name in reader_names:
                ensure_reader(store, name)
        finally:
            store.close()
        write_json(staging / MANIFEST, {
            "format": "diffrecon reader study",
            **blind,
            "images": len(items),
            "readers": reader_names,
            "questions": [{"id": q, "kind": QUESTIONS[q].kind, "prompt": QUESTIONS[q].prompt,
                           "anchors": QUESTIONS[q].anchors, "required": QUESTIONS[q].required}
                          for q in question_ids],
            "note": "Images are named by random ids; which method each shows is only in the study owner's key file.",
        })
        study_key = StudyKey(study_id, case_rows, chosen, items, refs, {
            "created": created_at, "diffrecon_version": __version__, "reference": reference, "slices": slices,
            "each_slice": bool(each_slice), "command": command, "study_folder": str(out)})
        try:
            key_staging = write_key(study_key, key_path.with_name(key_path.name + f".creating-{os.getpid()}"))
        except OSError as exc:
            raise StudyDesignError(f"{key_path}: the study's key cannot be written there "
                                   f"({exc.strerror or exc}); choose another place with --key") from exc
        if out.exists():  # an empty folder, or a study without answers: checked again, just before
            _check_target(out)
            shutil.rmtree(out)
        staging.rename(out)
        os.replace(key_staging, key_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for leftover in key_path.parent.glob(f"{key_path.name}.creating-{os.getpid()}*"):
            leftover.unlink(missing_ok=True)
        raise
    return CreatedStudy(out, key_path, [c for c, _ in case_rows], chosen, reader_names, question_ids, len(items),
                        time.perf_counter() - started)


def _load(path: Path):
    return load_volume(path)


def _with_shared_geometry(volumes: dict, chosen: list[str], reference: str | None) -> dict:
    """Give every image of a case one geometry (spacing, orientation, modality, units, window).

    Otherwise the geometry could unblind: a ``.npy`` method shows 1 mm pixels and no
    modality while a NIfTI one shows its true spacing. The geometry comes from the
    reference, else the first method read from a format that stores geometry. Volumes
    of different shapes keep their own (there is nothing to share).
    """
    if len({v.shape for v in volumes.values()}) != 1:
        return volumes
    candidates = ([reference] if reference else []) + [m for m in chosen if volumes[m].source_format != "numpy"]
    source = volumes[candidates[0]] if candidates else volumes[chosen[0]]
    return {m: replace(v, spacing=source.spacing, affine=source.affine, modality=source.modality,
                       units=source.units, window=source.window)
            for m, v in volumes.items()}
