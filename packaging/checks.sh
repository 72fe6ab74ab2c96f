#!/usr/bin/env bash
# The static checks CI runs before the tests (packaging/test.sh): ruff, the import-linter
# layer contracts and mypy on the engine. Configuration: pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin

"$PY/ruff" check engine viewer tests

# `diffrecon` is engine/ and `diffrecon.viewer` is viewer/ (two folders, one package):
# import-linter reads one folder, so give it both as one package tree of links.
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/diffrecon"
for entry in engine/*; do ln -s "$PWD/$entry" "$tree/diffrecon/$(basename "$entry")"; done
ln -s "$PWD/viewer" "$tree/diffrecon/viewer"
PYTHONPATH="$tree" "$PY/lint-imports" --no-cache

"$PY/mypy" engine
