"""Keyframe logic of the neural tracker (NNRT D.3) on constructed cases: weight threshold, bi-directional
consistency, multi-keyframe consistency, ignoring a keyframe with too many invalid correspondences, the
keyframe interval."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.camera import Intrinsics, backproject_depth
from fusion.frame import RGBDFrame
from fusion.graph import GraphMotion, build_graph, skinning
from fusion.motion import TrackingInput
from tracker.networks import NNRTNets, phi_config, psi_config
from tracker.neural import (NeuralTracker, NeuralTrackerConfig, filter_keyframe, multi_keyframe_consistency)

K = Intrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _plane(z: float = 1.0) -> np.ndarray:
    return np.full((K.height, K.width), z, np.float32)


def test_filter_weight_depth_and_bidirectional() -> None:
    kf_depth = _plane()
    live = _plane()
    live[:, 50:] = 0.0  # no depth on the right
    kuv = np.array([[10, 10], [20, 10], [30, 20], [40, 30], [12, 12]])
    shift = np.array([5.0, 0.0])
    tuv = kuv + shift
    tuv[3] = [55.0, 30.0]  # lands where the live frame has no depth
    w = np.array([0.9, 0.2, 0.9, 0.9, 0.9])  # the second is below 0.35
    back = np.zeros((K.height, K.width, 2), np.float32)
    back[..., 0] = -5.0  # a consistent backward flow ...
    back[12, 17] = (30.0, 0.0)  # ... except at the target of the last one: maps back 30 px away
    tz, valid, rej = filter_keyframe(kuv, tuv, w, kf_depth, live, K, back, 0.35, 0.20)
    assert valid.tolist() == [True, False, True, False, False]
    assert rej["low_weight"] == 1 and rej["no_target_depth"] == 1 and rej["bidirectional"] == 1
    assert np.allclose(tz[valid], 1.0)
    # 30 px at 1 m with f = 100 is 0.30 m > 0.20 m; with a looser threshold it passes
    _, valid2, _ = filter_keyframe(kuv, tuv, w, kf_depth, live, K, back, 0.35, 0.5)
    assert valid2[4]
    # without the backward flow there is no bi-directional check
    _, valid3, rej3 = filter_keyframe(kuv, tuv, w, kf_depth, live, K, None)
    assert valid3[4] and rej3["bidirectional"] == 0


def test_multi_keyframe_consistency() -> None:
    ids = [np.array([0, 1, 2]), np.array([0, 1, 3]), np.array([1, 5])]
    t = [np.array([[0, 0, 1.0], [0, 0, 1.0], [0, 0, 1.0]]),
         np.array([[0.05, 0, 1.0], [0.5, 0, 1.0], [0, 0, 1.0]]),
         np.array([[0, 0, 1.0], [0, 0, 1.0]])]
    v = [np.ones(3, bool), np.ones(3, bool), np.ones(2, bool)]
    out, n_bad = multi_keyframe_consistency(ids, t, v, 0.15)
    # sample 0: two predictions 5 cm apart (2.5 cm from the mean): kept. sample 1: one prediction 0.5 m off
    # (mean at 0.167: 0.33 m away) -> all three rejected. Samples seen once are kept.
    assert n_bad == 1
    assert out[0].tolist() == [True, False, True]
    assert out[1].tolist() == [True, False, True]
    assert out[2].tolist() == [False, True]
    # invalid predictions do not take part
    v2 = [np.ones(3, bool), np.array([True, False, True]), np.array([False, True])]
    out2, n2 = multi_keyframe_consistency(ids, t, v2, 0.15)
    assert n2 == 0 and out2[0].all()
    single, n1 = multi_keyframe_consistency(ids[:1], t[:1], v[:1])
    assert n1 == 0 and single[0].all()


class _StubTracker(NeuralTracker):
    """A NeuralTracker whose Phi / Psi are replaced by a known flow (a pure image shift) and weights."""

    def __init__(self, cfg: NeuralTrackerConfig, shift: tuple[float, float], weight: np.ndarray | float) -> None:
        super().__init__(cfg, nets=NNRTNets(phi_config("tiny"), psi_config("tiny")))
        self.shift = shift
        self.weight = weight
        self.calls = 0

    def predict(self, src, tgt, backward=True):
        self.calls += 1
        h, w = src.depth.shape
        f = np.zeros((h, w, 2), np.float32)
        f[..., 0], f[..., 1] = self.shift
        wt = np.broadcast_to(np.asarray(self.weight, np.float32), (h, w)).copy()
        return f, wt, (-f if backward else None)


def _scene(shift_px: float = 4.0):
    """A fronto-parallel textured plane at 1 m, translated by shift_px pixels in x between frames."""
    d = _plane()
    rng = np.random.default_rng(0)
    color = (rng.random((K.height, K.width, 3)) * 255).astype(np.uint8)
    pts = backproject_depth(d, K).reshape(-1, 3)
    normals = np.tile(np.array([0, 0, -1.0], np.float32), (len(pts), 1))
    g = build_graph(pts, radius=0.05, k=6)
    a, w = skinning(pts, g)
    src = RGBDFrame(0, 0.0, color, d, K)
    tgt = RGBDFrame(1, 0.1, np.roll(color, int(shift_px), axis=1), d, K)
    return src, tgt, g, pts, normals, a, w


def test_keyframe_with_too_many_invalid_is_ignored() -> None:
    src, tgt, g, pts, nrm, a, w = _scene()
    cfg = NeuralTrackerConfig(device="cpu", use_icp=False, select_by_fit=False, bidirectional=True, max_samples=1000)
    weights = np.full((K.height, K.width), 0.9, np.float32)
    weights[:, : int(K.width * 0.6)] = 0.1  # 60 % of the keyframe gets low weights -> > 50 % invalid
    tr = _StubTracker(cfg, (4.0, 0.0), weights)
    tr.add_keyframe(src, GraphMotion.identity(g.num_nodes))
    inp = TrackingInput(tgt, g, GraphMotion.identity(g.num_nodes), pts, nrm, a, w)
    corr, stats = tr.correspondences(inp)
    assert corr is None
    info = stats["per_keyframe"][0]
    assert not info["used"] and info["invalid_fraction"] > 0.5 and info["low_weight"] > 0
    res = tr.estimate(inp)
    assert not res.ok  # no ICP fallback configured and no usable keyframe
    # the same keyframe with good weights is used, and the solve recovers the 4 px = 4 cm shift
    tr2 = _StubTracker(cfg, (4.0, 0.0), 0.9)
    tr2.add_keyframe(src, GraphMotion.identity(g.num_nodes))
    corr2, stats2 = tr2.correspondences(inp)
    assert corr2 is not None and stats2["per_keyframe"][0]["used"]
    res2 = tr2.estimate(inp)
    assert res2.ok
    covered = np.isin(np.arange(g.num_nodes), a[corr2.sample_ids].ravel())
    assert np.allclose(res2.motion.translations[covered, 0], 0.04, atol=2e-3)


def test_keyframe_interval_and_limit() -> None:
    src, tgt, g, pts, nrm, a, w = _scene(0.0)
    cfg = NeuralTrackerConfig(device="cpu", use_icp=False, select_by_fit=False, keyframe_interval=3, max_keyframes=2,
                              max_samples=300)
    tr = _StubTracker(cfg, (0.0, 0.0), 0.9)
    tr.add_keyframe(src, GraphMotion.identity(g.num_nodes))
    motion = GraphMotion.identity(g.num_nodes)
    for i in range(1, 8):
        fr = RGBDFrame(i, 0.1 * i, src.color, src.depth, K)
        res = tr.estimate(TrackingInput(fr, g, motion, pts, nrm, a, w))
        assert res.ok, res.message
        motion = res.motion
    # keyframes at frames 0 (given), 3 and 6; at most 2 kept: the first and the most recent
    assert [kf.index for kf in tr.keyframes] == [0, 6]
    tr.reset()
    assert tr.keyframes == []


def test_first_frame_bootstraps_classically() -> None:
    src, tgt, g, pts, nrm, a, w = _scene(0.0)
    tr = _StubTracker(NeuralTrackerConfig(device="cpu"), (0.0, 0.0), 0.9)
    res = tr.estimate(TrackingInput(src, g, GraphMotion.identity(g.num_nodes), pts, nrm, a, w))
    assert res.ok and "bootstrap" in res.stats["neural"]
    assert len(tr.keyframes) == 1 and tr.calls == 0


def test_fit_score_prefers_the_motion_that_explains_the_depth() -> None:
    src, tgt, g, pts, nrm, a, w = _scene(0.0)
    tr = _StubTracker(NeuralTrackerConfig(device="cpu"), (0.0, 0.0), 0.9)
    inp = TrackingInput(src, g, GraphMotion.identity(g.num_nodes), pts, nrm, a, w)
    ident = GraphMotion.identity(g.num_nodes)
    off = GraphMotion.identity(g.num_nodes)
    off.translations[:, 2] = 0.05  # 5 cm behind the live surface
    n_id, rms_id = tr.fit_score(inp, ident)
    n_off, _ = tr.fit_score(inp, off)
    assert n_id > 0.9 * min(len(pts), tr.config.fit_samples) and rms_id < 1e-3
    assert n_off == 0
