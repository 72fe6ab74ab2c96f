"""Training: crops never leak held-out slices, the loss falls, checkpoints load, and resuming is exact."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffrecon.diffusion.checkpoint import (
    PriorPaths,
    load_prior,
    read_metadata,
    save_half_precision,
    tensor_bytes_digest,
)
from diffrecon.diffusion.data import (
    CropSampler,
    Normalisation,
    TrainingSource,
    load_sources,
    validation_crops,
)
from diffrecon.diffusion.model_card import RESULTS_HEADING
from diffrecon.diffusion.training import TrainConfig, Trainer, learning_rate, read_log
from diffrecon.errors import DiffreconError
from safetensors.torch import save_file



def tiny_config(**changes) -> TrainConfig:
    base = dict(modality="mri", channels=2, size=16, batch=4, lr=2e-3, warmup_steps=2, width=8,
                channel_mult=(1, 2), res_blocks=1, attention_heads=2, val_every=1000, val_count=4,
                autocast=False, exact_moments=True)
    return TrainConfig(**{**base, **changes})


def blob_source(seed: int = 0) -> TrainingSource:
    """A small smooth 'scan' (model domain) with a held-out stack."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (20, 24, 24)), indexing="ij")
    vol = (0.6 * np.exp(-(x**2 + y**2 + z**2) / 0.5) + 0.02 * rng.standard_normal((20, 24, 24))).astype(np.float32)
    return TrainingSource("blob", [vol[:8], vol[12:]], vol[8:12], (1.0, 1.0, 1.0), "slices 8-11", "synthetic")


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    lrs = [learning_rate(s, 1.0, warmup=10, horizon=200) for s in range(260)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[200] == pytest.approx(0.1) and lrs[259] == pytest.approx(0.1)


def test_ct_normalisation_is_proportional_to_attenuation() -> None:
    norm = Normalisation.for_modality("ct")
    hu = np.array([-3024.0, -1000.0, 0.0, 1000.0])
    assert np.allclose(norm.to_model(hu), [-0.012, 0.0, 0.5, 1.0])
    assert np.allclose(norm.from_model(norm.to_model(hu[1:])), hu[1:])
    mri = Normalisation.from_metadata(Normalisation.for_modality("mri").to_metadata())
    vol = np.linspace(0, 200, 1001, dtype=np.float32)
    assert np.percentile(mri.to_model(vol), 99.5) == pytest.approx(1.0)
    with pytest.raises(DiffreconError):
        mri.to_model(np.zeros((2, 4, 4)))


def test_crops_from_a_user_scan_never_touch_held_out_slices(tmp_path: Path) -> None:
    hu = np.full((40, 40, 40), -1000.0, np.float32)
    hu[:, 5:35, 5:35] = 40.0  # soft tissue
    n_val = 4  # --val-fraction 0.1 of 40 slices: the middle block 18-21
    hu[18:22, 5:35, 5:35] = 3000.0  # marks the held-out slices: x = 2.0 in the model domain
    path = tmp_path / "scan.npy"
    np.save(path, hu)
    (src,) = load_sources([str(path)], "ct", val_fraction=0.1)
    assert len(src.validation) == n_val and np.all(src.validation.max(axis=(1, 2)) == pytest.approx(2.0))
    sampler = CropSampler([src], size=16, channels=1, seed=0)
    assert len(sampler.stacks) == 6  # both blocks, in all three orientations
    crops = sampler.sample(400)
    assert crops.shape == (400, 1, 16, 16)
    assert crops.max() < 0.6  # never a held-out voxel (2.0), from any orientation
    tissue = (crops > 0.05).mean(axis=(1, 2, 3))
    assert np.mean(tissue < 0.15) < 0.1  # background crops mostly skipped


def test_crops_are_seeded_and_resumable() -> None:
    a = CropSampler([blob_source()], 16, 2, seed=5)
    b = CropSampler([blob_source()], 16, 2, seed=5)
    assert np.array_equal(a.sample(3), b.sample(3))
    state = a.state()
    ahead = a.sample(2)
    b.set_state(json.loads(json.dumps(state)))  # the state survives the JSON header of a checkpoint
    assert np.array_equal(b.sample(2), ahead)
    assert np.abs(ahead[:, 1]).max() > 0  # complex augmentation: a non-trivial imaginary part
    v1, v2 = validation_crops([blob_source()], 16, 2, 4), validation_crops([blob_source()], 16, 2, 4)
    assert np.array_equal(v1, v2)


def test_a_tiny_model_learns_a_simple_image(tmp_path: Path) -> None:
    cfg = tiny_config(channels=1, batch=8, total_steps=150, freq_loss=0.1)
    trainer = Trainer(cfg, [blob_source()], tmp_path / "blob.safetensors")
    before = trainer.validate()["val_loss"]
    losses = [trainer.train_step() for _ in range(150)]
    after = trainer.validate()
    assert np.mean(losses[-15:]) < 0.2 * np.mean(losses[:15])
    assert after["val_loss"] < 0.25 * before  # on held-out slices, not only the training crops
    assert after["val_loss_ema"] < 0.5 * before


def test_checkpoint_round_trip_and_model_card(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(total_steps=3), [blob_source()], tmp_path / "p.safetensors")
    trainer.run(progress=False)
    paths = PriorPaths.for_weights(tmp_path / "p.safetensors")
    prior = load_prior(paths.weights)
    assert prior.channels == 2 and prior.modality == "mri" and prior.schedule.kind == "linear"
    assert prior.normalisation["kind"] == "percentile" and prior.normaliser.percentile == 99.5
    x = torch.randn(1, 2, 20, 12)
    with torch.no_grad():
        assert torch.equal(prior.model(x, 0.5), trainer.ema.eval()(x, 0.5))
    assert read_metadata(paths.train_state)["step"] == 3
    assert [r["step"] for r in read_log(paths.log)] == [3]
    card = paths.card.read_text()
    assert "blob" in card and "slices 8-11" in card and RESULTS_HEADING in card
    # what the arithmetic was (autocast off here: float32), and the whole range of t
    assert "Arithmetic: float32;" in card and "t ~ U[1/T, 1]" in card
    # Results that later work records in the card survive the next checkpoint.
    paths.card.write_text(card.replace("_Not measured yet", "PSNR 40 dB on 4x MRI. _Not measured yet"))
    trainer.save()
    assert "PSNR 40 dB" in paths.card.read_text()
    total = paths.weights.stat().st_size + paths.train_state.stat().st_size
    assert total < 4 * (4 + 4 + 8) * trainer.model.parameter_count()  # fp32 weights + EMA + moments


def test_a_prior_stored_as_float16_is_half_the_bytes_and_predicts_as_before(tmp_path: Path) -> None:
    trainer = Trainer(tiny_config(total_steps=2), [blob_source()], tmp_path / "p.safetensors")
    trainer.run(progress=False)
    half = save_half_precision(tmp_path / "p.safetensors", tmp_path / "half.safetensors")
    assert half.stat().st_size < 0.6 * (tmp_path / "p.safetensors").stat().st_size
    full, small = load_prior(tmp_path / "p.safetensors"), load_prior(half)
    assert all(p.dtype == torch.float32 for p in small.model.parameters())  # widened on loading
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        a, b = full.model(x, 0.3), small.model(x, 0.3)
    assert not torch.equal(a, b) and float((a - b).norm() / a.norm()) < 2e-3
    meta = read_metadata(half)
    assert meta["stored_as"] == {"dtype": "float16",
                                 "float32_weights_sha256": tensor_bytes_digest(tmp_path / "p.safetensors")}
    assert meta["unet_config"] == read_metadata(tmp_path / "p.safetensors")["unet_config"]
    with pytest.raises(DiffreconError, match="already stored as float16"):
        save_half_precision(half, tmp_path / "again.safetensors")


def test_loading_refuses_files_that_are_not_priors(tmp_path: Path) -> None:
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, str(bare))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    bad_config = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad_config), metadata={
        "format": "diffrecon-prior/1", "unet_config": json.dumps({"in_channels": 3}),
        "schedule": json.dumps({"kind": "linear", "steps": 1000}), "normalisation": "{}", "modality": "mri"})
    for path, says in ((bare, "not a diffrecon prior"), (junk, "not a readable"), (bad_config, "unet_config lacks"),
                       (tmp_path / "missing.safetensors", "no such file")):
        with pytest.raises(DiffreconError, match=says) as err:
            load_prior(path)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("exact", [True, False])
def test_resume_continues_exactly(tmp_path: Path, exact: bool) -> None:
    cfg = tiny_config(total_steps=10, exact_moments=exact)
    straight = Trainer(cfg, [blob_source()], tmp_path / "straight.safetensors")
    straight.run(progress=False)
    first = Trainer(cfg, [blob_source()], tmp_path / "split.safetensors")
    first.run(progress=False, stop_after=5)
    second = Trainer(cfg, [blob_source()], tmp_path / "split.safetensors")
    assert second.resume() and second.step == 5
    second.run(progress=False)
    assert second.step == 10
    for net_a, net_b in ((straight.model, second.model), (straight.ema, second.ema)):
        for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
            if exact:
                assert torch.equal(a, b), name
            else:  # bf16 moments: the same run up to rounding
                assert torch.allclose(a, b, rtol=1e-2, atol=1e-4), name


def test_resume_refuses_a_different_network(tmp_path: Path) -> None:
    Trainer(tiny_config(total_steps=1), [blob_source()], tmp_path / "p.safetensors").run(progress=False)
    other = Trainer(tiny_config(total_steps=1, width=16), [blob_source()], tmp_path / "p.safetensors")
    with pytest.raises(DiffreconError):
        other.resume()


def run_train_cli(*args: str) -> tuple[int, str, str]:
    from diffrecon.cli.train import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_train_command_writes_and_resumes(tmp_path: Path) -> None:
    hu = np.full((24, 24, 24), -1000.0, np.float32)
    hu[:, 4:20, 4:20] = 50.0
    np.save(tmp_path / "ct.npy", hu)
    out = tmp_path / "models" / "ct-tiny.safetensors"
    args = [tmp_path / "ct.npy", "--modality", "ct", "--size", "16", "--width", "8", "--batch", "2",
            "--out", out, "--quiet", "--threads", "1"]
    code, stdout, err = run_train_cli(*args, "--steps", "2", "--lr", "5e-4")
    assert code == 0, err
    assert str(out) in stdout and "ct-tiny.train.safetensors" in stdout
    assert load_prior(out).channels == 1 and load_prior(out).metadata["normalisation"]["kind"] == "hu"
    code, _, err = run_train_cli(*args, "--steps", "3")
    assert code == 2 and err.count("\n") == 1 and "--resume" in err
    code, stdout, err = run_train_cli(*args, "--steps", "3", "--resume")
    assert code == 0, err
    assert "resuming at step 2" in stdout and read_metadata(out)["step"] == 3
    # without --lr a resumed run keeps its own peak learning rate, not the default
    assert read_metadata(out.with_name("ct-tiny.train.safetensors"))["config"]["lr"] == 5e-4
    code, _, err = run_train_cli(tmp_path / "ct.npy", "--modality", "mri", "--out", tmp_path / "x.safetensors")
    assert code == 2 and "--steps" in err


def test_diffrecon_train_is_a_registered_subcommand(cli) -> None:
    from conftest import assert_one_sentence_error

    result = cli("train", "colin27", "--modality", "mri", "--out", "x.safetensors")
    assert_one_sentence_error(result, mentions="--steps")
    result = cli("train", "no-such-scan.nii.gz", "--modality", "mri", "--out", "x.safetensors", "--steps", "1")
    assert_one_sentence_error(result, mentions="no-such-scan")


def test_a_distilled_student_follows_its_teacher_closer_than_one_trained_on_the_noise(tmp_path: Path) -> None:
    teacher = Trainer(tiny_config(total_steps=40), [blob_source()], tmp_path / "teacher.safetensors")
    teacher.run(progress=False)
    student_cfg = dict(total_steps=80, width=4, freq_loss=0.0)
    distilled = Trainer(tiny_config(**student_cfg, teacher=str(tmp_path / "teacher.safetensors")), [blob_source()],
                        tmp_path / "student.safetensors")
    plain = Trainer(tiny_config(**student_cfg), [blob_source()], tmp_path / "plain.safetensors")
    distilled.run(progress=False)
    plain.run(progress=False)
    reference = load_prior(tmp_path / "teacher.safetensors").model
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(8, 2, 16, 16, generator=gen)
    t = torch.rand(8, generator=gen) * 0.9 + 0.05
    with torch.no_grad():
        target = reference(x, t)
        gap = {name: float((load_prior(tmp_path / f"{name}.safetensors").model(x, t) - target).square().mean())
               for name in ("student", "plain")}
    assert gap["student"] < 0.5 * gap["plain"]
    card = (tmp_path / "student.md").read_text()
    assert "distillation" in card and "teacher.safetensors" in card
    assert read_metadata(tmp_path / "student.safetensors")["distilled_from"]["step"] == 40


def test_distillation_refuses_a_teacher_of_another_kind(tmp_path: Path) -> None:
    Trainer(tiny_config(total_steps=1), [blob_source()], tmp_path / "mri.safetensors").run(progress=False)
    with pytest.raises(DiffreconError, match="cannot teach"):
        Trainer(tiny_config(channels=1, teacher=str(tmp_path / "mri.safetensors")), [blob_source()],
                tmp_path / "s.safetensors")


def test_a_noise_range_trains_and_validates_only_the_levels_denoising_enters_at(tmp_path: Path) -> None:
    from diffrecon.diffusion.training import trained_times

    trainer = Trainer(tiny_config(channels=1, noise_range=(0.02, 0.3)), [blob_source()], tmp_path / "d.safetensors")
    lo, hi = trainer.t_range
    levels = torch.expm1(-trainer.schedule.log_alpha_bar(torch.tensor([lo, hi], dtype=torch.float64))).sqrt()
    assert 0.02 <= float(levels[0]) < 0.025 and 0.28 < float(levels[1]) <= 0.3
    assert hi < 0.1  # a linear schedule's denoising levels are its first tenth
    assert float(trainer.val_t.min()) == pytest.approx(lo) and float(trainer.val_t.max()) == pytest.approx(hi)
    record = trainer.run(progress=False, stop_after=2)
    assert list(record["val_loss_ema_by_t"]) == ["t<0.33"]  # no empty bands (they were NaN)
    assert load_prior(trainer.paths.weights).noise_range == (0.02, 0.3)
    assert "only at the noise levels sqrt((1 - abar) / abar) from 0.02 to 0.3" in trainer.paths.card.read_text()
    assert trained_times(trainer.schedule, None) == (1 / 1000, 1.0)
    with pytest.raises(DiffreconError, match="noise range"):
        trained_times(trainer.schedule, (0.3, 0.02))


def test_a_complex_prior_starts_a_real_one_from_its_real_channel(tmp_path: Path) -> None:
    parent = Trainer(tiny_config(channels=2), [blob_source()], tmp_path / "complex.safetensors")
    parent.run(progress=False, stop_after=1)
    child = Trainer(tiny_config(channels=1, init_from=str(parent.paths.weights)), [blob_source()],
                    tmp_path / "real.safetensors")
    weights = load_prior(parent.paths.weights).model.state_dict()
    mine = child.model.state_dict()
    assert mine["stem.weight"].shape[1] == 1 and torch.equal(mine["stem.weight"], weights["stem.weight"][:, :1])
    assert torch.equal(mine["head.2.weight"], weights["head.2.weight"][:1])
    assert torch.equal(mine["head.2.bias"], weights["head.2.bias"][:1])
    assert torch.equal(child.ema.state_dict()["stem.weight"], mine["stem.weight"])
