"""Bench section "playback": frames/s of playing the bundled recording through our RecordingSource (with
depth aligned to color) against a reference loop over the raw SDK in the same process.

The reference is the loop a pyrealsense2 user writes: rs.pipeline on the file, non-real-time,
rs.align(color), numpy copies of depth and color. It is not held to our guarantees (it may skip frames;
its frame count is reported). Our source skips rs.align when depth and color share one camera (as in
recordings written by our recorder, like the bundled sample); `ours_alignment` says which case ran. Both are timed end to end (open, every frame, close) after one warm-up
pass; the best of `repeats` passes counts.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from fusion.camera import Intrinsics
from fusion.frame import RGBDFrame
from fusion.paths import ASSETS

SAMPLE = ASSETS / "sample.db3"


def synthetic_like_frames(n: int, width: int = 640, height: int = 480, seed: int = 0) -> list[RGBDFrame]:
    """Procedural RGB-D frames (a textured, waving surface in front of a wall) for benchmarks and tests.

    Returns n RGBDFrames of width x height: depth float32 metres (a few holes), color uint8 RGB.
    """
    rng = np.random.default_rng(seed)
    k = Intrinsics(0.95 * width, 0.95 * width, (width - 1) / 2, (height - 1) / 2, width, height)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    tex = rng.integers(0, 40, (height // 8 + 1, width // 8 + 1)).repeat(8, 0).repeat(8, 1)[:height, :width]
    frames = []
    for i in range(n):
        ph = 0.15 * i
        z = 1.0 + 0.08 * np.sin(u / 45.0 + ph) * np.cos(v / 60.0 - ph)
        inside = (u - width / 2) ** 2 / (0.35 * width) ** 2 + (v - height / 2) ** 2 / (0.4 * height) ** 2 < 1
        depth = np.where(inside, z, 1.8).astype(np.float32)
        depth[rng.random((height, width)) < 0.02] = 0.0
        checker = (((u + 3 * i) // 24 + v // 24) % 2) * 90
        r = np.clip(60 + checker + tex, 0, 255)
        g = np.clip(40 + 120 * (v / height) + tex, 0, 255)
        b = np.where(inside, 150 + tex, 90)
        color = np.stack([r, g, b], -1).astype(np.uint8)
        frames.append(RGBDFrame(i, i / 30.0, color, depth, k))
    return frames


def _ours(path: Path, max_frames: int | None) -> tuple[float, int, float]:
    """(seconds end to end, frames, steady frames/s after the first frame) through RecordingSource."""
    from fusion.sources.recording import RecordingSource

    t0 = time.perf_counter()
    n, t_first = 0, None
    with RecordingSource(path, align="color") as src:
        for _ in src:
            n += 1
            if t_first is None:
                t_first = time.perf_counter()
            t_last = time.perf_counter()
            if max_frames and n >= max_frames:
                break
    steady = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else float("nan")
    return time.perf_counter() - t0, n, steady


def _reference(path: Path, max_frames: int | None) -> tuple[float, int, float]:
    """(seconds end to end, frames, steady frames/s) of the plain pyrealsense2 loop."""
    import pyrealsense2 as rs

    t0 = time.perf_counter()
    pipe = rs.pipeline()
    cfg = rs.config()
    cfg.enable_device_from_file(str(path), repeat_playback=False)
    prof = pipe.start(cfg)
    prof.get_device().as_playback().set_real_time(False)
    align = rs.align(rs.stream.color)
    seen: set[int] = set()
    t_first = t_last = None
    try:
        while True:
            ok, fs = pipe.try_wait_for_frames(1000)
            if not ok:
                break
            fs = align.process(fs)
            d, c = fs.get_depth_frame(), fs.get_color_frame()
            if not d or d.get_frame_number() in seen:
                continue
            seen.add(d.get_frame_number())
            _ = np.asanyarray(d.get_data()).astype(np.float32) * d.get_units()
            _ = np.array(np.asanyarray(c.get_data()), copy=True)
            t_last = time.perf_counter()
            t_first = t_first or t_last
            if max_frames and len(seen) >= max_frames:
                break
    finally:
        pipe.stop()
    n = len(seen)
    # the loop learns that the file has ended from a 1 s timeout: that wait is not playback time
    total = time.perf_counter() - t0 - (0.0 if (max_frames and n >= max_frames) else 1.0)
    steady = (n - 1) / (t_last - t_first) if n > 1 and t_last > t_first else float("nan")
    return total, n, steady


def run_bench(quick: bool) -> dict:
    """Playback frames/s of our source and of the raw SDK reference on the bundled recording."""
    from fusion.sources.recorder import write_recording
    from fusion.sources.recording import RecordingSource

    tmp = None
    path = SAMPLE
    if not path.exists():
        tmp = tempfile.TemporaryDirectory(prefix="nrstudio-bench-")
        path = Path(tmp.name) / "bench.db3"
        write_recording(synthetic_like_frames(12 if quick else 60), path, pace=False)
    try:
        with RecordingSource(path) as src:
            k, length = src.intrinsics, src.length
            aligned = src.next_frame().meta.get("aligned_to")
        max_frames = 10 if quick else None
        repeats = 1 if quick else 2
        _ours(path, max_frames)  # warm-up: imports, SDK initialisation, file cache
        _reference(path, max_frames)
        ours = min((_ours(path, max_frames) for _ in range(repeats)), key=lambda r: r[0])
        ref = min((_reference(path, max_frames) for _ in range(repeats)), key=lambda r: r[0])
        ours_fps = ours[1] / ours[0]
        ref_fps = ref[1] / ref[0] if ref[0] > 0 else float("nan")
        return {
            "recording": str(SAMPLE if tmp is None else "temporary synthetic-like recording"),
            "resolution": f"{k.width}x{k.height}",
            "frames_in_recording": length,
            "bytes_per_frame": path.stat().st_size / max(length, 1),
            "ours_frames": ours[1],
            "ours_fps": ours_fps,
            "reference_sdk_frames": ref[1],
            "reference_sdk_fps": ref_fps,
            "ratio_ours_over_reference": ours_fps / ref_fps if ref_fps > 0 else float("nan"),
            "ours_steady_fps": ours[2],
            "reference_sdk_steady_fps": ref[2],
            "ours_alignment": aligned,
            "note": "end-to-end fps include opening (index + SDK probe) and closing; steady fps exclude them; "
                    "the reference always runs rs.align, ours skips it when depth and color share one camera "
                    "(recordings written by fusion.sources.recorder)",
        }
    finally:
        if tmp is not None:
            tmp.cleanup()
