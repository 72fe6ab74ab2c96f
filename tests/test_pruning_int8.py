"""Structured pruning of a prior (diffusion.pruning, ``train --prune``) and the int8 backend (diffusion.onnx_int8)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_sentence_error, run_cli
from diffrecon.diffusion.checkpoint import load_prior, read_metadata
from diffrecon.diffusion.pruning import plan_pruning, prune, silence_dropped
from diffrecon.diffusion.training import Trainer
from diffrecon.diffusion.unet import UNet
from test_training import blob_source, tiny_config
from tiny_priors import save_tiny_prior


def random_unet(seed: int = 0) -> UNet:
    """A small UNet with every weight random (a fresh one has zero output convolutions)."""
    torch.manual_seed(seed)
    net = UNet(2, 16, (1, 2, 2), 1, 4).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 2, 24, 20, generator=g), torch.tensor([0.3, 0.8])


def test_pruning_keeps_shapes_consistent_and_drops_only_what_feeds_nothing() -> None:
    net = random_unet()
    small, plan = prune(net, 0.75)
    assert small.config["width"] == 12 and small.config["time_width"] == 16
    assert small.parameter_count() < 0.65 * net.parameter_count()
    x, t = inputs()
    with torch.no_grad():
        full, pruned, silent = net(x, t), small(x, t), silence_dropped(net, plan)(x, t)
    assert pruned.shape == full.shape
    # where the dropped channels feed nothing, pruning changes nothing (shapes, indices, groups, attention scale)
    assert float((pruned - silent).abs().max()) < 1e-5 * float(silent.abs().max())
    # on random weights the dropped channels did matter: the check above is not vacuous
    assert float((pruned - full).abs().max()) > 1e-2 * float(full.abs().max())


def test_pruning_to_the_full_width_is_the_identity() -> None:
    net = random_unet()
    same, _ = prune(net, 1.0)
    x, t = inputs()
    with torch.no_grad():
        assert torch.allclose(same(x, t), net(x, t), atol=1e-5)


def test_pruning_keeps_the_channels_with_the_largest_filters() -> None:
    net = random_unet()
    with torch.no_grad():  # the level-0 stream is written by the stem and the first block's conv2
        net.stem.weight[4:8] = 0.0
        net.down[0].conv2.weight[4:8] = 0.0
        net.down[0].conv1.weight[8:12] *= 1e-3  # a hidden space's weakest group
    plan = plan_pruning(net, 0.75)
    assert set(range(4, 8)).isdisjoint(plan.spaces["stem"].keep.tolist())
    assert set(range(8, 12)).isdisjoint(plan.spaces["down.0.hidden"].keep.tolist())
    assert len(plan.spaces["stem"].keep) == 12


def test_pruning_refuses_a_width_that_breaks_the_groups() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        plan_pruning(random_unet(), 0.6)


def test_train_prune_fine_tunes_a_narrower_copy_and_records_it(tmp_path: Path) -> None:
    parent = tmp_path / "parent.safetensors"
    Trainer(tiny_config(total_steps=2), [blob_source()], parent).run(progress=False)
    out = tmp_path / "pruned.safetensors"
    trainer = Trainer(tiny_config(total_steps=2, init_from=str(parent), prune=0.5), [blob_source()], out)
    assert trainer.model.config["width"] == 4 and trainer.model.config["time_width"] == 8
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    pruned, _ = prune(load_prior(parent).model, 0.5)
    assert all(torch.equal(before[k], v) for k, v in pruned.state_dict().items())  # starts from the pruned parent
    trainer.run(progress=False)
    meta = read_metadata(out)
    assert meta["pruned"]["factor"] == 0.5 and meta["pruned"]["parent"] == "parent.safetensors"
    assert load_prior(out).model.config["width"] == 4  # the file alone rebuilds the narrower network
    resumed = Trainer(tiny_config(total_steps=3, init_from=str(parent), prune=0.5), [blob_source()], out)
    assert resumed.resume() and resumed.step == 2


def test_train_prune_needs_a_prior_to_prune(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((8, 16, 16), np.float32))
    result = run_cli("train", tmp_path / "v.npy", "--modality", "mri", "--prune", "0.75", "--steps", "1",
                     "--out", tmp_path / "p.safetensors")
    assert_one_sentence_error(result, mentions="--init-from")


def small_scan(folder: Path) -> Path:
    g = np.random.default_rng(0)
    vol = np.zeros((2, 16, 16), np.float32)
    vol[:, 3:13, 4:12] = 1.0 + 0.1 * g.standard_normal((2, 10, 8))
    np.save(folder / "scan.npy", vol)
    return folder / "scan.npy"


def test_int8_backend_refuses_in_one_sentence_without_onnxruntime(tmp_path: Path, mri_prior, monkeypatch) -> None:
    model = save_tiny_prior(tmp_path / "tiny.safetensors", mri_prior)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an environment without the extra looks like
    result = run_cli("reconstruct", small_scan(tmp_path), "--simulate", "--modality", "mri", "--method", "diffusion",
                     "--steps", "2", "--model", model, "--backend", "onnx-int8", "--out", tmp_path / "o.nii.gz")
    assert_one_sentence_error(result, mentions="pip install")
    assert not (tmp_path / "o.nii.gz").exists()


def test_int8_backend_follows_the_float_network_and_is_recorded(tmp_path: Path, mri_prior, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from diffrecon.diffusion.onnx_int8 import OnnxInt8Network

    monkeypatch.setenv("DIFFRECON_CACHE_DIR", str(tmp_path / "cache"))
    prior = load_prior(save_tiny_prior(tmp_path / "tiny.safetensors", mri_prior))
    quantised = OnnxInt8Network(prior.model, prior.schedule)
    assert not quantised.cached and quantised.path.is_file()
    assert OnnxInt8Network(prior.model, prior.schedule).cached  # built once, read back afterwards
    g = torch.Generator().manual_seed(3)
    x, t = torch.randn(2, 2, 13, 18, generator=g), torch.tensor([0.2, 0.7])  # odd sizes: padded and cropped back
    with torch.no_grad():
        ref, got = prior.model(x, t), quantised(x, t)
    assert got.shape == ref.shape
    assert float((got - ref).norm() / ref.norm()) < 0.2
    report = tmp_path / "r.json"
    result = run_cli("reconstruct", small_scan(tmp_path), "--simulate", "--modality", "mri", "--method", "diffusion",
                     "--steps", "2", "--model", tmp_path / "tiny.safetensors", "--backend", "onnx-int8",
                     "--out", tmp_path / "o.nii.gz", "--report", report)
    assert result.code == 0, result.err
    assert '"backend": "onnx-int8"' in report.read_text()
    result = run_cli("reconstruct", small_scan(tmp_path), "--simulate", "--modality", "mri", "--method", "diffusion",
                     "--guidance", "dps", "--steps", "2", "--model", tmp_path / "tiny.safetensors",
                     "--backend", "onnx-int8", "--out", tmp_path / "o2.nii.gz")
    assert_one_sentence_error(result, mentions="gradients")


def test_the_inference_fast_path_equals_the_plain_path() -> None:
    from diffrecon.diffusion import unet

    net = random_unet().to(memory_format=torch.channels_last)
    x, t = inputs()
    outputs = {}
    try:
        for fast in (False, True):
            unet.set_fast_inference(fast)
            with torch.inference_mode():
                outputs[fast] = net(x.contiguous(memory_format=torch.channels_last), t)
    finally:
        unet.set_fast_inference(True)
    assert torch.allclose(outputs[True], outputs[False], rtol=1e-5, atol=1e-5 * float(outputs[False].abs().max()))
    assert not torch.equal(outputs[True], torch.zeros_like(outputs[True]))


def test_outputs_record_the_network_fast_path(tmp_path: Path, mri_prior) -> None:
    model = save_tiny_prior(tmp_path / "tiny.safetensors", mri_prior)
    report = tmp_path / "r.json"
    result = run_cli("reconstruct", small_scan(tmp_path), "--simulate", "--modality", "mri", "--method", "diffusion",
                     "--steps", "2", "--model", model, "--out", tmp_path / "o.nii.gz", "--report", report)
    assert result.code == 0, result.err
    text = report.read_text()
    assert '"network_fast_path": true' in text and '"backend": "torch"' in text
