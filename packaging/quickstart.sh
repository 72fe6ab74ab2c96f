#!/usr/bin/env bash
# Set up and run the main job on the bundled sample scan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
.venv/bin/diffrecon info resources/samples/colin27-t1-slab.nii.gz
