"""Where the viewer finds its bundled files: sample scans, priors, W/L presets.

The lookup itself is the engine's (:mod:`diffrecon.bundled`, which honours
``$DIFFRECON_RESOURCES``); this module adds what the viewer asks of the priors.
"""

from __future__ import annotations

from pathlib import Path

from diffrecon.bundled import available_models, default_sample, models_dir, presets_file, resources_dir

__all__ = ["available_models", "default_model_for", "default_sample", "models_dir", "presets_file",
           "prior_modality", "resources_dir"]


def prior_modality(path: Path) -> str | None:
    """The modality a prior file was trained for, read from its header alone (None if unreadable)."""
    try:
        from diffrecon.diffusion.checkpoint import read_metadata

        return str(read_metadata(path).get("modality")) or None
    except Exception:  # not a prior, or the diffusion package is not importable: no claim
        return None


def default_model_for(modality: str) -> Path | None:
    """The bundled prior for a task's modality, when one is there.

    Denoising has no prior of its own: it uses an image prior (the MRI one first). The
    engine's default for the modality (``mri-brain``, ``ct-head``) comes before other priors
    of that modality, such as a distilled fast one.
    """
    from diffrecon.reconstruct import DEFAULT_PRIORS

    from diffrecon import modalities

    wanted = modalities.REGISTRY[modality].prior_modalities if modality in modalities.REGISTRY else ()
    models = available_models()
    for want in wanted:
        preferred = [p for p in models if p.name == DEFAULT_PRIORS.get(want)]
        for path in preferred + [p for p in models if p not in preferred]:
            if prior_modality(path) == want:
                return path
    return None
