"""The study key: which method and source each blinded image shows, kept apart from the readers.

``study create`` writes it beside the study folder, never inside it (default
``STUDY.key.json``, owner-only permissions): the folder is what readers receive, and
from it alone no method can be recovered. ``study report`` joins the readers' answers
(image ids) with this key. A key and a study carry the same random ``study_id``, so a
key from another study is refused rather than silently mislabelling every score.

:class:`KeyedStudy` is the owner's view: the reader-side store plus the key, offering
cases, methods and items (id, case, method) in the canonical order for the statistics.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import quoted
from .store import Answer, Item, Question, StudyStore, StudyStoreError

KEY_FORMAT = "diffrecon reader study key/1"
KEY_SUFFIX = ".key.json"


def default_key_path(study: str | Path) -> Path:
    """``my-study.key.json`` beside the folder ``my-study``."""
    study = Path(study)
    return study.parent / f"{study.resolve().name}{KEY_SUFFIX}"


@dataclass
class StudyKey:
    study_id: str
    cases: list[tuple[str, str]]  # (case id, source folder), canonical order
    methods: list[str]
    items: list[tuple[str, str, str, str]]  # (image id, case id, method, source), canonical order
    references: list[tuple[str, str, str]]  # (case id, image id, source)
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": KEY_FORMAT,
            "study_id": self.study_id,
            "note": "Keep this file away from the readers: it says which method each image shows.",
            "settings": self.settings,
            "methods": self.methods,
            "cases": [{"id": c, "source": s} for c, s in self.cases],
            "items": [{"id": i, "case": c, "method": m, "source": s} for i, c, m, s in self.items],
            "references": [{"case": c, "image": i, "source": s} for c, i, s in self.references],
        }

    @classmethod
    def from_json(cls, path: Path, data: Any) -> StudyKey:
        try:
            if data.get("format") != KEY_FORMAT:
                raise ValueError("format")
            return cls(
                study_id=str(data["study_id"]),
                cases=[(str(c["id"]), str(c["source"])) for c in data["cases"]],
                methods=[str(m) for m in data["methods"]],
                items=[(str(i["id"]), str(i["case"]), str(i["method"]), str(i["source"])) for i in data["items"]],
                references=[(str(r["case"]), str(r["image"]), str(r["source"])) for r in data["references"]],
                settings=dict(data.get("settings") or {}),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise StudyStoreError(f"{quoted(path)}: is not a diffrecon study key file") from exc


def write_key(key: StudyKey, path: Path) -> Path:
    """Write the key atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(key.to_json(), fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_key(path: str | Path) -> StudyKey:
    path = Path(path)
    if not path.is_file():
        raise StudyStoreError(f"{quoted(path)}: no such key file; `study report` needs the key that "
                              "`study create` wrote beside the study folder (give it with --key)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StudyStoreError(f"{quoted(path)}: is not a diffrecon study key file") from exc
    return StudyKey.from_json(path, data)


class KeyedStudy:
    """The study owner's view: answers from the store, cases and methods from the key."""

    def __init__(self, store: StudyStore, key: StudyKey, key_path: Path | None = None):
        if store.meta("study_id") != key.study_id:
            raise StudyStoreError(f"{quoted(key_path or 'the key')}: is the key of another study "
                                  f"(not of {quoted(store.folder)})")
        ids = set(store.image_ids())
        if ids != {i for i, _, _, _ in key.items}:
            raise StudyStoreError(f"{quoted(key_path or 'the key')}: does not list the images of "
                                  f"{quoted(store.folder)}; the key or the study was changed")
        self.store = store
        self.key = key
        self.folder = store.folder

    def items(self) -> list[Item]:
        """Every scored image with its case and method, in the canonical order (case, then method)."""
        return [Item(i, c, m) for i, c, m, _ in self.key.items]

    def cases(self) -> list[str]:
        return [c for c, _ in self.key.cases]

    def methods(self) -> list[str]:
        return list(self.key.methods)

    def questions(self) -> list[Question]:
        return self.store.questions()

    def readers(self) -> list[str]:
        return self.store.readers()

    def answers(self, reader: str | None = None) -> list[Answer]:
        return self.store.answers(reader)

    def reading_seconds(self, reader: str | None = None) -> dict[tuple[str, str], float]:
        return self.store.reading_seconds(reader)

    def image_ids(self) -> list[str]:
        return self.store.image_ids()

    def __getattr__(self, name: str) -> Any:  # answering, readers' orders...: the store's own
        return getattr(self.store, name)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> KeyedStudy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_keyed(study: str | Path, key_path: str | Path | None = None) -> KeyedStudy:
    """The study in ``study`` joined with its key (default: ``STUDY.key.json`` beside it)."""
    from .store import open_store

    path = Path(key_path) if key_path is not None else default_key_path(study)
    store = open_store(study)  # "not a study" comes before "no key"
    try:
        key = read_key(path)
        return KeyedStudy(store, key, path)
    except BaseException:
        store.close()
        raise
