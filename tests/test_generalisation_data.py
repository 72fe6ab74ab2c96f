"""Subjects by role (no prior ever reads a test subject) and augmentations that are seeded and keep ranges."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from diffrecon import datasets
from diffrecon.datasets import DATASETS, check_trainable, datasets_with
from diffrecon.diffusion.augment import AUGMENTATION_NAMES, Augmentation, bias_field, contrast_curve
from diffrecon.diffusion.data import CropSampler, TrainingSource, load_sources
from diffrecon.errors import DiffreconError, SettingsError


def test_every_subject_has_one_role_and_each_modality_has_test_subjects() -> None:
    roles = defaultdict(set)
    for info in DATASETS.values():
        assert info.role in datasets.ROLES and info.provenance and info.licence
        roles[info.subject].add(info.role)
    assert all(len(r) == 1 for r in roles.values()), roles
    assert datasets_with("MR", "test") and datasets_with("CT", "test") and datasets_with("MR", "validation")
    tested = {DATASETS[n].subject for n in datasets_with("MR", "test")}
    trained = {DATASETS[n].subject for n in datasets_with("MR", "train")}
    assert not tested & trained


@pytest.mark.parametrize("name", [n for n, d in DATASETS.items() if d.role == "test"])
def test_training_never_reads_a_test_subject(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    read = []
    monkeypatch.setattr(datasets, "load_dataset_volumes", lambda n: read.append(n) or [])
    modality = {"MR": "mri", "CT": "ct", "US": "ultrasound"}[DATASETS[name].modality]
    with pytest.raises(DiffreconError, match="test subject"):
        load_sources(["colin27", name] if modality == "mri" else [name], modality)
    assert name not in read
    with pytest.raises(DiffreconError):
        check_trainable(name)


def test_a_validation_subject_gives_validation_slices_but_no_training_blocks(monkeypatch) -> None:
    from diffrecon.io.volume import Volume

    name = datasets_with("MR", "validation")[0]
    vol = np.zeros((6, 32, 32), np.float32)
    vol[:, 4:28, 4:28] = 100.0
    monkeypatch.setattr("diffrecon.diffusion.data.load_dataset_volumes", lambda n: [Volume(vol.copy())])
    (src,) = load_sources([name], "mri")
    assert src.role == "validation" and src.blocks == [] and len(src.validation) == 6
    with pytest.raises(SettingsError):
        CropSampler([src], 16, 2, seed=0)  # nothing to train on


def _source() -> TrainingSource:
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (12, 48, 48)), indexing="ij")
    head = (np.hypot(x, y) < 0.8) * (0.5 + 0.4 * np.cos(6 * x) * np.sin(5 * y))
    return TrainingSource("phantom", [head.astype(np.float32)], head[:2].astype(np.float32),
                          (1.0, 1.0, 1.0), "none", "synthetic")


@pytest.mark.parametrize("channels", [1, 2])
def test_augmented_crops_are_seeded_and_keep_shapes_and_ranges(channels: int) -> None:
    aug = Augmentation.generalising("mri")
    assert aug.enabled() == list(AUGMENTATION_NAMES)
    a = CropSampler([_source()], 32, channels, seed=3, augmentation=aug)
    b = CropSampler([_source()], 32, channels, seed=3, augmentation=aug)
    crops = a.sample(24)
    assert np.array_equal(crops, b.sample(24))
    assert crops.shape == (24, channels, 32, 32) and crops.dtype == np.float32
    mag = np.sqrt((crops**2).sum(axis=1))
    assert np.all(np.isfinite(crops)) and mag.max() < 2.5
    assert mag.max() > 0.2  # tissue, not only air
    plain = CropSampler([_source()], 32, channels, seed=3).sample(24)
    assert not np.array_equal(crops, plain)  # the switches do something
    c = CropSampler([_source()], 32, channels, seed=4, augmentation=aug)
    assert not np.array_equal(crops, c.sample(24))


def test_ct_is_never_remapped_and_unknown_augmentations_are_refused() -> None:
    ct = Augmentation.generalising("ct")
    assert not ct.contrast and not ct.bias and ct.rotation and ct.resolution
    with pytest.raises(ValueError):
        Augmentation.generalising("mri", ("resolution", "warp"))


def test_contrast_curves_keep_air_dark_and_bias_fields_are_smooth_and_positive() -> None:
    rng = np.random.default_rng(0)
    m = np.linspace(0, 1.2, 50)
    for _ in range(50):
        out = contrast_curve(m, rng)
        assert out[0] == 0.0 and np.all(out >= 0) and out.max() <= 1.5
    field = bias_field(32, rng, 0.3)
    assert field.min() > 0 and np.abs(np.diff(field, axis=0)).max() < 0.1


def test_resolution_augmentation_blurs_like_a_coarser_acquisition() -> None:
    """At 3 mm from a 1 mm source, fine stripes (period 2 mm) are gone; without it they stay."""
    stripes = np.tile(np.array([0.2, 1.0] * 64, np.float32), (128, 1))
    src = TrainingSource("s", [np.stack([stripes] * 4)], stripes[None], (1.0, 1.0, 1.0), "none", "synthetic")
    coarse = Augmentation(flips=False, intensity_range=(1, 1), resolution=True, resolution_mm=(3.0, 3.0),
                          min_foreground=0.0)
    sharp = CropSampler([src], 32, 1, seed=0, augmentation=coarse.with_(resolution=False, rotation=True))
    blurred = CropSampler([src], 32, 1, seed=0, augmentation=coarse)
    assert np.std(blurred.sample(4)) < 0.3 * np.std(sharp.sample(4))


def test_object_fraction_counts_tissue_not_air() -> None:
    from diffrecon.datasets import object_fraction

    ct = np.full((2, 8, 8), -1000.0, np.float32)
    ct[0, :4, :4] = 40.0  # a quarter of slice 0 is tissue
    ct[1, :, :2] = -600.0  # fat-free lung-like values stay out
    assert np.allclose(object_fraction(ct, "HU"), [0.25, 0.0])
    mr = np.zeros((8, 8), np.float32)
    mr[:, :4] = 1.0
    mr[0, 0] = 0.05  # below a tenth of the bright end: background
    assert np.allclose(object_fraction(mr, "a.u."), [31 / 64])
