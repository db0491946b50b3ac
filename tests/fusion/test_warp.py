"""Warp of points and normals: numba and torch against the numpy reference (NNRT eq. 2)."""
from __future__ import annotations

import numba as nb
import numpy as np
import pytest
import torch

from fusion.graph import GraphMotion, build_graph, skinning
from fusion.warp import (warp_normals, warp_normals_np, warp_normals_t, warp_point_nb, warp_points, warp_points_np,
                         warp_points_t)


def _rot(rng: np.random.Generator, n: int, scale: float = 0.5) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(rng.normal(scale=scale, size=(n, 3))).as_matrix().astype(np.float32)


@pytest.fixture
def scene(rng):
    pts = rng.uniform(-0.2, 0.2, size=(3000, 3)).astype(np.float32)
    pts[:, 2] = 0.05 * np.sin(8 * pts[:, 0])  # a wavy sheet
    g = build_graph(pts, radius=0.05)
    anchors, weights = skinning(pts, g)
    rot = _rot(rng, g.num_nodes)
    tr = rng.normal(scale=0.02, size=(g.num_nodes, 3)).astype(np.float32)
    normals = rng.normal(size=pts.shape).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    # a few points with no anchors and one with partial anchors
    anchors[:5] = -1
    weights[:5] = 0
    return pts, normals, anchors, weights, g, rot, tr


def test_reference_matches_formula_for_one_point(rng):
    nodes = rng.normal(size=(3, 3)).astype(np.float32)
    rot = _rot(rng, 3)
    tr = rng.normal(size=(3, 3)).astype(np.float32)
    p = rng.normal(size=(1, 3)).astype(np.float32)
    a = np.array([[2, 0, -1, -1]], np.int32)
    w = np.array([[0.3, 0.7, 0.0, 0.0]], np.float32)
    expect = sum(wk * (rot[k] @ (p[0] - nodes[k]) + nodes[k] + tr[k]) for k, wk in ((2, 0.3), (0, 0.7)))
    np.testing.assert_allclose(warp_points_np(p, a, w, nodes, rot, tr)[0], expect, atol=1e-5)


def test_identity_motion_is_identity(scene):
    pts, normals, anchors, weights, g, _, _ = scene
    m = GraphMotion.identity(g.num_nodes)
    np.testing.assert_allclose(warp_points(pts, anchors, weights, g.nodes, m.rotations, m.translations), pts, atol=1e-6)
    np.testing.assert_allclose(warp_normals(normals, anchors, weights, m.rotations), normals, atol=1e-6)


def test_rigid_motion_is_rigid(scene, rng):
    pts, normals, anchors, weights, g, _, _ = scene
    r = _rot(rng, 1)[0]
    t = np.array([0.1, -0.2, 0.3], np.float32)
    rot = np.tile(r, (g.num_nodes, 1, 1))
    tr = (g.nodes @ r.T + t - g.nodes).astype(np.float32)  # R(p-g)+g+t_k = R p + t
    out = warp_points(pts, anchors, weights, g.nodes, rot, tr)
    valid = anchors[:, 0] >= 0
    np.testing.assert_allclose(out[valid], pts[valid] @ r.T + t, atol=1e-5)
    np.testing.assert_allclose(out[~valid], pts[~valid])
    np.testing.assert_allclose(warp_normals(normals, anchors, weights, rot)[valid], normals[valid] @ r.T, atol=1e-5)


def test_numba_matches_numpy(scene):
    pts, normals, anchors, weights, g, rot, tr = scene
    ref = warp_points_np(pts, anchors, weights, g.nodes, rot, tr)
    np.testing.assert_allclose(warp_points(pts, anchors, weights, g.nodes, rot, tr), ref, atol=1e-5)
    nref = warp_normals_np(normals, anchors, weights, rot)
    np.testing.assert_allclose(warp_normals(normals, anchors, weights, rot), nref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(nref, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(ref[:5], pts[:5])  # no anchors -> unchanged


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_numpy_and_is_differentiable(scene, dtype):
    pts, normals, anchors, weights, g, rot, tr = scene
    ref = warp_points_np(pts, anchors, weights, g.nodes, rot, tr)
    t = lambda a: torch.from_numpy(np.asarray(a)).to(dtype)  # noqa: E731
    rot_t = t(rot).requires_grad_(True)
    tr_t = t(tr).requires_grad_(True)
    out = warp_points_t(t(pts), torch.from_numpy(anchors), t(weights), t(g.nodes), rot_t, tr_t)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.detach().numpy(), ref, atol=1e-5)
    out.sum().backward()
    # d(sum W)/dt_n = sum of the weights of the points anchored to node n
    expect = np.zeros(g.num_nodes)
    valid = anchors >= 0
    np.add.at(expect, anchors[valid], weights[valid])
    np.testing.assert_allclose(tr_t.grad.numpy(), np.repeat(expect[:, None], 3, 1), rtol=1e-4, atol=1e-4)
    nout = warp_normals_t(t(normals), torch.from_numpy(anchors), t(weights), t(rot))
    np.testing.assert_allclose(nout.numpy(), warp_normals_np(normals, anchors, weights, rot), atol=1e-5)


@nb.njit(cache=True)
def _use_helper(points, anchors, weights, nodes, rotations, translations):  # pragma: no cover - numba
    out = np.empty_like(points)
    for i in range(points.shape[0]):
        x, y, z = warp_point_nb(points[i, 0], points[i, 1], points[i, 2], anchors[i], weights[i], nodes, rotations,
                                translations)
        out[i, 0] = x
        out[i, 1] = y
        out[i, 2] = z
    return out


def test_per_point_helper_inside_another_kernel(scene):
    pts, _, anchors, weights, g, rot, tr = scene
    out = _use_helper(pts, anchors, weights, g.nodes, rot, tr)
    np.testing.assert_allclose(out, warp_points_np(pts, anchors, weights, g.nodes, rot, tr), atol=1e-5)


def test_empty_and_bad_shapes():
    z = np.zeros((0, 3), np.float32)
    out = warp_points(z, np.zeros((0, 4), np.int32), np.zeros((0, 4), np.float32), np.zeros((1, 3), np.float32),
                      np.eye(3, dtype=np.float32)[None], np.zeros((1, 3), np.float32))
    assert out.shape == (0, 3)
    with pytest.raises(ValueError):
        warp_points(np.zeros((2, 3)), np.zeros((2, 4), np.int32), np.zeros((2, 3)), np.zeros((1, 3)),
                    np.eye(3)[None], np.zeros((1, 3)))
    with pytest.raises(ValueError):  # anchor out of range
        warp_points(np.zeros((1, 3)), np.array([[5]]), np.ones((1, 1)), np.zeros((1, 3)), np.eye(3)[None],
                    np.zeros((1, 3)))
