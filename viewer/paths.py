"""Where the viewer finds its bundled files: sample scans, priors, W/L presets.

The repository layout is ``engine/`` (the ``diffrecon`` package) beside ``resources/``;
an editable install keeps it, so resources are found relative to the engine package.
``$DIFFRECON_RESOURCES`` overrides the folder (for installs that move it).
"""

from __future__ import annotations

import os
from pathlib import Path

import diffrecon


def resources_dir() -> Path:
    override = os.environ.get("DIFFRECON_RESOURCES")
    if override:
        return Path(override)
    return Path(diffrecon.__file__).resolve().parents[1] / "resources"


def default_sample() -> Path:
    """The scan opened on first start: a real T1 brain slab, used as ground truth."""
    return resources_dir() / "samples" / "colin27-t1-slab.nii.gz"


def models_dir() -> Path:
    return resources_dir() / "models"


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


def available_models() -> list[Path]:
    """Shipped priors (``NAME.safetensors``; resume files ``NAME.train.safetensors`` are not priors)."""
    folder = models_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.safetensors") if not p.name.endswith(".train.safetensors"))


def presets_file() -> Path:
    return resources_dir() / "presets" / "window_level.json"
