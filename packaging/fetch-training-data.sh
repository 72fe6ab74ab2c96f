#!/usr/bin/env bash
# Install the real scans diffrecon's priors train and validate on (see engine/datasets.py).
#
#   colin27  Colin27 T1          Debian package mricron-data
#   cranium  head CT (InVesalius) Debian package invesalius-examples
#   mni152   MNI152 2009a T1     inside the nilearn wheel (PyPI), extracted into
#                                ${DIFFRECON_DATA:-~/.cache/diffrecon/data}
#
# Idempotent: anything already in place is left alone, so running it twice is harmless.
set -euo pipefail

DATA_DIR="${DIFFRECON_DATA:-$HOME/.cache/diffrecon/data}"
MNI_NAME="mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_IN_WHEEL="nilearn/datasets/data/$MNI_NAME"

need_apt=()
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || need_apt+=(mricron-data)
[ -f /usr/share/doc/invesalius-examples/examples/Cranium.inv3 ] || need_apt+=(invesalius-examples)
if [ "${#need_apt[@]}" -gt 0 ]; then
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    echo "installing ${need_apt[*]} (apt)"
    "${sudo_cmd[@]}" apt-get install -y "${need_apt[@]}"
else
    echo "colin27 and cranium: already installed"
fi

if [ -s "$DATA_DIR/$MNI_NAME" ]; then
    echo "mni152: already at $DATA_DIR/$MNI_NAME"
else
    mkdir -p "$DATA_DIR"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps nilearn -d "$tmp"
    wheel="$(ls "$tmp"/nilearn-*.whl | head -n 1)"
    # A wheel is a zip; Python's zipfile avoids depending on the unzip tool.
    python3 - "$wheel" "$MNI_IN_WHEEL" "$DATA_DIR/$MNI_NAME" <<'PY'
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
import os
os.replace(dest + ".part", dest)  # never leave a half-written file where datasets.py looks
PY
    echo "mni152: extracted to $DATA_DIR/$MNI_NAME"
fi
