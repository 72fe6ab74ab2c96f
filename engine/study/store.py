"""The study database: one SQLite file per study, every read and write of it.

Durability is the point of this module. A reader's confirmed score must survive the
process being killed at any moment, and two readers scoring at once on one machine
must not corrupt the file, so:

* :func:`connect` puts the database in WAL mode (readers never block the writer) with
  ``synchronous=FULL`` (a commit is on disk when it returns), a busy timeout of several
  seconds (a second writer waits instead of failing) and foreign keys on.
* Every write is one ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction, committed before
  the call returns; ``IMMEDIATE`` takes the write lock up front, so two processes never
  both read-then-write and lose one another's update.
* ``scores`` holds one answer per reader x item x question (UNIQUE, written by an
  upsert); an edit first copies the previous row into ``score_history``.

Blinding: this database travels with the readers, so it holds image ids (random
tokens), the questions, readers, their orders and their answers, and nothing else: no
method, case name, source path or canonical order (items are stored WITHOUT ROWID,
ordered by their random ids, so not even the insertion order survives). The id ->
(case, method, source) mapping is the key file (:mod:`.key`) that the study owner keeps.

A deleted or replaced database must never swallow answers: SQLite keeps writing to an
unlinked file as if nothing happened, so every write checks, inside its transaction and
just before COMMIT, that the path still names the very file (device and inode) opened.

Values are stored as the question's kind says: integers for Likert scales, 1/0 for
yes/no, text for comments.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..errors import DiffreconError

# 2: the reader-side database holds image ids and answers only; which method and source
# each image shows is in the study's key file (:mod:`.key`), kept apart by the owner.
SCHEMA_VERSION = 2
DB_NAME = "study.sqlite"
BUSY_TIMEOUT_S = 10.0  # a second writer waits this long for the lock before the answer is refused

QUESTION_KINDS = ("likert", "yesno", "text")

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE items (
    id TEXT PRIMARY KEY                       -- the opaque image id under images/, nothing else
) WITHOUT ROWID;
CREATE TABLE hanging (
    item TEXT PRIMARY KEY REFERENCES items(id),
    reference TEXT NOT NULL                   -- the image id hung beside it
) WITHOUT ROWID;
CREATE TABLE questions (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('likert', 'yesno', 'text')),
    prompt TEXT NOT NULL,
    anchors TEXT NOT NULL,                    -- JSON: {"1": "Non-diagnostic", ...} for Likert scales
    required INTEGER NOT NULL
);
CREATE TABLE readers (
    name TEXT PRIMARY KEY,
    added_at TEXT NOT NULL
);
CREATE TABLE reading_order (
    reader TEXT NOT NULL REFERENCES readers(name),
    position INTEGER NOT NULL,
    item TEXT NOT NULL REFERENCES items(id),
    PRIMARY KEY (reader, position),
    UNIQUE (reader, item)
);
CREATE TABLE scores (
    reader TEXT NOT NULL REFERENCES readers(name),
    item TEXT NOT NULL REFERENCES items(id),
    question TEXT NOT NULL REFERENCES questions(id),
    value NOT NULL,
    answered_at TEXT NOT NULL,
    UNIQUE (reader, item, question)
);
CREATE TABLE score_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reader TEXT NOT NULL,
    item TEXT NOT NULL,
    question TEXT NOT NULL,
    value NOT NULL,
    answered_at TEXT NOT NULL,
    replaced_at TEXT NOT NULL
);
CREATE TABLE reading_time (
    reader TEXT NOT NULL REFERENCES readers(name),
    item TEXT NOT NULL REFERENCES items(id),
    seconds REAL NOT NULL,
    PRIMARY KEY (reader, item)
);
"""


class StudyStoreError(DiffreconError):
    """The study database cannot be opened, read or written; one sentence."""


@dataclass(frozen=True)
class Question:
    id: str
    kind: str  # likert | yesno | text
    prompt: str
    anchors: dict[str, str]  # Likert value -> anchor text; yes/no: "1"/"0" -> "Yes"/"No"
    required: bool

    @property
    def scale(self) -> list[int]:
        """The Likert values, lowest first (empty for other kinds)."""
        return sorted(int(k) for k in self.anchors) if self.kind == "likert" else []


@dataclass(frozen=True)
class Item:
    id: str
    case_id: str
    method: str


@dataclass(frozen=True)
class Answer:
    reader: str
    item: str
    question: str
    value: Any
    answered_at: str


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect(db_path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """An autocommit connection in WAL mode, synchronous=FULL, with a busy timeout and foreign keys.

    Autocommit (``isolation_level=None``) because every write here opens its own
    ``BEGIN IMMEDIATE`` transaction: Python's implicit transactions would start them
    late (at the first write) and hold them open across calls.
    """
    con = sqlite3.connect(str(db_path), timeout=busy_timeout_s, isolation_level=None)
    try:
        con.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"the database cannot use write-ahead logging (journal mode {mode})")
        con.execute("PRAGMA synchronous = FULL")
        con.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        con.close()
        raise
    return con


def _reason(exc: BaseException, busy_timeout_s: float = BUSY_TIMEOUT_S) -> str:
    """sqlite3's error as the end of a sentence a reader can act on."""
    text = str(exc).strip().rstrip(".")
    low = text.lower()
    if "locked" in low or "busy" in low:
        return f"the database stayed locked by another process for over {busy_timeout_s:g} s"
    if "disk is full" in low or "database or disk is full" in low or getattr(exc, "errno", None) == errno.ENOSPC:
        return "the disk is full"
    if "readonly" in low or "read-only" in low:
        return "the study folder is read-only"
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return f"the database file is damaged ({text})"
    return text or type(exc).__name__


class StudyStore:
    """An open study database. Not thread-safe: one per thread (or process)."""

    def __init__(self, db_path: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S, _creating: bool = False):
        self.path = Path(db_path)
        self.folder = self.path.parent
        self.busy_timeout_s = busy_timeout_s
        if not _creating and not self.path.is_file():
            raise StudyStoreError(f"{self.folder}: is not a study (there is no {DB_NAME} in it)")
        try:
            self.con = connect(self.path, busy_timeout_s=busy_timeout_s)
            self._identity = self._file_identity()
        except sqlite3.Error as exc:
            raise StudyStoreError(f"{self.path}: cannot be opened: {_reason(exc, busy_timeout_s)}") from exc
        if self._identity is None:
            self.close()
            raise StudyStoreError(f"{self.path}: disappeared while it was being opened")
        if not _creating:
            self._check_schema()

    # ----- opening and closing -----

    def _check_schema(self) -> None:
        try:
            tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "meta" not in tables:
                raise StudyStoreError(f"{self.path}: is not a diffrecon study database (it has no meta table)")
            version = self.meta("schema_version")
        except sqlite3.Error as exc:
            self.close()
            raise StudyStoreError(f"{self.path}: cannot be read: {_reason(exc, self.busy_timeout_s)}") from exc
        except StudyStoreError:
            self.close()
            raise
        if version is None or not str(version).isdigit():
            self.close()
            raise StudyStoreError(f"{self.path}: is not a diffrecon study database (no schema version)")
        if int(version) < SCHEMA_VERSION:
            self.close()
            raise StudyStoreError(f"{self.path}: was made by an older diffrecon (study schema {version}) whose "
                                  "database named the methods beside the readers' images; recreate the study "
                                  "with `diffrecon study create` (this file is left as it is)")
        if int(version) > SCHEMA_VERSION:
            self.close()
            raise StudyStoreError(f"{self.path}: was made by a newer diffrecon (study schema {version}); "
                                  f"upgrade diffrecon to read it")

    def _file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file the path names now; None when it is gone."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _check_same_file(self, what: str) -> None:
        """Refuse to commit into a database file that was deleted or replaced since it was opened."""
        now = self._file_identity()
        if now is None:
            raise StudyStoreError(f"{what} was not saved: the study database {self.path} was deleted while "
                                  "the study was open; restore it from a backup and reopen the study")
        if now != self._identity:
            raise StudyStoreError(f"{what} was not saved: the study database {self.path} was replaced by "
                                  "another file while the study was open; reopen the study")

    def close(self) -> None:
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
            self.con = None  # type: ignore[assignment]  # closed: every later use fails loudly

    def __enter__(self) -> "StudyStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, what: str, statements) -> Any:
        """Run ``statements(cursor)`` as one IMMEDIATE transaction, committed before returning.

        On any failure the transaction is rolled back (nothing half-written) and the
        caller gets a StudyStoreError saying what was not saved.
        """
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StudyStoreError(f"{what} was not saved: {_reason(exc, self.busy_timeout_s)}") from exc
        try:
            result = statements(self.con)
            self._check_same_file(what)  # inside the transaction: nothing is committed to a lost file
            self.con.execute("COMMIT")
            return result
        except BaseException as exc:
            if self.con.in_transaction:
                try:
                    self.con.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise StudyStoreError(f"{what} was not saved: {_reason(exc, self.busy_timeout_s)}") from exc
            raise

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            return self.con.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StudyStoreError(f"{self.path}: cannot be read: {_reason(exc, self.busy_timeout_s)}") from exc

    # ----- building a study (design.py) -----

    @classmethod
    def create(cls, db_path: str | Path) -> "StudyStore":
        """A new, empty database with the schema (the file must not exist yet)."""
        path = Path(db_path)
        if path.exists():
            raise StudyStoreError(f"{path}: already exists")
        store = cls(path, _creating=True)
        # executescript() would commit on its own; one statement at a time keeps it one transaction.
        statements = [s.strip() for s in _SCHEMA.split(";") if s.strip()]
        store._write("the study's schema", lambda c: [c.execute(s) for s in statements])
        return store

    def initialise(self, *, meta: dict[str, Any], items: list[str], hanging: dict[str, str],
                   questions: list[Question]) -> None:
        """Fill a new study in one transaction: image ids, the reference hung beside each
        (``hanging``: item id -> reference image id), questions and settings."""

        def fill(c: sqlite3.Connection) -> None:
            c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                          [("schema_version", str(SCHEMA_VERSION))] + [(k, json.dumps(v)) for k, v in meta.items()])
            # Sorted by the random ids: the order rows are written in says nothing about methods.
            c.executemany("INSERT INTO items (id) VALUES (?)", [(i,) for i in sorted(items)])
            c.executemany("INSERT INTO hanging (item, reference) VALUES (?, ?)", sorted(hanging.items()))
            c.executemany("INSERT INTO questions (id, position, kind, prompt, anchors, required) VALUES (?, ?, ?, ?, ?, ?)",
                          [(q.id, i, q.kind, q.prompt, json.dumps(q.anchors), int(q.required))
                           for i, q in enumerate(questions)])

        self._write("the study's design", fill)

    # ----- what the study holds -----

    def meta(self, key: str) -> Any:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        if not rows:
            return None
        if key == "schema_version":
            return rows[0][0]
        return json.loads(rows[0][0])

    def image_ids(self) -> list[str]:
        """Every scored image's id (sorted: an order that says nothing)."""
        return [r[0] for r in self._read("SELECT id FROM items ORDER BY id")]

    def reference_image(self, item: str) -> str | None:
        """The id of the reference image hung beside ``item`` (None: single-image hanging)."""
        rows = self._read("SELECT reference FROM hanging WHERE item = ?", (item,))
        return rows[0][0] if rows else None

    def questions(self) -> list[Question]:
        return [Question(qid, kind, prompt, json.loads(anchors), bool(required)) for qid, kind, prompt, anchors, required
                in self._read("SELECT id, kind, prompt, anchors, required FROM questions ORDER BY position")]

    # ----- readers -----

    def readers(self) -> list[str]:
        return [r[0] for r in self._read("SELECT name FROM readers ORDER BY added_at, name")]

    def add_reader(self, name: str, order: list[str]) -> bool:
        """Register ``name`` with its presentation order (item ids); False when already there.

        Two processes adding the same new reader at once are serialised by the write
        lock: the second finds the reader and keeps the first one's order.
        """

        def add(c: sqlite3.Connection) -> bool:
            if c.execute("SELECT 1 FROM readers WHERE name = ?", (name,)).fetchone():
                return False
            c.execute("INSERT INTO readers (name, added_at) VALUES (?, ?)", (name, now_utc()))
            c.executemany("INSERT INTO reading_order (reader, position, item) VALUES (?, ?, ?)",
                          [(name, i, item) for i, item in enumerate(order)])
            return True

        return self._write(f"the reader {name!r}", add)

    def reading_order(self, reader: str) -> list[str]:
        return [r[0] for r in self._read("SELECT item FROM reading_order WHERE reader = ? ORDER BY position", (reader,))]

    # ----- answers -----

    def answer(self, reader: str, item: str, question: Question, value: Any, *, add_seconds: float = 0.0) -> bool:
        """Store one answer (and the reading time not yet saved) in one committed transaction.

        Returns True when the stored answer changed. An edit moves the previous answer
        into ``score_history``; giving the same answer again changes nothing.
        """
        value = check_value(question, value)
        stamp = now_utc()

        def upsert(c: sqlite3.Connection) -> bool:
            key = (reader, item, question.id)
            old = c.execute("SELECT value FROM scores WHERE reader = ? AND item = ? AND question = ?", key).fetchone()
            if add_seconds > 0:
                self._add_time(c, reader, item, add_seconds)
            if old is not None and old[0] == value:
                return False
            if old is not None:
                c.execute("INSERT INTO score_history (reader, item, question, value, answered_at, replaced_at) "
                          "SELECT reader, item, question, value, answered_at, ? FROM scores "
                          "WHERE reader = ? AND item = ? AND question = ?", (stamp, *key))
            c.execute("INSERT INTO scores (reader, item, question, value, answered_at) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (reader, item, question) DO UPDATE SET value = excluded.value, "
                      "answered_at = excluded.answered_at", (*key, value, stamp))
            return True

        return self._write(f"the answer to {question.id!r}", upsert)

    @staticmethod
    def _add_time(c: sqlite3.Connection, reader: str, item: str, seconds: float) -> None:
        c.execute("INSERT INTO reading_time (reader, item, seconds) VALUES (?, ?, ?) "
                  "ON CONFLICT (reader, item) DO UPDATE SET seconds = seconds + excluded.seconds",
                  (reader, item, float(seconds)))

    def add_time(self, reader: str, item: str, seconds: float) -> None:
        """Add seconds spent looking at ``item`` (committed at once)."""
        if seconds > 0:
            self._write("the reading time", lambda c: self._add_time(c, reader, item, seconds))

    def answers(self, reader: str | None = None) -> list[Answer]:
        sql = "SELECT reader, item, question, value, answered_at FROM scores"
        rows = self._read(sql + " WHERE reader = ?" if reader is not None else sql, (reader,) if reader is not None else ())
        return [Answer(*r) for r in rows]

    def answers_by_item(self, reader: str) -> dict[str, dict[str, Any]]:
        """``{item: {question: value}}`` for one reader."""
        found: dict[str, dict[str, Any]] = {}
        for a in self.answers(reader):
            found.setdefault(a.item, {})[a.question] = a.value
        return found

    def history(self, reader: str, item: str, question: str) -> list[tuple[Any, str, str]]:
        """Earlier answers, oldest first: (value, answered_at, replaced_at)."""
        return self._read("SELECT value, answered_at, replaced_at FROM score_history "
                          "WHERE reader = ? AND item = ? AND question = ? ORDER BY id", (reader, item, question))

    def reading_seconds(self, reader: str | None = None) -> dict[tuple[str, str], float]:
        sql = "SELECT reader, item, seconds FROM reading_time"
        rows = self._read(sql + " WHERE reader = ?" if reader is not None else sql, (reader,) if reader is not None else ())
        return {(r, i): s for r, i, s in rows}

    def count_answers(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM scores")[0][0])

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])


def check_value(question: Question, value: Any) -> Any:
    """The value as stored for this question, or a StudyStoreError saying why it cannot be."""
    if question.kind == "likert":
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
            raise StudyStoreError(f"{value!r} is not a score on the {question.id} scale")
        v = int(value)
        if v not in question.scale:
            raise StudyStoreError(f"{v} is outside the {question.id} scale "
                                  f"({question.scale[0]}-{question.scale[-1]})")
        return v
    if question.kind == "yesno":
        if isinstance(value, str) and value.strip().lower() in ("yes", "y", "1", "no", "n", "0"):
            return 1 if value.strip().lower() in ("yes", "y", "1") else 0
        if isinstance(value, (bool, int)) and int(value) in (0, 1):
            return int(value)
        raise StudyStoreError(f"{value!r} is not an answer to a yes/no question")
    if not isinstance(value, str):
        raise StudyStoreError(f"a {question.id} must be text")
    return value.strip()


def open_store(folder: str | Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> StudyStore:
    """The database of the study in ``folder`` (a StudyStoreError when it is not a study)."""
    p = Path(folder)
    if not p.exists():
        raise StudyStoreError(f"{p}: no such study folder")
    if p.is_file():
        if p.name == DB_NAME:
            p = p.parent
        else:
            raise StudyStoreError(f"{p}: is a file; give the study folder that `diffrecon study create` made")
    return StudyStore(p / DB_NAME, busy_timeout_s=busy_timeout_s)
