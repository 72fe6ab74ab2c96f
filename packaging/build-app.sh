#!/usr/bin/env bash
# Build the desktop app as a PyInstaller one-folder bundle, then smoke-test it headless.
#
#   bash packaging/build-app.sh             # -> dist/diffrecon/ (start dist/diffrecon/diffrecon)
#   DIFFRECON_SKIP_SMOKE=1 bash ...         # build only
#
# The bundle holds Python, diffrecon from its wheel (with the priors, samples and presets),
# torch (CPU), Qt and the rest: copy the folder anywhere (same OS and glibc or newer) and run
# it; dist/diffrecon/install-desktop-entry.sh adds it to the application menu. It takes
# minutes, so the test suite does not run it: this script is its own check.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash packaging/setup.sh
WORK=build/app
DIST=dist
APP="$DIST/diffrecon"
start=$(date +%s)
rm -rf "$WORK" "$APP"
mkdir -p "$WORK"

# 1. diffrecon installed from its wheel, in a venv that reuses .venv's dependencies (no second torch).
.venv/bin/python -m pip wheel --no-deps -q -w "$WORK/wheel" .
"$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" -m venv "$WORK/venv"
deps=$(.venv/bin/python -c 'import pathlib, torch; print(pathlib.Path(torch.__file__).resolve().parents[1])')
site=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/zz_deps.pth"
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WORK"/wheel/diffrecon-*.whl
"$WORK/venv/bin/python" -m pip install -q "pyinstaller>=6.10,<7"

# 2. The bundle, with the desktop entry and icon beside the binary.
"$WORK/venv/bin/python" -m PyInstaller --noconfirm --log-level WARN --distpath "$DIST" \
    --workpath "$WORK/pyinstaller" packaging/app/diffrecon.spec
cp packaging/app/diffrecon.desktop packaging/app/diffrecon.png packaging/app/install-desktop-entry.sh "$APP/"
built=$(date +%s)
echo "build-app: $APP built in $((built - start)) s, $(du -sh "$APP" | cut -f1) ($(find "$APP" -type f | wc -l) files)"

# 3. Smoke test: the bundled binary, from elsewhere, on its own bundled sample and prior, offscreen.
[ -n "${DIFFRECON_SKIP_SMOKE:-}" ] && exit 0
smoke=$(mktemp -d)
trap 'rm -rf "$smoke"' EXIT
bin=$(pwd)/$APP/diffrecon
sample=$(find "$APP" -path '*diffrecon/resources/samples/colin27-t1-slab.nii.gz' | head -n 1)
[ -n "$sample" ] || { echo "build-app: the bundle has no sample scan" >&2; exit 1; }
sample=$(pwd)/$sample
(
  cd "$smoke"
  unset DIFFRECON_RESOURCES PYTHONPATH
  "$bin" info "$sample" | tee info.txt
  grep -q "nifti" info.txt
  QT_QPA_PLATFORM=offscreen "$bin" --threads 1 view --run --steps 10 --screenshot "$smoke/panes.png"
  [ -s "$smoke/panes.png" ] || { echo "build-app: view --run wrote no screenshot" >&2; exit 1; }
)
mkdir -p "$WORK"
cp "$smoke/panes.png" "$WORK/smoke-panes.png"
echo "build-app: smoke test passed in $(( $(date +%s) - built )) s (screenshot: $WORK/smoke-panes.png)"
