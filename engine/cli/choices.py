"""The names the command line offers, without importing the engine that implements them.

``diffrecon --help`` and ``diffrecon info`` must start in a fraction of a second, so the
parsers may not import torch; the modules that define these names do. Each tuple here is
checked against its source of truth by ``tests/test_startup.py``.
"""

MODALITIES = ("mri", "ct", "denoise", "ultrasound")  # diffrecon.measurements.MODALITIES
NOISE_MODELS = ("gaussian", "poisson", "gamma", "correlated")  # diffrecon.measurements.NOISE_MODELS
MASK_KINDS = ("random", "equispaced", "gaussian2d", "poisson")  # diffrecon.physics.masks.MASK_KINDS
SAMPLERS = ("ddim", "ddpm", "sde")  # diffrecon.diffusion.samplers.SAMPLERS
GUIDANCE = ("projection", "dds", "dds-tv", "dps")  # diffrecon.diffusion.guidance.GUIDANCE
CLASSICAL_METHODS = ("zero-filled", "fbp", "tv", "l1-wavelet", "median", "bm3d", "tv-3d")  # diffrecon.baselines.METHODS
DIFFUSION = "diffusion"  # diffrecon.reconstruct.DIFFUSION
DEVICES = ("auto", "cpu", "cuda")  # diffrecon.runtime.DEVICES
ADAPT_PARAMETERS = ("norm", "lora")  # diffrecon.diffusion.scan_adaptation.ADAPT_PARAMETERS
BACKENDS = ("torch", "onnx-int8")  # diffrecon.diffusion.onnx_int8.BACKENDS
#: what --steps defaults to, per task (diffrecon.modalities: MRI_STEPS, CALIBRATED_STEPS,
#: CT_SPARSE_VIEW_STEPS); one text for every command that takes --steps
STEPS_DEFAULTS = ("MRI 50, or 25 with --samples 2 or more, where σ was calibrated; CT 50 for noiseless views, "
                  "25 with --dose or --samples 2 or more; 1 for denoising and ultrasound, which start at the "
                  "noise level")


def low_noise_expert_setting(text: str | None) -> str | None:
    """``--low-noise-expert`` as the options take it: None keeps the bundled prior's own expert,
    'none' turns it off (""), anything else names an expert's file or bundled name."""
    if text is None:
        return None
    return "" if text.strip().lower() == "none" else text
