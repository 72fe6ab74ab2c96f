#!/usr/bin/env bash
# Train every bundled prior further on a lent GPU machine (the `device` tool), in about
# MINUTES minutes, and bring the weights back. Two halves:
#
#   bash packaging/train-on-device.sh pack
#       here: pack every prior's training scans (normalised, cropped, quantised; see
#       engine/diffusion/packed.py) into .device/ (ignored by git; ~13 MiB), then `size`.
#   bash packaging/train-on-device.sh size
#       here: what would travel to the device (tracked files, untracked files git does not
#       ignore, .device/) against its 64 MiB; exits 1 when over. The bundled priors are
#       stored as float16 to keep this under the limit (packaging/ship-prior.sh).
#   bash packaging/train-on-device.sh train [MINUTES] [DEVICE]
#       there (device tool: command "bash packaging/train-on-device.sh train 8", carry
#       [".device"], timeout_s 600): fine-tune mri-brain and ct-head from the shipped weights
#       side by side on one GPU, with the generalising augmentations, and write the new
#       weights, model cards and logs to $OUT (or .device/out). Copy a prior into
#       resources/models only if its model card's test-subject figures beat the shipped one.
#       DEVICE defaults to auto (CUDA when present); `train 1 cpu` checks the whole path
#       on a CPU in a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
MRI_DATA=(colin27 mni152 heudiconv-dwi dipy-s0 dipy-aniso dipy-piesno nibabel-example4d dipy-t1 heudiconv-axasc35)
CT_DATA=(cranium)

case "${1:-}" in
  pack)
    PY="${PYTHON:-.venv/bin/python}"
    mkdir -p .device .git/info
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
    "$PY" -m diffrecon.cli.train --modality mri --pack-to .device/mri.npz "${MRI_DATA[@]}"
    "$PY" -m diffrecon.cli.train --modality ct --pack-to .device/ct.npz "${CT_DATA[@]}"
    exec bash "$0" size
    ;;
  size)
    limit=$((64 * 1024 * 1024))
    sum() { xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
    tracked=$(git ls-files -z | sum)
    untracked=$(git ls-files -z --others --exclude-standard | sum)
    packed=0; [ -d .device ] && packed=$(find .device -maxdepth 1 -type f -print0 | sum)
    total=$((tracked + untracked + packed))
    mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
    echo "travels to the device: $(mib "$total") of $(mib $limit) (tracked $(mib "$tracked"), untracked $(mib "$untracked"), .device $(mib "$packed"))"
    [ "$total" -le "$limit" ] || { echo "over the device's limit: the run would be refused" >&2; exit 1; }
    ;;
  train)
    minutes="${2:-8}"
    device="${3:-auto}"
    out="${OUT:-.device/out}"
    mkdir -p "$out"
    # The device machine has torch, numpy, scipy, safetensors and tqdm but no install of
    # diffrecon: import the engine folder as the `diffrecon` package.
    pkg="$(mktemp -d)"
    ln -s "$PWD/engine" "$pkg/diffrecon"
    export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    PY="${PYTHON:-python3}"
    [ -x .venv/bin/python ] && [ "$device" = cpu ] && PY=.venv/bin/python
    common=(--minutes "$minutes" --device "$device" --checkpoint-minutes 2 --val-every 200 --sizes 128 --quiet)
    # On a GPU the batch is larger (the crop sampler, on the CPU, is the limit there).
    batch=16; [ "$device" != cpu ] && batch=64
    "$PY" -m diffrecon.cli.train --packed .device/mri.npz --modality mri --out "$out/mri-brain.safetensors" \
        --init-from resources/models/mri-brain.safetensors --lr 1e-4 --batch "$batch" "${common[@]}" \
        > "$out/mri-brain.log" 2>&1 &
    "$PY" -m diffrecon.cli.train --packed .device/ct.npz --modality ct --out "$out/ct-head.safetensors" \
        --init-from resources/models/ct-head.safetensors --lr 1e-4 --batch "$batch" "${common[@]}" \
        > "$out/ct-head.log" 2>&1 &
    status=0
    wait %1 || status=1
    wait %2 || status=1
    rm -f "$out"/*.train.safetensors  # optimizer states: not worth the transfer
    tail -n 3 "$out"/*.log
    ls -la "$out"
    exit $status
    ;;
  *)
    echo "usage: $0 pack | size | train [MINUTES] [DEVICE]" >&2
    exit 2
    ;;
esac
