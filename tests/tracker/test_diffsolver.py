"""Omega, the differentiable Gauss-Newton solver: gradients through the solve (gradcheck, float64), recovery
of a known motion, node / cluster filtering, correspondence sampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.camera import Intrinsics
from fusion.graph import DeformationGraph, build_graph, graph_edges_for, skinning
from tracker.diffsolver import DiffSolverConfig, node_filter, sample_correspondences, solve_motion
from tracker.energy import warp_parts
from tracker.so3 import exp_so3_t

K = Intrinsics(200.0, 200.0, 80.0, 60.0, 160, 120)
D = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded machine two OpenMP threads can be many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _surface(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-0.2, 0.2, (n, 2))
    return np.c_[xy, 1.0 + 0.5 * xy[:, 0] ** 2].astype(np.float32)


def _project(p: torch.Tensor) -> torch.Tensor:
    return torch.stack([K.fx * p[:, 0] / p[:, 2] + K.cx, K.fy * p[:, 1] / p[:, 2] + K.cy], 1)


def _problem(radius: float, n_pts: int, seed: int = 0):
    pts = _surface(n_pts, seed)
    g = build_graph(pts, radius=radius, k=4)
    a, w = skinning(pts, g)
    keep = a[:, 0] >= 0
    return (torch.tensor(pts[keep], dtype=D), torch.tensor(a[keep]).long(), torch.tensor(w[keep], dtype=D),
            torch.tensor(g.nodes, dtype=D), torch.tensor(g.edges).long(), g)


def _true_motion(nodes: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth non-rigid motion: a global rotation + translation plus a bend that grows with x."""
    rng = np.random.default_rng(seed)
    rg = exp_so3_t(torch.tensor(rng.normal(0, 0.1, 3), dtype=D))
    tg = torch.tensor([0.04, -0.03, 0.05], dtype=D)
    n = nodes.shape[0]
    bend = exp_so3_t(torch.stack([torch.zeros(n, dtype=D), 0.6 * nodes[:, 0], torch.zeros(n, dtype=D)], 1))
    r = rg @ bend
    bent = torch.einsum("nij,nj->ni", bend, nodes - nodes.mean(0)) + nodes.mean(0)
    t = bent @ rg.T + tg - nodes
    return r, t


def test_recovers_known_motion() -> None:
    p, a, w, nodes, edges, _ = _problem(0.08, 600)
    r_true, t_true = _true_motion(nodes)
    target = warp_parts(p, a, w, nodes, r_true, t_true).warped
    conf = torch.ones(len(p), dtype=D)
    res = solve_motion(p, a, w, nodes, edges, _project(target), target[:, 2], conf, K,
                       DiffSolverConfig(iterations=5, lambda_arap=1e-3))
    assert res.ok and bool(res.node_mask.all())
    warped = warp_parts(p, a, w, nodes, res.rotations, res.translations).warped
    err = (warped - target).norm(dim=1)
    assert float(err.mean()) < 2e-4  # < 0.2 mm from ~7 cm of motion
    assert float((res.translations - t_true).norm(dim=1).max()) < 5e-3
    # energies fall monotonically to ~0
    assert res.energies[-1] < 1e-6 * res.energies[0]


def test_three_iterations_default_and_weights_matter() -> None:
    """With the NNRT weights and 3 iterations a motion is mostly recovered; zero confidence on half the points
    changes nothing when those points agree, and outliers with confidence 0 are ignored."""
    p, a, w, nodes, edges, _ = _problem(0.08, 600)
    r_true, t_true = _true_motion(nodes)
    target = warp_parts(p, a, w, nodes, r_true, t_true).warped
    uv, z = _project(target), target[:, 2].clone()
    conf = torch.ones(len(p), dtype=D)
    bad = torch.arange(len(p)) % 5 == 0
    uv_out = uv.clone()
    uv_out[bad] += 40.0  # gross outliers ...
    conf_out = torch.where(bad, torch.zeros_like(conf), conf)  # ... with zero weight
    ra = solve_motion(p, a, w, nodes, edges, uv, z, conf, K)
    rb = solve_motion(p, a, w, nodes, edges, uv_out, z, conf_out, K)
    assert DiffSolverConfig().iterations == 3
    for res in (ra, rb):
        warped = warp_parts(p, a, w, nodes, res.rotations, res.translations).warped
        assert float((warped - target).norm(dim=1).mean()) < 0.01
    rc = solve_motion(p, a, w, nodes, edges, uv_out, z, conf, K)  # outliers with full weight hurt
    wc = warp_parts(p, a, w, nodes, rc.rotations, rc.translations).warped
    wb = warp_parts(p, a, w, nodes, rb.rotations, rb.translations).warped
    assert float((wc - target).norm(dim=1).mean()) > 2 * float((wb - target).norm(dim=1).mean())


def test_gradcheck_through_solve() -> None:
    """torch.autograd.gradcheck of the solved translations w.r.t. target pixels, depths and confidences."""
    p, a, w, nodes, edges, g = _problem(0.16, 60, seed=3)
    assert 3 <= g.num_nodes <= 8
    r_true, t_true = _true_motion(nodes)
    target = warp_parts(p, a, w, nodes, r_true, t_true).warped.detach()
    uv0 = (_project(target) + 0.3 * torch.randn(len(p), 2, dtype=D)).detach()
    z0 = target[:, 2].detach()
    c0 = torch.rand(len(p), dtype=D) * 0.5 + 0.5
    cfg = DiffSolverConfig(iterations=2)

    def f(uv, z, c):
        res = solve_motion(p, a, w, nodes, edges, uv, z, c, K, cfg)
        return res.translations, res.rotations

    assert torch.autograd.gradcheck(f, (uv0.clone().requires_grad_(), z0.clone().requires_grad_(),
                                        c0.clone().requires_grad_()), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_node_filter_removes_unsupported_clusters() -> None:
    nodes = np.array([[0, 0, 1], [0.05, 0, 1], [0.1, 0, 1], [1, 0, 1], [1.05, 0, 1]], np.float32)
    edges = graph_edges_for(nodes, 2, max_distance=0.2)
    # 10 correspondences on nodes 0 and 1, one on node 3 (a cluster {3, 4} with too little support)
    anchors = np.array([[0, 1, -1, -1]] * 10 + [[3, -1, -1, -1]], np.int32)
    conf = np.ones(len(anchors))
    keep = node_filter(anchors, conf, edges, 5, DiffSolverConfig(min_node_correspondences=3, min_cluster_nodes=2))
    assert keep.tolist() == [True, True, True, False, False]  # node 2 stays: its cluster is supported
    keep0 = node_filter(anchors, np.zeros(len(anchors)), edges, 5)
    assert not keep0.any()


def test_solve_with_filtered_cluster_keeps_initial_motion() -> None:
    p, a, w, nodes, edges, g = _problem(0.08, 400)
    all_nodes = np.r_[g.nodes, [[3.0, 3.0, 3.0], [3.05, 3.0, 3.0]]].astype(np.float32)
    far = DeformationGraph(all_nodes, graph_edges_for(all_nodes, 4, 0.25), g.radius)
    nodes2 = torch.tensor(far.nodes, dtype=D)
    edges2 = torch.tensor(far.edges).long()
    r_true, t_true = _true_motion(nodes)
    target = warp_parts(p, a, w, nodes, r_true, t_true).warped
    res = solve_motion(p, a, w, nodes2, edges2, _project(target), target[:, 2], torch.ones(len(p), dtype=D), K)
    assert res.ok
    assert res.node_mask[:-2].all() and not res.node_mask[-2:].any()
    assert torch.equal(res.translations[-2:], torch.zeros(2, 3, dtype=D))


def test_sample_correspondences() -> None:
    h, w = 10, 12
    depth = torch.full((h, w), 2.0, dtype=D)
    depth[:, 8:] = 0.0
    flow = torch.zeros(2, h, w, dtype=D)
    flow[0] = 3.0
    uv = torch.tensor([[1, 1], [4, 2], [6, 3], [0, 9]])
    tuv, tz, valid = sample_correspondences(flow, depth, uv)
    assert torch.allclose(tuv, uv.to(D) + torch.tensor([3.0, 0.0], dtype=D))
    assert valid.tolist() == [True, True, False, True]  # (9, 3) lands on invalid depth
    assert torch.allclose(tz[valid], torch.full((3,), 2.0, dtype=D))
