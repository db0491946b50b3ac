"""Live RealSense camera: configuration, device listing, and a FrameSource over rs.pipeline.

The frame handling (frameset -> post-processing filters -> alignment -> RGBDFrame) is
`fusion.sources.realsense.FrameProcessor`, shared with recording playback. `LiveSource` only owns the
pipeline. Because pyrealsense2 2.59 cannot make a software device visible to rs.pipeline, the same
pipeline code can be driven from a recording standing in for the camera (`playback_file=`), which is how
the live path is tested without a camera.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion.camera import Intrinsics
from fusion.errors import DeviceError, InputError, StallError
from fusion.frame import RGBDFrame
from fusion.sources.base import FrameSource
from fusion.sources.common import check_empty_policy, depth_is_empty
from fusion.sources.realsense import ALIGN_MODES, FilterConfig, FrameProcessor, intrinsics_from_profile

#: D400 visual presets by name (rs.rs400_visual_preset)
VISUAL_PRESETS = ("custom", "default", "hand", "high_accuracy", "high_density", "medium_density")

NO_CAMERA = (
    "no RealSense camera connected (the RealSense SDK finds no device; check the USB 3 cable, or replay a "
    "recording instead)"
)


@dataclass(frozen=True)
class LiveConfig:
    """How to stream from a live RealSense camera."""

    #: serial number of the camera to use (None: the first one found)
    serial: str | None = None
    #: resolution and frame rate requested for both depth and color streams
    width: int = 640
    height: int = 480
    fps: int = 30
    #: "color": depth reprojected into the color camera; "depth": color sampled at depth pixels
    align: str = "color"
    #: D400 visual preset name (see VISUAL_PRESETS), None to leave the camera's setting
    visual_preset: str | None = None
    #: depth post-processing filters (RealSense's recommended order)
    filters: FilterConfig = field(default_factory=FilterConfig)
    #: longest wait for a frameset before StallError, seconds
    timeout_s: float = 5.0
    #: framesets dropped after start while auto-exposure settles
    warmup_frames: int = 0
    #: what to do with a depth frame without valid pixels: "skip" (default live), "keep", "error"
    empty_depth: str = "skip"

    def __post_init__(self) -> None:
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {self.align!r}")
        if self.visual_preset is not None and self.visual_preset not in VISUAL_PRESETS:
            raise ValueError(f"visual_preset must be one of {VISUAL_PRESETS}, got {self.visual_preset!r}")
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ValueError("width, height and fps must be positive")
        check_empty_policy(self.empty_depth)


def _info(dev: Any, key: str) -> str | None:
    import pyrealsense2 as rs

    ci = getattr(rs.camera_info, key)
    return dev.get_info(ci) if dev.supports(ci) else None


def list_devices(context: Any | None = None) -> list[dict]:
    """Connected RealSense devices: [{name, serial, firmware, usb_type, product_line}, ...] (may be empty)."""
    import pyrealsense2 as rs

    ctx = context or rs.context()
    out = []
    for dev in ctx.query_devices():
        out.append({
            "name": _info(dev, "name"),
            "serial": _info(dev, "serial_number"),
            "firmware": _info(dev, "firmware_version"),
            "usb_type": _info(dev, "usb_type_descriptor"),
            "product_line": _info(dev, "product_line"),
        })
    return out


def select_device(serial: str | None, context: Any | None = None) -> Any:
    """The connected rs.device with `serial` (or the first one); DeviceError when there is none."""
    import pyrealsense2 as rs

    ctx = context or rs.context()
    devs = list(ctx.query_devices())
    if not devs:
        raise DeviceError(NO_CAMERA)
    if serial is None:
        return devs[0]
    for d in devs:
        if _info(d, "serial_number") == serial:
            return d
    have = ", ".join(str(_info(d, "serial_number")) for d in devs)
    raise DeviceError(f"no RealSense camera with serial {serial} (connected: {have})")


def apply_visual_preset(depth_sensor: Any, name: str) -> None:
    """Set a D400 visual preset ("high_accuracy", "hand" ...) on a depth sensor (DeviceError if unsupported)."""
    import pyrealsense2 as rs

    if not depth_sensor.supports(rs.option.visual_preset):
        raise DeviceError(f"the camera's depth sensor has no visual presets (asked for {name!r})")
    depth_sensor.set_option(rs.option.visual_preset, float(int(getattr(rs.rs400_visual_preset, name))))


class LiveSource(FrameSource):
    """Frames from a live RealSense camera (or, for tests, a recording played through the same pipeline).

    config: resolution, fps, alignment, filters, visual preset. playback_file: a `.bag`/`.db3` recording
    that stands in for the camera (non-real-time; the recording's own streams are used).
    The pipeline starts on construction; DeviceError when no camera is connected.
    Timestamps are seconds since the first delivered frame (sensor clock).
    """

    def __init__(self, config: LiveConfig | None = None, playback_file: str | Path | None = None) -> None:
        self.config = config or LiveConfig()
        self.playback_file = Path(playback_file) if playback_file is not None else None
        self.processor = FrameProcessor(self.config.align, self.config.filters)
        self._pipe: Any = None
        self._playback: Any = None
        self._count = 0
        self._t0_ms: float | None = None
        self._last_number: int | None = None
        self._peeked: RGBDFrame | None = None
        self._closed = False
        self.device_info: dict = {}
        self._start()
        self.name = f"RealSense {self.device_info.get('name') or 'camera'} {self.device_info.get('serial') or ''}".strip()

    def _start(self) -> None:
        import pyrealsense2 as rs

        cfg = self.config
        rc = rs.config()
        if self.playback_file is not None:
            from fusion.sources.common import require_file

            require_file(self.playback_file, "recording")
            rc.enable_device_from_file(str(self.playback_file), repeat_playback=False)
        else:
            dev = select_device(cfg.serial)
            rc.enable_device(_info(dev, "serial_number"))
            rc.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
            rc.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
        pipe = rs.pipeline()
        try:
            profile = pipe.start(rc)
        except RuntimeError as e:
            what = self.playback_file or f"camera {cfg.serial or ''}".strip()
            raise DeviceError(f"{what}: cannot start streaming {cfg.width}x{cfg.height} @ {cfg.fps} fps ({e})") from None
        self._pipe = pipe
        dev = profile.get_device()
        if self.playback_file is not None:
            self._playback = dev.as_playback()
            self._playback.set_real_time(False)
        self.device_info = {"name": _info(dev, "name"), "serial": _info(dev, "serial_number"),
                            "firmware": _info(dev, "firmware_version")}
        if cfg.visual_preset and self.playback_file is None:
            apply_visual_preset(dev.first_depth_sensor(), cfg.visual_preset)
        self._profiles = {p.stream_type(): p for p in profile.get_streams()}
        for _ in range(cfg.warmup_frames):
            self._pipe.try_wait_for_frames(int(cfg.timeout_s * 1000))

    @property
    def is_live(self) -> bool:
        """True: no seeking, no length."""
        return True

    @property
    def fps(self) -> float | None:
        """The depth stream's frame rate."""
        import pyrealsense2 as rs

        p = self._profiles.get(rs.stream.depth)
        return float(p.fps()) if p is not None else None

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the delivered frames: the color camera for align="color"; for align="depth" the
        depth camera, and with decimation the decimated one (read from the first frame, which is kept for
        `next_frame`)."""
        import pyrealsense2 as rs

        if self.config.align == "color" and rs.stream.color in self._profiles:
            return intrinsics_from_profile(self._profiles[rs.stream.color])
        if self.config.filters.decimation > 1:
            if self._peeked is None:
                self._peeked = self._read()
            if self._peeked is not None:
                return self._peeked.intrinsics
        return intrinsics_from_profile(self._profiles[rs.stream.depth])

    def next_frame(self) -> RGBDFrame | None:
        """The next frameset processed into an RGBDFrame; StallError after `timeout_s` without frames
        (a playback stand-in returns None at its end)."""
        if self._closed:
            raise RuntimeError("the source is closed")
        if self._peeked is not None:
            f, self._peeked = self._peeked, None
            return f
        return self._read()

    def _read(self) -> RGBDFrame | None:
        import pyrealsense2 as rs

        waited = 0.0
        while True:
            # wait in short slices so that the end of a playback stand-in is noticed at once
            slice_s = 0.1 if self._playback is not None else self.config.timeout_s
            ok, fs = self._pipe.try_wait_for_frames(int(slice_s * 1000))
            if not ok:
                if self._playback is not None and self._playback.current_status() == rs.playback_status.stopped:
                    return None
                waited += slice_s
                if waited >= self.config.timeout_s:
                    raise StallError(f"{self.name}: no frames for {self.config.timeout_s:g} s")
                continue
            waited = 0.0
            depth = fs.get_depth_frame()
            if not depth:
                continue
            num = depth.get_frame_number()
            if num == self._last_number:  # the pipeline repeats a depth frame when only color is new
                continue
            self._last_number = num
            ts = depth.get_timestamp()
            if self._t0_ms is None:
                self._t0_ms = ts
            meta = {"frame_number": int(num), "sensor_timestamp_ms": float(ts), "source": self.name}
            color = fs.get_color_frame()
            if color:
                meta["color_frame_number"] = int(color.get_frame_number())
            frame = self.processor.process(fs, index=self._count, timestamp_s=(ts - self._t0_ms) / 1000.0, meta=meta)
            if depth_is_empty(frame.depth):
                if self.config.empty_depth == "skip":
                    continue
                if self.config.empty_depth == "error":
                    raise InputError(f"{self.name}: depth frame {num} is all zero (no valid depth)")
            self._count += 1
            return frame

    def close(self) -> None:
        """Stop the pipeline (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError:
                pass
            self._pipe = None
        self._playback = None
