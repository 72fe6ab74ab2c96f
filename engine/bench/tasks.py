"""What a bench run compares: measurement settings ("tasks") and methods, parsed from the CLI.

A *task* is one way of making measurements, e.g. MRI at 4x or CT with 60 views. The
``--settings`` text is a comma-separated list of tasks; each task is one or more
``key=value`` parts joined by ``+`` (``acceleration=4+mask=equispaced``), with the
shorthand ``4x`` for an MRI acceleration and ``sigma=`` for the denoising noise level.

A *method* is a classical baseline (``tv``, ``l1-wavelet``...) or a diffusion variant
``diffusion[:sampler/guidance/steps[/hot]]``; empty fields keep the modality's measured
defaults (``diffusion``, ``diffusion:ddim/dds/25``, ``diffusion:ddpm//50``); ``diffusion:cfg/<w>``
is classifier-free guidance with scale ``w`` on a conditional prior (bench's ``--cfg-model``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .. import modalities
from ..errors import SettingsError
from ..measurements import MeasurementSettings

#: ``key`` in ``--settings`` -> (MeasurementSettings field, type)
SETTING_KEYS: dict[str, tuple[str, type]] = {
    "acceleration": ("acceleration", float),
    "mask": ("mask", str),
    "center_fraction": ("center_fraction", float),
    "coils": ("coils", int),
    "views": ("views", int),
    "dose": ("dose", float),
    "noise": ("noise", str),
    "sigma": ("noise_sigma", float),
    "noise_sigma": ("noise_sigma", float),
    "noise_peak": ("noise_peak", float),
    "looks": ("looks", float),
}

DIFFUSION = "diffusion"
#: the fourth field of ``diffusion:sampler/guidance/steps/flags`` ('+'-joined): option overrides
FLAGS: dict[str, dict[str, Any]] = {
    "hot": {"hot_start": True},  # a hot start from TV
    "blend": {"blend_tv": True},  # the hold-out blend with TV (the MRI and CT default)
    "noblend": {"blend_tv": False},  # the diffusion result alone
    "noexpert": {"low_noise_expert": ""},  # the prior alone at every step (no low-noise expert)
    # MRI on the scan's own grid, or one 2 or 3 times finer (diffusion.fine_grid)
    "grid1": {"fine_grid": 1},
    "grid2": {"fine_grid": 2},
    "grid3": {"fine_grid": 3},
}


@dataclass(frozen=True)
class Task:
    """One measurement setting: its label (as typed) and the settings it stands for."""

    label: str
    modality: str
    values: tuple[tuple[str, Any], ...]  # MeasurementSettings field -> value

    def settings(self, seed: int) -> MeasurementSettings:
        return MeasurementSettings(modality=self.modality, seed=seed, **dict(self.values))

    @property
    def slug(self) -> str:
        """The label as a file-name part: ``views=60`` -> ``views-60``."""
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-")


@dataclass(frozen=True)
class MethodSpec:
    """One method column: ``label`` as the user typed it, ``base`` the engine's method name."""

    label: str
    base: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)  # diffusion option overrides

    @property
    def is_diffusion(self) -> bool:
        return self.base == DIFFUSION

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-")


def parse_settings(text: str | None, modality: str) -> list[Task]:
    """``"4x,8x"`` -> two MRI tasks; every task is checked by building its settings."""
    text = text if text else modalities.get(modality).bench_tasks  # the modality's default grid
    tasks: list[Task] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        values: dict[str, Any] = {}
        for part in token.split("+"):
            part = part.strip()
            short = re.fullmatch(r"(\d+(?:\.\d+)?)x", part)
            if short:
                key, raw = "acceleration", short.group(1)
            elif "=" in part:
                key, raw = (s.strip() for s in part.split("=", 1))
            else:
                raise SettingsError(f"--settings: cannot read {part!r}; write key=value (e.g. views=60) or 4x")
            if key not in SETTING_KEYS:
                raise SettingsError(f"--settings: unknown setting {key!r}; known: {', '.join(SETTING_KEYS)}")
            name, kind = SETTING_KEYS[key]
            try:
                values[name] = kind(raw)
            except ValueError:
                raise SettingsError(f"--settings: {key} must be a {kind.__name__}, not {raw!r}") from None
        task = Task(token, modality, tuple(values.items()))
        task.settings(0)  # raises a one-sentence SettingsError for impossible values
        tasks.append(task)
    if not tasks:
        raise SettingsError("--settings names no task")
    if len({t.label for t in tasks}) != len(tasks):
        raise SettingsError("--settings names the same task twice")
    return tasks


def parse_methods(text: str | None, modality: str, *, have_prior: bool) -> list[MethodSpec]:
    """``"tv,diffusion:ddim/dds/25"`` -> method specs; default: every installed baseline + diffusion.

    BM3D is optional (non-commercial licence): left out of the default list when missing,
    and a one-sentence error before any work when asked for by name.
    """
    from ..baselines.denoise import bm3d_available

    if not text:
        # tv-3d only by name: bench's slices are spread over the volume, where it is plain TV
        names = [m for m in modalities.get(modality).baselines
                 if (m != "bm3d" or bm3d_available()) and m != "tv-3d"]
        text = ",".join(names + ([DIFFUSION] if have_prior else []))
    specs: list[MethodSpec] = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        base, _, variant = token.partition(":")
        if base == DIFFUSION:
            specs.append(MethodSpec(token, DIFFUSION, _diffusion_overrides(variant, token)))
        elif base in modalities.get(modality).baselines:
            if variant:
                raise SettingsError(f"--methods: {base} takes no variant ({token!r})")
            if base == "bm3d" and not bm3d_available():
                raise SettingsError("--methods: BM3D needs the optional bm3d package (free for non-commercial use "
                                    "only): pip install bm3d")
            specs.append(MethodSpec(token, base))
        else:
            known = ", ".join(modalities.get(modality).baselines + (DIFFUSION,))
            raise SettingsError(f"--methods: {token!r} does not apply to {modality}; choose from {known}")
    if not specs:
        raise SettingsError("--methods names no method")
    if len({s.label for s in specs}) != len(specs):
        raise SettingsError("--methods names the same method twice")
    return specs


def _diffusion_overrides(variant: str, token: str) -> dict[str, Any]:
    from ..diffusion.guidance import GUIDANCE
    from ..diffusion.samplers import SAMPLERS

    if not variant:
        return {}
    if variant.split("/")[0] == "cfg":
        return _cfg_overrides(variant, token)
    parts = variant.split("/")
    if len(parts) > 4:
        raise SettingsError(f"--methods: {token!r} must look like "
                            f"diffusion:sampler/guidance[@tv-weight]/steps[/hot+blend+noblend]")
    parts += [""] * (4 - len(parts))
    sampler, guidance, steps, hot = (p.strip() for p in parts)
    out: dict[str, Any] = {}
    if sampler:
        if sampler not in SAMPLERS:
            raise SettingsError(f"--methods: unknown sampler {sampler!r} in {token!r}; choose {', '.join(SAMPLERS)}")
        out["sampler"] = sampler
    if "@" in guidance:  # dds-tv@1.5 or dds-tv@auto: the TV weight (a multiple of TV's tuned one)
        guidance, _, weight = guidance.partition("@")
        if guidance != "dds-tv":
            raise SettingsError(f"--methods: only dds-tv takes a weight (@W) in {token!r}")
        try:
            out["tv_weight"] = weight if weight == "auto" else float(weight)
        except ValueError:
            raise SettingsError(f"--methods: the TV weight in {token!r} must be a number or 'auto'") from None
    if guidance:
        if guidance not in GUIDANCE:
            raise SettingsError(f"--methods: unknown guidance {guidance!r} in {token!r}; choose {', '.join(GUIDANCE)}")
        out["guidance"] = guidance
    if steps:
        if not steps.isdigit() or int(steps) < 1:
            raise SettingsError(f"--methods: steps must be a positive whole number in {token!r}")
        out["steps"] = int(steps)
    for flag in filter(None, (f.strip() for f in hot.split("+"))):
        if flag not in FLAGS:
            raise SettingsError(f"--methods: the fourth field of {token!r} is a '+' list of {', '.join(FLAGS)}, "
                                f"not {flag!r}")
        out.update(FLAGS[flag])
    return out


def _cfg_overrides(variant: str, token: str) -> dict[str, Any]:
    """``cfg/<w>[/steps]``: classifier-free guidance with scale ``w`` on the conditional prior
    (``--cfg-model``), DDIM with DDS data consistency: the same sampler and data consistency as
    ``diffusion:ddim/dds/<steps>/noblend``, so the two differ only by the network and its condition."""
    parts = variant.split("/")
    if len(parts) not in (2, 3):
        raise SettingsError(f"--methods: {token!r} must look like diffusion:cfg/<w>[/steps], e.g. diffusion:cfg/2")
    try:
        scale = float(parts[1])
    except ValueError:
        raise SettingsError(f"--methods: the guidance scale in {token!r} must be a number") from None
    if not 0 <= scale <= 20:
        raise SettingsError(f"--methods: the guidance scale in {token!r} must be from 0 to 20")
    # no blend with TV: its hold-out run would change the condition (the degraded input)
    out: dict[str, Any] = {"sampler": "ddim", "guidance": "dds", "cfg_scale": scale, "blend_tv": False}
    if len(parts) == 3:
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise SettingsError(f"--methods: steps must be a positive whole number in {token!r}")
        out["steps"] = int(parts[2])
    return out


def parse_steps(text: str | None) -> list[int]:
    """``"10,25,50"`` -> [10, 25, 50] for the steps ablation (empty: no ablation)."""
    if not text:
        return []
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise SettingsError(f"--steps must be whole numbers separated by commas, not {text!r}") from None
    if not steps or steps[0] < 1:
        raise SettingsError("--steps must list positive step counts, e.g. 10,25,50")
    return steps
