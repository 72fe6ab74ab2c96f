"""Noise schedules: known endpoints, monotone, and the continuous view agreeing with the discrete table."""

from __future__ import annotations

import math

import pytest
import torch
from diffrecon.diffusion.schedules import make_schedule, schedule_from_metadata


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alphas_cumprod_decrease_from_one_to_zero(kind: str) -> None:
    abar = make_schedule(kind).alphas_cumprod
    assert abar.shape == (1000,)
    assert torch.all(abar[1:] < abar[:-1])
    assert 0.999 < abar[0] < 1
    assert 0 < abar[-1] < 1e-4


def test_linear_schedule_matches_ddpm() -> None:
    sched = make_schedule("linear")
    assert sched.betas[0] == pytest.approx(1e-4)
    assert sched.betas[-1] == pytest.approx(0.02)
    assert sched.alphas_cumprod[0] == pytest.approx(1 - 1e-4)
    assert sched.alphas_cumprod[-1] == pytest.approx(4.036e-5, rel=1e-2)  # the well-known DDPM value


def test_cosine_schedule_follows_its_closed_form() -> None:
    sched = make_schedule("cosine")
    s = 0.008
    f = lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    for step in (0, 249, 499, 899):
        t = (step + 1) / 1000
        assert sched.alphas_cumprod[step] == pytest.approx(f(t) / f(0), rel=1e-9)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_continuous_view_agrees_on_the_grid(kind: str) -> None:
    sched = make_schedule(kind)
    steps = torch.tensor([0, 1, 10, 500, 998, 999])
    on_grid = sched.alpha_bar(sched.time_of_step(steps))
    assert torch.allclose(on_grid.double(), sched.alphas_cumprod[steps], rtol=1e-6)
    assert sched.alpha_bar(0.0) == 1.0
    mean, std = sched.marginal(torch.linspace(0, 1, 101))
    assert torch.allclose(mean**2 + std**2, torch.ones(101), atol=1e-6)  # variance preserving
    assert torch.all(std[1:] > std[:-1])


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_beta_is_the_rate_of_log_alpha_bar(kind: str) -> None:
    sched = make_schedule(kind)
    for t in (0.0105, 0.3333, 0.7777):
        h = 1e-4  # within one grid interval
        numeric = -(sched.log_alpha_bar(t + h) - sched.log_alpha_bar(t - h)) / (2 * h)
        assert float(sched.beta(t)) == pytest.approx(float(numeric), rel=1e-5)


def test_linear_vp_sde_beta_is_ddpm_betas_times_T() -> None:
    sched = make_schedule("linear")
    assert float(sched.beta(0.5)) == pytest.approx(1000 * (1e-4 + 0.5 * (0.02 - 1e-4)), rel=1e-2)
    assert float(sched.beta(1.0)) == pytest.approx(-1000 * math.log(1 - 0.02), rel=1e-5)


def test_tweedie_inverts_the_forward_process() -> None:
    sched = make_schedule("linear")
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 2, 8, 8, generator=g)
    eps = torch.randn(4, 2, 8, 8, generator=g)
    t = torch.tensor([0.001, 0.2, 0.5, 0.9])
    x_t = sched.add_noise(x0, eps, t)
    assert torch.allclose(sched.x0_from_eps(x_t, eps, t), x0, atol=1e-3)
    assert torch.allclose(sched.eps_from_x0(x_t, x0, t), eps, atol=1e-4)
    # x_t at t = 0.9 is mostly noise, at t = 0.001 mostly signal.
    assert (x_t[3] - eps[3]).abs().mean() < 0.3 < (x_t[0] - eps[0]).abs().mean()
    assert torch.allclose(sched.score_from_eps(eps, t), -eps / sched.marginal(t)[1].reshape(-1, 1, 1, 1))


def test_other_step_counts_keep_the_total_noise() -> None:
    coarse = make_schedule("linear", steps=100)
    fine = make_schedule("linear")
    assert float(coarse.alpha_bar(0.5)) == pytest.approx(float(fine.alpha_bar(0.5)), rel=0.1)


def test_metadata_round_trip_and_unknown_kind() -> None:
    sched = make_schedule("cosine")
    again = schedule_from_metadata(sched.to_metadata())
    assert torch.equal(again.betas, sched.betas)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        make_schedule("sigmoid")
