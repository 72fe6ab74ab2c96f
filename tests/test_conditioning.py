"""Conditional priors and classifier-free guidance: condition dropout, the guided mix, the task check."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import assert_one_sentence_error, make_phantom
from diffrecon.diffusion.checkpoint import load_prior, read_metadata, save_prior
from diffrecon.diffusion.conditioning import (
    ConditioningTask,
    GuidedEps,
    drop_condition,
    load_unconditional_into,
    problem_task,
)
from diffrecon.diffusion.schedules import make_schedule
from diffrecon.diffusion.unet import UNet
from diffrecon.errors import SettingsError


def random_net(cond_channels: int = 2, seed: int = 0) -> UNet:
    """A tiny conditional UNet with every weight random (the zero-initialised head would make
    every prediction 0, and so every guided mix trivially equal)."""
    torch.manual_seed(seed)
    net = UNet(2, width=4, channel_mult=(1, 2), res_blocks=1, attention_heads=1, cond_channels=cond_channels)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    return net.eval()


def test_condition_dropout_zeros_whole_conditions_at_the_stated_rate_under_a_seed() -> None:
    cond = torch.rand(20000, 2, 4, 4) + 0.1  # never zero by chance
    out, dropped = drop_condition(cond, 0.15, np.random.default_rng(7))
    zero = (out == 0).flatten(1).all(dim=1).numpy()
    untouched = (out == cond).flatten(1).all(dim=1).numpy()
    assert np.array_equal(zero, dropped) and np.array_equal(untouched, ~dropped)  # all or nothing per item
    rate = dropped.mean()
    assert abs(rate - 0.15) < 3 * np.sqrt(0.15 * 0.85 / 20000), rate
    again, dropped_again = drop_condition(cond, 0.15, np.random.default_rng(7))
    assert np.array_equal(dropped, dropped_again) and torch.equal(out, again)
    assert not drop_condition(cond, 0.0, np.random.default_rng(7))[1].any()


def test_training_steps_drop_the_condition_at_the_configured_rate(tmp_path: Path) -> None:
    """The trainer's own batches: condition dropout as configured, from its seeded stream."""
    from test_training import blob_source, tiny_config

    from diffrecon.diffusion.training import Trainer

    trainer = Trainer(tiny_config(conditional="mri-4x", p_uncond=0.2, batch=50), [blob_source()],
                      tmp_path / "c.safetensors")
    x0 = torch.from_numpy(trainer.crops.sample(50)) + 0.5  # offset: no crop's zero-filled image is all zero
    dropped = []
    for _ in range(20):
        cond = trainer._training_condition(x0)
        dropped.append((cond == 0).flatten(1).all(dim=1).numpy())
    rate = np.concatenate(dropped).mean()
    assert abs(rate - 0.2) < 3 * np.sqrt(0.2 * 0.8 / 1000), rate


def test_the_mri_training_condition_is_the_zero_filled_image_of_a_4x_line_mask() -> None:
    from diffrecon.physics.mri import fft2c

    task = ConditioningTask.parse("mri-4x")
    x0 = torch.randn(3, 2, 32, 32)
    cond = task.training_condition(x0, np.random.default_rng(0))
    k = fft2c(torch.complex(cond[:, 0], cond[:, 1]))
    sampled_columns = (k.abs() > 1e-5).any(dim=1).float().mean(dim=1)  # per item
    assert torch.allclose(sampled_columns, torch.full((3,), 0.25), atol=0.05)
    full = fft2c(torch.complex(x0[:, 0], x0[:, 1]))
    kept = k.abs() > 1e-5
    assert torch.allclose(k[kept], full[kept], atol=1e-4)  # measured columns unchanged


def test_guidance_scale_zero_is_the_unconditional_prediction_and_one_the_conditional() -> None:
    net = random_net()
    x, cond = torch.randn(3, 2, 16, 16), torch.randn(3, 2, 16, 16)
    t = torch.full((3,), 0.4)
    with torch.no_grad():
        uncond, conditional = net(x, t, torch.zeros_like(cond)), net(x, t, cond)
        assert not torch.allclose(uncond, conditional, atol=1e-3)  # the condition matters to this net
        assert torch.equal(GuidedEps(net, cond, 0.0)(x, t), uncond)
        assert torch.equal(GuidedEps(net, cond, 1.0)(x, t), conditional)
        # the batch-of-two path agrees with the two separate calls at any scale
        for w in (1e-9, 1 + 1e-9, 2.5):
            guided = GuidedEps(net, cond, w)(x, t)
            assert torch.allclose(guided, uncond + w * (conditional - uncond), atol=1e-5)
        # a condition for one item serves a batch of samples of it (sample-major repeat)
        one = GuidedEps(net, cond[:1], 2.0)(x[:1].repeat(2, 1, 1, 1), t[:2])
        assert torch.allclose(one[0], one[1], atol=1e-6)
    with pytest.raises(SettingsError):
        GuidedEps(net, cond, -1.0)


def test_a_conditional_network_started_from_an_unconditional_prior_is_that_prior(tmp_path: Path) -> None:
    plain = random_net(cond_channels=0)
    path = save_prior(tmp_path / "u.safetensors", plain, {"schedule": make_schedule("linear").to_metadata(),
                                                           "normalisation": {"kind": "percentile", "percentile": 99.5},
                                                           "modality": "mri"})
    conditional = UNet(2, width=4, channel_mult=(1, 2), res_blocks=1, attention_heads=1, cond_channels=2).eval()
    load_unconditional_into(path, conditional)
    x, t = torch.randn(2, 2, 16, 16), torch.full((2,), 0.3)
    with torch.no_grad():
        assert torch.allclose(conditional(x, t, torch.randn(2, 2, 16, 16)), plain(x, t), atol=1e-6)


def test_task_names() -> None:
    assert problem_task("mri", 4.0) == "mri-4x" and problem_task("mri", 3.9) == "mri-4x"
    assert problem_task("mri", 8.2) == "mri-8x" and problem_task("denoise") == "denoise"
    with pytest.raises(SettingsError):
        ConditioningTask.parse("ct-60views")


# --------------------------------------------------------------------------- through the command line


@pytest.fixture(scope="module")
def conditional_prior_file(tmp_path_factory) -> Path:
    """A tiny conditional MRI prior (mri-4x) written as a prior file, as `train --conditional` writes it."""
    from tiny_priors import train_tiny_prior

    plain = train_tiny_prior(2, steps=10)
    net = UNet(2, width=4, channel_mult=(1, 2), res_blocks=1, attention_heads=1, cond_channels=2)
    state = net.state_dict()
    for k, v in plain.model.state_dict().items():
        state[k] = torch.cat([v, torch.zeros_like(v)], dim=1) if k == "stem.weight" else v
    net.load_state_dict(state)
    meta = {"schedule": plain.schedule.to_metadata(), "normalisation": plain.normalisation, "modality": "mri",
            "step": 10, "conditioning": ConditioningTask.parse("mri-4x").to_metadata()}
    return save_prior(tmp_path_factory.mktemp("cfg") / "cond.safetensors", net, meta)


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(make_phantom(2, 32, 32).transpose(2, 1, 0), np.eye(4)), path)
    return path


def test_reconstruct_with_guidance_runs_and_records_the_scale(cli, conditional_prior_file: Path, scan: Path,
                                                             tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    result = cli("--threads", "1", "reconstruct", scan, "--simulate", "--modality", "mri", "--method", "diffusion",
                 "--model", conditional_prior_file, "--cfg", "2", "--steps", "2", "--slices", "0:1",
                 "--out", tmp_path / "r.nii.gz", "--report", report)
    assert result.code == 0, result.err
    text = report.read_text()
    assert '"cfg_scale": 2.0' in text and '"guidance": "dds"' in text


def test_a_prior_of_another_task_is_refused_in_one_sentence(cli, conditional_prior_file: Path, scan: Path,
                                                            tmp_path: Path, mri_prior) -> None:
    base = ["reconstruct", scan, "--simulate", "--modality", "mri", "--method", "diffusion", "--steps", "1",
            "--slices", "0:1", "--out", tmp_path / "r.nii.gz"]
    line = assert_one_sentence_error(cli(*base, "--acceleration", "8", "--model", conditional_prior_file, "--cfg", "1"),
                                     mentions="conditioned on mri-4x")
    assert "mri-8x" in line
    # a conditional prior without guidance, and guidance with an unconditional prior
    assert_one_sentence_error(cli(*base, "--model", conditional_prior_file), mentions="conditional prior")
    from tiny_priors import save_tiny_prior

    plain = save_tiny_prior(tmp_path / "plain.safetensors", mri_prior)
    assert_one_sentence_error(cli(*base, "--model", plain, "--cfg", "1"), mentions="unconditional prior")


def test_bench_scores_cfg_methods_with_the_conditional_prior(cli, conditional_prior_file: Path, scan: Path,
                                                            tmp_path: Path, mri_prior) -> None:
    from tiny_priors import save_tiny_prior

    plain = save_tiny_prior(tmp_path / "plain.safetensors", mri_prior)
    out = tmp_path / "bench"
    result = cli("--threads", "1", "bench", scan, "--modality", "mri", "--settings", "4x", "--quick", "--no-cases",
                 "--methods", "tv,diffusion:ddim/dds/3,diffusion:cfg/0,diffusion:cfg/2", "--model", plain,
                 "--cfg-model", conditional_prior_file, "--out", out)
    assert result.code == 0, result.err
    results = json.loads((out / "results.json").read_text())
    assert set(results["summary"]["4x"]) >= {"tv", "diffusion:ddim/dds/3", "diffusion:cfg/0", "diffusion:cfg/2"}
    assert results["cfg_model"]["conditioning"]["task"] == "mri-4x"
    assert "Conditional prior" in (out / "results.md").read_text()
    missing = cli("bench", scan, "--modality", "mri", "--settings", "4x", "--quick", "--methods", "diffusion:cfg/2",
                  "--out", tmp_path / "b2")
    assert_one_sentence_error(missing, mentions="--cfg-model")
    assert_one_sentence_error(cli("bench", scan, "--modality", "mri", "--settings", "8x", "--quick", "--methods",
                                  "diffusion:cfg/2", "--cfg-model", conditional_prior_file, "--out", tmp_path / "b3"),
                              mentions="conditioned on mri-4x")


def test_train_conditional_writes_the_task_into_the_prior(cli, tmp_path: Path) -> None:
    from test_training import run_train_cli

    vol = make_phantom(24, 24, 24)
    np.save(tmp_path / "mr.npy", vol)
    out = tmp_path / "cond.safetensors"
    args = [tmp_path / "mr.npy", "--modality", "mri", "--size", "16", "--width", "8", "--batch", "2", "--out", out,
            "--quiet", "--threads", "1", "--augment", "none", "--val-every", "2"]
    code, stdout, err = run_train_cli(*args, "--steps", "2", "--conditional", "mri-4x", "--p-uncond", "0.2")
    assert code == 0, err
    assert "conditional on mri-4x" in stdout
    meta = read_metadata(out)
    assert meta["conditioning"]["task"] == "mri-4x" and meta["conditioning"]["p_uncond"] == 0.2
    assert load_prior(out).model.config["cond_channels"] == 2
    log = [json.loads(line) for line in (tmp_path / "cond.train.jsonl").read_text().splitlines()]
    assert "val_loss_ema_uncond" in log[-1]
    code, _, err = run_train_cli(*args, "--steps", "3", "--resume")
    assert code == 2 and "conditional" in err  # resuming without --conditional is another network
    code, _, err = run_train_cli(*args[:-2], "--steps", "1", "--conditional", "ct-60views",
                                 "--out", tmp_path / "x.safetensors")
    assert code == 2 and err.count("\n") == 1 and "unknown task" in err
