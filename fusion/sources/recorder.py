"""Writing RealSense `.db3` recordings: any frame sequence through `rs.software_device` + `rs.recorder`,
and live capture from a connected camera.

pyrealsense2 2.59's recorder writes only ROS2 `.db3` files. With compression on (the default) it stores
depth as 16-bit PNG ("compressedDepth") and color as PNG ("rgb8; png compressed bgr8"): both lossless, so
a recording plays back pixel-identical. Measured on 640x480 frames: a raw frame is 1.5 MB (0.6 MB depth +
0.9 MB color) uncompressed; compressed, a smooth synthetic frame takes ~60 KB and a textured one a few
hundred KB (see `RecordingInfo.bytes_per_frame`).

The recorder stamps every message with the wall-clock time at which it received it, and the RealSense
Viewer plays files by those stamps. `pace=True` (the default) therefore feeds frames at their own
timestamps, so the file plays at the right speed in the Viewer (writing takes as long as the sequence);
`pace=False` writes as fast as possible (our playback, which is non-real-time and uses the frames' own
timestamps, reads both identically).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fusion.atomic import atomic_path
from fusion.camera import Intrinsics
from fusion.errors import InputError
from fusion.frame import RGBDFrame
from fusion.sources.common import metres_to_raw


@dataclass(frozen=True)
class RecordingInfo:
    """What `write_recording` / `record_camera` wrote.

    path: the recording; frames: depth frames written; width/height: image size in pixels; fps: nominal
    rate; depth_units: metres per raw depth unit; streams: stream names; size_bytes: file size;
    duration_s: time between first and last frame; write_seconds: wall time spent writing.
    """

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    depth_units: float
    streams: tuple[str, ...]
    size_bytes: int
    duration_s: float
    write_seconds: float

    @property
    def bytes_per_frame(self) -> float:
        """Average file bytes per frame (all streams together)."""
        return self.size_bytes / max(self.frames, 1)

    def as_dict(self) -> dict:
        """Plain dict for reports."""
        return {
            "path": str(self.path), "frames": self.frames, "width": self.width, "height": self.height,
            "fps": self.fps, "depth_units": self.depth_units, "streams": list(self.streams),
            "size_bytes": self.size_bytes, "bytes_per_frame": self.bytes_per_frame,
            "duration_s": self.duration_s, "write_seconds": self.write_seconds,
        }


def _rs_intrinsics(k: Intrinsics):  # -> rs.intrinsics
    import pyrealsense2 as rs

    i = rs.intrinsics()
    i.width, i.height = int(k.width), int(k.height)
    i.fx, i.fy, i.ppx, i.ppy = float(k.fx), float(k.fy), float(k.cx), float(k.cy)
    i.model = rs.distortion.brown_conrady
    i.coeffs = [0.0] * 5
    return i


def _check_out_path(path: Path) -> None:
    if path.suffix.lower() != ".db3":
        raise InputError(
            f"{path}: recordings are written as RealSense .db3 files (pyrealsense2 2.59 writes no .bag); "
            "use a .db3 name"
        )


def write_recording(
    frames: Iterable[RGBDFrame],
    path: str | Path,
    fps: float = 30.0,
    depth_units: float = 0.001,
    *,
    color: bool = True,
    depth: bool = True,
    color_indices: Iterable[int] | None = None,
    pace: bool = True,
    compression: bool = True,
    device_name: str = "nrstudio software camera",
    serial: str = "nrstudio-0001",
    progress: Callable[[int], None] | None = None,
) -> RecordingInfo:
    """Write RGB-D frames to a RealSense `.db3` recording, atomically (temporary file, then rename).

    frames: RGBDFrames sharing one `Intrinsics` (depth aligned to color); depth float32 metres, stored as
    uint16 in `depth_units` metres (depths beyond 65535 units and NaN become 0 = invalid); color uint8 RGB.
    Both streams get the frames' intrinsics and an identity depth->color extrinsic, so playback needs no
    reprojection. Frame i gets frame number i and the sensor timestamp `frame.timestamp_s` (or i / fps
    when the timestamps do not increase).
    color / depth: write that stream (one may be left out, e.g. a depth-only recording).
    color_indices: write the color image only for these frame positions (a slower color stream, or
    color that starts late); None = every frame.
    pace: feed frames at their timestamps so the RealSense Viewer plays the file at the right speed.
    compression: lossless PNG compression of the images (the SDK's option; on by default).
    progress: called with the number of frames written so far.
    Raises InputError for an unusable path, ValueError for inconsistent frames or no stream, RuntimeError
    if the SDK recorder lost frames (the file is then not written).
    """
    import pyrealsense2 as rs

    from fusion.sources.recording import index_recording

    out = Path(path)
    _check_out_path(out)
    if not (color or depth):
        raise ValueError("write_recording needs at least one of color=True, depth=True")
    if not (depth_units > 0 and np.isfinite(depth_units)):
        raise ValueError(f"depth_units must be a positive number of metres, got {depth_units}")
    color_at = None if color_indices is None else {int(i) for i in color_indices}
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("write_recording got no frames") from None
    k = first.intrinsics
    w, h = int(k.width), int(k.height)
    t_start = time.perf_counter()
    n = 0
    ts_first = float(first.timestamp_s)
    last_ts = -np.inf

    with atomic_path(out) as tmp:
        tmp.unlink(missing_ok=True)  # the SDK creates the file itself
        dev = rs.software_device()
        dev.register_info(rs.camera_info.name, device_name)
        dev.register_info(rs.camera_info.serial_number, serial)
        dev.register_info(rs.camera_info.firmware_version, "0.0.0.0")
        sensors = []
        dprof = cprof = None
        if depth:
            ds = dev.add_sensor("Stereo Module")
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid = rs.stream.depth, 0, 0
            vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = w, h, int(round(fps)), 2, rs.format.z16
            vs.intrinsics = _rs_intrinsics(k)
            dprof = ds.add_video_stream(vs, True).as_video_stream_profile()
            ds.add_read_only_option(rs.option.depth_units, float(depth_units))
            sensors.append((ds, dprof))
        if color:
            cs = dev.add_sensor("RGB Camera")
            cv = rs.video_stream()
            cv.type, cv.index, cv.uid = rs.stream.color, 0, 1
            cv.width, cv.height, cv.fps, cv.bpp, cv.fmt = w, h, int(round(fps)), 3, rs.format.rgb8
            cv.intrinsics = _rs_intrinsics(k)
            cprof = cs.add_video_stream(cv, True).as_video_stream_profile()
            sensors.append((cs, cprof))
        if dprof is not None and cprof is not None:
            ext = rs.extrinsics()
            ext.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            ext.translation = [0.0, 0.0, 0.0]
            dprof.register_extrinsics_to(cprof, ext)
        rec = rs.recorder(str(tmp), dev, bool(compression))
        try:
            for s, p in sensors:
                s.open(p)
                s.start(lambda f: None)
            wall0 = time.perf_counter()
            frame = first
            while frame is not None:
                if frame.intrinsics != k:
                    raise ValueError(f"frame {n} has intrinsics {frame.intrinsics}, the first frame {k}")
                ts = float(frame.timestamp_s) - ts_first
                if not ts > last_ts:
                    ts = n / fps
                last_ts = ts
                if pace:
                    delay = wall0 + ts - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                if color and (color_at is None or n in color_at):
                    _inject(cs, cprof, np.ascontiguousarray(frame.color, dtype=np.uint8), 3, n, ts * 1000.0)
                if depth:
                    raw = metres_to_raw(frame.depth, depth_units)
                    _inject(ds, dprof, raw, 2, n, ts * 1000.0, depth_units)
                n += 1
                if progress is not None:
                    progress(n)
                frame = next(it, None)
        finally:
            for s, _ in sensors:
                try:
                    s.stop()
                    s.close()
                except RuntimeError:
                    pass
            rec.pause()
            del rec, sensors, dev
            gc.collect()  # the recorder closes the file when its last reference goes
        if depth:
            idx = index_recording(tmp)
            n_color = n if color_at is None else len([i for i in color_at if 0 <= i < n])
            if len(idx.depth) != n or (color and len(idx.color) != n_color):
                raise RuntimeError(
                    f"{out}: the SDK recorder stored {len(idx.depth)} depth / {len(idx.color)} color frames of {n}"
                )
        size = tmp.stat().st_size
    streams = tuple(s for s, on in (("depth", depth), ("color", color)) if on)
    return RecordingInfo(out, n, w, h, float(fps), float(depth_units), streams, size, max(last_ts, 0.0),
                         time.perf_counter() - t_start)


def _inject(sensor, profile, pixels: np.ndarray, bpp: int, number: int, ts_ms: float, units: float | None = None) -> None:
    import pyrealsense2 as rs

    f = rs.software_video_frame()
    f.pixels = pixels
    f.bpp = bpp
    f.stride = pixels.shape[1] * bpp
    f.timestamp = ts_ms
    f.domain = rs.timestamp_domain.hardware_clock
    f.frame_number = number
    f.profile = profile
    if units is not None:
        f.depth_units = float(units)
    sensor.on_video_frame(f)


def record_camera(
    path: str | Path,
    duration_s: float,
    config: "LiveConfig | None" = None,  # noqa: F821  (fusion.sources.live.LiveConfig)
    progress: Callable[[int, float], None] | None = None,
) -> RecordingInfo:
    """Record depth + color from a connected RealSense camera to a `.db3` file for `duration_s` seconds.

    config: resolution, fps, serial and visual preset (filters do not apply: the raw streams are recorded).
    progress: called with (frames so far, seconds so far). Raises DeviceError when no camera is connected.
    Written atomically: the file appears only when the recording is complete.
    """
    import pyrealsense2 as rs

    from fusion.sources.live import LiveConfig, apply_visual_preset, select_device
    from fusion.sources.recording import index_recording

    cfg = config or LiveConfig()
    out = Path(path)
    _check_out_path(out)
    if not duration_s > 0:
        raise InputError(f"--duration must be positive, got {duration_s}")
    dev = select_device(cfg.serial)
    serial = dev.get_info(rs.camera_info.serial_number)
    t0 = time.perf_counter()
    n = 0
    units = 0.001
    with atomic_path(out) as tmp:
        tmp.unlink(missing_ok=True)
        rc = rs.config()
        rc.enable_device(serial)
        rc.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        rc.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
        rc.enable_record_to_file(str(tmp))
        pipe = rs.pipeline()
        try:
            profile = pipe.start(rc)
        except RuntimeError as e:
            from fusion.errors import DeviceError

            raise DeviceError(f"camera {serial}: cannot stream {cfg.width}x{cfg.height} @ {cfg.fps} fps ({e})") from None
        try:
            units = float(profile.get_device().first_depth_sensor().get_depth_scale())
            if cfg.visual_preset:
                apply_visual_preset(profile.get_device().first_depth_sensor(), cfg.visual_preset)
            while time.perf_counter() - t0 < duration_s:
                ok, _ = pipe.try_wait_for_frames(int(cfg.timeout_s * 1000))
                if not ok:
                    from fusion.errors import StallError

                    raise StallError(f"camera {serial}: no frames for {cfg.timeout_s:g} s")
                n += 1
                if progress is not None:
                    progress(n, time.perf_counter() - t0)
        finally:
            pipe.stop()
            del pipe, profile
            gc.collect()
        idx = index_recording(tmp)
        size = tmp.stat().st_size
    return RecordingInfo(out, len(idx.depth), cfg.width, cfg.height, float(cfg.fps), units, ("depth", "color"),
                         size, idx.duration_s, time.perf_counter() - t0)
