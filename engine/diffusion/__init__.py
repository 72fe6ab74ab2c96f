"""Diffusion priors: the noise-predicting UNet, noise schedules, samplers and training.

Typical use (inference)::

    from diffrecon.diffusion import load_prior, DDIMSampler, run_to_end
    prior = load_prior("resources/models/mri-brain.safetensors")
    sampler = DDIMSampler(prior.schedule, n_steps=25)
    for frame in sampler.frames(prior.model, (1, prior.channels, 256, 256), seed=0, hook=my_data_consistency):
        show(frame.x0_hat)  # stop iterating at any time to cancel

Training lives in :mod:`.training` (``diffrecon train`` on the command line).
"""

from .checkpoint import Prior, PriorPaths, load_prior, save_prior
from .data import Normalisation
from .samplers import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    Frame,
    StepHook,
    VPSDESampler,
    run_to_end,
)
from .schedules import SCHEDULE_KINDS, NoiseSchedule, make_schedule
from .unet import UNet, autocast_context, build_unet, to_channels_last

__all__ = [
    "SAMPLERS",
    "SCHEDULE_KINDS",
    "DDIMSampler",
    "DDPMSampler",
    "Frame",
    "NoiseSchedule",
    "Normalisation",
    "Prior",
    "PriorPaths",
    "StepHook",
    "UNet",
    "VPSDESampler",
    "autocast_context",
    "build_unet",
    "load_prior",
    "make_schedule",
    "run_to_end",
    "save_prior",
    "to_channels_last",
]
