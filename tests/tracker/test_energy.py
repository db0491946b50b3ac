"""Energy terms: analytic Jacobians against central finite differences (and autograd), residual values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.camera import Intrinsics
from fusion.graph import build_graph, skinning
from tracker.energy import (arap_term, dense_jacobian_t, depth_term, intensity_image_t, photometric_term,
                            point_to_plane_term, point_to_point_term, reprojection_term, sample_bilinear_t,
                            total_energy, warp_parts)
from tracker.so3 import exp_so3, exp_so3_t, hat, hat_t
from tracker.solver import apply_increment_t

K = Intrinsics(300.0, 310.0, 80.0, 60.0, 160, 120)


@pytest.fixture
def problem(rng):
    """A small wavy sheet 1 m in front of the camera, a graph, a random motion, random targets."""
    pts = rng.uniform(-0.15, 0.15, size=(400, 3))
    pts[:, 2] = 1.0 + 0.03 * np.sin(10 * pts[:, 0])
    g = build_graph(pts.astype(np.float32), radius=0.06)
    a, w = skinning(pts.astype(np.float32), g)
    a[:3, 1:] = -1  # some points with a single anchor
    w[:3] = np.array([1, 0, 0, 0])
    n = g.num_nodes
    d = torch.float64
    rot = exp_so3_t(torch.from_numpy(rng.normal(scale=0.2, size=(n, 3))))
    tr = torch.from_numpy(rng.normal(scale=0.02, size=(n, 3)))
    tgt = torch.from_numpy(pts + rng.normal(scale=0.02, size=pts.shape))
    nrm = torch.from_numpy(rng.normal(size=pts.shape))
    nrm = nrm / nrm.norm(dim=1, keepdim=True)
    conf = torch.from_numpy(rng.uniform(0.2, 1.0, size=len(pts)))
    return dict(pts=torch.from_numpy(pts).to(d), anchors=torch.from_numpy(a), weights=torch.from_numpy(w).to(d),
                nodes=torch.from_numpy(g.nodes).to(d), rot=rot, tr=tr, tgt=tgt, nrm=nrm, conf=conf,
                edges=torch.from_numpy(g.edges), ew=torch.from_numpy(g.edge_weights).to(d), n=n)


def _terms(p):
    def parts(r, t):
        return warp_parts(p["pts"], p["anchors"], p["weights"], p["nodes"], r, t)

    uv = torch.stack([K.fx * p["tgt"][:, 0] / p["tgt"][:, 2] + K.cx, K.fy * p["tgt"][:, 1] / p["tgt"][:, 2] + K.cy], -1)
    vv, uu = torch.meshgrid(torch.arange(K.height, dtype=torch.float64), torch.arange(K.width, dtype=torch.float64),
                            indexing="ij")
    image = 0.5 + 0.3 * torch.sin(uu / 7.0) * torch.cos(vv / 5.0) + 0.1 * torch.sin((uu + vv) / 3.0)
    model_i = torch.linspace(0.2, 0.8, p["pts"].shape[0], dtype=torch.float64)
    return {
        "photo": lambda r, t, j: photometric_term(parts(r, t), image, model_i, K, p["conf"], 0.01, j),
        "icp": lambda r, t, j: point_to_plane_term(parts(r, t), p["tgt"], p["nrm"], p["conf"], 2.0, j),
        "p2p": lambda r, t, j: point_to_point_term(parts(r, t), p["tgt"], p["conf"], 0.5, j),
        "depth": lambda r, t, j: depth_term(parts(r, t), p["tgt"][:, 2], p["conf"], 1.0, j),
        "reproj": lambda r, t, j: reprojection_term(parts(r, t), uv, K, p["conf"], 0.001, j),
        "arap": lambda r, t, j: arap_term(p["nodes"], r, t, p["edges"], p["ew"], 1.0, j),
    }


@pytest.mark.parametrize("name", ["icp", "p2p", "depth", "reproj", "photo", "arap"])
def test_jacobian_matches_finite_differences(problem, name):
    fn = _terms(problem)[name]
    r0, t0, n = problem["rot"], problem["tr"], problem["n"]
    block = fn(r0, t0, True)
    jd = dense_jacobian_t(block, n).numpy()
    assert np.abs(jd).max() > 0
    eps = 1e-6
    rng = np.random.default_rng(0)
    # check every column of a random subset of nodes, all 6 parameters
    for node in rng.choice(n, size=min(n, 6), replace=False):
        for q in range(6):
            delta = torch.zeros(n, 6, dtype=torch.float64)
            delta[node, q] = eps
            rp, tp = apply_increment_t(r0, t0, delta)
            rm, tm = apply_increment_t(r0, t0, -delta)
            fd = (fn(rp, tp, False).r - fn(rm, tm, False).r).numpy() / (2 * eps)
            np.testing.assert_allclose(jd[:, 6 * node + q], fd, atol=1e-6 * max(1.0, np.abs(fd).max()),
                                       err_msg=f"{name} node {node} param {q}")


@pytest.mark.parametrize("name", ["icp", "reproj", "photo", "arap"])
def test_jacobian_matches_autograd(problem, name):
    fn = _terms(problem)[name]
    r0, t0, n = problem["rot"], problem["tr"], problem["n"]
    jd = dense_jacobian_t(fn(r0, t0, True), n)

    def res(delta):
        r, t = apply_increment_t(r0, t0, delta.reshape(n, 6))
        return fn(r, t, False).r

    ja = torch.autograd.functional.jacobian(res, torch.zeros(n * 6, dtype=torch.float64))
    np.testing.assert_allclose(jd.numpy(), ja.numpy(), atol=1e-9)


def test_residual_values(problem):
    p = problem
    parts = warp_parts(p["pts"], p["anchors"], p["weights"], p["nodes"], p["rot"], p["tr"])
    icp = point_to_plane_term(parts, p["tgt"], p["nrm"], p["conf"], lam=4.0, jacobian=False)
    expect = 2.0 * p["conf"] * ((parts.warped - p["tgt"]) * p["nrm"]).sum(1)
    np.testing.assert_allclose(icp.r.numpy(), expect.numpy(), atol=1e-12)
    # the warp is the fusion warp
    from fusion.warp import warp_points_np

    np.testing.assert_allclose(parts.warped.numpy(),
                               warp_points_np(p["pts"].numpy(), p["anchors"].numpy(), p["weights"].numpy(),
                                              p["nodes"].numpy(), p["rot"].numpy(), p["tr"].numpy()), atol=1e-5)
    # ARAP is zero for a rigid motion of the whole graph
    from scipy.spatial.transform import Rotation

    r = torch.from_numpy(Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix())
    t = torch.tensor([0.1, 0.2, -0.3], dtype=torch.float64)
    nodes = p["nodes"]
    rot = r.expand(p["n"], 3, 3)
    tr = nodes @ r.T + t - nodes
    arap = arap_term(nodes, rot, tr, p["edges"], None, 1.0, jacobian=False)
    assert float(arap.r.abs().max()) < 1e-12 and arap.num_rows == 3 * int((p["edges"] >= 0).sum())
    # reprojection of exact targets is zero at identity
    eye = torch.eye(3, dtype=torch.float64).expand(p["n"], 3, 3)
    z = torch.zeros(p["n"], 3, dtype=torch.float64)
    parts0 = warp_parts(p["pts"], p["anchors"], p["weights"], nodes, eye, z)
    uv = torch.stack([K.fx * p["pts"][:, 0] / p["pts"][:, 2] + K.cx, K.fy * p["pts"][:, 1] / p["pts"][:, 2] + K.cy], -1)
    assert float(reprojection_term(parts0, uv, K, None, 1.0, False).r.abs().max()) < 1e-9
    assert float(total_energy([arap, icp])) == pytest.approx(float((icp.r**2).sum()), rel=1e-9)


def test_so3_numpy_and_torch_agree(rng):
    w = rng.normal(size=(50, 3))
    w[0] = 0
    w[1] = 1e-7
    r = exp_so3(w)
    np.testing.assert_allclose(exp_so3_t(torch.from_numpy(w)).numpy(), r, atol=1e-12)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(hat_t(torch.from_numpy(w)).numpy(), hat(w))
    from scipy.spatial.transform import Rotation

    np.testing.assert_allclose(r, Rotation.from_rotvec(w).as_matrix(), atol=1e-12)
    # gradient at 0 is finite
    z = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    exp_so3_t(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_bilinear_sampling_and_intensity():
    img = torch.arange(12, dtype=torch.float64).reshape(3, 4)  # value = 4 v + u
    uv = torch.tensor([[0.0, 0.0], [1.5, 0.5], [2.25, 1.75], [3.0, 2.0], [-0.1, 0.0], [1.0, 2.5]], dtype=torch.float64)
    val, duv, inside = sample_bilinear_t(img, uv)
    assert inside.tolist() == [True, True, True, False, False, False]  # the last row / column have no 2x2 cell
    np.testing.assert_allclose(val[:3].numpy(), [0.0, 3.5, 9.25])
    np.testing.assert_allclose(duv[:3].numpy(), [[1, 4]] * 3)
    assert (val[3:] == 0).all()
    color = torch.zeros(5, 5, 3, dtype=torch.uint8)
    color[..., 1] = 255
    gray = intensity_image_t(color, 1.0)
    np.testing.assert_allclose(gray.numpy(), 0.587, atol=1e-6)  # blur keeps a constant image constant


def test_arap_relative_to_a_previous_motion():
    """ArapEdges.with_rest: identity previous motion = canonical ARAP; any motion followed by a rigid change
    has zero residual relative to it (but not relative to the canonical graph)."""
    from fusion.graph import build_graph
    from tracker.energy import ArapEdges, arap_term_edges
    from tracker.so3 import exp_so3

    rng = np.random.default_rng(3)
    pts = rng.normal(size=(400, 3)) * [0.3, 0.2, 0.05] + [0, 0, 1]
    g = build_graph(pts.astype(np.float32), radius=0.08)
    n = g.num_nodes
    nodes = torch.from_numpy(g.nodes.astype(np.float64))
    ed = ArapEdges.build(nodes, torch.from_numpy(g.edges.astype(np.int64)))
    r_prev = torch.from_numpy(exp_so3(rng.normal(scale=0.2, size=(n, 3))))
    t_prev = torch.from_numpy(rng.normal(scale=0.02, size=(n, 3)))
    same = ed.with_rest(torch.eye(3, dtype=torch.float64).repeat(n, 1, 1), torch.zeros(n, 3, dtype=torch.float64))
    assert torch.allclose(arap_term_edges(same, r_prev, t_prev, 1.0, False).r, arap_term_edges(ed, r_prev, t_prev, 1.0, False).r)
    # a rigid change (Q, s) applied after the previous motion: x -> Q x + s for every deformed node
    q = torch.from_numpy(exp_so3(np.array([[0.1, -0.3, 0.2]]))[0])
    s = torch.tensor([0.05, -0.02, 0.1], dtype=torch.float64)
    r_new = q @ r_prev
    t_new = (nodes + t_prev) @ q.T + s - nodes
    rel = ed.with_rest(r_prev, t_prev)
    assert arap_term_edges(rel, r_new, t_new, 1.0, False).r.abs().max() < 1e-10
    assert arap_term_edges(ed, r_new, t_new, 1.0, False).r.abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_warp_parts_numba_path_matches_torch(problem, dtype):
    """The numba kernel that warp_parts uses for CPU tensors without gradients gives the torch code's parts
    (points with no anchor at all included: they stay where they are, normal unchanged); in float64 bit for bit."""
    p = problem
    anchors = p["anchors"].clone()
    anchors[5] = -1  # no anchor at all
    args = [p["pts"].to(dtype), anchors, p["weights"].to(dtype), p["nodes"].to(dtype), p["rot"].to(dtype),
            p["tr"].to(dtype)]
    nrm = p["nrm"].to(dtype)
    fast = warp_parts(*args, normals=nrm)
    rg = args[4].clone().requires_grad_(True)  # a tensor needing a gradient takes the torch code
    ref = warp_parts(*args[:4], rg, args[5], normals=nrm)
    tol = 0.0 if dtype == torch.float64 else 1e-5  # the same float64 operations in the same order
    for name in ("warped", "rotated", "w", "normals"):
        a, b = getattr(fast, name), getattr(ref, name).detach()
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.allclose(a, b, atol=tol, rtol=0), f"{name}: {(a - b).abs().max()}"
    assert torch.equal(fast.idx, ref.idx) and torch.equal(fast.valid, ref.valid)
    assert not fast.valid[5] and torch.equal(fast.warped[5], args[0][5]) and torch.allclose(fast.normals[5], nrm[5], atol=tol)
    # out-of-range anchors still raise (the torch code's IndexError), never read past the nodes
    bad = anchors.clone()
    bad[0, 0] = p["nodes"].shape[0]
    with pytest.raises(IndexError):
        warp_parts(args[0], bad, *args[2:])


def test_bilinear_numba_path_matches_torch(rng):
    """sample_bilinear_t's numba kernel (float64 CPU, no gradient) gives the torch code's values, derivatives
    and inside flags bit for bit, at points inside, on the last row / column, outside and not finite."""
    h, w = 24, 31
    image = torch.from_numpy(rng.random((h, w)))
    uv = np.stack([rng.uniform(-2, w + 1, 500), rng.uniform(-2, h + 1, 500)], 1)
    uv[:4] = [[w - 1, 3.5], [2.25, h - 1], [np.nan, 1.0], [np.inf, 2.0]]
    uv[4:8] = [[0.0, 0.0], [w - 1.000001, h - 1.000001], [5.0, 7.0], [-1e-9, 3.0]]
    uv = torch.from_numpy(uv)
    fast = sample_bilinear_t(image, uv)
    ref = sample_bilinear_t(image, uv.clone().requires_grad_(True))  # a tensor needing a gradient: torch code
    for a, b in zip(fast, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b.detach())
    assert fast[2][:6].tolist() == [False, False, False, False, True, True]


@pytest.mark.parametrize("name", ["icp", "p2p", "depth", "reproj", "photo"])
def test_data_block_numba_path_matches_torch(problem, name):
    """The numba path of the data terms' rows and Jacobians (float64 CPU, no gradient) equals the torch code
    bit for bit (rows, node ids, Jacobians), for every data term."""
    terms = _terms(problem)
    r0, t0 = problem["rot"], problem["tr"]
    fast = terms[name](r0, t0, True)
    ref = terms[name](r0.clone().requires_grad_(True), t0, True)  # a tensor needing a gradient: torch code
    assert torch.equal(fast.r, ref.r.detach())
    assert torch.equal(fast.idx, ref.idx)
    assert fast.jac.shape == ref.jac.shape and torch.equal(fast.jac, ref.jac.detach())
