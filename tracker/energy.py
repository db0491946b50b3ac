"""The energy terms of non-rigid tracking on a deformation graph: one definition each, in torch.

Every term returns a `ResidualBlock`: weighted residual rows r [R] and their analytic Jacobian with respect
to the 6 motion parameters of the (at most A) graph nodes each row depends on, jac [R, A, 6], with the node
ids idx [R, A] (-1 = none). Parameters per node, in this order: (w, dt) = an so(3) increment of the node
rotation, left-multiplied (R <- exp([w]_x) R), and a translation increment (t <- t + dt); the Jacobians are
taken at w = 0, dt = 0 (NNRT appendix B).

The same functions serve the classical tracker (float64 on the CPU, assembled into block-sparse normal
equations by tracker/solver.py) and the differentiable solver of the neural tracker (any device / dtype,
autograd flows through residuals and Jacobians). Weights follow NNRT: a term with weight lambda and
per-correspondence confidences c contributes lambda * sum_i c_i^2 ||r_i||^2, i.e. each row is scaled by
sqrt(lambda) * c_i.

Terms (p canonical point with skinning anchors/weights, W(p) its warp, NNRT eq. 2):
- point_to_plane_term:  n_q . (W(p) - q)              (ICP, live point q with live normal n_q)
- point_to_point_term:  W(p) - q                      (3 rows)
- reprojection_term:    pi(W(p)) - u                  (NNRT 2D term, pixels, 2 rows)
- depth_term:           W(p)_z - z                    (NNRT depth term, metres)
- arap_term:            R_i (g_j - g_i) + g_i + t_i - (g_j + t_j)   over graph edges (NNRT eq. 11, 3 rows)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from fusion.camera import Intrinsics
from tracker.so3 import hat_t

__all__ = [
    "ResidualBlock",
    "WarpParts",
    "warp_parts",
    "warp_jacobian",
    "point_to_plane_term",
    "point_to_point_term",
    "reprojection_term",
    "depth_term",
    "arap_term",
    "total_energy",
    "dense_jacobian_t",
]


@dataclass
class ResidualBlock:
    """Weighted residual rows of one energy term and their sparse Jacobian.

    r: [R] residuals (already scaled by sqrt(lambda) * confidence); idx: long [R, A] node ids (-1 = none);
    jac: [R, A, 6] d r / d (w, dt) of each listed node, or None when only residuals were asked for.
    """

    name: str
    r: torch.Tensor
    idx: torch.Tensor
    jac: torch.Tensor | None

    def energy(self) -> torch.Tensor:
        """sum r^2 (a 0-d tensor)."""
        return (self.r * self.r).sum()

    @property
    def num_rows(self) -> int:
        """R."""
        return int(self.r.shape[0])


@dataclass
class WarpParts:
    """Warped points and the pieces their Jacobian needs.

    warped [M,3] W(p); rotated [M,A,3] R_k (p - g_k) per anchor; idx long [M,A] (-1 = none);
    w [M,A] skinning weights (0 where idx = -1); valid bool [M]: at least one anchor.
    """

    warped: torch.Tensor
    rotated: torch.Tensor
    idx: torch.Tensor
    w: torch.Tensor
    valid: torch.Tensor


def warp_parts(points: torch.Tensor, anchors: torch.Tensor, weights: torch.Tensor, nodes: torch.Tensor,
               rotations: torch.Tensor, translations: torch.Tensor) -> WarpParts:
    """Warp points (NNRT eq. 2) keeping what the Jacobians need.

    points [M,3] m (canonical / source frame); anchors int [M,A] (-1 = none); weights [M,A]; nodes [N,3];
    rotations [N,3,3]; translations [N,3]. All floating tensors should share one dtype and device.
    Points without a valid anchor are returned unchanged (and get zero Jacobians).
    """
    idx = anchors.long()
    ok = idx >= 0
    safe = torch.where(ok, idx, torch.zeros_like(idx))
    w = torch.where(ok, weights.to(points.dtype), torch.zeros((), dtype=points.dtype, device=points.device))
    g = nodes[safe]
    rotated = torch.einsum("maij,maj->mai", rotations[safe], points[:, None, :] - g)
    moved = rotated + g + translations[safe]
    warped = (w[..., None] * moved).sum(1)
    valid = ok.any(1)
    warped = torch.where(valid[:, None], warped, points)
    return WarpParts(warped=warped, rotated=rotated, idx=torch.where(ok, idx, torch.full_like(idx, -1)), w=w,
                     valid=valid)


def warp_jacobian(parts: WarpParts) -> torch.Tensor:
    """d W(p) / d (w_k, dt_k) for every anchor k: [M, A, 3, 6].

    Left-multiplied rotation increment: d(exp([w]_x) v)/dw at 0 = -[v]_x with v = R_k (p - g_k), so
    dW/dw_k = -w_k [v_k]_x and dW/dt_k = w_k I.
    """
    wk = parts.w[..., None, None]
    eye = torch.eye(3, dtype=parts.rotated.dtype, device=parts.rotated.device)
    return torch.cat([-wk * hat_t(parts.rotated), wk * eye], dim=-1)


def _scale(parts: WarpParts, weights: torch.Tensor | None, lam: float) -> torch.Tensor:
    s = torch.full_like(parts.warped[:, 0], float(lam) ** 0.5)
    if weights is not None:
        s = s * weights.to(s.dtype)
    return s * parts.valid.to(s.dtype)


def _data_block(name: str, parts: WarpParts, res: torch.Tensor, proj: torch.Tensor, scale: torch.Tensor,
                jacobian: bool) -> ResidualBlock:
    """Rows res [M,P] with d res / d W(p) = proj [M,P,3], scaled per point by scale [M]."""
    m, p = res.shape
    r = (scale[:, None] * res).reshape(m * p)
    idx = parts.idx[:, None, :].expand(m, p, parts.idx.shape[1]).reshape(m * p, -1)
    jac = None
    if jacobian:
        dw = warp_jacobian(parts)  # [M,A,3,6]
        jac = torch.einsum("mpc,macj->mpaj", proj * scale[:, None, None], dw).reshape(m * p, -1, 6)
    return ResidualBlock(name, r, idx, jac)


def point_to_plane_term(parts: WarpParts, target_points: torch.Tensor, target_normals: torch.Tensor,
                        weights: torch.Tensor | None = None, lam: float = 1.0, jacobian: bool = True) -> ResidualBlock:
    """Point-to-plane ICP rows n_q . (W(p) - q): one per correspondence.

    target_points [M,3] live points q (m); target_normals [M,3] unit live normals n_q; weights [M] or None
    (confidences c_i, 0 rejects a correspondence). Residuals in metres.
    """
    res = ((parts.warped - target_points) * target_normals).sum(-1, keepdim=True)
    return _data_block("icp", parts, res, target_normals[:, None, :], _scale(parts, weights, lam), jacobian)


def point_to_point_term(parts: WarpParts, target_points: torch.Tensor, weights: torch.Tensor | None = None,
                        lam: float = 1.0, jacobian: bool = True) -> ResidualBlock:
    """Point-to-point rows W(p) - q (3 per correspondence, x y z); target_points [M,3] m; weights [M] or None."""
    res = parts.warped - target_points
    eye = torch.eye(3, dtype=res.dtype, device=res.device).expand(res.shape[0], 3, 3)
    return _data_block("p2p", parts, res, eye, _scale(parts, weights, lam), jacobian)


def depth_term(parts: WarpParts, target_depth: torch.Tensor, weights: torch.Tensor | None = None, lam: float = 1.0,
               jacobian: bool = True) -> ResidualBlock:
    """NNRT depth rows W(p)_z - z (metres): target_depth [M] m (the depth of the target match); weights [M]."""
    res = (parts.warped[:, 2] - target_depth)[:, None]
    proj = torch.zeros_like(parts.warped)[:, None, :]
    proj[..., 2] = 1.0
    return _data_block("depth", parts, res, proj, _scale(parts, weights, lam), jacobian)


def reprojection_term(parts: WarpParts, target_uv: torch.Tensor, intrinsics: Intrinsics,
                      weights: torch.Tensor | None = None, lam: float = 0.001, jacobian: bool = True,
                      min_depth: float = 1e-3) -> ResidualBlock:
    """NNRT 2D rows pi(W(p)) - (u, v) in pixels (2 per correspondence, u then v).

    target_uv [M,2] target pixels (column, row); intrinsics: the target camera. Points with
    W(p)_z <= min_depth get zero rows (they cannot be projected).
    """
    x, y, z = parts.warped[:, 0], parts.warped[:, 1], parts.warped[:, 2]
    front = z > min_depth
    zs = torch.where(front, z, torch.ones_like(z))
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    res = torch.stack([fx * x / zs + cx - target_uv[:, 0], fy * y / zs + cy - target_uv[:, 1]], -1)
    zero = torch.zeros_like(z)
    proj = torch.stack([torch.stack([fx / zs, zero, -fx * x / (zs * zs)], -1),
                        torch.stack([zero, fy / zs, -fy * y / (zs * zs)], -1)], -2)
    scale = _scale(parts, weights, lam) * front.to(z.dtype)
    res = torch.where(front[:, None], res, torch.zeros_like(res))
    return _data_block("reproj", parts, res, proj, scale, jacobian)


def arap_term(nodes: torch.Tensor, rotations: torch.Tensor, translations: torch.Tensor, edges: torch.Tensor,
              edge_weights: torch.Tensor | None = None, lam: float = 1.0, jacobian: bool = True) -> ResidualBlock:
    """ARAP rows over directed graph edges i -> j (NNRT eq. 11): R_i (g_j - g_i) + g_i + t_i - (g_j + t_j).

    nodes [N,3] m; rotations [N,3,3]; translations [N,3]; edges int [N,K] (-1 = none); edge_weights [N,K]
    or None (1). Each valid edge gives 3 rows (metres) scaled by sqrt(lam) * edge weight; idx [3E, 2] = (i, j).
    """
    n, k = edges.shape
    e = edges.long()
    ok = e >= 0
    src = torch.arange(n, device=nodes.device)[:, None].expand(n, k)[ok]
    dst = e[ok]
    d = nodes[dst] - nodes[src]
    v = torch.einsum("eij,ej->ei", rotations[src], d)
    res = v + nodes[src] + translations[src] - nodes[dst] - translations[dst]  # [E,3]
    s = torch.full_like(res[:, 0], float(lam) ** 0.5)
    if edge_weights is not None:
        s = s * edge_weights.to(res.dtype)[ok]
    ne = res.shape[0]
    r = (s[:, None] * res).reshape(ne * 3)
    idx = torch.stack([src, dst], -1)[:, None, :].expand(ne, 3, 2).reshape(ne * 3, 2)
    jac = None
    if jacobian:
        eye = torch.eye(3, dtype=res.dtype, device=res.device).expand(ne, 3, 3)
        ji = torch.cat([-hat_t(v), eye], -1)  # [E,3,6]
        jj = torch.cat([torch.zeros_like(eye), -eye], -1)
        jac = (s[:, None, None, None] * torch.stack([ji, jj], 2)).reshape(ne * 3, 2, 6)
    return ResidualBlock("arap", r, idx, jac)


def total_energy(blocks: list[ResidualBlock]) -> torch.Tensor:
    """sum over blocks of sum r^2."""
    return sum((b.energy() for b in blocks), torch.zeros((), dtype=blocks[0].r.dtype, device=blocks[0].r.device))


def dense_jacobian_t(block: ResidualBlock, n_nodes: int) -> torch.Tensor:
    """The dense Jacobian [R, 6N] of a block (parameter order: node-major, (w, dt) per node). For tests and
    small dense solves."""
    assert block.jac is not None
    r, a = block.idx.shape
    ok = block.idx >= 0
    cols = (torch.where(ok, block.idx, torch.zeros_like(block.idx))[..., None] * 6
            + torch.arange(6, device=block.idx.device)).reshape(r, a * 6)
    vals = (block.jac * ok[..., None].to(block.jac.dtype)).reshape(r, a * 6)
    out = torch.zeros((r, 6 * n_nodes), dtype=block.jac.dtype, device=block.jac.device)
    rows = torch.arange(r, device=block.idx.device)[:, None].expand(r, a * 6)
    return out.index_put((rows.reshape(-1), cols.reshape(-1)), vals.reshape(-1), accumulate=True)
