"""LPDC metrics on hand-computed cases, and the KD-tree versions against brute-force references."""
from __future__ import annotations

import numpy as np
import pytest

from models.lpdc.metrics import (chamfer_l2, chamfer_l2_reference, correspondence_l2, correspondence_l2_reference,
                                 evaluate_sequence, iou_from_occupancy, nn_tracking, nn_tracking_reference)


def test_chamfer_hand_computed():
    a = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    b = np.array([[0.0, 0, 0], [0.0, 2.0, 0]])
    # a->b: 0, 1 -> mean 0.5 ; b->a: 0, 4 -> mean 2.0 ; sum 2.5
    assert chamfer_l2(a, b) == pytest.approx(2.5)
    assert chamfer_l2_reference(a, b) == pytest.approx(2.5)
    assert chamfer_l2(a, a) == 0.0


def test_correspondence_l2_hand_computed():
    # ground-truth tracks: 3 samples over 2 frames; sample j moves by (j, 0, 0)
    gt = np.array([[[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0]],
                   [[0.0, 0, 0], [2.0, 0, 0], [4.0, 0, 0]]])
    # predicted t0 vertices near samples 0 and 2; predictions at frame 1 off by 0.5 and 1.0
    pred = np.array([[[0.1, 0, 0], [2.0, 0.2, 0]],
                     [[0.5, 0, 0], [4.0, 1.0, 0]]])
    mean, per = correspondence_l2(pred, gt)
    assert per[0] == pytest.approx((0.1 + 0.2) / 2)
    assert per[1] == pytest.approx((0.5 + 1.0) / 2)
    assert mean == pytest.approx((0.15 + 0.75) / 2)
    mean_r, per_r = correspondence_l2_reference(pred, gt)
    assert mean_r == pytest.approx(mean) and np.allclose(per_r, per)


def test_iou_hand_computed():
    a = np.array([1, 1, 0, 0, 1], dtype=bool)
    b = np.array([1, 0, 0, 1, 1], dtype=bool)
    assert iou_from_occupancy(a, b) == pytest.approx(2 / 4)
    assert iou_from_occupancy(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_nn_tracking_hand_computed_and_reference(rng):
    start = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    clouds = np.array([[[9.0, 9, 9]] * 3,
                       [[0.4, 0, 0], [0.7, 0, 0], [5.0, 0, 0]],
                       [[1.0, 0, 0], [0.0, 0.5, 0], [3.0, 0, 0]]])
    direct = nn_tracking(start, clouds)
    assert np.allclose(direct[0], start)
    assert np.allclose(direct[1], [[0.4, 0, 0], [0.7, 0, 0]])
    assert np.allclose(direct[2], [[0.0, 0.5, 0], [1.0, 0, 0]])
    chained = nn_tracking(start, clouds, chained=True)
    # from (0.4,0,0): (1,0,0) at 0.6 beats (0,0.5,0) at 0.64; from (0.7,0,0): (1,0,0)
    assert np.allclose(chained[2], [[1.0, 0, 0], [1.0, 0, 0]])
    s = rng.normal(size=(50, 3))
    c = rng.normal(size=(4, 30, 3))
    for ch in (False, True):
        assert np.allclose(nn_tracking(s, c, ch), nn_tracking_reference(s, c, ch))


def test_chamfer_and_correspondence_kdtree_match_reference(rng):
    a, b = rng.normal(size=(200, 3)), rng.normal(size=(150, 3))
    assert chamfer_l2(a, b) == pytest.approx(chamfer_l2_reference(a, b))
    gt = rng.normal(size=(5, 300, 3))
    pred = rng.normal(size=(5, 40, 3))
    assert correspondence_l2(pred, gt)[0] == pytest.approx(correspondence_l2_reference(pred, gt)[0])


def _cube(center, half):
    import trimesh

    m = trimesh.creation.box(extents=[2 * half] * 3)
    return np.asarray(m.vertices) + center, np.asarray(m.faces, dtype=np.int64)


def test_evaluate_sequence_perfect_and_shifted(rng):
    v, f = _cube(np.zeros(3), 0.2)
    gt = np.stack([v, v + [0.1, 0, 0]])
    perfect = evaluate_sequence(gt, f, gt, f, True, rng, 4000, 4000, 20000)
    assert perfect["correspondence_l2"] < 0.02 and perfect["chamfer"] < 1e-3 and perfect["iou"] > 0.97
    # prediction that does not move: frame 1 off by 0.1 everywhere; IoU of two 0.4-cubes shifted by 0.1 = 0.3/0.5
    static = evaluate_sequence(np.stack([v, v]), f, gt, f, True, rng, 4000, 4000, 40000)
    assert static["per_frame"]["correspondence_l2"][1] == pytest.approx(0.1, abs=0.01)
    assert static["per_frame"]["iou"][1] == pytest.approx(0.3 / 0.5, abs=0.03)
