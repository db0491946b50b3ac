"""Small synthetic RGB-D scenes for the volume's tests and benchmark: analytic spheres and a z-buffer
rasterizer of triangle meshes (so that a mesh warped by a known graph motion can be rendered exactly).

Camera: OpenCV pinhole (`fusion.camera.Intrinsics`), metres; depth is the camera z of the nearest surface.
"""
from __future__ import annotations

import numpy as np

from fusion.camera import Intrinsics
from fusion.frame import RGBDFrame


def default_intrinsics(width: int = 160, height: int = 120, hfov_deg: float = 60.0) -> Intrinsics:
    """Square-pixel pinhole intrinsics of a `width` x `height` image with the given horizontal field of view."""
    f = 0.5 * width / np.tan(np.deg2rad(hfov_deg) / 2)
    return Intrinsics(f, f, (width - 1) / 2, (height - 1) / 2, width, height)


def sphere_depth(k: Intrinsics, center: np.ndarray, radius: float) -> np.ndarray:
    """Exact depth image (float32 [H, W] metres, 0 = miss) of a sphere seen by camera `k` (ray casting)."""
    u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
    d = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1)
    c = np.asarray(center, np.float64)
    # ray x = s d (s = z since d_z = 1): |s d - c|^2 = r^2
    a = (d * d).sum(-1)
    b = d @ c
    disc = b * b - a * (c @ c - radius * radius)
    s = (b - np.sqrt(np.maximum(disc, 0))) / a
    return np.where((disc > 0) & (s > 0), s, 0.0).astype(np.float32)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, k: Intrinsics, colors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer rendering of a triangle mesh in the camera frame.

    vertices float [V, 3] metres (camera frame), faces int [F, 3], colors uint8 [V, 3] (default grey).
    Returns (depth float32 [H, W] metres (0 = background), color uint8 [H, W, 3]).
    """
    from fusion.synthetic.raster import rasterize

    f = np.asarray(faces, np.int64)
    c = np.full((len(vertices), 3), 160.0) if colors is None else np.asarray(colors, np.float64)
    depth, tri, bary = rasterize(np.asarray(vertices, np.float64), f, k)
    col = np.zeros((k.height, k.width, 3), np.uint8)
    hit = tri >= 0
    fv = f[tri[hit]]  # [n, 3] vertex ids of the triangle seen at each pixel
    val = np.einsum("nk,nkc->nc", bary[hit].astype(np.float64), c[fv])  # perspective-correct barycentrics
    col[hit] = np.clip(val + 0.5, 0, 255).astype(np.uint8)
    return depth, col


def sphere_mesh(center: np.ndarray, radius: float, subdivisions: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An icosphere: (vertices float64 [V, 3], faces int64 [F, 3], colors uint8 [V, 3] varying with the normal)."""
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    n = np.asarray(s.vertices) / radius
    col = np.clip(127.5 * (n + 1), 0, 255).astype(np.uint8)
    return np.asarray(s.vertices) + np.asarray(center, np.float64), np.asarray(s.faces, np.int64), col


def make_frame(index: int, depth: np.ndarray, k: Intrinsics, color: np.ndarray | None = None) -> RGBDFrame:
    """An RGBDFrame from a depth image (color defaults to grey)."""
    col = np.full((k.height, k.width, 3), 128, np.uint8) if color is None else np.ascontiguousarray(color, np.uint8)
    return RGBDFrame(index, index / 30.0, col, np.ascontiguousarray(depth, np.float32), k)
