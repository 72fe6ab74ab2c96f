"""Where the files bundled with diffrecon are: priors, sample scans, window/level presets.

The one resource lookup every front end uses. In order:

1. ``$DIFFRECON_RESOURCES``, a folder laid out like ``resources/`` (for installs that
   keep their priors elsewhere);
2. the package data of an installed wheel (``diffrecon/resources/``, found with
   :mod:`importlib.resources`; pyproject.toml maps the repository's ``resources/`` there);
3. the repository's top-level ``resources/`` beside ``engine/`` (a checkout with an
   editable install, where the package is ``engine/`` itself).
"""

from __future__ import annotations

import os
from importlib import resources as _importlib_resources
from pathlib import Path

ENV_VAR = "DIFFRECON_RESOURCES"
#: the scan the viewer opens on first start: a real T1 brain slab, used as ground truth
DEFAULT_SAMPLE = "colin27-t1-slab.nii.gz"


def resources_dir() -> Path:
    """The folder holding ``models/``, ``samples/`` and ``presets/``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    packaged = _importlib_resources.files(__package__ or "diffrecon") / "resources"
    if packaged.is_dir():
        # Wheels install as plain folders; a zipped install would need as_file() here.
        return Path(str(packaged))
    return Path(__file__).resolve().parents[1] / "resources"


def models_dir() -> Path:
    return resources_dir() / "models"


def samples_dir() -> Path:
    return resources_dir() / "samples"


def default_sample() -> Path:
    return samples_dir() / DEFAULT_SAMPLE


def presets_file() -> Path:
    return resources_dir() / "presets" / "window_level.json"


def available_models() -> list[Path]:
    """Shipped priors (``NAME.safetensors``; resume files ``NAME.train.safetensors`` are not priors)."""
    folder = models_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.safetensors") if not p.name.endswith(".train.safetensors"))
