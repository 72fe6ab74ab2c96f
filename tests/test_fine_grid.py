"""MRI reconstructed on a finer grid (diffusion.fine_grid): the same measurements, results on the scan's grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffrecon.diffusion.fine_grid import FineGrid
from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.diffusion.reconstruction import reconstruct_to_end
from diffrecon.errors import SettingsError
from diffrecon.measurements import ReconProblem
from diffrecon.physics import MRIOperator, make_mask
from diffrecon.physics.coils import simulate_coil_maps
from test_reconstruction_stream import ct_problem, mri_problem


def _complex_image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(2, 1, h, w, generator=g), torch.randn(2, 1, h, w, generator=g))


@pytest.mark.parametrize("shape", [(16, 16), (17, 13)])
@pytest.mark.parametrize("factor", [2, 3])
def test_down_undoes_up_on_even_and_odd_grids(shape, factor):
    grid = FineGrid(*shape, factor)
    x = _complex_image(*shape, 0)
    fine = grid.up(x)
    assert fine.shape[-2:] == (factor * shape[0], factor * shape[1])
    torch.testing.assert_close(grid.down(fine), x, atol=1e-5, rtol=0)
    real = x.real
    back = grid.down(grid.up(real))
    assert not back.is_complex()
    if shape[0] % 2 and shape[1] % 2:  # an even axis's Nyquist bin has no twin: up() of a real image keeps half of it
        torch.testing.assert_close(back, real, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(16, 16), (17, 13)])
@pytest.mark.parametrize("coils", [0, 3])
def test_the_fine_problem_measures_what_the_scan_measured(shape, coils):
    """A(x) on the scan's grid is the fine problem's A of x interpolated, inside the block and
    nothing outside it: the fine problem's data are the scan's, not a resampling of them."""
    h, w = shape
    maps = simulate_coil_maps(coils, h, w, seed=0) if coils else None
    op = MRIOperator(make_mask("random", (h, w), 4.0, None, 0), maps)
    x = _complex_image(h, w, 1)
    y = op.A(x)
    problem = ReconProblem("mri", op, y, op.zero_filled(y), x.abs(), 0.0, np.arange(2))
    grid = FineGrid(h, w, 2)
    fine = grid.problem(problem)
    torch.testing.assert_close(fine.y, grid.pad_kspace(y))
    if coils:  # smooth maps are interpolated, not band-limited exactly: the product differs at the edges
        return
    torch.testing.assert_close(fine.operator.A(grid.up(x)), fine.y, atol=1e-5, rtol=0)
    torch.testing.assert_close(grid.crop_kspace(fine.operator.A(grid.up(x))), y, atol=1e-5, rtol=0)


def test_a_fine_grid_run_is_on_the_scans_grid_and_keeps_its_measurements(mri_prior):
    problem = mri_problem()
    options = DiffusionOptions(guidance="projection", steps=4, fine_grid=2)
    result = reconstruct_to_end(problem, mri_prior, options)
    assert result.x0.shape == problem.observed.shape
    # hard data consistency on the fine grid: the measured k-space of the cropped result is y
    torch.testing.assert_close(problem.operator.A(result.x0), problem.y, atol=2e-4, rtol=0)
    native = reconstruct_to_end(problem, mri_prior, DiffusionOptions(guidance="projection", steps=4))
    assert not torch.allclose(native.x0, result.x0)  # it did run elsewhere


def test_a_fine_grid_is_refused_for_ct_and_for_silly_factors(ct_prior):
    with pytest.raises(SettingsError, match="Cartesian MRI only"):
        reconstruct_to_end(ct_problem(), ct_prior, DiffusionOptions(steps=2, fine_grid=2))
    for bad in (0, 5, 1.5, True):
        with pytest.raises(SettingsError, match="fine grid"):
            DiffusionOptions(fine_grid=bad)


def test_bench_names_the_grid_as_a_method_flag():
    from diffrecon.bench.tasks import parse_methods

    specs = parse_methods("tv,diffusion:ddim/dds/25/noblend+grid2", "mri", have_prior=True)
    assert specs[1].overrides == {"sampler": "ddim", "guidance": "dds", "steps": 25, "blend_tv": False, "fine_grid": 2}
