"""Mesh export round trips (PLY, OBJ, GLB, glTF), atomic writes, warped-mesh sequences."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.errors import InputError
from fusion.export import export_sequence, load_mesh, save_mesh
from fusion.graph import GraphMotion, build_graph
from fusion.meshing import TriMesh, WarpedMeshSequence, vertex_normals
from fusion.tsdf.scenes import sphere_mesh


def _mesh() -> TriMesh:
    v, f, c = sphere_mesh([0.1, -0.2, 0.7], 0.12, 2)
    return TriMesh(v.astype(np.float32), f.astype(np.int32), vertex_normals(v, f), c)


@pytest.mark.parametrize("ext", ["ply", "obj", "glb", "gltf"])
def test_round_trip(tmp_path, ext):
    m = _mesh()
    p = save_mesh(tmp_path / f"mesh.{ext}", m)
    r = load_mesh(p)
    assert (r.num_vertices, r.num_faces) == (m.num_vertices, m.num_faces)
    np.testing.assert_allclose(r.vertices, m.vertices, atol=1e-6)
    np.testing.assert_array_equal(r.faces, m.faces)
    assert r.colors is not None
    np.testing.assert_array_equal(r.colors, m.colors)
    assert [q.name for q in tmp_path.iterdir()] == [f"mesh.{ext}"]  # no temporary file left


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "mesh.ply"
    save_mesh(target, _mesh())
    before = target.read_bytes()
    bad = _mesh()
    bad.vertices[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        save_mesh(target, bad)
    assert target.read_bytes() == before
    assert len(list(tmp_path.iterdir())) == 1


def test_empty_mesh_and_bad_paths(tmp_path):
    empty = TriMesh.empty()
    save_mesh(tmp_path / "e.ply", empty)  # exporting before anything is fused works ...
    assert (tmp_path / "e.ply").read_bytes().startswith(b"ply")
    with pytest.raises(InputError, match="no geometry"):  # ... and reading it back says it is empty
        load_mesh(tmp_path / "e.ply")
    with pytest.raises(InputError, match="empty"):
        save_mesh(tmp_path / "e.glb", empty)
    with pytest.raises(InputError, match="unknown mesh format"):
        save_mesh(tmp_path / "m.xyz", _mesh())
    with pytest.raises(InputError, match="no such file"):
        load_mesh(tmp_path / "missing.ply")
    (tmp_path / "junk.glb").write_bytes(b"not a glb")
    with pytest.raises(InputError, match="cannot read"):
        load_mesh(tmp_path / "junk.glb")


def test_sequence_export_has_constant_connectivity(tmp_path):
    m = _mesh()
    g = build_graph(m.vertices, None, radius=0.05)
    seq = WarpedMeshSequence.freeze(m, g)
    for i in range(3):
        t = np.tile(np.array([[0.01 * i, 0, 0]], np.float32), (g.num_nodes, 1))
        seq.add(10 + i, g, GraphMotion(np.tile(np.eye(3, dtype=np.float32), (g.num_nodes, 1, 1)), t))
    paths = export_sequence(tmp_path / "seq", seq, fmt="glb")
    assert [p.name for p in paths] == ["frame_000010.glb", "frame_000011.glb", "frame_000012.glb"]
    meshes = [load_mesh(p) for p in paths]
    for i, r in enumerate(meshes):
        np.testing.assert_array_equal(r.faces, m.faces)
        np.testing.assert_allclose(r.vertices, m.vertices + [0.01 * i, 0, 0], atol=1e-5)
