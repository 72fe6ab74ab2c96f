"""HDF5: fastMRI single/multi-coil files, diffrecon outputs, plain arrays."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from conftest import make_phantom, run_cli
from diffrecon.errors import VolumeReadError, VolumeWriteError
from diffrecon.io import Volume, affine_from_spacing, load_volume, save_volume
from diffrecon.io.fastmri import center_crop, parse_ismrmrd_header
from diffrecon.io.hdf5 import read_variance

SLICES, KY, KX = 3, 64, 48


def header_xml(recon=(32, 32), fov=(140.0, 140.0, 3.0)) -> bytes:
    """An ISMRMRD header as fastMRI files carry it (namespace included)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<acquisitionSystemInformation><systemVendor>SIEMENS</systemVendor>"
        "<systemFieldStrength_T>2.89</systemFieldStrength_T></acquisitionSystemInformation>"
        f"<encoding><encodedSpace><matrixSize><x>{KY}</x><y>{KX}</y><z>1</z></matrixSize>"
        "<fieldOfView_mm><x>280</x><y>210</y><z>4.5</z></fieldOfView_mm></encodedSpace>"
        f"<reconSpace><matrixSize><x>{recon[0]}</x><y>{recon[1]}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>{fov[0]}</x><y>{fov[1]}</y><z>{fov[2]}</z></fieldOfView_mm></reconSpace>"
        "</encoding></ismrmrdHeader>"
    ).encode()


def fft2c(image: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2D FFT over the last two axes (how fastMRI's k-space relates to images)."""
    shifted = np.fft.ifftshift(image, axes=(-2, -1))
    return np.fft.fftshift(np.fft.fft2(shifted, norm="ortho"), axes=(-2, -1))


def coil_maps(coils: int) -> np.ndarray:
    """Smooth complex sensitivities normalised so that sum |S_c|^2 = 1 at every pixel."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, KY), np.linspace(-1, 1, KX), indexing="ij")
    maps = []
    for c in range(coils):
        angle = 2 * np.pi * c / coils
        cy, cx = 1.5 * np.sin(angle), 1.5 * np.cos(angle)
        maps.append(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2) * np.exp(1j * (angle + 0.5 * xx)))
    maps = np.array(maps)
    return maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))


def write_fastmri(path, *, coils: int | None, mask=None, target=False, header=None, attrs=None):
    """A fastMRI-style file of the test phantom; ``coils=None`` means single-coil layout."""
    image = make_phantom(SLICES, KY, KX)
    kspace = fft2c(image[:, None] * coil_maps(coils or 1)).astype(np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace if coils else kspace[:, 0])
        if mask is not None:
            f.create_dataset("mask", data=mask)
        if target:
            name = "reconstruction_rss" if coils else "reconstruction_esc"
            f.create_dataset(name, data=center_crop(image, (32, 32)) * 10)  # distinct from the RSS image
        if header is not None:
            f.create_dataset("ismrmrd_header", data=header)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return image, kspace


def test_single_coil_file_gives_the_phantom_and_its_kspace(tmp_path):
    path = tmp_path / "single.h5"
    image, kspace = write_fastmri(path, coils=None, attrs={"acquisition": "CORPD_FBK", "max": 1.5, "norm": 20.0})
    vol = load_volume(path)
    assert (vol.source_format, vol.modality) == ("fastmri-h5", "MR")
    assert vol.kspace is not None and not vol.kspace.multicoil
    assert vol.kspace.data.shape == (SLICES, 1, KY, KX) and vol.kspace.data.dtype == np.complex64
    assert np.array_equal(vol.kspace.data, kspace)
    assert vol.kspace.fully_sampled and vol.kspace.recon_size is None
    assert vol.shape == (SLICES, KY, KX)
    assert np.allclose(vol.data, image, atol=1e-5)
    assert vol.reference is None
    assert vol.metadata["acquisition"] == "CORPD_FBK" and vol.metadata["norm"] == 20.0


def test_multicoil_rss_matches_the_phantom_and_crops_to_the_target(tmp_path):
    path = tmp_path / "multi.h5"
    image, kspace = write_fastmri(path, coils=4, target=True, attrs={"patient_id": "abc123"})
    vol = load_volume(path)
    assert vol.kspace.multicoil and vol.kspace.data.shape == (SLICES, 4, KY, KX)
    assert vol.kspace.recon_size == (32, 32)
    assert vol.shape == (SLICES, 32, 32)
    # Normalised coil maps: the RSS of the coil images is the phantom itself.
    assert np.allclose(vol.data, center_crop(image, (32, 32)), atol=1e-5)
    assert vol.reference.shape == vol.shape
    assert np.allclose(vol.reference, center_crop(image, (32, 32)) * 10)
    assert vol.metadata["reference_key"] == "reconstruction_rss"
    assert vol.metadata["patient_id"] == "abc123"


def test_mask_marks_the_file_undersampled(tmp_path):
    mask = np.zeros(KX, bool)
    mask[::4] = True
    mask[KX // 2 - 2 : KX // 2 + 2] = True
    path = tmp_path / "test_file.h5"
    write_fastmri(path, coils=2, mask=mask)
    vol = load_volume(path)
    k = vol.kspace
    assert k.mask.dtype == bool and k.mask.shape == (1, KX)
    assert np.array_equal(k.mask[0], mask)
    assert not k.fully_sampled
    assert k.acceleration == pytest.approx(KX / mask.sum())
    np.broadcast_to(k.mask, k.data.shape)  # broadcastable to (slices, coils, ky, kx)
    result = run_cli("info", path)
    assert result.code == 0, result.err
    assert f"2 coils, undersampled, R = {round(KX / mask.sum(), 2):g}" in result.out


def test_two_dimensional_mask_is_kept_as_is(tmp_path):
    mask = np.zeros((KY, KX), np.uint8)
    mask[::2, :] = 1  # every other row: a (ky, kx) pattern, not a column mask
    write_fastmri(tmp_path / "m2.h5", coils=None, mask=mask)
    k = load_volume(tmp_path / "m2.h5").kspace
    assert k.mask.shape == (KY, KX) and k.mask.dtype == bool
    assert k.acceleration == pytest.approx(2.0)
    with h5py.File(tmp_path / "m2.h5", "a") as f:
        del f["mask"]
        f.create_dataset("mask", data=np.ones((SLICES, KY, KX)))
    with pytest.raises(VolumeReadError, match=f"mask has shape {SLICES}x{KY}x{KX}; expected"):
        load_volume(tmp_path / "m2.h5")


def test_ismrmrd_header_gives_crop_and_spacing_without_targets(tmp_path):
    path = tmp_path / "hdr.h5"
    image, _ = write_fastmri(path, coils=None, header=header_xml(recon=(40, 36), fov=(100.0, 90.0, 3.0)))
    vol = load_volume(path)
    assert vol.kspace.recon_size == (40, 36)
    assert np.allclose(vol.data, center_crop(image, (40, 36)), atol=1e-5)
    assert vol.spacing == pytest.approx((3.0, 2.5, 2.5))
    assert vol.metadata["system_vendor"] == "SIEMENS"
    assert vol.metadata["recon_matrix"] == [40, 36, 1]


def test_parse_ismrmrd_header_with_and_without_namespace():
    facts = parse_ismrmrd_header(header_xml())
    assert facts["recon_matrix"] == [32, 32, 1] and facts["encoded_matrix"] == [KY, KX, 1]
    assert facts["spacing_mm"] == pytest.approx((3.0, 140 / 32, 140 / 32))
    bare = (
        "<ismrmrdHeader><encoding><reconSpace><matrixSize><x>8</x><y>4</y><z>1</z></matrixSize>"
        "</reconSpace></encoding></ismrmrdHeader>"
    )
    assert parse_ismrmrd_header(bare) == {"recon_matrix": [8, 4, 1]}


def test_broken_ismrmrd_header_is_noted_not_fatal(tmp_path):
    path = tmp_path / "badhdr.h5"
    write_fastmri(path, coils=None, header=b"<ismrmrdHeader><encoding>")
    vol = load_volume(path)
    assert "ismrmrd_header_note" in vol.metadata and vol.shape == (SLICES, KY, KX)


def test_cli_info_shows_kspace_yes_for_fastmri_and_no_for_outputs(tmp_path):
    write_fastmri(tmp_path / "raw.h5", coils=None)
    raw = run_cli("info", tmp_path / "raw.h5")
    assert raw.code == 0, raw.err
    assert f"yes: {SLICES} x 1 x {KY} x {KX}, single coil, fully sampled" in raw.out

    save_volume(Volume(make_phantom(2, 16, 16)), tmp_path / "out.h5")
    out = run_cli("info", tmp_path / "out.h5")
    assert out.code == 0, out.err
    assert "diffrecon-h5" in out.out
    assert "no" in out.out.split("K-space")[1].splitlines()[0]


def test_diffrecon_output_round_trip(tmp_path):
    spacing = (5.0, 0.6, 0.6)
    affine = affine_from_spacing(spacing)
    affine[:3, 3] = (120.0, -30.0, 8.0)
    vol = Volume(make_phantom(4, 16, 16) * 1000 - 500, spacing=spacing, affine=affine, modality="CT", units="HU",
                 window=(40.0, 400.0))
    variance = np.full(vol.shape, 0.25, np.float32)
    provenance = {"method": "diffusion", "steps": 25, "seed": 7}
    written = save_volume(vol, tmp_path / "recon.h5", variance=variance, provenance=provenance, description="dds")
    assert written == [tmp_path / "recon.h5"]
    assert not list(tmp_path.glob("*.partial"))

    back = load_volume(tmp_path / "recon.h5")
    assert np.array_equal(back.data, vol.data)
    assert np.array_equal(back.affine, vol.affine)
    assert back.spacing == pytest.approx(spacing)
    assert (back.modality, back.units, back.window) == ("CT", "HU", (40.0, 400.0))
    recorded = dict(back.metadata["provenance"])
    assert recorded.pop("threads")["torch_threads"] == 1  # save_volume records the thread count
    assert recorded == provenance
    assert back.metadata["description"] == "dds" and back.metadata["has_variance"]
    assert np.array_equal(read_variance(tmp_path / "recon.h5"), variance)
    with h5py.File(tmp_path / "recon.h5") as f:
        assert {k: v for k, v in json.loads(f.attrs["provenance"]).items() if k != "threads"} == provenance
        assert f.attrs["diffrecon_version"]


def test_variance_of_the_wrong_shape_is_refused(tmp_path):
    vol = Volume(make_phantom(2, 16, 16))
    with pytest.raises(VolumeWriteError, match="variance map is 2x8x8 but the volume is 2x16x16"):
        save_volume(vol, tmp_path / "bad.h5", variance=np.zeros((2, 8, 8)))
    assert not (tmp_path / "bad.h5").exists()


def test_plain_hdf5_with_one_dataset_or_a_key(tmp_path):
    a, b = make_phantom(3, 16, 16, seed=3), make_phantom(2, 20, 16, seed=4)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f.create_dataset("group/volume", data=a.astype(np.float64))
        f["group/volume"].attrs["spacing"] = [2.0, 0.5, 0.5]
        f.create_dataset("labels", data=np.arange(5))
    vol = load_volume(tmp_path / "one.h5")
    assert np.array_equal(vol.data, a) and vol.metadata["dataset"] == "group/volume"
    assert vol.spacing == (2.0, 0.5, 0.5)

    with h5py.File(tmp_path / "two.h5", "w") as f:
        f.create_dataset("a", data=a)
        f.create_dataset("b", data=b[0])  # 2D: one slice
    with pytest.raises(VolumeReadError, match="several image datasets \\(a, b\\); choose one with --key"):
        load_volume(tmp_path / "two.h5")
    assert load_volume(tmp_path / "two.h5", key="b").shape == (1, 20, 16)
    with pytest.raises(VolumeReadError, match="has no dataset 'c' \\(found: a, b\\)"):
        load_volume(tmp_path / "two.h5", key="c")


def test_target_key_can_be_shown_instead_of_the_kspace(tmp_path):
    path = tmp_path / "multi.h5"
    image, _ = write_fastmri(path, coils=2, target=True)
    vol = load_volume(path, key="reconstruction_rss")
    assert vol.kspace is None and np.allclose(vol.data, center_crop(image, (32, 32)) * 10)
