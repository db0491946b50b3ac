"""The classical non-rigid tracker: depth ICP (point-to-plane, projective) + ARAP (+ photometric), Gauss-Newton
on the deformation graph.

Per live frame (DynamicFusion / NNRT without learned correspondences):
1. the canonical model samples (TrackingInput.model_*) are sub-sampled and warped by the previous motion;
2. rigid pre-alignment of the whole object (rigid point-to-plane ICP + photometric, tracker/rigid.py),
   folded into every node transform;
3. `iterations` Levenberg-damped Gauss-Newton steps of
       lambda_icp * E_icp + lambda_arap * E_arap + lambda_color * E_photo
       (+ lambda_2d * E_2d + lambda_depth * E_depth over correspondences given to
        `estimate_with_correspondences`)
   re-associating projectively before each step, with distance / normal-angle rejection and Huber
   confidences; block-sparse normal equations solved by PCG (tracker/solver.py).
   E_photo compares the live intensity at each projected warped sample with a reference intensity (the
   previous tracked frame and/or the model colours, see ClassicalTrackerConfig.color_reference): depth
   alone cannot see motion along the surface (sliding cloth waves, a twisting cylinder), texture can.
Never raises on bad data mid-run: returns TrackingResult(ok=False, message=...) and the previous motion.
State: the previous tracked frame's intensity image (the photometric reference); `reset()` drops it.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import numpy as np
import torch

from fusion.camera import Intrinsics, backproject, project
from fusion.graph import GraphMotion
from fusion.motion import TrackingInput, TrackingResult
from fusion.warp import warp_normals, warp_points
from tracker.association import live_geometry, projective_association
from tracker.energy import (ArapEdges, ResidualBlock, WarpParts, arap_term_edges, depth_term, intensity_image_t,
                            normalized_intensity_t, photometric_term, point_to_plane_term, reprojection_term,
                            sample_bilinear_t, warp_parts)
from tracker.flow import PRESETS as FLOW_PRESETS
from tracker.flow import DenseFlow, FlowMatchConfig, cv2_threads, flow_matches, gray_u8
from tracker.features import DETECTORS as FEATURE_DETECTORS
from tracker.features import (FeatureConfig, FeatureDetector, KeyFeatures, depth_at, huber_pixel_weights,
                              lift_to_canonical, live_matches)
from tracker.rigid import LiveGeometry, huber_confidence, rigid_icp
from tracker.solver import SolverConfig, lm_step


@dataclass(frozen=True)
class ClassicalTrackerConfig:
    """Settings of the classical tracker (defaults tuned for 320x240 .. 640x480 at a 5 cm graph).

    The defaults (measured on the three synthetic scenes, 90 frames at 320x240; docs/dev/tracker_experiments.md):
    a shading-normalised photometric term against the previous frame and an anchored keyframe (the
    canonical frame first), facing-weighted; ARAP on the change since the previous frame; full
    constant-velocity prediction, withheld from nodes without data; 5000 model samples per frame (3000 left
    the humanoid's thin arms with too little data: 39-48 mm against 23-27 mm over three sample seeds).

    lambda_icp / lambda_arap: weights of the point-to-plane and ARAP terms.
    lambda_color / color_huber / color_blur: weight of the photometric term (0 disables it), its Huber
      threshold (intensity in [0, 1]) and the live image blur (pixels).
    color_reference: "+"-joined references among "previous", "model", "keyframe" ("both" = previous+model).
      "keyframe": each sample's intensity in a fixed keyframe image (TrackingInput.canonical_frame when given,
      which sees the surface at the identity motion, else the first tracked frame; replaced by the current
      frame when it sees less than keyframe_min_visible of what the live frame sees): sharp and anchored, so tangential
      drift does not accumulate frame after frame (the model colours are anchored too, but at 1 cm voxels
      they are blurred to ~3 px at 320x240). "previous" (each sample's intensity in the previous tracked frame: robust to shading
      that changes as the surface turns, but drifts), "model" (TrackingInput.model_colors: anchored, also
      the fallback for the first frame after reset() when intensities are not normalised) or "both"
      (previous+model); lambda_color is split evenly between the references in use.
    color_normalize: sigma (pixels) of the local mean that every image intensity is divided by (0: raw
      intensities). The synthetic scenes (and real cameras) shade a surface differently as it turns under
      the light: raw intensities of the same surface point 20 frames apart correlate at only ~0.5 (cylinder,
      measured), normalised ones at 0.98 where the surface faces the camera. With it, the image references
      ("previous", "keyframe") are normalised the same way; the per-point "model" colours cannot be and are
      not used.
    color_min_facing: photometric rows are weighted by clip((cos - m) / (1 - m), 0, 1) of the angle between
      the warped normal and the viewing ray, in the reference frame and in the live estimate (0: no
      weighting); near the silhouette the appearance of a point changes with the view and its projection
      is unstable.
    lambda_2d / lambda_depth: the NNRT correspondence terms (used only by `estimate_with_correspondences`;
      NNRT: 0.001, 1, with ARAP 1).
    arap_edge_weighting: scale ARAP rows by K * normalised graph edge weights (NNRT) instead of 1.
    arap_huber: Huber threshold (metres) on each edge's ARAP residual, re-weighted every Gauss-Newton
      iteration (DynamicFusion's robust regulariser): edges across a bending joint are far from rigid in the
      true motion (measured on the bundled humanoid: the best graph fit of the true motion has mean ARAP
      residuals of 9 mm and up to 8 cm), and plain least squares pulls the solution off the data there.
      None: plain ARAP.
    arap_reference: "canonical" (NNRT eq. 11: rigidity of the deformation from the canonical graph, which
      pulls every frame back toward the canonical shape, so bending is under-tracked a little every frame)
      or "previous" (rigidity of the change since the previous frame's motion, as NNRT's keyframe-to-frame
      graph does).
    rigid_iterations: rigid ICP iterations before the non-rigid solve (0 disables the pre-alignment).
    iterations: non-rigid GN iterations (one projective re-association + one LM step each).
    max_points: model samples used per frame (a fixed random subset); point_stride: take every n-th first.
    max_distance (m) / max_angle_deg: correspondence rejection in the non-rigid stage; rigid_max_distance:
      the (looser) distance in the rigid stage.
    huber_delta: Huber threshold on point-to-plane residuals in metres (None: plain least squares).
    min_correspondences / min_fraction: fewer matches than max(min_correspondences, min_fraction * used
      samples) -> ok=False (too few correspondences).
    depth_jump: relative depth change that stops live normals (no normals across edges).
    use_mask: restrict live points to frame.mask when the frame has one.
    damping: initial Levenberg damping relative to the mean diagonal of J^T J (adapted per step);
    linear_solver, pcg_iterations, pcg_tol: solver settings (tracker/solver.py).
    min_relative_decrease: stop the non-rigid iterations when a step lowers the energy by less than this
      fraction; max_retries: LM retries (with more damping) of a step that raised the energy.
    threads: torch and numba threads used while a frame is tracked (restored afterwards; 0 = leave them
      as they are). The tracker's arrays are small (a few thousand rows): on 2 cores, and worse on a loaded
      machine, multi-threaded torch and numba (two OpenMP pools spinning against each other) made it 5-20x
      slower than one thread.
    assembly_threads: numba threads of the one step that does gain from two: accumulating the normal
      equations (`tracker.solver.build_system`, split over node ranges; the same system bit for bit).
      0: as `threads`.
    velocity_prediction: start each frame from a constant-velocity extrapolation of the last two tracked
      frames, times this factor (0: start from the previous motion); fast motion needs it.
      velocity_min_support: nodes whose last-frame data support (summed skinning weights of their
      depth-matched samples) is below this get a proportionally smaller prediction (0: all nodes the same).
    flow: dense optical flow from the previous tracked frame as extra NNRT 2D + depth correspondences
      (tracker/flow.py): "none" or a DIS preset ("ultrafast" | "fast" | "medium"); flow_backward: also the
      backward flow, for forward-backward consistency weights; lambda_flow_2d / lambda_flow_depth: the weights
      of those terms (NNRT's 0.001 / 1 by default); flow_iterations: the flow terms take part in the first
      this many Gauss-Newton iterations only (a coarse stage: frame-to-frame flow drifts, the model-anchored
      ICP and photometric terms refine); flow_reference: "model" (flow from a splatted rendering of the
      fused model colours at the current estimate to the live image: anchored, no drift) or "previous"
      (flow from the previous tracked frame: the whole image, but frame-to-frame errors accumulate);
      flow_match: how flow becomes correspondences.
    features: sparse keyframe features as extra NNRT 2D + depth correspondences (tracker/features.py,
      VolumeDeform-style): "none", "sift" or "orb". The photometric keyframe's keypoints are lifted to fixed
      canonical points and matched to the live image every frame, so the matches hold however far the surface
      has slid along itself (needs the keyframe reference: lambda_color > 0, "keyframe" in color_reference).
      feature_match: detection, matching and gating settings; lambda_feature_2d / lambda_feature_depth: the
      weights of their 2D and depth rows; feature_lead_iterations: the photometric term sits out this many
      first Gauss-Newton iterations when there are feature matches (a slide past its basin of a pixel or two
      held a textured plane in place against them). Off by default: over five draws of each synthetic scene
      (90 frames, 320x240) SIFT features took the cloth's deformation error from 5.0 to 3.5 mm (better on
      every draw) but the cylinder's from 8.8 to 22.8 mm (worse on every draw; features lifted from a later
      keyframe carry its error) and moved the humanoid's from 25.6 to 24.7 mm (three draws better, two
      worse); `bench/scene_sweep.py --config '{"features": "sift"}' --compare`. They cost 5-15 ms a frame on the
      cylinder and 40-50 ms on the cloth's ~600 keypoints (docs/dev/tracker_experiments.md, sixth round).
    seed: seed of the model sub-sampling.
    """

    lambda_icp: float = 1.0
    lambda_arap: float = 0.3
    lambda_color: float = 0.1
    color_huber: float = 0.3
    color_blur: float = 1.0
    color_reference: str = "previous+keyframe"
    keyframe_min_visible: float = 0.5
    color_normalize: float = 3.0
    color_min_facing: float = 0.5
    lambda_2d: float = 0.001
    lambda_depth: float = 1.0
    arap_edge_weighting: bool = True
    arap_huber: float | None = None
    arap_reference: str = "previous"
    rigid_iterations: int = 2
    iterations: int = 4
    max_points: int = 5000
    point_stride: int = 1
    max_distance: float = 0.05
    rigid_max_distance: float = 0.10
    max_angle_deg: float = 45.0
    huber_delta: float | None = 0.01
    min_correspondences: int = 50
    min_fraction: float = 0.05
    depth_jump: float = 0.05
    use_mask: bool = True
    damping: float = 1e-4
    linear_solver: str = "pcg"
    pcg_iterations: int = 60
    pcg_tol: float = 1e-4
    min_relative_decrease: float = 0.01
    max_retries: int = 2
    threads: int = 1
    assembly_threads: int = 2
    velocity_prediction: float = 1.0
    velocity_min_support: float = 3.0
    flow: str = "none"
    flow_backward: bool = True
    lambda_flow_2d: float = 0.001
    lambda_flow_depth: float = 1.0
    flow_iterations: int = 1
    flow_reference: str = "model"
    flow_match: FlowMatchConfig = FlowMatchConfig()
    features: str = "none"
    feature_match: FeatureConfig = FeatureConfig()
    lambda_feature_2d: float = 0.001
    lambda_feature_depth: float = 1.0
    feature_lead_iterations: int = 1
    seed: int = 0


@dataclass
class Correspondences:
    """Given matches (the neural tracker's): model sample ids [C] -> target pixels / depths with weights.

    sample_ids int [C] into TrackingInput.model_points; target_uv float [C,2] pixels of the live frame;
    target_depth float [C] metres; weights float [C] in [0,1].
    """

    sample_ids: np.ndarray
    target_uv: np.ndarray
    target_depth: np.ndarray
    weights: np.ndarray


def nnrt_terms(points: torch.Tensor, anchors: torch.Tensor, weights: torch.Tensor, nodes: torch.Tensor,
               target_uv: torch.Tensor, target_depth: torch.Tensor, confidence: torch.Tensor, k: Intrinsics,
               lambda_2d: float, lambda_depth: float) -> list:
    """Residual functions (r, t, jac) -> ResidualBlock of the NNRT 2D (reprojection, pixels) and depth (metres)
    terms of canonical points [C,3] skinned by anchors [C,4] / weights [C,4] toward live pixels [C,2] and
    depths [C], each row scaled by confidence [C] (float64 / int64 tensors)."""
    def two_d(r, t, jac):
        return reprojection_term(warp_parts(points, anchors, weights, nodes, r, t), target_uv, k, confidence,
                                 lambda_2d, jac)

    def depth(r, t, jac):
        return depth_term(warp_parts(points, anchors, weights, nodes, r, t), target_depth, confidence,
                          lambda_depth, jac)

    return [two_d, depth]


@contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """Run the body with n torch intra-op threads and n numba threads (this thread), then restore them.
    n <= 0: change nothing."""
    if n <= 0:
        yield
        return
    import numba

    t_old = torch.get_num_threads()
    n_old = numba.get_num_threads()
    n_new = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        if t_old != n:
            torch.set_num_threads(n)
        if n_old != n_new:
            numba.set_num_threads(n_new)
        yield
    finally:
        if torch.get_num_threads() != t_old:
            torch.set_num_threads(t_old)
        if numba.get_num_threads() != n_old:
            numba.set_num_threads(n_old)


def facing_weight(points: torch.Tensor, normals: torch.Tensor, min_cos: float) -> torch.Tensor:
    """clip((|cos| - min_cos) / (1 - min_cos), 0, 1) of the angle between each normal [M,3] and the viewing
    ray to its camera-frame point [M,3]: 1 facing the camera, 0 at or beyond the grazing limit. [M]"""
    ray = points / points.norm(dim=1, keepdim=True).clamp_min(1e-9)
    c = (ray * normals).sum(1).abs()
    return ((c - min_cos) / max(1.0 - min_cos, 1e-6)).clamp(0.0, 1.0)


def sample_bilinear_t_uv(image: torch.Tensor, points: torch.Tensor,
                         k: Intrinsics) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear samples of image [H,W] at the projections of camera-frame points [M,3] m: (values [M],
    d value / d uv [M,2], inside bool [M]) as `tracker.energy.sample_bilinear_t` (behind the camera: outside)."""
    z = points[:, 2].clamp_min(1e-6)
    uv = torch.stack([k.fx * points[:, 0] / z + k.cx, k.fy * points[:, 1] / z + k.cy], -1)
    val, duv, inside = sample_bilinear_t(image, uv)
    return val, duv, inside & (points[:, 2] > 1e-3)


class ClassicalTracker:
    """Depth-ICP + ARAP + photometric non-rigid tracker (fusion.motion.MotionEstimator, name "classical")."""

    name = "classical"

    def __init__(self, config: ClassicalTrackerConfig | None = None) -> None:
        """config: ClassicalTrackerConfig (defaults when None)."""
        self.config = config or ClassicalTrackerConfig()
        if self.config.linear_solver not in ("pcg", "direct", "dense"):
            raise ValueError(f"unknown linear_solver {self.config.linear_solver!r}")
        if self.config.flow != "none" and self.config.flow not in FLOW_PRESETS:
            raise ValueError(f"unknown flow {self.config.flow!r} (none or one of {', '.join(FLOW_PRESETS)})")
        self._flow = DenseFlow(self.config.flow) if self.config.flow != "none" else None
        if self.config.features != "none" and self.config.features not in FEATURE_DETECTORS:
            raise ValueError(f"unknown features {self.config.features!r} "
                             f"(none or one of {', '.join(FEATURE_DETECTORS)})")
        if self.config.features != "none" and (self.config.lambda_color <= 0
                                               or "keyframe" not in self._color_references()):
            raise ValueError("features are matched against the photometric keyframe: they need lambda_color > 0 "
                             "and 'keyframe' in color_reference")
        self._features = (FeatureDetector(self.config.features, self.config.feature_match)
                          if self.config.features != "none" else None)
        self._key_gray: tuple | None = None  # (grey uint8 [H,W], frame index) of the keyframe, for its features
        self._key_features: KeyFeatures | None = None
        self._key: tuple | None = None  # (intensity, depth, intrinsics, rotations, translations, index): keyframe
        self._prev_gray: tuple | None = None  # (grey uint8 [H,W], depth [H,W], intrinsics) of the last tracked frame
        self._frames = 0
        self._prev: tuple | None = None  # (intensity [H,W], depth [H,W], intrinsics) of the last tracked frame
        self._history: list = []  # [(frame index, rotations [N,3,3], translations [N,3])] of the last two
        self._support: np.ndarray | None = None  # [N] data support of each node in the last tracked frame
        self._live_cache: tuple | None = None  # (frame, its `_live_intensity` image)

    @property
    def _uses_gray(self) -> bool:
        """Whether frames are needed as grey images (OpenCV flow or features)."""
        return self._flow is not None or self._features is not None

    def reset(self) -> None:
        """Forget the previous frame (the photometric reference), the motion history and the frame counter."""
        self._frames = 0
        self._prev = None
        self._key = None
        self._key_gray = None
        self._key_features = None
        self._prev_gray = None
        self._history = []
        self._support = None
        self._live_cache = None

    def _predict(self, inp: TrackingInput, rot: torch.Tensor, tr: torch.Tensor,
                 stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Constant-velocity initial guess from the last two tracked frames (when inp.prev_motion is the
        last one): node positions and rotations continue their last per-frame change, scaled by
        config.velocity_prediction and by the frame gap. Nodes added since then keep prev_motion. With
        velocity_min_support > 0, a node's prediction is scaled by min(1, support / velocity_min_support),
        its data support in the last frame (the summed skinning weights of its depth-matched samples): a node
        nothing observed would otherwise keep its velocity for ever (an isolated node flew off at 15 cm per
        frame on the cylinder scene)."""
        c = self.config.velocity_prediction
        if c <= 0 or len(self._history) < 2:
            return rot, tr
        (i1, r1, t1), (i2, r2, t2) = self._history
        n1 = min(len(t1), len(t2), rot.shape[0])
        same = np.allclose(t2[:n1], tr.numpy()[:n1], atol=1e-7) and np.allclose(r2[:n1], rot.numpy()[:n1], atol=1e-7)
        gap_prev, gap = i2 - i1, int(inp.frame.index) - i2
        if not same or gap_prev <= 0 or gap <= 0 or gap > 3 * gap_prev:
            return rot, tr
        f = np.full((n1, 1), c * gap / gap_prev)
        ms = self.config.velocity_min_support
        if ms > 0 and self._support is not None:
            sup = np.zeros(n1)
            m = min(n1, len(self._support))
            sup[:m] = self._support[:m]
            f = f * np.clip(sup / ms, 0.0, 1.0)[:, None]
        from tracker.so3 import exp_so3_t, log_so3

        dr = np.einsum("nij,nkj->nik", r2[:n1], r1[:n1])  # R2 R1^T: last per-node rotation change
        w = torch.from_numpy(log_so3(dr) * f)
        rot = rot.clone()
        tr = tr.clone()
        rot[:n1] = exp_so3_t(w) @ rot[:n1]
        tr[:n1] = tr[:n1] + torch.from_numpy(f) * torch.from_numpy(t2[:n1] - t1[:n1])
        stats["predicted"] = True
        return rot, tr

    # ------------------------------------------------------------------------------------------
    def estimate(self, inp: TrackingInput) -> TrackingResult:
        """Estimate the canonical -> live motion of inp.frame (see module doc). Never raises on bad data."""
        return self.estimate_with_correspondences(inp, None)

    def estimate_with_correspondences(self, inp: TrackingInput, corr: Correspondences | None) -> TrackingResult:
        """`estimate` plus the NNRT 2D / depth terms over the given correspondences (when not None)."""
        with limited_threads(self.config.threads), cv2_threads(self.config.threads if self._uses_gray else 0):
            try:
                return self._estimate(inp, corr)
            except (np.linalg.LinAlgError, FloatingPointError, RuntimeError) as e:  # numerical failure: skip frame
                return TrackingResult(inp.prev_motion, ok=False, message=f"tracking failed: {e}", stats={})

    # ------------------------------------------------------------------------------------------
    def _select(self, inp: TrackingInput) -> np.ndarray | str:
        cfg = self.config
        m = len(inp.model_points)
        for name, arr, shape in (("model_points", inp.model_points, (m, 3)),
                                 ("model_normals", inp.model_normals, (m, 3))):
            if np.asarray(arr).shape != shape:
                return f"{name} has shape {np.asarray(arr).shape}, expected {shape}"
        a_shape = np.asarray(inp.model_anchors).shape
        if len(a_shape) != 2 or a_shape[0] != m or np.asarray(inp.model_weights).shape != a_shape:
            return "model anchors / weights do not match the model points"
        # candidates first (a random superset of the subset), validity checked on them only: O(max_points)
        cand = np.arange(0, m, max(1, cfg.point_stride))
        if len(cand) > 2 * cfg.max_points:
            cand = np.sort(np.random.default_rng(cfg.seed).choice(cand, 2 * cfg.max_points, replace=False))
        anchors = np.asarray(inp.model_anchors)[cand]
        ok = (anchors >= 0).any(1) & (anchors < inp.graph.num_nodes).all(1)
        ok &= np.isfinite(np.asarray(inp.model_points)[cand]).all(1) & np.isfinite(np.asarray(inp.model_normals)[cand]).all(1)
        sel = cand[ok]
        if len(sel) > cfg.max_points:
            sel = np.sort(np.random.default_rng(cfg.seed + 1).choice(sel, cfg.max_points, replace=False))
        return sel

    def _live_intensity(self, frame) -> torch.Tensor:
        """The frame's intensity image [H,W] as the photometric term sees it: grey, blurred by color_blur,
        shading-normalised when color_normalize > 0 (over the valid depth, and the mask). The last frame's
        image is kept (the same frame object is asked for it again: references, selection residuals)."""
        cache = self._live_cache
        if cache is not None and cache[0] is frame:
            return cache[1]
        cfg = self.config
        img = intensity_image_t(torch.from_numpy(np.array(frame.color)), cfg.color_blur)
        if cfg.color_normalize > 0:
            valid = np.asarray(frame.depth) > 0
            if cfg.use_mask and frame.mask is not None:
                valid &= np.asarray(frame.mask, bool)
            img = normalized_intensity_t(img.to(torch.float64), torch.from_numpy(valid), cfg.color_normalize)
        self._live_cache = (frame, img)
        return img

    def _photometric_reference(self, inp: TrackingInput, sel: np.ndarray, p: torch.Tensor, an: torch.Tensor,
                               aw: torch.Tensor, nodes: torch.Tensor, stats: dict,
                               pn: torch.Tensor | None = None) -> tuple | None:
        """(live intensity [H,W], reference intensities [S,R], validity [S,R] float, lambdas [R]) or None.

        "previous" reference: the intensity of the previous tracked frame at each sample's position there
        (the sample warped by inp.prev_motion, which is that frame's motion), valid where the previous depth
        agrees within 2 cm (visible there): shading changes little between consecutive frames, but errors
        can accumulate. "model" reference: TrackingInput.model_colors: anchored, but biased where shading
        changes as the surface turns. "both" (default) splits lambda_color between the two; without a
        previous frame (first frame after reset()) the model colours serve alone.
        """
        cfg = self.config
        if cfg.lambda_color <= 0:
            return None
        t1 = time.perf_counter()
        live_i = self._live_intensity(inp.frame)
        refs = []
        wanted = self._color_references()
        prev = self._prev
        has_prev = "previous" in wanted and prev is not None and prev[0].shape == live_i.shape
        has_model = inp.model_colors is not None and np.asarray(inp.model_colors).shape == (len(inp.model_points), 3)
        mf = cfg.color_min_facing
        at_prev = None  # the samples at the previous motion: for the previous frame and the keyframe check
        if has_prev:
            at_prev = self._reference_warp(p, an, aw, nodes, np.asarray(inp.prev_motion.rotations),
                                           np.asarray(inp.prev_motion.translations), pn, mf)
            val, valid = self._sample_warped(prev[0], prev[1], prev[2], at_prev, an, aw, mf)
            refs.append((val, valid, "previous"))
        cf = inp.canonical_frame
        if ("keyframe" in wanted and self._key is None and cf is not None
                and cf.intrinsics.width == inp.frame.intrinsics.width and cf.intrinsics.height == inp.frame.intrinsics.height):
            # the canonical frame sees the canonical surface at the identity motion: an exact anchor
            n = nodes.shape[0]
            self._key = (self._live_intensity(cf), np.asarray(cf.depth), cf.intrinsics,
                         np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3)), int(cf.index))
            if self._features is not None:
                self._key_gray = (gray_u8(np.asarray(cf.color)), int(cf.index))
        key = self._key
        has_key = "keyframe" in wanted and key is not None and key[0].shape == live_i.shape
        if has_key:
            val, valid = self._sample_reference(key[0], key[1], key[2], p, an, aw, nodes, key[3], key[4], pn, mf)
            # how much of what the live frame sees (at the previous motion) the keyframe sees too
            if at_prev is None:
                at_prev = self._reference_warp(p, an, aw, nodes, np.asarray(inp.prev_motion.rotations),
                                               np.asarray(inp.prev_motion.translations), pn, mf)
            _, seen = self._sample_warped(live_i, np.asarray(inp.frame.depth), inp.frame.intrinsics, at_prev, an, aw, mf)
            both = float(((valid > 0) & (seen > 0)).sum()) / max(float((seen > 0).sum()), 1.0)
            stats["keyframe"] = {"index": key[5], "visible": both}
            refs.append((val, valid, "keyframe"))
        no_image_ref = not (has_prev or has_key)
        if has_model and (no_image_ref or (cfg.color_normalize <= 0 and "model" in wanted)):
            # per-point colours cannot be shading-normalised: with normalisation they serve only as the fallback
            # of a frame with no image reference (no canonical frame, first frame), against the raw live image
            model_i = intensity_image_t(torch.from_numpy(np.asarray(inp.model_colors)[sel][None]), 0.0)[0]
            refs.append((model_i, torch.ones(len(sel), dtype=model_i.dtype), "model"))
            if no_image_ref and cfg.color_normalize > 0:
                live_i = intensity_image_t(torch.from_numpy(np.array(inp.frame.color)), cfg.color_blur)
        stats["color_ms"] = 1e3 * (time.perf_counter() - t1)
        if not refs:
            return None
        stats["color_reference"] = "+".join(r[2] for r in refs)
        lam = torch.full((len(refs),), cfg.lambda_color / len(refs), dtype=torch.float64)
        return (live_i, torch.stack([r[0] for r in refs], 1).to(torch.float64),
                torch.stack([r[1] for r in refs], 1).to(torch.float64), lam)

    def _color_references(self) -> set[str]:
        """The configured photometric references ("both" = previous + model)."""
        ref = self.config.color_reference
        return {"previous", "model"} if ref == "both" else set(ref.split("+"))

    @staticmethod
    def _reference_warp(p: torch.Tensor, an: torch.Tensor, aw: torch.Tensor, nodes: torch.Tensor,
                        rotations: np.ndarray, translations: np.ndarray, normals: torch.Tensor | None = None,
                        min_facing: float = 0.0) -> tuple[WarpParts, int]:
        """The samples warped by a reference frame's motion (rotations [N',3,3], translations [N',3]; N' <=
        nodes: later nodes have no motion there and stay put), with their normals when min_facing > 0;
        returns (parts, N')."""
        n_ref = len(rotations)
        n = nodes.shape[0]
        rot = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        tr = torch.zeros((n, 3), dtype=torch.float64)
        rot[:n_ref] = torch.from_numpy(np.asarray(rotations, np.float64))
        tr[:n_ref] = torch.from_numpy(np.asarray(translations, np.float64))
        return warp_parts(p, an, aw, nodes, rot, tr, normals=normals if min_facing > 0 else None), n_ref

    @staticmethod
    def _sample_warped(img: torch.Tensor, depth: np.ndarray, kp: Intrinsics, warped: tuple[WarpParts, int],
                       an: torch.Tensor, aw: torch.Tensor, min_facing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Intensities of samples warped by `_reference_warp` in a reference image (img [H,W], depth [H,W] m,
        intrinsics kp): (values [S], validity [S] float: inside, anchored to nodes that existed, and within
        2 cm of the reference depth, i.e. visible there; times the facing weight (`facing_weight`) of the
        warped normals when they were warped)."""
        parts, n_ref = warped
        wp = parts.warped
        val, _, inside = sample_bilinear_t_uv(img, wp, kp)
        z = wp[:, 2].clamp_min(1e-6)
        u = torch.round(kp.fx * wp[:, 0] / z + kp.cx).long().clamp(0, kp.width - 1)
        v = torch.round(kp.fy * wp[:, 1] / z + kp.cy).long().clamp(0, kp.height - 1)
        dz = torch.from_numpy(depth)[v, u].to(wp.dtype)
        valid = inside & (dz > 0) & ((dz - wp[:, 2]).abs() < 0.02) & ((an < n_ref) | (aw <= 0)).all(1)
        w = valid.to(val.dtype)
        if parts.normals is not None:
            w = w * facing_weight(wp, parts.normals, min_facing).to(w.dtype)
        return torch.where(valid, val, torch.zeros_like(val)), w

    @classmethod
    def _sample_reference(cls, img: torch.Tensor, depth: np.ndarray, kp: Intrinsics, p: torch.Tensor, an: torch.Tensor,
                          aw: torch.Tensor, nodes: torch.Tensor, rotations: np.ndarray,
                          translations: np.ndarray, normals: torch.Tensor | None = None,
                          min_facing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Intensities of the samples in a reference image (img [H,W], depth [H,W] m, intrinsics kp) where the
        reference frame's motion puts them: `_reference_warp` then `_sample_warped`."""
        warped = cls._reference_warp(p, an, aw, nodes, rotations, translations, normals, min_facing)
        return cls._sample_warped(img, depth, kp, warped, an, aw, min_facing)

    @property
    def keyframe(self) -> tuple | None:
        """The current photometric keyframe (intensity [H,W], depth [H,W], intrinsics, rotations, translations,
        frame index), or None; pass it to `photometric_residuals` to score motions against it later."""
        return self._key

    def photometric_residual(self, inp: TrackingInput, motion: GraphMotion, key: tuple | None = None) -> float | None:
        """`photometric_residuals` of one motion."""
        return self.photometric_residuals(inp, [motion], key)[0]

    def photometric_residuals(self, inp: TrackingInput, motions: list[GraphMotion],
                              key: tuple | None = None) -> list[float | None]:
        """For each motion: mean |live - keyframe| intensity (as the photometric term sees them: normalised,
        facing-weighted) of the model samples warped by it into inp.frame, over samples visible in both;
        key: a keyframe as `keyframe` returns it (default: the current one). None without a keyframe or with
        fewer than 20 samples seen in both. Depth alone cannot tell motion along the surface; this can."""
        key = self._key if key is None else key
        none = [None] * len(motions)
        sel = self._select(inp)
        if key is None or isinstance(sel, str) or len(sel) == 0:
            return none
        live = self._live_intensity(inp.frame)
        if live.shape != key[0].shape:
            return none
        t64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float64))  # noqa: E731
        p, pn = t64(inp.model_points[sel]), t64(inp.model_normals[sel])
        an = torch.from_numpy(np.ascontiguousarray(inp.model_anchors[sel], np.int64))
        aw, nodes = t64(inp.model_weights[sel]), t64(inp.graph.nodes)
        mf = self.config.color_min_facing
        ref, vr = self._sample_reference(key[0], key[1], key[2], p, an, aw, nodes, key[3], key[4], pn, mf)
        out: list[float | None] = []
        for motion in motions:
            if motion.num_nodes != inp.graph.num_nodes:
                out.append(None)
                continue
            cur, vc = self._sample_reference(live, np.asarray(inp.frame.depth), inp.frame.intrinsics, p, an, aw, nodes,
                                             np.asarray(motion.rotations), np.asarray(motion.translations), pn, mf)
            w = vr.to(torch.float64) * vc.to(torch.float64)
            out.append(None if int((w > 0).sum()) < 20 else
                       float((w * (cur.to(torch.float64) - ref.to(torch.float64)).abs()).sum() / w.sum()))
        return out

    def _fail(self, inp: TrackingInput, msg: str, stats: dict) -> TrackingResult:
        return TrackingResult(inp.prev_motion, ok=False, message=msg, stats=stats)

    def _estimate(self, inp: TrackingInput, corr: Correspondences | None) -> TrackingResult:
        cfg = self.config
        t_start = time.perf_counter()
        stats: dict = {"frame": int(inp.frame.index)}
        graph, prev = inp.graph, inp.prev_motion
        n = graph.num_nodes
        if n == 0:
            return self._fail(inp, "the deformation graph has no nodes", stats)
        if prev.num_nodes != n:
            return self._fail(inp, f"previous motion has {prev.num_nodes} nodes, graph has {n}", stats)
        sel = self._select(inp)
        if isinstance(sel, str):
            return self._fail(inp, sel, stats)
        need = max(cfg.min_correspondences, int(cfg.min_fraction * len(sel)))
        stats["samples"] = int(len(sel))
        if len(sel) < need:
            return self._fail(inp, f"too few model samples with anchors ({len(sel)} < {need})", stats)

        # live frame geometry
        t0 = time.perf_counter()
        frame = inp.frame
        k: Intrinsics = frame.intrinsics
        mask = frame.mask if (cfg.use_mask and frame.mask is not None) else None
        lp, ln, lv = live_geometry(frame.depth, k, mask, cfg.depth_jump)
        live = LiveGeometry(lp, ln, lv, k)
        stats["live_valid"] = int(lv.sum())
        if stats["live_valid"] < need:
            return self._fail(inp, f"too little valid depth in the live frame ({stats['live_valid']} pixels)", stats)
        stats["live_ms"] = 1e3 * (time.perf_counter() - t0)

        d = torch.float64
        t64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float64))  # noqa: E731
        p = t64(inp.model_points[sel])
        pn = t64(inp.model_normals[sel])
        an = torch.from_numpy(np.ascontiguousarray(inp.model_anchors[sel], np.int64))
        aw = t64(inp.model_weights[sel])
        nodes = t64(graph.nodes)
        rot = t64(prev.rotations)
        tr = t64(prev.translations)
        if not (torch.isfinite(rot).all() and torch.isfinite(tr).all()):
            return self._fail(inp, "previous motion is not finite", stats)
        rot, tr = self._predict(inp, rot, tr, stats)
        edges = torch.from_numpy(np.ascontiguousarray(graph.edges, np.int64))
        ew = None
        if cfg.arap_edge_weighting and graph.edge_weights is not None:
            w = np.asarray(graph.edge_weights, np.float64) * (graph.edges >= 0)
            s = w.sum(1, keepdims=True)
            ew = t64(np.where(s > 0, w * graph.edges.shape[1] / np.where(s > 0, s, 1.0), 0.0))

        aedges = ArapEdges.build(nodes, edges, ew)
        if cfg.arap_reference == "previous":
            aedges = aedges.with_rest(t64(prev.rotations), t64(prev.translations))

        photo = self._photometric_reference(inp, sel, p, an, aw, nodes, stats, pn)

        # rigid pre-alignment
        t0 = time.perf_counter()
        if cfg.rigid_iterations > 0:
            parts = warp_parts(p, an, aw, nodes, rot, tr, normals=pn)
            rphoto = None if photo is None else (photo[0], photo[1], photo[2], photo[3] / max(cfg.lambda_icp, 1e-12),
                                                 cfg.color_huber)
            rg, tg, rinfo = rigid_icp(parts.warped, parts.normals, live, cfg.rigid_iterations, cfg.rigid_max_distance,
                                      cfg.max_angle_deg, cfg.huber_delta, need, cfg.damping, rphoto)
            stats["rigid"] = {k2: v for k2, v in rinfo.items() if k2 != "ok"}
            if rinfo["ok"]:
                # W'(p) = Rg W(p) + tg  <=>  R_k' = Rg R_k, t_k' = Rg (g_k + t_k) + tg - g_k (weights sum to 1)
                tr = (nodes + tr) @ rg.T + tg - nodes
                rot = rg @ rot
        stats["rigid_ms"] = 1e3 * (time.perf_counter() - t0)

        # non-rigid Gauss-Newton with re-association
        t0 = time.perf_counter()
        solver = SolverConfig(iterations=1, linear_solver=cfg.linear_solver, damping=cfg.damping,
                              relative_damping=True, adaptive=True, mu_up=10.0, max_retries=cfg.max_retries,
                              pcg_iterations=cfg.pcg_iterations, pcg_tol=cfg.pcg_tol, threads=cfg.assembly_threads)
        mu = cfg.damping
        lpt = torch.from_numpy(live.flat_points)
        lnt = torch.from_numpy(live.flat_normals)
        extra = self._correspondence_terms(inp, corr, k)
        # the live grey image, once per frame, for the flow and the features
        gray = gray_u8(np.asarray(frame.color)) if self._uses_gray else None

        def flow_terms(r: torch.Tensor, t: torch.Tensor) -> list:
            """The flow correspondence terms at the estimate (r, t) (model reference) or from the previous
            frame; adds the time to stats["flow_ms"]."""
            t1 = time.perf_counter()
            if cfg.flow_reference == "model":
                fc = self._model_flow_correspondences(inp, sel, r, t, gray, stats)
            else:
                fc = self._flow_correspondences(inp, sel, p, an, aw, nodes, gray, stats)
            out = self._correspondence_terms(inp, fc, k, cfg.lambda_flow_2d, cfg.lambda_flow_depth)
            stats["flow_ms"] = stats.get("flow_ms", 0.0) + 1e3 * (time.perf_counter() - t1)
            return out

        fextra = flow_terms(rot, tr) if self._flow is not None else []
        feats = None if self._features is None else self._feature_matches(inp, gray, p, an, aw, nodes, rot, tr, stats)
        history = []
        last_match = None
        n_corr = 0
        rms = float("nan")
        p32, n32 = inp.model_points[sel].astype(np.float32), inp.model_normals[sel].astype(np.float32)
        a32, w32 = inp.model_anchors[sel].astype(np.int32), inp.model_weights[sel].astype(np.float32)
        nodes32 = np.ascontiguousarray(graph.nodes, np.float32)
        for it in range(cfg.iterations):
            if 0 < it < cfg.flow_iterations and cfg.flow_reference == "model" and self._flow is not None:
                fextra = flow_terms(rot, tr)  # re-render the model at the refined estimate: the next flow is smaller
            terms = extra + (fextra if it < cfg.flow_iterations else [])
            if feats is not None:
                terms = terms + self._feature_terms(feats, nodes, rot, tr, k)
            # association with the fast numba warp; Jacobian pieces only for the matched points
            r32 = rot.numpy().astype(np.float32)
            wpts = warp_points(p32, a32, w32, nodes32, r32, tr.numpy().astype(np.float32))
            wnrm = warp_normals(n32, a32, w32, r32)
            match = projective_association(wpts, wnrm, live.points, live.normals, live.valid, k, cfg.max_distance,
                                           cfg.max_angle_deg)
            ok = np.flatnonzero(match >= 0)
            n_corr = int(len(ok))
            if n_corr < need:
                stats.update(correspondences=n_corr, iterations=it)
                if it == 0:
                    return self._fail(inp, f"too few correspondences ({n_corr} < {need})", stats)
                break
            sel_t = torch.from_numpy(ok)
            last_match = (a32[ok].ravel(), w32[ok].ravel())
            mt = torch.from_numpy(match[ok])
            q = lpt[mt].to(d)
            qn = lnt[mt].to(d)
            ps, ans, aws = p[sel_t], an[sel_t], aw[sel_t]
            sub = warp_parts(ps, ans, aws, nodes, rot, tr)
            res0 = ((sub.warped - q) * qn).sum(1)
            rms = float(torch.sqrt((res0 * res0).mean()))
            conf = huber_confidence(res0, cfg.huber_delta)
            aed = aedges
            if cfg.arap_huber is not None:
                a0 = arap_term_edges(aedges, rot, tr, 1.0, False).r.reshape(-1, 3).norm(dim=1)
                a0 = a0 / aedges.scale.clamp_min(1e-12)  # the unweighted residual length, metres
                aed = dataclasses.replace(aedges, scale=aedges.scale * huber_confidence(a0, cfg.arap_huber))
            pterm = None  # (reference intensities [S,R], confidences [S,R]) of the matched samples
            if photo is not None and not (feats is not None and it < cfg.feature_lead_iterations):
                val, _, inside = sample_bilinear_t_uv(photo[0], sub.warped, k)
                mi = photo[1][sel_t]
                pc = huber_confidence(torch.where(inside[:, None], val[:, None].to(mi.dtype) - mi,
                                                  torch.zeros_like(mi)), cfg.color_huber) * photo[2][sel_t]
                if cfg.color_min_facing > 0:  # the live side of the facing weight, at this iteration's estimate
                    pc = pc * facing_weight(torch.from_numpy(wpts[ok]), torch.from_numpy(wnrm[ok]),
                                            cfg.color_min_facing).to(pc.dtype)[:, None]
                pterm = (mi, pc * photo[3] ** 0.5)

            def residuals(r, t, jac, pp=None, ps=ps, ans=ans, aws=aws, q=q, qn=qn, conf=conf,
                          pterm=pterm, terms=terms, aed=aed) -> list[ResidualBlock]:
                """The residual blocks at (r, t); pp = their warp when already computed."""
                pp = warp_parts(ps, ans, aws, nodes, r, t) if pp is None else pp
                out = [point_to_plane_term(pp, q, qn, conf, cfg.lambda_icp, jac),
                       arap_term_edges(aed, r, t, cfg.lambda_arap, jac)]
                if pterm is not None:
                    out.append(photometric_term(pp, photo[0], pterm[0], k, pterm[1], 1.0, jac))
                return out + [f(r, t, jac) for f in terms]

            blocks = residuals(rot, tr, True, sub)
            rot, tr, _, mu, info = lm_step(residuals, rot, tr, blocks, mu, solver, jacobian_after=False)
            history.append({"energy_before": info["energy_before"], "energy_after": info.get("energy_after"),
                            "accepted": info["accepted"], "correspondences": n_corr, "rms_mm": 1e3 * rms,
                            "pcg_iterations": info.get("iterations"), "retries": info.get("retries", 0)})
            if not info["ok"]:
                stats["history"] = history
                return self._fail(inp, f"singular system: {info.get('error', 'linear solve failed')}", stats)
            if not info["accepted"] or info.get("step", 1.0) < 1e-6:
                break  # no damped step lowers the energy any more: converged for this association
            if (it + 1 >= cfg.flow_iterations and
                    info["energy_before"] - info["energy_after"] < cfg.min_relative_decrease * info["energy_before"]):
                break
        stats["nonrigid_ms"] = 1e3 * (time.perf_counter() - t0)
        stats.update(correspondences=n_corr, iterations=len(history), history=history, rms_mm=1e3 * rms,
                     total_ms=1e3 * (time.perf_counter() - t_start), config=asdict(cfg))
        if not (torch.isfinite(rot).all() and torch.isfinite(tr).all()):
            return self._fail(inp, "non-finite motion after the solve", stats)
        self._frames += 1
        self._history = (self._history + [(int(frame.index), rot.numpy().copy(), tr.numpy().copy())])[-2:]
        if last_match is not None:  # per-node data support: skinning weights of the depth-matched samples
            ia, wa = last_match
            self._support = np.bincount(ia[ia >= 0], weights=wa[ia >= 0], minlength=n).astype(np.float64)
        refs = self._color_references()
        if photo is not None or (cfg.lambda_color > 0 and refs & {"previous", "keyframe"}):
            live_i = self._live_intensity(frame)  # (not photo[0]: the raw image when the model colours stood in)
            self._prev = (live_i, np.asarray(frame.depth), k)
            kf = stats.get("keyframe")
            if "keyframe" in refs and (self._key is None or kf is None or kf["visible"] < cfg.keyframe_min_visible):
                self._key = (live_i, np.asarray(frame.depth), k, rot.numpy().copy(), tr.numpy().copy(), int(frame.index))
                stats["new_keyframe"] = int(frame.index)
                if self._features is not None:
                    self._key_gray = (gray, int(frame.index))
        if self._flow is not None:
            self._prev_gray = (gray, np.asarray(frame.depth), k)
        motion = GraphMotion(rot.numpy().astype(np.float32), tr.numpy().astype(np.float32),
                             meta={"tracker": self.name, "frame": int(frame.index)})
        return TrackingResult(motion, ok=True, message="", stats=stats)

    def _keyframe_features(self, p: torch.Tensor, an: torch.Tensor, aw: torch.Tensor,
                           nodes: torch.Tensor) -> KeyFeatures | None:
        """The current keyframe's features lifted to canonical points (computed once per keyframe): keyframe
        depth back-projected, then taken through the inverse of the keyframe's motion, locally, at the nearest
        model sample (p, an, aw: the samples; within 1 cm). None without a keyframe image."""
        key, kg = self._key, self._key_gray
        if key is None or kg is None or kg[1] != key[5]:
            return None
        if self._key_features is not None and self._key_features.index == key[5]:
            return self._key_features
        kdepth, kk, rots, trs = np.asarray(key[1]), key[2], np.asarray(key[3]), np.asarray(key[4])
        uv, desc = self._features(kg[0], kdepth > 0)
        z = depth_at(kdepth, uv, self.config.feature_match.depth_jump)
        ok = np.flatnonzero(z > 0)
        x = backproject(uv[ok], z[ok], kk)
        desc = desc[ok]
        if np.allclose(rots, np.eye(3), atol=1e-9) and np.allclose(trs, 0.0, atol=1e-9):
            pc = x  # the canonical frame: camera and canonical coordinates agree
        else:
            parts, n_ref = self._reference_warp(p, an, aw, nodes, rots, trs)
            rfull = np.tile(np.eye(3), (nodes.shape[0], 1, 1))
            rfull[:n_ref] = rots
            pc, rows = lift_to_canonical(x, p.numpy(), parts.warped.numpy(), an.numpy(), aw.numpy(), rfull)
            desc = desc[rows]
        self._key_features = KeyFeatures(np.asarray(pc, np.float64), desc, int(key[5]))
        return self._key_features

    def _feature_matches(self, inp: TrackingInput, gray: np.ndarray, p: torch.Tensor, an: torch.Tensor,
                         aw: torch.Tensor, nodes: torch.Tensor, rot: torch.Tensor, tr: torch.Tensor,
                         stats: dict) -> tuple | None:
        """Keyframe feature matches of the live frame (its grey image gray uint8 [H,W]), gated at the estimate
        (rot, tr): (canonical points [C,3], anchors [C,4], weights [C,4], live pixels [C,2], live depths [C])
        as float64 / int64 tensors, or None; counts them in stats["feature_matches"] and the time in
        stats["feature_ms"]."""
        from fusion.graph import skinning

        t1 = time.perf_counter()
        kf = self._keyframe_features(p, an, aw, nodes)
        out = None
        if kf is not None and len(kf.points):
            anc, wts = skinning(kf.points.astype(np.float32), inp.graph)
            t64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float64))  # noqa: E731
            at = torch.from_numpy(anc.astype(np.int64))
            pred = warp_parts(t64(kf.points), at, t64(wts), nodes, rot, tr).warped.numpy().copy()
            pred[~(anc >= 0).any(1)] = (0.0, 0.0, -1.0)  # unanchored: never within the gate
            frame = inp.frame
            mask = frame.mask if (self.config.use_mask and frame.mask is not None) else None
            m = live_matches(kf, self._features, gray, np.asarray(frame.depth), mask,
                             pred, frame.intrinsics, self.config.feature_match)
            stats["feature_matches"] = int(len(m.rows))
            if len(m.rows):
                out = (t64(kf.points[m.rows]), at[m.rows], t64(wts[m.rows]), t64(m.target_uv), t64(m.target_depth))
        stats["feature_ms"] = 1e3 * (time.perf_counter() - t1)
        return out

    def _feature_terms(self, feats: tuple, nodes: torch.Tensor, rot: torch.Tensor, tr: torch.Tensor,
                       k: Intrinsics) -> list:
        """NNRT 2D + depth residual functions of the feature matches, Huber-weighted by their reprojection
        error at the estimate (rot, tr)."""
        cfg = self.config
        fp, fa, fw, fuv, fz = feats
        puv = project(warp_parts(fp, fa, fw, nodes, rot, tr).warped.numpy(), k)[0]
        w = torch.from_numpy(np.sqrt(huber_pixel_weights(puv, fuv.numpy(), cfg.feature_match.huber_px)))
        return nnrt_terms(fp, fa, fw, nodes, fuv, fz, w, k, cfg.lambda_feature_2d, cfg.lambda_feature_depth)

    def _model_flow_correspondences(self, inp: TrackingInput, sel: np.ndarray, rot: torch.Tensor, tr: torch.Tensor,
                                    gray: np.ndarray, stats: dict) -> Correspondences | None:
        """Correspondences of the model samples `sel` from the flow between the model rendered at the current
        estimate (rot, tr) and the live grey image; None without model colours."""
        if inp.model_colors is None or np.asarray(inp.model_colors).shape != (len(inp.model_points), 3):
            return None
        from tracker.flow import model_flow_matches

        pts = warp_points(np.asarray(inp.model_points, np.float32), np.asarray(inp.model_anchors, np.int32),
                          np.asarray(inp.model_weights, np.float32), np.ascontiguousarray(inp.graph.nodes, np.float32),
                          rot.numpy().astype(np.float32), tr.numpy().astype(np.float32))
        pts[~(np.asarray(inp.model_anchors) >= 0).any(1)] = (0.0, 0.0, -1.0)  # unanchored: behind the camera, never splatted
        vals = gray_u8(np.asarray(inp.model_colors)[None])[0].astype(np.float32)
        m = model_flow_matches(pts, vals, sel, inp.frame.intrinsics, gray, np.asarray(inp.frame.depth), self._flow,
                               self.config.flow_backward, self.config.flow_match)
        return self._as_correspondences(sel, m, stats)

    def _flow_correspondences(self, inp: TrackingInput, sel: np.ndarray, p: torch.Tensor, an: torch.Tensor,
                              aw: torch.Tensor, nodes: torch.Tensor, gray: np.ndarray,
                              stats: dict) -> Correspondences | None:
        """Correspondences of the model samples `sel` carried by the optical flow from the previous tracked
        frame (where inp.prev_motion puts them) into the live frame; None without a usable previous frame."""
        prev = self._prev_gray
        if prev is None or prev[0].shape != gray.shape:
            return None
        pgray, pdepth, pk = prev
        cfg = self.config
        fwd = self._flow(pgray, gray)
        bwd = self._flow(gray, pgray) if cfg.flow_backward else None
        wp = warp_parts(p, an, aw, nodes, torch.from_numpy(np.asarray(inp.prev_motion.rotations, np.float64)),
                        torch.from_numpy(np.asarray(inp.prev_motion.translations, np.float64))).warped.numpy()
        m = flow_matches(wp, pdepth, pk, np.asarray(inp.frame.depth), inp.frame.intrinsics, fwd, bwd, cfg.flow_match)
        return self._as_correspondences(sel, m, stats)

    @staticmethod
    def _as_correspondences(sel: np.ndarray, m, stats: dict) -> Correspondences | None:
        """Flow matches (rows into the sample subset `sel`) as Correspondences of model sample ids; counts them
        in stats["flow_correspondences"]; None when there are none."""
        stats["flow_correspondences"] = int(len(m.rows))
        if len(m.rows) == 0:
            return None
        return Correspondences(sel[m.rows], m.target_uv, m.target_depth, m.weights)

    def _correspondence_terms(self, inp: TrackingInput, corr: Correspondences | None, k: Intrinsics,
                              lambda_2d: float | None = None, lambda_depth: float | None = None) -> list:
        """Residual functions of the NNRT 2D and depth terms over given correspondences (empty when None);
        lambda_2d / lambda_depth default to the config's."""
        if corr is None or len(corr.sample_ids) == 0:
            return []
        cfg = self.config
        l2d = cfg.lambda_2d if lambda_2d is None else lambda_2d
        ldep = cfg.lambda_depth if lambda_depth is None else lambda_depth
        ids = np.asarray(corr.sample_ids, np.int64)
        t64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float64))  # noqa: E731
        p = t64(inp.model_points[ids])
        an = torch.from_numpy(np.ascontiguousarray(inp.model_anchors[ids], np.int64))
        aw = t64(inp.model_weights[ids])
        nodes = t64(inp.graph.nodes)
        return nnrt_terms(p, an, aw, nodes, t64(corr.target_uv), t64(corr.target_depth), t64(corr.weights), k,
                          l2d, ldep)
