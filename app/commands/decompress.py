"""`nrstudio decompress FILE --out DIR`: decode a `.qaad` file into one PLY point cloud per stored cloud.

A corrupt or truncated file is refused (checksum / size check) before anything is written.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio decompress`."""
    p.add_argument("file", type=Path, metavar="FILE", help="a .qaad file written by `nrstudio compress`")
    p.add_argument("--out", type=Path, required=True, help="folder for the PLY clouds (created)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    p.add_argument("--report", type=Path, default=None,
                   help="write clouds / points / seconds / decode_seconds / decoded_clouds_per_s as JSON")


def run(args: argparse.Namespace) -> int:
    """Verify, decode, write the clouds."""
    import time

    from app.report import write_report
    from fusion.errors import InputError
    from models.qaad.format import load_qaad
    from models.qaad.inference import decode_file, write_clouds

    t0 = time.perf_counter()
    f = load_qaad(args.file)
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out}: exists and is not a folder")
    t1 = time.perf_counter()
    clouds = decode_file(f, args.device)
    decode_s = time.perf_counter() - t1
    paths = write_clouds(f, args.out, clouds=clouds)
    secs = time.perf_counter() - t0
    rate = len(paths) / max(decode_s, 1e-9)
    write_report(args.report, {"clouds": len(paths), "points_per_cloud": f.config.n_points, "seconds": secs,
                               "decode_seconds": decode_s, "decoded_clouds_per_s": rate,
                               "files": [str(p) for p in paths]})
    print(f"{args.out}: wrote {len(paths)} clouds of {f.config.n_points} points ({secs:.2f} s; decoding "
          f"{decode_s:.2f} s = {rate:.1f} clouds/s)")
    return 0
