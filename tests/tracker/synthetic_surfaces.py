"""Analytically rendered deforming surfaces for tracker tests: ray-cast depth and the exact true warp.

The surface is a bumpy sheet: canonical points P0(x, y) = (x, y, z0 - h(x, y)) for |x|, |y| <= half, with
h a sum of Gaussian bumps (toward the camera; the bumps make tangential motion observable to depth ICP).
The live surface rolls the sheet isometrically onto a cylinder of radius `roll` (axis along y, bending
away from the camera, the bumps carried along the cylinder normal) and then moves it rigidly (rotation
about the y axis through (0, 0, z0), shift). Depth images are ray-cast exactly (Newton per pixel on the
parametric surface), so the only error is float precision.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion.camera import Intrinsics, backproject_depth
from fusion.frame import RGBDFrame

# (centre x, centre y, height m, sigma m)
DEFAULT_BUMPS = ((-0.12, -0.08, 0.03, 0.05), (0.1, 0.06, 0.025, 0.06), (0.02, -0.12, 0.02, 0.04),
                 (-0.06, 0.13, 0.02, 0.05), (0.15, -0.1, 0.015, 0.04))


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


@dataclass(frozen=True)
class BumpySheet:
    """The sheet and its deformation (see module doc). roll=None: no rolling (canonical shape)."""

    z0: float = 0.8
    half: float = 0.25
    bumps: tuple = DEFAULT_BUMPS
    roll: float | None = None
    angle: float = 0.0
    shift: tuple = (0.0, 0.0, 0.0)

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """h(x, y) in metres."""
        h = np.zeros(np.broadcast(x, y).shape)
        for bx, by, amp, sig in self.bumps:
            h = h + amp * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * sig * sig))
        return h

    def surface(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Surface points [..., 3] at sheet parameters (x, y)."""
        h = self.height(x, y)
        if self.roll is None:
            local = np.stack([x, y, self.z0 - h], -1)
        else:
            th = x / self.roll
            radial = np.stack([np.sin(th), np.zeros_like(th), -np.cos(th)], -1)
            axis = np.stack([np.zeros_like(x), y, np.full_like(x, self.z0 + self.roll)], -1)
            local = axis + (self.roll + h)[..., None] * radial
        c0 = np.array([0.0, 0.0, self.z0])
        return (local - c0) @ _rot_y(self.angle).T + c0 + np.asarray(self.shift, np.float64)

    def render(self, k: Intrinsics, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Ray-cast depth float32 [H,W] (0 = miss) and the sheet parameters float64 [H,W,2] of each hit."""
        u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
        d = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], -1)
        x, y, s = self.z0 * d[..., 0], self.z0 * d[..., 1], np.full(u.shape, self.z0)
        eps = 1e-6
        for _ in range(iterations):
            f = self.surface(x, y) - s[..., None] * d
            jx = (self.surface(x + eps, y) - self.surface(x - eps, y)) / (2 * eps)
            jy = (self.surface(x, y + eps) - self.surface(x, y - eps)) / (2 * eps)
            jac = np.stack([jx, jy, -d], -1)
            det = np.linalg.det(jac)
            ok = np.abs(det) > 1e-12
            step = np.linalg.solve(np.where(ok[..., None, None], jac, np.eye(3)), -f[..., None])[..., 0]
            step = np.clip(step, -0.05, 0.05)
            x, y, s = x + step[..., 0], y + step[..., 1], s + step[..., 2]
        f = self.surface(x, y) - s[..., None] * d
        hit = (np.linalg.norm(f, axis=-1) < 1e-9) & (np.abs(x) <= self.half) & (np.abs(y) <= self.half) & (s > 0)
        return np.where(hit, s, 0.0).astype(np.float32), np.stack([x, y], -1)

    def normals(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Unit surface normals [..., 3] at (x, y), facing the camera."""
        eps = 1e-6
        jx = (self.surface(x + eps, y) - self.surface(x - eps, y)) / (2 * eps)
        jy = (self.surface(x, y + eps) - self.surface(x, y - eps)) / (2 * eps)
        n = np.cross(jx, jy)
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        p = self.surface(x, y)
        return np.where(((n * p).sum(-1) > 0)[..., None], -n, n)


@dataclass
class SurfaceCase:
    """Canonical + live frame, the canonical model samples and the true canonical -> live warp."""

    k: Intrinsics
    canonical: RGBDFrame
    live: RGBDFrame
    model_points: np.ndarray
    model_normals: np.ndarray
    canonical_sheet: BumpySheet
    live_sheet: BumpySheet

    def true_warp(self, p: np.ndarray) -> np.ndarray:
        """Live positions float32 [M,3] of canonical surface points p [M,3] (on the canonical sheet)."""
        p = np.asarray(p, np.float64)
        return self.live_sheet.surface(p[:, 0], p[:, 1]).astype(np.float32)


def _frame(i: int, depth: np.ndarray, k: Intrinsics) -> RGBDFrame:
    return RGBDFrame(i, float(i), np.zeros((k.height, k.width, 3), np.uint8), depth, k)


def sheet_case(k: Intrinsics, roll: float | None = 1.0, angle: float = 0.04, shift=(0.01, -0.008, 0.01),
               canonical: BumpySheet | None = None) -> SurfaceCase:
    """Canonical bumpy sheet -> rolled (radius `roll` m) and rigidly moved sheet."""
    c = canonical or BumpySheet()
    live = BumpySheet(c.z0, c.half, c.bumps, roll, angle, tuple(shift))
    d0, xy = c.render(k)
    d1, _ = live.render(k)
    hit = d0 > 0
    pts = backproject_depth(d0, k)[hit].astype(np.float32)
    nrm = c.normals(xy[hit][:, 0], xy[hit][:, 1]).astype(np.float32)
    return SurfaceCase(k, _frame(0, d0, k), _frame(1, d1, k), pts, nrm, c, live)
