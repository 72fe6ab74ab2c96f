"""Adapting to the scan at hand: hold-out splits, the TV-augmented DDS step, and self-supervised choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffrecon.baselines.tv import total_variation
from diffrecon.diffusion.adaptation import (
    HeldOutOperator,
    blend_weight,
    choose_tv_weight,
    holdout_masks,
    holdout_residual,
)
from diffrecon.diffusion.reconstruction import reconstruct_to_end
from diffrecon.modalities import get as modality
from diffrecon.measurements import ReconProblem
from diffrecon.metrics import psnr
from diffrecon.physics import MRIOperator, ParallelBeamRadon, make_mask
from tiny_priors import SIZE, disks


def mri_problem(seed: int = 10, acceleration: float = 3.0) -> ReconProblem:
    truth = disks(1, torch.Generator().manual_seed(seed), True).repeat_interleave(2, -1).repeat_interleave(2, -2)
    truth = torch.complex(truth[:, :1], truth[:, 1:])  # 32x32: enough k-space columns to hold some out
    op = MRIOperator(make_mask("random", (2 * SIZE, 2 * SIZE), acceleration, None, 0))
    y = op.A(truth)
    return ReconProblem("mri", op, y, op.zero_filled(y), truth.abs(), 0.0, np.arange(1))


def test_mri_hold_out_takes_measured_columns_outside_the_centre_and_is_seeded() -> None:
    op = MRIOperator(make_mask("random", (32, 64), 4.0, None, 0))
    y = op.A(torch.randn(1, 1, 32, 64, dtype=torch.complex64))
    problem = ReconProblem("mri", op, y, y.abs(), None, 0.0, np.arange(1))
    keep, held = holdout_masks(problem, 0.2, seed=1)
    assert torch.equal(keep + held, torch.ones_like(keep)) and held.shape == (1, 1, 1, 64)
    measured = (y.abs() > 0).flatten(0, -2).any(dim=0)
    cols = held.flatten().bool()
    assert bool(measured[cols].all())  # only measured columns are held out
    assert not bool(cols[28:36].any())  # never the fully sampled centre
    assert 0.1 < cols.sum() / measured.sum() < 0.25
    assert torch.equal(holdout_masks(problem, 0.2, seed=1)[1], held)
    assert not torch.equal(holdout_masks(problem, 0.2, seed=2)[1], held)


def test_ct_hold_out_takes_whole_views() -> None:
    op = ParallelBeamRadon(24, views=20)
    y = op.A(torch.rand(1, 1, 24, 24))
    keep, held = holdout_masks(ReconProblem("ct", op, y, y, None, 0.0, np.arange(1)), 0.15, seed=0)
    assert held.shape == (1, 1, 20, 1) and int(held.sum()) == 3
    restricted = HeldOutOperator(op, keep)
    assert torch.all(restricted.A(torch.rand(1, 1, 24, 24))[:, :, held.flatten().bool()] == 0)
    # CT's TV starts from FBP: the restricted operator back-projects only the kept views.
    from diffrecon.baselines import run_baseline

    assert restricted.n_views == 20
    with torch.inference_mode():
        tv = run_baseline("tv", restricted, y * keep, modality="ct", params={"iters": 5})
    assert tv.shape == (1, 1, 24, 24) and torch.isfinite(tv).all()


def test_blend_weight_recovers_known_mixtures() -> None:
    g = torch.Generator().manual_seed(0)
    truth = torch.complex(torch.rand(1, 1, 32, 32, generator=g), torch.zeros(1, 1, 32, 32))
    op = MRIOperator(np.ones((32, 32), bool))
    y = op.A(truth)
    held = torch.zeros(1, 1, 1, 32)
    held[..., ::3] = 1.0
    error = torch.complex(torch.randn(1, 1, 32, 32, generator=g), torch.randn(1, 1, 32, 32, generator=g)) * 0.1
    assert blend_weight(op, y, held, truth, truth + error) == pytest.approx(1.0, abs=1e-4)
    assert blend_weight(op, y, held, truth + error, truth) == pytest.approx(0.0, abs=1e-4)
    assert blend_weight(op, y, held, truth + error, truth - error) == pytest.approx(0.5, abs=1e-3)
    assert holdout_residual(op, y, held, truth) == pytest.approx(0.0, abs=1e-10)


def test_tv_term_smooths_the_estimate_and_keeps_the_data(mri_prior) -> None:
    problem = mri_problem()
    plain = reconstruct_to_end(problem, mri_prior, modality("mri").diffusion_options(steps=6, guidance="dds-tv", tv_weight=0.0))
    tv = reconstruct_to_end(problem, mri_prior, modality("mri").diffusion_options(steps=6, guidance="dds-tv", tv_weight=30.0))
    assert float(total_variation(tv.x0).sum()) < float(total_variation(plain.x0).sum())
    zero_filled = problem.operator.zero_filled(problem.y)
    for frame in (plain, tv):
        residual = (problem.operator.A(frame.x0) - problem.y).norm()
        assert float(residual) < 0.5 * float((problem.operator.A(zero_filled) - problem.y).norm() + problem.y.norm())
    assert tv.adaptation is not None  # (with MRI's through-plane default, its weight is recorded there too)
    assert {k: tv.adaptation[k] for k in ("tv_weight", "tv_lam")} == {"tv_weight": 30.0,
                                                                    "tv_lam": pytest.approx(30.0 * 1e-3)}


def test_self_supervised_choice_is_near_the_best_weight_and_leaves_the_prior_alone(mri_prior) -> None:
    """On problems whose truth is known, the weight picked from held-out data alone scores within
    0.5 dB of the best candidate, and the run changes no weight of the loaded prior."""
    before = {k: v.clone() for k, v in mri_prior.model.state_dict().items()}
    for seed in (10, 12):
        problem = mri_problem(seed)
        ref = problem.reference[0, 0].numpy()
        scores = {}
        for c in (0.0, 1.0, 10.0, 100.0):
            x = reconstruct_to_end(problem, mri_prior, modality("mri").diffusion_options(steps=6, guidance="dds-tv",
                                                                      tv_weight=c)).x0
            scores[c] = psnr(ref[None], x[0, 0].abs().numpy()[None])
        auto = reconstruct_to_end(problem, mri_prior, modality("mri").diffusion_options(steps=6, guidance="dds-tv"))
        report = auto.adaptation
        assert report["method"] == "self-supervised hold-out" and set(report["holdout_residual"]) == {"0", "1", "3"}
        assert 0.0 <= report["blend_weight"] <= 1.0
        chosen = psnr(ref[None], auto.x0[0, 0].abs().numpy()[None])
        assert chosen >= max(scores.values()) - 1.0 or chosen >= scores[0.0]
    for k, v in mri_prior.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_choose_tv_weight_prefers_tv_when_the_prior_is_useless() -> None:
    """A prior that has never trained predicts held-out k-space worse than TV: the blend leans on TV."""
    from diffrecon.diffusion.checkpoint import Prior
    from diffrecon.diffusion.schedules import make_schedule
    from diffrecon.diffusion.unet import UNet

    torch.manual_seed(3)
    net = UNet(2, width=4, channel_mult=(1, 2), res_blocks=1, attention_heads=1).eval().requires_grad_(False)
    useless = Prior(net, make_schedule("linear"), {"kind": "percentile", "percentile": 99.5}, "mri", 2, {}, None)
    weight, report = choose_tv_weight(mri_problem(11), useless, modality("mri").diffusion_options(steps=6), steps=4)
    assert report["tv_holdout_residual"] < min(report["holdout_residual"].values())
    assert report["blend_weight"] < 0.5
