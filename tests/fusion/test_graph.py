"""Deformation graph: coverage, edges, isolated clusters, skinning, node insertion."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from fusion.errors import InputError
from fusion.graph import (DeformationGraph, GraphMotion, build_graph, extend_graph, extend_motion, graph_edges_for,
                          sample_nodes, skinning, uncovered_mask)
from fusion.warp import warp_points_np


def _sheet(rng, n=4000, size=0.4, z=0.0):
    p = rng.uniform(-size / 2, size / 2, size=(n, 3)).astype(np.float32)
    p[:, 2] = z
    return p


def _sphere(rng, n=5000, r=0.25):
    p = rng.normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True) * r).astype(np.float32)


@pytest.mark.parametrize("mode", ["euclidean", "geodesic"])
def test_coverage_spacing_and_edges(rng, mode):
    pts = _sphere(rng)
    g = build_graph(pts, None, radius=0.05, k=8, edge_mode=mode)
    assert g.nodes.dtype == np.float32 and g.edges.dtype == np.int32 and g.edges.shape == (g.num_nodes, 8)
    d, _ = cKDTree(g.nodes).query(pts)
    assert d.max() <= 0.05 + 1e-6  # every surface point within the coverage radius
    dn, _ = cKDTree(g.nodes).query(g.nodes, k=2)
    assert dn[:, 1].min() > 0.05  # Poisson disk: nodes farther apart than the radius
    # a closed surface at this density: (nearly) every node has its K = 8 neighbours, no self loops, all close
    count = (g.edges >= 0).sum(1)
    assert count.min() >= 6 and (count == 8).mean() > 0.95
    assert not (g.edges == np.arange(g.num_nodes)[:, None]).any()
    lengths = np.linalg.norm(g.nodes[g.edges] - g.nodes[:, None], axis=-1)[g.edges >= 0]
    assert lengths.max() <= 3 * 0.05 + 1e-6
    assert g.edge_weights is not None and g.edge_weights.shape == g.edges.shape
    assert (g.edge_weights[g.edges >= 0] > 0).all() and (g.edge_weights <= 1).all()
    assert (g.edge_weights[g.edges < 0] == 0).all()


def test_euclidean_edges_are_the_k_nearest(rng):
    nodes = rng.uniform(size=(60, 3)).astype(np.float32)
    e = graph_edges_for(nodes, 8)
    d = np.linalg.norm(nodes[:, None] - nodes[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(e, np.argsort(d, axis=1)[:, :8])
    e2 = graph_edges_for(nodes, 8, max_distance=0.2)
    ok = e2 >= 0
    assert (d[np.arange(60)[:, None].repeat(8, 1)[ok], e2[ok]] <= 0.2).all()
    assert (~ok).any()


def test_geodesic_edges_do_not_cross_a_gap(rng):
    # two parallel sheets 6 cm apart, joined along one edge (a folded sheet): euclidean edges jump the gap,
    # geodesic ones (over the surface) only link across near the fold
    a = _sheet(rng, 6000, 0.4, 0.0)
    b = _sheet(rng, 6000, 0.4, 0.06)
    x = np.linspace(-0.2, 0.2, 60)
    zz = np.linspace(0, 0.06, 12)
    fold = np.stack(np.meshgrid(x, zz), -1).reshape(-1, 2)
    fold = np.stack([np.full(len(fold), 0.2), fold[:, 0], fold[:, 1]], 1).astype(np.float32)
    pts = np.concatenate([a, b, fold])
    ge = build_graph(pts, radius=0.04, edge_mode="geodesic")
    gu = build_graph(pts, radius=0.04, edge_mode="euclidean")

    def crossings(g):
        valid = g.edges >= 0
        zi = g.nodes[:, 2][:, None].repeat(g.edges.shape[1], 1)[valid]
        zj = g.nodes[g.edges[valid], 2]
        far_from_fold = (g.nodes[:, 0][:, None].repeat(g.edges.shape[1], 1)[valid] < 0.05)
        return int(((np.abs(zi - zj) > 0.05) & far_from_fold).sum())

    assert crossings(gu) > 0
    assert crossings(ge) == 0
    # skinning: without the hop check, points of the lower sheet far from the fold borrow upper-sheet nodes;
    # with it (geodesic edges, <= 2 hops from the nearest node) they do not
    lower = a[a[:, 0] < 0.0]
    for hops, expect_cross in ((None, True), (2, False)):
        an, wt = skinning(lower, ge, max_hops=hops)
        ok = an >= 0
        cross = (ge.nodes[np.where(ok, an, 0), 2] > 0.03) & ok
        assert cross.any() == expect_cross, hops
        np.testing.assert_allclose(wt.sum(1)[ok[:, 0]], 1.0, atol=1e-6)
        assert (np.diff(ok.astype(int), axis=1) <= 0).all()  # valid anchors first


def test_isolated_small_clusters_are_removed(rng):
    pts = _sheet(rng)
    noise = (np.array([[1.0, 1.0, 1.0]]) + rng.normal(scale=0.01, size=(20, 3))).astype(np.float32)  # 1 node
    two = np.array([[-1, 0, 0], [-1.06, 0, 0]], np.float32)  # 2 nodes, linked to each other only
    g = build_graph(np.concatenate([pts, noise, two]), radius=0.05, min_cluster_nodes=3)
    assert np.linalg.norm(g.nodes - [1, 1, 1], axis=1).min() > 0.5
    assert np.linalg.norm(g.nodes - [-1, 0, 0], axis=1).min() > 0.5
    d, _ = cKDTree(g.nodes).query(pts)
    assert d.max() <= 0.05 + 1e-6  # the object itself is still covered
    assert g.edges.max() < g.num_nodes
    g1 = build_graph(np.concatenate([pts, noise, two]), radius=0.05, min_cluster_nodes=1)
    assert g1.num_nodes == g.num_nodes + 3


def test_skinning_weights_sum_to_one_and_are_local(rng):
    pts = _sphere(rng)
    g = build_graph(pts, radius=0.05)
    a, w = skinning(pts, g, k=4)
    assert a.shape == (len(pts), 4) and a.dtype == np.int32 and w.dtype == np.float32
    valid = a >= 0
    assert valid[:, 0].all()
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    assert (w[~valid] == 0).all()
    d = np.linalg.norm(g.nodes[np.where(valid, a, 0)] - pts[:, None], axis=-1)
    assert (d[valid] <= 2 * 0.05 + 1e-6).all()  # anchors within reach
    assert (np.diff(np.where(valid, d, np.inf), axis=1) >= -1e-7).all()  # sorted by distance
    # weights decrease with distance and follow exp(-d^2 / 2 sigma^2)
    raw = np.exp(-d**2 / (2 * 0.05**2)) * valid
    np.testing.assert_allclose(w, raw / raw.sum(1, keepdims=True), rtol=1e-4, atol=1e-6)
    # far points get no anchors
    a2, w2 = skinning(np.array([[5.0, 5.0, 5.0]], np.float32), g)
    assert (a2 == -1).all() and (w2 == 0).all()


def test_skinning_hop_table_is_cached_per_graph_and_follows_edge_changes(rng, monkeypatch):
    """The hop test's table is built once per graph (dense or sparse, the same anchors) and rebuilt when the
    graph's edges change; a pickled graph leaves the cache behind."""
    import pickle

    import fusion.graph as graph_mod

    pts = _sphere(rng)
    g = build_graph(pts, radius=0.05)
    a, w = skinning(pts, g)
    assert "_hop_cache" in g.__dict__
    a2, w2 = skinning(pts, g)  # from the cache
    assert np.array_equal(a, a2) and np.array_equal(w, w2)
    with monkeypatch.context() as mp:  # the sparse table of large graphs gives the same anchors
        mp.setattr(graph_mod, "DENSE_HOPS_MAX_NODES", 0)
        g_sparse = DeformationGraph(g.nodes, g.edges.copy(), g.radius)
        a3, w3 = skinning(pts, g_sparse)
    assert not isinstance(g_sparse.__dict__["_hop_cache"][2], np.ndarray)
    assert np.array_equal(a, a3) and np.array_equal(w, w3)
    # cut the edges of every other node in place: the anchors follow (as for a fresh graph with those edges)
    g.edges[::2] = -1
    a4, w4 = skinning(pts, g)
    a5, w5 = skinning(pts, DeformationGraph(g.nodes, g.edges.copy(), g.radius))
    assert np.array_equal(a4, a5) and np.array_equal(w4, w5) and not np.array_equal(a4, a)
    assert "_hop_cache" not in pickle.loads(pickle.dumps(g)).__dict__


def test_extend_graph_adds_nodes_only_where_uncovered(rng):
    left = _sheet(rng, 4000, 0.3)
    g = build_graph(left, radius=0.05)
    same, n0 = extend_graph(g, left)
    assert n0 == 0 and same is g
    right = _sheet(rng, 4000, 0.3) + np.array([0.3, 0, 0], np.float32)  # new surface next to the old one
    g2, n = extend_graph(g, np.concatenate([left, right]))
    assert n > 0 and g2.num_nodes == g.num_nodes + n
    np.testing.assert_array_equal(g2.nodes[: g.num_nodes], g.nodes)  # old ids stay valid
    new = g2.nodes[g.num_nodes:]
    assert (cKDTree(g.nodes).query(new)[0] > 0.05).all()  # only in uncovered places
    assert (new[:, 0] > 0.15 - 0.05).all()
    assert not uncovered_mask(np.concatenate([left, right]), g2).any()
    # the new nodes are linked into the graph
    assert (g2.edges[g.num_nodes:] >= 0).sum(1).min() > 0
    assert np.isin(np.arange(g.num_nodes, g2.num_nodes), g2.edges[: g.num_nodes]).any()
    # a single stray point far away does not add a node (isolated cluster)
    g3, n3 = extend_graph(g2, np.array([[3.0, 3.0, 3.0]], np.float32))
    assert n3 == 0


def test_extend_geodesic_graph(rng):
    left = _sheet(rng, 4000, 0.3)
    g = build_graph(left, radius=0.05, edge_mode="geodesic")
    right = _sheet(rng, 4000, 0.3) + np.array([0.3, 0, 0], np.float32)
    g2, n = extend_graph(g, np.concatenate([left, right]))
    assert n > 0 and g2.edge_mode == "geodesic"
    assert (g2.edges[g.num_nodes:] >= 0).sum(1).min() > 0
    assert g2.edges.max() < g2.num_nodes


def test_extend_geodesic_graph_drops_nodes_with_no_path_to_it(rng):
    """A small patch 4 cm in front of the sheet: close in space (Euclidean edges would link it) but with no
    path along the surface samples, so its geodesic edges are empty. Such a node has nothing holding it in
    the tracker (it flew 45 cm off on a synthetic cylinder); it is dropped like an isolated cluster. A patch
    big enough for its own cluster is kept, linked within itself."""
    sheet = _sheet(rng, 4000, 0.3)
    g = build_graph(sheet, radius=0.05, edge_mode="geodesic")
    patch = _sheet(rng, 300, 0.04, z=0.04)
    g2, n = extend_graph(g, np.concatenate([sheet, patch]))
    assert n == 0 and g2 is g
    big = _sheet(rng, 6000, 0.25, z=0.04) + np.array([0.0, 0.0, 0.0], np.float32)
    g3, n3 = extend_graph(g, np.concatenate([sheet, big]))
    assert n3 >= 3
    assert (g3.edges >= 0).sum(1).min() > 0  # no node without edges
    e = g3.edges[g.num_nodes:]
    assert ((e >= g.num_nodes) | (e < 0)).all()  # its own cluster: no path to the sheet


def test_extend_motion_interpolates(rng):
    from scipy.spatial.transform import Rotation

    left = _sheet(rng, 4000, 0.3)
    g = build_graph(left, radius=0.05)
    r = Rotation.from_rotvec([0.1, 0.2, -0.1]).as_matrix().astype(np.float32)
    t = np.array([0.01, 0.02, 0.03], np.float32)
    m = GraphMotion(np.tile(r, (g.num_nodes, 1, 1)), (g.nodes @ r.T + t - g.nodes).astype(np.float32))
    right = _sheet(rng, 2000, 0.3) + np.array([0.25, 0, 0], np.float32)
    g2, n = extend_graph(g, right)
    assert n > 0
    m2 = extend_motion(m, g2, g.num_nodes)
    assert m2.num_nodes == g2.num_nodes
    # a rigid motion extends rigidly: new nodes move as R g + t and get rotation R
    np.testing.assert_allclose(m2.rotations[g.num_nodes:], np.tile(r, (n, 1, 1)), atol=1e-5)
    new = g2.nodes[g.num_nodes:]
    np.testing.assert_allclose(new + m2.translations[g.num_nodes:], new @ r.T + t, atol=1e-5)
    a, w = skinning(right, g2)
    warped = warp_points_np(right, a, w, g2.nodes, m2.rotations, m2.translations)
    np.testing.assert_allclose(warped, right @ r.T + t, atol=1e-5)


def test_sample_nodes_order_and_bad_input(rng):
    pts = _sheet(rng, 500)
    ids = sample_nodes(pts, 0.05, seed=None)
    assert ids[0] == 0  # the given order is respected
    with pytest.raises(InputError):
        build_graph(np.zeros((0, 3), np.float32))
    with pytest.raises(InputError):
        build_graph(np.array([[0, 0, np.nan]], np.float32))
    with pytest.raises(InputError):
        build_graph(np.zeros((5, 2), np.float32))
    g = DeformationGraph(np.zeros((0, 3), np.float32), np.zeros((0, 8), np.int32), 0.05)
    g2, n = extend_graph(g, pts)
    assert n == g2.num_nodes > 0
