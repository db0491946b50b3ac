"""Omega: the differentiable Gauss-Newton solver of the neural tracker (NNRT section 4.3, appendix B.2).

Given dense correspondences (source point p -> target pixel u with target depth z) and their weights w,
it finds the graph motion minimising

    lambda_2d * sum_i w_i^2 |pi(W(p_i)) - u_i|^2  +  lambda_depth * sum_i w_i^2 (W(p_i)_z - z_i)^2
      + lambda_arap * E_arap                                               (NNRT eq. 8-11; 0.001, 1, 1)

with a fixed number of Gauss-Newton iterations from the identity (3 in training). The residuals and
analytic Jacobians are the single definitions in tracker/energy.py (the classical tracker uses the same
ones); the normal equations are assembled densely in torch and solved by Cholesky
(tracker.solver, linear_solver="dense"), so torch autograd differentiates through the linear solve:
gradients reach the correspondences (hence Phi) and the weights (hence Psi). `tests/tracker/
test_diffsolver.py` checks these gradients with torch.autograd.gradcheck in float64.

Node filtering (NNRT): a node is *supported* when at least `min_node_correspondences` weighted
correspondences are anchored to it; connected clusters of the graph with fewer than `min_cluster_nodes`
supported nodes are removed from the problem (they keep the initial motion and are masked out of the
losses), so that no part of the system is left without data.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fusion.camera import Intrinsics
from tracker.energy import arap_term, depth_term, reprojection_term, warp_parts
from tracker.solver import SolverConfig, gauss_newton

__all__ = ["DiffSolverConfig", "SolveResult", "solve_motion", "node_filter", "arap_edge_weights",
           "sample_correspondences"]


@dataclass(frozen=True)
class DiffSolverConfig:
    """Settings of Omega.

    lambda_2d / lambda_depth / lambda_arap: NNRT term weights (0.001, 1, 1).
    iterations: Gauss-Newton iterations (3 in training, NNRT).
    damping: Levenberg term mu added to the normal equations (keeps the solve well posed).
    linear_solver: "dense" (torch Cholesky, differentiable) or "pcg" / "direct" (block-sparse, numba /
      scipy; inference only, for large graphs).
    adaptive: Levenberg-Marquardt step acceptance (inference); False in training (every step taken).
    arap_edge_weighting: scale ARAP rows by K * normalised graph edge weights (as the classical tracker).
    min_node_correspondences: correspondences (weight > min_weight) a node needs to be supported.
    min_cluster_nodes: supported nodes a graph cluster needs to stay in the problem.
    min_weight: a correspondence counts towards node support when its weight exceeds this.
    """

    lambda_2d: float = 0.001
    lambda_depth: float = 1.0
    lambda_arap: float = 1.0
    iterations: int = 3
    damping: float = 1e-4
    linear_solver: str = "dense"
    adaptive: bool = False
    arap_edge_weighting: bool = True
    min_node_correspondences: int = 3
    min_cluster_nodes: int = 2
    min_weight: float = 1e-3


@dataclass
class SolveResult:
    """Motion over all N graph nodes (rotations [N,3,3], translations [N,3], torch, differentiable), the
    nodes that took part (bool tensor [N]), whether the solve succeeded, energies per iteration."""

    rotations: torch.Tensor
    translations: torch.Tensor
    node_mask: torch.Tensor
    ok: bool = True
    message: str = ""
    energies: list[float] = field(default_factory=list)


def arap_edge_weights(edges: np.ndarray, edge_weights: np.ndarray | None) -> np.ndarray | None:
    """K * edge weights normalised per node (rows sum to K over valid edges), float64 [N,K]; None when the
    graph carries no weights (all ones)."""
    if edge_weights is None:
        return None
    w = np.asarray(edge_weights, np.float64) * (np.asarray(edges) >= 0)
    s = w.sum(1, keepdims=True)
    return np.where(s > 0, w * edges.shape[1] / np.where(s > 0, s, 1.0), 0.0)


def _components(edges: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = edges.shape[0]
    src = np.repeat(np.arange(n), edges.shape[1])
    dst = edges.ravel()
    ok = dst >= 0
    a = coo_matrix((np.ones(int(ok.sum())), (src[ok], dst[ok])), shape=(n, n))
    return connected_components(a, directed=False)[1]


def node_filter(anchors: np.ndarray, conf: np.ndarray, edges: np.ndarray, n_nodes: int,
                cfg: DiffSolverConfig = DiffSolverConfig()) -> np.ndarray:
    """bool [N]: nodes kept in the problem (see the module docstring).

    anchors int [M,A] (-1 none) of the correspondences; conf float [M] their weights (0 = rejected);
    edges int [N,K].
    """
    if n_nodes == 0:
        return np.zeros(0, bool)
    a = np.asarray(anchors)
    use = np.asarray(conf) > cfg.min_weight
    ids = a[use].ravel()
    ids = ids[ids >= 0]
    count = np.bincount(ids, minlength=n_nodes)[:n_nodes]
    supported = count >= cfg.min_node_correspondences
    labels = _components(np.asarray(edges))
    per_cluster = np.bincount(labels, weights=supported.astype(np.float64))
    return per_cluster[labels] >= cfg.min_cluster_nodes


def _remap(keep: np.ndarray) -> np.ndarray:
    new = np.full(len(keep), -1, np.int64)
    new[keep] = np.arange(int(keep.sum()))
    return new


def solve_motion(points: torch.Tensor, anchors: torch.Tensor, weights: torch.Tensor, nodes: torch.Tensor,
                 edges: torch.Tensor, target_uv: torch.Tensor, target_depth: torch.Tensor, conf: torch.Tensor,
                 intrinsics: Intrinsics, cfg: DiffSolverConfig = DiffSolverConfig(),
                 edge_weights: torch.Tensor | None = None, rotations: torch.Tensor | None = None,
                 translations: torch.Tensor | None = None, node_mask: np.ndarray | None = None) -> SolveResult:
    """Solve for the graph motion from weighted correspondences (differentiable with linear_solver="dense").

    points [M,3] source points (canonical frame, metres); anchors long [M,A] (-1 none); weights [M,A]
    skinning weights; nodes [N,3]; edges long [N,K] (-1 none); target_uv [M,2] target pixels (column, row);
    target_depth [M] metres; conf [M] in [0,1] (0 rejects); intrinsics: the target camera; edge_weights
    [N,K] ARAP row scales or None; rotations [N,3,3] / translations [N,3]: initial motion (identity when
    None); node_mask bool [N]: nodes to solve for (None: `node_filter`). All floating tensors share one dtype
    and device; gradients flow to points, target_uv, target_depth, conf (and the initial motion).
    Returns SolveResult; ok=False (motion = initial) when no node is left or the system is singular.
    """
    n = int(nodes.shape[0])
    dev, dt = nodes.device, nodes.dtype
    r0 = torch.eye(3, dtype=dt, device=dev).expand(n, 3, 3).clone() if rotations is None else rotations
    t0 = torch.zeros(n, 3, dtype=dt, device=dev) if translations is None else translations
    an_np = anchors.detach().cpu().numpy()
    if node_mask is None:
        node_mask = node_filter(an_np, conf.detach().cpu().numpy(), edges.detach().cpu().numpy(), n, cfg)
    keep = np.asarray(node_mask, bool)
    mask_t = torch.from_numpy(keep).to(dev)
    if keep.sum() == 0:
        return SolveResult(r0, t0, mask_t, False, "no graph node has enough correspondences")
    new = torch.from_numpy(_remap(keep)).to(dev)
    # anchors to removed nodes are dropped (the point's remaining weights are renormalised)
    an = anchors.long()
    an_new = torch.where(an >= 0, new[an.clamp_min(0)], torch.full_like(an, -1))
    w = torch.where(an_new >= 0, weights, torch.zeros_like(weights))
    ws = w.sum(1, keepdim=True)
    pt_ok = (ws[:, 0] > 1e-6) & (conf > 0)
    w = w / ws.clamp_min(1e-12)
    sel = torch.nonzero(pt_ok).squeeze(1)
    p, an_s, w_s = points[sel], an_new[sel], w[sel]
    uv, z, c = target_uv[sel], target_depth[sel], conf[sel]
    keep_t = torch.from_numpy(np.flatnonzero(keep)).to(dev)
    nodes_k = nodes[keep_t]
    e = edges.long()[keep_t]
    e = torch.where(e >= 0, new[e.clamp_min(0)], torch.full_like(e, -1))
    ew = None
    if edge_weights is not None:
        ew = torch.where(e >= 0, edge_weights[keep_t], torch.zeros_like(edge_weights[keep_t]))

    def residuals(r: torch.Tensor, t: torch.Tensor, jac: bool) -> list:
        parts = warp_parts(p, an_s, w_s, nodes_k, r, t)
        return [reprojection_term(parts, uv, intrinsics, c, cfg.lambda_2d, jac),
                depth_term(parts, z, c, cfg.lambda_depth, jac),
                arap_term(nodes_k, r, t, e, ew, cfg.lambda_arap, jac)]

    scfg = SolverConfig(iterations=cfg.iterations, linear_solver=cfg.linear_solver, damping=cfg.damping,
                        adaptive=cfg.adaptive, min_step=0.0 if not cfg.adaptive else 1e-7)
    out = gauss_newton(residuals, r0[keep_t], t0[keep_t], scfg)
    rot = r0.index_copy(0, keep_t, out.rotations) if keep.sum() < n else out.rotations
    tr = t0.index_copy(0, keep_t, out.translations) if keep.sum() < n else out.translations
    return SolveResult(rot, tr, mask_t, out.ok, out.message, out.energies)


def sample_correspondences(flow: torch.Tensor, tgt_depth: torch.Tensor, uv_src: torch.Tensor,
                           mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target pixels and depths of source pixels under a flow field.

    flow [2,H,W] pixels (source -> target); tgt_depth [H,W] metres (0 invalid); uv_src long or float [M,2]
    integer source pixels (column, row). Returns (target_uv [M,2], target_depth [M], valid bool [M]): the
    target depth is sampled bilinearly and valid only when all four neighbouring target pixels have depth
    and the match is inside the image. Differentiable with respect to flow (and tgt_depth).
    """
    from tracker.networks import sample_at

    h, w = tgt_depth.shape
    u = uv_src[:, 0].long().clamp(0, w - 1)
    v = uv_src[:, 1].long().clamp(0, h - 1)
    f = flow[:, v, u].T  # [M,2]
    tuv = torch.stack([u.to(flow.dtype), v.to(flow.dtype)], 1) + f
    grid = tuv.T.reshape(1, 2, 1, -1)
    d = sample_at(tgt_depth[None, None].to(flow.dtype), grid, mode)[0, 0, 0]
    vmask = sample_at((tgt_depth > 0)[None, None].to(flow.dtype), grid, "bilinear")[0, 0, 0]
    inside = (tuv[:, 0] >= 0) & (tuv[:, 0] <= w - 1) & (tuv[:, 1] >= 0) & (tuv[:, 1] <= h - 1)
    valid = inside & (vmask > 0.999) & (d > 0)
    return tuv, torch.where(valid, d, torch.zeros_like(d)), valid
