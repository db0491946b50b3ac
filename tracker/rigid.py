"""Rigid pre-alignment of the whole (already warped) model to the live depth: point-to-plane ICP.

The rigid transform is the motion of a one-node graph with the node at the origin, so the residuals and
Jacobians are exactly `tracker.energy.point_to_plane_term` (one definition of the ICP term), plus
`tracker.energy.photometric_term` when the model has colours (depth alone lets a flat-ish, wavy surface
slide sideways; texture stops it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fusion.camera import Intrinsics
from tracker.association import projective_association
from tracker.energy import photometric_term, point_to_plane_term, sample_bilinear_t, warp_parts
from tracker.solver import SolverConfig, gauss_newton


@dataclass
class LiveGeometry:
    """The live frame as the trackers see it: points / normals float32 [H,W,3], valid bool [H,W], camera."""

    points: np.ndarray
    normals: np.ndarray
    valid: np.ndarray
    intrinsics: Intrinsics

    @property
    def flat_points(self) -> np.ndarray:
        """float32 [H*W, 3]."""
        return self.points.reshape(-1, 3)

    @property
    def flat_normals(self) -> np.ndarray:
        """float32 [H*W, 3]."""
        return self.normals.reshape(-1, 3)


def huber_confidence(res: torch.Tensor, delta: float | None) -> torch.Tensor:
    """Per-row confidences c = sqrt(min(1, delta/|r|)) so that c^2 r^2 is the IRLS weight of a Huber loss
    (metres); all ones when delta is None."""
    if delta is None:
        return torch.ones_like(res)
    return torch.sqrt(torch.clamp(delta / res.abs().clamp_min(1e-12), max=1.0))


def rigid_icp(points: torch.Tensor, normals: torch.Tensor, live: LiveGeometry, iterations: int = 2,
              max_distance: float = 0.1, max_angle_deg: float = 60.0, huber_delta: float | None = 0.01,
              min_correspondences: int = 30, damping: float = 1e-4,
              photo: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Rigid point-to-plane ICP with projective association, re-associating every iteration.

    points / normals [M,3] (float64 torch, camera frame): the model warped by the current motion.
    photo: None or (live intensity [H,W], reference intensities [M,R], validity [M,R] float, lambdas [R],
    huber threshold) to add the photometric term over the depth-associated points.
    Returns (R [3,3], t [3], info) with the model best aligned as R p + t; the identity when fewer than
    `min_correspondences` matches are found (info["ok"] False).
    """
    dt = points.dtype
    r = torch.eye(3, dtype=dt)[None]
    t = torch.zeros(1, 3, dtype=dt)
    m = points.shape[0]
    anchors = torch.zeros(m, 1, dtype=torch.long)
    weights = torch.ones(m, 1, dtype=dt)
    origin = torch.zeros(1, 3, dtype=dt)
    info: dict = {"ok": True, "iterations": 0, "correspondences": 0}
    lp = torch.from_numpy(live.flat_points)
    ln = torch.from_numpy(live.flat_normals)
    cfg = SolverConfig(iterations=1, linear_solver="dense", damping=damping, relative_damping=True, adaptive=True,
                       mu_up=10.0, max_retries=6)
    for it in range(iterations):
        cur = points @ r[0].T + t[0]
        cur_n = normals @ r[0].T
        corr = projective_association(cur.numpy(), cur_n.numpy(), live.points, live.normals, live.valid,
                                      live.intrinsics, max_distance, max_angle_deg)
        ok = np.flatnonzero(corr >= 0)
        info["correspondences"] = int(len(ok))
        if len(ok) < min_correspondences:
            info["ok"] = it > 0
            info["error"] = f"rigid ICP: only {len(ok)} correspondences"
            break
        sel = torch.from_numpy(ok)
        p, a, w = points[sel], anchors[sel], weights[sel]
        q = lp[torch.from_numpy(corr[ok])].to(dt)
        qn = ln[torch.from_numpy(corr[ok])].to(dt)
        res0 = ((cur[sel] - q) * qn).sum(1)
        conf = huber_confidence(res0, huber_delta)
        pterm = None
        if photo is not None:
            image, refs, valid, lams, huber_c = photo
            z = cur[sel][:, 2].clamp_min(1e-6)
            k = live.intrinsics
            uv = torch.stack([k.fx * cur[sel][:, 0] / z + k.cx, k.fy * cur[sel][:, 1] / z + k.cy], -1)
            val, _, inside = sample_bilinear_t(image, uv)
            mi = refs[sel]
            pc = huber_confidence(torch.where(inside[:, None], val[:, None].to(mi.dtype) - mi, torch.zeros_like(mi)),
                                  huber_c) * valid[sel]
            pterm = (mi, pc * lams.to(mi.dtype) ** 0.5)

        def residuals(rr, tt, jac, p=p, a=a, w=w, q=q, qn=qn, conf=conf, pterm=pterm):
            parts = warp_parts(p, a, w, origin, rr, tt)
            out = [point_to_plane_term(parts, q, qn, conf, 1.0, jac)]
            if pterm is not None:
                out.append(photometric_term(parts, photo[0], pterm[0], live.intrinsics, pterm[1], 1.0, jac))
            return out

        out = gauss_newton(residuals, r, t, cfg)
        if not out.ok:
            info["ok"] = False
            info["error"] = out.message
            break
        r, t = out.rotations, out.translations
        info["iterations"] = it + 1
    return r[0], t[0], info
