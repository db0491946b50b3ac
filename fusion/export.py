"""Mesh export (PLY, OBJ, GLB / glTF with vertex colors and normals) with atomic writes, warped-mesh
sequences as one file per frame, and the matching reader for round trips.

Writers go through trimesh (binary PLY; OBJ with `v x y z r g b` vertex colors; glTF 2.0 with COLOR_0 and
NORMAL attributes, `.gltf` with its buffer embedded). Every file is written to a temporary file beside
the target and renamed over it (`fusion.atomic`), so a crash never leaves a half-written mesh.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fusion.atomic import atomic_path
from fusion.errors import InputError
from fusion.meshing import TriMesh, WarpedMeshSequence

MESH_FORMATS = (".ply", ".obj", ".glb", ".gltf")


def _format(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in MESH_FORMATS:
        raise InputError(f"{path}: unknown mesh format '{path.suffix}' (expected one of {', '.join(MESH_FORMATS)})")
    return ext


def _trimesh(mesh: TriMesh):
    import trimesh

    colors = None
    if mesh.num_vertices == 0:
        return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), np.int64), process=False)
    if mesh.colors is not None and len(mesh.colors) == mesh.num_vertices:
        colors = np.concatenate([np.asarray(mesh.colors, np.uint8), np.full((mesh.num_vertices, 1), 255, np.uint8)], 1)
    normals = None
    if mesh.normals is not None and len(mesh.normals) == mesh.num_vertices:
        normals = np.asarray(mesh.normals, np.float64)
    return trimesh.Trimesh(
        vertices=np.asarray(mesh.vertices, np.float64), faces=np.asarray(mesh.faces, np.int64),
        vertex_normals=normals, vertex_colors=colors, process=False,
    )


def save_mesh(path: str | Path, mesh: TriMesh) -> Path:
    """Write `mesh` to `path` atomically; the format follows the extension (.ply, .obj, .glb, .gltf).

    Vertex colors (uint8 RGB) and normals are written when present. An empty mesh is written as a file with
    no faces for PLY/OBJ; glTF needs geometry, so an empty mesh raises InputError there. Returns the path.
    """
    import trimesh

    p = Path(path)
    ext = _format(p)
    if mesh.num_vertices and not np.isfinite(np.asarray(mesh.vertices)).all():
        raise InputError(f"{p}: the mesh has NaN or infinite vertices")
    if ext in (".glb", ".gltf") and mesh.num_faces == 0:
        raise InputError(f"{p}: cannot write an empty mesh as glTF (nothing has been fused yet)")
    tm = _trimesh(mesh)
    if ext == ".ply":
        data = trimesh.exchange.ply.export_ply(tm, encoding="binary", include_attributes=False)
    elif ext == ".obj":
        data = trimesh.exchange.obj.export_obj(tm, include_normals=mesh.normals is not None,
                                               include_color=mesh.colors is not None, include_texture=False)
        data = data.encode("utf-8")
    elif ext == ".glb":
        data = trimesh.exchange.gltf.export_glb(trimesh.Scene(tm), include_normals=True)
    else:
        files = trimesh.exchange.gltf.export_gltf(trimesh.Scene(tm), include_normals=True, embed_buffers=True)
        data = files["model.gltf"]
    with atomic_path(p) as tmp:
        tmp.write_bytes(data)
    return p


def load_mesh(path: str | Path) -> TriMesh:
    """Read a mesh written by `save_mesh` (or any PLY/OBJ/GLB/glTF triangle mesh) without reordering vertices.

    Returns a TriMesh (vertices float32, faces int32, normals / colors when the file has them). Raises
    InputError for a missing, unreadable or empty file.
    """
    import trimesh

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    _format(p)
    try:
        obj = trimesh.load(str(p), process=False, maintain_order=True)
    except Exception as e:  # trimesh raises many types for corrupt files
        raise InputError(f"{p}: cannot read mesh ({type(e).__name__}: {e})") from e
    if isinstance(obj, trimesh.Scene):
        geoms = list(obj.dump()) if hasattr(obj, "dump") else list(obj.geometry.values())
        if not geoms:
            raise InputError(f"{p}: the file holds no geometry")
        obj = geoms[0] if len(geoms) == 1 else trimesh.util.concatenate(geoms)
    v = np.asarray(getattr(obj, "vertices", np.zeros((0, 3))), np.float32)
    f = np.asarray(getattr(obj, "faces", np.zeros((0, 3))), np.int32).reshape(-1, 3)
    colors = None
    vis = getattr(obj, "visual", None)
    if vis is not None and getattr(vis, "kind", None) == "vertex":
        vc = np.asarray(vis.vertex_colors)
        if len(vc) == len(v):
            colors = vc[:, :3].astype(np.uint8)
    normals = None
    if "vertex_normals" in getattr(obj, "_cache", {}) or p.suffix.lower() in (".glb", ".gltf", ".obj", ".ply"):
        try:
            vn = np.asarray(obj.vertex_normals, np.float32)
            normals = vn if len(vn) == len(v) else None
        except Exception:  # pragma: no cover - trimesh computes normals lazily
            normals = None
    return TriMesh(v, f, normals, colors)


def export_sequence(folder: str | Path, sequence: WarpedMeshSequence, fmt: str = "ply", prefix: str = "frame") -> list[Path]:
    """Write every warped mesh of `sequence` as `folder/<prefix>_<frame index:06d>.<fmt>` (constant
    connectivity: same faces and colors in every file). Returns the paths in order."""
    ext = "." + fmt.lower().lstrip(".")
    out = Path(folder)
    _format(Path("x" + ext))
    paths = []
    for i in range(len(sequence)):
        idx = sequence.frames[i][0]
        paths.append(save_mesh(out / f"{prefix}_{idx:06d}{ext}", sequence.mesh(i)))
    return paths
