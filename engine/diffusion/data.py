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
  global offset), so the prior knows that scanner images are complex.

Everything random draws from one seeded ``numpy`` generator whose state can be saved
and restored, so resumed training sees exactly the crops it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..datasets import DATASETS, load_dataset, training_blocks, validation_slices
from ..errors import DiffreconError, SettingsError

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


def load_sources(items: list[str], modality: str, val_fraction: float = 0.1) -> list[TrainingSource]:
    """Dataset names or volume paths -> normalised training sources."""
    if modality not in MODALITY_CODES:
        raise SettingsError(f"modality must be one of {', '.join(MODALITY_CODES)}; got {modality!r}")
    if not items:
        raise SettingsError("give at least one training scan (a path or a dataset name)")
    norm = Normalisation.for_modality(modality)
    return [_load_one(item, modality, norm, val_fraction) for item in items]


def _load_one(item: str, modality: str, norm: Normalisation, val_fraction: float) -> TrainingSource:
    code = MODALITY_CODES[modality]
    if item in DATASETS:
        vol = load_dataset(item)
        if vol.modality != code:
            raise SettingsError(f"dataset '{item}' is {vol.modality}, not {code}; it cannot train a {modality} prior")
        scale = norm.volume_scale(vol.data)
        blocks = [norm.to_model(b, scale) for b in training_blocks(vol, item)]
        val_idx = validation_slices(vol, item)
        lo, hi = DATASETS[item].held_out_z_mm
        held = f"axial slices {val_idx[0]}-{val_idx[-1]} (world z in [{lo:g}, {hi:g}) mm)"
        provenance = DATASETS[item].provenance
    else:
        from ..io import load_volume

        vol = load_volume(Path(item))
        if vol.modality not in ("OT", code):
            raise SettingsError(f"{item} is a {vol.modality} scan, not {code}; it cannot train a {modality} prior")
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
        provenance = f"user scan {Path(item).name}"
    validation = norm.to_model(vol.data[val_idx], scale)
    return TrainingSource(item, blocks, validation, tuple(vol.spacing), held, provenance)


@dataclass(frozen=True)
class Augmentation:
    flips: bool = True
    intensity_range: tuple[float, float] = (0.85, 1.15)
    linear_phase_std: float = 1.0  # radians from the centre to the edge of the crop
    quadratic_phase_std: float = 0.5
    min_foreground: float = 0.15  # a crop with less tissue than this is "background"...
    keep_background: float = 0.05  # ...and is kept only this often, so the prior still knows air
    foreground_level: float = 0.05  # model-domain magnitude above which a pixel counts as tissue


def _plane_stacks(block: np.ndarray, spacing: tuple[float, float, float], size: int) -> list[np.ndarray]:
    """Axial, coronal and sagittal slice stacks ``(n, H, W)`` of a block, large enough to crop."""
    stacks = [block]
    sz, sy, sx = spacing
    iso = block
    if block.shape[0] > 1 and abs(sz / min(sy, sx) - 1) > 0.05:
        # Resample slices to the in-plane spacing so coronal/sagittal anatomy keeps its shape.
        factors = (sz / sy, 1.0, sx / sy)
        if np.iscomplexobj(block):
            iso = ndimage.zoom(block.real, factors, order=1) + 1j * ndimage.zoom(block.imag, factors, order=1)
        else:
            iso = ndimage.zoom(block, factors, order=1)
    stacks.append(np.moveaxis(iso, 1, 0))  # coronal: (y, z, x)
    stacks.append(np.moveaxis(iso, 2, 0))  # sagittal: (x, z, y)
    return [s for s in stacks if s.shape[1] >= size and s.shape[2] >= size]


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
    """Seeded random training crops ``(B, C, size, size)`` from the training blocks."""

    def __init__(self, sources: list[TrainingSource], size: int, channels: int, seed: int,
                 augmentation: Augmentation | None = None):
        self.size, self.channels = size, channels
        self.aug = augmentation or Augmentation()
        self.rng = np.random.default_rng(seed)
        self.stacks = [s for src in sources for b in src.blocks for s in _plane_stacks(b, src.spacing, size)]
        if not self.stacks:
            raise SettingsError(f"no training slice is at least {size}x{size} pixels; use a smaller --size")
        weights = np.array([s.size for s in self.stacks], dtype=np.float64)
        self.weights = weights / weights.sum()  # voxel count: every orientation equally likely

    def state(self) -> dict[str, Any]:
        """The generator's state (JSON-able), for exact resume."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state

    def sample(self, batch: int) -> np.ndarray:
        return np.stack([self._one() for _ in range(batch)])

    def _one(self) -> np.ndarray:
        rng, aug, s = self.rng, self.aug, self.size
        for _ in range(20):
            stack = self.stacks[rng.choice(len(self.stacks), p=self.weights)]
            k = rng.integers(stack.shape[0])
            y0 = rng.integers(stack.shape[1] - s + 1)
            x0 = rng.integers(stack.shape[2] - s + 1)
            crop = np.array(stack[k, y0 : y0 + s, x0 : x0 + s])
            tissue = float(np.mean(np.abs(crop) > aug.foreground_level))
            if tissue >= aug.min_foreground or rng.random() < aug.keep_background:
                break
        if aug.flips:
            if rng.random() < 0.5:
                crop = crop[::-1]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
        crop = crop * rng.uniform(*aug.intensity_range)
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
    slices = [(src, k) for src in sources for k in range(len(src.validation))
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
