"""The real scans diffrecon trains, tunes and tests on, one entry per scan, each with its role.

No dataset can be downloaded here, so priors learn from real scans that ship inside
packages; ``packaging/fetch-training-data.sh`` installs them all. Every entry says which
**subject** it shows and which **role** that subject plays, so that evaluation is by
subject, never by slab of a training subject:

* ``train``: priors may learn from it (all of it, except the legacy slab below);
* ``validation``: defaults and hyper-parameters are tuned on it; priors validate on it but
  never fit it;
* ``test``: nobody trains or tunes on it. ``diffrecon bench`` reports these subjects by
  default and the model cards quote them. :func:`check_trainable` refuses a test subject
  by name, and :func:`diffrecon.diffusion.data.load_sources` goes through it.

A subject with several scans (e.g. ``someones``: a T1 and an EPI) keeps one role for all
of them. Colin27, MNI152 and the InVesalius head CT also keep the axial slab the first
priors held out (``held_out_z_mm``, world millimetres; both brain templates share MNI
space, so they hold out the *same anatomy*); the bundled samples come from those slabs.
"""

from __future__ import annotations

import gzip
import os
import plistlib
import tarfile
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np

from .errors import DiffreconError
from .io.volume import Volume, affine_from_spacing

ROLES = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modality: str  # "MR" | "CT" | "US"
    role: str  # one of ROLES
    subject: str  # who was scanned: entries sharing a subject share a role
    anatomy: str  # brain | head | abdomen | heart
    candidates: tuple[str, ...]  # where the file(s) may be, first found wins; "{data}" = the data folder
    reader: str  # how to read it: see _READERS
    provenance: str
    licence: str
    held_out_z_mm: tuple[float, float] | None = None  # legacy held-out axial slab [lo, hi) of a train subject
    notes: str = ""


def _data_dir() -> Path:
    return Path(os.environ.get("DIFFRECON_DATA", Path.home() / ".cache" / "diffrecon" / "data"))


_BRAIN_MR: dict[str, Any] = dict(modality="MR", anatomy="brain")

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    # ---- brain MRI: train
    DatasetInfo("colin27", role="train", subject="colin-holmes", reader="nifti",
                candidates=("/usr/share/mricron/templates/ch2.nii.gz",), held_out_z_mm=(10.0, 30.0),
                provenance="Colin27 T1 (ch2.nii.gz, 1 mm, 27 averaged scans of one subject) from Debian package "
                           "mricron-data", licence="mricron-data: BSD-style (Debian copyright file)", **_BRAIN_MR),
    DatasetInfo("mni152", role="train", subject="mni152-average", reader="nifti",
                candidates=("{data}/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",), held_out_z_mm=(10.0, 30.0),
                provenance="MNI152 2009a symmetric T1 template (1 mm, average of 152 subjects) from the nilearn wheel "
                           "(nilearn/datasets/data)", licence="MNI template licence: free use with attribution "
                           "(copyright McConnell Brain Imaging Centre)", **_BRAIN_MR),
    DatasetInfo("heudiconv-dwi", role="train", subject="heudiconv-ke6hL9Lm", reader="dicom-mosaic",
                candidates=("{data}/heudiconv/b0dwi_for_fmap+00001.dcm", "{data}/heudiconv/b0dwi_for_fmap+00002.dcm",
                            "{data}/heudiconv/b0dwi_for_fmap+00003.dcm"),
                provenance="Siemens multiband diffusion b0 mosaics (1.5 mm, 3 volumes) from the heudiconv wheel "
                           "(heudiconv/tests/data/b0dwiForFmap)", licence="heudiconv: Apache-2.0", **_BRAIN_MR),
    DatasetInfo("dipy-s0", role="train", subject="dipy-s0", reader="nifti-frames",
                candidates=("{data}/dipy/S0_10slices.nii.gz",),
                provenance="diffusion b0 (128x128x10, 2 mm in-plane) from the dipy wheel (dipy/data/files)",
                licence="dipy: BSD-3-Clause", **_BRAIN_MR),
    DatasetInfo("dipy-aniso", role="train", subject="dipy-aniso", reader="nifti-frames",
                candidates=("{data}/dipy/aniso_vox.nii.gz",),
                provenance="anisotropic EPI-like head volume (58x58x24, 4x4x5 mm) from the dipy wheel (dipy/data/files)",
                licence="dipy: BSD-3-Clause", **_BRAIN_MR),
    DatasetInfo("dipy-piesno", role="train", subject="dipy-piesno", reader="nifti-frames",
                candidates=("{data}/dipy/test_piesno.nii.gz",),
                provenance="noisy diffusion-weighted head volume (96x96x14) from the dipy wheel (dipy/data/files)",
                licence="dipy: BSD-3-Clause", **_BRAIN_MR),
    DatasetInfo("nibabel-example4d", role="train", subject="nibabel-example4d", reader="nifti-frames",
                candidates=("{data}/nibabel/example4d.nii.gz",),
                provenance="fMRI EPI (128x96x24, 2 frames, 2x2x2.2 mm) from the nibabel wheel (nibabel/tests/data)",
                licence="nibabel: MIT", **_BRAIN_MR),
    # ---- brain MRI: validation (tuning only)
    DatasetInfo("dipy-t1", role="validation", subject="dipy-t1", reader="npy-slice",
                candidates=("{data}/dipy/t1_coronal_slice.npy",),
                provenance="one coronal T1 slice (256x256, skull-stripped) from the dipy wheel (dipy/data/files); "
                           "spacing not recorded (1 mm assumed)", licence="dipy: BSD-3-Clause", **_BRAIN_MR),
    DatasetInfo("heudiconv-axasc35", role="validation", subject="heudiconv-crlab", reader="dicom-mosaic",
                candidates=("{data}/heudiconv/axasc35.dcm",),
                provenance="Siemens EPI mosaic (64x64x35, 3.25 mm) from the heudiconv wheel (heudiconv/tests/data)",
                licence="heudiconv: Apache-2.0", **_BRAIN_MR),
    # ---- brain / head MRI: test (never trained or tuned on)
    DatasetInfo("someones-t1", role="test", subject="nibabel-someone", reader="nifti",
                candidates=("{data}/someones/someones_anatomy.nii.gz",),
                provenance="T1 of another subject (57x67x56, 2.75 mm) from Debian package python-nibabel-doc",
                licence="nibabel documentation: MIT", **_BRAIN_MR),
    DatasetInfo("someones-epi", role="test", subject="nibabel-someone", reader="nifti",
                candidates=("{data}/someones/someones_epi.nii.gz",),
                provenance="EPI of the same subject (53x61x33, 3 mm) from Debian package python-nibabel-doc",
                licence="nibabel documentation: MIT", **_BRAIN_MR),
    DatasetInfo("dxsamples", role="test", subject="dxsamples-head", reader="dx-raw", modality="MR", anatomy="head",
                candidates=("{data}/dxsamples/MRI.data",),
                provenance="head MRI at the skull base (128x128x16, 1.77x1.77x2.07 mm, big-endian uint16, layout in "
                           "mri.general) from Debian package dxsamples (OpenDX samples)",
                licence="dxsamples: IBM Public License 1.0"),
    # ---- CT
    DatasetInfo("cranium", role="train", subject="invesalius-promed-0051", reader="invesalius", modality="CT",
                anatomy="head", candidates=("/usr/share/doc/invesalius-examples/examples/Cranium.inv3",),
                # The CT has no world origin of its own; z is measured from its first slice.
                held_out_z_mm=(90.0, 108.0),
                provenance="Head CT 'ProMED CT 0051' (Cranium.inv3, 108x256x256 int16 HU) from Debian package "
                           "invesalius-examples", licence="invesalius-examples: GPL-2 (Debian copyright file)"),
    DatasetInfo("stent", role="test", subject="imageio-stent", reader="stent-npz", modality="CT", anatomy="abdomen",
                candidates=("{data}/imageio/stent.npz",),
                provenance="abdominal CT angiography with an aortic stent (256x128x128 int16) from Debian package "
                           "python3-imageio (imageio/resources/images/stent.npz)",
                licence="imageio: BSD-2-Clause",
                notes="values are HU clipped to 0-2000 and quantised in 62.5 HU steps (fat and air both read 0); "
                      "no spacing is stored: 1 mm isotropic is assumed"),
    # ---- ultrasound: one real subject (frames 7-9 of its cine held out), plus B-mode-like
    # images simulated from the brain and head training subjects
    DatasetInfo("echo", role="train", subject="octave-dicom-echo", reader="echo-bmode", modality="US",
                anatomy="heart", candidates=("{data}/octave-dicom/US-PAL-8-10x-echo.dcm",
                                             "/usr/share/octave/packages/dicom/imdata/US-PAL-8-10x-echo.dcm"),
                held_out_z_mm=(7.0, 10.0),  # frames 7, 8, 9 (the frame axis is read as 1 mm)
                provenance="echocardiography cine (10 palette-colour frames, 430x600) from Debian package "
                           "octave-dicom (imdata/US-PAL-8-10x-echo.dcm)", licence="octave-dicom: GPL-3+",
                notes="one subject: frames 0-6 train, 7-9 are held out (the same heart a few beats apart); "
                      "colour Doppler pixels, the sector outline and the annotations outside the imaging sector "
                      "are set to 0 (the display floor: blood, where Doppler flow is drawn, is anechoic)"),
    DatasetInfo("bmode-sim", role="train", subject="simulated from colin-holmes and invesalius-promed-0051",
                reader="bmode-sim", modality="US", anatomy="brain and head (simulated ultrasound)",
                candidates=("/usr/share/mricron/templates/ch2.nii.gz",
                            "/usr/share/doc/invesalius-examples/examples/Cranium.inv3"),
                provenance="B-mode-like images simulated from the training blocks of colin27 and cranium: "
                           "scatterers with the slice as reflectivity, an anisotropic point-spread function, the "
                           "envelope log-compressed to 50 dB in a 76-degree sector (engine/datasets.py, "
                           "_read_bmode_sim)", licence="as colin27 and cranium",
                notes="not ultrasound of anyone: anatomy of two training subjects rendered with speckle"),
)}


def datasets_with(modality: str, role: str) -> list[str]:
    """Names of the datasets of a modality (``MR``/``CT``/``US``) playing ``role``."""
    return [d.name for d in DATASETS.values() if d.modality == modality and d.role == role]


def check_trainable(name: str) -> DatasetInfo:
    """The entry of a dataset a prior may read while training; a test subject is refused."""
    info = DATASETS[name]
    if info.role == "test":
        raise DiffreconError(f"dataset '{name}' is a test subject ({info.subject}): no prior may train or "
                             f"validate on it, so that its scores stay honest")
    return info


def dataset_paths(name: str) -> list[Path]:
    """Every file of a dataset (all candidates that exist; a multi-file scan has several)."""
    info = DATASETS[name]
    found = [p for p in (Path(c.format(data=_data_dir())) for c in info.candidates) if p.exists()]
    if not found:
        raise DiffreconError(
            f"scan '{name}' is not installed ({info.provenance}); run packaging/fetch-training-data.sh"
        )
    return found


def dataset_path(name: str) -> Path:
    return dataset_paths(name)[0]


def load_dataset(name: str) -> Volume:
    """The scan's (first) volume, in diffrecon's canonical layout (axial slices, S/P/L)."""
    return load_dataset_volumes(name)[0]


def load_dataset_volumes(name: str) -> list[Volume]:
    """Every volume of a dataset (4D frames and multi-file scans are separate volumes)."""
    info = DATASETS[name]
    vols = _READERS[info.reader](dataset_paths(name))
    for v in vols:
        v.modality = info.modality
        if info.modality == "CT":
            v.units = "HU"
        v.metadata["dataset"] = name
    return vols


def _read_nifti(paths: list[Path]) -> list[Volume]:
    from .io import load_volume

    return [load_volume(p) for p in paths]


def _ras_to_volume(ras: np.ndarray, zooms: tuple[float, float, float], path: Path) -> Volume:
    """A RAS-canonical ``(x, y, z)`` array -> ``(slices, rows, cols)`` = (S, P, L)."""
    data = np.ascontiguousarray(np.transpose(ras, (2, 1, 0))[:, ::-1, ::-1]).astype(np.float32)
    spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
    return Volume(data=data, spacing=spacing, affine=affine_from_spacing(spacing), source_path=path,
                  source_format="nifti")


def _read_nifti_frames(paths: list[Path]) -> list[Volume]:
    """3D or 4D NIfTI; each 3D frame a volume."""
    import nibabel as nib

    vols = []
    for p in paths:
        img = nib.as_closest_canonical(nib.load(str(p)))
        data = np.asarray(img.dataobj, dtype=np.float32)
        frames: np.ndarray = data.reshape(data.shape[:3] + (-1,))
        zx, zy, zz = (float(z) for z in img.header.get_zooms()[:3])
        vols += [_ras_to_volume(frames[..., t], (zx, zy, zz), p) for t in range(frames.shape[-1])]
    return vols


def _read_dicom_mosaic(paths: list[Path]) -> list[Volume]:
    """Siemens mosaics (many slices tiled in one image), unpacked with nibabel's CSA reader."""
    from nibabel.nicom import dicomwrappers

    vols = []
    for p in paths:
        wrapper = dicomwrappers.wrapper_from_file(str(p))
        data = np.asarray(wrapper.get_data(), dtype=np.float32)  # (cols, rows, slices)
        dx, dy = (float(s) for s in wrapper.voxel_sizes[:2])
        dz = float(wrapper.voxel_sizes[2]) if len(wrapper.voxel_sizes) > 2 else dx
        data = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
        spacing = (dz, dy, dx)
        vols.append(Volume(data=data, spacing=spacing, affine=affine_from_spacing(spacing), source_path=p,
                           source_format="dicom"))
    return vols


def _read_dx_raw(paths: list[Path]) -> list[Volume]:
    """OpenDX's MRI sample: ``grid = 128x128x16``, msb uint16, last axis the slice (mri.general)."""
    p = paths[0]
    raw = np.fromfile(p, dtype=">u2")
    if raw.size != 128 * 128 * 16:
        raise DiffreconError(f"{p}: expected 128x128x16 big-endian uint16 voxels (mri.general), found {raw.size}")
    data = np.ascontiguousarray(np.transpose(raw.reshape(128, 128, 16), (2, 0, 1))).astype(np.float32)
    spacing = (2.066667, 1.773153, 1.773153)
    return [Volume(data=data, spacing=spacing, affine=affine_from_spacing(spacing), source_path=p,
                   source_format="dx-raw")]


def _read_npy_slice(paths: list[Path]) -> list[Volume]:
    p = paths[0]
    data = np.load(p, allow_pickle=False).astype(np.float32)  # never unpickle
    return [Volume(data=data[None], spacing=(1.0, 1.0, 1.0), source_path=p, source_format="numpy")]


def _read_stent(paths: list[Path]) -> list[Volume]:
    p = paths[0]
    with np.load(p, allow_pickle=False) as npz:
        data = np.asarray(npz["arr_0"], dtype=np.float32)
    return [Volume(data=data, spacing=(1.0, 1.0, 1.0), source_path=p, source_format="numpy",
                   window=(200.0, 800.0))]


def _read_dicom_frames(paths: list[Path]) -> list[Volume]:
    """A multi-frame DICOM (e.g. ultrasound cine) as one volume of frames; palette colour -> luminance."""
    import pydicom

    p = paths[0]
    ds = pydicom.dcmread(p)
    frames = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(frames, ds).astype(np.float32)
        frames = rgb @ np.array([0.299, 0.587, 0.114], np.float32) / 257.0
    data = np.asarray(frames, np.float32).reshape((-1,) + frames.shape[-2:])
    return [Volume(data=data, spacing=(1.0, 1.0, 1.0), source_path=p, source_format="dicom")]


ECHO_SECTOR_HALF_ANGLE_DEG = 38.0  # wide enough for the fan, narrow enough to miss the side markers
ECHO_SECTOR_RADIUS_PX = 380.0


def echo_bmode_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of a palette-colour echo cine ``(frames, H, W, 3)`` that show B-mode echoes:
    grey (R = G = B, so no Doppler colour or outline, dilated by one pixel) and inside the
    imaging sector (apex at the top centre), which leaves the text, ECG trace and colour
    bar out."""
    from scipy import ndimage

    colour = (rgb.max(axis=-1) - rgb.min(axis=-1)) >= 8 * 257
    colour = ndimage.binary_dilation(colour, structure=np.ones((1, 3, 3), bool))
    h, w = rgb.shape[1:3]
    yy, xx = np.mgrid[:h, :w]
    angle = np.degrees(np.arctan2(xx - w / 2, yy + 5))
    sector = (np.abs(angle) < ECHO_SECTOR_HALF_ANGLE_DEG) & (np.hypot(xx - w / 2, yy + 5) < ECHO_SECTOR_RADIUS_PX)
    return ~colour & sector[None]


def _read_echo_bmode(paths: list[Path]) -> list[Volume]:
    """The octave-dicom echo cine as grey B-mode display values, everything else 0 (:func:`echo_bmode_mask`)."""
    import pydicom
    from pydicom.pixels import apply_color_lut

    p = paths[0]
    ds = pydicom.dcmread(p)
    rgb = apply_color_lut(ds.pixel_array, ds)
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 257.0
    data = np.where(echo_bmode_mask(rgb), grey, 0.0).astype(np.float32)
    return [Volume(data=data, spacing=(1.0, 1.0, 1.0), source_path=p, source_format="dicom")]


def simulate_bmode_like(reflectivity: np.ndarray, rng: np.random.Generator, dynamic_range_db: float = 50.0
                        ) -> np.ndarray:
    """A B-mode-like display image in [0, 1] of a 2D ``reflectivity`` map (>= 0).

    Scatterers: circular complex Gaussian amplitudes times the reflectivity, blurred by a
    Gaussian point-spread function that is longer laterally (1.6 px) than axially (0.7 px),
    as a transducer's is; the envelope is log-compressed against its 99.9th percentile,
    with a depth gain ramp, and only a 76-degree sector (apex at the top) is kept.
    """
    from scipy import ndimage

    h, w = reflectivity.shape
    scatter = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))) * reflectivity
    blur = lambda a: ndimage.gaussian_filter(a, sigma=(0.7, 1.6))  # noqa: E731
    envelope = np.abs(blur(scatter.real) + 1j * blur(scatter.imag))
    envelope *= np.linspace(1.0, 0.6, h)[:, None]  # imperfect time-gain compensation
    ref = float(np.percentile(envelope, 99.9)) or 1.0
    db = 20.0 * np.log10(np.maximum(envelope, 1e-12) / ref)
    bmode = np.clip(1.0 + db / dynamic_range_db, 0.0, 1.0)
    yy, xx = np.mgrid[:h, :w]
    angle = np.degrees(np.arctan2(xx - w / 2, yy + 2))
    return np.where(np.abs(angle) < ECHO_SECTOR_HALF_ANGLE_DEG, bmode, 0.0).astype(np.float32)


def _read_bmode_sim(paths: list[Path]) -> list[Volume]:
    """B-mode-like images from the *training* blocks of colin27 and cranium (never a held-out
    slab): every 6th axial slice, reflectivity from the normalised intensity (plus a faint
    tissue floor so that soft tissue scatters), seeded so the data set is fixed."""
    rng = np.random.default_rng(2026)
    images = []
    for name in ("colin27", "cranium"):
        vol = load_dataset(name)
        for block in training_blocks(vol, name):
            for img in block[::6]:
                if vol.units == "HU":
                    refl = np.clip((img + 1000.0) / 2000.0, 0.0, None)
                else:
                    refl = np.abs(img) / max(float(np.percentile(np.abs(vol.data), 99.5)), 1e-6)
                if np.mean(refl > 0.1) < 0.2:
                    continue
                tissue = refl > 0.05
                refl = np.where(tissue, 0.15 + refl, 0.0)
                images.append(simulate_bmode_like(refl, rng))
    shape = (max(i.shape[0] for i in images), max(i.shape[1] for i in images))
    stack = np.zeros((len(images),) + shape, np.float32)
    for k, img in enumerate(images):
        stack[k, : img.shape[0], : img.shape[1]] = img
    # 10 mm "slices": independent images, so training cuts no coronal or sagittal crops across them
    return [Volume(data=stack, spacing=(10.0, 1.0, 1.0), source_path=paths[0], source_format="simulated")]


def _read_invesalius_paths(paths: list[Path]) -> list[Volume]:
    return [read_invesalius(paths[0])]


_READERS = {
    "nifti": _read_nifti,
    "nifti-frames": _read_nifti_frames,
    "dicom-mosaic": _read_dicom_mosaic,
    "dx-raw": _read_dx_raw,
    "npy-slice": _read_npy_slice,
    "stent-npz": _read_stent,
    "dicom-frames": _read_dicom_frames,
    "echo-bmode": _read_echo_bmode,
    "bmode-sim": _read_bmode_sim,
    "invesalius": _read_invesalius_paths,
}


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    if handle is None:  # only regular files have contents; members were filtered to those
        raise DiffreconError(f"{member.name} in an InVesalius project is not a regular file")
    return handle.read()


def read_invesalius(path: str | Path) -> Volume:
    """Read the image matrix of an InVesalius 3 project (``.inv3``: a gzip tar)."""
    path = Path(path)
    with tarfile.open(fileobj=gzip.open(path), mode="r:") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        main = plistlib.loads(_member_bytes(tar, members["main.plist"]))
        mat = main["matrix"]
        raw = _member_bytes(tar, members[mat["filename"]])
    data = np.frombuffer(raw, dtype=np.dtype(mat["dtype"]).newbyteorder("<")).reshape(mat["shape"])
    # InVesalius stores rows bottom-up (anterior at the bottom): flip to rows -> posterior.
    data = np.ascontiguousarray(data[:, ::-1, :]).astype(np.float32)
    sx, sy, sz = (float(s) for s in main["spacing"])
    return Volume(
        data=data,
        spacing=(sz, sy, sx),
        affine=affine_from_spacing((sz, sy, sx)),
        modality="CT",
        units="HU",
        window=(float(main.get("window_level", 40.0)), float(main.get("window_width", 400.0))),
        source_path=path,
        source_format="invesalius",
        metadata={"dataset": "cranium", "name": main.get("name", "")},
    )


def _held_out_mask(vol: Volume, name: str) -> np.ndarray:
    """Boolean over axial slices: True inside the legacy held-out slab (none for most scans)."""
    idx = np.arange(vol.n_slices)
    slab = DATASETS[name].held_out_z_mm
    if slab is None:
        return np.zeros(vol.n_slices, bool)
    lo, hi = slab
    if name == "cranium":
        z = idx * vol.spacing[0]
    else:
        z = (vol.affine @ np.stack([idx, np.zeros_like(idx), np.zeros_like(idx), np.ones_like(idx)]))[2]
    return (z >= lo) & (z < hi)


def validation_slices(vol: Volume, name: str) -> np.ndarray:
    """Indices of the held-out axial slices (never trained on)."""
    return np.flatnonzero(_held_out_mask(vol, name))


def training_blocks(vol: Volume, name: str) -> list[np.ndarray]:
    """The contiguous parts of the volume outside the held-out slab, as (z, y, x) arrays.

    Slice them along any axis for training crops: none of their voxels is held out. A
    validation or test subject has none.
    """
    if DATASETS[name].role != "train":
        return []
    held = _held_out_mask(vol, name)
    blocks, start = [], None
    for i, h in enumerate(list(held) + [True]):
        if not h and start is None:
            start = i
        elif h and start is not None:
            blocks.append(vol.data[start:i])
            start = None
    return blocks


def object_fraction(slices: np.ndarray, units: str) -> np.ndarray:
    """The fraction of each axial slice of ``slices`` (``(Z, H, W)`` or ``(H, W)``) that is object.

    CT in HU: tissue is above -500 HU. Other scans: magnitude above a tenth of the bright
    end (the 99.5th percentile of all of ``slices``), which leaves out air and noise.
    """
    data = np.asarray(slices)
    data = data[None] if data.ndim == 2 else data
    if units == "HU":
        inside = data > -500.0
    else:
        mag = np.abs(data)
        inside = mag > 0.1 * float(np.percentile(mag, 99.5))
    return inside.mean(axis=(-2, -1))


def evaluation_slices(vol: Volume, name: str, count: int | None = None, min_foreground: float = 0.3) -> np.ndarray:
    """The axial slices a benchmark scores on.

    A validation or test subject: its slices that are mostly object (at least
    ``min_foreground`` of the pixels above a tenth of the bright end; -500 HU for CT), at most
    ``count`` of them spread evenly. A training subject: its legacy held-out slab, if any.
    """
    if DATASETS[name].role == "train":
        idx = validation_slices(vol, name)
        if idx.size == 0:
            raise DiffreconError(f"dataset '{name}' is a training subject with no held-out slab; "
                                 f"score a validation or test subject instead")
        return idx
    fraction = object_fraction(vol.data, vol.units)
    idx = np.flatnonzero(fraction >= min_foreground)
    if idx.size == 0:
        idx = np.array([int(np.argmax(fraction))])
    if count is not None and idx.size > count:
        idx = idx[np.linspace(0, idx.size - 1, count).round().astype(int)]
    return idx
