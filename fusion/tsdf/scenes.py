"""Small synthetic RGB-D scenes for the volume's tests and benchmark: analytic spheres and a z-buffer
rasterizer of triangle meshes (so that a mesh warped by a known graph motion can be rendered exactly).

Camera: OpenCV pinhole (`fusion.camera.Intrinsics`), metres; depth is the camera z of the nearest surface.
"""
from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(cache=True)
def _raster(verts: np.ndarray, faces: np.ndarray, vcol: np.ndarray, fx: float, fy: float, cx: float, cy: float,
            w: int, h: int) -> tuple:
    depth = np.zeros((h, w), np.float32)
    zbuf = np.full((h, w), np.inf)
    col = np.zeros((h, w, 3), np.uint8)
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        z0, z1, z2 = verts[i0, 2], verts[i1, 2], verts[i2, 2]
        if z0 <= 1e-6 or z1 <= 1e-6 or z2 <= 1e-6:
            continue
        u0 = fx * verts[i0, 0] / z0 + cx
        v0 = fy * verts[i0, 1] / z0 + cy
        u1 = fx * verts[i1, 0] / z1 + cx
        v1 = fy * verts[i1, 1] / z1 + cy
        u2 = fx * verts[i2, 0] / z2 + cx
        v2 = fy * verts[i2, 1] / z2 + cy
        area = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0)
        if abs(area) < 1e-12:
            continue
        umin = max(0, int(np.ceil(min(u0, min(u1, u2)))))
        umax = min(w - 1, int(np.floor(max(u0, max(u1, u2)))))
        vmin = max(0, int(np.ceil(min(v0, min(v1, v2)))))
        vmax = min(h - 1, int(np.floor(max(v0, max(v1, v2)))))
        for r in range(vmin, vmax + 1):
            for c in range(umin, umax + 1):
                b0 = ((u1 - c) * (v2 - r) - (u2 - c) * (v1 - r)) / area
                b1 = ((u2 - c) * (v0 - r) - (u0 - c) * (v2 - r)) / area
                b2 = 1.0 - b0 - b1
                if b0 < -1e-9 or b1 < -1e-9 or b2 < -1e-9:
                    continue
                iz = b0 / z0 + b1 / z1 + b2 / z2  # perspective-correct: 1/z is affine in the image
                z = 1.0 / iz
                if z < zbuf[r, c]:
                    zbuf[r, c] = z
                    depth[r, c] = z
                    for q in range(3):
                        val = z * (b0 * vcol[i0, q] / z0 + b1 * vcol[i1, q] / z1 + b2 * vcol[i2, q] / z2)
                        col[r, c, q] = np.uint8(min(255.0, max(0.0, val + 0.5)))
    return depth, col


def render_mesh(vertices: np.ndarray, faces: np.ndarray, k: Intrinsics, colors: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer rendering of a triangle mesh in the camera frame.

    vertices float [V, 3] metres (camera frame), faces int [F, 3], colors uint8 [V, 3] (default grey).
    Returns (depth float32 [H, W] metres (0 = background), color uint8 [H, W, 3]).
    """
    v = np.ascontiguousarray(vertices, np.float64)
    f = np.ascontiguousarray(faces, np.int64)
    c = np.full((len(v), 3), 160.0) if colors is None else np.asarray(colors, np.float64)
    return _raster(v, f, np.ascontiguousarray(c), k.fx, k.fy, k.cx, k.cy, k.width, k.height)


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
