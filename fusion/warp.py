"""Warp of canonical points and normals by a deformation-graph motion (NNRT eq. 2 / DynamicFusion).

For a canonical point p with anchors a_k (graph node ids, -1 = none) and skinning weights w_k,

    W(p) = sum_k w_k (R_{a_k} (p - g_{a_k}) + g_{a_k} + t_{a_k})          (points)
    n'   = normalize(sum_k w_k R_{a_k} n)                                (normals)

where g are the canonical node positions and (R, t) the per-node motion (fusion.graph.GraphMotion).
Weights are expected to sum to 1 over the valid anchors (fusion.graph.skinning guarantees it); anchors
equal to -1 contribute nothing. A point with no valid anchor is returned unchanged (its canonical
position / normal): callers that must skip such points test `anchors[:, 0] < 0`.

Three implementations with one meaning:
- `warp_points_np` / `warp_normals_np`: plain numpy, the slow and obviously-correct reference;
- `warp_points` / `warp_normals`: numba, parallel over points (the CPU path), built on the per-point
  `@njit` helpers `warp_point_nb` / `warp_normal_nb` which other numba kernels (TSDF integration) call;
- `warp_points_t` / `warp_normals_t`: torch, differentiable with respect to every floating input, any device.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numba as nb
import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "warp_points_np",
    "warp_normals_np",
    "warp_points",
    "warp_normals",
    "warp_point_nb",
    "warp_normal_nb",
    "warp_points_t",
    "warp_normals_t",
]


def _check(points: np.ndarray, anchors: np.ndarray, weights: np.ndarray, nodes: np.ndarray,
           rotations: np.ndarray, translations: np.ndarray) -> None:
    m = points.shape[0]
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [M, 3], got {points.shape}")
    if anchors.shape != weights.shape or anchors.ndim != 2 or anchors.shape[0] != m:
        raise ValueError(f"anchors {anchors.shape} and weights {weights.shape} must both be [M, K] with M={m}")
    n = nodes.shape[0]
    if nodes.shape != (n, 3) or rotations.shape != (n, 3, 3) or translations.shape != (n, 3):
        raise ValueError(
            f"nodes {nodes.shape}, rotations {rotations.shape}, translations {translations.shape} disagree on N")
    if m and anchors.size and int(anchors.max(initial=-1)) >= n:
        raise ValueError(f"anchor id {int(anchors.max())} out of range for {n} nodes")


# --------------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------------
def warp_points_np(points: np.ndarray, anchors: np.ndarray, weights: np.ndarray, nodes: np.ndarray,
                   rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """Reference warp of points (plain numpy, float64 inside).

    points float [M,3] m; anchors int [M,K] (-1 = none); weights float [M,K]; nodes float [N,3] m;
    rotations float [N,3,3]; translations float [N,3] m. Returns float32 [M,3] m.
    """
    points = np.asarray(points, np.float64)
    anchors = np.asarray(anchors)
    weights = np.asarray(weights, np.float64)
    nodes = np.asarray(nodes, np.float64)
    rotations = np.asarray(rotations, np.float64)
    translations = np.asarray(translations, np.float64)
    _check(points, anchors, weights, nodes, rotations, translations)
    out = np.zeros_like(points)
    any_valid = np.zeros(points.shape[0], bool)
    for k in range(anchors.shape[1]):
        a = anchors[:, k]
        valid = a >= 0
        ai = np.where(valid, a, 0)
        w = np.where(valid, weights[:, k], 0.0)
        g = nodes[ai]
        moved = np.einsum("mij,mj->mi", rotations[ai], points - g) + g + translations[ai]
        out += w[:, None] * moved
        any_valid |= valid
    out[~any_valid] = points[~any_valid]
    return out.astype(np.float32)


def warp_normals_np(normals: np.ndarray, anchors: np.ndarray, weights: np.ndarray,
                    rotations: np.ndarray) -> np.ndarray:
    """Reference warp of unit normals: normalize(sum_k w_k R_k n).

    normals float [M,3]; anchors int [M,K]; weights float [M,K]; rotations float [N,3,3].
    Returns float32 [M,3] unit vectors (a zero input stays zero).
    """
    normals = np.asarray(normals, np.float64)
    anchors = np.asarray(anchors)
    weights = np.asarray(weights, np.float64)
    rotations = np.asarray(rotations, np.float64)
    n = rotations.shape[0]
    _check(normals, anchors, weights, np.zeros((n, 3)), rotations, np.zeros((n, 3)))
    out = np.zeros_like(normals)
    any_valid = np.zeros(normals.shape[0], bool)
    for k in range(anchors.shape[1]):
        a = anchors[:, k]
        valid = a >= 0
        ai = np.where(valid, a, 0)
        w = np.where(valid, weights[:, k], 0.0)
        out += w[:, None] * np.einsum("mij,mj->mi", rotations[ai], normals)
        any_valid |= valid
    out[~any_valid] = normals[~any_valid]
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.where(norm > 0, out / np.where(norm > 0, norm, 1.0), 0.0)
    return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# numba
# --------------------------------------------------------------------------------------------------
@nb.njit(cache=True, inline="always", fastmath=False)
def warp_point_nb(x: float, y: float, z: float, anchors_row: np.ndarray, weights_row: np.ndarray,
                  nodes: np.ndarray, rotations: np.ndarray, translations: np.ndarray) -> tuple[float, float, float]:
    """Warp one point (x, y, z) m; anchors_row int [K], weights_row float [K]; the rest as `warp_points`.

    Returns the warped (x', y', z') in metres; the input point when no anchor is valid. Callable from
    other numba kernels (nopython mode).
    """
    ox = 0.0
    oy = 0.0
    oz = 0.0
    hit = False
    for k in range(anchors_row.shape[0]):
        a = anchors_row[k]
        if a < 0:
            continue
        hit = True
        w = weights_row[k]
        gx = nodes[a, 0]
        gy = nodes[a, 1]
        gz = nodes[a, 2]
        dx = x - gx
        dy = y - gy
        dz = z - gz
        ox += w * (rotations[a, 0, 0] * dx + rotations[a, 0, 1] * dy + rotations[a, 0, 2] * dz + gx + translations[a, 0])
        oy += w * (rotations[a, 1, 0] * dx + rotations[a, 1, 1] * dy + rotations[a, 1, 2] * dz + gy + translations[a, 1])
        oz += w * (rotations[a, 2, 0] * dx + rotations[a, 2, 1] * dy + rotations[a, 2, 2] * dz + gz + translations[a, 2])
    if not hit:
        return x, y, z
    return ox, oy, oz


@nb.njit(cache=True, inline="always", fastmath=False)
def warp_normal_nb(nx: float, ny: float, nz: float, anchors_row: np.ndarray, weights_row: np.ndarray,
                   rotations: np.ndarray) -> tuple[float, float, float]:
    """Warp one unit normal: normalize(sum_k w_k R_k n); the input when no anchor is valid."""
    ox = 0.0
    oy = 0.0
    oz = 0.0
    hit = False
    for k in range(anchors_row.shape[0]):
        a = anchors_row[k]
        if a < 0:
            continue
        hit = True
        w = weights_row[k]
        ox += w * (rotations[a, 0, 0] * nx + rotations[a, 0, 1] * ny + rotations[a, 0, 2] * nz)
        oy += w * (rotations[a, 1, 0] * nx + rotations[a, 1, 1] * ny + rotations[a, 1, 2] * nz)
        oz += w * (rotations[a, 2, 0] * nx + rotations[a, 2, 1] * ny + rotations[a, 2, 2] * nz)
    if not hit:
        ox, oy, oz = nx, ny, nz
    nrm = np.sqrt(ox * ox + oy * oy + oz * oz)
    if nrm > 0.0:
        return ox / nrm, oy / nrm, oz / nrm
    return 0.0, 0.0, 0.0


@nb.njit(cache=True, parallel=True, nogil=True)
def _warp_points_kernel(points, anchors, weights, nodes, rotations, translations, out):  # pragma: no cover - numba
    for i in nb.prange(points.shape[0]):
        x, y, z = warp_point_nb(points[i, 0], points[i, 1], points[i, 2], anchors[i], weights[i], nodes, rotations,
                                translations)
        out[i, 0] = x
        out[i, 1] = y
        out[i, 2] = z


@nb.njit(cache=True, parallel=True, nogil=True)
def _warp_normals_kernel(normals, anchors, weights, rotations, out):  # pragma: no cover - numba
    for i in nb.prange(normals.shape[0]):
        x, y, z = warp_normal_nb(normals[i, 0], normals[i, 1], normals[i, 2], anchors[i], weights[i], rotations)
        out[i, 0] = x
        out[i, 1] = y
        out[i, 2] = z


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def warp_points(points: np.ndarray, anchors: np.ndarray, weights: np.ndarray, nodes: np.ndarray,
                rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """Warp points with the numba kernel (parallel over points; float32 storage, float64 accumulation).

    points float32 [M,3] m; anchors int32 [M,K] (-1 = none); weights float32 [M,K]; nodes float32 [N,3];
    rotations float32 [N,3,3]; translations float32 [N,3] m. Returns float32 [M,3] m. Same result as
    `warp_points_np`.
    """
    points, weights, nodes, rotations, translations = map(_f32, (points, weights, nodes, rotations, translations))
    anchors = np.ascontiguousarray(anchors, dtype=np.int32)
    _check(points, anchors, weights, nodes, rotations, translations)
    out = np.empty_like(points)
    if points.shape[0]:
        _warp_points_kernel(points, anchors, weights, nodes, rotations, translations, out)
    return out


def warp_normals(normals: np.ndarray, anchors: np.ndarray, weights: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Warp unit normals with the numba kernel: normalize(sum_k w_k R_k n).

    normals float32 [M,3]; anchors int32 [M,K]; weights float32 [M,K]; rotations float32 [N,3,3].
    Returns float32 [M,3]. Same result as `warp_normals_np`.
    """
    normals, weights, rotations = map(_f32, (normals, weights, rotations))
    anchors = np.ascontiguousarray(anchors, dtype=np.int32)
    n = rotations.shape[0]
    _check(normals, anchors, weights, np.zeros((n, 3), np.float32), rotations, np.zeros((n, 3), np.float32))
    out = np.empty_like(normals)
    if normals.shape[0]:
        _warp_normals_kernel(normals, anchors, weights, rotations, out)
    return out


# --------------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------------
def _gather_t(anchors: "torch.Tensor", weights: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    import torch

    valid = anchors >= 0
    idx = torch.where(valid, anchors, torch.zeros_like(anchors)).long()
    w = torch.where(valid, weights, torch.zeros_like(weights))
    return idx, w, valid.any(dim=-1)


def warp_points_t(points: "torch.Tensor", anchors: "torch.Tensor", weights: "torch.Tensor", nodes: "torch.Tensor",
                  rotations: "torch.Tensor", translations: "torch.Tensor") -> "torch.Tensor":
    """Differentiable torch warp of points (any device, any float dtype).

    points [M,3] m; anchors int/long [M,K] (-1 = none); weights [M,K]; nodes [N,3]; rotations [N,3,3];
    translations [N,3]. Returns [M,3] in the dtype of `points`; gradients flow to points, weights, nodes,
    rotations and translations. Points without a valid anchor are returned unchanged.
    """
    import torch

    idx, w, any_valid = _gather_t(anchors, weights)
    g = nodes[idx]  # [M,K,3]
    local = points[:, None, :] - g
    moved = torch.einsum("mkij,mkj->mki", rotations[idx], local) + g + translations[idx]
    out = (w[..., None].to(moved.dtype) * moved).sum(dim=1)
    return torch.where(any_valid[:, None], out, points)


def warp_normals_t(normals: "torch.Tensor", anchors: "torch.Tensor", weights: "torch.Tensor",
                   rotations: "torch.Tensor") -> "torch.Tensor":
    """Differentiable torch warp of unit normals: normalize(sum_k w_k R_k n). Shapes as `warp_points_t`."""
    import torch

    idx, w, any_valid = _gather_t(anchors, weights)
    rn = torch.einsum("mkij,mj->mki", rotations[idx], normals)
    out = (w[..., None].to(rn.dtype) * rn).sum(dim=1)
    out = torch.where(any_valid[:, None], out, normals)
    norm = out.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, out / norm.clamp_min(1e-30), torch.zeros_like(out))
