"""Sparse keyframe features (tracker/features.py): detection and matching, depth lookup, lifting through a
keyframe's motion, gating, and the tracker recovering a slide along a flat surface that depth cannot see."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.camera import Intrinsics, backproject, project
from fusion.frame import RGBDFrame
from fusion.graph import GraphMotion, build_graph, skinning
from fusion.motion import TrackingInput
from fusion.warp import warp_points_np
from tracker.classical import ClassicalTracker, ClassicalTrackerConfig
from tracker.features import (FeatureConfig, FeatureDetector, KeyFeatures, depth_at, huber_pixel_weights,
                              lift_to_canonical, live_matches)

cv2 = pytest.importorskip("cv2")

K = Intrinsics(288.0, 288.0, 159.5, 119.5, 320, 240)
Z0 = 0.8
HALF = 0.16  # the plane's half size (m)
TEXEL = 0.001  # texture resolution (m)


def _texture(seed: int = 0) -> np.ndarray:
    """A blobby grey texture float32 [T,T] over the plane (1 mm texels), contrast ~0.5 of the range."""
    n = int(round(2 * HALF / TEXEL)) + 1
    noise = np.random.default_rng(seed).normal(size=(n, n)).astype(np.float32)
    t = cv2.GaussianBlur(noise, (0, 0), 5.0)
    return np.clip(128 + 60 * t / t.std(), 0, 255).astype(np.float32)


def _plane_frame(index: int, shift_x: float, texture: np.ndarray) -> RGBDFrame:
    """A textured square plane at depth Z0 facing the camera, slid by shift_x metres along x (the texture
    moves with it): depth float32 [H,W] metres, colour uint8 [H,W,3]."""
    u, v = np.meshgrid(np.arange(K.width, dtype=np.float64), np.arange(K.height, dtype=np.float64))
    x = (u - K.cx) / K.fx * Z0 - shift_x
    y = (v - K.cy) / K.fy * Z0
    inside = (np.abs(x) < HALF) & (np.abs(y) < HALF)
    mx = ((x + HALF) / TEXEL).astype(np.float32)
    my = ((y + HALF) / TEXEL).astype(np.float32)
    grey = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    color = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2) * inside[..., None]
    depth = np.where(inside, Z0, 0.0).astype(np.float32)
    return RGBDFrame(index, float(index), color.astype(np.uint8), depth, K)


@pytest.fixture(scope="module")
def plane():
    tex = _texture()
    f0 = _plane_frame(0, 0.0, tex)
    hit = f0.depth > 0
    u, v = np.meshgrid(np.arange(K.width), np.arange(K.height))
    pts = backproject(np.stack([u[hit], v[hit]], 1), f0.depth[hit], K).astype(np.float32)[::3]
    nrm = np.tile(np.float32([0, 0, -1]), (len(pts), 1))
    g = build_graph(pts, radius=0.05)
    a, w = skinning(pts, g)
    return tex, f0, pts, nrm, g, a, w


def test_detector_matches_a_shifted_image_to_subpixel(plane):
    tex, f0, *_ = plane
    f1 = _plane_frame(1, 0.02, tex)  # 2 cm = 7.2 px at this focal length and depth
    det = FeatureDetector("sift")
    uv0, d0 = det(cv2.cvtColor(f0.color, cv2.COLOR_RGB2GRAY), f0.depth > 0)
    uv1, d1 = det(cv2.cvtColor(f1.color, cv2.COLOR_RGB2GRAY), f1.depth > 0)
    assert len(uv0) > 50 and d0.shape == (len(uv0), 128)
    ki, li = det.match(d0, d1)
    assert len(ki) > 30
    err = np.linalg.norm(uv1[li] - uv0[ki] - np.float32([0.02 * K.fx / Z0, 0.0]), axis=1)
    assert np.median(err) < 0.3 and (err < 2.0).mean() > 0.9
    # the mask restricts detection (and the bounding-box crop offsets the positions back)
    m = np.zeros_like(f0.depth, bool)
    m[:, 160:] = True
    uvm, _ = det(cv2.cvtColor(f0.color, cv2.COLOR_RGB2GRAY), m & (f0.depth > 0))
    assert len(uvm) > 10 and uvm[:, 0].min() >= 159.5
    assert det(np.zeros((240, 320), np.uint8), np.zeros((240, 320), bool))[0].shape == (0, 2)


def test_orb_detector_and_unknown_name():
    img = (np.random.default_rng(1).random((240, 320)) * 255).astype(np.uint8)
    uv, d = FeatureDetector("orb")(cv2.GaussianBlur(img, (0, 0), 2.0))
    assert len(uv) > 20 and d.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown feature detector"):
        FeatureDetector("surf")
    with pytest.raises(ValueError, match="unknown features"):
        ClassicalTracker(ClassicalTrackerConfig(features="akaze"))
    with pytest.raises(ValueError, match="photometric keyframe"):
        ClassicalTracker(ClassicalTrackerConfig(features="sift", lambda_color=0.0))


def test_depth_at_rejects_invalid_edges_and_borders():
    d = np.full((10, 10), 1.0, np.float32)
    d[:, 6:] = 1.5  # a depth edge between columns 5 and 6
    d[2, 2] = 0.0
    uv = np.array([[3.0, 5.0], [5.0, 5.0], [2.0, 3.0], [0.0, 5.0], [7.4, 4.6], [2.0, 2.0]])
    np.testing.assert_allclose(depth_at(d, uv, 0.03), [1.0, 0.0, 0.0, 0.0, 1.5, 0.0])


def test_lift_to_canonical_inverts_a_known_graph_motion(plane):
    _, _, pts, _, g, a, w = plane
    rng = np.random.default_rng(3)
    n = g.num_nodes
    ang = rng.normal(scale=0.05, size=(n, 3))
    from tracker.so3 import exp_so3

    rot = exp_so3(ang)
    tr = rng.normal(scale=0.01, size=(n, 3))
    warped = warp_points_np(pts, a, w, g.nodes, rot, tr)
    # points between samples: the truth is the warp of a canonical point near a sample
    q = pts[::50].astype(np.float64) + rng.normal(scale=0.002, size=(len(pts[::50]), 3)) * [1, 1, 0]
    aq, wq = skinning(q.astype(np.float32), g)
    x = warp_points_np(q.astype(np.float32), aq, wq, g.nodes, rot, tr)
    pc, rows = lift_to_canonical(x, pts, warped, a, w, rot)
    assert len(rows) > 0.95 * len(q)
    err = np.linalg.norm(pc - q[rows], axis=1)
    assert np.median(err) < 3e-4 and np.percentile(err, 90) < 1e-3  # a local inverse: exact for a rigid patch
    far = lift_to_canonical(x + [0, 0, 0.5], pts, warped, a, w, rot)
    assert len(far[1]) == 0  # nothing within 1 cm: nothing lifted


def test_live_matches_gate_on_the_prediction(plane):
    tex, f0, *_ = plane
    f1 = _plane_frame(1, 0.02, tex)
    det = FeatureDetector("sift")
    g0 = cv2.cvtColor(f0.color, cv2.COLOR_RGB2GRAY)
    uv, desc = det(g0, f0.depth > 0)
    z = depth_at(f0.depth, uv, 0.03)
    ok = z > 0
    key = KeyFeatures(backproject(uv[ok], z[ok], K), desc[ok], 0)
    g1 = cv2.cvtColor(f1.color, cv2.COLOR_RGB2GRAY)
    cfg = FeatureConfig()
    truth = key.points + [0.02, 0.0, 0.0]
    m = live_matches(key, det, g1, f1.depth, None, truth, K, cfg)
    assert len(m.rows) > 30
    np.testing.assert_allclose(np.median(m.target_uv - project(truth[m.rows], K)[0], axis=0), 0.0, atol=0.2)
    np.testing.assert_allclose(m.target_depth, Z0, atol=1e-6)
    # predicted 7 px off: all inside a 10 px gate, none inside a 3 px gate
    assert len(live_matches(key, det, g1, f1.depth, None, key.points, K, cfg).rows) > 30
    tight = FeatureConfig(gate_px=3.0)
    assert len(live_matches(key, det, g1, f1.depth, None, key.points, K, tight).rows) == 0
    # predicted 20 cm too deep: dropped by the depth gate
    assert len(live_matches(key, det, g1, f1.depth, None, truth + [0, 0, 0.2], K, cfg).rows) == 0


def test_huber_pixel_weights():
    w = huber_pixel_weights(np.array([[0.0, 0.0], [3.0, 4.0], [np.nan, 0.0]]), np.zeros((3, 2)), 1.0)
    np.testing.assert_allclose(w, [1.0, 0.2, 0.0])


@pytest.mark.parametrize("features", ["none", "sift"])
def test_tracker_recovers_a_slide_along_a_flat_surface_only_with_features(plane, features):
    """A flat textured plane slid 2 cm (7 px) along itself: depth sees no change, the photometric term's
    basin is a pixel or two; the keyframe features tie the canonical texture to the live image."""
    tex, f0, pts, nrm, g, a, w = plane
    f1 = _plane_frame(1, 0.02, tex)
    tracker = ClassicalTracker(ClassicalTrackerConfig(features=features))
    inp = TrackingInput(f1, g, GraphMotion.identity(g.num_nodes), pts, nrm, a, w, canonical_frame=f0)
    res = tracker.estimate(inp)
    assert res.ok, res.message
    moved = warp_points_np(pts, a, w, g.nodes, res.motion.rotations, res.motion.translations)
    err = np.linalg.norm(moved - (pts + [0.02, 0.0, 0.0]), axis=1).mean()
    if features == "sift":
        assert res.stats["feature_matches"] > 30
        assert err < 2e-3
    else:
        assert "feature_matches" not in res.stats
        assert err > 1e-2  # without features the slide is not seen


def test_features_of_a_later_keyframe_are_lifted_through_its_motion(plane):
    """With a new keyframe every frame (keyframe_min_visible > 1) the second frame is matched against the
    first tracked frame, whose keypoints are taken back to the canonical frame through its estimated motion."""
    tex, f0, pts, nrm, g, a, w = plane
    tracker = ClassicalTracker(ClassicalTrackerConfig(features="sift", keyframe_min_visible=1.01,
                                                      velocity_prediction=0.0))
    motion = GraphMotion.identity(g.num_nodes)
    for i, shift in ((1, 0.02), (2, 0.04)):
        res = tracker.estimate(TrackingInput(_plane_frame(i, shift, tex), g, motion, pts, nrm, a, w,
                                             canonical_frame=f0))
        assert res.ok, res.message
        motion = res.motion
        moved = warp_points_np(pts, a, w, g.nodes, motion.rotations, motion.translations)
        assert np.linalg.norm(moved - (pts + [shift, 0.0, 0.0]), axis=1).mean() < 2e-3
    assert res.stats["keyframe"]["index"] == 1 and res.stats["feature_matches"] > 30
