"""Classical dense optical flow as a correspondence source for the non-rigid tracker.

Projective ICP only sees motion along the line of sight of each pixel: a limb that moves a few centimetres
sideways between frames associates to the wrong surface and the tracker loses it (the failure NNRT's learned
correspondences address). Dense optical flow between the previous tracked frame and the live frame gives
large-displacement matches from texture: every model sample visible in the previous frame (its position
there is known, the previous motion) is carried by the flow into the live image, and becomes an NNRT 2D +
depth correspondence (`tracker.energy.reprojection_term` / `depth_term`) with a weight from the
forward-backward consistency of the flow (the classical stand-in for NNRT's learned weights Psi).

The flow itself is OpenCV's DIS optical flow (Kroeger et al., "Fast Optical Flow using Dense Inverse
Search", ECCV 2016), measured here on the bundled recording at 320x240: "medium" 0.34 px mean end-point
error in ~23 ms, "ultrafast" 0.64 px in ~0.6 ms, against 1.86 px for zero flow (`/tmp`-free check:
tests/tracker/test_flow.py asserts the accuracy on a synthetic pair with known flow).
"""
from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fusion.camera import Intrinsics
from tracker.features import depth_at

PRESETS = ("ultrafast", "fast", "medium")


@contextmanager
def cv2_threads(n: int) -> Iterator[None]:
    """Run the body with n OpenCV threads (n <= 0: leave them), then restore the previous count."""
    import cv2

    if n <= 0:
        yield
        return
    old = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(old)


def gray_u8(color: np.ndarray) -> np.ndarray:
    """Grey image uint8 [H,W] of an RGB image uint8 [H,W,3] (Rec. 601 weights, as OpenCV)."""
    import cv2

    c = np.ascontiguousarray(color)
    if c.ndim == 2:
        return c.astype(np.uint8)
    if c.dtype != np.uint8:
        c = np.clip(c, 0, 255).astype(np.uint8)
    return cv2.cvtColor(c, cv2.COLOR_RGB2GRAY)


class DenseFlow:
    """DIS optical flow with a fixed preset (the OpenCV object is reused across frames)."""

    def __init__(self, preset: str = "medium") -> None:
        """preset: "ultrafast" | "fast" | "medium" (OpenCV's DIS presets: speed against accuracy)."""
        import cv2

        if preset not in PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r} (choose from {', '.join(PRESETS)})")
        code = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset]
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(code)

    def __call__(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """Flow float32 [H,W,2] (pixels, (du, dv)) from grey uint8 src [H,W] to dst [H,W]: src pixel (u, v)
        moves to (u + du, v + dv)."""
        if src.shape != dst.shape:
            raise ValueError(f"flow between images of different sizes {src.shape} and {dst.shape}")
        return self._dis.calc(np.ascontiguousarray(src), np.ascontiguousarray(dst), None)


def sample_flow(flow: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of flow [H,W,2] at pixel positions uv float [M,2] (column, row), clamped to the image;
    float32 [M,2]."""
    h, w = flow.shape[:2]
    u = np.clip(uv[:, 0], 0, w - 1.001)
    v = np.clip(uv[:, 1], 0, h - 1.001)
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    fu = (u - u0)[:, None]
    fv = (v - v0)[:, None]
    f00, f01 = flow[v0, u0], flow[v0, u0 + 1]
    f10, f11 = flow[v0 + 1, u0], flow[v0 + 1, u0 + 1]
    return ((1 - fv) * ((1 - fu) * f00 + fu * f01) + fv * ((1 - fu) * f10 + fu * f11)).astype(np.float32)


@dataclass(frozen=True)
class FlowMatchConfig:
    """How flow becomes correspondences.

    visible_tolerance: a sample counts as visible in the previous frame when its warped depth is within this
      of the previous depth at its pixel (metres).
    fb_sigma: forward-backward inconsistency (pixels) at which the weight falls to exp(-1/2); fb_max: matches
      with more inconsistency are dropped.
    depth_jump: a target whose live depth differs from the neighbouring pixels' by more than this (metres)
      is on a depth edge and dropped; max_depth_change: targets whose depth changed by more than this from the
      sample's previous depth are dropped (metres).
    """

    visible_tolerance: float = 0.02
    fb_sigma: float = 1.0
    fb_max: float = 3.0
    depth_jump: float = 0.03
    max_depth_change: float = 0.15


@dataclass
class FlowMatches:
    """Flow correspondences: rows of the sample subset (int [C]), live target pixels float [C,2], target
    depths float [C] (metres), weights float [C] in (0, 1]."""

    rows: np.ndarray
    target_uv: np.ndarray
    target_depth: np.ndarray
    weights: np.ndarray


def flow_matches(prev_points: np.ndarray, prev_depth: np.ndarray, prev_k: Intrinsics, live_depth: np.ndarray,
                 live_k: Intrinsics, forward: np.ndarray, backward: np.ndarray | None,
                 config: FlowMatchConfig = FlowMatchConfig()) -> FlowMatches:
    """Carry samples from the previous frame into the live frame along the flow.

    prev_points float [M,3]: the samples in the previous frame's camera (metres; warped by its motion);
    prev_depth / live_depth float [H,W] metres (0 = invalid); forward float [H,W,2] flow previous -> live,
    backward float [H,W,2] live -> previous or None (then every weight is 1). Both frames must share the image
    size. Samples not visible in the previous frame, leaving the image, landing on invalid or edge depth, or
    failing the consistency check are dropped.
    """
    h, w = prev_depth.shape
    if live_depth.shape != (h, w) or forward.shape[:2] != (h, w):
        return FlowMatches(np.zeros(0, np.int64), np.zeros((0, 2), np.float32), np.zeros(0, np.float32),
                           np.zeros(0, np.float32))
    p = np.asarray(prev_points, np.float64)
    z = p[:, 2]
    front = z > 1e-3
    zs = np.where(front, z, 1.0)
    uv = np.stack([prev_k.fx * p[:, 0] / zs + prev_k.cx, prev_k.fy * p[:, 1] / zs + prev_k.cy], -1)
    ui = np.round(uv[:, 0]).astype(np.int64)
    vi = np.round(uv[:, 1]).astype(np.int64)
    ok = front & (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    dz = np.zeros(len(p))
    dz[ok] = prev_depth[vi[ok], ui[ok]]
    ok &= (dz > 0) & (np.abs(dz - z) < config.visible_tolerance)
    rows = np.flatnonzero(ok)
    src = uv[rows]
    tgt = src + sample_flow(forward, src)
    tu = np.round(tgt[:, 0]).astype(np.int64)
    tv = np.round(tgt[:, 1]).astype(np.int64)
    ins = (tu >= 1) & (tu < w - 1) & (tv >= 1) & (tv < h - 1)
    rows, src, tgt = rows[ins], src[ins], tgt[ins]
    td = depth_at(live_depth, tgt, config.depth_jump)
    good = (td > 0) & (np.abs(td - z[rows]) < config.max_depth_change)
    wgt = np.ones(len(rows))
    if backward is not None:
        back = tgt + sample_flow(backward, tgt)
        fb = np.linalg.norm(back - src, axis=1)
        good &= fb < config.fb_max
        wgt = np.exp(-0.5 * (fb / max(config.fb_sigma, 1e-6)) ** 2)
    return FlowMatches(rows[good], tgt[good].astype(np.float32), td[good].astype(np.float32),
                       wgt[good].astype(np.float32))


def splat(points: np.ndarray, values: np.ndarray, k: Intrinsics, footprint: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffered point splatting: each camera-frame point [M,3] (metres) covers a footprint x footprint
    pixel square at its projection; the nearest point wins a pixel. Returns (image float32 [H,W] of the
    winners' values [M] (NaN where nothing landed), depth float32 [H,W] (0 where nothing landed))."""
    h, w = k.height, k.width
    p = np.asarray(points, np.float64)
    z = p[:, 2]
    front = z > 1e-3
    zs = np.where(front, z, 1.0)
    u0 = np.floor(k.fx * p[:, 0] / zs + k.cx + 0.5 - 0.5 * (footprint - 1)).astype(np.int64)
    v0 = np.floor(k.fy * p[:, 1] / zs + k.cy + 0.5 - 0.5 * (footprint - 1)).astype(np.int64)
    img = np.full(h * w, np.nan, np.float32)
    dep = np.zeros(h * w, np.float32)
    idx = np.flatnonzero(front)
    order = idx[np.argsort(-z[idx], kind="stable")]  # far first: nearer points overwrite
    for dy in range(footprint):
        for dx in range(footprint):
            u = u0[order] + dx
            v = v0[order] + dy
            ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
            lin = v[ok] * w + u[ok]
            o = order[ok]
            # among writes to the same pixel in this pass the last (nearest) wins; across passes keep nearer
            cur = dep[lin]
            better = (cur == 0) | (z[o] < cur)
            img[lin[better]] = values[o[better]]
            dep[lin[better]] = z[o[better]]
    return img.reshape(h, w), dep.reshape(h, w)


def model_flow_matches(points: np.ndarray, gray_values: np.ndarray, rows: np.ndarray, k: Intrinsics,
                       live_gray: np.ndarray, live_depth: np.ndarray, flow: "DenseFlow", backward: bool = True,
                       config: FlowMatchConfig = FlowMatchConfig(), footprint: int = 2) -> FlowMatches:
    """Model-to-frame flow correspondences (anchored to the model: errors do not accumulate over frames).

    The model, warped by the current motion estimate (points float [M,3] in the live camera frame, grey
    values uint8/float [M] from the fused model colours), is splatted into an image of the live camera; the
    holes are filled with the live image (zero flow there); the flow from that rendering to the live grey
    image [H,W] uint8 carries each sample in `rows` (indices into points) that wins its pixel into the live
    frame. Returned rows index `rows`' positions (0..len(rows)-1), as `flow_matches`.
    """
    import cv2

    img, dep = splat(points, np.asarray(gray_values, np.float32), k, footprint)
    hit = ~np.isnan(img)
    # fill the gaps between splats by normalised convolution; what stays empty (outside the model) takes the
    # live image, i.e. zero flow there
    num = cv2.blur(np.where(hit, img, 0.0).astype(np.float32), (5, 5))
    den = cv2.blur(hit.astype(np.float32), (5, 5))
    inside = den > 0.2
    render = np.where(hit, img, np.where(inside, num / np.maximum(den, 1e-6), live_gray.astype(np.float32)))
    render_u8 = np.clip(np.round(render), 0, 255).astype(np.uint8)
    fwd = flow(render_u8, live_gray)
    bwd = flow(live_gray, render_u8) if backward else None
    return flow_matches(np.asarray(points)[rows], dep, k, live_depth, k, fwd, bwd, config)
