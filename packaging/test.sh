#!/usr/bin/env bash
# Set up (packaging/setup.sh), run the static checks (packaging/checks.sh: ruff, layer
# contracts, mypy), the whole test suite (GUI tests offscreen), then the torch-free smoke
# test on Python 3.13 where it is installed (packaging/smoke-newest-python.sh).
# Extra arguments go to pytest, e.g. `bash packaging/test.sh -k dicom`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
bash packaging/checks.sh
export QT_QPA_PLATFORM=offscreen
# Two workers on two cores; each worker runs torch single-threaded (tests/conftest.py).
.venv/bin/python -m pytest -n 2 -q "$@"
# The whole run (no pytest arguments) also smoke-tests the newest supported Python, if installed.
if [ $# -eq 0 ]; then bash packaging/smoke-newest-python.sh; fi
