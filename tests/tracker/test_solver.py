"""Block-sparse normal equations and solvers vs dense references; GN recovers a known graph motion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.graph import build_graph, skinning
from tracker.energy import arap_term, point_to_point_term, point_to_plane_term, warp_parts
from tracker.so3 import exp_so3_t
from tracker.solver import (SolverConfig, assemble_dense_np, assemble_dense_t, build_system, gauss_newton,
                            pcg_block_jacobi, solve_system)


def _surface(rng, n, size=0.4):
    p = rng.uniform(-size / 2, size / 2, size=(n, 3))
    p[:, 2] = 1.0 + 0.05 * np.sin(8 * p[:, 0]) * np.cos(6 * p[:, 1])
    return p.astype(np.float32)


def _blocks(rng, pts, g, rot, tr):
    a, w = skinning(pts, g)
    t64 = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    parts = warp_parts(t64(pts), torch.from_numpy(a), t64(w), t64(g.nodes), rot, tr)
    tgt = parts.warped + t64(rng.normal(scale=0.01, size=pts.shape))
    nrm = t64(rng.normal(size=pts.shape))
    nrm = nrm / nrm.norm(dim=1, keepdim=True)
    return [point_to_plane_term(parts, tgt, nrm, None, 1.0), point_to_point_term(parts, tgt, None, 0.1),
            arap_term(t64(g.nodes), rot, tr, torch.from_numpy(g.edges), t64(g.edge_weights), 1.0)]


def _random_system(rng, n_points):
    """Residual blocks (point-to-plane, point-to-point, ARAP) of a random surface and motion, and the
    number of graph nodes."""
    pts = _surface(rng, n_points)
    g = build_graph(pts, radius=0.07)
    n = g.num_nodes
    rot = exp_so3_t(torch.from_numpy(rng.normal(scale=0.1, size=(n, 3))))
    tr = torch.from_numpy(rng.normal(scale=0.01, size=(n, 3)))
    return _blocks(rng, pts, g, rot, tr), n


def test_block_sparse_equals_dense(rng):
    blocks, n = _random_system(rng, 600)
    h_ref, g_ref = assemble_dense_np(blocks, n)
    sys = build_system(blocks, n)
    np.testing.assert_allclose(sys.to_dense(), h_ref, atol=1e-10)
    np.testing.assert_allclose(sys.g.reshape(-1), g_ref, atol=1e-12)
    np.testing.assert_allclose(sys.to_dense(), sys.to_dense().T, atol=1e-12)
    h_t, g_t = assemble_dense_t(blocks, n)
    np.testing.assert_allclose(h_t.numpy(), h_ref, atol=1e-10)
    np.testing.assert_allclose(g_t.numpy(), g_ref, atol=1e-12)
    mu = 1e-3
    x_ref = np.linalg.solve(h_ref + mu * np.eye(6 * n), -g_ref)
    x_pcg, info = solve_system(sys, mu, "pcg", max_iter=2000, tol=1e-12)
    assert info["ok"]
    np.testing.assert_allclose(x_pcg.reshape(-1), x_ref, rtol=1e-6, atol=1e-8 * np.abs(x_ref).max())
    x_lu, info = solve_system(sys, mu, "direct")
    assert info["ok"]
    np.testing.assert_allclose(x_lu.reshape(-1), x_ref, rtol=1e-8, atol=1e-10 * np.abs(x_ref).max())


def test_block_sparse_assembly_does_not_depend_on_threads(rng, monkeypatch):
    """Split over node ranges on two threads, the normal equations are the one-thread ones bit for bit (and
    the dense reference's), also when the split falls at every possible place (more parts than nodes)."""
    import tracker.solver as solver

    blocks, n = _random_system(rng, 900)
    monkeypatch.setattr(solver, "PARALLEL_MIN_ROWS", 1)
    one = build_system(blocks, n, threads=1)
    two = build_system(blocks, n, threads=2)
    assert np.array_equal(one.blocks, two.blocks) and np.array_equal(one.g, two.g) and one.energy == two.energy
    h_ref, g_ref = assemble_dense_np(blocks, n)
    np.testing.assert_allclose(two.to_dense(), h_ref, atol=1e-10)
    idx = blocks[0].idx.numpy().astype(np.int64)
    for parts in (1, 2, 3, n + 5):
        b = solver._node_bounds(idx, n, parts)
        assert b[0] == 0 and b[-1] == n and np.all(np.diff(b) > 0) and len(b) <= parts + 1
        hb = np.zeros_like(one.blocks)
        gg = np.zeros_like(one.g)
        for blk in blocks:  # accumulate group by group as build_system does, over these bounds
            r = blk.r.numpy()[:, None].astype(np.float64)
            jac = blk.jac.numpy()[:, None].astype(np.float64)
            solver._accumulate_parts(np.ascontiguousarray(r), blk.idx.numpy().astype(np.int64),
                                     np.ascontiguousarray(jac), one.indptr, one.indices, hb, gg,
                                     solver._node_bounds(blk.idx.numpy().astype(np.int64), n, parts))
        solver._mirror(one.indptr, one.indices, hb)
        assert np.array_equal(hb, one.blocks) and np.array_equal(gg, one.g)


def test_1500_node_system_solves(rng):
    pts = _surface(rng, 40000, size=1.6)
    g = build_graph(pts, radius=0.022)
    n = g.num_nodes
    assert n >= 1500
    rot = exp_so3_t(torch.zeros(n, 3, dtype=torch.float64))
    tr = torch.zeros(n, 3, dtype=torch.float64)
    blocks = _blocks(rng, pts[::4], g, rot, tr)
    sys = build_system(blocks, n)
    mu = 1e-4
    x, info = pcg_block_jacobi(sys, -sys.g, mu, max_iter=500, tol=1e-8)
    assert info["ok"], info
    # residual of the linear system, checked with scipy's sparse matrix
    a = sys.to_scipy(mu)
    res = a @ x.reshape(-1) + sys.g.reshape(-1)
    assert np.linalg.norm(res) < 1e-6 * np.linalg.norm(sys.g)


@pytest.mark.parametrize("solver", ["pcg", "direct", "dense"])
def test_gauss_newton_recovers_known_motion(rng, solver):
    """Exact point-to-point correspondences from a known smooth graph motion -> near-exact recovery."""
    pts = _surface(rng, 1500, size=0.5)
    g = build_graph(pts, radius=0.08)
    n = g.num_nodes
    a, w = skinning(pts, g)
    t64 = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    # ground truth: a bend (rotation angle varies smoothly with x) + a global shift
    ang = 0.6 * g.nodes[:, 0].astype(np.float64)
    rotvec = np.stack([np.zeros(n), ang, 0.2 * ang], 1)
    r_gt = exp_so3_t(t64(rotvec))
    t_gt = t64(np.stack([0.02 * np.ones(n), -0.01 + 0.05 * g.nodes[:, 0] ** 2, 0.03 * g.nodes[:, 0]], 1))
    p, an, wt, nodes = t64(pts), torch.from_numpy(a), t64(w), t64(g.nodes)
    target = warp_parts(p, an, wt, nodes, r_gt, t_gt).warped

    def residuals(r, t, jac):
        parts = warp_parts(p, an, wt, nodes, r, t)
        return [point_to_point_term(parts, target, None, 1.0, jac),
                arap_term(nodes, r, t, torch.from_numpy(g.edges), None, 1e-6, jac)]

    r0 = torch.eye(3, dtype=torch.float64).expand(n, 3, 3).clone()
    t0 = torch.zeros(n, 3, dtype=torch.float64)
    res = gauss_newton(residuals, r0, t0, SolverConfig(iterations=10, linear_solver=solver, damping=1e-6,
                                                       pcg_iterations=2000, pcg_tol=1e-10))
    assert res.ok, res.message
    assert res.energies[-1] < 1e-6 * res.energies[0]  # the floor is the (tiny) ARAP energy of the true bend
    moved = warp_parts(p, an, wt, nodes, res.rotations, res.translations).warped
    assert float((moved - target).norm(dim=1).max()) < 1e-5  # metres
    np.testing.assert_allclose(res.translations.numpy(), t_gt.numpy(), atol=1e-3)


def test_dense_solver_is_differentiable():
    """Gradients flow from the solved motion back to the correspondence confidences (neural tracker)."""
    rng = np.random.default_rng(3)
    pts = _surface(rng, 200, size=0.3)
    g = build_graph(pts, radius=0.1)
    n = g.num_nodes
    a, w = skinning(pts, g)
    t64 = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    p, an, wt, nodes = t64(pts), torch.from_numpy(a), t64(w), t64(g.nodes)
    target = p + t64([0.01, 0.0, 0.02])
    target[:20] += 0.05  # outliers
    conf = torch.full((len(pts),), 0.5, dtype=torch.float64, requires_grad=True)

    def residuals(r, t, jac):
        parts = warp_parts(p, an, wt, nodes, r, t)
        return [point_to_point_term(parts, target, conf, 1.0, jac),
                arap_term(nodes, r, t, torch.from_numpy(g.edges), None, 1.0, jac)]

    r0 = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    t0 = torch.zeros(n, 3, dtype=torch.float64)
    res = gauss_newton(residuals, r0, t0, SolverConfig(iterations=3, linear_solver="dense", adaptive=False,
                                                       damping=1e-4))
    moved = warp_parts(p, an, wt, nodes, res.rotations, res.translations).warped
    loss = ((moved - (p + t64([0.01, 0.0, 0.02]))) ** 2).sum()
    loss.backward()
    assert conf.grad is not None and torch.isfinite(conf.grad).all()
    # lowering the confidence of the outliers must lower the loss: their gradient is positive
    assert float(conf.grad[:20].mean()) > 0


def test_singular_system_reports_not_ok():
    """No data and no regulariser on a node: with zero damping the system is singular -> ok=False."""
    n = 3
    nodes = torch.tensor([[0.0, 0, 1], [0.1, 0, 1], [5.0, 5, 5]], dtype=torch.float64)
    edges = torch.tensor([[1], [0], [-1]])

    def residuals(r, t, jac):
        return [arap_term(nodes, r, t, edges, None, 1.0, jac)]

    r0 = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    t0 = torch.zeros(n, 3, dtype=torch.float64)
    t0[0, 0] = 0.01
    for solver in ("pcg", "direct", "dense"):
        res = gauss_newton(residuals, r0, t0, SolverConfig(iterations=2, linear_solver=solver, damping=0.0,
                                                           adaptive=False))
        assert not res.ok and "singular" in res.message
