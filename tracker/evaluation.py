"""Tracking evaluation on source -> target pairs (NNRT Table 1): EPE 3D and graph error 3D in millimetres.

For a pair with ground-truth scene flow sf (metres, source pixels):
- EPE 3D = mean over the source pixels with ground truth of |W(p) - (p + sf(p))|, W the estimated warp
  (every such pixel is skinned to the graph; one beyond the skinning reach follows its nearest node);
- graph error 3D = mean over the graph nodes with ground truth of |t_i - sf(g_i)| (the node's estimated
  translation against the scene flow at its source pixel).
Pairs come from a DeepDeform-layout folder (`tracker.data.find_pairs`), with the pair's graph files when
present (else a graph built over the source surface), or from synthetic PairSamples.

Pair trackers (`PairTracker`: (PairSample, PairModel) -> GraphMotion or None on failure): "classical"
(ClassicalTracker from the identity), "neural" (NeuralTracker.track_pair with PAIR_OPTIONS), "identity", and
`oracle_tracker`
(the least-squares fit of the graph motion to the ground truth: the floor the graph can reach).
Also: `depth_residual` (mean |depth of the warped source - target depth| for pairs without ground truth)
and `overlay_image`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fusion.frame import RGBDFrame
from fusion.graph import DeformationGraph, GraphMotion
from tracker.data import PairSample

__all__ = ["PairModel", "pair_model", "warp_pixels", "epe3d_mm", "graph_error_mm", "evaluate_pairs",
           "evaluate_folder", "make_pair_tracker", "oracle_tracker", "identity_tracker", "depth_residual",
           "overlay_image", "PairTracker"]


@dataclass
class PairModel:
    """The source surface as a tracker model: points / normals float32 [M,3] (source camera frame), anchors
    int32 [M,4], weights float32 [M,4], pixels int [M,2] (u, v) of each point."""

    points: np.ndarray
    normals: np.ndarray
    anchors: np.ndarray
    weights: np.ndarray
    pixels: np.ndarray


PairTracker = Callable[[PairSample, PairModel], "GraphMotion | None"]

#: NeuralTrackerConfig overrides of the pair evaluation: a pair has exactly one keyframe (the source), so
#: the fusion-loop rule "ignore a keyframe with more than 50 % invalid correspondences" (which exists to
#: choose among keyframes, with the classical tracker as the fallback) is off; NNRT's Table 1 evaluates
#: Phi + Psi + Omega on the pair without keyframe logic. The weight threshold and the bi-directional check
#: stay on.
PAIR_OPTIONS: dict = {"max_invalid_fraction": 1.0}


def _skin_all(points: np.ndarray, graph: DeformationGraph) -> tuple[np.ndarray, np.ndarray]:
    from fusion.meshing import skin_vertices

    return skin_vertices(points.astype(np.float32), graph)


def pair_model(sample: PairSample) -> PairModel:
    """The tracker model of a pair: source pixels in the mask with valid normals, skinned to the graph."""
    from tracker.association import live_geometry

    k = sample.intrinsics
    pts, nrm, valid = live_geometry(sample.src_depth, k, sample.src_mask, 0.05)
    vv, uu = np.nonzero(valid)
    p = pts[vv, uu]
    a, w = _skin_all(p, sample.graph)
    return PairModel(p.astype(np.float32), nrm[vv, uu].astype(np.float32), a, w, np.stack([uu, vv], 1))


def frames_of(sample: PairSample) -> tuple[RGBDFrame, RGBDFrame]:
    """(source, target) RGBDFrames of a pair (source masked to the object)."""
    k = sample.intrinsics
    src = RGBDFrame(0, 0.0, sample.src_color, sample.src_depth, k, sample.src_mask)
    tgt = RGBDFrame(1, 0.0, sample.tgt_color, sample.tgt_depth, k, None)
    return src, tgt


def _gt_pixels(sample: PairSample) -> tuple[np.ndarray, np.ndarray]:
    """Source points [P,3] with ground truth and their scene flow [P,3]."""
    if sample.scene_flow is None:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    ok = sample.src_mask & np.isfinite(sample.scene_flow).all(-1) & (sample.src_depth > 0)
    pts = sample.source_points()[ok]
    return pts, sample.scene_flow[ok]


def warp_pixels(points: np.ndarray, graph: DeformationGraph, motion: GraphMotion) -> np.ndarray:
    """Warp points float [P,3] (source frame) by motion over graph (every point skinned, see module doc)."""
    from fusion.warp import warp_points

    if len(points) == 0:
        return np.zeros((0, 3), np.float32)
    a, w = _skin_all(points, graph)
    return warp_points(points.astype(np.float32), a, w, graph.nodes, motion.rotations, motion.translations)


def epe3d_mm(sample: PairSample, motion: GraphMotion) -> float:
    """EPE 3D in mm of `motion` on a pair with ground truth (NaN when it has no ground-truth pixel)."""
    pts, sf = _gt_pixels(sample)
    if len(pts) == 0:
        return float("nan")
    warped = warp_pixels(pts, sample.graph, motion)
    return 1e3 * float(np.linalg.norm(warped - (pts + sf), axis=1).mean())


def graph_error_mm(sample: PairSample, motion: GraphMotion) -> float:
    """Graph error 3D in mm: mean over nodes with ground truth of |t_i - sf(g_i)| (NaN when none)."""
    ok = np.isfinite(sample.node_translations).all(1)
    if not ok.any():
        return float("nan")
    return 1e3 * float(np.linalg.norm(motion.translations[ok] - sample.node_translations[ok], axis=1).mean())


# --------------------------------------------------------------------------------------------------
# trackers
# --------------------------------------------------------------------------------------------------
def identity_tracker(sample: PairSample, model: PairModel) -> GraphMotion:
    """Nothing moves."""
    return GraphMotion.identity(sample.graph.num_nodes)


def oracle_tracker(sample: PairSample, model: PairModel, iterations: int = 5) -> GraphMotion | None:
    """The graph motion that best fits the ground truth: point-to-point Gauss-Newton from the identity towards
    p + sf(p) for every ground-truth pixel, with a light ARAP term (1e-3) to keep unobserved nodes defined."""
    from tracker.energy import arap_term, point_to_point_term, warp_parts
    from tracker.solver import SolverConfig, gauss_newton

    pts, sf = _gt_pixels(sample)
    if len(pts) == 0:
        return None
    a, w = _skin_all(pts, sample.graph)
    t64 = lambda x: torch.from_numpy(np.ascontiguousarray(x, np.float64))  # noqa: E731
    p, tg = t64(pts), t64(pts + sf)
    an, aw = torch.from_numpy(a.astype(np.int64)), t64(w)
    nodes, edges = t64(sample.graph.nodes), torch.from_numpy(sample.graph.edges.astype(np.int64))
    n = sample.graph.num_nodes

    def res(r, t, jac):
        return [point_to_point_term(warp_parts(p, an, aw, nodes, r, t), tg, None, 1.0, jac),
                arap_term(nodes, r, t, edges, None, 1e-3, jac)]

    out = gauss_newton(res, torch.eye(3, dtype=torch.float64).repeat(n, 1, 1), torch.zeros(n, 3, dtype=torch.float64),
                       SolverConfig(iterations=iterations, linear_solver="direct", damping=1e-6))
    if not out.ok:
        return None
    return GraphMotion(out.rotations.numpy().astype(np.float32), out.translations.numpy().astype(np.float32))


def make_pair_tracker(name: str, device: str = "auto", weights: str | None = None, **options) -> PairTracker:
    """A PairTracker by name: "classical" | "neural" | "identity" | "oracle". options go to the tracker's
    config (NeuralTrackerConfig / ClassicalTrackerConfig fields)."""
    from tracker.classical import ClassicalTracker, ClassicalTrackerConfig
    from fusion.motion import TrackingInput

    if name == "identity":
        return identity_tracker
    if name == "oracle":
        return oracle_tracker
    if name == "classical":
        tr = ClassicalTracker(ClassicalTrackerConfig(**options))

        def classical(sample: PairSample, model: PairModel) -> GraphMotion | None:
            src, tgt = frames_of(sample)
            ident = GraphMotion.identity(sample.graph.num_nodes)
            tr.reset()  # pairs are independent: no previous frame, the source is the (identity) keyframe
            res = tr.estimate(TrackingInput(tgt, sample.graph, ident, model.points, model.normals, model.anchors,
                                            model.weights, canonical_frame=src))
            return res.motion if res.ok else None

        return classical
    if name == "neural":
        from tracker.neural import NeuralTracker, NeuralTrackerConfig

        opts = {**PAIR_OPTIONS, **options}
        tr_n = NeuralTracker(NeuralTrackerConfig(weights=weights, device=device, **opts))

        def neural(sample: PairSample, model: PairModel) -> GraphMotion | None:
            src, tgt = frames_of(sample)
            res = tr_n.track_pair(src, tgt, sample.graph, model.points, model.normals, model.anchors, model.weights)
            return res.motion if res.ok else None

        neural.tracker = tr_n  # type: ignore[attr-defined]
        return neural
    from fusion.errors import InputError

    raise InputError(f"unknown tracker {name!r} (classical | neural | identity | oracle)")


# --------------------------------------------------------------------------------------------------
# evaluation loops
# --------------------------------------------------------------------------------------------------
def evaluate_pairs(samples, tracker: PairTracker, progress: Callable[[int, dict], None] | None = None) -> dict:
    """Evaluate a tracker on PairSamples (an iterable). A pair whose tracking fails is scored with the
    identity motion and counted in `failed`. Returns {pairs, epe3d_mm, graph_error_mm (means over pairs),
    epe3d_mm_pixelwise (mean over all pixels), failed, seconds (tracking time), per_pair: [...]}."""
    per = []
    t_track = 0.0
    n_px_total = 0
    epe_px_sum = 0.0
    for i, s in enumerate(samples):
        model = pair_model(s)
        t0 = time.perf_counter()
        motion = tracker(s, model)
        dt = time.perf_counter() - t0
        t_track += dt
        failed = motion is None
        if failed:
            motion = GraphMotion.identity(s.graph.num_nodes)
        e = epe3d_mm(s, motion)
        ge = graph_error_mm(s, motion)
        n_px = int(len(_gt_pixels(s)[0]))
        if np.isfinite(e):
            epe_px_sum += e * n_px
            n_px_total += n_px
        rec = {"name": s.name, "epe3d_mm": e, "graph_error_mm": ge, "failed": failed, "seconds": dt,
               "pixels": n_px, "nodes": s.graph.num_nodes, "graph_from_files": bool(s.meta.get("graph_from_files")),
               "gt_motion_mm": epe3d_mm(s, GraphMotion.identity(s.graph.num_nodes)),
               "flow_px_mean": float(np.nanmean(np.linalg.norm(s.flow[s.src_mask], axis=-1)))
               if s.flow is not None and np.isfinite(s.flow[s.src_mask]).any() else None}
        per.append(rec)
        if progress is not None:
            progress(i, rec)

    def mean(key: str) -> float | None:
        v = [r[key] for r in per if r[key] is not None and np.isfinite(r[key])]
        return float(np.mean(v)) if v else None

    return {"pairs": len(per), "epe3d_mm": mean("epe3d_mm"), "graph_error_mm": mean("graph_error_mm"),
            "epe3d_mm_pixelwise": (epe_px_sum / n_px_total) if n_px_total else None,
            "identity_epe3d_mm": mean("gt_motion_mm"), "failed": int(sum(r["failed"] for r in per)),
            "seconds": t_track, "per_pair": per}


def evaluate_folder(root: str | Path, tracker: str | PairTracker = "neural", device: str = "auto",
                    weights: str | None = None, progress: Callable[[int, dict], None] | None = None) -> dict:
    """`nrstudio eval-tracking`: every ground-truth pair under a DeepDeform-layout root. Returns the report
    of `evaluate_pairs` plus tracker, root, and `seconds` as the total wall time (loading included)."""
    from tracker.data import find_pairs, load_pair

    t0 = time.perf_counter()
    pairs = find_pairs(root)
    fn = make_pair_tracker(tracker, device, weights) if isinstance(tracker, str) else tracker
    rep = evaluate_pairs((load_pair(p) for p in pairs), fn, progress)
    rep["tracking_seconds"] = rep["seconds"]
    rep["seconds"] = time.perf_counter() - t0
    rep["tracker"] = tracker if isinstance(tracker, str) else getattr(tracker, "__name__", "custom")
    rep["root"] = str(root)
    rep["graph_from_files"] = int(sum(r["graph_from_files"] for r in rep["per_pair"]))
    return rep


# --------------------------------------------------------------------------------------------------
# pairs without ground truth: depth residual and overlay
# --------------------------------------------------------------------------------------------------
def _project(points: np.ndarray, k) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = points[:, 2]
    zs = np.where(z > 1e-6, z, 1.0)
    u = np.floor(k.fx * points[:, 0] / zs + k.cx + 0.5).astype(np.int64)
    v = np.floor(k.fy * points[:, 1] / zs + k.cy + 0.5).astype(np.int64)
    inside = (z > 1e-6) & (u >= 0) & (v >= 0) & (u < k.width) & (v < k.height)
    return u, v, inside


def depth_residual(sample: PairSample, motion: GraphMotion, model: PairModel | None = None,
                   max_residual: float | None = None) -> dict:
    """Mean |z(W(p)) - D_tgt(pi(W(p)))| in mm over the model points whose warp projects onto valid target
    depth (nearest pixel). max_residual (m): also report the mean over residuals below it and the inlier
    share. Returns {depth_residual_mm, points, coverage, [inlier_residual_mm, inlier_fraction]}."""
    model = model if model is not None else pair_model(sample)
    warped = warp_pixels(model.points, sample.graph, motion)
    u, v, inside = _project(warped, sample.intrinsics)
    d = np.zeros(len(warped), np.float32)
    d[inside] = sample.tgt_depth[v[inside], u[inside]]
    ok = inside & (d > 0)
    r = np.abs(d[ok] - warped[ok, 2])
    out = {"depth_residual_mm": 1e3 * float(r.mean()) if len(r) else None, "points": int(ok.sum()),
           "coverage": float(ok.mean()) if len(ok) else 0.0}
    if max_residual is not None and len(r):
        inl = r < max_residual
        out["inlier_residual_mm"] = 1e3 * float(r[inl].mean()) if inl.any() else None
        out["inlier_fraction"] = float(inl.mean())
    return out


def overlay_image(sample: PairSample, motions: dict[str, GraphMotion], path: str | Path,
                  model: PairModel | None = None, max_residual: float = 0.10) -> Path:
    """Write a PNG with one panel per motion: the target colour image, darkened, with the warped source
    points drawn where they land, coloured by depth residual (green 0 -> red >= max_residual m; blue where
    the target has no depth), titled with the mean residual. Written atomically; returns the path."""
    from PIL import Image, ImageDraw

    from fusion.atomic import atomic_path

    model = model if model is not None else pair_model(sample)
    k = sample.intrinsics
    panels = []
    for title, motion in motions.items():
        img = (sample.tgt_color.astype(np.float32) * 0.45).astype(np.uint8)
        warped = warp_pixels(model.points, sample.graph, motion)
        u, v, inside = _project(warped, k)
        d = np.zeros(len(warped), np.float32)
        d[inside] = sample.tgt_depth[v[inside], u[inside]]
        has = inside & (d > 0)
        r = np.clip(np.abs(d - warped[:, 2]) / max_residual, 0, 1)
        col = np.stack([255 * r, 255 * (1 - r), np.zeros_like(r)], 1).astype(np.uint8)
        col[inside & ~has] = (60, 120, 255)
        img[v[inside], u[inside]] = col[inside]
        res = depth_residual(sample, motion, model)
        pil = Image.fromarray(img)
        dr = ImageDraw.Draw(pil)
        dr_mm = res["depth_residual_mm"]
        txt = f"{title}: mean depth residual {dr_mm:.0f} mm" if dr_mm is not None else f"{title}: no overlap"
        dr.rectangle([0, 0, 8 + 7 * len(txt), 18], fill=(0, 0, 0))
        dr.text((4, 3), txt, fill=(255, 255, 255))
        panels.append(pil)
    w = sum(p.width for p in panels)
    out = Image.new("RGB", (w, panels[0].height))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width
    path = Path(path)
    with atomic_path(path) as tmp:
        out.save(tmp, format="PNG")
    return path
