"""NumPy .npy/.npz reading and writing, and the provenance sidecar."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_phantom, run_cli
from diffrecon.errors import VolumeReadError
from diffrecon.io import Volume, affine_from_spacing, load_volume, save_volume
from diffrecon.io.numpy_io import describe_bytes, read_numpy
from diffrecon.io.sidecar import sidecar_path


def test_npy_3d_loads_with_1mm_voxels(tmp_path):
    data = make_phantom(4, 16, 20)
    np.save(tmp_path / "v.npy", data)
    vol = load_volume(tmp_path / "v.npy")
    assert np.array_equal(vol.data, data)
    assert vol.data.dtype == np.float32
    assert vol.spacing == (1.0, 1.0, 1.0)
    assert np.array_equal(vol.affine, affine_from_spacing((1.0, 1.0, 1.0)))
    assert (vol.source_format, vol.modality) == ("numpy", "OT")


def test_npy_2d_is_one_slice_and_integers_become_float32(tmp_path):
    image = (make_phantom(1, 16, 24)[0] * 1000).astype(np.uint16)
    np.save(tmp_path / "img.npy", image)
    vol = load_volume(tmp_path / "img.npy")
    assert vol.shape == (1, 16, 24)
    assert vol.data.dtype == np.float32
    assert np.array_equal(vol.data[0], image.astype(np.float32))
    assert vol.metadata["numpy_dtype"] == "uint16"


def test_complex_npy_stays_complex64(tmp_path):
    data = make_phantom(2, 16, 16) * np.exp(1j * 0.3)
    np.save(tmp_path / "c.npy", data.astype(np.complex128))
    vol = load_volume(tmp_path / "c.npy")
    assert vol.data.dtype == np.complex64
    assert np.allclose(vol.data, data, atol=1e-6)


def test_fortran_order_and_batch_axis_of_one(tmp_path):
    data = make_phantom(3, 16, 12)
    np.save(tmp_path / "f.npy", np.asfortranarray(data))
    assert np.array_equal(load_volume(tmp_path / "f.npy").data, data)
    np.save(tmp_path / "b.npy", data[None, None, 0])  # (1, 1, 16, 12): a torch-style batch
    assert load_volume(tmp_path / "b.npy").shape == (1, 16, 12)


def test_npz_single_array_and_key(tmp_path):
    a, b = make_phantom(2, 16, 16, seed=1), make_phantom(3, 16, 16, seed=2)
    np.savez(tmp_path / "one.npz", image=a)
    assert np.array_equal(load_volume(tmp_path / "one.npz").data, a)
    np.savez_compressed(tmp_path / "two.npz", first=a, second=b)
    vol = load_volume(tmp_path / "two.npz", key="second")
    assert np.array_equal(vol.data, b)
    assert vol.metadata["array_key"] == "second"
    with pytest.raises(VolumeReadError, match="has no array 'third' \\(found: first, second\\)"):
        read_numpy(tmp_path / "two.npz", key="third")


def test_npz_round_trip_keeps_geometry(tmp_path):
    spacing = (2.5, 0.7, 0.8)
    affine = affine_from_spacing(spacing)
    affine[:3, 3] = (-100.0, 50.0, 12.5)
    vol = Volume(make_phantom(5, 16, 18), spacing=spacing, affine=affine)
    written = save_volume(vol, tmp_path / "out.npz", provenance={"method": "tv", "lambda": np.float32(0.01)})
    assert written == [tmp_path / "out.npz", tmp_path / "out.json"]
    back = load_volume(tmp_path / "out.npz")
    assert np.array_equal(back.data, vol.data)
    assert np.array_equal(back.affine, vol.affine)
    assert back.spacing == pytest.approx(spacing)
    recorded = json.loads((tmp_path / "out.json").read_text())
    assert "torch_threads" in recorded.pop("threads")  # save_volume adds the thread settings
    assert recorded == {"method": "tv", "lambda": pytest.approx(0.01)}


def test_npz_with_only_spacing_builds_the_affine(tmp_path):
    np.savez(tmp_path / "s.npz", volume=make_phantom(2, 16, 16), spacing=np.array([3.0, 0.5, 0.5]))
    vol = load_volume(tmp_path / "s.npz")
    assert vol.spacing == (3.0, 0.5, 0.5)
    assert vol.orientation() == ("S", "P", "L")


def test_npy_round_trip_without_provenance_writes_no_sidecar(tmp_path):
    vol = Volume(make_phantom(2, 16, 16).astype(np.complex64))
    assert save_volume(vol, tmp_path / "x.npy") == [tmp_path / "x.npy"]
    assert not (tmp_path / "x.json").exists()
    back = load_volume(tmp_path / "x.npy")
    assert back.data.dtype == np.complex64 and np.array_equal(back.data, vol.data)


def test_sidecar_names():
    assert sidecar_path("/o/scan.nii.gz").name == "scan.json"
    assert sidecar_path("/o/scan.v2.npz").name == "scan.v2.json"
    assert sidecar_path("/o/Scan.NII").name == "Scan.json"


def test_describe_bytes():
    assert describe_bytes(12) == "12 bytes"
    assert describe_bytes(3 * 1024 + 512) == "3.5 KiB"
    assert describe_bytes(256 * 2**30) == "256.0 GiB"


def test_npy_header_bigger_than_memory_is_refused_before_reading(tmp_path):
    # A consistent header and a sparse file of the declared size: only memory is short.
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (4000, 8192, 8192)})
        fh.truncate(fh.tell() + 4000 * 8192 * 8192 * 4)
    with pytest.raises(VolumeReadError, match="needs about .* GiB of memory but only .* is available"):
        read_numpy(path)


def test_cli_info_describes_an_npy(tmp_path):
    np.save(tmp_path / "v.npy", make_phantom(3, 16, 16))
    result = run_cli("info", tmp_path / "v.npy")
    assert result.code == 0, result.err
    assert "numpy" in result.out and "3 x 16 x 16" in result.out
