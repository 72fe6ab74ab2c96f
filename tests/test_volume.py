"""Volumes, not slices (issue 14): 3D-consistent reconstruction and multi-coil k-space
through diffusion, with tiny priors on small synthetic volumes."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from diffrecon.baselines import run_baseline
from diffrecon.diffusion.options import DiffusionOptions
from diffrecon.io import load_volume
from diffrecon.io.volume import Volume
from diffrecon.measurements import MeasurementSettings, ProblemSource
from diffrecon.metrics import through_plane_metrics
from diffrecon.physics.coils import simulate_coil_maps
from diffrecon.physics.mri import fft2c
from diffrecon.physics.solvers import residual_norm
from diffrecon.reconstruct import (
    DIFFUSION,
    DiffusionFrame,
    DiffusionSetup,
    MeasurementsReady,
    Reconstruction,
    ReconRequest,
    run_to_end,
)
from tiny_priors import save_tiny_prior


def ball_volume(slices: int = 8, size: int = 16) -> np.ndarray:
    """A ball and a smaller off-centre one whose cross-sections change smoothly from slice to slice."""
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, slices), np.linspace(-1, 1, size), np.linspace(-1, 1, size),
                             indexing="ij")
    big = (zz * 0.6) ** 2 + yy**2 + xx**2 < 0.8**2
    small = (zz * 0.6) ** 2 + (yy - 0.3) ** 2 + (xx + 0.25) ** 2 < 0.35**2
    return (0.4 * big + 0.5 * small).astype(np.float32) + 0.05


def mri_volume(slices: int = 8, size: int = 16) -> Volume:
    return Volume(ball_volume(slices, size), spacing=(1.0, 1.0, 1.0), modality="MR")


def test_through_plane_metrics_see_slice_to_slice_stripes():
    truth = ball_volume(10, 24)
    signs = np.where(np.arange(10) % 2 == 0, 1.0, -1.0).astype(np.float32).reshape(10, 1, 1)
    striped = truth + 0.05 * signs  # every slice off by as much as the other, alternately up and down
    smooth = truth + 0.05  # the same error, the same in every slice
    s, m = through_plane_metrics(truth, striped), through_plane_metrics(truth, smooth)
    assert m["slice_diff_nrmse"] == pytest.approx(0.0, abs=1e-6) and s["slice_diff_nrmse"] > 0.5
    assert s["sagittal_ssim"] < m["sagittal_ssim"] and s["coronal_ssim"] < m["coronal_ssim"]
    assert through_plane_metrics(truth, truth)["slice_diff_nrmse"] == 0.0


def test_tv_3d_couples_neighbouring_slices_only():
    volume = mri_volume(12, 24)  # slices thin enough for the object to change smoothly between them
    source = ProblemSource(volume, MeasurementSettings("mri", acceleration=4.0), simulate=True)
    problem = source.problem(np.arange(12))
    ref = problem.reference[:, 0].numpy()
    tv = run_baseline("tv", problem.operator, problem.y, modality="mri", slices=problem.slices).abs()[:, 0].numpy()
    tv3d = run_baseline("tv-3d", problem.operator, problem.y, modality="mri", slices=problem.slices).abs()[:, 0].numpy()
    assert through_plane_metrics(ref, tv3d)["slice_diff_nrmse"] < through_plane_metrics(ref, tv)["slice_diff_nrmse"]


def test_3d_gradient_and_divergence_are_adjoint_and_couple_neighbours_only():
    from diffrecon.baselines.tv import divergence3d, gradient3d, slice_pairs

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 1, 6, 7, generator=gen, dtype=torch.complex64)
    g = torch.randn(5, 1, 3, 6, 7, generator=gen, dtype=torch.complex64)
    pairs = slice_pairs([3, 4, 5, 9, 10], x)
    assert pairs.flatten().tolist() == [1.0, 1.0, 0.0, 1.0]
    lhs = (gradient3d(x, pairs).conj() * g).sum()
    rhs = -(x.conj() * divergence3d(g, pairs)).sum()
    assert torch.allclose(lhs, rhs, atol=1e-4)
    apart = slice_pairs([0, 2, 4, 6, 8], x)  # scattered slices: no slice-axis differences at all
    assert gradient3d(x, apart)[:, :, 2].abs().max() == 0


def _run_slab(prior, through_plane: float, batch_size: int, slices: int = 8):
    # A hot start from TV: from pure noise the tiny prior's early estimates run away in k-space's null space.
    setup = DiffusionSetup(prior, DiffusionOptions(guidance="dds", steps=10, symmetric=True, cg_iters=5, hot_start=True,
                                                   through_plane=through_plane), baseline="tv")
    request = ReconRequest(mri_volume(slices), MeasurementSettings("mri", acceleration=4.0), [DIFFUSION],
                           simulate=True, diffusion=setup, batch_size=batch_size)
    return run_to_end(request)


def test_through_plane_term_lowers_the_slice_difference_error(mri_prior):
    truth = ball_volume(8)
    independent = _run_slab(mri_prior, 0.0, 8).outcomes[DIFFUSION]
    consistent = _run_slab(mri_prior, 10.0, 8).outcomes[DIFFUSION]
    before = through_plane_metrics(truth, independent.volume)
    after = through_plane_metrics(truth, consistent.volume)
    assert after["slice_diff_nrmse"] < 0.8 * before["slice_diff_nrmse"], (before, after)
    assert after["sagittal_ssim"] > before["sagittal_ssim"] and after["coronal_ssim"] > before["coronal_ssim"]
    # recorded in the provenance: the weight and what it coupled
    assert consistent.params["through_plane"] == 10.0 and independent.params["through_plane"] == 0.0
    record = consistent.params["adaptation"][0]
    assert record["slice_pairs"] == 7 and record["through_plane"] == 10.0
    assert "adaptation" not in independent.params


def test_later_batches_are_tied_to_the_finished_slices_next_to_them(mri_prior):
    run = _run_slab(mri_prior, 10.0, 3, slices=7)
    records = run.outcomes[DIFFUSION].params["adaptation"]
    assert [r["slices"] for r in records] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [r["fixed_neighbours"] for r in records] == [0, 1, 1]
    assert [r["slice_pairs"] for r in records] == [2, 2, 0]


def test_cli_through_plane_default_flag_and_provenance(cli, tmp_path, mri_prior):
    from diffrecon.io import save_volume

    scan = tmp_path / "slab.npy"
    save_volume(mri_volume(4), scan)
    prior = save_tiny_prior(tmp_path / "tiny.safetensors", mri_prior)
    reports = {}
    for name, extra in (("default", []), ("off", ["--independent-slices"])):
        report = tmp_path / f"{name}.json"
        result = cli("reconstruct", scan, "--simulate", "--modality", "mri", "--method", "diffusion", "--model", prior,
                     "--steps", "2", "--guidance", "dds", "--out", tmp_path / f"{name}.npy", "--report", report, *extra)
        assert result.code == 0, result.err
        reports[name] = json.loads(report.read_text())["methods"]["diffusion"]["params"]
    assert reports["default"]["through_plane"] > 0  # on by default for MRI
    assert reports["default"]["adaptation"][0]["slice_pairs"] == 3
    assert reports["off"]["through_plane"] == 0.0


# --------------------------------------------------------------------------- multi-coil k-space


def write_multicoil_fastmri(path, slices: int = 2, size: int = 32, coils: int = 4) -> np.ndarray:
    """A fully sampled fastMRI-style multi-coil file of the ball volume; returns the image."""
    image = ball_volume(slices, size).astype(np.complex64)
    maps = simulate_coil_maps(coils, size, size, seed=3)
    kspace = fft2c(torch.from_numpy(image[:, None] * maps[None])).numpy().astype(np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.attrs["acquisition"] = "CORPD_FBK"
    return image


def test_a_multicoil_file_reduces_its_measurement_residual_through_diffusion(tmp_path, mri_prior):
    path = tmp_path / "multicoil.h5"
    write_multicoil_fastmri(path)
    volume = load_volume(path)
    assert volume.kspace is not None and volume.kspace.multicoil
    settings = MeasurementSettings("mri", acceleration=2.0, center_fraction=0.3)
    setup = DiffusionSetup(mri_prior, DiffusionOptions(guidance="dds", steps=12, cg_iters=5, hot_start=True),
                           baseline="tv")  # from pure noise the tiny prior runs away (see _run_slab)
    problem, residuals = None, []
    for event in Reconstruction(ReconRequest(volume, settings, [DIFFUSION], diffusion=setup, frames=True)):
        if isinstance(event, MeasurementsReady):
            problem = event.problem
            assert problem.operator.multicoil and problem.y.shape[1] == 4  # SENSE with the ESPIRiT maps
        elif isinstance(event, DiffusionFrame):
            with torch.inference_mode():
                residuals.append(float(residual_norm(problem.operator, event.frame.x0, problem.y).sum()))
    assert problem is not None and len(residuals) == 5  # round(0.4 * 12) steps after the hot start
    y_norm = float(problem.y.abs().square().sum().sqrt())
    assert residuals[-1] < residuals[0] and residuals[-1] < 0.2 * y_norm, (residuals, y_norm)


def test_cli_reconstructs_a_multicoil_file_with_diffusion(cli, tmp_path, mri_prior):
    path = tmp_path / "multicoil.h5"
    write_multicoil_fastmri(path)
    prior = save_tiny_prior(tmp_path / "tiny.safetensors", mri_prior)
    out, report = tmp_path / "recon.h5", tmp_path / "report.json"
    result = cli("reconstruct", path, "--method", "tv,diffusion", "--model", prior, "--steps", "3",
                 "--acceleration", "2", "--center-fraction", "0.3", "--out", out, "--report", report)
    assert result.code == 0, result.err
    methods = json.loads(report.read_text())["methods"]
    assert methods["diffusion"]["metrics"]["psnr"] > 15 and methods["tv"]["metrics"]["psnr"] > 15
