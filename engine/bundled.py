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
from collections.abc import Callable
from importlib import resources as _importlib_resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .measurements import MeasurementSettings

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


#: bundled priors that have a bundled low-noise expert (diffusion.experts): the expert takes
#: over their last sampling steps unless the options name another or "" (measured on the
#: validation subjects: README, Results), on the tasks :data:`EXPERT_TASKS` allows
LOW_NOISE_EXPERTS = {"mri-brain.safetensors": "mri-brain-lowt.safetensors",
                     "ct-head.safetensors": "ct-head-lowt.safetensors"}


#: the fewest noiseless CT views where ct-head-lowt is measured to help (validation slab, DDS at
#: 25 steps: 30 views -0.98 dB, 60 views +0.17, 120 views +0.37; the default at today's 50 steps:
#: 30 views -0.87, 60 views +0.39, 120 views +0.17)
CT_EXPERT_MIN_VIEWS = 60


def _noiseless_sparse_view_ct(settings: "MeasurementSettings") -> bool:
    return (settings.modality == "ct" and settings.dose is None and settings.views is not None
            and settings.views >= CT_EXPERT_MIN_VIEWS)


#: experts that run by default only on some tasks (elsewhere only when named). ct-head-lowt
#: on the CT validation slab (resources/models/ct-head-lowt.md): it lifts noiseless CT from
#: 60 views up (60 views: the default +0.18 dB, DDS +0.17; 120 views: DDS +0.37) but costs DDS
#: 0.98 dB at 30 views and the default 0.47 dB at 25 % dose
EXPERT_TASKS: dict[str, Callable[["MeasurementSettings"], bool]] = {
    "ct-head-lowt.safetensors": _noiseless_sparse_view_ct}


def available_models() -> list[Path]:
    """Shipped priors (``NAME.safetensors``; resume files ``NAME.train.safetensors`` are not
    priors, and a low-noise expert is part of the prior it serves, not one to choose)."""
    folder = models_dir()
    if not folder.is_dir():
        return []
    experts = set(LOW_NOISE_EXPERTS.values())
    return sorted(p for p in folder.glob("*.safetensors")
                  if not p.name.endswith(".train.safetensors") and p.name not in experts)


def bundled_low_noise_expert(prior_path: str | Path | None,
                             settings: "MeasurementSettings | None" = None) -> str | None:
    """The bundled expert of a bundled prior (by its file) for the task ``settings``, or None
    for any other prior, and for a task its expert is not measured to help (None: no task
    known, so only an expert for every task)."""
    if not prior_path:
        return None
    expert = LOW_NOISE_EXPERTS.get(Path(prior_path).name)
    if expert is None or not (models_dir() / expert).is_file():
        return None
    on_task = EXPERT_TASKS.get(expert)
    if on_task is not None and (settings is None or not on_task(settings)):
        return None
    try:
        bundled = Path(prior_path).resolve() == (models_dir() / Path(prior_path).name).resolve()
    except OSError:
        return None
    return expert if bundled else None
