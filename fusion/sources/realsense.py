"""RealSense frame handling shared by recordings and the live camera: frameset -> filters -> align -> RGBDFrame.

`FrameProcessor` is deliberately independent of where framesets come from (a camera pipeline, a
playback device, or frames re-composed by `FramesetComposer`), so the live code path is tested with a
recording standing in for the camera.

Post-processing filters run in RealSense's recommended order (librealsense doc "post-processing
filters"): decimation -> depth-to-disparity -> spatial -> temporal -> disparity-to-depth -> hole filling.
Alignment follows them: `align="color"` reprojects depth into the color camera (rs.align(color), the
frames then share the color intrinsics); `align="depth"` keeps the depth camera and resolution and
samples the color image at each depth pixel (rs.align(depth)). When depth and color already share
identical intrinsics and an identity extrinsic (recordings written by `fusion.sources.recorder`), the
images are aligned by construction and rs.align is skipped, which keeps them bit-exact.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.camera import Intrinsics
from fusion.errors import InputError
from fusion.frame import RGBDFrame
from fusion.sources.common import depth_to_metres, gray_from_depth

ALIGN_MODES = ("color", "depth")


@dataclass(frozen=True)
class FilterConfig:
    """RealSense depth post-processing filters (all off by default), applied in the recommended order."""

    #: decimation magnitude (1 = off, 2..8 divides the depth resolution)
    decimation: int = 1
    #: edge-preserving spatial filter (in disparity domain)
    spatial: bool = False
    #: spatial filter smoothing: alpha in [0.25, 1], delta in [1, 50] (depth units), iterations 1..5
    spatial_alpha: float = 0.5
    spatial_delta: float = 20.0
    spatial_magnitude: int = 2
    #: temporal filter (in disparity domain): smoothing alpha in [0, 1], delta, persistence mode 0..8
    temporal: bool = False
    temporal_alpha: float = 0.4
    temporal_delta: float = 20.0
    temporal_persistence: int = 3
    #: hole filling mode: None = off, 0 fill from left, 1 farthest from around, 2 nearest from around
    hole_filling: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= int(self.decimation) <= 8:
            raise ValueError(f"decimation must be in 1..8, got {self.decimation}")
        if self.hole_filling is not None and self.hole_filling not in (0, 1, 2):
            raise ValueError(f"hole_filling must be None, 0, 1 or 2, got {self.hole_filling}")

    @property
    def any(self) -> bool:
        """True when at least one filter is enabled."""
        return self.decimation > 1 or self.spatial or self.temporal or self.hole_filling is not None


def make_filters(cfg: FilterConfig) -> list[tuple[str, Any]]:
    """The enabled rs filters as (name, filter) in RealSense's recommended order."""
    import pyrealsense2 as rs

    chain: list[tuple[str, Any]] = []
    if cfg.decimation > 1:
        f = rs.decimation_filter()
        f.set_option(rs.option.filter_magnitude, float(cfg.decimation))
        chain.append(("decimation", f))
    if cfg.spatial or cfg.temporal:
        chain.append(("depth_to_disparity", rs.disparity_transform(True)))
        if cfg.spatial:
            f = rs.spatial_filter()
            f.set_option(rs.option.filter_smooth_alpha, float(cfg.spatial_alpha))
            f.set_option(rs.option.filter_smooth_delta, float(cfg.spatial_delta))
            f.set_option(rs.option.filter_magnitude, float(cfg.spatial_magnitude))
            chain.append(("spatial", f))
        if cfg.temporal:
            f = rs.temporal_filter()
            f.set_option(rs.option.filter_smooth_alpha, float(cfg.temporal_alpha))
            f.set_option(rs.option.filter_smooth_delta, float(cfg.temporal_delta))
            f.set_option(rs.option.holes_fill, float(cfg.temporal_persistence))
            chain.append(("temporal", f))
        chain.append(("disparity_to_depth", rs.disparity_transform(False)))
    if cfg.hole_filling is not None:
        chain.append(("hole_filling", rs.hole_filling_filter(int(cfg.hole_filling))))
    return chain


def intrinsics_from_profile(profile: Any) -> Intrinsics:
    """Our `Intrinsics` from an rs video stream profile (distortion is not modelled; D400 streams have none
    or an inverse Brown-Conrady model with zero coefficients)."""
    k = profile.as_video_stream_profile().get_intrinsics()
    return Intrinsics(float(k.fx), float(k.fy), float(k.ppx), float(k.ppy), int(k.width), int(k.height))


def intrinsics_dict(profile: Any) -> dict:
    """Intrinsics of an rs video profile as a plain dict (with distortion model and coefficients)."""
    k = profile.as_video_stream_profile().get_intrinsics()
    return {
        "fx": float(k.fx), "fy": float(k.fy), "cx": float(k.ppx), "cy": float(k.ppy),
        "width": int(k.width), "height": int(k.height),
        "model": str(k.model).split(".")[-1], "coeffs": [float(c) for c in k.coeffs],
    }


def extrinsics_of(src_profile: Any, dst_profile: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(R [3,3], t [3] metres) mapping points of `src_profile`'s camera to `dst_profile`'s, or None."""
    try:
        e = src_profile.get_extrinsics_to(dst_profile)
    except RuntimeError:
        return None
    # librealsense stores the rotation column-major
    r = np.asarray(e.rotation, dtype=np.float64).reshape(3, 3).T
    return r, np.asarray(e.translation, dtype=np.float64)


def aligned_by_construction(depth_profile: Any, color_profile: Any) -> bool:
    """True when depth and color have identical intrinsics and an identity extrinsic (pixels correspond)."""
    kd = depth_profile.as_video_stream_profile().get_intrinsics()
    kc = color_profile.as_video_stream_profile().get_intrinsics()
    same = (
        kd.width == kc.width and kd.height == kc.height
        and all(abs(a - b) <= 1e-6 for a, b in ((kd.fx, kc.fx), (kd.fy, kc.fy), (kd.ppx, kc.ppx), (kd.ppy, kc.ppy)))
    )
    if not same:
        return False
    ext = extrinsics_of(depth_profile, color_profile)
    if ext is None:
        return False
    r, t = ext
    return bool(np.allclose(r, np.eye(3), atol=1e-9) and np.allclose(t, 0.0, atol=1e-9))


def color_to_rgb(frame: Any) -> np.ndarray:
    """A copy of an rs color frame as RGB uint8 [H, W, 3]."""
    import pyrealsense2 as rs

    fmt = frame.get_profile().format()
    a = np.asanyarray(frame.get_data())
    if fmt == rs.format.rgb8:
        return np.array(a, dtype=np.uint8, copy=True)
    if fmt == rs.format.bgr8:
        return np.ascontiguousarray(a[:, :, ::-1])
    if fmt == rs.format.rgba8:
        return np.ascontiguousarray(a[:, :, :3])
    if fmt == rs.format.bgra8:
        return np.ascontiguousarray(a[:, :, 2::-1])
    if fmt in (rs.format.y8,):
        return np.repeat(np.asarray(a, dtype=np.uint8)[:, :, None], 3, axis=2)
    raise InputError(f"color format {fmt} is not supported (use rgb8, bgr8, rgba8, bgra8 or y8)")


class FramesetComposer:
    """Builds an rs frameset from separate depth and color frames (for rs filters and rs.align).

    Uses an rs.processing_block whose frame source allocates the composite frame. Not thread-safe: use one
    composer per thread.
    """

    def __init__(self) -> None:
        import pyrealsense2 as rs

        self._rs = rs
        self._others: list[Any] = []
        self._lock = threading.Lock()

        def _compose(frame: Any, source: Any) -> None:
            source.frame_ready(source.allocate_composite_frame([frame, *self._others]))

        self._block = rs.processing_block(_compose)
        self._queue = rs.frame_queue(2)
        self._block.start(self._queue)

    def compose(self, depth: Any, color: Any | None) -> Any:
        """A frameset holding `depth` and (when given) `color`."""
        with self._lock:
            self._others = [color] if color is not None else []
            try:
                self._block.invoke(depth)
                out = self._queue.wait_for_frame(2000)
            finally:
                self._others = []
        return out.as_frameset()


class FrameProcessor:
    """frameset -> post-processing filters -> alignment -> `RGBDFrame` (numpy copies, metres).

    align: "color" (depth reprojected into the color camera) or "depth" (color sampled at depth pixels).
    filters: the depth post-processing filters (stateful: the temporal filter remembers past frames, so
    use one processor per stream and call `reset()` after a seek).
    A frameset without a color frame gives a gray color image derived from depth (meta "color_source").
    """

    def __init__(self, align: str = "color", filters: FilterConfig | None = None) -> None:
        import pyrealsense2 as rs

        if align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
        self._rs = rs
        self.align = align
        self.filters = filters or FilterConfig()
        self._chain = make_filters(self.filters)
        self._aligner = rs.align(rs.stream.color if align == "color" else rs.stream.depth)
        self._identity_cache: dict[tuple[int, int], bool] = {}

    def reset(self) -> None:
        """Forget filter history (temporal filter); call after a seek."""
        self._chain = make_filters(self.filters)

    def _identity(self, depth: Any, color: Any) -> bool:
        dp, cp = depth.get_profile(), color.get_profile()
        key = (dp.unique_id(), cp.unique_id())
        if key not in self._identity_cache:
            self._identity_cache[key] = aligned_by_construction(dp, cp)
        return self._identity_cache[key]

    def process(self, frames: Any, index: int, timestamp_s: float, meta: dict | None = None) -> RGBDFrame:
        """Turn an rs frameset (or a lone depth frame) into an RGBDFrame.

        index / timestamp_s: the frame's position in its source and seconds since the source's first frame.
        Returns depth float32 [H, W] metres (the recording's own depth units), color uint8 [H, W, 3] RGB.
        """
        meta = dict(meta or {})
        x = frames
        for _, f in self._chain:
            x = f.process(x)
        if x.is_frameset():
            fs = x.as_frameset()
            depth = fs.get_depth_frame()
            color = fs.get_color_frame()
        else:
            fs, depth, color = None, x.as_depth_frame(), None
        if not depth:
            raise InputError("frameset holds no depth frame")
        color = color if color else None
        if color is not None and fs is not None and not self._identity(depth, color):
            al = self._aligner.process(fs)
            depth, color = al.get_depth_frame(), al.get_color_frame()
            meta["aligned_to"] = self.align
        elif color is not None:
            meta["aligned_to"] = "identical cameras (no reprojection needed)"
        depth = depth.as_depth_frame()
        units = float(depth.get_units())
        raw = np.asanyarray(depth.get_data())
        d = depth_to_metres(raw, units)
        prof = (color if (color is not None and self.align == "color") else depth).get_profile()
        k = intrinsics_from_profile(prof)
        if color is not None:
            rgb = color_to_rgb(color)
            meta["color_source"] = "sensor"
        else:
            rgb = gray_from_depth(d)
            meta["color_source"] = "gray-from-depth (no color frame)"
            k = intrinsics_from_profile(depth.get_profile())
        if rgb.shape[:2] != d.shape or (k.height, k.width) != d.shape:
            raise InputError(
                f"color {rgb.shape[1]}x{rgb.shape[0]} and depth {d.shape[1]}x{d.shape[0]} differ after alignment"
            )
        meta["depth_units"] = units
        if self._chain:
            meta["filters"] = [name for name, _ in self._chain]
        return RGBDFrame(index=index, timestamp_s=float(timestamp_s), color=rgb, depth=d, intrinsics=k, meta=meta)
