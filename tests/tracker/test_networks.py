"""Phi (correspondence net) and Psi (weight net): shapes, ranges, the cost volume against its reference,
warping, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.errors import InputError
from tracker.networks import (CorrespondenceNet, NNRTNets, WeightNet, correlation, correlation_np, load_checkpoint,
                              phi_config, psi_config, save_checkpoint, warp_by_flow)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded machine two OpenMP threads can be many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("size,hw", [("tiny", (48, 64)), ("small", (60, 84)), ("small", (120, 160))])
def test_phi_shapes(size: str, hw: tuple[int, int]) -> None:
    cfg = phi_config(size)
    net = CorrespondenceNet(cfg).eval()
    h, w = hw
    depth = torch.rand(2, 1, h, w) + 0.5
    depth[:, :, :4] = 0.0
    with torch.no_grad():
        out = net(torch.rand(2, 3, h, w), torch.rand(2, 3, h, w), depth, depth.flip(0))
    assert out.flow.shape == (2, 2, h, w)
    assert len(out.flows) == cfg.flow_levels == len(out.levels)
    assert out.levels == list(range(cfg.pyramid_levels, cfg.finest_level - 1, -1))
    for fl, lvl in zip(out.flows, out.levels):
        assert fl.shape == (2, 2, -(-h // 2**lvl), -(-w // 2**lvl))
    assert out.features.shape == (2, cfg.feature_channels, -(-h // 2**cfg.finest_level), -(-w // 2**cfg.finest_level))
    assert torch.isfinite(out.flow).all()


def test_full_config_is_pwc_layout() -> None:
    cfg = phi_config("full")
    assert cfg.flow_levels == 5 and cfg.pyramid_levels == 6 and cfg.finest_level == 2 and cfg.dense
    small = phi_config("small")
    assert small.flow_levels == 5 and not small.dense and small.depth_input
    with pytest.raises(ValueError):  # a depth-input Phi needs the depths
        CorrespondenceNet(small)(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError):
        phi_config("huge")


def test_psi_range_and_shape() -> None:
    nets = NNRTNets(phi_config("tiny"), psi_config("tiny")).eval()
    h, w = 40, 56
    rgb = torch.rand(1, 3, h, w)
    pts = torch.rand(1, 3, h, w) + torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1)
    pts[:, :, :5] = 0  # invalid depth rows
    with torch.no_grad():
        out, wts = nets(rgb, rgb.flip(3), pts, pts)
        x = WeightNet.inputs(rgb, pts, rgb, pts, 1e3 * torch.ones(1, 2, h, w))  # every match outside the target
    assert wts.shape == (1, 1, h, w)
    assert (wts > 0).all() and (wts < 1).all()
    assert x.shape == (1, WeightNet.IN_CHANNELS, h, w)
    assert float(x[:, 13].max()) == 0.0  # target-valid channel is zero for matches outside the image


def test_correlation_matches_reference() -> None:
    f1 = torch.randn(1, 5, 7, 9)
    f2 = torch.randn(1, 5, 7, 9)
    c = correlation(f1, f2, 2)[0].numpy()
    ref = correlation_np(f1[0].numpy(), f2[0].numpy(), 2)
    assert c.shape == ref.shape == (25, 7, 9)
    assert np.allclose(c, ref, atol=1e-5)


def test_warp_by_flow_integer_shift() -> None:
    img = torch.arange(48, dtype=torch.float32).view(1, 1, 6, 8)
    flow = torch.zeros(1, 2, 6, 8)
    flow[:, 0] = 2.0  # out(p) = img(p + (2, 0))
    out = warp_by_flow(img, flow)
    assert torch.allclose(out[0, 0, :, :6], img[0, 0, :, 2:])
    assert torch.all(out[0, 0, :, 7] == 0)  # sampled outside the image


def test_phi_identity_images_gradients_flow() -> None:
    net = CorrespondenceNet(phi_config("tiny"))
    a = torch.rand(1, 3, 32, 48)
    out = net(a, a)
    out.flow.abs().mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_checkpoint_round_trip(tmp_path) -> None:
    nets = NNRTNets(phi_config("tiny"), psi_config("tiny"))
    path = tmp_path / "w.pt"
    save_checkpoint(nets, path, {"note": "x"})
    back, meta = load_checkpoint(path)
    assert meta["note"] == "x"
    for (k1, v1), (k2, v2) in zip(nets.state_dict().items(), back.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    with pytest.raises(InputError):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError):
        load_checkpoint(bad)


def test_shipped_weights_load_and_are_small() -> None:
    from tracker.training import default_weights_path

    p = default_weights_path()
    if not p.is_file():
        pytest.skip("shipped weights not trained yet")
    assert p.stat().st_size < 5 * 1024 * 1024
    nets, meta = load_checkpoint(p)
    assert meta.get("steps", 0) > 0
    with torch.no_grad():
        out, w = nets(torch.rand(1, 3, 60, 80), torch.rand(1, 3, 60, 80), torch.ones(1, 3, 60, 80),
                      torch.ones(1, 3, 60, 80))
    assert torch.isfinite(out.flow).all() and (w > 0).all() and (w < 1).all()
