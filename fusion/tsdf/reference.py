"""Plain numpy reference of TSDF integration over a small dense grid (for tests; slow and obviously correct).

The dense grid has voxel (i, j, k) centred at origin + ((i, j, k) + 0.5) * voxel (metres, canonical frame),
exactly like the block-sparse volume, so both can be compared voxel by voxel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from fusion.frame import RGBDFrame


@dataclass
class DenseTSDF:
    """A dense TSDF grid: tsdf float32 [X, Y, Z] (1 = far/unobserved), weight float32 [X, Y, Z],
    color uint8 [X, Y, Z, 3]; origin float64 [3] metres; voxel edge in metres."""

    tsdf: np.ndarray
    weight: np.ndarray
    color: np.ndarray
    origin: np.ndarray
    voxel: float

    @staticmethod
    def empty(origin: np.ndarray, shape: tuple[int, int, int], voxel: float) -> "DenseTSDF":
        """An unobserved grid of `shape` voxels."""
        return DenseTSDF(np.ones(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape + (3,), np.uint8),
                         np.asarray(origin, np.float64), float(voxel))

    def centers(self) -> np.ndarray:
        """Voxel centres float64 [X, Y, Z, 3] metres."""
        idx = np.stack(np.meshgrid(*[np.arange(s) for s in self.tsdf.shape], indexing="ij"), -1)
        return self.origin + (idx + 0.5) * self.voxel


def integrate_dense(
    vol: DenseTSDF,
    frame: RGBDFrame,
    trunc: float,
    max_weight: float,
    depth_min: float,
    depth_max: float,
    to_live: Callable[[np.ndarray], np.ndarray] | None = None,
    valid_voxels: np.ndarray | None = None,
    integrate_color: bool = True,
    check: tuple[np.ndarray, np.ndarray, int, float] | None = None,
    check_wide: tuple[float, float] | None = None,
    carve: tuple[np.ndarray, float] | None = None,
) -> int:
    """Fuse one frame into `vol` in place; returns the number of updated voxels.

    to_live maps canonical voxel centres float64 [M, 3] to the live camera frame (None = identity; pass a
    rigid transform or a graph warp); valid_voxels (bool [X, Y, Z]) restricts the update (e.g. voxels that
    have skinning anchors). Rule per voxel (same as the fast kernels): project to the nearest pixel, take
    the live depth d in [depth_min, depth_max], sdf = d - z; skip when sdf < -trunc; otherwise
    tsdf <- (tsdf w + min(1, sdf/trunc)) / (w + 1), w <- min(w + 1, max_weight), and when |sdf| <= trunc
    color <- floor((color w + c) / (w + 1) + 0.5).

    check = (points [P, 3], pix int [R, C], stride, dist): the warp-consistency check of the fast kernels
    (a voxel with sdf <= trunc is skipped when points[pix[round(v / stride), round(u / stride)]] exists and
    lies farther than 1.2 |sdf| + dist from the voxel centre). check_wide = (band, dist): the same check
    applied also to every voxel with sdf <= band at that dist (the mesh channel of the fast kernels updates
    only what passes the tracking channel's wider check too: pass (trunc, dist) of that channel).
    carve = (map float [H, W] from `carve_depth_np`, weight): silhouette carving (the mesh channel of the fast
    kernels): a voxel in view whose pixel has no valid depth but a carve depth c > 0, with z <= c, gets
    tsdf <- (tsdf w + weight) / (w + weight), w <- min(w + weight, max_weight); not counted as updated.
    """
    k = frame.intrinsics
    p = vol.centers().reshape(-1, 3)
    x = p if to_live is None else np.asarray(to_live(p), np.float64)
    ok = x[:, 2] > 1e-6
    if valid_voxels is not None:
        ok &= valid_voxels.reshape(-1)
    z = np.where(ok, x[:, 2], 1.0)
    uf = k.fx * x[:, 0] / z + k.cx
    vf = k.fy * x[:, 1] / z + k.cy
    ok &= (uf > -0.5) & (uf < k.width - 0.5) & (vf > -0.5) & (vf < k.height - 0.5)
    u = np.clip(np.floor(uf + 0.5).astype(np.int64), 0, k.width - 1)
    r = np.clip(np.floor(vf + 0.5).astype(np.int64), 0, k.height - 1)
    d = frame.depth[r, u].astype(np.float64)
    d_ok = (d > 0) & (d >= depth_min) & (d <= depth_max)
    in_view = ok  # before the depth tests: what carving may mark free
    ok = ok & d_ok
    sdf = d - z
    ok &= sdf >= -trunc
    if check is not None and check[3] > 0:
        pts, pix, stride, dist = check
        rr = np.clip(np.floor(vf / stride + 0.5).astype(np.int64), 0, pix.shape[0] - 1)
        cc = np.clip(np.floor(uf / stride + 0.5).astype(np.int64), 0, pix.shape[1] - 1)
        q = pix[rr, cc]
        e = np.linalg.norm(p - pts[np.maximum(q, 0)], axis=1)
        ok &= ~((sdf <= trunc) & (q >= 0) & (e > 1.2 * np.abs(sdf) + dist))
        if check_wide is not None:
            ok &= ~((sdf <= check_wide[0]) & (q >= 0) & (e > 1.2 * np.abs(sdf) + check_wide[1]))
    t = np.minimum(1.0, sdf / trunc)
    tsdf = vol.tsdf.reshape(-1)
    wgt = vol.weight.reshape(-1)
    col = vol.color.reshape(-1, 3)
    w_old = wgt[ok].astype(np.float64)
    w_new = w_old + 1.0
    tsdf[ok] = ((tsdf[ok] * w_old + t[ok]) / w_new).astype(np.float32)
    if integrate_color:
        cm = ok & (sdf <= trunc)
        wo = wgt[cm].astype(np.float64)[:, None]
        col[cm] = np.minimum(255.0, np.floor((col[cm] * wo + frame.color[r[cm], u[cm]]) / (wo + 1.0) + 0.5)).astype(np.uint8)
    wgt[ok] = np.minimum(w_new, max_weight).astype(np.float32)
    if carve is not None:
        cmap, cw = carve
        cz = np.asarray(cmap, np.float64)[r, u]
        free = in_view & ~d_ok & (cz > 0) & (z <= cz)
        wo = wgt[free].astype(np.float64)
        tsdf[free] = ((tsdf[free] * wo + cw) / (wo + cw)).astype(np.float32)
        wgt[free] = np.minimum(wo + cw, max_weight).astype(np.float32)
    return int(ok.sum())


def carve_depth_np(depth: np.ndarray, radius: float, depth_min: float, depth_max: float) -> np.ndarray:
    """Plain reference of `kernels_nb.carve_depth`: at every pixel without valid depth (valid: in
    [depth_min, depth_max]) within `radius` pixels of a valid one, the depth of the nearest valid pixel (ties:
    the first in row-major order), else 0. float32 [H, W]."""
    d = np.asarray(depth, np.float64)
    valid = (d > 0) & (d >= depth_min) & (d <= depth_max)
    out = np.zeros(d.shape, np.float32)
    vr, vc = np.nonzero(valid)  # row-major order
    if len(vr) == 0:
        return out
    for r, c in zip(*np.nonzero(~valid)):
        d2 = (vr - r) ** 2 + (vc - c) ** 2
        j = int(np.argmin(d2))  # the first minimum in row-major order
        if d2[j] <= radius * radius:
            out[r, c] = d[vr[j], vc[j]]
    return out
