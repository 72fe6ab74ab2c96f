"""``diffrecon view``: the command line, and the scripted ``--run --screenshot`` mode end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest_plugins = ("viewer_support",)  # its fixtures: mr_nifti, tiny_prior

pytestmark = pytest.mark.gui


def _view(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "config"),
               DIFFRECON_THREADS="1")
    return subprocess.run([sys.executable, "-m", "diffrecon", "view", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_view_is_a_registered_subcommand_with_the_reconstruct_options(cli):
    from diffrecon.cli.main import SUBCOMMANDS

    assert "view" in SUBCOMMANDS
    result = cli("view", "--help")
    assert result.code == 0
    for option in ("--run", "--screenshot", "--modality", "--acceleration", "--mask", "--views", "--dose",
                   "--noise-sigma", "--steps", "--samples", "--sampler", "--guidance", "--seed", "--slice"):
        assert option in result.out, option


def test_screenshot_without_run_is_refused_in_one_sentence(cli, tmp_path):
    from conftest import assert_one_sentence_error

    assert_one_sentence_error(cli("view", "--screenshot", tmp_path / "x.png"), mentions="--run")


def test_run_and_screenshot_then_exit(tmp_path, mr_nifti, tiny_prior):
    from PIL import Image

    out = tmp_path / "shots" / "panes.png"
    result = _view(tmp_path, mr_nifti, "--run", "--screenshot", out, "--steps", "3", "--samples", "2",
                   "--model", tiny_prior, "--baseline", "tv", "--slice", "1", "--acceleration", "6",
                   "--mask", "equispaced", "--seed", "3", "--hallucination-map")
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    assert "frames/s" in result.stderr and "longest event-loop stall" in result.stderr
    rgb = np.asarray(Image.open(out).convert("RGB"), dtype=float)
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 120) & (rgb[..., 2] < 120)
    assert red.sum() > 20  # --hallucination-map: the overlay's red flags on the reconstruction
    image = np.asarray(Image.open(out).convert("L"), dtype=float)
    h, w = image.shape
    quadrants = [image[rows, cols] for rows in (slice(0, h // 2), slice(h // 2, h))
                 for cols in (slice(0, w // 2), slice(w // 2, w))]
    for q in quadrants:  # every pane drew something besides its overlay text
        assert (q > 40).mean() > 0.05


def test_an_unreadable_file_exits_with_one_sentence(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    result = _view(tmp_path, bad, "--run", "--screenshot", tmp_path / "never.png")
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("diffrecon")]
    assert len(lines) == 1 and "broken.h5" in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "never.png").exists()
