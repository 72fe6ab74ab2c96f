"""The speed report runs end to end on tiny images (its figures are not checked: speed
targets are read off ``python -m diffrecon.experiments.speed``, never asserted in tests)."""

from __future__ import annotations

import torch
from diffrecon.experiments import speed


def test_projector_tv_and_volume_figures_on_small_images(monkeypatch) -> None:
    monkeypatch.setattr(speed, "SIZE", 32)
    cpu = torch.device("cpu")
    p = speed.projectors(cpu, repeats=1, views=(8,))
    assert p["radon_8"]["forward_adjoint_ms"] > 0 and p["radon_8"]["entries_millions"] > 0
    t = speed.total_variation(cpu, repeats=1)
    assert t["ct"]["seconds_per_slice"] > 0 and t["ct_over_mri"] > 0


def test_diffusion_and_volume_figures_on_small_images(monkeypatch) -> None:
    monkeypatch.setattr(speed, "SIZE", 32)
    cpu = torch.device("cpu")
    d = speed.diffusion(cpu, steps=2)
    assert d["mri"]["nfe"] == 2 and d["ct"]["nfe"] == 2 and d["ct_over_mri"] > 0
    v = speed.volumes(cpu, slices=3, batch=2, steps=2)
    assert v["slices"] == 3 and v["per_slice_in_volume_s"] > 0 and v["steps"] == 2
