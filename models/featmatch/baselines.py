"""Baselines of the feature-matching deformation (used by the bench).

- direct matching (paper Fig. 7): no latent interpolation, Gauss-Newton feature matching in one step
  from z_src straight to z_tgt (no search-radius limit, more iterations).
- nearest-neighbour projection: every source vertex snaps to the closest point of the target surface
  (or the closest target point of a cloud).

Vertices float [V, 3] in the unit box.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy.spatial import cKDTree

from models.common.io import Mesh

from .config import MatchConfig
from .matching import MatchResult, feature_match
from .model import ImplicitDecoder


def direct_matching(decoder: ImplicitDecoder, vertices: np.ndarray, z_src: torch.Tensor, z_tgt: torch.Tensor,
                    cfg: MatchConfig = MatchConfig(), gn_iters: int = 10) -> MatchResult:
    """Feature matching without interpolation: T = 1, `gn_iters` Gauss-Newton iterations, no radius limit."""
    return feature_match(decoder, vertices, z_src, z_tgt, replace(cfg, steps=1, gn_iters=gn_iters, search_radius=None))


def nearest_projection(vertices: np.ndarray, target: Mesh) -> np.ndarray:
    """Closest point of the target surface (open3d ray-casting scene) or cloud (KD-tree) for each vertex.

    Returns float64 [V, 3].
    """
    v = np.asarray(vertices, dtype=np.float64)
    if target.is_cloud:
        _, i = cKDTree(target.vertices).query(v, k=1)
        return target.vertices[i].astype(np.float64)
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(target.vertices, np.float32)), o3d.core.Tensor(np.asarray(target.faces, np.uint32)))
    ans = scene.compute_closest_points(o3d.core.Tensor(v.astype(np.float32)))
    return ans["points"].numpy().astype(np.float64)


def nearest_projection_reference(vertices: np.ndarray, target: Mesh) -> np.ndarray:
    """Slow numpy reference of `nearest_projection` for meshes: closest point on every triangle (Ericson)."""
    tri = np.asarray(target.vertices, dtype=np.float64)[target.faces]
    out = np.zeros((len(vertices), 3))
    for k, p in enumerate(np.asarray(vertices, dtype=np.float64)):
        best, bd = None, np.inf
        for a, b, c in tri:
            q = _closest_on_triangle(p, a, b, c)
            d = float(((q - p) ** 2).sum())
            if d < bd:
                best, bd = q, d
        out[k] = best
    return out


def _closest_on_triangle(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = ab @ ap, ac @ ap
    if d1 <= 0 and d2 <= 0:
        return a
    bp = p - b
    d3, d4 = ab @ bp, ac @ bp
    if d3 >= 0 and d4 <= d3:
        return b
    vc = d1 * d4 - d3 * d2
    if vc <= 0 and d1 >= 0 and d3 <= 0:
        return a + d1 / (d1 - d3) * ab
    cp = p - c
    d5, d6 = ab @ cp, ac @ cp
    if d6 >= 0 and d5 <= d6:
        return c
    vb = d5 * d2 - d1 * d6
    if vb <= 0 and d2 >= 0 and d6 <= 0:
        return a + d2 / (d2 - d6) * ac
    va = d3 * d6 - d5 * d4
    if va <= 0 and (d4 - d3) >= 0 and (d5 - d6) >= 0:
        return b + (d4 - d3) / ((d4 - d3) + (d5 - d6)) * (c - b)
    den = 1.0 / (va + vb + vc)
    return a + ab * vb * den + ac * vc * den
