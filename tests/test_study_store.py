"""Building a study and its database: layout, blinding, orders, answers, durability, concurrency.

Real SQLite files throughout; the durability test kills a scoring process with SIGKILL
and the concurrency test runs two scoring processes at once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from study_support import METHODS, write_cases

pytest_plugins = ("study_support",)  # its fixtures: case_root, study


def _scores(study) -> dict[tuple[str, str, str], object]:
    con = sqlite3.connect(study / "study.sqlite")
    try:
        return {(r, i, q): v for r, i, q, v in con.execute("SELECT reader, item, question, value FROM scores")}
    finally:
        con.close()


def test_create_lays_out_a_blinded_study(tmp_path, case_root):
    from diffrecon.study import create_study, open_keyed, open_store

    created = create_study([str(case_root)], tmp_path / "study", readers=["alice", "bob"],
                           questions=["quality", "artefact", "comment"])
    folder = created.folder
    assert created.cases == ["case01", "case02", "case03"] and created.methods == sorted(METHODS)
    assert {p.name for p in folder.iterdir()} == {"images", "study.json", "study.sqlite"}
    assert created.key == tmp_path / "study.key.json" and created.key.stat().st_mode & 0o077 == 0
    images = sorted((folder / "images").iterdir())
    assert len(images) == 2 * 3 * 2  # an .npy and a .json per case x method
    assert len({p.stat().st_mtime for p in images}) == 1  # file times do not give the write order away
    assert all(np.load(p).shape == (3, 16, 16) for p in images if p.suffix == ".npy")

    manifest = json.loads((folder / "study.json").read_text())
    assert manifest["readers"] == ["alice", "bob"] and "seed" not in manifest and "methods" not in manifest
    assert [q["id"] for q in manifest["questions"]] == ["quality", "artefact", "comment"]
    assert manifest["questions"][0]["anchors"]["1"].startswith("Non-diagnostic")

    with open_store(folder) as store:
        assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert store.con.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert store.meta("schema_version") == "2"
        alice, bob = store.reading_order("alice"), store.reading_order("bob")
    with open_keyed(folder) as keyed:  # the owner's view: the store joined with the key beside it
        items = keyed.items()
    assert [(i.case_id, i.method) for i in items] == [(c, m) for c in created.cases for m in sorted(METHODS)]
    assert {i.id for i in items} == {p.stem for p in images}
    assert sorted(alice) == sorted(bob) == sorted(i.id for i in items)
    assert alice != bob  # randomised per reader
    with open_store(folder) as store:
        assert store.reading_order("alice") == alice  # stored: the same order on reopening


def _every_byte_under(folder: Path) -> bytes:
    return b"".join(p.name.encode() + p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_a_readers_folder_reveals_no_method_and_no_mapping(tmp_path):
    """Read every file a reader receives: no method name, source path or setting that rebuilds the key."""
    from diffrecon.study import create_study, open_keyed, read_key

    methods = ("diffusionmethod", "zerofilledmethod", "totalvariation")
    write_cases(tmp_path / "cases", 3, methods, reference="groundtruthimage")
    study = create_study([str(tmp_path / "cases")], tmp_path / "out" / "study", readers=["ann"],
                         reference="groundtruthimage")
    with open_keyed(study.folder) as keyed:  # some answers and reading time, as a reader leaves them
        quality = keyed.questions()[0]
        for item in keyed.reading_order("ann")[:4]:
            keyed.answer("ann", item, quality, 3, add_seconds=2.0)
    blob = _every_byte_under(study.folder).lower()
    for secret in (*methods, "groundtruthimage", "case0", str(tmp_path), '"seed"'):
        assert secret.encode() not in blob, secret
    # The key has the mapping; the folder's own order of ids (file names, database pages) is the
    # random ids' order, which says nothing: a second study from the same inputs has new ids.
    key = read_key(study.key)
    assert {m for _, _, m, _ in key.items} == set(methods)
    again = create_study([str(tmp_path / "cases")], tmp_path / "again", reference="groundtruthimage")
    assert not {i for i, *_ in key.items} & {i for i, *_ in read_key(again.key).items}
    # A key from another study is refused, not used to mislabel every score.
    from diffrecon.study import StudyStoreError

    with pytest.raises(StudyStoreError, match="key of another study"):
        open_keyed(study.folder, again.key)


def test_an_answer_into_a_deleted_database_is_refused_not_lost(study):
    """SQLite happily commits into an unlinked file: the store must notice and refuse."""
    from diffrecon.study import ReadingSession, StudyStoreError, open_store

    store = open_store(study)
    session = ReadingSession(store, "alice")
    session.answer("quality", 4)
    session.next()
    (study / "study.sqlite").unlink()
    with pytest.raises(StudyStoreError, match="was deleted while the study was open"):
        session.answer("quality", 5)
    assert session.answers_for() == {}  # the session does not believe an answer that was not saved
    store.close()
    (study / "study.sqlite").write_bytes(b"")  # a new file at the same path: another inode
    with pytest.raises(StudyStoreError):
        open_store(study)


def test_an_answer_into_a_replaced_database_is_refused(tmp_path, study):
    import shutil

    from diffrecon.study import StudyStoreError, open_store

    store = open_store(study)
    item = store.reading_order("alice")[0]
    copy = tmp_path / "copy.sqlite"
    shutil.copy(study / "study.sqlite", copy)
    os.replace(copy, study / "study.sqlite")
    with pytest.raises(StudyStoreError, match="replaced by another file"):
        store.answer("alice", item, store.questions()[0], 2)
    store.close()


def test_a_new_reader_joins_with_an_order_of_their_own(study):
    from diffrecon.study import ReadingSession, open_store

    with open_store(study) as store:
        session = ReadingSession(store, "  carol ")
        assert session.added_reader and session.reader == "carol"
        assert store.readers() == ["alice", "bob", "carol"]
        again = ReadingSession(store, "carol")
        assert not again.added_reader and again.order == session.order == store.reading_order("carol")


def test_answers_upsert_one_per_reader_item_question_and_edits_keep_history(study):
    from diffrecon.study import StudyStoreError, open_store

    with open_store(study) as store:
        quality = store.questions()[0]
        item = store.reading_order("alice")[0]
        assert store.answer("alice", item, quality, 3, add_seconds=2.5) is True
        assert store.answer("alice", item, quality, 3) is False  # the same answer again changes nothing
        assert store.answer("alice", item, quality, 5, add_seconds=1.0) is True
        assert store.answer("bob", item, quality, 2) is True
        assert store.history("alice", item, "quality")[0][0] == 3
        assert len(store.history("alice", item, "quality")) == 1
        assert store.reading_seconds("alice") == {("alice", item): pytest.approx(3.5)}
        for bad in (0, 6, "x", 2.5, True):
            with pytest.raises(StudyStoreError):
                store.answer("alice", item, quality, bad)
        # The database itself refuses a second row for one reader x item x question.
        with pytest.raises(sqlite3.IntegrityError):
            store.con.execute("INSERT INTO scores (reader, item, question, value, answered_at) "
                              "VALUES ('alice', ?, 'quality', 1, 'now')", (item,))
        assert store.count_answers() == 2
    assert _scores(study)[("alice", item, "quality")] == 5


def test_recreating_never_overwrites_a_study_with_scores(tmp_path, study, case_root):
    from diffrecon.study import StudyDesignError, create_study, open_store

    before = sorted(p.name for p in (study / "images").iterdir())
    create_study([str(case_root)], study, readers=["alice"])  # no answers yet: replaced
    assert sorted(p.name for p in (study / "images").iterdir()) != before
    with open_store(study) as store:
        store.answer("alice", store.reading_order("alice")[0], store.questions()[0], 4)
    with pytest.raises(StudyDesignError, match="never overwritten"):
        create_study([str(case_root)], study)
    assert len(_scores(study)) == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(StudyDesignError, match="not a study"):
        create_study([str(case_root)], tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if ".creating-" in p.name]


def test_case_discovery_bench_layout_reference_and_reconstruct_names(tmp_path):
    from diffrecon.study import StudyDesignError, create_study, discover_cases

    bench = tmp_path / "bench"
    write_cases(bench / "cases", 2, methods=("tv", "diffusion", "ground-truth"), nifti=True)
    (bench / "summary.json").write_text("{}")
    for case in (bench / "cases").iterdir():  # sidecars and variance maps are not methods
        (case / "tv.json").write_text("{}")
        (case / "diffusion_var.nii.gz").write_bytes((case / "tv.nii.gz").read_bytes())
    found = discover_cases([str(bench)])
    assert [c.case_id for c in found] == ["case01", "case02"]
    created = create_study([str(bench)], tmp_path / "s1", reference="ground-truth", slices="1:3", each_slice=True)
    assert created.methods == ["diffusion", "tv"] and created.items == 2 * 2 * 2
    assert created.cases[0] == "case01/slice001"

    # `reconstruct --method tv,diffusion --out recon.nii.gz` names its outputs recon_tv, recon_diffusion.
    recon = tmp_path / "recon" / "c1"
    recon.mkdir(parents=True)
    for m in ("tv", "diffusion", "input"):
        np.save(recon / f"recon_{m}.npy", np.ones((1, 8, 8), np.float32))
    assert sorted(discover_cases([str(tmp_path / "recon" / "c*")])[0].volumes) == ["diffusion", "input", "tv"]

    with pytest.raises(StudyDesignError, match="no volume for the method 'fbp'"):
        create_study([str(bench)], tmp_path / "s2", methods=["tv", "fbp"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StudyDesignError, match="holds no images"):
        create_study([str(empty)], tmp_path / "s3")


def test_a_study_survives_sigkill_with_every_confirmed_score(study):
    """A scoring process is killed mid-loop: every score it confirmed is in the database."""
    code = textwrap.dedent("""
        import sys
        from diffrecon.study import open_store
        store = open_store(sys.argv[1])
        quality = store.questions()[0]
        items = store.reading_order("alice")
        i = 0
        while True:
            item, value = items[i % len(items)], 1 + i % 5
            store.answer("alice", item, quality, value, add_seconds=0.5)
            print(item, value, flush=True)  # only after the commit returned
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", code, str(study)], stdout=subprocess.PIPE, text=True)
    confirmed = [proc.stdout.readline().split() for _ in range(20)]
    os.kill(proc.pid, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    confirmed += [line.split() for line in rest.splitlines() if line.strip()]
    assert proc.returncode == -signal.SIGKILL

    from diffrecon.study import open_store

    with open_store(study) as store:
        assert store.integrity_check() == "ok"
        stored = _scores(study)
        for item in {i for i, _ in confirmed}:
            # What was confirmed for this item, in order, is what the database holds (history,
            # then the current answer): at most one answer more, committed before the kill.
            said = [int(v) for i, v in confirmed if i == item]
            kept = [v for v, _, _ in store.history("alice", item, "quality")] + [stored[("alice", item, "quality")]]
            assert kept[: len(said)] == said, (item, said, kept)
            assert len(kept) - len(said) <= 1


def test_two_processes_scoring_at_once_do_not_corrupt_the_study(study):
    """Different readers, the same reader on different items, and one new reader added by both."""
    code = textwrap.dedent("""
        import sys, time
        from diffrecon.study import ensure_reader, open_store
        store = open_store(sys.argv[1])
        part, own = int(sys.argv[2]), sys.argv[3]
        print("ready", flush=True)
        sys.stdin.readline()  # both start writing together
        started = time.time()
        ensure_reader(store, own)
        ensure_reader(store, "dave")  # both processes add dave at the same moment
        quality = store.questions()[0]
        for round_ in range(8):
            for reader in ("alice", "dave"):
                for item in store.reading_order(reader)[part::2]:
                    store.answer(reader, item, quality, 1 + (round_ + part) % 5)
            for item in store.reading_order(own):
                store.answer(own, item, quality, 1 + round_ % 5)
        print(started, time.time(), flush=True)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(study), str(part), own], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for part, own in ((0, "erin"), (1, "frank"))]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    (start_a, end_a), (start_b, end_b) = [map(float, out.split()) for out, _ in outputs]
    assert start_a < end_b and start_b < end_a  # the two really wrote at the same time

    from diffrecon.study import open_store

    with open_store(study) as store:
        assert store.integrity_check() == "ok"
        n = len(store.image_ids())
        scores = _scores(study)
        assert set(store.readers()) == {"alice", "bob", "dave", "erin", "frank"}
        for part, own in ((0, "erin"), (1, "frank")):
            assert all(scores[(own, i, "quality")] == 1 + 7 % 5 for i in store.reading_order(own))
            for reader in ("alice", "dave"):
                assert all(scores[(reader, i, "quality")] == 1 + (7 + part) % 5
                           for i in store.reading_order(reader)[part::2])
                assert all(len(store.history(reader, i, "quality")) == 7 for i in store.reading_order(reader))
        assert len(scores) == 4 * n


def test_a_database_locked_past_the_timeout_refuses_the_answer_in_one_sentence(study):
    from diffrecon.study import StudyStore, StudyStoreError

    holder = sqlite3.connect(study / "study.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
    try:
        store = StudyStore(study / "study.sqlite", busy_timeout_s=0.2)
        item = store.reading_order("alice")[0]
        with pytest.raises(StudyStoreError, match="was not saved: the database stayed locked by another process for over 0.2 s"):
            store.answer("alice", item, store.questions()[0], 3)
        assert not store.con.in_transaction
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.answer("alice", item, store.questions()[0], 3) is True  # the lock gone, it saves
    store.close()
