"""The real scans diffrecon trains and validates on, and how they are split.

No dataset can be downloaded here, so the priors learn from real scans that ship
inside packages (all licences allow redistribution of derived models):

* ``colin27``: the Colin27 T1 brain (``ch2.nii.gz``, 1 mm, 181x217x181) from Debian's
  ``mricron-data`` (27 averaged scans of one subject).
* ``mni152``: the MNI152 2009a symmetric T1 template (1 mm) inside the ``nilearn``
  wheel (an average of 152 subjects, in the same space as Colin27).
* ``cranium``: a real head CT, 108x256x256 int16 HU, in ``Cranium.inv3`` from Debian's
  ``invesalius-examples`` (a gzip tar; ``matrix.dat`` is stored upside down).

``packaging/fetch-training-data.sh`` installs them. Each dataset holds out one
contiguous axial slab, given in world millimetres so that the two brain templates
(which share MNI space) hold out the *same anatomy*: no model may train on any voxel
inside the slab, from any orientation. :func:`training_blocks` returns the parts of a
volume outside the slab (so coronal and sagittal crops never cross it) and
:func:`validation_slices` the axial slices inside it.
"""

from __future__ import annotations

import gzip
import os
import plistlib
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DiffreconError
from .io.volume import Volume, affine_from_spacing


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modality: str  # "MR" | "CT"
    candidates: tuple[str, ...]  # where the file may be, first found wins
    held_out_z_mm: tuple[float, float]  # world z (RAS, mm) of the held-out axial slab [lo, hi)
    provenance: str


def _data_dir() -> Path:
    return Path(os.environ.get("DIFFRECON_DATA", Path.home() / ".cache" / "diffrecon" / "data"))


DATASETS: dict[str, DatasetInfo] = {
    "colin27": DatasetInfo(
        "colin27",
        "MR",
        ("/usr/share/mricron/templates/ch2.nii.gz",),
        (10.0, 30.0),
        "Colin27 T1 (ch2.nii.gz) from Debian package mricron-data",
    ),
    "mni152": DatasetInfo(
        "mni152",
        "MR",
        ("{data}/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",),
        (10.0, 30.0),
        "MNI152 2009a symmetric T1 template from the nilearn wheel (nilearn/datasets/data)",
    ),
    "cranium": DatasetInfo(
        "cranium",
        "CT",
        ("/usr/share/doc/invesalius-examples/examples/Cranium.inv3",),
        # The CT has no world origin of its own; z is measured from its first slice.
        (90.0, 108.0),
        "Head CT 'ProMED CT 0051' (Cranium.inv3) from Debian package invesalius-examples",
    ),
}


def dataset_path(name: str) -> Path:
    info = DATASETS[name]
    for cand in info.candidates:
        p = Path(cand.format(data=_data_dir()))
        if p.exists():
            return p
    raise DiffreconError(
        f"training scan '{name}' is not installed ({info.provenance}); run packaging/fetch-training-data.sh"
    )


def load_dataset(name: str) -> Volume:
    """The whole scan, in diffrecon's canonical layout (axial slices, S/P/L)."""
    path = dataset_path(name)
    if name == "cranium":
        return read_invesalius(path)
    from .io import load_volume

    vol = load_volume(path)
    vol.modality = DATASETS[name].modality
    vol.metadata["dataset"] = name
    return vol


def read_invesalius(path: str | Path) -> Volume:
    """Read the image matrix of an InVesalius 3 project (``.inv3``: a gzip tar)."""
    path = Path(path)
    with tarfile.open(fileobj=gzip.open(path), mode="r:") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        main = plistlib.loads(tar.extractfile(members["main.plist"]).read())
        mat = main["matrix"]
        raw = tar.extractfile(members[mat["filename"]]).read()
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
    """Boolean over axial slices: True inside the held-out slab."""
    lo, hi = DATASETS[name].held_out_z_mm
    idx = np.arange(vol.n_slices)
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

    Slice them along any axis for training crops: none of their voxels is held out.
    """
    held = _held_out_mask(vol, name)
    blocks, start = [], None
    for i, h in enumerate(list(held) + [True]):
        if not h and start is None:
            start = i
        elif h and start is not None:
            blocks.append(vol.data[start:i])
            start = None
    return blocks
