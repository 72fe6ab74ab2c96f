"""Augmentations that turn a few scanned subjects into many plausible ones.

A prior trained on two template brains learns those brains. These transforms make it
see what other scanners and subjects look like, each switchable (:class:`Augmentation`)
so its effect can be measured on the test subjects:

* **resolution**: the crop is resampled to a random pixel size between 0.7 and 3 mm,
  anisotropically, after a Gaussian blur as wide as the acquisition's point-spread
  function would be (so a 3 mm crop looks like a 3 mm scan, not a sharp image with big
  pixels); sources are never upsampled more than 1.25x (that would only teach blur);
* **rotation** by any angle and **elastic** deformation (smoothed random displacements),
  all in one resampling of the source slice (order 1), so interpolation blurs once;
* **contrast** (MRI only): a random intensity curve on the magnitude, monotone (gamma)
  or not (piecewise linear through random knots, e.g. bright CSF as in T2), background
  kept dark; CT numbers are physical, so CT is never remapped;
* **bias**: a smooth multiplicative field (MRI only), as from coil sensitivity;
* **noise**: a little Gaussian noise on some crops.

Every draw comes from the caller's ``numpy`` generator, so a seed fixes the crops.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

AUGMENTATION_NAMES = ("resolution", "rotation", "elastic", "contrast", "bias", "noise")


@dataclass(frozen=True)
class Augmentation:
    flips: bool = True
    intensity_range: tuple[float, float] = (0.85, 1.15)
    linear_phase_std: float = 1.0  # radians from the centre to the edge of the crop
    quadratic_phase_std: float = 0.5
    min_foreground: float = 0.15  # a crop with less tissue than this is "background"...
    keep_background: float = 0.05  # ...and is kept only this often, so the prior still knows air
    foreground_level: float = 0.05  # model-domain magnitude above which a pixel counts as tissue
    # The generalising transforms (off by default; `diffrecon train` turns them on).
    resolution: bool = False
    resolution_mm: tuple[float, float] = (0.7, 3.0)
    rotation: bool = False
    elastic: bool = False
    elastic_px: float = 2.0  # displacement amplitude (output pixels)
    contrast: bool = False
    bias: bool = False
    bias_strength: float = 0.3  # log-amplitude of the multiplicative field
    noise: bool = False
    noise_max: float = 0.02  # Gaussian sigma, model domain, drawn in [0, noise_max]
    noise_probability: float = 0.2

    @classmethod
    def generalising(cls, modality: str, enabled: tuple[str, ...] = AUGMENTATION_NAMES) -> "Augmentation":
        """Every transform in ``enabled``; contrast and bias only for MRI."""
        unknown = set(enabled) - set(AUGMENTATION_NAMES)
        if unknown:
            raise ValueError(f"unknown augmentation {sorted(unknown)}; known: {', '.join(AUGMENTATION_NAMES)}")
        on = {name: name in enabled for name in AUGMENTATION_NAMES}
        if modality != "mri":
            on["contrast"] = on["bias"] = False
        return cls(**on)  # type: ignore[arg-type]  # every field named in AUGMENTATION_NAMES is a bool switch

    def enabled(self) -> list[str]:
        return [n for n in AUGMENTATION_NAMES if getattr(self, n)]

    def with_(self, **changes: Any) -> "Augmentation":
        return replace(self, **changes)

    def to_json(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def resamples(self) -> bool:
        return self.resolution or self.rotation or self.elastic


def draw_geometry(rng: np.random.Generator, aug: Augmentation, spacing_mm: float) -> tuple[np.ndarray, float]:
    """A random zoom (source pixels per output pixel, rows and cols) and rotation angle."""
    zoom = np.ones(2)
    if aug.resolution:
        lo, hi = aug.resolution_mm
        lo = max(lo, 0.8 * spacing_mm)  # never upsample more than 1.25x
        hi = max(hi, lo)
        mm = rng.uniform(lo, hi, size=2) if rng.random() < 0.5 else np.full(2, rng.uniform(lo, hi))
        zoom = mm / spacing_mm
    angle = float(rng.uniform(-np.pi, np.pi)) if aug.rotation else 0.0
    return zoom, angle


def window_half_extent(size: int, zoom: np.ndarray, angle: float, aug: Augmentation) -> np.ndarray:
    """Half the source-pixel extent (rows, cols) a crop with this geometry reads, elastic margin included."""
    c, s = abs(np.cos(angle)), abs(np.sin(angle))
    h = (size - 1) / 2.0 + (aug.elastic_px if aug.elastic else 0.0)
    return np.array([h * (c * zoom[0] + s * zoom[1]), h * (s * zoom[0] + c * zoom[1])]) + 1.0


def resampled_crop(img: np.ndarray, size: int, zoom: np.ndarray, angle: float, centre: tuple[float, float],
                   rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """A ``size`` x ``size`` crop of ``img`` around ``centre`` at this zoom and angle, elastically warped.

    Pixels outside ``img`` read 0 (air in the model domain of every modality); the caller
    keeps the window inside the image unless the image's border is air anyway, so the
    prior never sees anatomy cut off by a straight edge.
    """
    src = img
    blur = np.sqrt(np.maximum(zoom**2 - 1.0, 0.0)) * 0.5  # the PSF of the coarser acquisition, source px
    if np.any(blur > 0.1):
        src = _filter(img, lambda a: ndimage.gaussian_filter(a, blur, mode="nearest"))
    c, s = np.cos(angle), np.sin(angle)
    r = (np.arange(size) - (size - 1) / 2.0)
    v, u = np.meshgrid(r, r, indexing="ij")  # output row, col offsets
    dv, du = v * zoom[0], u * zoom[1]
    if aug.elastic:
        field = rng.standard_normal((2, size, size))
        field = ndimage.gaussian_filter(field, (0, size / 8, size / 8))
        field *= aug.elastic_px / max(float(np.abs(field).max()), 1e-6)
        dv, du = dv + field[0] * zoom[0], du + field[1] * zoom[1]
    rows = centre[0] + c * dv - s * du
    cols = centre[1] + s * dv + c * du
    coords = np.stack([rows, cols])
    return _filter(src, lambda a: ndimage.map_coordinates(a, coords, order=1, mode="constant", cval=0.0))


def _filter(img: np.ndarray, f) -> np.ndarray:
    """Apply a real filter to a real or complex image."""
    if np.iscomplexobj(img):
        return (f(img.real) + 1j * f(img.imag)).astype(np.complex64)
    return f(img).astype(np.float32)


def contrast_curve(magnitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random intensity curve over the magnitude (about 0..1.2), background kept dark."""
    m = np.maximum(magnitude, 0.0)
    if rng.random() < 0.6:
        return m ** rng.uniform(0.5, 2.0) if rng.random() < 0.8 else m  # monotone: gamma
    knots_x = np.array([0.0, 0.05, 0.25, 0.5, 0.75, 1.0, 1.5])
    knots_y = np.concatenate([[0.0, rng.uniform(0.0, 0.1)], rng.uniform(0.1, 1.0, size=4), [0.0]])
    knots_y[-1] = knots_y[-2] * 1.2  # keep the bright tail continuing its last slope roughly
    return np.interp(m, knots_x, knots_y, right=knots_y[-1])


def bias_field(size: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(quadratic polynomial)``, mean log near 0."""
    y, x = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    c = rng.normal(scale=strength / 2, size=5)
    log = c[0] * x + c[1] * y + c[2] * x * x + c[3] * x * y + c[4] * y * y
    return np.exp(log - log.mean()).astype(np.float32)


def remap_intensity(crop: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Contrast curve and bias field on the magnitude; a complex crop keeps its phase."""
    mag = np.abs(crop)
    new = mag
    if aug.contrast:
        new = contrast_curve(new, rng)
    if aug.bias:
        new = new * bias_field(crop.shape[-1], rng, aug.bias_strength)
    if new is mag:
        return crop
    if np.iscomplexobj(crop):
        phase = np.exp(1j * np.angle(crop))
        return (new * phase).astype(np.complex64)
    return new.astype(np.float32)


def add_noise(crop: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    if not aug.noise or rng.random() >= aug.noise_probability:
        return crop
    sigma = rng.uniform(0.0, aug.noise_max)
    noise = rng.standard_normal(crop.shape)
    if np.iscomplexobj(crop):
        noise = noise + 1j * rng.standard_normal(crop.shape)
    return (crop + sigma * noise).astype(crop.dtype)
