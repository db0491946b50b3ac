"""Marching cubes of the block-sparse volume, warped meshes, constant-connectivity sequences, distances."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from fusion.graph import GraphMotion, build_graph
from fusion.meshing import (
    TriMesh, WarpedMeshSequence, extract_mesh, point_mesh_distance, point_triangle_distance, skin_vertices,
    symmetric_surface_distance, vertex_normals, warp_mesh,
)
from fusion.tsdf import TSDFVolume, VolumeConfig
from fusion.tsdf.scenes import sphere_mesh
from fusion.warp import warp_normals_np, warp_points_np


def _analytic_sphere_volume(center, radius, voxel=0.01, trunc_voxels=4.0):
    """A volume whose blocks around a sphere hold its exact truncated SDF (weight 1, color from the normal)."""
    cfg = VolumeConfig(voxel_size=voxel, trunc_voxels=trunc_voxels)
    c = np.asarray(center, float)
    vol = TSDFVolume(cfg, c - radius - 0.1, c + radius + 0.1, backend="numba")
    vol.allocate_region(c - radius - 2 * cfg.trunc, c + radius + 2 * cfg.trunc)
    ids = np.arange(vol.num_blocks)
    p = vol.voxel_centers(ids).astype(np.float64)
    d = np.linalg.norm(p - c, axis=-1)
    near = np.abs(d - radius) < cfg.trunc + 2 * voxel  # a band, so that unobserved voxels exist too
    vol.tsdf[ids] = np.clip((d - radius) / cfg.trunc, -1, 1).astype(np.float32)
    vol.weight[ids] = near.astype(np.float32)
    vol.color[ids] = np.clip(127.5 * ((p - c) / d[..., None] + 1), 0, 255).astype(np.uint8)
    return vol


def test_marching_cubes_of_analytic_sphere_has_the_right_radius_and_no_seams():
    c, r = np.array([0.013, -0.021, 0.5]), 0.2
    vol = _analytic_sphere_volume(c, r)
    assert vol.num_blocks > 50  # the sphere crosses many block seams
    mesh = extract_mesh(vol, channel="track")  # the helper writes the tracking channel
    rr = np.linalg.norm(mesh.vertices - c, axis=1)
    assert mesh.num_faces > 5000
    assert np.abs(rr - r).max() < 0.1 * vol.voxel_size
    # closed surface: every edge is shared by exactly two faces (no cracks at block seams)
    e = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert np.all(counts == 2)
    # outward normals and face winding, colors from the voxels
    radial = (mesh.vertices - c) / rr[:, None]
    assert (mesh.normals * radial).sum(1).min() > 0.9
    tri = mesh.vertices[mesh.faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert ((fn * (tri.mean(1) - c)).sum(1) > 0).all()
    expect = np.clip(127.5 * (radial + 1), 0, 255)
    assert np.abs(mesh.colors - expect).mean() < 6


def test_unobserved_voxels_make_no_faces():
    c, r = np.array([0.0, 0.0, 0.5]), 0.15
    vol = _analytic_sphere_volume(c, r)
    ids = np.arange(vol.num_blocks)
    p = vol.voxel_centers(ids)
    vol.weight[ids] = np.where(p[..., 2] < c[2], vol.weight[ids], 0)  # only the front half observed
    mesh = extract_mesh(vol, channel="track")  # the helper writes the tracking channel
    assert mesh.num_faces > 500
    assert mesh.vertices[:, 2].max() < c[2] + vol.voxel_size
    assert extract_mesh(TSDFVolume(VolumeConfig(), np.zeros(3), np.ones(3))).is_empty


def _graph_and_motion():
    v, f, col = sphere_mesh([0, 0, 0.6], 0.15, 3)
    g = build_graph(v.astype(np.float32), None, radius=0.05)
    rng = np.random.default_rng(0)
    rot = Rotation.from_rotvec(0.2 * rng.normal(size=(g.num_nodes, 3))).as_matrix().astype(np.float32)
    tr = (0.02 * rng.normal(size=(g.num_nodes, 3))).astype(np.float32)
    mesh = TriMesh(v.astype(np.float32), f.astype(np.int32), vertex_normals(v, f), col)
    return mesh, g, GraphMotion(rot, tr)


def test_warp_mesh_matches_reference_warp():
    mesh, g, m = _graph_and_motion()
    live = warp_mesh(mesh, g, m)
    a, w = skin_vertices(mesh.vertices, g)
    assert (a[:, 0] >= 0).all()
    np.testing.assert_allclose(live.vertices, warp_points_np(mesh.vertices, a, w, g.nodes, m.rotations, m.translations), atol=1e-5)
    np.testing.assert_allclose(live.normals, warp_normals_np(mesh.normals, a, w, m.rotations), atol=1e-5)
    np.testing.assert_array_equal(live.faces, mesh.faces)
    ident = warp_mesh(mesh, g, GraphMotion.identity(g.num_nodes))
    np.testing.assert_allclose(ident.vertices, mesh.vertices, atol=1e-6)


def test_warped_sequence_keeps_connectivity_and_follows_the_graph():
    mesh, g, m = _graph_and_motion()
    seq = WarpedMeshSequence.freeze(mesh, g)
    seq.add(0, g, GraphMotion.identity(g.num_nodes))
    seq.add(1, g, m)
    # the graph grows after the freeze: the frozen skinning keeps using the first nodes
    g2 = type(g)(np.concatenate([g.nodes, [[0, 0, 2.0]]]).astype(np.float32),
                 np.concatenate([g.edges, np.full((1, g.edges.shape[1]), -1, np.int32)]), g.radius)
    m2 = GraphMotion(np.concatenate([m.rotations, np.eye(3, dtype=np.float32)[None]]),
                     np.concatenate([m.translations, np.ones((1, 3), np.float32)]))
    seq.add(2, g2, m2)
    assert len(seq) == 3
    np.testing.assert_allclose(seq.mesh(0).vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_allclose(seq.mesh(1).vertices, seq.mesh(2).vertices, atol=1e-6)
    for i in range(3):
        assert seq.mesh(i).faces is mesh.faces or np.array_equal(seq.mesh(i).faces, mesh.faces)
        assert seq.mesh(i).num_vertices == mesh.num_vertices


def test_point_triangle_distance_against_dense_sampling():
    rng = np.random.default_rng(1)
    a, b, c = (rng.normal(size=(200, 3)) for _ in range(3))
    p = rng.normal(size=(200, 3)) * 2
    d = point_triangle_distance(p, a, b, c)
    s = rng.random((4000, 2))
    s = np.where(s.sum(1, keepdims=True) > 1, 1 - s, s)
    for i in range(0, 200, 20):
        q = a[i] + s[:, :1] * (b[i] - a[i]) + s[:, 1:] * (c[i] - a[i])
        brute = np.linalg.norm(q - p[i], axis=1).min()
        assert d[i] <= brute + 1e-9 and brute - d[i] < 0.05


def test_symmetric_surface_distance_of_offset_spheres():
    v1, f1, _ = sphere_mesh([0, 0, 0], 1.0, 4)
    v2, f2, _ = sphere_mesh([0, 0, 0], 1.02, 4)
    sym, ab, ba = symmetric_surface_distance(v1, f1, v2, f2, n=3000)
    assert abs(sym - 0.02) < 0.003 and abs(ab - 0.02) < 0.003 and abs(ba - 0.02) < 0.003
    assert point_mesh_distance(v1[:10], v1, f1).max() < 1e-9
