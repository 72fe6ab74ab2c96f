"""Shared test helpers. Tests make their own data (tiny volumes, real files on disk)."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

import numpy as np
import pytest

# Helper modules (not test files, so not collected): their asserts get pytest's messages too.
pytest.register_assert_rewrite("viewer_support", "study_support", "tiny_priors")

# Qt tests run without a display.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never write the CT system-matrix cache into the home folder.
os.environ.setdefault("DIFFRECON_CACHE_DIR", "off")

# Under pytest-xdist every worker takes a core: torch must not start a thread per core
# in each of them (2 workers x 2 threads on 2 cores runs 4x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*args: str) -> CliResult:
    """Run ``diffrecon ARGS`` in-process, capturing its exit status and output."""
    from diffrecon.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_one_sentence_error(result: CliResult, *, mentions: str | None = None) -> str:
    """The CLI's contract for bad input: exit 2, one line on stderr, no traceback."""
    assert result.code == 2, f"exit {result.code}, stderr={result.err!r}"
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line of error, got: {result.err!r}"
    assert lines[0].startswith("diffrecon: error: "), lines[0]
    assert "Traceback" not in result.err
    if mentions is not None:
        assert mentions.lower() in lines[0].lower(), f"{mentions!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use small tensors: one thread is fastest, and leaves the other core free."""
    with torch_threads(1):
        yield


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads, then restore the setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mri_prior():
    """A tiny complex-MR (2-channel) prior, trained once per test module (module fixtures
    run before the per-test thread setting, so this one sets it itself)."""
    from tiny_priors import train_tiny_prior

    with torch_threads(1):
        return train_tiny_prior(2)


@pytest.fixture(scope="module")
def ct_prior():
    """A tiny CT (1-channel, HU-normalised) prior, trained once per test module."""
    from tiny_priors import train_tiny_prior

    with torch_threads(1):
        return train_tiny_prior(1)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def phantom() -> np.ndarray:
    """A small head-like 3D phantom (6 x 64 x 64, float32 in [0, 1]) with edges and texture."""
    return make_phantom(6, 64, 64)


def make_phantom(slices: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(
        np.linspace(-1, 1, slices), np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij"
    )
    vol = np.zeros((slices, rows, cols), np.float32)
    head = (xx / 0.8) ** 2 + (yy / 0.9) ** 2 + (zz / 1.6) ** 2 < 1
    vol[head] = 0.3
    brain = (xx / 0.7) ** 2 + (yy / 0.8) ** 2 + (zz / 1.5) ** 2 < 1
    vol[brain] = 0.6
    for _ in range(5):
        cx, cy, r = rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), rng.uniform(0.05, 0.2)
        vol[((xx - cx) ** 2 + (yy - cy) ** 2 < r**2) & brain] = rng.uniform(0.2, 1.0)
    return vol
