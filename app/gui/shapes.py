"""Input and display helpers shared by the shape-method panels (app/gui/panel_*.py): position colors, a
capture reduced to what a method takes (mesh or cloud, decimated / subsampled), a torch thread limit for a
panel job, and the offset that shows two shapes side by side. Not a panel itself (the dock discovers only
`panel_*` modules)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from app.gui.captures import Capture
from fusion.errors import InputError



def coordinate_colors(points: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
                      floor: int = 40) -> np.ndarray:
    """A smooth color map of positions: x, y, z scaled over the bounding box [lo, hi] (default: the points'
    own) to red, green, blue in [floor, 255]. points float [N, 3] -> uint8 [N, 3]. Carried unchanged
    through a correspondence, it marks the same point on both sides."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    if len(p) == 0:
        return np.zeros((0, 3), np.uint8)
    lo = p.min(0) if lo is None else np.asarray(lo, np.float64)
    hi = p.max(0) if hi is None else np.asarray(hi, np.float64)
    t = np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    return (floor + (255.0 - floor) * t).round().astype(np.uint8)


def mesh_faces_of(cap: Capture) -> np.ndarray | None:
    """The faces int64 [F, 3] of a capture that is a mesh (`Capture.faces`: kept when a mesh file is read,
    saved with the capture), else None (captures taken from the live model, point-cloud files)."""
    return np.asarray(cap.faces, np.int64) if cap.is_mesh else None


@dataclass
class ReducedShape:
    """A shape as a method uses it: verts float64 [n, 3] (the input's units), faces int64 [F, 3] (F = 0:
    a point cloud), orig_index int64 [n] (the input point each vertex is, or is nearest to), kind (text for
    the summary: "mesh", "mesh (decimated)", "cloud", "cloud (subsampled)")."""

    verts: np.ndarray
    faces: np.ndarray
    orig_index: np.ndarray
    kind: str


def reduce_shape(cap: Capture, max_points: int, use_faces: bool = True, role: str = "input",
                 min_points: int = 10) -> ReducedShape:
    """`cap` as a mesh (its file's faces, see `mesh_faces_of`, when `use_faces`) or a cloud, reduced to at
    most ~max_points vertices: meshes by Open3D quadric decimation (2 * max_points triangles), clouds by an
    even subsample. InputError for fewer than `min_points` points, non-finite coordinates or points on a
    line (the message names the role and the capture)."""
    name = f"{role} {cap.name!r}" + (f" ({cap.source})" if cap.source else "")
    if cap.num_points < min_points:
        raise InputError(f"{name}: needs at least {min_points} points, it has {cap.num_points}")
    if not np.isfinite(cap.points).all():
        raise InputError(f"{name}: the cloud has NaN or infinite coordinates")
    pts = cap.points.astype(np.float64)
    sv = np.linalg.svd(pts[:: max(1, len(pts) // 20000)] - pts.mean(0), compute_uv=False)
    if sv[0] <= 0 or sv[1] <= 1e-6 * sv[0]:
        raise InputError(f"{name}: the points lie on a line or at one spot (not a surface)")
    faces = mesh_faces_of(cap) if use_faces else None
    if faces is not None:
        if cap.num_points <= max_points:
            return ReducedShape(pts, faces, np.arange(cap.num_points, dtype=np.int64), "mesh")
        import open3d as o3d
        from scipy.spatial import cKDTree

        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(pts), o3d.utility.Vector3iVector(faces.astype(np.int32)))
        m = m.simplify_quadric_decimation(target_number_of_triangles=2 * max_points)
        m.remove_degenerate_triangles()
        m.remove_unreferenced_vertices()
        v = np.asarray(m.vertices, np.float64)
        f = np.asarray(m.triangles, np.int64)
        if len(v) >= min_points and len(f):
            return ReducedShape(v, f, cKDTree(pts).query(v)[1].astype(np.int64), "mesh (decimated)")
    idx = even_subsample(cap.num_points, max_points).astype(np.int64)
    kind = "cloud" if len(idx) == cap.num_points else "cloud (subsampled)"
    return ReducedShape(pts[idx], np.zeros((0, 3), np.int64), idx, kind)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with `n` torch CPU threads, restoring the previous number afterwards (process-wide: the
    small per-point nets of the shape methods run several times faster on one thread of a busy CPU)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def side_by_side_shift(left: np.ndarray, right: np.ndarray, gap: float = 0.25) -> np.ndarray:
    """Translation float64 [3] that puts the `right` points beside the `left` ones: right's bounding box
    starts `gap` x (the wider x extent) to the right of left's, centred on it in y and z."""
    lo_l, hi_l = left.min(0), left.max(0)
    lo_r, hi_r = right.min(0), right.max(0)
    w = max(hi_l[0] - lo_l[0], hi_r[0] - lo_r[0], 1e-9)
    s = (lo_l + hi_l) / 2 - (lo_r + hi_r) / 2
    s[0] = hi_l[0] + gap * w - lo_r[0]
    return s


def even_subsample(n: int, m: int) -> np.ndarray:
    """Evenly spaced indices of at most m out of n (all when n <= m), int64 [min(n, m)]."""
    if n <= m:
        return np.arange(n)
    return np.linspace(0, n - 1, m).astype(np.int64)
