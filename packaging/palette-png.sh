#!/usr/bin/env bash
# Rewrite PNGs (viewer screenshots, older figures) as 256-colour PNGs, as the bench's
# figures are written (engine/bench/figures.py, write_palette_png): less than half the
# bytes, within a few levels of the original. Usage: bash packaging/palette-png.sh FILE.png...
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" - "$@" <<'PYTHON'
import sys
from pathlib import Path

from PIL import Image

from diffrecon.bench.figures import write_palette_png

for name in sys.argv[1:]:
    path = Path(name)
    before = path.stat().st_size
    with Image.open(path) as image:
        image.load()
    write_palette_png(image, path)
    print(f"{path}: {before / 1e3:.0f} KB -> {path.stat().st_size / 1e3:.0f} KB")
PYTHON
