"""A generated corpus of hostile inputs: files built to hang, exhaust memory or crash diffrecon.

Each case is a function ``build(folder) -> (argv, expected)``: the ``diffrecon`` command
line that must fail with one sentence and exit status 2, and a phrase that sentence must
hold. Everything is made on the spot and small on disk (the "bombs" declare gigabytes in
kilobytes), so the whole corpus builds in a second or two. ``test_hostile_corpus.py`` runs
every case in one subprocess under ``ulimit -v`` with a time limit per case.

To add a case: write a builder below and list it in :data:`CASES`.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import struct
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

Case = Callable[[Path], tuple[list[str], str]]


# ----- small helpers -----

def small_volume(folder: Path) -> Path:
    """A valid 4x32x32 .npy scan for commands whose problem lies elsewhere (a crafted prior)."""
    path = folder / "scan.npy"
    if not path.exists():
        yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
        np.save(path, np.stack([(xx**2 + yy**2 < 0.5).astype(np.float32) * (k + 1) for k in range(4)]))
    return path


def dicom_slice(z: float = 0.0, **tags) -> "pydicom.Dataset":  # noqa: F821
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", "1.2.3.4", "CT"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, z], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 16, 16, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.full((16, 16), 1100, np.uint16).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    assert isinstance(ds, pydicom.Dataset)
    return ds


def save_dicom(ds, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def zeros_gzip(raw_header: bytes, zero_bytes: int, path: Path) -> Path:
    """A gzip file of ``raw_header`` then ``zero_bytes`` zeros, as repeated 1 MiB members:
    a valid (multi-member) stream made in milliseconds, about 1000x smaller than its content."""
    mib = 1 << 20
    member = gzip.compress(bytes(mib), compresslevel=9)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(raw_header))
        for _ in range(zero_bytes // mib):
            fh.write(member)
        if zero_bytes % mib:
            fh.write(gzip.compress(bytes(zero_bytes % mib)))
    return path


def nifti_header(shape: tuple[int, int, int], datatype: int = 2, bitpix: int = 8,
                 pixdim: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> bytes:
    """A NIfTI-1 single-file header (348 bytes + 4 of extension flag), voxels following at 352."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header["datatype"], header["bitpix"] = datatype, bitpix
    header["pixdim"][1:4] = pixdim
    header["vox_offset"] = 352
    header["sform_code"] = 0
    return header.binaryblock + b"\x00" * 4


def tiny_prior(path: Path, *, config: dict | None = None, schedule: dict | None = None,
               normalisation=None, tensors: Callable[[dict], dict] | None = None) -> Path:
    """A valid 2-channel MRI prior file (a width-4 UNet), or one with the given fields replaced."""
    import torch
    from safetensors.torch import save_file

    from diffrecon.diffusion.unet import UNet

    torch.manual_seed(0)
    net = UNet(2, width=4, channel_mult=(1, 2), res_blocks=1, attention_heads=1)
    state = {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}
    if tensors is not None:
        state = tensors(state)
    meta = {
        "format": "diffrecon-prior/1",
        "unet_config": net.config if config is None else config,
        "schedule": {"kind": "linear", "steps": 1000} if schedule is None else schedule,
        "normalisation": ({"kind": "percentile", "percentile": 99.5} if normalisation is None else normalisation),
        "modality": "mri",
        "channels": 2,
    }
    save_file(state, str(path), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    return path


def with_prior(name: str, expected: str, **kwargs) -> Case:
    """A reconstruct run on a valid scan with a crafted ``--model``."""

    def build(folder: Path) -> tuple[list[str], str]:
        prior = tiny_prior(folder / f"{name}.safetensors", **kwargs)
        return (["reconstruct", str(small_volume(folder)), "--simulate", "--modality", "mri", "--method", "diffusion",
                 "--steps", "2", "--model", str(prior), "--out", str(folder / "out.nii.gz")], expected)

    build.__name__ = name
    return build


def _config(**changes) -> dict:
    base = {"in_channels": 2, "width": 4, "channel_mult": [1, 2], "res_blocks": 1, "attention_heads": 1,
            "dropout": 0.0}
    return {**base, **changes}


# ----- special files -----

def fifo_in_dicom_folder(folder: Path):
    series = folder / "series"
    series.mkdir()
    os.mkfifo(series / "IM0001")
    return ["info", str(series)], "holds no regular files (only IM0001 (a FIFO (named pipe), not read)"


def fifo_given_directly(folder: Path):
    os.mkfifo(folder / "scan.nii.gz")
    return ["info", str(folder / "scan.nii.gz")], "is a FIFO (named pipe), not a file"


def socket_given_directly(folder: Path):
    path = folder / "s.dcm"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return ["info", str(path)], "is a socket"


def symlink_loop(folder: Path):
    os.symlink(folder / "b.nii", folder / "a.nii")
    os.symlink(folder / "a.nii", folder / "b.nii")
    return ["info", str(folder / "a.nii")], "loops back on itself"


def dangling_symlink(folder: Path):
    os.symlink(folder / "gone.nii.gz", folder / "link.nii.gz")
    return ["info", str(folder / "link.nii.gz")], "which does not exist"


def dicomdir_alone(folder: Path):
    from pydicom.dataset import Dataset
    from pydicom.uid import MediaStorageDirectoryStorage, generate_uid

    ds = dicom_slice()
    ds.SOPClassUID, ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage, MediaStorageDirectoryStorage
    ds.SOPInstanceUID = generate_uid()
    for k in ("Rows", "Columns", "PixelData"):
        delattr(ds, k)
    record = Dataset()
    record.DirectoryRecordType, record.ReferencedFileID = "IMAGE", ["DICOM", "SE1", "IM1"]
    ds.DirectoryRecordSequence = [record]
    save_dicom(ds, folder / "disc" / "DICOMDIR")
    return ["info", str(folder / "disc" / "DICOMDIR")], "is a DICOMDIR"


def dicomdir_folder(folder: Path):
    dicomdir_alone(folder)
    return ["info", str(folder / "disc")], "holds only a DICOMDIR"


# ----- memory bombs -----

def hdf5_fill_value(folder: Path):
    import h5py

    with h5py.File(folder / "fill.h5", "w") as fh:
        fh.create_dataset("image", shape=(200, 1024, 1024), dtype="f4", chunks=(1, 1024, 1024))
    return ["reconstruct", str(folder / "fill.h5"), "--method", "tv", "--out", str(folder / "o.nii.gz")], \
        "stores no data: every voxel is its fill value"


def hdf5_one_chunk_of_terabytes(folder: Path):
    import h5py

    with h5py.File(folder / "sparse.h5", "w") as fh:
        ds = fh.create_dataset("image", shape=(100_000, 1024, 1024), dtype="f4", chunks=(1, 1024, 1024))
        ds[0] = 1.0
    return ["info", str(folder / "sparse.h5")], "crop it into smaller volumes first"


def nifti_gz_bomb_reconstruct(folder: Path):
    path = zeros_gzip(nifti_header((512, 512, 600)), 512 * 512 * 600, folder / "bomb.nii.gz")
    return ["reconstruct", str(path), "--method", "tv", "--out", str(folder / "o.nii.gz")], "--slices"


def nifti_gz_bomb_info(folder: Path):
    # 1024x1024x1500 uint8 = 1.5 GB of zeros in 1.5 MB, read as float32 under ulimit: refused before reading.
    path = zeros_gzip(nifti_header((1024, 1024, 1500)), 1024 * 1024 * 1500, folder / "bomb.nii.gz")
    return ["info", str(path)], "of memory but only"


def npz_claims_more_than_deflate(folder: Path):
    path = folder / "bomb.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1, 1), "<f4"))
    header["shape"] = (1000, 1024, 1024)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("image.npy", b"\x93NUMPY\x01\x00" + b"\x00" * 118)
    # Rewrite the member's declared uncompressed size (local header and central directory) to 4 GB - 1.
    raw = bytearray(path.read_bytes())
    size = struct.pack("<I", 0xFFFFFFFE)
    raw[22:26] = size
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24:central + 28] = size
    path.write_bytes(bytes(raw))
    return ["info", str(path)], "more than deflate can expand"


def npz_real_zip_bomb(folder: Path):
    # A genuine deflate stream: 144 MB of float32 zeros in ~150 KB; reconstruct would need ~3.4 GB.
    path = folder / "zeros.npz"
    shape = (100, 600, 600)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("image.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
            chunk = bytes(4 * 600 * 600)
            for _ in range(shape[0]):
                fh.write(chunk)
    return ["reconstruct", str(path), "--method", "tv", "--out", str(folder / "o.nii.gz")], "--slices"


# ----- one line, geometry -----

def newline_in_file_name(folder: Path):
    path = folder / "scan\nevil.nii"
    path.write_text("not a NIfTI header\n" * 30)
    return ["info", str(path)], "scan\\nevil.nii"


def rescale_slope_overflow(folder: Path):
    save_dicom(dicom_slice(RescaleSlope="1e308", PixelData=np.full((16, 16), 60000, np.uint16).tobytes()),
               folder / "slope" / "IM1.dcm")
    return ["info", str(folder / "slope")], "NaN or infinite"


def pixel_data_longer_than_declared(folder: Path):
    save_dicom(dicom_slice(PixelData=np.zeros((32, 32), np.uint16).tobytes()), folder / "long" / "IM1.dcm")
    return ["info", str(folder / "long")], "more than the 512 its header declares"


def nifti_unknown_datatype(folder: Path):
    path = folder / "odd.nii"
    path.write_bytes(nifti_header((16, 16, 4), datatype=999, bitpix=8) + bytes(16 * 16 * 4))
    return ["info", str(path)], "odd.nii"


def blank_reference(folder: Path):
    np.save(folder / "blank.npy", np.zeros((2, 16, 16), np.float32))
    return ["reconstruct", str(folder / "blank.npy"), "--simulate", "--modality", "denoise", "--method", "median",
            "--out", str(folder / "o.nii.gz")], "blank.npy"


CASES: list[Case] = [
    fifo_in_dicom_folder, fifo_given_directly, socket_given_directly, symlink_loop, dangling_symlink, dicomdir_alone, dicomdir_folder,
    hdf5_fill_value, hdf5_one_chunk_of_terabytes, nifti_gz_bomb_reconstruct, nifti_gz_bomb_info,
    npz_claims_more_than_deflate, npz_real_zip_bomb, newline_in_file_name, rescale_slope_overflow,
    pixel_data_longer_than_declared, nifti_unknown_datatype, blank_reference,
    with_prior("attention_heads_zero", "attention_heads must be from 1", config=_config(attention_heads=0)),
    with_prior("width_float_million", "width must be a whole number", config=_config(width=1e6)),
    with_prior("res_blocks_huge", "res_blocks must be from 1 to 16", config=_config(res_blocks=100_000)),
    with_prior("channel_mult_negative", "each channel_mult must be from 1", config=_config(channel_mult=[1, -2])),
    with_prior("schedule_steps_1e12", "schedule steps must be a whole number", schedule={"kind": "linear",
                                                                                          "steps": 1e12}),
    with_prior("schedule_steps_zero", "schedule steps must be from 2", schedule={"kind": "linear", "steps": 0}),
    with_prior("normalisation_string", "normalisation must be a JSON object", normalisation="percentile"),
    with_prior("nan_weights", "NaN or infinite weight",
               tensors=lambda s: {k: (v.fill_(float("nan")) if k == "stem.weight" else v) for k, v in s.items()}),
    with_prior("wrong_shape", "has shape", tensors=lambda s: {**s, "stem.bias": s["stem.bias"][:2].clone()}),
    with_prior("extra_tensor", "has no place for", tensors=lambda s: {**s, "payload": s["stem.bias"].clone()}),
    with_prior("integer_weights", "weights must be floating point",
               tensors=lambda s: {**s, "stem.bias": s["stem.bias"].to(__import__("torch").int32)}),
]


def build_corpus(root: Path) -> list[dict]:
    """Build every case under ``root/<name>/``; return [{name, argv, expected}]."""
    cases = []
    for build in CASES:
        folder = root / build.__name__
        folder.mkdir(parents=True)
        argv, expected = build(folder)
        cases.append({"name": build.__name__, "argv": argv, "expected": expected})
    return cases
