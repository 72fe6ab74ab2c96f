"""From a loaded volume to reconstruction problems: measurements, operator, input image.

Two ways in:

* **simulate** (``--simulate``): the volume is the ground truth; measurements are made
  from it with the chosen physics and seed (the same mask/noise whatever the method).
* **measured**: the file holds the measurements itself: raw k-space (fastMRI HDF5) for
  MRI, or the noisy image for denoising and ultrasound.

Every problem lives in a *working domain* where intensities are O(1), so that tuned
parameters and priors transfer between scans, and where metrics are computed:

==========  ======================================================================
modality    working image
==========  ======================================================================
mri         complex image / s, s = 99.5th percentile of the magnitude over the
            chosen slices (of the ground truth, or of the zero-filled image)
ct          (HU + 1000) / 2000: proportional to attenuation (air 0, water 0.5,
            +1000 HU bone 1.0); the projector's units make ``A x`` the physical
            line integral, so the Poisson dose model applies to it directly
denoise     image / s, s = 99.5th percentile over the chosen slices
ultrasound  log-compressed B-mode in [0, 1] (the display domain; despeckling works there)
==========  ======================================================================

:meth:`ProblemSource.to_volume_units` maps a working-domain result back to the
input's intensity units (magnitude for MRI, HU for CT).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Iterator

import numpy as np
import torch

from .errors import SettingsError
from .io.volume import Volume
from .physics import MRIOperator, make_mask
from .physics.base import LinearOperator
from .physics.ct import MU_WATER_PER_MM, ParallelBeamRadon, simulate_low_dose
from .physics.mri import fft2c, ifft2c
from .physics.noise import (
    CorrelatedGaussianNoise,
    GammaNoise,
    GaussianNoise,
    IdentityOperator,
    PoissonNoise,
)

NOISE_MODELS = ("gaussian", "poisson", "gamma", "correlated")


@dataclass
class MeasurementSettings:
    """How measurements are made (or were made). Recorded in every output."""

    modality: str
    acceleration: float = 4.0  # MRI
    mask: str = "random"  # MRI: random | equispaced | gaussian2d | poisson
    center_fraction: float | None = None  # MRI: None = 0.32 / acceleration
    coils: int = 0  # MRI simulation: 0 = single coil, else simulated SENSE coils
    views: int | None = None  # CT: number of views over 180 degrees
    dose: float | None = None  # CT: dose fraction of 4096 photons per bin (None = noiseless)
    noise: str = "gaussian"  # denoise: gaussian | poisson | gamma | correlated
    noise_sigma: float = 0.1  # denoise: std (gaussian, correlated), relative to the working domain
    noise_peak: float = 30.0  # denoise: photons at intensity 1 (poisson)
    looks: float = 1.0  # denoise (gamma) and ultrasound speckle looks
    correlation_px: float = 1.5  # denoise (correlated): kernel std in pixels
    dynamic_range_db: float = 50.0  # ultrasound log compression
    seed: int = 0

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise SettingsError(f"unknown modality {self.modality!r}; choose one of {', '.join(MODALITIES)}")
        if self.modality == "ct":
            if self.views is None:
                self.views = 180 if self.dose is not None else 60
            if self.views < 2:
                raise SettingsError(f"CT needs at least 2 views; got {self.views}")
            if self.dose is not None and not 0.0 < self.dose <= 1.0:
                raise SettingsError(f"the CT dose fraction must be in (0, 1]; got {self.dose}")
        if self.modality == "denoise" and self.noise not in NOISE_MODELS:
            raise SettingsError(f"unknown noise model {self.noise!r}; choose one of {', '.join(NOISE_MODELS)}")

    def to_dict(self) -> dict:
        """Only the settings that matter for this modality."""
        keep = {
            "mri": ("acceleration", "mask", "center_fraction", "coils"),
            "ct": ("views", "dose"),
            "denoise": ("noise",) + {"gaussian": ("noise_sigma",), "poisson": ("noise_peak",),
                                     "gamma": ("looks",), "correlated": ("noise_sigma", "correlation_px")}[self.noise],
            "ultrasound": ("looks", "dynamic_range_db"),
        }[self.modality]
        d = asdict(self)
        return {"modality": self.modality, **{k: d[k] for k in keep}, "seed": self.seed}

    def describe(self) -> str:
        if self.modality == "mri":
            return f"MRI {self.acceleration:g}x {self.mask} mask" + (f", {self.coils} coils" if self.coils else "")
        if self.modality == "ct":
            return f"CT {self.views} views" + (f", {self.dose:.0%} dose" if self.dose is not None else "")
        if self.modality == "denoise":
            return f"denoising, {self.noise} noise"
        return f"ultrasound speckle, {self.looks:g} look(s)"


@dataclass
class ReconProblem:
    """One batch of slices to reconstruct, all in the working domain."""

    modality: str
    operator: LinearOperator
    y: torch.Tensor  # measurements
    observed: torch.Tensor  # (B, 1, H, W) real: what one sees without reconstruction
    reference: torch.Tensor | None  # (B, 1, H, W) real ground truth, when known
    noise_level: float  # std of the measurement noise in y's units (0 = noiseless)
    slices: np.ndarray  # indices of these slices in the volume
    # denoising: the noise model and its parameters (physics.noise.NoiseModel fields)
    noise: dict | None = None

    def to(self, device: torch.device) -> "ReconProblem":
        """The problem's tensors on ``device`` (operators move their own tables on first use)."""
        if self.y.device == device:
            return self
        reference = None if self.reference is None else self.reference.to(device)
        return replace(self, y=self.y.to(device), observed=self.observed.to(device), reference=reference)


def _percentile_scale(values: np.ndarray) -> float:
    s = float(np.percentile(np.abs(values), 99.5))
    return s if s > 0 else float(np.abs(values).max() or 1.0)


def _slice_generator(seed: int, index: int) -> torch.Generator:
    """Noise for slice ``index`` depends only on the seed and the slice, not on batching."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index))


class ModalityMeasurements:
    """One modality's problem builder and working-domain mapping, for the chosen slices.

    ``settings`` is the source's own copy: a builder may record there what the file
    decided (measured MRI: the file's mask and acceleration).
    """

    def __init__(self, volume: Volume, settings: MeasurementSettings, slice_index: np.ndarray, simulate: bool):
        self.volume, self.settings, self.slice_index, self.simulate = volume, settings, slice_index, simulate

    def problem(self, idx: np.ndarray) -> ReconProblem:
        """The problem of the slices ``idx`` (all in the working domain)."""
        raise NotImplementedError

    def to_volume_units(self, x: torch.Tensor) -> np.ndarray:
        """A real working-domain result ``(B, H, W)`` -> float32 in the input's units."""
        raise NotImplementedError

    def working_crop(self, image: torch.Tensor) -> torch.Tensor:
        """Working-domain images ``(B, 1, H, W)`` cropped like the output."""
        return image


class MRIMeasurements(ModalityMeasurements):
    """Cartesian MRI: simulated from an image (``--simulate``) or the k-space of the file."""

    _measured = False

    def __init__(self, volume: Volume, settings: MeasurementSettings, slice_index: np.ndarray, simulate: bool):
        super().__init__(volume, settings, slice_index, simulate)
        if not simulate and volume.kspace is None:
            raise SettingsError(
                f"{volume.source_path or 'the input'} holds an image, not k-space; pass --simulate to treat it "
                f"as the ground truth and simulate the measurements"
            )
        if not simulate:
            self._init_measured()
            return
        self._scale = _percentile_scale(volume.data[slice_index])
        h, w = volume.shape[1:]
        self._mask = make_mask(settings.mask, (h, w), settings.acceleration, settings.center_fraction, settings.seed)
        self._maps = None
        if settings.coils:
            from .physics.coils import simulate_coil_maps

            self._maps = simulate_coil_maps(settings.coils, h, w, seed=settings.seed)

    def problem(self, idx: np.ndarray) -> ReconProblem:
        return self._measured_problem(idx) if self._measured else self._simulated_problem(idx)

    def _simulated_problem(self, idx: np.ndarray) -> ReconProblem:
        gt = torch.from_numpy(np.ascontiguousarray(self.volume.data[idx]))[:, None] / self._scale
        gt = gt.to(torch.complex64) if gt.is_complex() else torch.complex(gt.float(), torch.zeros_like(gt.float()))
        op = MRIOperator(self._mask, self._maps)
        y = op.A(gt)
        return ReconProblem("mri", op, y, op.zero_filled(y), gt.abs(), 0.0, idx)

    def _init_measured(self) -> None:
        self._measured = True
        k = self.volume.kspace
        assert k is not None
        h, w = k.data.shape[-2:]
        if k.fully_sampled:
            self._mask = make_mask(self.settings.mask, (h, w), self.settings.acceleration,
                                   self.settings.center_fraction, self.settings.seed)
        else:
            self._mask = np.broadcast_to(np.asarray(k.mask, bool), (h, w)).copy()
            self.settings.acceleration = round(float(k.acceleration), 3)
            self.settings.mask = "from file"
        # Scale from what a reader of the measurements could compute: the zero-filled image.
        zf = self._zero_filled_rss(self.slice_index)
        self._scale = _percentile_scale(zf)
        self._crop = self.volume.shape[1:]

    def _zero_filled_rss(self, idx: np.ndarray) -> np.ndarray:
        assert self.volume.kspace is not None  # measured MRI
        k = torch.from_numpy(np.ascontiguousarray(self.volume.kspace.data[idx]))
        return ifft2c(k * torch.from_numpy(self._mask)).abs().square().sum(1).sqrt().numpy()

    def _measured_problem(self, idx: np.ndarray) -> ReconProblem:
        k = self.volume.kspace
        assert k is not None  # measured MRI
        full = torch.from_numpy(np.ascontiguousarray(k.data[idx])) / self._scale
        mask = torch.from_numpy(self._mask)
        y = full * mask
        maps = None
        if k.multicoil:
            from .physics.coils import estimate_sensitivity_maps

            maps = np.stack([estimate_sensitivity_maps(s.numpy(), mask=self._mask) for s in y])
        op = MRIOperator(self._mask, maps)
        observed = op.zero_filled(y)
        reference = None
        if self.volume.reference is not None:
            reference = torch.from_numpy(self.volume.reference[idx]).float()[:, None] / self._scale
        elif k.fully_sampled:
            reference = ifft2c(full).abs().square().sum(1, keepdim=True).sqrt()
        return ReconProblem("mri", op, y, observed, reference, 0.0, idx)

    def to_volume_units(self, x: torch.Tensor) -> np.ndarray:
        if self._measured:
            x = _center_crop(x, self._crop)
        return (x * self._scale).numpy().astype(np.float32)

    def working_crop(self, image: torch.Tensor) -> torch.Tensor:
        if self._measured:
            return _center_crop(image[:, 0], self._crop)[:, None]
        return image


class CTMeasurements(ModalityMeasurements):
    """Parallel-beam CT simulated from a HU image, padded to a square (air outside)."""

    def __init__(self, volume: Volume, settings: MeasurementSettings, slice_index: np.ndarray, simulate: bool):
        super().__init__(volume, settings, slice_index, simulate)
        if not simulate:
            raise SettingsError(
                f"{volume.source_path or 'the input'} holds an image, not a sinogram; pass --simulate to treat it "
                f"as the ground truth and simulate the measurements"
            )
        if volume.modality != "CT" and volume.units != "HU":
            raise SettingsError("CT simulation needs a CT volume in Hounsfield units")
        h, w = volume.shape[1:]
        assert settings.views is not None  # MeasurementSettings fills in the default
        self._ct_size = max(h, w)
        pixel_mm = float(volume.spacing[1])
        # A x = physical line integral of mu when x = mu / (2 mu_water).
        self._radon = ParallelBeamRadon(
            self._ct_size,
            settings.views,
            det_count=int(math.ceil(math.sqrt(2) * self._ct_size)),
            pixel_size_mm=pixel_mm * 2.0 * MU_WATER_PER_MM,
        )

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        n = self._ct_size
        top, left = (n - h) // 2, (n - w) // 2
        return torch.nn.functional.pad(x, (left, n - w - left, top, n - h - top))

    def problem(self, idx: np.ndarray) -> ReconProblem:
        hu = torch.from_numpy(np.ascontiguousarray(self.volume.data[idx])).float()[:, None]
        gt = self._pad(((hu + 1000.0) / 2000.0).clamp_min(0.0))  # air outside the slice
        op = self._radon
        clean = op.A(gt)
        if self.settings.dose is not None:
            y = torch.cat([
                simulate_low_dose(clean[i : i + 1], self.settings.dose,
                                  seed=self.settings.seed * 1_000_003 + int(s))
                for i, s in enumerate(idx)
            ])
            # Var of a line integral ~ exp(p) / I0: report the typical std over the object.
            incident = 4096.0 * self.settings.dose
            noise = float(torch.sqrt(torch.exp(clean).mean() / incident))
        else:
            y, noise = clean, 0.0
        observed = op.fbp(y, filter="ramp").clamp_min(0.0)
        return ReconProblem("ct", op, y, observed, gt, noise, idx)

    def _crop_box(self) -> tuple[int, int, int, int]:
        n, (h, w) = self._ct_size, self.volume.shape[1:]
        return (n - h) // 2, (n - w) // 2, h, w

    def to_volume_units(self, x: torch.Tensor) -> np.ndarray:
        top, left, h, w = self._crop_box()
        return (x[:, top : top + h, left : left + w] * 2000.0 - 1000.0).numpy().astype(np.float32)

    def working_crop(self, image: torch.Tensor) -> torch.Tensor:
        top, left, h, w = self._crop_box()
        return image[..., top : top + h, left : left + w]


class DenoiseMeasurements(ModalityMeasurements):
    """Denoising: the image over its 99.5th percentile, with simulated or the file's own noise."""

    def __init__(self, volume: Volume, settings: MeasurementSettings, slice_index: np.ndarray, simulate: bool):
        super().__init__(volume, settings, slice_index, simulate)
        self._scale = _percentile_scale(volume.data[slice_index])

    def _noise_model(self):
        s = self.settings
        return {
            "gaussian": lambda: GaussianNoise(s.noise_sigma),
            "poisson": lambda: PoissonNoise(s.noise_peak),
            "gamma": lambda: GammaNoise(s.looks),
            "correlated": lambda: CorrelatedGaussianNoise(s.noise_sigma, s.correlation_px),
        }[s.noise]()

    def problem(self, idx: np.ndarray) -> ReconProblem:
        img = torch.from_numpy(np.ascontiguousarray(np.abs(self.volume.data[idx]))).float()[:, None] / self._scale
        op = IdentityOperator()
        if not self.simulate:  # the file's own noise: white Gaussian of the estimated std
            sigma = _estimate_sigma(img)
            return ReconProblem("denoise", op, img, img, None, sigma, idx,
                                {"kind": "gaussian", "sigma": sigma, "estimated": True})
        model = self._noise_model()
        y = torch.cat([model.sample(img[i : i + 1], _slice_generator(self.settings.seed, s)) for i, s in enumerate(idx)])
        s = self.settings
        sigma = float((y - img).std()) if s.noise != "gaussian" else s.noise_sigma
        noise = {"gaussian": {"sigma": s.noise_sigma}, "correlated": {"sigma": s.noise_sigma,
                                                                       "correlation_px": s.correlation_px},
                 "poisson": {"peak": s.noise_peak}, "gamma": {"looks": s.looks}}[s.noise]
        return ReconProblem("denoise", op, y, y, img, sigma, idx, {"kind": s.noise, **noise})

    def to_volume_units(self, x: torch.Tensor) -> np.ndarray:
        return (x * self._scale).numpy().astype(np.float32)


class UltrasoundMeasurements(DenoiseMeasurements):
    """Ultrasound: despeckling in the log-compressed B-mode domain.

    Simulated: the scan is the reflectivity (envelope) ``R``; the speckled image and the
    clean reference are log-compressed against one reference, the brightest ``R`` over the
    chosen slices (a fixed scanner gain), with log-unbiased speckle
    (:mod:`.physics.ultrasound`): the speckle is zero-mean noise in the working domain, so
    no result needs re-referencing.
    """

    def __init__(self, volume: Volume, settings: MeasurementSettings, slice_index: np.ndarray, simulate: bool):
        super().__init__(volume, settings, slice_index, simulate)
        self._reference = float(np.abs(volume.data[slice_index]).max()) / self._scale or 1.0

    def problem(self, idx: np.ndarray) -> ReconProblem:
        from .physics.ultrasound import log_compress, simulate_bmode

        s = self.settings
        env = torch.from_numpy(np.ascontiguousarray(np.abs(self.volume.data[idx]))).float()[:, None] / self._scale
        op = IdentityOperator()
        if not self.simulate:
            bmode = env.clamp(0.0, 1.0)
            sigma = _estimate_sigma(bmode)
            return ReconProblem("ultrasound", op, bmode, bmode, None, sigma, idx,
                                {"kind": "gaussian", "sigma": sigma, "estimated": True})
        y = torch.cat([
            simulate_bmode(env[i : i + 1], looks=s.looks, dynamic_range_db=s.dynamic_range_db,
                           seed=s.seed * 1_000_003 + int(sl), reference=self._reference)
            for i, sl in enumerate(idx)
        ])
        reference = log_compress(env, dynamic_range_db=s.dynamic_range_db, reference=self._reference)
        # log-speckle is zero-mean, additive and nearly stationary: its std in display units
        sigma = _log_speckle_std(s.looks, s.dynamic_range_db)
        return ReconProblem("ultrasound", op, y, y, reference, sigma, idx, {"kind": "gaussian", "sigma": sigma})

    def to_volume_units(self, x: torch.Tensor) -> np.ndarray:
        if self.simulate:
            from .physics.ultrasound import log_decompress

            x = log_decompress(x.clamp(0.0, 1.0), dynamic_range_db=self.settings.dynamic_range_db,
                               reference=self._reference)
        return (x * self._scale).numpy().astype(np.float32)


#: each modality's problem builder and working-domain mapping (the registry,
#: :mod:`diffrecon.modalities`, holds them with the rest of what a modality defines)
BUILDERS: dict[str, type[ModalityMeasurements]] = {
    "mri": MRIMeasurements,
    "ct": CTMeasurements,
    "denoise": DenoiseMeasurements,
    "ultrasound": UltrasoundMeasurements,
}
MODALITIES = tuple(BUILDERS)


class ProblemSource:
    """Turns a volume (+ settings) into batches of :class:`ReconProblem`.

    ``slices`` selects the slices to work on (a Python slice or index list, in the order
    they are to be processed). ``simulate=True`` reads the volume as ground truth;
    otherwise the measurements come from the file (k-space for MRI, the noisy image for
    denoising/ultrasound). The source works on its own copy of ``settings`` (measured MRI
    records the file's mask there); the caller's are never changed.
    """

    def __init__(self, volume: Volume, settings: MeasurementSettings, *, slices=slice(None), simulate: bool = False):
        self.volume = volume
        self.settings = replace(settings)
        self.simulate = simulate
        self.slice_index = np.arange(volume.n_slices)[slices]
        if self.slice_index.size == 0:
            raise SettingsError(f"no slices selected (the volume has {volume.n_slices})")
        self.measurements = BUILDERS[self.settings.modality](volume, self.settings, self.slice_index, simulate)

    def __len__(self) -> int:
        return int(self.slice_index.size)

    def batches(self, batch_size: int = 8) -> Iterator[ReconProblem]:
        for start in range(0, len(self), batch_size):
            yield self.problem(self.slice_index[start : start + batch_size])

    def problem(self, idx: np.ndarray) -> ReconProblem:
        return self.measurements.problem(idx)

    def to_volume_units(self, image: torch.Tensor) -> np.ndarray:
        """A working-domain result ``(B, 1, H, W)`` -> ``(B, H, W)`` float32 in the input's units."""
        x = image[:, 0]
        return self.measurements.to_volume_units(x.abs() if x.is_complex() else x)

    def working_reference_crop(self, image: torch.Tensor) -> torch.Tensor:
        """Working-domain images cropped like the output (for metrics against file targets)."""
        return self.measurements.working_crop(image)

    def std_in_volume_units(self, estimate: torch.Tensor, variance: torch.Tensor) -> np.ndarray:
        """Per-pixel std ``(B, H, W)`` in the input's units from a working-domain variance:
        exact for the linear maps (MRI, CT, denoising), first order through the log
        compression of simulated ultrasound."""
        std = variance.real if variance.is_complex() else variance
        std = std.clamp_min(0).sqrt().float()
        if self.settings.modality == "ultrasound" and self.simulate:
            base = estimate.abs().float() if estimate.is_complex() else estimate.float()
            return self.to_volume_units(base + std) - self.to_volume_units(base)
        return self.to_volume_units(std) - self.to_volume_units(torch.zeros_like(std))


def _log_speckle_std(looks: float, dynamic_range_db: float) -> float:
    """Std of ``20 log10 sqrt(G) / DR``, ``G ~ Gamma(L, 1/L)``: ``10 sqrt(trigamma(L)) / (ln 10 DR)``."""
    trigamma = float(torch.special.polygamma(1, torch.tensor(float(looks), dtype=torch.float64)))
    return 10.0 * math.sqrt(trigamma) / (math.log(10.0) * dynamic_range_db)


def _center_crop(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = int(shape[0]), int(shape[1])
    top, left = max((h - th) // 2, 0), max((w - tw) // 2, 0)
    return x[..., top : top + th, left : left + tw]


def _estimate_sigma(img: torch.Tensor) -> float:
    """Gaussian noise std from the finest wavelet band (Donoho's MAD estimator, via skimage)."""
    from skimage.restoration import estimate_sigma

    return float(np.mean([estimate_sigma(s[0].numpy()) for s in img]))


__all__ = ["BUILDERS", "MODALITIES", "MeasurementSettings", "ModalityMeasurements", "ProblemSource", "ReconProblem",
           "fft2c"]
