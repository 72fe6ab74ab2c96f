"""``diffrecon study``: create / report / status exit 0; bad input is one sentence and exit 2."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import assert_one_sentence_error

pytest_plugins = ("study_support",)  # its fixtures: case_root, study


def test_create_report_and_status_from_the_command_line(cli, tmp_path, case_root):
    out = tmp_path / "study"
    result = cli("study", "create", "--cases", case_root, "--out", out, "--readers", "ann,ben",
                 "--questions", "quality,artefact")
    assert result.code == 0, result.err
    assert result.out.strip() == str(out) and "3 cases x 2 methods" in result.err

    from diffrecon.study import open_store

    with open_store(out) as store:
        quality, artefact = store.questions()
        for reader, score in (("ann", 4), ("ben", 3)):
            for item in store.reading_order(reader)[:4]:
                store.answer(reader, item, quality, score)
                store.answer(reader, item, artefact, "no")
    status = cli("study", "status", out)
    assert status.code == 0 and "ann" in status.out and "4       6" in status.out
    report = cli("study", "report", out, "--out", tmp_path / "rep")
    assert report.code == 0, report.err
    assert "Fleiss' kappa" in report.out and str(tmp_path / "rep" / "scores_long.csv") in report.out
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.md", "scores_long.csv", "scores_by_method.png"}
    # The key lives beside the study; without it there is no report, and a moved key is named with --key.
    key = tmp_path / "study.key.json"
    assert key.is_file() and str(key) in result.err
    moved = tmp_path / "owner" / "k.json"
    moved.parent.mkdir()
    key.rename(moved)
    assert_one_sentence_error(cli("study", "report", out, "--out", tmp_path / "rep2"), mentions="--key")
    assert cli("study", "report", out, "--key", moved, "--out", tmp_path / "rep2").code == 0
    assert_one_sentence_error(cli("study", "create", "--cases", case_root, "--out", tmp_path / "s2",
                                  "--key", tmp_path / "s2" / "key.json"), mentions="must not be inside")


@pytest.mark.parametrize("args, mentions", [
    (("study", "create", "--cases", "{tmp}/nowhere", "--out", "{tmp}/s"), "no such case folder"),
    (("study", "create", "--cases", "{tmp}/empty", "--out", "{tmp}/s"), "holds no images"),
    (("study", "create", "--cases", "{cases}", "--out", "{tmp}/s", "--methods", "tv"), "no volume for the method 'tv'"),
    (("study", "create", "--cases", "{cases}", "--out", "{tmp}/s", "--questions", "beauty"), "unknown question"),
    (("study", "create", "--cases", "{cases}", "--out", "{tmp}/s", "--slices", "9"), "outside its 3 slices"),
    (("study", "create", "--cases", "{tmp}/broken", "--out", "{tmp}/s"), "tv.npy"),
    (("study", "report", "{tmp}/empty"), "is not a study"),
    (("study", "report", "{tmp}/fake"), "not a diffrecon study database"),
    (("study", "status", "{tmp}/garbage"), "damaged"),
    (("study", "read", "{tmp}/nowhere", "--reader", "ann"), "no such study folder"),
    (("study", "read", "{study}", "--reader", " "), "a reader needs a name"),
])
def test_bad_input_is_one_sentence_and_exit_2(cli, tmp_path, case_root, study, args, mentions):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken" / "c1").mkdir(parents=True)
    (tmp_path / "broken" / "c1" / "tv.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "fake").mkdir()
    sqlite3.connect(tmp_path / "fake" / "study.sqlite").execute("CREATE TABLE x (y)").connection.close()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "study.sqlite").write_bytes(b"this is not a database at all" * 100)
    filled = [a.format(tmp=tmp_path, cases=case_root, study=study) for a in args]
    assert_one_sentence_error(cli(*filled), mentions=mentions)
    assert not (tmp_path / "s").exists()


def test_a_study_with_scores_is_never_overwritten_from_the_command_line(cli, study, case_root):
    from diffrecon.study import open_store

    with open_store(study) as store:
        store.answer("alice", store.reading_order("alice")[0], store.questions()[0], 2)
    line = assert_one_sentence_error(cli("study", "create", "--cases", case_root, "--out", study),
                                     mentions="never overwritten")
    assert "1 answers" in line
    with open_store(study) as store:
        assert store.count_answers() == 1


def test_read_screenshot_draws_the_window_and_exits(tmp_path, study):
    from PIL import Image

    shot = tmp_path / "reader.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, "-m", "diffrecon", "study", "read", str(study), "--reader", "zoe",
                             "--screenshot", str(shot), "--size", "1000x640"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(shot) in result.stdout and "zoe joins the study" in result.stderr
    with Image.open(shot) as im:
        assert im.size == (1000, 640)
    from diffrecon.study import open_store

    with open_store(study) as store:
        assert "zoe" in store.readers()


def test_a_key_that_cannot_be_written_leaves_no_study(cli, tmp_path, case_root):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    assert_one_sentence_error(cli("study", "create", "--cases", case_root, "--out", tmp_path / "s",
                                  "--key", blocker / "k.json"), mentions="key cannot be written")
    assert not (tmp_path / "s").exists() and not [p for p in tmp_path.iterdir() if ".creating-" in p.name]
