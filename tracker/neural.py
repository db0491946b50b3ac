"""The Neural Non-Rigid Tracker in the fusion loop (NNRT section 4.5, appendix D.3): keyframe-based
learned correspondences + learned weights + Gauss-Newton on the graph, refined with dense depth ICP.

Per live frame (`NeuralTracker.estimate`, a fusion.motion.MotionEstimator):
1. for every stored keyframe (a keyframe is taken every `keyframe_interval` tracked frames; the first
   tracked frame becomes keyframe 0 after a classical bootstrap, because the fusion loop never shows its
   first frame to the tracker), the canonical model samples visible in the keyframe (warped by the
   keyframe's motion, depth-tested against the keyframe depth) get their keyframe pixel;
2. Phi + Psi (tracker/networks.py) on keyframe -> current frame give every keyframe pixel a target pixel
   and a weight; the target depth is sampled from the live depth;
3. filters: weight < `min_weight` (0.35) dropped; bi-directional consistency (Phi current -> keyframe
   maps the target back; a forward-backward 3D error > `bidir_max_error` (0.20 m) is rejected); a
   keyframe with more than `max_invalid_fraction` (50 %) invalid correspondences is ignored; multi-keyframe
   consistency (all predictions for a canonical sample are rejected if any is more than
   `multi_kf_max_dev` (0.15 m) from their mean);
4. Omega (tracker/diffsolver.py: NNRT 2D + depth + ARAP, Levenberg-Marquardt, block-sparse PCG) from the
   previous motion, then the classical tracker's ICP + ARAP + the same 2D / depth terms
   (tracker.classical.ClassicalTracker.estimate_with_correspondences, no rigid pre-alignment) from there;
   when no keyframe gives enough valid correspondences, the classical tracker alone (with its rigid
   pre-alignment) tracks the frame.
Never raises on bad data: returns TrackingResult(ok=False, message=...).

`track_pair` runs the same machinery on one source -> target pair (the source is the only keyframe, the
canonical frame is the source camera frame): the evaluation and the bench use it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fusion.camera import Intrinsics
from fusion.device import torch_device as resolve_device  # the old name: device string -> torch.device
from fusion.frame import RGBDFrame
from fusion.graph import DeformationGraph, GraphMotion
from fusion.motion import TrackingInput, TrackingResult
from tracker.classical import ClassicalTracker, ClassicalTrackerConfig, Correspondences
from tracker.diffsolver import DiffSolverConfig, arap_edge_weights, solve_motion

__all__ = ["NeuralTrackerConfig", "NeuralTracker", "Keyframe", "KeyframeMatches", "TrackerOverlay", "filter_keyframe",
           "multi_keyframe_consistency", "overlay_heatmap", "resolve_device", "make_tracker", "make_neural_tracker"]


@dataclass(frozen=True)
class NeuralTrackerConfig:
    """Settings of the neural tracker (NNRT defaults where the paper gives them).

    weights: checkpoint path (None: assets/tracker/nnrt_small.pt).
    device: "auto" | "cpu" | "cuda"; threads: torch and numba threads while a frame is tracked (restored
      afterwards; 0 = leave them): on 2 shared cores two threads of small ops are many times slower.
    phi_size: (width, height) Phi / Psi run at (frames are resized; flow scaled back); None = frame size.
      Default 160x120: the resolution the shipped weights were trained at (on held-out 320x240 pairs it
      gave a lower EPE than running Phi at 320x240, and it is 4x cheaper).
    keyframe_interval: a new keyframe every this many tracked frames (NNRT 50).
    max_keyframes: keyframes kept (the first one and the most recent others).
    min_weight: correspondences with a Psi weight below this are dropped (NNRT 0.35).
    bidirectional / bidir_max_error: forward-backward check and its 3D threshold (NNRT 0.20 m).
    multi_kf_max_dev: multi-keyframe consistency threshold (NNRT 0.15 m).
    max_invalid_fraction: a keyframe with more invalid correspondences than this is ignored (NNRT 0.5).
    visibility_tol: a model sample is seen in a keyframe when its warped depth is within this of the
      keyframe depth at its pixel (metres).
    max_samples: model samples considered per keyframe (a fixed random subset).
    min_correspondences: fewer valid correspondences in total -> no neural solve (ICP only).
    solver: Omega's settings at run time (LM, PCG, more iterations than in training).
    use_icp: refine with the classical tracker's dense depth ICP + ARAP (NNRT's dense depth term).
    refine_with_correspondences: keep the NNRT 2D / depth terms in that refinement too (with NNRT's
      weights a few pixels of flow error outweigh centimetres of ICP residual, so with the small CPU
      networks the refinement is ICP + ARAP only by default).
    select_by_fit: also run the classical tracker from the previous motion and keep whichever motion
      explains the live depth better (more model samples within fit_distance m of the live surface, on
      fit_samples samples); the neural motion must explain more than (1 + fit_margin) times as many
      samples to be kept (at near-ties the classical solution, which also uses colour, is kept).
    select_photometric: and it must not match the classical tracker's anchored keyframe (the canonical
      frame first) worse in shading-normalised intensity (`ClassicalTracker.photometric_residual`): depth
      fit alone kept 3 neural motions on the bundled recording that slid along the surface, and the run
      ended at 95 mm deformation error against 19 mm without them.
    classical: settings of that refinement (no rigid pre-alignment: the neural solve replaces it).
    fallback: the classical tracker used for the first frame (no keyframe yet) and when no keyframe gives
      usable correspondences (default: the classical tracker's own defaults).
    overlay / overlay_points: keep the last frame's `TrackerOverlay` (for the app's views) with at most
      this many correspondences (an even subset of the most recent used keyframe's).
    """

    weights: str | None = None
    device: str = "auto"
    threads: int = 1
    phi_size: tuple[int, int] | None = (160, 120)
    keyframe_interval: int = 50
    max_keyframes: int = 4
    min_weight: float = 0.35
    bidirectional: bool = True
    bidir_max_error: float = 0.20
    multi_kf_max_dev: float = 0.15
    max_invalid_fraction: float = 0.5
    visibility_tol: float = 0.03
    max_samples: int = 2500
    min_correspondences: int = 30
    solver: DiffSolverConfig = field(default_factory=lambda: DiffSolverConfig(
        iterations=4, linear_solver="pcg", adaptive=True, damping=1e-4))
    use_icp: bool = True
    refine_with_correspondences: bool = False
    select_by_fit: bool = True
    fit_distance: float = 0.02
    fit_samples: int = 3000
    fit_margin: float = 0.05
    select_photometric: bool = True
    classical: ClassicalTrackerConfig = field(default_factory=lambda: ClassicalTrackerConfig(
        rigid_iterations=0, iterations=2, max_points=2000))
    fallback: ClassicalTrackerConfig = field(default_factory=ClassicalTrackerConfig)
    seed: int = 0
    overlay: bool = True
    overlay_points: int = 300


@dataclass
class Keyframe:
    """A stored keyframe: the frame (color / depth at the tracked resolution), its motion canonical ->
    keyframe camera over the first `n_nodes` graph nodes, and the index of the frame."""

    frame: RGBDFrame
    motion: GraphMotion
    n_nodes: int
    index: int


@dataclass
class KeyframeMatches:
    """Correspondences of one keyframe: model sample ids [C], keyframe pixels [C,2] (u, v), target pixels
    [C,2] in the live frame, target depth [C] m, Psi weights [C], validity bool [C] after the per-keyframe
    filters, and why entries were rejected (counts)."""

    sample_ids: np.ndarray
    kf_uv: np.ndarray
    target_uv: np.ndarray
    target_depth: np.ndarray
    weights: np.ndarray
    valid: np.ndarray
    rejected: dict = field(default_factory=dict)
    maps: tuple | None = None
    """(weights float32 [H,W] keyframe pixels, backward flow float32 [H,W,2] live -> keyframe pixels or None)
    of the network pass, kept only while the overlay of the frame is built (None otherwise)"""

    @property
    def invalid_fraction(self) -> float:
        """Share of the keyframe's correspondences that did not pass the filters (1 when there are none)."""
        return 1.0 if len(self.valid) == 0 else float(1.0 - self.valid.mean())


# --------------------------------------------------------------------------------------------------
# filters (plain numpy, tested on constructed cases)
# --------------------------------------------------------------------------------------------------
def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of img [H,W] or [H,W,C] at float pixels; (values, inside bool)."""
    h, w = img.shape[:2]
    inside = (u >= 0) & (v >= 0) & (u <= w - 1) & (v <= h - 1)
    uc = np.clip(u, 0, w - 1)
    vc = np.clip(v, 0, h - 1)
    u0 = np.clip(np.floor(uc).astype(np.int64), 0, max(w - 2, 0))
    v0 = np.clip(np.floor(vc).astype(np.int64), 0, max(h - 2, 0))
    a = (uc - u0)
    b = (vc - v0)
    u1 = np.minimum(u0 + 1, w - 1)
    v1 = np.minimum(v0 + 1, h - 1)
    if img.ndim == 3:
        a, b = a[:, None], b[:, None]
    val = (img[v0, u0] * (1 - a) * (1 - b) + img[v0, u1] * a * (1 - b) + img[v1, u0] * (1 - a) * b
           + img[v1, u1] * a * b)
    return val, inside


def depth_at(depth: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth float32 [H,W] m sampled bilinearly at float pixels uv [C,2]; valid only when the four
    neighbouring pixels all have depth and the pixel is inside. Returns (depth [C] (0 invalid), valid [C])."""
    if len(uv) == 0:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    d, inside = _bilinear(depth.astype(np.float64), uv[:, 0], uv[:, 1])
    ok, _ = _bilinear((depth > 0).astype(np.float64), uv[:, 0], uv[:, 1])
    valid = inside & (ok > 0.999) & (d > 0)
    return np.where(valid, d, 0.0).astype(np.float32), valid


def _backproject(uv: np.ndarray, z: np.ndarray, k: Intrinsics) -> np.ndarray:
    return np.stack([(uv[:, 0] - k.cx) / k.fx * z, (uv[:, 1] - k.cy) / k.fy * z, z], 1)


def filter_keyframe(kf_uv: np.ndarray, target_uv: np.ndarray, weights: np.ndarray, kf_depth: np.ndarray,
                    live_depth: np.ndarray, k: Intrinsics, backward_flow: np.ndarray | None,
                    min_weight: float = 0.35, bidir_max_error: float = 0.20) -> tuple[np.ndarray, np.ndarray, dict]:
    """Per-keyframe filters of NNRT D.3.

    kf_uv [C,2] integer keyframe pixels; target_uv [C,2] predicted live pixels; weights [C] Psi weights;
    kf_depth / live_depth float32 [H,W] m; k: both frames' camera; backward_flow [H,W,2] live -> keyframe
    pixels or None (no bi-directional check). A correspondence is valid when its weight >= min_weight, its
    target is inside the live image on valid depth, and (bi-directional) mapping the target back with the
    backward flow lands on keyframe depth whose 3D point is within bidir_max_error m of the source point.
    Returns (target_depth [C] m, valid bool [C], rejection counts).
    """
    kf_uv = np.asarray(kf_uv)
    tz, tvalid = depth_at(live_depth, np.asarray(target_uv, np.float64))
    w_ok = np.asarray(weights) >= min_weight
    valid = tvalid & w_ok
    rej = {"low_weight": int((~w_ok).sum()), "no_target_depth": int((w_ok & ~tvalid).sum()), "bidirectional": 0}
    if backward_flow is not None and valid.any():
        back, inside = _bilinear(backward_flow.astype(np.float64), target_uv[:, 0], target_uv[:, 1])
        p_back = np.asarray(target_uv, np.float64) + back
        zb, zb_ok = depth_at(kf_depth, p_back)
        zs = kf_depth[kf_uv[:, 1].astype(np.int64), kf_uv[:, 0].astype(np.int64)].astype(np.float64)
        xs = _backproject(kf_uv.astype(np.float64), zs, k)
        xb = _backproject(p_back, zb.astype(np.float64), k)
        err = np.linalg.norm(xs - xb, axis=1)
        ok = inside & zb_ok & (err <= bidir_max_error)
        rej["bidirectional"] = int((valid & ~ok).sum())
        valid &= ok
    return tz, valid, rej


def multi_keyframe_consistency(sample_ids: list[np.ndarray], targets: list[np.ndarray], valid: list[np.ndarray],
                               max_dev: float = 0.15) -> tuple[list[np.ndarray], int]:
    """NNRT multi-keyframe consistency: for every canonical sample predicted (validly) by two or more
    keyframes, if any prediction is more than max_dev m from the mean of its predictions, all of that
    sample's predictions are rejected.

    sample_ids / targets / valid: per keyframe, int [C_k], float [C_k,3] 3D targets (live camera, m), bool
    [C_k]. Returns (the new valid masks, number of samples rejected).
    """
    if len(sample_ids) < 2:
        return [v.copy() for v in valid], 0
    ids = np.concatenate([s[v] for s, v in zip(sample_ids, valid)])
    if len(ids) == 0:
        return [v.copy() for v in valid], 0
    pts = np.concatenate([t[v] for t, v in zip(targets, valid)]).astype(np.float64)
    uniq, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    sums = np.zeros((len(uniq), 3))
    np.add.at(sums, inv, pts)
    mean = sums / counts[:, None]
    dev = np.linalg.norm(pts - mean[inv], axis=1)
    worst = np.zeros(len(uniq))
    np.maximum.at(worst, inv, dev)
    bad_ids = uniq[(counts >= 2) & (worst > max_dev)]
    out = [v & ~np.isin(s, bad_ids) for s, v in zip(sample_ids, valid)]
    return out, int(len(bad_ids))


@dataclass(frozen=True)
class TrackerOverlay:
    """What the networks said about the last tracked frame, small enough to draw every frame (the app's
    color view shows it over the live image).

    frame_index / keyframe_index: the live frame and the keyframe the correspondences come from (the most
      recent keyframe whose correspondences were used, else the most recent with visible model samples).
    size: (width, height) of the tracked frames: every pixel coordinate below is in that image (pixel
      centres at integers; the app scales to the image it shows).
    src_uv: float32 [C,2] keyframe pixels (u, v) of visible model samples (an even subset, C <= overlay_points).
    tgt_uv: float32 [C,2] their live pixels predicted by Phi.
    weights: float32 [C] Psi weights in (0, 1).
    valid: bool [C] passed the per-keyframe filters (weight, target depth, bi-directional check).
    heatmap: float32 [H', W'] Psi weights at the network's resolution (phi_size), NaN where there is no
      correspondence (no depth); in live-frame pixels when `heatmap_space` is "live" (each live pixel reads
      the weight of the keyframe pixel the backward flow maps it to), else in keyframe pixels ("keyframe",
      when the tracker runs without the bi-directional pass).
    """

    frame_index: int
    keyframe_index: int
    size: tuple[int, int]
    src_uv: np.ndarray
    tgt_uv: np.ndarray
    weights: np.ndarray
    valid: np.ndarray
    heatmap: np.ndarray
    heatmap_space: str = "live"

    def as_dict(self) -> dict:
        """Plain data (numpy arrays and numbers) for a Qt signal."""
        return {"frame_index": self.frame_index, "keyframe_index": self.keyframe_index, "size": tuple(self.size),
                "src_uv": self.src_uv, "tgt_uv": self.tgt_uv, "weights": self.weights, "valid": self.valid,
                "heatmap": self.heatmap, "heatmap_space": self.heatmap_space}


def overlay_heatmap(weights: np.ndarray, kf_depth: np.ndarray, live_depth: np.ndarray,
                    backward_flow: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The Psi weight map resampled to `size` = (w', h') pixel centres.

    weights: float32 [H,W] Psi weights on keyframe pixels; kf_depth / live_depth: float32 [H,W] m (0 invalid);
    backward_flow: float32 [H,W,2] live -> keyframe pixels, or None. With the backward flow the map is in live
    pixels: a live pixel with depth reads the (bilinear) weight of the keyframe pixel it maps to, NaN when that
    lands outside the keyframe or on no keyframe depth. Without it, the map is the weights on keyframe pixels
    that have depth. Returns (float32 [h', w'] in (0, 1) or NaN, "live" | "keyframe").
    """
    h, w = weights.shape
    pw, ph = int(size[0]), int(size[1])
    uu, vv = np.meshgrid((np.arange(pw) + 0.5) * (w / pw) - 0.5, (np.arange(ph) + 0.5) * (h / ph) - 0.5)
    u, v = uu.ravel(), vv.ravel()
    ui = np.clip(np.floor(u + 0.5).astype(np.int64), 0, w - 1)
    vi = np.clip(np.floor(v + 0.5).astype(np.int64), 0, h - 1)
    if backward_flow is None:
        val, _ = _bilinear(weights.astype(np.float64), u, v)
        ok = kf_depth[vi, ui] > 0
        space = "keyframe"
    else:
        back, _ = _bilinear(backward_flow.astype(np.float64), u, v)
        su, sv = u + back[:, 0], v + back[:, 1]
        val, inside = _bilinear(weights.astype(np.float64), su, sv)
        sui = np.clip(np.floor(su + 0.5).astype(np.int64), 0, w - 1)
        svi = np.clip(np.floor(sv + 0.5).astype(np.int64), 0, h - 1)
        ok = (live_depth[vi, ui] > 0) & inside & (kf_depth[svi, sui] > 0)
        space = "live"
    out = np.where(ok, val, np.nan).astype(np.float32)
    return out.reshape(ph, pw), space


# --------------------------------------------------------------------------------------------------
# the tracker
# --------------------------------------------------------------------------------------------------
def _to_tensor_rgb(color: np.ndarray, dev: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(color, np.uint8)).to(dev).permute(2, 0, 1)[None].float().div_(255.0)


class NeuralTracker:
    """NNRT keyframe tracker (fusion.motion.MotionEstimator); see the module docstring."""

    name = "neural"

    def __init__(self, config: NeuralTrackerConfig | None = None, nets=None) -> None:
        """config: NeuralTrackerConfig; nets: an NNRTNets to use instead of loading config.weights."""
        from tracker.networks import load_checkpoint
        from tracker.training import default_weights_path

        self.config = config or NeuralTrackerConfig()
        self.device = resolve_device(self.config.device)
        if nets is None:
            path = Path(self.config.weights) if self.config.weights else default_weights_path()
            nets, meta = load_checkpoint(path, self.device)
            self.weights_meta = meta
        else:
            self.weights_meta = {}
        self.nets = nets.to(self.device).eval()
        self.classical = ClassicalTracker(self.config.classical)
        self.bootstrap = ClassicalTracker(self.config.fallback)
        self.keyframes: list[Keyframe] = []
        self._tracked = 0
        self._since_kf = 0
        self._rng = np.random.default_rng(self.config.seed)
        self.last_overlay: TrackerOverlay | None = None
        """the overlay of the last frame `estimate` was given (None: that frame had no keyframe to match)"""

    # ------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the keyframes, counters and the last overlay, and reset the classical trackers inside
        (their previous frame, keyframe and velocity history belong to the sequence being forgotten)."""
        self.classical.reset()
        self.bootstrap.reset()
        self.keyframes = []
        self._tracked = 0
        self._since_kf = 0
        self.last_overlay = None

    def add_keyframe(self, frame: RGBDFrame, motion: GraphMotion) -> None:
        """Store `frame` with its motion canonical -> frame as a keyframe (keeps the first and the most
        recent max_keyframes - 1)."""
        self.keyframes.append(Keyframe(frame, motion, motion.num_nodes, int(frame.index)))
        mk = max(1, self.config.max_keyframes)
        if len(self.keyframes) > mk:
            self.keyframes = self.keyframes[:1] + self.keyframes[-(mk - 1):] if mk > 1 else self.keyframes[-1:]
        self._since_kf = 0

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, src: RGBDFrame, tgt: RGBDFrame, backward: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Phi + Psi on src -> tgt at the configured resolution, returned at src's resolution.

        Returns (flow float32 [H,W,2] src -> tgt pixels, weights float32 [H,W] in (0,1), backward flow
        float32 [H,W,2] tgt -> src or None)."""
        from fusion.camera import backproject_depth_t
        from tracker.networks import WeightNet

        dev = self.device
        k = src.intrinsics
        h, w = k.height, k.width
        size = self.config.phi_size or (w, h)
        pw, ph = int(size[0]), int(size[1])
        kk = k.scaled(pw, ph)
        rgb = torch.cat([_to_tensor_rgb(src.color, dev), _to_tensor_rgb(tgt.color, dev)])
        dep = torch.from_numpy(np.stack([src.depth, tgt.depth])).to(dev)[:, None]
        if (pw, ph) != (w, h):
            rgb = F.interpolate(rgb, size=(ph, pw), mode="bilinear", align_corners=False, antialias=True)
            dep = F.interpolate(dep, size=(ph, pw), mode="nearest")
        pts = backproject_depth_t(dep[:, 0], kk).permute(0, 3, 1, 2)
        if backward:
            out = self.nets.phi(rgb, rgb.flip(0), dep, dep.flip(0))
        else:
            out = self.nets.phi(rgb[:1], rgb[1:], dep[:1], dep[1:])
        x = WeightNet.inputs(rgb[:1], pts[:1], rgb[1:], pts[1:], out.flow[:1])
        wt = self.nets.psi(x, out.features[:1])
        flow = out.flow
        if (pw, ph) != (w, h):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / pw, h / ph], device=dev, dtype=flow.dtype).view(1, 2, 1, 1)
            wt = F.interpolate(wt, size=(h, w), mode="bilinear", align_corners=False)
        fl = flow.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)
        return fl[0], wt[0, 0].cpu().numpy().astype(np.float32), (fl[1] if backward else None)

    def _visible_samples(self, kf: Keyframe, inp: TrackingInput, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model samples (ids) seen in the keyframe: (their ids, keyframe pixels int [C,2])."""
        from fusion.graph import extend_motion
        from fusion.warp import warp_points

        graph = inp.graph
        motion = kf.motion
        if graph.num_nodes > kf.n_nodes:
            motion = extend_motion(motion, graph, kf.n_nodes)
            kf.motion, kf.n_nodes = motion, graph.num_nodes
        anchors = inp.model_anchors[ids]
        warped = warp_points(inp.model_points[ids], anchors, inp.model_weights[ids], graph.nodes[: motion.num_nodes],
                             motion.rotations, motion.translations)
        k = kf.frame.intrinsics
        z = warped[:, 2]
        zs = np.where(z > 1e-6, z, 1.0)
        u = np.floor(k.fx * warped[:, 0] / zs + k.cx + 0.5).astype(np.int64)
        v = np.floor(k.fy * warped[:, 1] / zs + k.cy + 0.5).astype(np.int64)
        inside = (z > 1e-6) & (u >= 0) & (v >= 0) & (u < k.width) & (v < k.height)
        d = np.zeros(len(ids), np.float32)
        d[inside] = kf.frame.depth[v[inside], u[inside]]
        vis = inside & (d > 0) & (np.abs(d - z) < self.config.visibility_tol)
        return ids[vis], np.stack([u[vis], v[vis]], 1)

    def keyframe_matches(self, kf: Keyframe, inp: TrackingInput, ids: np.ndarray) -> KeyframeMatches:
        """Correspondences of keyframe kf to the live frame for the model samples `ids` (with the
        per-keyframe filters applied)."""
        cfg = self.config
        sid, kuv = self._visible_samples(kf, inp, ids)
        if len(sid) == 0:
            e = np.zeros((0, 2), np.float32)
            return KeyframeMatches(sid, kuv, e, np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros(0, bool),
                                   {"not_visible": int(len(ids))})
        flow, wts, back = self.predict(kf.frame, inp.frame, backward=cfg.bidirectional)
        f = flow[kuv[:, 1], kuv[:, 0]]
        tuv = kuv.astype(np.float32) + f
        w = wts[kuv[:, 1], kuv[:, 0]]
        tz, valid, rej = filter_keyframe(kuv, tuv, w, kf.frame.depth, inp.frame.depth, inp.frame.intrinsics,
                                         back if cfg.bidirectional else None, cfg.min_weight, cfg.bidir_max_error)
        rej["not_visible"] = int(len(ids) - len(sid))
        maps = (wts, back if cfg.bidirectional else None) if cfg.overlay else None
        return KeyframeMatches(sid, kuv, tuv, tz, w, valid, rej, maps)

    def correspondences(self, inp: TrackingInput) -> tuple[Correspondences | None, dict]:
        """All filtered correspondences from the keyframes to the live frame (None when none survive)."""
        cfg = self.config
        m = len(inp.model_points)
        ok = (inp.model_anchors >= 0).any(1) & (inp.model_anchors < inp.graph.num_nodes).all(1)
        ids = np.flatnonzero(ok)
        if len(ids) > cfg.max_samples:
            ids = np.sort(self._rng.choice(ids, cfg.max_samples, replace=False))
        stats: dict = {"keyframes": len(self.keyframes), "samples": int(len(ids)), "model_points": int(m),
                       "per_keyframe": []}
        matches: list[KeyframeMatches] = []
        seen: list[tuple[Keyframe, KeyframeMatches, bool]] = []
        for kf in self.keyframes:
            km = self.keyframe_matches(kf, inp, ids)
            info = {"index": kf.index, "visible": int(len(km.sample_ids)), "valid": int(km.valid.sum()),
                    "invalid_fraction": km.invalid_fraction, **km.rejected}
            info["used"] = bool(len(km.sample_ids) > 0 and km.invalid_fraction <= cfg.max_invalid_fraction)
            stats["per_keyframe"].append(info)
            seen.append((kf, km, info["used"]))
            if info["used"]:
                matches.append(km)
        # the overlay: the most recent used keyframe, else the most recent one with visible samples
        shown = [s for s in seen if s[2] and s[1].maps is not None] or \
            [s for s in seen if len(s[1].sample_ids) and s[1].maps is not None]
        if shown:
            self.last_overlay = self._make_overlay(shown[-1][0], shown[-1][1], inp.frame)
        for _, km, _ in seen:
            km.maps = None  # the full-resolution maps are not kept past this frame
        if not matches:
            return None, stats
        k = inp.frame.intrinsics
        targets = [_backproject(km.target_uv.astype(np.float64), km.target_depth.astype(np.float64), k)
                   for km in matches]
        valid, n_bad = multi_keyframe_consistency([km.sample_ids for km in matches], targets,
                                                  [km.valid for km in matches], cfg.multi_kf_max_dev)
        stats["multi_keyframe_rejected_samples"] = n_bad
        sid = np.concatenate([km.sample_ids[v] for km, v in zip(matches, valid)])
        if len(sid) == 0:
            return None, stats
        corr = Correspondences(sid, np.concatenate([km.target_uv[v] for km, v in zip(matches, valid)]),
                               np.concatenate([km.target_depth[v] for km, v in zip(matches, valid)]),
                               np.concatenate([km.weights[v] for km, v in zip(matches, valid)]))
        stats["correspondences"] = int(len(sid))
        return corr, stats

    def _make_overlay(self, kf: Keyframe, km: KeyframeMatches, live: RGBDFrame) -> TrackerOverlay:
        """The overlay of one keyframe's matches to `live` (an even subset of at most overlay_points
        correspondences, the weight map at phi_size)."""
        cfg = self.config
        k = live.intrinsics
        n = len(km.sample_ids)
        sel = np.linspace(0, n - 1, min(n, max(0, cfg.overlay_points))).astype(np.int64) if n else np.zeros(0, np.int64)
        wts, back = km.maps
        size = cfg.phi_size or (k.width, k.height)
        heat, space = overlay_heatmap(wts, kf.frame.depth, live.depth, back, size)
        return TrackerOverlay(int(live.index), int(kf.index), (int(k.width), int(k.height)),
                              np.asarray(km.kf_uv[sel], np.float32).reshape(-1, 2),
                              np.asarray(km.target_uv[sel], np.float32).reshape(-1, 2),
                              np.clip(np.asarray(km.weights[sel], np.float32), 0.0, 1.0),
                              np.asarray(km.valid[sel], bool), heat, space)

    # ------------------------------------------------------------------------------------------
    def _solve(self, inp: TrackingInput, corr: Correspondences) -> tuple[GraphMotion | None, dict]:
        """Omega from the previous motion over the given correspondences (LM, block-sparse)."""
        g = inp.graph
        d = torch.float64
        ids = corr.sample_ids
        t64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float64))  # noqa: E731
        ew = arap_edge_weights(g.edges, g.edge_weights) if self.config.solver.arap_edge_weighting else None
        res = solve_motion(t64(inp.model_points[ids]), torch.from_numpy(inp.model_anchors[ids].astype(np.int64)),
                           t64(inp.model_weights[ids]), t64(g.nodes), torch.from_numpy(g.edges.astype(np.int64)),
                           t64(corr.target_uv), t64(corr.target_depth), t64(corr.weights), inp.frame.intrinsics,
                           self.config.solver, edge_weights=None if ew is None else t64(ew),
                           rotations=t64(inp.prev_motion.rotations), translations=t64(inp.prev_motion.translations))
        info = {"ok": res.ok, "message": res.message, "energies": [float(e) for e in res.energies],
                "nodes_solved": int(res.node_mask.sum())}
        if not res.ok:
            return None, info
        r, t = res.rotations.to(d).numpy(), res.translations.to(d).numpy()
        if not (np.isfinite(r).all() and np.isfinite(t).all()):
            return None, {**info, "ok": False, "message": "non-finite motion"}
        return GraphMotion(r.astype(np.float32), t.astype(np.float32)), info

    def estimate(self, inp: TrackingInput) -> TrackingResult:
        """Estimate the canonical -> live motion of inp.frame (see the module docstring). Never raises on
        bad data."""
        from tracker.classical import limited_threads

        try:
            with limited_threads(self.config.threads):
                return self._estimate(inp)
        except (np.linalg.LinAlgError, FloatingPointError, RuntimeError, ValueError) as e:
            return TrackingResult(inp.prev_motion, ok=False, message=f"neural tracking failed: {e}", stats={})

    def _estimate(self, inp: TrackingInput) -> TrackingResult:
        cfg = self.config
        t0 = time.perf_counter()
        self.last_overlay = None
        if inp.graph.num_nodes == 0:
            return TrackingResult(inp.prev_motion, ok=False, message="the deformation graph has no nodes")
        if not self.keyframes:
            res = self.bootstrap.estimate(inp)
            res.stats["neural"] = {"bootstrap": "classical (no keyframe yet)"}
            if res.ok:
                self._tracked += 1
                self.add_keyframe(inp.frame, res.motion)
            return res
        stats: dict = {}
        t1 = time.perf_counter()
        corr, cstats = self.correspondences(inp)
        stats["correspondence_ms"] = 1e3 * (time.perf_counter() - t1)
        stats.update(cstats)
        motion = inp.prev_motion
        neural_ok = False
        if corr is not None and len(corr.sample_ids) >= cfg.min_correspondences:
            t1 = time.perf_counter()
            m, sinfo = self._solve(inp, corr)
            stats["solve_ms"] = 1e3 * (time.perf_counter() - t1)
            stats["solve"] = sinfo
            if m is not None:
                motion, neural_ok = m, True
        else:
            corr = None
        result_msg = ""
        if cfg.use_icp:
            t1 = time.perf_counter()
            if neural_ok:  # refine the neural solve: ICP + ARAP (+ the correspondence terms)
                res = self.classical.estimate_with_correspondences(
                    replace(inp, prev_motion=motion), corr if cfg.refine_with_correspondences else None)
            else:  # nothing usable from the keyframes: the classical tracker with its rigid pre-alignment
                res = self.bootstrap.estimate(inp)
                stats["fallback"] = "classical"
            stats["icp_ms"] = 1e3 * (time.perf_counter() - t1)
            stats["icp"] = {k: v for k, v in res.stats.items() if k in ("correspondences", "iterations", "rms_mm")}
            if res.ok:
                motion = res.motion
            elif not neural_ok:
                stats["total_ms"] = 1e3 * (time.perf_counter() - t0)
                return TrackingResult(inp.prev_motion, ok=False, message=res.message, stats=stats)
            else:
                result_msg = f"ICP refinement skipped: {res.message}"
        elif not neural_ok:
            stats["total_ms"] = 1e3 * (time.perf_counter() - t0)
            return TrackingResult(inp.prev_motion, ok=False, message="too few neural correspondences", stats=stats)
        if cfg.select_by_fit and neural_ok and stats.get("fallback") is None:
            t1 = time.perf_counter()
            key = self.bootstrap.keyframe  # the anchored keyframe before this frame may replace it
            alt = self.bootstrap.estimate(inp)
            if alt.ok:
                fit_n = self.fit_score(inp, motion)
                fit_c = self.fit_score(inp, alt.motion)
                # depth cannot see motion along the surface: the neural motion must not match the anchored
                # keyframe's texture worse than the classical one either
                use_ph = cfg.select_photometric and key is not None  # (a keyframe made from this frame would be biased)
                ph_n, ph_c = self.bootstrap.photometric_residuals(inp, [motion, alt.motion], key) if use_ph else (None, None)
                stats["fit"] = {"neural": fit_n, "classical": fit_c, "photometric": (ph_n, ph_c)}
                worse_texture = ph_n is not None and ph_c is not None and ph_n > ph_c
                if fit_n[0] <= (1.0 + cfg.fit_margin) * fit_c[0] or worse_texture:
                    motion = alt.motion
                    stats["selected"] = "classical"
                else:
                    stats["selected"] = "neural"
            stats["select_ms"] = 1e3 * (time.perf_counter() - t1)
        self._tracked += 1
        self._since_kf += 1
        if self._since_kf >= cfg.keyframe_interval:
            self.add_keyframe(inp.frame, motion)
            stats["new_keyframe"] = int(inp.frame.index)
        stats["total_ms"] = 1e3 * (time.perf_counter() - t0)
        motion = GraphMotion(motion.rotations, motion.translations, meta={"tracker": self.name,
                                                                          "frame": int(inp.frame.index)})
        return TrackingResult(motion, ok=True, message=result_msg, stats=stats)

    def fit_score(self, inp: TrackingInput, motion: GraphMotion) -> tuple[int, float]:
        """How well `motion` explains the live depth: (number of model samples (a fixed subset of
        fit_samples) whose warp has a projective live match within fit_distance m and 45 degrees, RMS
        point-to-plane residual of those in mm)."""
        from fusion.warp import warp_normals, warp_points
        from tracker.association import live_geometry, projective_association

        cfg = self.config
        frame = inp.frame
        key = id(frame)
        if getattr(self, "_live_key", None) != key:
            mask = frame.mask if (self.config.fallback.use_mask and frame.mask is not None) else None
            self._live = live_geometry(frame.depth, frame.intrinsics, mask, self.config.fallback.depth_jump)
            self._live_key = key
        lp, ln, lv = self._live
        ok = np.flatnonzero((inp.model_anchors >= 0).any(1) & (inp.model_anchors < motion.num_nodes).all(1))
        if len(ok) > cfg.fit_samples:
            ok = ok[np.linspace(0, len(ok) - 1, cfg.fit_samples).astype(np.int64)]
        if len(ok) == 0:
            return 0, float("nan")
        a, w = inp.model_anchors[ok], inp.model_weights[ok]
        nodes = inp.graph.nodes[: motion.num_nodes]
        p = warp_points(inp.model_points[ok], a, w, nodes, motion.rotations, motion.translations)
        n = warp_normals(inp.model_normals[ok], a, w, motion.rotations)
        match = projective_association(p, n, lp, ln, lv, frame.intrinsics, cfg.fit_distance, 45.0)
        hit = match >= 0
        if not hit.any():
            return 0, float("nan")
        q = lp.reshape(-1, 3)[match[hit]]
        qn = ln.reshape(-1, 3)[match[hit]]
        r = ((p[hit] - q) * qn).sum(1)
        return int(hit.sum()), 1e3 * float(np.sqrt((r * r).mean()))

    # ------------------------------------------------------------------------------------------
    def track_pair(self, src: RGBDFrame, tgt: RGBDFrame, graph: DeformationGraph, points: np.ndarray,
                   normals: np.ndarray, anchors: np.ndarray, weights: np.ndarray) -> TrackingResult:
        """Track one pair: src is the only keyframe (identity motion, canonical = src camera frame), the
        model is `points` float32 [M,3] (source camera frame) with normals [M,3], anchors int32 [M,4],
        skinning weights float32 [M,4]; returns the motion src -> tgt."""
        self.reset()
        ident = GraphMotion.identity(graph.num_nodes)
        self.add_keyframe(src, ident)
        inp = TrackingInput(tgt, graph, ident, points, normals, anchors, weights, canonical_frame=src)
        return self.estimate(inp)


def make_tracker(name: str, device: str = "auto", weights: str | None = None):
    """A MotionEstimator by name for the app: "classical" | "neural" (weights: checkpoint path or None for the
    shipped ones). Raises InputError for an unknown name or missing weights."""
    if name == "classical":
        return ClassicalTracker()
    if name == "neural":
        return NeuralTracker(NeuralTrackerConfig(weights=weights, device=device))
    from fusion.errors import InputError

    raise InputError(f"unknown tracker {name!r} (classical | neural)")


def make_neural_tracker(device: str = "auto", weights: str | None = None, **options) -> NeuralTracker:
    """The neural tracker with the shipped weights (or `weights`) on `device`; options are
    NeuralTrackerConfig fields. Raises InputError when the weights are missing (app/trackers.py uses this)."""
    return NeuralTracker(NeuralTrackerConfig(weights=weights, device=device, **options))
