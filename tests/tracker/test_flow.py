"""tracker/flow.py: dense optical flow correspondences (DIS), splatting, and their use by the classical tracker."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.camera import Intrinsics
from tracker.flow import DenseFlow, FlowMatchConfig, flow_matches, gray_u8, sample_flow, splat

K = Intrinsics(200.0, 200.0, 79.5, 59.5, 160, 120)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    import cv2

    noise = rng.uniform(0, 255, (h // 4 + 2, w // 4 + 2)).astype(np.float32)
    return cv2.resize(noise, (w + 8, h + 8), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def test_dis_recovers_a_known_translation():
    tex = _texture(120, 160)
    a = tex[4:124, 4:164]
    b = tex[2:122, 1:161]  # content moves by (+3, +2) pixels
    f = DenseFlow("medium")(a, b)
    inner = f[20:100, 20:140].reshape(-1, 2)
    assert np.allclose(np.median(inner, 0), [3.0, 2.0], atol=0.25)


def test_sample_flow_is_bilinear():
    flow = np.zeros((4, 5, 2), np.float32)
    flow[..., 0] = np.arange(5)[None, :]
    flow[..., 1] = np.arange(4)[:, None] * 2
    out = sample_flow(flow, np.array([[1.5, 2.25], [0.0, 0.0]]))
    assert np.allclose(out, [[1.5, 4.5], [0.0, 0.0]])


def test_flow_matches_carry_points_and_reject_occluded():
    rng = np.random.default_rng(1)
    depth = np.full((120, 160), 1.0, np.float32)
    uv = np.stack([rng.uniform(20, 140, 50), rng.uniform(20, 100, 50)], 1)
    pts = np.stack([(uv[:, 0] - K.cx) / K.fx, (uv[:, 1] - K.cy) / K.fy, np.ones(50)], 1)
    pts[:5, 2] = 1.5  # behind the observed surface: not visible in the previous frame
    pts[:5, :2] *= 1.5
    fwd = np.zeros((120, 160, 2), np.float32)
    fwd[..., 0] = 2.0
    bwd = -fwd
    m = flow_matches(pts, depth, K, depth, K, fwd, bwd, FlowMatchConfig())
    assert set(m.rows.tolist()) == set(range(5, 50))
    assert np.allclose(m.target_uv, uv[m.rows] + [2.0, 0.0], atol=1e-4)
    assert np.allclose(m.target_depth, 1.0) and np.allclose(m.weights, 1.0)
    # an inconsistent backward flow lowers the weights and drops the worst
    m2 = flow_matches(pts, depth, K, depth, K, fwd, np.zeros_like(fwd), FlowMatchConfig(fb_sigma=1.0, fb_max=3.0))
    assert len(m2.rows) == 45 and np.allclose(m2.weights, np.exp(-2.0), atol=1e-5)


def test_splat_keeps_the_nearest_point():
    pts = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.2, 0.1, 1.0]])
    img, dep = splat(pts, np.array([10.0, 20.0, 30.0]), K, footprint=1)
    assert img[60, 80] == 10.0 and dep[60, 80] == pytest.approx(1.0)
    assert img[round(59.5 + 20), round(79.5 + 40)] == 30.0
    assert np.isnan(img).sum() == 160 * 120 - 2


def test_gray_u8_matches_rec601():
    c = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert np.allclose(gray_u8(c)[0], [76, 150, 29], atol=1)
