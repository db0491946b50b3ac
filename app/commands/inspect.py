"""`nrstudio inspect REC [--report JSON]`: what a recording (.bag/.db3) or an image folder holds.

Prints the device, the streams with their intrinsics, the depth units, the depth->color extrinsic, the
number of frames and the duration, without playing the file.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio inspect`."""
    p.add_argument("input", type=Path, help="a .bag/.db3 recording or an image folder")
    p.add_argument("--report", type=Path, default=None, help="write everything as JSON")


def _k(d: dict) -> str:
    s = f"fx={d['fx']:.3f} fy={d['fy']:.3f} cx={d['cx']:.3f} cy={d['cy']:.3f}"
    if d.get("model"):
        s += f" ({d['model']}, coeffs {[round(c, 4) for c in d.get('coeffs', [])]})"
    return s


def run(args: argparse.Namespace) -> int:
    """Print the description; return 0."""
    from app.report import write_report
    from fusion.sources import open_source

    with open_source(args.input) as src:
        info = src.describe() if hasattr(src, "describe") else {"path": str(args.input)}
    print(f"{info['path']}  ({info['format']})")
    if "streams" in info:  # a recording
        dev = info.get("device") or {}
        if dev:
            print(f"  device: {dev.get('name', '?')}  serial {dev.get('serial_number', '?')}  "
                  f"firmware {dev.get('firmware_version', '?')}")
        for s in info["streams"]:
            print(f"  stream {s['stream']:<6} {s['format']:<6} {s['width']}x{s['height']} @ {s['fps']} fps  "
                  f"{_k(s['intrinsics'])}")
        print(f"  depth units: {info['depth_units']} m")
        ext = info.get("extrinsics_depth_to_color")
        if ext:
            print(f"  depth->color translation: {[round(v, 5) for v in ext['translation_m']]} m")
        print(f"  frames: {info['depth_frames']} depth, {info['color_frames']} color; "
              f"duration {info['duration_s']:.3f} s")
        print(f"  delivered frames (align={info['align']}): {info['delivered_intrinsics']['width']}x"
              f"{info['delivered_intrinsics']['height']}, {_k(info['delivered_intrinsics'])}")
    else:  # an image folder
        k = info["intrinsics"]
        print(f"  frames: {info['frames']} ({k['width']}x{k['height']}), color: {'yes' if info['has_color'] else 'no (gray from depth)'}, "
              f"masks on {info['frames_with_masks']} frames")
        print(f"  intrinsics: {_k(k)}")
        print(f"  depth scale: {info['depth_scale']} m per unit")
    write_report(args.report, info)
    return 0
