"""Samplers: correct distributions on a problem with a known answer, seeded, cancellable, hookable."""

from __future__ import annotations

import pytest
import torch
from diffrecon.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    VPSDESampler,
    run_to_end,
    time_grid,
)
from diffrecon.diffusion.schedules import NoiseSchedule, make_schedule
from diffrecon.diffusion.unet import UNet


MU, S = 0.5, 0.2  # the "data": every pixel ~ N(MU, S^2), independently


def gaussian_eps_model(schedule: NoiseSchedule):
    """The exact noise predictor E[eps | x_t] for Gaussian data, so samplers can be checked exactly."""
    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mean, std = schedule.marginal(t)
        a, s = mean.reshape(-1, 1, 1, 1), std.reshape(-1, 1, 1, 1)
        return s * (x_t - a * MU) / (a**2 * S**2 + s**2)
    return eps


@pytest.mark.parametrize(
    "sampler",
    [
        DDPMSampler(make_schedule("linear")),
        DDPMSampler(make_schedule("cosine"), n_steps=100),
        DDIMSampler(make_schedule("linear"), n_steps=250, eta=0.0),
        DDIMSampler(make_schedule("cosine"), n_steps=250, eta=1.0),
        VPSDESampler(make_schedule("linear"), n_steps=200),
        VPSDESampler(make_schedule("linear"), n_steps=100, corrector_steps=1),
    ],
    ids=["ddpm-1000", "ddpm-100-cosine", "ddim-250", "ddim-250-eta1", "vpsde-200", "pc-100"],
)
def test_samples_follow_the_data_distribution(sampler) -> None:
    frames = list(sampler.frames(gaussian_eps_model(sampler.schedule), (1, 1, 64, 64), seed=3))
    assert [f.step for f in frames] == list(range(sampler.n_steps))
    assert frames[-1].t == 0.0 and frames[-1].last
    assert all(a.t > b.t for a, b in zip(frames, frames[1:]))
    x = frames[-1].x_t
    assert float(x.mean()) == pytest.approx(MU, abs=0.02)
    assert float(x.std()) == pytest.approx(S, rel=0.12)


def test_ddim_with_few_steps_converges_as_steps_grow() -> None:
    # Each coarse DDIM step shrinks the variance of Gaussian data a little (it follows the
    # probability-flow ODE with a first-order step): a real, known effect, which must fade
    # as the step count grows, while the mean is right from the start.
    sched = make_schedule("linear")
    eps = gaussian_eps_model(sched)
    std_error = {}
    for n in (10, 25, 100):
        x = run_to_end(DDIMSampler(sched, n).frames(eps, (1, 1, 64, 64), seed=0)).x_t
        assert float(x.mean()) == pytest.approx(MU, abs=0.02)
        std_error[n] = abs(float(x.std()) - S)
    assert std_error[100] < std_error[25] < std_error[10]
    assert std_error[100] < 0.25 * std_error[10]


def test_ddim_time_grid_uses_the_training_steps() -> None:
    sched = make_schedule("linear")
    grid = time_grid(sched, 25)
    assert grid[0] == 1.0 and grid[-1] == pytest.approx(0.001)
    assert len(set(grid)) == 25
    assert all(round(t * 1000, 9) == int(round(t * 1000)) for t in grid)  # on the discrete grid
    with pytest.raises(ValueError):
        time_grid(sched, 1001)


def test_a_late_start_runs_only_the_grid_below_it() -> None:
    """A hot start: every sampler takes ``start_t`` and never steps above it."""
    sched = make_schedule("linear")
    late = time_grid(sched, 25, start_t=0.4)
    assert late[0] == pytest.approx(0.4) and late[-1] == pytest.approx(0.001) and len(late) == 25
    assert len(time_grid(sched, 1000, start_t=0.4)) == 400  # no more steps than the grid has below 0.4
    assert DDIMSampler(sched, 10, start_t=0.4).times()[0] == pytest.approx(0.4)
    assert VPSDESampler(sched, 10, start_t=0.4).times()[0] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        time_grid(sched, 10, start_t=0.0)


def tiny_net() -> UNet:
    torch.manual_seed(0)
    net = UNet(in_channels=2, width=8, channel_mult=(1, 2), res_blocks=1, attention_heads=2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    return net.eval()


def test_ddim_eta0_is_deterministic_given_the_start() -> None:
    sched, net = make_schedule("linear"), tiny_net()
    start = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(9))
    a = run_to_end(DDIMSampler(sched, 5).frames(net, start.shape, seed=1, x_init=start))
    b = run_to_end(DDIMSampler(sched, 5).frames(net, start.shape, seed=2, x_init=start))
    assert torch.equal(a.x_t, b.x_t)


@pytest.mark.parametrize("make", [lambda s: DDIMSampler(s, 5, eta=1.0), lambda s: DDPMSampler(s, 5),
                                  lambda s: VPSDESampler(s, 5, corrector_steps=1)])
def test_a_seed_reproduces_bit_for_bit(make) -> None:
    sched, net = make_schedule("linear"), tiny_net()
    run = lambda seed: [f.x_t for f in make(sched).frames(net, (1, 2, 16, 16), seed=seed)]
    first, again, other = run(7), run(7), run(8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[-1], other[-1])


def test_stopping_early_leaves_no_state_behind() -> None:
    sched, net = make_schedule("linear"), tiny_net()
    start = torch.randn(1, 2, 16, 16)
    start_copy = start.clone()
    global_rng = torch.get_rng_state()
    sampler = DDIMSampler(sched, 6, eta=1.0)
    frames = sampler.frames(net, start.shape, seed=4, x_init=start, autocast=True)
    for frame in frames:
        if frame.step == 2:
            break  # the viewer's cancel button
    assert torch.is_grad_enabled()
    assert not torch.is_autocast_enabled("cpu")
    assert torch.equal(start, start_copy)
    assert torch.equal(torch.get_rng_state(), global_rng)
    del frames
    full = run_to_end(sampler.frames(net, start.shape, seed=4, x_init=start, autocast=True))
    fresh = run_to_end(DDIMSampler(sched, 6, eta=1.0).frames(net, start.shape, seed=4, x_init=start, autocast=True))
    assert torch.equal(full.x_t, fresh.x_t)


@pytest.mark.parametrize("make", [lambda s: DDIMSampler(s, 7), lambda s: DDPMSampler(s, 7), lambda s: VPSDESampler(s, 7)])
def test_the_hook_is_called_once_per_step_and_its_x0_is_used(make) -> None:
    sched, net = make_schedule("linear"), tiny_net()
    calls: list[tuple[int, float]] = []

    def force_constant(step, t, x_t, x0_hat):
        calls.append((step, t))
        return x_t, torch.full_like(x0_hat, 0.25)

    sampler = make(sched)
    frames = list(sampler.frames(net, (1, 2, 16, 16), seed=0, hook=force_constant))
    assert [c[0] for c in calls] == list(range(7))
    assert [c[1] for c in calls] == [1.0] + [f.t for f in frames[:-1]]
    assert all(torch.all(f.x0_hat == 0.25) for f in frames)
    if not isinstance(sampler, VPSDESampler):  # DDIM/DDPM land exactly on x0_hat at t = 0
        assert torch.allclose(frames[-1].x_t, torch.full_like(frames[-1].x_t, 0.25))


def test_a_gradient_hook_can_differentiate_through_the_network() -> None:
    sched, net = make_schedule("linear"), tiny_net()
    norms = []

    def dps_like(step, t, x_t, x0_hat):
        (grad,) = torch.autograd.grad((x0_hat - 0.3).pow(2).sum(), x_t)
        norms.append(float(grad.norm()))
        return x_t - 0.01 * grad, x0_hat

    dps_like.requires_grad = True
    plain = run_to_end(DDIMSampler(sched, 4).frames(net, (1, 2, 16, 16), seed=0))
    guided = run_to_end(DDIMSampler(sched, 4).frames(net, (1, 2, 16, 16), seed=0, hook=dps_like))
    assert len(norms) == 4 and all(n > 0 for n in norms)
    assert not guided.x_t.requires_grad
    assert not torch.equal(plain.x_t, guided.x_t)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name", ["ddim", "ddpm", "sde"])
def test_every_sampler_is_a_time_grid_and_a_step(name) -> None:
    """The loop is shared: a sampler's frames follow its own grid, ending clean at t = 0."""
    from diffrecon.diffusion.samplers import SAMPLERS

    sched, net = make_schedule("linear"), tiny_net()
    sampler = SAMPLERS[name].for_run(sched, 5, start_t=0.5)
    times = sampler.times()
    assert len(times) == sampler.n_steps + 1 and all(a > b for a, b in zip(times, times[1:]))
    frames = list(sampler.frames(net, (1, 2, 16, 16), seed=0))
    assert [f.t for f in frames] == times[1:-1] + [0.0]
    # Samplers on the training grid take no more steps than it has below the start.
    assert SAMPLERS[name].fit_steps(5000, sched, 0.5) == (5000 if name == "sde" else sched.steps // 2)


def test_the_vpsde_final_denoising_goes_through_the_hooks_correction() -> None:
    sched, net = make_schedule("linear"), tiny_net()

    class Hook:
        def __call__(self, step, t, x_t, x0_hat):
            return x_t, x0_hat

        def correct_x0(self, x0):
            return torch.full_like(x0, 0.125)

    last = run_to_end(VPSDESampler(sched, 3).frames(net, (1, 2, 16, 16), seed=0, hook=Hook()))
    assert torch.equal(last.x_t, torch.full_like(last.x_t, 0.125))
