#!/usr/bin/env bash
# Ship a trained prior as a bundled one:
#
#   bash packaging/ship-prior.sh TRAINED.safetensors [NAME]
#
# writes resources/models/NAME.safetensors (default NAME: the trained file's) with float16
# weights (half the bytes; loading widens them back to float32, and network outputs move
# by about 2e-4 relative: engine/diffusion/checkpoint.py, save_half_precision), copies the
# model card NAME.md and the loss curve NAME.train.jsonl beside it, notes the storage in
# the card, and prints what a lent GPU would then receive (train-on-device.sh size).
# Never ship the resume state (NAME.train.safetensors): optimiser moments stay out of git.
# Ship only a prior whose card's test-subject figures beat the one it replaces, calibrate
# its sigma (README: Uncertainty), and commit it once.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 TRAINED.safetensors [NAME]" >&2; exit 2; }
src="$1"
name="${2:-$(basename "$src" .safetensors)}"
stem="${src%.safetensors}"
dst="resources/models/$name"
PY="${PYTHON:-.venv/bin/python}"
"$PY" -c 'import sys; from diffrecon.diffusion.checkpoint import save_half_precision as h; h(sys.argv[1], sys.argv[2])' \
    "$src" "$dst.safetensors"
for extra in md train.jsonl; do
    if [ -f "$stem.$extra" ] && [ "$(realpath "$stem.$extra")" != "$(realpath -m "$dst.$extra")" ]; then
        cp "$stem.$extra" "$dst.$extra"
    fi
done
if [ -f "$dst.md" ] && ! grep -q '^\*\*Stored as float16' "$dst.md"; then
    cat >> "$dst.md" <<CARD

**Stored as float16** ($(date +%F), \`packaging/ship-prior.sh\`): the shipped file holds the
weights rounded to float16, half the bytes; loading widens them back to float32. Network
outputs move by about 2e-4 relative; the figures above were measured with the float32
weights (their digest: \`stored_as\` in the file's header).
CARD
fi
ls -la "$dst".*
bash packaging/train-on-device.sh size || true
