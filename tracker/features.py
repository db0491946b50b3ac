"""Sparse keyframe features: anchored large-displacement matches for the classical tracker.

Projective ICP constrains a surface only along its normal, and the photometric term only within a pixel or
two of the right answer: a surface that slides along itself (a turning cylinder, an arm swinging along its
length) drifts tangentially and neither term pulls it back once the drift passes the photometric basin.
VolumeDeform (Innmann et al., ECCV 2016) adds sparse SIFT matches between the live colour image and
keyframes: each match ties a fixed canonical point to a live pixel, however far the estimate has drifted,
and errors do not accumulate because the keyframe's points are fixed.

Here the keyframe is the tracker's photometric keyframe (the canonical frame first). Its keypoints are
lifted once to canonical points (keyframe depth, then the inverse of the keyframe's motion). In every live
frame the live keypoints are matched to them by descriptor (Lowe's ratio test); matches far from where the
current estimate puts the canonical point (`gate_px`) or on invalid / edge depth are dropped, and each
remaining match becomes an NNRT 2D + depth correspondence (`tracker.energy.reprojection_term` /
`depth_term`), re-weighted by a Huber function of its reprojection error every Gauss-Newton iteration.
The canonical frame's points are exact; a later keyframe's are lifted through its *estimated* motion and
carry that estimate's error (1.4-3.3 px on the synthetic cylinder), which the matches then enforce: one
reason the option is off by default (see ClassicalTrackerConfig.features for the measured effect).

Detectors are OpenCV's SIFT (Lowe 2004) and ORB (Rublee et al. 2011).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion.camera import Intrinsics, project

DETECTORS = ("sift", "orb")


@dataclass(frozen=True)
class FeatureConfig:
    """Settings of the keyframe features.

    max_features: keypoints kept per image (strongest first);
    contrast_threshold: SIFT's contrast threshold (OpenCV's default 0.04 finds few keypoints on smooth
      textures at 320x240); ratio: Lowe's ratio test (best / second-best descriptor distance);
    gate_px: a match is dropped when the current estimate projects its canonical point further than this
      from the live keypoint (pixels): the drift it can correct, and the mismatches it lets through;
    depth_jump: keypoints whose depth differs from a 4-neighbour's by more than this are on a depth edge
      and dropped (metres); max_depth_change: matches whose live depth differs from the estimate's by more
      than this are dropped (metres);
    huber_px: Huber threshold of the per-iteration re-weighting (pixels of reprojection error).
    """

    max_features: int = 1000
    contrast_threshold: float = 0.02
    ratio: float = 0.8
    gate_px: float = 10.0
    depth_jump: float = 0.03
    max_depth_change: float = 0.1
    huber_px: float = 1.0


class FeatureDetector:
    """Keypoints and descriptors of grey images (the OpenCV detector is made once and reused)."""

    def __init__(self, detector: str = "sift", config: FeatureConfig = FeatureConfig()) -> None:
        """detector: "sift" or "orb" (ValueError for any other name)."""
        import cv2

        if detector not in DETECTORS:
            raise ValueError(f"unknown feature detector {detector!r} (choose from {', '.join(DETECTORS)})")
        self.detector = detector
        self.config = config
        if detector == "sift":
            self._det = cv2.SIFT_create(nfeatures=config.max_features, contrastThreshold=config.contrast_threshold)
            self._norm = cv2.NORM_L2
        else:
            self._det = cv2.ORB_create(nfeatures=config.max_features)
            self._norm = cv2.NORM_HAMMING
        self._matcher = cv2.BFMatcher(self._norm)
        self.pad = 16  # pixels around the mask's bounding box (the descriptor window reaches past the keypoint)

    def __call__(self, gray: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints of a grey uint8 image [H,W] (only where mask bool [H,W] is set, when given): (pixel
        positions float32 [F,2] (column, row), descriptors [F,D]: float32 for SIFT, uint8 for ORB)."""
        sift = self.detector == "sift"
        empty = np.zeros((0, 2), np.float32), np.zeros((0, 128 if sift else 32), np.float32 if sift else np.uint8)
        g = np.ascontiguousarray(gray, np.uint8)
        y0, x0 = 0, 0
        m = None
        if mask is not None:
            mask = np.asarray(mask, bool)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            if len(rows) == 0:
                return empty
            # detect in the mask's bounding box (padded by the descriptor's reach): the object is often small
            pad = self.pad
            y0, y1 = max(0, rows[0] - pad), min(g.shape[0], rows[-1] + 1 + pad)
            x0, x1 = max(0, cols[0] - pad), min(g.shape[1], cols[-1] + 1 + pad)
            g = np.ascontiguousarray(g[y0:y1, x0:x1])
            m = np.ascontiguousarray(mask[y0:y1, x0:x1], np.uint8) * 255
        kps, desc = self._det.detectAndCompute(g, m)
        if desc is None or len(kps) == 0:
            return empty
        return np.array([kp.pt for kp in kps], np.float32).reshape(-1, 2) + np.float32([x0, y0]), desc

    def match(self, key_desc: np.ndarray, live_desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices (key int [C], live int [C]) of descriptor matches that pass the ratio test."""
        if len(key_desc) < 2 or len(live_desc) < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pairs = self._matcher.knnMatch(live_desc, key_desc, k=2)
        ki, li = [], []
        for p in pairs:
            if len(p) == 2 and p[0].distance < self.config.ratio * p[1].distance:
                ki.append(p[0].trainIdx)
                li.append(p[0].queryIdx)
        return np.asarray(ki, np.int64), np.asarray(li, np.int64)


def depth_at(depth: np.ndarray, uv: np.ndarray, depth_jump: float) -> np.ndarray:
    """Depth float64 [F] (metres) at pixel positions uv float [F,2] (nearest pixel), 0 where it is invalid,
    outside the image or on a depth edge (a 4-neighbour more than depth_jump away or invalid)."""
    h, w = depth.shape
    u = np.round(np.asarray(uv)[:, 0]).astype(np.int64)
    v = np.round(np.asarray(uv)[:, 1]).astype(np.int64)
    ok = (u >= 1) & (u < w - 1) & (v >= 1) & (v < h - 1)
    out = np.zeros(len(u))
    if not ok.any():
        return out
    uo, vo = u[ok], v[ok]
    d = depth[vo, uo].astype(np.float64)
    nb = np.stack([depth[vo - 1, uo], depth[vo + 1, uo], depth[vo, uo - 1], depth[vo, uo + 1]], 1).astype(np.float64)
    good = (d > 0) & np.all(np.abs(nb - d[:, None]) < depth_jump, axis=1)
    out[np.flatnonzero(ok)[good]] = d[good]
    return out


@dataclass
class KeyFeatures:
    """A keyframe's features lifted to the canonical frame: points float64 [F,3] (metres), descriptors [F,D],
    and the keyframe's frame index."""

    points: np.ndarray
    descriptors: np.ndarray
    index: int


@dataclass
class FeatureMatches:
    """Matches of keyframe features to the live frame: rows int [C] of the keyframe's features, live pixels
    float64 [C,2], live depths float64 [C] (metres)."""

    rows: np.ndarray
    target_uv: np.ndarray
    target_depth: np.ndarray


def live_matches(key: KeyFeatures, detector: FeatureDetector, gray: np.ndarray, depth: np.ndarray,
                 mask: np.ndarray | None, predicted: np.ndarray, k: Intrinsics,
                 config: FeatureConfig) -> FeatureMatches:
    """Match the live image to the keyframe's features.

    gray uint8 [H,W] and depth float [H,W] (metres, 0 = invalid) of the live frame; mask bool [H,W] or None
    (keypoints only there and on valid depth); predicted float [F,3]: the keyframe's canonical points warped
    by the current motion estimate into the live camera (metres), for the gates. Returns the matches that
    pass the ratio test, land on valid non-edge depth and lie within config.gate_px and
    config.max_depth_change of the prediction.
    """
    valid = np.asarray(depth) > 0
    if mask is not None:
        valid &= np.asarray(mask, bool)
    luv, ldesc = detector(gray, valid)
    ki, li = detector.match(key.descriptors, ldesc)
    empty = FeatureMatches(np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0))
    if len(ki) == 0:
        return empty
    tuv = luv[li].astype(np.float64)
    tz = depth_at(np.asarray(depth), tuv, config.depth_jump)
    puv = project(predicted[ki], k)[0]
    with np.errstate(invalid="ignore"):
        ok = (tz > 0) & (np.linalg.norm(puv - tuv, axis=1) < config.gate_px)
        ok &= np.abs(predicted[ki, 2] - tz) < config.max_depth_change
    return FeatureMatches(ki[ok], tuv[ok], tz[ok])


def lift_to_canonical(x: np.ndarray, canonical: np.ndarray, warped: np.ndarray, anchors: np.ndarray,
                      weights: np.ndarray, rotations: np.ndarray,
                      max_distance: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Canonical positions of points seen in a keyframe, through the inverse of the keyframe's motion.

    x float [F,3]: points in the keyframe's camera (metres); canonical / warped float [M,3]: model samples in
    the canonical frame and warped by the keyframe's motion; anchors int [M,A] (-1 = none) / weights [M,A]:
    their skinning; rotations float [N,3,3]: the keyframe's node rotations. Each point is taken back at its
    nearest warped sample (within max_distance metres) with that sample's blended rotation, the warp's local
    inverse: p = s + R_s^-1 (x - W(s)). Returns (canonical points float64 [F',3], rows int [F'] of x kept).
    """
    from scipy.spatial import cKDTree

    x = np.asarray(x, np.float64)
    if len(x) == 0 or len(warped) == 0:
        return np.zeros((0, 3)), np.zeros(0, np.int64)
    d, j = cKDTree(np.asarray(warped, np.float64)).query(x, distance_upper_bound=max_distance)
    rows = np.flatnonzero(np.isfinite(d))
    j = j[rows]
    a = np.asarray(anchors)[j]
    w = np.asarray(weights, np.float64)[j] * (a >= 0)
    rb = np.einsum("ma,maij->mij", w, np.asarray(rotations, np.float64)[np.clip(a, 0, None)])
    ok = np.abs(np.linalg.det(rb)) > 1e-6
    rows, j, rb = rows[ok], j[ok], rb[ok]
    delta = x[rows] - np.asarray(warped, np.float64)[j]
    return np.asarray(canonical, np.float64)[j] + np.linalg.solve(rb, delta[..., None])[..., 0], rows


def huber_pixel_weights(predicted_uv: np.ndarray, target_uv: np.ndarray, delta: float) -> np.ndarray:
    """Huber IRLS weights float64 [C] in (0, 1] of reprojection errors |predicted - target| (pixels): they
    weight squared residuals (a residual is scaled by their square root)."""
    e = np.linalg.norm(np.asarray(predicted_uv, np.float64) - np.asarray(target_uv, np.float64), axis=1)
    e = np.where(np.isfinite(e), e, np.inf)
    return np.where(e <= delta, 1.0, delta / np.maximum(e, 1e-12))
