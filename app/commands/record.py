"""`nrstudio record OUT.db3 [--duration S] [--width W --height H --fps F] [--serial SN] [--preset NAME]`.

Records depth + color from a connected RealSense camera into a RealSense `.db3` recording (pyrealsense2
2.59 writes only .db3), atomically: OUT appears only when the recording is complete. Without a camera it
prints "no RealSense camera connected" and exits 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio record`."""
    p.add_argument("out", type=Path, help="output recording (.db3)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to record (default 10)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--serial", default=None, help="camera serial number (default: the first camera)")
    p.add_argument("--preset", default=None, help="D400 visual preset (high_accuracy, high_density, hand ...)")
    p.add_argument("--report", type=Path, default=None, help="write what was recorded as JSON")


def run(args: argparse.Namespace) -> int:
    """Record and print a one-line summary."""
    from app.report import write_report
    from fusion.errors import InputError
    from fusion.sources.live import VISUAL_PRESETS, LiveConfig
    from fusion.sources.recorder import record_camera

    if args.preset is not None and args.preset not in VISUAL_PRESETS:
        raise InputError(f"--preset {args.preset}: unknown visual preset (one of {', '.join(VISUAL_PRESETS)})")
    if args.width <= 0 or args.height <= 0 or args.fps <= 0:
        raise InputError("--width, --height and --fps must be positive")
    cfg = LiveConfig(serial=args.serial, width=args.width, height=args.height, fps=args.fps,
                     visual_preset=args.preset)

    def progress(n: int, t: float) -> None:
        print(f"\rrecording {args.out.name}: {n} framesets, {t:5.1f} s", end="", file=sys.stderr, flush=True)

    info = record_camera(args.out, args.duration, cfg, progress=progress)
    print(file=sys.stderr)
    print(f"recorded {info.frames} frames ({info.width}x{info.height} @ {info.fps:g} fps, "
          f"{info.size_bytes / 1e6:.1f} MB) -> {info.path}")
    write_report(args.report, info.as_dict())
    return 0
