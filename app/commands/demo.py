"""`nrstudio demo`: the bundled recording -> fused mesh + report + preview image (or, without the fusion
core, a contact sheet of its frames and a playback report).

Outputs go to `--out` (default ./out): demo_contact_sheet.png, demo_report.json, and with fusion
demo_mesh.ply + demo_preview.png.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from fusion.paths import ASSETS

SAMPLE = ASSETS / "sample.db3"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio demo`."""
    p.add_argument("--recording", type=Path, default=SAMPLE, help="recording to use (default: the bundled sample)")
    p.add_argument("--out", type=Path, default=Path("out"), help="output folder")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--report", type=Path, default=None, help="report path (default OUT/demo_report.json)")


def _contact_sheet(args: argparse.Namespace, report: dict) -> None:
    from fusion.preview import contact_sheet, save_png
    from fusion.sources import open_source

    frames = []
    t0 = time.perf_counter()
    with open_source(args.recording) as src:
        for f in src:
            frames.append(f)
            if args.max_frames and len(frames) >= args.max_frames:
                break
    dt = time.perf_counter() - t0
    if not frames:
        from fusion.errors import InputError

        raise InputError(f"{args.recording}: the recording holds no frames")
    step = max(1, len(frames) // 12)
    sheet = contact_sheet(frames[::step][:12], columns=4)
    path = args.out / "demo_contact_sheet.png"
    save_png(str(path), sheet)
    k = frames[0].intrinsics
    report["playback"] = {
        "frames": len(frames),
        "seconds": dt,
        "fps": len(frames) / dt if dt > 0 else None,
        "intrinsics": k.as_dict(),
        "contact_sheet": str(path),
    }
    print(f"played {len(frames)} frames of {args.recording.name} at {len(frames) / dt:.1f} frames/s -> {path}")


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 on success."""
    from app.report import write_report
    from fusion.errors import InputError

    if not args.recording.exists():
        raise InputError(f"{args.recording}: bundled recording not found (is the checkout complete?)")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"recording": str(args.recording)}
    _contact_sheet(args, report)
    import importlib.util

    if importlib.util.find_spec("app.commands.replay") is not None:  # the fusion core, issue #3
        from app.commands import replay

        report["fusion"] = replay.fuse_for_demo(args.recording, args.out, max_frames=args.max_frames)
    rpath = args.report or (args.out / "demo_report.json")
    write_report(rpath, report)
    print(f"report -> {rpath}")
    return 0
