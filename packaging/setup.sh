#!/usr/bin/env bash
# Set up diffrecon on a fresh Debian machine: system libraries Qt needs, the sample
# training scans, and a virtual environment in .venv with diffrecon installed
# (editable) and its test tools. Safe to run again: it only adds what is missing.
#
#   bash packaging/setup.sh          # runtime + test tools
#   DIFFRECON_SKIP_APT=1 bash ...    # skip apt (no root, or already installed)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # Qt's xcb platform plugin (a real window) and offscreen rendering
  libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-randr0
  libxcb-xinerama0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libxkbcommon0
  libegl1 libgl1 libopengl0 libfontconfig1 libdbus-1-3 fonts-dejavu-core
  # a virtual screen for screenshots and GUI checks without a display
  xvfb
  # real scans that ship in Debian: the Colin27 T1 brain and a head CT (see engine/datasets.py)
  mricron-data invesalius-examples
)

if [ -z "${DIFFRECON_SKIP_APT:-}" ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# Python 3.11 to 3.13: the versions torch 2.13.0 and PySide6-Essentials 6.11.3 have wheels for
# (pyproject.toml's requires-python). The first one found wins; PYTHON=... picks another.
supported='import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))'
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c "$supported" 2>/dev/null; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "setup: diffrecon needs Python 3.11, 3.12 or 3.13 (set PYTHON=/path/to/python3.1x)" >&2; exit 1; }
"$PY" -c "$supported" || { echo "setup: $PY is $("$PY" -V 2>&1); diffrecon needs Python 3.11, 3.12 or 3.13" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv .venv
fi
# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages. PyPI's Linux
# torch wheels are CUDA builds (about 5 GB installed); DIFFRECON_TORCH_INDEX=https://download.pytorch.org/whl/cpu
# takes the CPU-only build (about 0.8 GB) from PyTorch's own index instead.
if [ -n "${DIFFRECON_TORCH_INDEX:-}" ]; then
  .venv/bin/python -m pip install -q "torch==2.13.0" --index-url "$DIFFRECON_TORCH_INDEX"
else
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup: ready (.venv/bin/diffrecon)"
