"""DiffDenoise's self-supervised pipeline: blind-spot masking, the two-stage training command, stabilised sampling."""

from __future__ import annotations

import json

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import assert_one_sentence_error, make_phantom
from diffrecon.diffusion.checkpoint import read_metadata
from diffrecon.diffusion.self_supervised import MASK_FRACTION, blind_spot_loss, blind_spot_mask


def test_blind_spot_masking_replaces_the_stated_fraction_by_neighbours_never_themselves() -> None:
    h = w = 40
    x = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, 1, h, w)  # every value names its pixel
    out, mask = blind_spot_mask(x, np.random.default_rng(0), radius=2)
    assert mask.shape == (3, 1, h, w)
    assert (mask.flatten(1).sum(1) == round(MASK_FRACTION * h * w)).all()
    assert torch.equal(out[~mask.expand_as(x)], x[~mask.expand_as(x)])  # the rest untouched
    for i, y0, x0 in mask[:, 0].nonzero().tolist():
        source = int(out[i, 0, y0, x0]) - i * h * w
        sy, sx = divmod(source, w)
        assert (sy, sx) != (y0, x0) and max(abs(sy - y0), abs(sx - x0)) <= 2  # a neighbour, never itself
    again, mask_again = blind_spot_mask(x, np.random.default_rng(0), radius=2)
    assert torch.equal(again, out) and torch.equal(mask, mask_again)


def test_the_blind_spot_loss_sees_only_masked_pixels() -> None:
    """An identity network would copy each pixel's own noise: at the masked pixels it sees only a
    neighbour's value, so its loss there is the neighbour difference, not zero."""
    noisy = torch.randn(2, 1, 24, 24)

    class Identity(torch.nn.Module):
        def forward(self, x, t):
            return x

    loss = blind_spot_loss(Identity(), noisy, np.random.default_rng(1))
    assert float(loss) > 0.5  # about 2 for unit white noise (difference of two independent pixels)


@pytest.fixture(scope="module")
def self_supervised_prior(tmp_path_factory) -> Path:
    """`diffrecon train --self-supervised` on a tiny phantom made noisy (a few seconds of each stage)."""
    from test_training import run_train_cli

    folder = tmp_path_factory.mktemp("ss")
    np.save(folder / "mr.npy", make_phantom(24, 32, 32))
    out = folder / "ss.safetensors"
    code, stdout, err = run_train_cli(folder / "mr.npy", "--modality", "mri", "--self-supervised", "--simulate-noise",
                                      "0.1", "--minutes", "0.05", "--size", "16", "--width", "8", "--batch", "4",
                                      "--out", out, "--quiet", "--threads", "1", "--val-every", "1000")
    assert code == 0, err
    assert "blind-spot network" in stdout
    return out


def test_self_supervised_training_writes_a_blind_spot_prior(self_supervised_prior: Path) -> None:
    meta = read_metadata(self_supervised_prior)
    cond = meta["conditioning"]
    assert cond["task"] == "blind-spot" and cond["blind_spot_file"]["name"] == "ss-blindspot.safetensors"
    assert cond["simulated_noise_sigma"] == 0.1
    assert meta["unet_config"]["in_channels"] == 1 and meta["unet_config"]["cond_channels"] == 1
    assert read_metadata(self_supervised_prior.with_name("ss-blindspot.safetensors"))["role"] == "blind-spot"


def test_denoising_with_the_self_supervised_prior_and_its_refusals(cli, self_supervised_prior: Path,
                                                                    tmp_path: Path) -> None:
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(make_phantom(2, 32, 32).transpose(2, 1, 0), np.eye(4)), scan)
    base = ["--threads", "1", "reconstruct", scan, "--simulate", "--modality", "denoise", "--noise-sigma", "0.1",
            "--method", "diffusion", "--steps", "2", "--slices", "0:1", "--out", tmp_path / "d.nii.gz"]
    report = tmp_path / "d.json"
    result = cli(*base, "--model", self_supervised_prior, "--report", report)
    assert result.code == 0, result.err
    record = json.loads(report.read_text())
    text = json.dumps(record)
    assert "hot start from the blind-spot estimate" in text
    # entered at t = 0.1: round(0.1 x 2 steps) = 0 -> one step, one +-eps pair over the 4 flips of the default
    assert '"start_t": 0.1' in text and '"network_evaluations": 8' in text
    assert_one_sentence_error(cli(*base, "--model", self_supervised_prior.with_name("ss-blindspot.safetensors")),
                              mentions="blind-spot network")
    mri = ["reconstruct", scan, "--simulate", "--modality", "mri", "--method", "diffusion", "--steps", "1",
           "--slices", "0:1", "--out", tmp_path / "m.nii.gz", "--model", self_supervised_prior, "--cfg", "1"]
    assert_one_sentence_error(cli(*mri), mentions="self-supervised")
    # a blind-spot network that is not the one the prior was trained with
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "ss.safetensors").write_bytes(self_supervised_prior.read_bytes())
    tampered = self_supervised_prior.with_name("ss-blindspot.safetensors").read_bytes()[:-4] + b"\0\0\0\0"
    (copy / "ss-blindspot.safetensors").write_bytes(tampered)
    assert_one_sentence_error(cli(*base, "--model", copy / "ss.safetensors"), mentions="hash")


def test_a_complex_prior_starts_the_real_self_supervised_diffusion_stage(tmp_path: Path) -> None:
    """--init-from a 2-channel (complex) MRI prior: the 1-channel conditional network takes its
    real channel's stem filters and head output, zero weights on the condition, the rest as is."""
    from diffrecon.diffusion.checkpoint import _read
    from test_training import run_train_cli

    np.save(tmp_path / "mr.npy", make_phantom(24, 32, 32))
    small = ["--size", "16", "--width", "8", "--batch", "4", "--quiet", "--threads", "1", "--val-every", "1000"]
    complex_prior = tmp_path / "complex.safetensors"
    code, _, err = run_train_cli(tmp_path / "mr.npy", "--modality", "mri", "--steps", "2", "--out", complex_prior,
                                 *small)
    assert code == 0, err
    out = tmp_path / "ss.safetensors"
    code, stdout, err = run_train_cli(tmp_path / "mr.npy", "--modality", "mri", "--self-supervised",
                                      "--simulate-noise", "0.1", "--minutes", "0.05", "--init-from", complex_prior,
                                      "--lr", "1e-12", "--out", out, *small)
    assert code == 0, err
    assert "fine-tuning" in stdout
    (source, _), (started, meta) = _read(complex_prior), _read(out)
    assert meta["initialised_from"]["path"] == complex_prior.name
    assert source["stem.weight"].shape[1] == 2 and started["stem.weight"].shape[1] == 2  # image + condition
    # a learning rate of 1e-12 leaves the started network where it began
    torch.testing.assert_close(started["stem.weight"][:, :1], source["stem.weight"][:, :1], atol=1e-6, rtol=0)
    assert float(started["stem.weight"][:, 1:].abs().max()) < 1e-6  # the condition starts unread
    head = [k for k in source if k.startswith("head.") and source[k].ndim >= 1 and source[k].shape[0] == 2]
    assert head
    for k in head:
        torch.testing.assert_close(started[k], source[k][:1], atol=1e-6, rtol=0)
    rest = [k for k in source if k not in head and k != "stem.weight" and not k.startswith("time")]
    torch.testing.assert_close(started[rest[0]], source[rest[0]], atol=1e-6, rtol=0)


def test_method_noise_tells_noise_removed_from_signal_removed():
    """The no-reference figures of the real-noisy-scan picture (experiments.real_noisy): the
    clean image leaves exactly the noise (residual/σ near 1, no structure); a blur also takes
    the edges (residual/σ above 1, residual energy along the edges)."""
    from scipy import ndimage

    from diffrecon.experiments.real_noisy import method_noise

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    clean = ((xx - 48) ** 2 + (yy - 48) ** 2 < 30**2).astype(float) + 0.5 * (np.abs(xx - 48) < 6)
    noisy = clean + rng.normal(0, 0.05, clean.shape)
    mask = np.ones_like(clean, bool)
    exact = method_noise(noisy, clean, 0.05, mask)
    blurred = method_noise(noisy, ndimage.gaussian_filter(noisy, 3.0), 0.05, mask)
    assert 0.95 < exact["residual_over_sigma"] < 1.05 and abs(exact["structure"]) < 0.2
    assert blurred["residual_over_sigma"] > 1.5 and blurred["structure"] > 0.5


def test_the_sampler_enters_at_a_noise_level_that_follows_the_scans_noise():
    """t = 0.1 was chosen at sigma = 0.1; a scan with less noise enters lower (never far above its
    noise), and one whose noise is unknown keeps the chosen t."""
    import dataclasses

    from diffrecon.diffusion.guidance import ModelDomain
    from diffrecon.diffusion.schedules import make_schedule
    from diffrecon.diffusion.self_supervised import SELF_SUPERVISED_START_T, self_supervised_start
    from diffrecon.measurements import ReconProblem
    from diffrecon.physics.noise import IdentityOperator

    from tiny_priors import train_tiny_prior

    prior = dataclasses.replace(train_tiny_prior(1, steps=1), normalisation={"kind": "percentile", "percentile": 99.5})
    domain = ModelDomain(prior.normalisation, 1, "denoise", False)
    schedule = make_schedule("linear")

    def entry(sigma: float) -> float:
        y = torch.zeros(1, 1, 8, 8)
        problem = ReconProblem("denoise", IdentityOperator(), y, y, None, sigma / domain.gain, np.arange(1))
        return self_supervised_start(problem, prior, domain)

    assert entry(0.1) == pytest.approx(SELF_SUPERVISED_START_T, abs=0.003)
    low = entry(0.02)
    abar = float(schedule.alpha_bar(low))
    assert low < 0.05 and 0.06 <= ((1 - abar) / abar) ** 0.5 <= 0.075  # 3.4x its noise
    assert entry(0.0) == SELF_SUPERVISED_START_T
