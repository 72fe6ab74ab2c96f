"""Forward models ``y = A(x) + noise`` for MRI, CT, denoising and ultrasound.

Every linear operator follows :class:`LinearOperator` (``A``, ``A_adjoint``,
``A_dagger``, ``solve_normal``): batched torch tensors ``(B, C, H, W)``, on whatever
device the input lives on.
"""

from .base import LinearOperator
from .coils import estimate_sensitivity_maps, simulate_coil_maps
from .ct import (
    FBP_FILTERS,
    MU_WATER_PER_MM,
    ParallelBeamRadon,
    fbp_filter_response,
    hu_to_mu,
    mu_to_hu,
    simulate_low_dose,
)
from .masks import (
    MASK_KINDS,
    achieved_acceleration,
    calibration_region,
    default_center_fraction,
    equispaced_line_mask,
    gaussian2d_mask,
    make_mask,
    poisson_disc_mask,
    random_line_mask,
)
from .mri import MRIOperator, fft2c, ifft2c
from .noise import CorrelatedGaussianNoise, GammaNoise, GaussianNoise, IdentityOperator, PoissonNoise
from .solvers import conjugate_gradient
from .ultrasound import RAYLEIGH_SPECKLE_CONTRAST, log_compress, log_decompress, simulate_bmode, speckle

__all__ = [
    "FBP_FILTERS",
    "MASK_KINDS",
    "MU_WATER_PER_MM",
    "RAYLEIGH_SPECKLE_CONTRAST",
    "CorrelatedGaussianNoise",
    "GammaNoise",
    "GaussianNoise",
    "IdentityOperator",
    "LinearOperator",
    "MRIOperator",
    "ParallelBeamRadon",
    "PoissonNoise",
    "achieved_acceleration",
    "calibration_region",
    "conjugate_gradient",
    "default_center_fraction",
    "equispaced_line_mask",
    "estimate_sensitivity_maps",
    "fbp_filter_response",
    "fft2c",
    "gaussian2d_mask",
    "hu_to_mu",
    "ifft2c",
    "log_compress",
    "log_decompress",
    "make_mask",
    "mu_to_hu",
    "poisson_disc_mask",
    "random_line_mask",
    "simulate_bmode",
    "simulate_coil_maps",
    "simulate_low_dose",
    "speckle",
]
