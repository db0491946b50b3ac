"""Mesh and point-cloud I/O for the shape methods (trimesh for meshes, PLY for clouds), atomic writes.

Conventions: vertices / points are float64 or float32 [N, 3]; faces int64 [F, 3]; colors uint8 [N, 3].
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.atomic import atomic_path
from fusion.errors import InputError

MESH_EXTS = {".obj", ".ply", ".off", ".stl", ".glb", ".gltf"}
CLOUD_EXTS = {".ply", ".xyz", ".pts", ".npy", ".npz", ".pcd"}


@dataclass
class Mesh:
    """A triangle mesh: vertices float64 [V, 3], faces int64 [F, 3] (F may be 0 for a point cloud)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None

    @property
    def is_cloud(self) -> bool:
        """True when there are no faces."""
        return len(self.faces) == 0


def load_mesh(path: str | Path, require_faces: bool = False) -> Mesh:
    """Load a mesh (OBJ/PLY/OFF/STL/GLB) or point cloud with trimesh, keeping vertex order.

    Raises InputError for a missing, unreadable, empty or non-finite file.
    """
    import trimesh

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.suffix.lower() in {".npy", ".npz", ".xyz", ".pts"}:
        return Mesh(load_points(p), np.zeros((0, 3), dtype=np.int64))
    if p.suffix.lower() not in MESH_EXTS | CLOUD_EXTS:
        raise InputError(f"{p}: unknown mesh format '{p.suffix}' (expected one of {sorted(MESH_EXTS)})")
    try:
        obj = trimesh.load(str(p), process=False, force=None)
    except Exception as e:  # trimesh raises many types for corrupt files
        raise InputError(f"{p}: cannot read mesh ({type(e).__name__}: {e})") from e
    if isinstance(obj, trimesh.Scene):
        geoms = list(obj.geometry.values())
        if not geoms:
            raise InputError(f"{p}: the file holds no geometry")
        obj = trimesh.util.concatenate(geoms) if len(geoms) > 1 else geoms[0]
    v = np.asarray(getattr(obj, "vertices", np.zeros((0, 3))), dtype=np.float64)
    f = np.asarray(getattr(obj, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    if len(v) == 0:
        raise InputError(f"{p}: the file holds no vertices")
    if not np.isfinite(v).all():
        raise InputError(f"{p}: the file has NaN or infinite coordinates")
    if require_faces and len(f) == 0:
        raise InputError(f"{p}: a mesh with faces is needed, the file is a point cloud")
    colors = None
    vc = getattr(getattr(obj, "visual", None), "vertex_colors", None)
    if vc is not None and len(vc) == len(v):
        colors = np.asarray(vc)[:, :3].astype(np.uint8)
    return Mesh(v, f, colors)


def load_points(path: str | Path) -> np.ndarray:
    """Load a point cloud as float64 [N, 3] from PLY/XYZ/PTS/NPY/NPZ or a mesh's vertices."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    ext = p.suffix.lower()
    try:
        if ext == ".npy":
            pts = np.load(p)
        elif ext == ".npz":
            z = np.load(p)
            pts = z["points"] if "points" in z else z[list(z.keys())[0]]
        elif ext in {".xyz", ".pts"}:
            pts = np.loadtxt(p, dtype=np.float64, ndmin=2)[:, :3]
        else:
            return load_mesh(p).vertices
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{p}: cannot read point cloud ({type(e).__name__}: {e})") from e
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3) if np.asarray(pts).size % 3 == 0 else None
    if pts is None or len(pts) == 0:
        raise InputError(f"{p}: the file holds no 3D points")
    if not np.isfinite(pts).all():
        raise InputError(f"{p}: the cloud has NaN or infinite coordinates")
    return pts


def save_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray | None = None, colors: np.ndarray | None = None) -> None:
    """Write a mesh or, with no faces, a point cloud, atomically; the format follows the extension."""
    import trimesh

    v = np.asarray(vertices, dtype=np.float64)
    f = None if faces is None or len(faces) == 0 else np.asarray(faces, dtype=np.int64)
    geom = trimesh.Trimesh(v, f, vertex_colors=colors, process=False) if f is not None else trimesh.PointCloud(v, colors=colors)
    with atomic_path(path) as tmp:
        geom.export(str(tmp), file_type=Path(path).suffix.lower().lstrip("."))


def sample_surface(mesh: Mesh, n: int, rng: np.random.Generator | None = None, noise_std: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Sample `n` points uniformly by area on a mesh (or subsample a cloud).

    Returns (points float64 [n, 3], face index int64 [n]; -1 for clouds). `noise_std` adds isotropic
    Gaussian noise (same units as the mesh).
    """
    rng = rng or np.random.default_rng(0)
    if mesh.is_cloud:
        idx = rng.choice(len(mesh.vertices), size=n, replace=len(mesh.vertices) < n)
        pts = mesh.vertices[idx].copy()
        fi = np.full(n, -1, dtype=np.int64)
    else:
        tri = mesh.vertices[mesh.faces]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        fi = rng.choice(len(area), size=n, p=area / area.sum())
        r1, r2 = rng.random(n), rng.random(n)
        s = np.sqrt(r1)
        w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
        pts = np.einsum("nk,nkd->nd", w, tri[fi])
    if noise_std > 0:
        pts = pts + rng.normal(scale=noise_std, size=pts.shape)
    return pts, fi
