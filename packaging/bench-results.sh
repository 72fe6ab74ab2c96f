#!/usr/bin/env bash
# Regenerate the benchmark results the README shows (resources/results/<modality>/).
# test: the test subjects no prior trained on and no default was tuned on (the figures
# that count; about 15 minutes per modality on one core). mri/ct/denoise: the held-out
# slabs of the training subjects (the older figures). On a 2-core CPU run two at a time
# with one torch thread each, as below.
set -euo pipefail
cd "$(dirname "$0")/.."
# the checkout's environment (packaging/setup.sh) unless DIFFRECON names another command
if [ -z "${DIFFRECON:-}" ]; then
  if [ -x .venv/bin/diffrecon ]; then DIFFRECON="$PWD/.venv/bin/diffrecon"; else DIFFRECON=diffrecon; fi
fi
out=resources/results
mri() {
  $DIFFRECON --threads 1 bench colin27 --modality mri --settings 4x,8x \
    --methods zero-filled,tv,l1-wavelet,diffusion,diffusion:ddim/dds/25/hot --slices 84:97:3 --grid-slices 1 \
    --steps 10,25,50,100,250,1000 --ablation-slices 2 --no-cases --out $out/mri
}
mri_fast() {  # the distilled 0.8 M-parameter student, for speed
  $DIFFRECON --threads 1 bench colin27 --modality mri --settings 4x,8x --methods tv,diffusion \
    --model resources/models/mri-brain-fast.safetensors --slices 84:97:3 --grid-slices 1 --no-cases \
    --out $out/mri-fast
}
ct() {
  $DIFFRECON --threads 1 bench cranium --modality ct --settings views=30,views=60,views=120,dose=0.25 \
    --methods fbp,tv,l1-wavelet,diffusion --slices 61:71:3 --grid-slices 1 --no-cases --out $out/ct
}
denoise_and_ultrasound() {
  $DIFFRECON --threads 1 bench colin27 --modality denoise --settings sigma=0.05,sigma=0.1,sigma=0.2 \
    --model resources/models/mri-brain.safetensors --slices 84:97:3 --grid-slices 1 --no-cases --out $out/denoise
  $DIFFRECON --threads 1 bench colin27 --modality ultrasound --settings looks=1 \
    --slices 84:97:3 --grid-slices 1 --no-cases --out $out/ultrasound
}
mri_test() {  # every MRI test subject, 3 slices each
  $DIFFRECON --threads 1 bench --modality mri --settings 4x,8x \
    --methods zero-filled,tv,l1-wavelet,diffusion:ddim/dds/25/noblend,diffusion --slices-per-subject 3 \
    --grid-slices 1 --no-cases --out $out/mri-test
}
ct_test() {  # the CT test subject (an abdomen under the head prior), 3 slices
  $DIFFRECON --threads 1 bench --modality ct --settings views=60,dose=0.25 \
    --methods fbp,tv,diffusion:ddim/dds/25/noblend,diffusion --slices-per-subject 3 \
    --grid-slices 1 --no-cases --out $out/ct-test
}
denoise_test() {  # every MRI test subject, 3 slices each, against BM3D (pip install bm3d) and TV
  local methods=tv,bm3d,diffusion
  if ! "$(dirname "$(command -v "$DIFFRECON")")/python" -c "import bm3d" 2>/dev/null; then
    echo "bench-results: BM3D is not installed (pip install bm3d; non-commercial licence): denoising without it" >&2
    methods=tv,diffusion
  fi
  $DIFFRECON --threads 1 bench --modality denoise --settings sigma=0.05,sigma=0.1,noise=poisson,noise=correlated \
    --methods $methods --slices-per-subject 3 --grid-slices 1 --no-cases --out $out/denoise-test
}
ultrasound_echo() {  # the held-out frames 7-9 of the one echo subject the ultrasound prior trained on
  $DIFFRECON --threads 1 bench echo --modality ultrasound --settings looks=1 \
    --methods median,tv,bm3d,diffusion --grid-slices 1 --no-cases --out $out/ultrasound-echo
}
case "${1:-all}" in
  test) mri_test & ct_test; wait; denoise_test ;;
  denoise-test) denoise_test ;;
  ultrasound) ultrasound_echo ;;
  mri) mri; mri_fast ;;
  ct) ct ;;
  denoise) denoise_and_ultrasound ;;
  all) (mri; mri_fast; denoise_and_ultrasound) & ct; wait ;;
  *) echo "usage: $0 [test|mri|ct|denoise|denoise-test|ultrasound|all]" >&2; exit 2 ;;
esac
