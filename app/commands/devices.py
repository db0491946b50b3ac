"""`nrstudio devices [--report JSON]`: list the connected RealSense cameras.

Listing is a question, not a task that can fail: with no camera connected it prints
"no RealSense camera connected" and exits 0 (scripts can test the JSON report's `count`). Commands that
need a camera (`record`, a `camera` source) exit 2 with that message instead.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio devices`."""
    p.add_argument("--report", type=Path, default=None, help="write the device list as JSON")


def run(args: argparse.Namespace) -> int:
    """Print one line per connected camera (name, serial, firmware, USB type, product line)."""
    from app.report import write_report
    from fusion.sources.live import list_devices

    devices = list_devices()
    if not devices:
        print("no RealSense camera connected")
    for d in devices:
        print(
            f"{d['name'] or 'RealSense device'}  serial {d['serial']}  firmware {d['firmware']}  "
            f"USB {d['usb_type'] or '?'}  product line {d['product_line'] or '?'}"
        )
    write_report(args.report, {"count": len(devices), "devices": devices})
    return 0
