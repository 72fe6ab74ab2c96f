#!/usr/bin/env bash
# The newest Python diffrecon supports (3.13), where it is installed: CI's check that the
# package installs there and its torch-free commands work (--help, info on each sample
# format, one sentence and exit 2 for a broken file). The full suite needs torch, whose only
# cp313 wheel on PyPI for Linux is the CUDA build (about 5 GB with its nvidia-* wheels):
# with a CPU wheel at hand (DIFFRECON_TORCH_INDEX, or pip's find-links) run
# `PYTHON=python3.13 bash packaging/test.sh` in a fresh clone instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${NEWEST_PYTHON:-}"
if [ -z "$PY" ]; then
  # On PATH (a pyenv shim may be there without the version being active), else pyenv's own.
  for cand in python3.13 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13; do
    if "$cand" -V >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ]; then
  echo "smoke-newest-python: Python 3.13 is not installed here; skipped"
  exit 0
fi
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
"$PY" -m venv "$venv"
# Only what the torch-free commands import; the package itself without its dependencies.
"$venv/bin/python" -m pip install -q numpy scipy nibabel pydicom h5py safetensors
"$venv/bin/python" -m pip install -q --no-deps .
echo "smoke-newest-python: $("$venv/bin/python" -V) with diffrecon $("$venv/bin/python" -c 'import diffrecon; print(diffrecon.__version__)')"
run() { echo "+ diffrecon $*"; "$venv/bin/diffrecon" "$@"; }
run --help >/dev/null
run info resources/samples/colin27-t1-slab.nii.gz
run info resources/samples/colin27-kspace-singlecoil.h5
run info resources/samples/cranium-ct-slab
# A hostile file still gets one sentence and exit 2 on this Python.
bad=$(dirname "$venv")/broken.nii.gz
printf 'not a nifti' > "$bad"
set +e
"$venv/bin/diffrecon" info "$bad" 2>"$bad.err"; rc=$?
set -e
[ "$rc" = 2 ] && [ "$(wc -l < "$bad.err")" -le 1 ] || { echo "smoke-newest-python: a broken file gave exit $rc:"; cat "$bad.err"; exit 1; }
"$venv/bin/python" - <<'PY'
# The commands above never needed torch: prove it is absent here, not merely unused.
import importlib.util, sys
assert importlib.util.find_spec("torch") is None, "torch is installed in the smoke venv"
print("smoke-newest-python: passed without torch on", sys.version.split()[0])
PY
