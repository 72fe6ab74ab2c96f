"""Test-time adaptation of a prior to the scan at hand (diffrecon.diffusion.scan_adaptation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffrecon.diffusion.guidance import ModelDomain
from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.diffusion.reconstruction import reconstruct_to_end
from diffrecon.diffusion.scan_adaptation import ScanAdaptedModel, measurement_residual
from diffrecon.errors import SettingsError
from diffrecon.measurements import ReconProblem
from diffrecon.physics import MRIOperator, make_mask
from tiny_priors import SIZE, disks


def mri_problem(seed: int = 3) -> ReconProblem:
    truth = disks(1, torch.Generator().manual_seed(seed), True)
    truth = torch.complex(truth[:, :1], truth[:, 1:])
    op = MRIOperator(make_mask("random", (SIZE, SIZE), 3.0, None, 0))
    y = op.A(truth)
    return ReconProblem("mri", op, y, op.zero_filled(y), truth.abs(), 0.0, np.arange(1))


@pytest.mark.parametrize("parameters", ["norm", "lora"])
def test_adaptation_lowers_the_residual_of_the_tweedie_estimate_and_leaves_the_prior_alone(mri_prior, parameters):
    problem = mri_problem()
    domain = ModelDomain(mri_prior.normalisation, 2, "mri", True)
    before = {k: v.clone() for k, v in mri_prior.model.state_dict().items()}
    residual = measurement_residual(problem.operator, problem.y, domain.from_model, 1)
    y_norm2 = float(problem.y.abs().square().sum())
    adapted = ScanAdaptedModel(mri_prior.model, mri_prior.schedule, residual, y_norm2, steps=1, lr=3e-2,
                               parameters=parameters, rank=1)
    assert 0 < adapted.tuned_count() < 0.3 * sum(p.numel() for p in mri_prior.model.parameters())
    t = torch.full((1,), 0.3)
    x_t = mri_prior.schedule.add_noise(domain.to_model(problem.operator.zero_filled(problem.y)),
                                       torch.randn(1, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(0)), t)
    with torch.inference_mode():  # as the sampler calls it
        for _ in range(15):
            adapted(x_t, t)
    assert adapted.losses[-1] < 0.7 * adapted.losses[0]
    after = mri_prior.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the loaded weights never change


@pytest.mark.parametrize("parameters", ["norm", "lora"])
def test_adapted_reconstruction_is_seeded_and_reports_in_options(mri_prior, parameters):
    problem = mri_problem()
    options = DiffusionOptions(steps=6, adapt_steps=1, adapt_lr=1e-2, adapt_parameters=parameters)
    a = reconstruct_to_end(problem, mri_prior, options)
    torch.manual_seed(12345)  # the global stream must not matter
    b = reconstruct_to_end(problem, mri_prior, options)
    plain = reconstruct_to_end(problem, mri_prior, DiffusionOptions(steps=6))
    assert torch.equal(a.x0, b.x0)
    assert not torch.equal(a.x0, plain.x0)  # adaptation changed the network the sampler used
    assert options.to_dict()["adapt_steps"] == 1


def test_adaptation_settings_are_checked():
    with pytest.raises(SettingsError, match="adapt"):
        DiffusionOptions(adapt_steps=-1)
    with pytest.raises(SettingsError, match="adapt"):
        DiffusionOptions(adapt_steps=1, adapt_parameters="everything")
