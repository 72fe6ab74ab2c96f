"""What a new user trips over on the command line (issue 16): scripted ``view`` runs that
stay open or exit as asked and report their metrics, the reader window's quit keys, and
help text that reads right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

pytest_plugins = ("viewer_support", "study_support")  # mr_nifti, tiny_prior; study

pytestmark = pytest.mark.gui


def _env(tmp_path) -> dict:
    return dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "config"),
                DIFFRECON_THREADS="1")


def _view_args(path, prior) -> list[str]:
    return [sys.executable, "-m", "diffrecon", "view", str(path), "--run", "--steps", "2", "--samples", "1",
            "--model", str(prior), "--baseline", "tv"]


def test_a_scripted_run_stays_open_until_asked_to_exit(tmp_path, mr_nifti, tiny_prior):
    proc = subprocess.Popen(_view_args(mr_nifti, tiny_prior), env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until the run has finished and said so
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "longest event-loop stall" in line:
                break
        assert any("frames/s" in ln for ln in lines), "".join(lines)
        assert any("against the reference" in ln and "PSNR" in ln for ln in lines), "".join(lines)
        time.sleep(2.0)
        assert proc.poll() is None, "the window closed when the run ended"
    finally:
        proc.terminate()
        proc.wait(30)


def test_exit_and_report_write_the_metrics(tmp_path, mr_nifti, tiny_prior):
    report = tmp_path / "runs" / "report.json"
    result = subprocess.run(_view_args(mr_nifti, tiny_prior) + ["--exit", "--report", str(report), "--device", "cpu"],
                            env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(report) in result.stdout
    data = json.loads(report.read_text())
    assert data["device"]["device"] == "cpu" and data["device"]["autocast"] in ("float32", "bfloat16")
    assert data["completed"] is True and data["command"] == "diffrecon view --run"
    assert set(data["metrics"]) == {"input", "diffusion", "baseline"}
    assert data["diffusion"]["steps"] == 2 and data["model"].endswith("tiny-mri.safetensors")
    line = next(ln for ln in result.stderr.splitlines() if "against the reference" in ln)
    psnr = data["metrics"]["diffusion"]["psnr"]
    assert f"diffusion PSNR {psnr:.2f} dB" in line


def test_exit_and_report_need_run(cli, tmp_path):
    from conftest import assert_one_sentence_error

    assert_one_sentence_error(cli("view", "--exit"), mentions="--run")
    assert_one_sentence_error(cli("view", "--report", tmp_path / "r.json"), mentions="--run")


@pytest.mark.parametrize("keys", ["ctrl+q", "esc"])
def test_the_reader_window_closes_on_ctrl_q_and_esc(qtbot, study, keys):
    from diffrecon.study import ReadingSession, open_store
    from diffrecon.viewer.reader_study import ReaderStudyWindow

    store = open_store(study)
    try:
        window = ReaderStudyWindow(ReadingSession(store, "alice"))
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        window.windowHandle().requestActivate()  # shortcuts reach the active window only
        qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=3000)
        window.image_pane.setFocus()
        if keys == "ctrl+q":
            QTest.keyClick(window.image_pane, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier)
        else:
            QTest.keyClick(window.image_pane, Qt.Key.Key_Escape)
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=3000)
    finally:
        window.close()  # before its store goes
        store.close()


def test_help_texts_read_right(cli):
    from diffrecon.study.report import count

    out = cli("study", "--help").out
    assert "%%" not in out and "95 % confidence intervals" in out
    assert (count(1, "reader"), count(2, "reader"), count(0, "case")) == ("1 reader", "2 readers", "0 cases")
    assert "mean nothing" in " ".join(cli("bench", "--help").out.split())
