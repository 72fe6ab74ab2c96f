#!/usr/bin/env bash
# Set up (packaging/setup.sh), run the static checks (packaging/checks.sh: ruff, layer
# contracts, mypy) and the whole test suite, GUI tests offscreen.
# Extra arguments go to pytest, e.g. `bash packaging/test.sh -k dicom`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
bash packaging/checks.sh
export QT_QPA_PLATFORM=offscreen
# Two workers on two cores; each worker runs torch single-threaded (tests/conftest.py).
exec .venv/bin/python -m pytest -n 2 -q "$@"
