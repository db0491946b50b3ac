"""Training losses of the neural tracker (NNRT section 4.4).

- `corr_loss` (L_corr): the robust PWC-Net norm (|du| + |dv| + eps)^q, q = 0.4, between predicted and
  ground-truth flow on every pyramid level (ground truth average-pooled over the valid pixels of each
  level's cells) and on the final full-resolution flow, averaged over valid pixels per level and
  combined with per-level weights.
- `graph_loss` (L_graph): mean Euclidean error of the node translations over the valid nodes (ground truth
  known, visible, and kept by the solver's node filter).
- `warp_loss` (L_warp): mean Euclidean error of the dense warp W(p) against p + scene flow over the source
  points with ground truth.
Lengths are in metres, flows in input pixels. `downsample_flow` is the level ground truth.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["robust_norm", "downsample_flow", "corr_loss", "graph_loss", "warp_loss", "LEVEL_WEIGHTS"]

#: weights of the flow levels, coarsest first (PWC-Net's 0.32 .. 0.005 are per-pixel sums; these are for
#: per-level means), then the weight of the final full-resolution flow
LEVEL_WEIGHTS = (0.1, 0.2, 0.35, 0.6, 1.0)
FULL_WEIGHT = 1.0


def robust_norm(diff: torch.Tensor, q: float = 0.4, eps: float = 0.01) -> torch.Tensor:
    """(|d_0| + |d_1| + eps)^q over the channel axis 1 of diff [B, 2, ...] -> [B, ...]."""
    return (diff.abs().sum(1) + eps) ** q


def downsample_flow(flow: torch.Tensor, valid: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth at a coarser level: flow [B,2,H,W] (input pixels), valid [B,1,H,W] float/bool ->
    (mean flow of the valid pixels of each stride x stride cell [B,2,ceil(H/s),ceil(W/s)], cell valid
    [B,1,...] where at least half of the cell's pixels are valid)."""
    v = valid.to(flow.dtype)
    f = torch.where(v > 0, flow, torch.zeros_like(flow))
    if stride == 1:
        return f, v
    num = F.avg_pool2d(f * v, stride, ceil_mode=True)
    den = F.avg_pool2d(v, stride, ceil_mode=True)
    return num / den.clamp_min(1e-6), (den >= 0.5).to(flow.dtype)


def corr_loss(flows: list[torch.Tensor], levels: list[int], final: torch.Tensor, gt: torch.Tensor,
              valid: torch.Tensor, q: float = 0.4, eps: float = 0.01,
              level_weights: tuple[float, ...] = LEVEL_WEIGHTS, full_weight: float = FULL_WEIGHT) -> torch.Tensor:
    """L_corr: flows (per level, coarsest first, [B,2,h_l,w_l] input pixels), levels (their pyramid level l,
    stride 2^l), final [B,2,H,W] the full-resolution flow; gt [B,2,H,W] ground truth (any value where
    invalid), valid [B,1,H,W]. Returns a 0-d tensor: sum_l w_l mean_valid robust + full_weight * mean_valid
    robust (full resolution). Level weights are aligned to the finest levels when fewer levels are given."""
    gt = torch.where(valid > 0, gt, torch.zeros_like(gt))
    ws = list(level_weights)[-len(flows):] if len(flows) <= len(level_weights) else [1.0] * len(flows)
    total = torch.zeros((), dtype=final.dtype, device=final.device)
    for fl, lvl, w in zip(flows, levels, ws):
        g, v = downsample_flow(gt, valid, 2 ** lvl)
        g, v = g[..., : fl.shape[-2], : fl.shape[-1]], v[..., : fl.shape[-2], : fl.shape[-1]]
        r = robust_norm(fl - g, q, eps) * v[:, 0]
        total = total + w * r.sum() / v.sum().clamp_min(1.0)
    r = robust_norm(final - gt, q, eps) * valid[:, 0].to(final.dtype)
    return total + full_weight * r.sum() / valid.sum().clamp_min(1.0)


def graph_loss(translations: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L_graph: mean over valid nodes of |t_i - t_i^gt| (metres). translations / gt [N,3]; valid bool [N]."""
    if not bool(valid.any()):
        return torch.zeros((), dtype=translations.dtype, device=translations.device)
    return (translations[valid] - gt[valid]).norm(dim=1).mean()


def warp_loss(warped: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """L_warp: mean over valid points of |W(p) - (p + sf(p))| (metres). warped / target [M,3]; valid bool [M]."""
    if valid is not None:
        if not bool(valid.any()):
            return torch.zeros((), dtype=warped.dtype, device=warped.device)
        warped, target = warped[valid], target[valid]
    return (warped - target).norm(dim=1).mean()
