"""Training crops for a prior: which voxels it may see, in which intensity domain, with which augmentations.

* **Sources**: each training scan is split into the blocks it may train on and the
  held-out axial slices it is validated on. For the named datasets
  (:data:`diffrecon.datasets.DATASETS`) the split is theirs (:func:`training_blocks`,
  :func:`validation_slices`); for a user's scan a contiguous block of axial slices in
  the middle of the volume (``val_fraction`` of them) is held out.
* **Crops** come from axial, coronal and sagittal slices of the blocks (never across
  the held-out slab). Anisotropic scans are resampled to isotropic voxels before
  coronal/sagittal slices are cut, so anatomy is not squashed.
* **Intensity domain** (:class:`Normalisation`, stored in the checkpoint so inference
  maps volumes the same way): MRI and ultrasound are divided by the 99.5th percentile
  of the volume's magnitude (all voxels); CT maps ``x = (HU + 1000) / 2000``, which is
  ``mu / (2 mu_water)``: proportional to attenuation, 0 for air, 0.5 for water.
* **Augmentation**: random flips, random intensity scaling, and for two-channel (complex)
  MRI priors a random smooth phase (a quadratic polynomial over the crop with a random
  global offset), so the prior knows that scanner images are complex; plus the
  generalising transforms of :mod:`.augment` (resolution, rotation, elastic, contrast,
  bias, noise) when they are switched on.

Everything random draws from one seeded ``numpy`` generator whose state can be saved
and restored, so resumed training sees exactly the crops it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..datasets import (
    DATASETS,
    check_trainable,
    evaluation_slices,
    load_dataset_volumes,
    training_blocks,
    validation_slices,
)
from ..errors import DiffreconError, SettingsError
from ..physics.ultrasound import bmode_working_image
from .augment import Augmentation, add_noise, draw_geometry, remap_intensity, resampled_crop, window_half_extent

# CLI name -> Volume.modality
MODALITY_CODES = {"mri": "MR", "ct": "CT", "ultrasound": "US"}
CT_HU_FLOOR = -1024.0  # CT numbers below this are scanner padding outside the field of view


@dataclass(frozen=True)
class Normalisation:
    """How a volume's intensities map into the model's domain (and back).

    ``kind`` is ``"percentile"`` (divide by the ``percentile``-th percentile of the
    volume's magnitude, all voxels) or ``"hu"`` (``x = (HU - offset) / scale``).
    """

    kind: str
    percentile: float = 99.5
    offset: float = -1000.0
    scale: float = 2000.0

    @classmethod
    def for_modality(cls, modality: str) -> Normalisation:
        return cls("hu") if modality == "ct" else cls("percentile")

    def to_metadata(self) -> dict[str, Any]:
        if self.kind == "percentile":
            return {"kind": "percentile", "percentile": self.percentile,
                    "rule": "x = image / percentile(|volume|, p) over all voxels"}
        return {"kind": "hu", "offset": self.offset, "scale": self.scale, "hu_floor": CT_HU_FLOOR,
                "rule": "x = (max(HU, hu_floor) - offset) / scale = mu / (2 mu_water)"}

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Normalisation:
        if meta.get("kind") == "percentile":
            return cls("percentile", percentile=float(meta["percentile"]))
        if meta.get("kind") == "hu":
            return cls("hu", offset=float(meta["offset"]), scale=float(meta["scale"]))
        raise ValueError(f"unknown normalisation {meta!r}")

    def volume_scale(self, data: np.ndarray) -> float:
        """The divisor for this volume (the percentile for MRI; fixed for CT)."""
        if self.kind == "hu":
            return self.scale
        p = float(np.percentile(np.abs(data), self.percentile))
        if not np.isfinite(p) or p <= 0:
            raise DiffreconError("the volume is blank (its 99.5th percentile is zero), so it cannot be normalised")
        return p

    def to_model(self, data: np.ndarray, scale: float | None = None) -> np.ndarray:
        """Map a volume (or slice) into the model's domain; complex data keep their phase."""
        if self.kind == "hu":
            return ((np.maximum(data, CT_HU_FLOOR) - self.offset) / self.scale).astype(np.float32)
        s = self.volume_scale(data) if scale is None else scale
        return (data / s).astype(np.complex64 if np.iscomplexobj(data) else np.float32)

    def from_model(self, x: np.ndarray, scale: float | None = None) -> np.ndarray:
        """Inverse of :meth:`to_model` (``scale``: the divisor :meth:`volume_scale` gave)."""
        if self.kind == "hu":
            return x * self.scale + self.offset
        if scale is None:
            raise ValueError("percentile normalisation needs the volume's scale to map back")
        return x * scale


@dataclass
class TrainingSource:
    """One scan, normalised, split into what may be trained on and what is held out."""

    name: str
    blocks: list[np.ndarray]  # (z, y, x) parts outside the held-out slab, model domain
    validation: np.ndarray  # (n, y, x) held-out axial slices, model domain
    spacing: tuple[float, float, float]
    held_out: str  # human description for the model card
    provenance: str
    role: str = "train"  # "validation": no blocks, only validation slices


def load_sources(items: list[str], modality: str, val_fraction: float = 0.1) -> list[TrainingSource]:
    """Dataset names or volume paths -> normalised training sources (one per volume).

    A ``validation`` dataset gives a source with no training blocks (only validation
    slices); a ``test`` dataset is refused (:func:`diffrecon.datasets.check_trainable`).
    """
    if modality not in MODALITY_CODES:
        raise SettingsError(f"modality must be one of {', '.join(MODALITY_CODES)}; got {modality!r}")
    if not items:
        raise SettingsError("give at least one training scan (a path or a dataset name)")
    norm = Normalisation.for_modality(modality)
    return [src for item in items for src in _load_one(item, modality, norm, val_fraction)]


def _load_one(item: str, modality: str, norm: Normalisation, val_fraction: float) -> list[TrainingSource]:
    code = MODALITY_CODES[modality]
    if item in DATASETS:
        info = check_trainable(item)
        if info.modality != code:
            raise SettingsError(f"dataset '{item}' is {info.modality}, not {code}; it cannot train a {modality} prior")
        sources = []
        for k, vol in enumerate(load_dataset_volumes(item)):
            if modality == "ultrasound":  # train where the task works: the log-compressed B-mode
                vol.data = bmode_working_image(vol.data)
            scale = norm.volume_scale(vol.data)
            name = item if k == 0 else f"{item}#{k}"
            if info.role == "validation":
                idx = evaluation_slices(vol, item)
                blocks, held = [], (f"all of it (validation subject {info.subject}; its axial slices {idx[0]}-{idx[-1]} "
                                "score the validation loss)")
            else:
                blocks = [norm.to_model(b, scale) for b in training_blocks(vol, item)]
                idx = validation_slices(vol, item)
                if idx.size:
                    lo, hi = info.held_out_z_mm or (0, 0)
                    held = f"axial slices {idx[0]}-{idx[-1]} (world z in [{lo:g}, {hi:g}) mm)"
                else:
                    held = "nothing (the whole training subject)"
            validation = norm.to_model(vol.data[idx], scale) if idx.size else np.zeros((0,) + vol.shape[1:], np.float32)
            sources.append(TrainingSource(name, blocks, validation, vol.spacing, held, info.provenance,
                                          role=info.role))
        return sources
    from ..io import load_volume

    vol = load_volume(Path(item))
    if vol.modality not in ("OT", code):
        raise SettingsError(f"{item} is a {vol.modality} scan, not {code}; it cannot train a {modality} prior")
    if modality == "ultrasound":
        vol.data = bmode_working_image(vol.data)
    if not 0 < val_fraction < 1:
        raise SettingsError(f"--val-fraction must be between 0 and 1; got {val_fraction}")
    n = vol.n_slices
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise SettingsError(f"{item} has only {n} slices: too few to hold out {n_val} for validation")
    start = (n - n_val) // 2  # the middle of a scan holds the most anatomy
    val_idx = np.arange(start, start + n_val)
    scale = norm.volume_scale(vol.data)
    blocks = [norm.to_model(b, scale) for b in (vol.data[:start], vol.data[start + n_val:]) if len(b)]
    held = f"axial slices {start}-{start + n_val - 1} (the middle {val_fraction:.0%})"
    validation = norm.to_model(vol.data[val_idx], scale)
    return [TrainingSource(item, blocks, validation, vol.spacing, held, f"user scan {Path(item).name}")]


MAX_THROUGH_PLANE_RATIO = 3.5  # thicker slices than this x the pixel size: no coronal/sagittal crops


def _plane_stacks(block: np.ndarray, spacing: tuple[float, float, float], min_size: int) -> list[np.ndarray]:
    """Axial, coronal and sagittal slice stacks ``(n, H, W)`` of a block, at least ``min_size`` wide.

    Coronal and sagittal stacks are resampled to the in-plane spacing so anatomy keeps its
    shape; a scan with slices much thicker than its pixels gives only axial slices (its
    reformats would be mostly interpolation).
    """
    stacks = [block]
    sz, sy, sx = spacing
    ratio = sz / min(sy, sx)
    if block.shape[0] > 1 and ratio <= MAX_THROUGH_PLANE_RATIO:
        iso = block
        if abs(ratio - 1) > 0.05:
            factors = (sz / sy, 1.0, sx / sy)
            if np.iscomplexobj(block):
                iso = ndimage.zoom(block.real, factors, order=1) + 1j * ndimage.zoom(block.imag, factors, order=1)
            else:
                iso = ndimage.zoom(block, factors, order=1)
        stacks.append(np.moveaxis(iso, 1, 0))  # coronal: (y, z, x)
        stacks.append(np.moveaxis(iso, 2, 0))  # sagittal: (x, z, y)
    return [s for s in stacks if s.shape[1] >= min_size and s.shape[2] >= min_size]


def random_phase(rng: np.random.Generator, size: int, aug: Augmentation) -> np.ndarray:
    """A smooth random phase map (radians): global offset + linear + quadratic terms."""
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    c = rng.normal(size=5)
    phase = (
        rng.uniform(-np.pi, np.pi)
        + aug.linear_phase_std * (c[0] * x + c[1] * y)
        + aug.quadratic_phase_std * (c[2] * x * x + c[3] * x * y + c[4] * y * y)
    )
    return phase


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """A model-domain image -> ``(channels, H, W)``: magnitude/real, or real and imaginary."""
    if channels == 1:
        return (np.abs(img) if np.iscomplexobj(img) else img)[None].astype(np.float32)
    return np.stack([img.real, img.imag]).astype(np.float32)


class CropSampler:
    """Seeded random training crops ``(B, C, size, size)`` from the training blocks.

    Each source (one scan) is drawn with probability proportional to the square root of its
    voxel count, so that two large templates do not drown a dozen small real scans; within
    a source, stacks (orientations) by voxel count. With resampling augmentations a crop
    may reach past the edge of a small slice (the outside reads as air), so any slice at
    least half the crop wide can be used.
    """

    def __init__(self, sources: list[TrainingSource], size: int, channels: int, seed: int,
                 augmentation: Augmentation | None = None):
        self.size, self.channels = size, channels
        self.aug = augmentation or Augmentation()
        self.rng = np.random.default_rng(seed)
        min_size = size // 2 if self.aug.resamples else size
        self.stacks: list[np.ndarray] = []
        self.spacings: list[float] = []
        self.air_border: list[np.ndarray] = []  # per slice: its border is air, so reading past it is harmless
        by_dataset: dict[str, list[tuple[np.ndarray, float]]] = {}
        for src in sources:  # the volumes of one dataset (e.g. 4D frames) share its weight
            for b in src.blocks:
                for st in _plane_stacks(b, src.spacing, min_size):
                    by_dataset.setdefault(src.name.split("#")[0], []).append((st, float(src.spacing[1])))
        weights: list[float] = []
        for stacks in by_dataset.values():
            total = sum(st.size for st, _ in stacks)
            for st, spacing in stacks:
                self.stacks.append(st)
                self.spacings.append(spacing)
                border = np.concatenate([np.abs(st[:, [0, -1], :]).reshape(len(st), -1),
                                         np.abs(st[:, :, [0, -1]]).reshape(len(st), -1)], axis=1)
                self.air_border.append(np.percentile(border, 95, axis=1) < self.aug.foreground_level)
                weights.append(np.sqrt(total) * st.size / total)
        if not self.stacks:
            raise SettingsError(f"no training slice is at least {min_size}x{min_size} pixels; use a smaller --size")
        w = np.array(weights, dtype=np.float64)
        self.weights = w / w.sum()

    def state(self) -> dict[str, Any]:
        """The generator's state (JSON-able), for exact resume."""
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def sample(self, batch: int, size: int | None = None) -> np.ndarray:
        return np.stack([self._one(size or self.size) for _ in range(batch)])

    def _one(self, s: int) -> np.ndarray:
        rng, aug = self.rng, self.aug
        for _ in range(20):
            i = rng.choice(len(self.stacks), p=self.weights)
            stack = self.stacks[i]
            k = rng.integers(stack.shape[0])
            if aug.resamples:
                zoom, angle = draw_geometry(rng, aug, self.spacings[i])
                half = np.zeros(2) if self.air_border[i][k] else window_half_extent(s, zoom, angle, aug)
                room = np.array(stack.shape[1:], float) - 1 - 2 * half
                if np.any(room < 0):
                    continue  # the window does not fit in this slice at this zoom and angle: draw again
                centre = (half[0] + rng.uniform(0, room[0]), half[1] + rng.uniform(0, room[1]))
                crop = resampled_crop(stack[k], s, zoom, angle, centre, rng, aug)
            else:
                y0 = rng.integers(max(stack.shape[1] - s, 0) + 1)
                x0 = rng.integers(max(stack.shape[2] - s, 0) + 1)
                crop = np.array(stack[k, y0 : y0 + s, x0 : x0 + s])
            tissue = float(np.mean(np.abs(crop) > aug.foreground_level))
            if tissue >= aug.min_foreground or rng.random() < aug.keep_background:
                break
        if aug.flips:
            if rng.random() < 0.5:
                crop = crop[::-1]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        crop = remap_intensity(np.ascontiguousarray(crop), rng, aug)
        crop = crop * rng.uniform(*aug.intensity_range)
        crop = add_noise(crop, rng, aug)
        if self.channels == 2:
            crop = crop * np.exp(1j * random_phase(rng, s, aug))
        return to_channels(crop, self.channels)


def validation_crops(sources: list[TrainingSource], size: int, channels: int, count: int, seed: int = 1234,
                     augmentation: Augmentation | None = None) -> np.ndarray:
    """A fixed set of ``count`` crops from the held-out slices (mostly tissue), ``(N, C, size, size)``.

    The same ``seed`` gives the same crops, so validation losses are comparable across runs.
    """
    aug = augmentation or Augmentation()
    rng = np.random.default_rng(seed)
    # Unseen validation subjects when there are any; else the held-out slabs of training scans.
    pool = [src for src in sources if src.role == "validation"] or sources
    slices = [(src, k) for src in pool for k in range(len(src.validation))
              if min(src.validation.shape[1:]) >= size]
    if not slices:
        raise SettingsError(f"no held-out slice is at least {size}x{size} pixels; use a smaller --size")
    crops = []
    for i in range(count):
        src, k = slices[(i * len(slices)) // count]  # spread evenly over the held-out slices
        img = src.validation[k]
        for _ in range(50):
            y0 = rng.integers(img.shape[0] - size + 1)
            x0 = rng.integers(img.shape[1] - size + 1)
            crop = img[y0 : y0 + size, x0 : x0 + size]
            if np.mean(np.abs(crop) > aug.foreground_level) >= aug.min_foreground:
                break
        if channels == 2:
            crop = crop * np.exp(1j * random_phase(rng, size, aug))
        crops.append(to_channels(crop, channels))
    return np.stack(crops)
