#!/usr/bin/env bash
# Set up and run the main job: the viewer on the bundled T1 brain sample, with the
# bundled MRI prior, ready to press Run. Extra arguments go to `diffrecon view`, e.g.
#   bash packaging/quickstart.sh resources/samples/cranium-ct-slab
set -euo pipefail
cd "$(dirname "$0")/.."
bash packaging/setup.sh
exec .venv/bin/diffrecon view "$@"
