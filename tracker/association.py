"""Live-frame geometry and projective data association for depth ICP.

- `live_geometry`: back-projected live points and normals (central differences) of a depth image, numba,
  with `live_geometry_np` as the plain numpy reference.
- `projective_association`: each warped model point is projected into the live depth image (nearest
  pixel); the live point there is its correspondence when it is valid, within `max_distance` and its
  normal within `max_angle_deg` of the warped model normal (numba, parallel), with a numpy reference.

Normals point towards the camera (n . p < 0). Arrays: float32 metres, camera frame (OpenCV axes).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from fusion.camera import Intrinsics


@nb.njit(cache=True, parallel=True, nogil=True)
def _live_geometry_kernel(depth, mask, fx, fy, cx, cy, max_jump, pts, nrm, valid):  # pragma: no cover - numba
    h, w = depth.shape
    for v in nb.prange(h):
        for u in range(w):
            z = depth[v, u]
            pts[v, u, 0] = (u - cx) / fx * z
            pts[v, u, 1] = (v - cy) / fy * z
            pts[v, u, 2] = z
    for v in nb.prange(h):
        for u in range(w):
            valid[v, u] = False
            nrm[v, u, 0] = 0.0
            nrm[v, u, 1] = 0.0
            nrm[v, u, 2] = 0.0
            z = depth[v, u]
            if z <= 0.0 or not mask[v, u] or u == 0 or v == 0 or u == w - 1 or v == h - 1:
                continue
            zl = depth[v, u - 1]
            zr = depth[v, u + 1]
            zu = depth[v - 1, u]
            zd = depth[v + 1, u]
            lim = max_jump * z
            if zl <= 0.0 or zr <= 0.0 or zu <= 0.0 or zd <= 0.0:
                continue
            if abs(zl - z) > lim or abs(zr - z) > lim or abs(zu - z) > lim or abs(zd - z) > lim:
                continue
            ax = pts[v, u + 1, 0] - pts[v, u - 1, 0]
            ay = pts[v, u + 1, 1] - pts[v, u - 1, 1]
            az = pts[v, u + 1, 2] - pts[v, u - 1, 2]
            bx = pts[v + 1, u, 0] - pts[v - 1, u, 0]
            by = pts[v + 1, u, 1] - pts[v - 1, u, 1]
            bz = pts[v + 1, u, 2] - pts[v - 1, u, 2]
            nx = ay * bz - az * by
            ny = az * bx - ax * bz
            nz = ax * by - ay * bx
            nn = np.sqrt(nx * nx + ny * ny + nz * nz)
            if nn <= 0.0:
                continue
            if nx * pts[v, u, 0] + ny * pts[v, u, 1] + nz * pts[v, u, 2] > 0.0:
                nn = -nn
            nrm[v, u, 0] = nx / nn
            nrm[v, u, 1] = ny / nn
            nrm[v, u, 2] = nz / nn
            valid[v, u] = True


def live_geometry(depth: np.ndarray, k: Intrinsics, mask: np.ndarray | None = None,
                  max_jump: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Live points and normals of a depth image (numba).

    depth float32 [H,W] metres (0 = invalid); mask bool [H,W] or None (all). A pixel is valid when it and
    its 4 neighbours have depth, are inside the mask (the centre pixel) and differ from it by at most
    max_jump * z (relative; no normals across depth discontinuities). Returns (points float32 [H,W,3],
    normals float32 [H,W,3] unit, facing the camera, zero where invalid, valid bool [H,W]).
    """
    depth = np.ascontiguousarray(depth, np.float32)
    if depth.shape != (k.height, k.width):
        raise ValueError(f"depth {depth.shape} does not match intrinsics {k.height}x{k.width}")
    m = np.ones(depth.shape, np.bool_) if mask is None else np.ascontiguousarray(mask, np.bool_)
    h, w = depth.shape
    pts = np.empty((h, w, 3), np.float32)
    nrm = np.empty((h, w, 3), np.float32)
    valid = np.empty((h, w), np.bool_)
    _live_geometry_kernel(depth, m, np.float32(k.fx), np.float32(k.fy), np.float32(k.cx), np.float32(k.cy),
                          np.float32(max_jump), pts, nrm, valid)
    return pts, nrm, valid


def live_geometry_np(depth: np.ndarray, k: Intrinsics, mask: np.ndarray | None = None,
                     max_jump: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference of `live_geometry` in plain numpy (same conventions)."""
    from fusion.camera import backproject_depth

    d = np.asarray(depth, np.float32)
    pts = backproject_depth(d, k)
    h, w = d.shape
    m = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool)
    valid = np.zeros((h, w), bool)
    nrm = np.zeros((h, w, 3), np.float32)
    c = d[1:-1, 1:-1]
    nb_ = [d[1:-1, :-2], d[1:-1, 2:], d[:-2, 1:-1], d[2:, 1:-1]]
    ok = (c > 0) & m[1:-1, 1:-1]
    for z in nb_:
        ok &= (z > 0) & (np.abs(z - c) <= max_jump * c)
    a = pts[1:-1, 2:] - pts[1:-1, :-2]
    b = pts[2:, 1:-1] - pts[:-2, 1:-1]
    n = np.cross(a, b)
    nn = np.linalg.norm(n, axis=-1)
    ok &= nn > 0
    n = n / np.where(nn > 0, nn, 1.0)[..., None]
    flip = (n * pts[1:-1, 1:-1]).sum(-1) > 0
    n[flip] *= -1
    nrm[1:-1, 1:-1] = np.where(ok[..., None], n, 0.0)
    valid[1:-1, 1:-1] = ok
    return pts, nrm, valid


@nb.njit(cache=True, parallel=True, nogil=True)
def _associate_kernel(pts, nrm, live_pts, live_nrm, live_valid, fx, fy, cx, cy, max_d2, min_cos,
                      out):  # pragma: no cover - numba
    h, w = live_valid.shape
    for i in nb.prange(pts.shape[0]):
        out[i] = -1
        z = pts[i, 2]
        if z <= 1e-6:
            continue
        u = int(np.floor(fx * pts[i, 0] / z + cx + 0.5))
        v = int(np.floor(fy * pts[i, 1] / z + cy + 0.5))
        if u < 0 or v < 0 or u >= w or v >= h or not live_valid[v, u]:
            continue
        dx = live_pts[v, u, 0] - pts[i, 0]
        dy = live_pts[v, u, 1] - pts[i, 1]
        dz = live_pts[v, u, 2] - pts[i, 2]
        if dx * dx + dy * dy + dz * dz > max_d2:
            continue
        c = live_nrm[v, u, 0] * nrm[i, 0] + live_nrm[v, u, 1] * nrm[i, 1] + live_nrm[v, u, 2] * nrm[i, 2]
        if c < min_cos:
            continue
        out[i] = v * w + u


def projective_association(points: np.ndarray, normals: np.ndarray, live_points: np.ndarray,
                           live_normals: np.ndarray, live_valid: np.ndarray, k: Intrinsics, max_distance: float,
                           max_angle_deg: float) -> np.ndarray:
    """Projective correspondences of warped model points in the live frame (numba).

    points / normals float [M,3]: the warped model (camera frame, m / unit); live_* from `live_geometry`.
    Returns int64 [M]: the flat live pixel index v * W + u of each point's match, -1 when rejected (behind
    the camera, outside the image, invalid pixel, farther than max_distance m, normals more than
    max_angle_deg apart).
    """
    out = np.empty(len(points), np.int64)
    if len(points) == 0:
        return out
    _associate_kernel(np.ascontiguousarray(points, np.float64), np.ascontiguousarray(normals, np.float64),
                      live_points, live_normals, live_valid, float(k.fx), float(k.fy), float(k.cx), float(k.cy),
                      float(max_distance) ** 2, float(np.cos(np.deg2rad(max_angle_deg))), out)
    return out


def projective_association_np(points: np.ndarray, normals: np.ndarray, live_points: np.ndarray,
                              live_normals: np.ndarray, live_valid: np.ndarray, k: Intrinsics, max_distance: float,
                              max_angle_deg: float) -> np.ndarray:
    """Reference of `projective_association` in plain numpy."""
    p = np.asarray(points, np.float64)
    n = np.asarray(normals, np.float64)
    h, w = live_valid.shape
    out = np.full(len(p), -1, np.int64)
    z = p[:, 2]
    front = z > 1e-6
    zs = np.where(front, z, 1.0)
    u = np.floor(k.fx * p[:, 0] / zs + k.cx + 0.5).astype(np.int64)
    v = np.floor(k.fy * p[:, 1] / zs + k.cy + 0.5).astype(np.int64)
    inside = front & (u >= 0) & (v >= 0) & (u < w) & (v < h)
    uu, vv = np.where(inside, u, 0), np.where(inside, v, 0)
    ok = inside & live_valid[vv, uu]
    d2 = ((live_points[vv, uu].astype(np.float64) - p) ** 2).sum(1)
    cos = (live_normals[vv, uu].astype(np.float64) * n).sum(1)
    ok &= (d2 <= max_distance**2) & (cos >= np.cos(np.deg2rad(max_angle_deg)))
    out[ok] = (vv * w + uu)[ok]
    return out
