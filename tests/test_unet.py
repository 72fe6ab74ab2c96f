"""The noise-predicting UNet: any slice size in, same shape out; config rebuilds it; CPU speed switches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffrecon.diffusion.unet import (
    UNet,
    autocast_context,
    build_unet,
    timestep_embedding,
    to_channels_last,
)



def tiny_unet(in_channels: int = 1, seed: int = 0) -> UNet:
    """A ~12k-parameter UNet with random (not zero-initialised) weights, so outputs depend on inputs."""
    torch.manual_seed(seed)
    net = UNet(in_channels=in_channels, width=8, channel_mult=(1, 2), res_blocks=1, attention_heads=2)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return net.eval()


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("size", [(17, 23), (16, 16), (5, 7), (31, 9)])
def test_any_size_returns_the_input_shape(channels: int, size: tuple[int, int]) -> None:
    net = tiny_unet(channels)
    x = torch.randn(2, channels, *size)
    out = net(x, torch.tensor([0.1, 0.9]))
    assert out.shape == x.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_padding_is_centred_reflection_cropped_back() -> None:
    net = tiny_unet()
    net.levels = 3  # pretend three levels deep so a 13x14 input needs padding to 16x16
    x = torch.randn(1, 1, 13, 14)
    padded = F.pad(x, (1, 1, 1, 2), mode="reflect")
    net.levels = 2  # a 16x16 input needs no padding at two levels
    expected = net(padded, 0.5)[..., 1:14, 1:15]
    net.levels = 3
    assert torch.allclose(net(x, 0.5), expected, atol=1e-6)


def test_output_depends_on_time() -> None:
    net = tiny_unet()
    x = torch.randn(1, 1, 16, 16)
    assert not torch.allclose(net(x, 0.1), net(x, 0.8))
    # A scalar t and a per-sample t mean the same.
    assert torch.equal(net(x, 0.3), net(x, torch.tensor([0.3])))


def test_time_embedding_separates_neighbouring_steps() -> None:
    t = torch.tensor([0.5, 0.501])  # steps 500 and 501 of T = 1000
    emb = timestep_embedding(t, 32)
    assert emb.shape == (2, 32)
    assert (emb[0] - emb[1]).abs().max() > 0.1


def test_config_rebuilds_the_same_network() -> None:
    net = tiny_unet(2)
    rebuilt = build_unet(net.config)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(1, 2, 12, 12)
    assert torch.equal(rebuilt.eval()(x, 0.4), net(x, 0.4))
    with pytest.raises(ValueError):
        build_unet({**net.config, "depth": 3})


def test_rejects_unsupported_channels() -> None:
    with pytest.raises(ValueError):
        UNet(in_channels=3)
    with pytest.raises(ValueError):
        tiny_unet(1)(torch.randn(1, 2, 8, 8), 0.5)


def test_bf16_autocast_and_channels_last_agree_with_float32(monkeypatch) -> None:
    import diffrecon.diffusion.unet as unet

    monkeypatch.setattr(unet, "bf16_is_fast", lambda device_type="cpu": True)  # the numerics, on any CPU
    net = tiny_unet()
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        ref = net(x, 0.5)
        with autocast_context(True):
            fast = net(x, 0.5)
        fast_cl = to_channels_last(net)(x.contiguous(memory_format=torch.channels_last), 0.5)
    assert fast.dtype == torch.float32
    rel = (fast - ref).norm() / ref.norm()
    assert 0 < rel < 0.05  # bf16 differs, but only at the percent level
    assert torch.allclose(fast_cl, ref, atol=1e-5)


def test_autocast_is_off_where_bf16_would_be_emulated(monkeypatch) -> None:
    """Without native bf16 (an AVX2-only CPU) oneDNN emulates it ~25x slower: autocast stays off."""
    import diffrecon.diffusion.unet as unet

    monkeypatch.setattr(unet, "bf16_is_fast", lambda device_type="cpu": False)
    net = tiny_unet()
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        ref = net(x, 0.5)
        with autocast_context(True):
            assert not torch.is_autocast_enabled("cpu")
            same = net(x, 0.5)
    assert torch.equal(same, ref)


def test_bf16_inference_fast_path_matches_the_training_path(monkeypatch) -> None:
    """Inference keeps GroupNorm/SiLU in bf16 (norm_silu); with grad on, the plain autocast path runs."""
    import diffrecon.diffusion.unet as unet

    monkeypatch.setattr(unet, "bf16_is_fast", lambda device_type="cpu": True)
    net = tiny_unet(in_channels=2)
    x = torch.randn(2, 2, 32, 24)
    with torch.no_grad():
        ref = net(x, 0.3)
    with autocast_context(True):
        with torch.no_grad():
            fast = net(x, 0.3)
        with torch.enable_grad():
            plain = net(x, 0.3).detach()
    rel_fast = float((fast - ref).norm() / ref.norm())
    rel_plain = float((plain - ref).norm() / ref.norm())
    assert 0 < rel_fast < 0.05 and rel_fast < 2 * rel_plain + 1e-3  # no worse than bf16 already was
    assert not torch.equal(fast, plain)  # the two paths really differ


def test_default_prior_size_is_in_the_planned_range() -> None:
    net = UNet(in_channels=2, width=32, channel_mult=(1, 2, 2, 3))
    assert 2e6 < net.parameter_count() < 4e6
    # Zero-initialised output layer: an untrained prior predicts no noise at all.
    assert torch.count_nonzero(net(torch.randn(1, 2, 16, 16), 0.5)) == 0
