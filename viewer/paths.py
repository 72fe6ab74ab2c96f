"""Where the viewer finds its bundled files: sample scans, priors, W/L presets.

The lookup itself is the engine's (:mod:`diffrecon.bundled`, which honours
``$DIFFRECON_RESOURCES``); this module adds what the viewer asks of the priors.
"""

from __future__ import annotations

from pathlib import Path

from diffrecon.bundled import available_models, default_sample, models_dir, presets_file, resources_dir

__all__ = ["available_models", "default_model_for", "default_sample", "models_dir", "presets_file",
           "prior_label", "prior_modality", "resources_dir"]


def _metadata(path: Path) -> dict:
    try:
        from diffrecon.diffusion.checkpoint import read_metadata

        return read_metadata(path)
    except Exception:  # not a prior, or the diffusion package is not importable: no claim
        return {}


def prior_modality(path: Path) -> str | None:
    """The modality a prior file was trained for, read from its header alone (None if unreadable)."""
    return str(_metadata(path).get("modality") or "") or None


def prior_label(path: Path) -> str:
    """The Model box's entry: ``mri-brain (MRI)``; a denoising prior (trained on a noise range
    only, so it cannot reconstruct) says so: ``mri-brain-denoise (MRI denoising)``."""
    meta = _metadata(path)
    modality = str(meta.get("modality") or "?").upper()
    return f"{path.stem} ({modality}{' denoising' if meta.get('noise_range') else ''})"


def default_model_for(modality: str) -> Path | None:
    """The bundled prior for a task, when one is there.

    The engine's default for the task itself comes first (``mri-brain`` for MRI, the
    denoising prior for denoising); then any prior of the modalities whose priors suit the
    task (``modalities.Modality.prior_modalities``), the engine's default for each first
    (before, say, a distilled fast one). A denoising prior is never the pick for a task
    that reconstructs.
    """
    from diffrecon.reconstruct import DEFAULT_PRIORS

    from diffrecon import modalities

    models = available_models()
    own = [p for p in models if p.name == DEFAULT_PRIORS.get(modality)]
    if own:
        return own[0]
    task = modalities.REGISTRY.get(modality)
    denoises = bool(task and task.diffusion_defaults.get("noise_start"))  # starts at the noise level
    wanted = task.prior_modalities if task else ()
    for want in wanted:
        preferred = [p for p in models if p.name == DEFAULT_PRIORS.get(want)]
        for path in preferred + [p for p in models if p not in preferred]:
            if prior_modality(path) == want and (denoises or not _metadata(path).get("noise_range")):
                return path
    return None
