"""`nrstudio gui [REC] [--frames N --screenshot PNG]`: the desktop app.

Without --frames / --screenshot it opens the main window (and REC, when given) and runs until closed.
With them it replays N frames of REC (default: the bundled sample) through the fusion pipeline, saves a
screenshot of the whole window and exits 0 (for docs and tests); a source that cannot be opened or fused
is an error (exit 2). Without a display (no $DISPLAY) a scripted run re-starts itself under `xvfb-run`
when that is installed, since the 3D view needs OpenGL.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio gui`."""
    p.add_argument("recording", nargs="?", default=None,
                   help="recording (.bag/.db3), image folder, camera[:SERIAL] or synthetic:NAME to open")
    p.add_argument("--frames", type=int, default=None, help="replay this many frames, then exit (scripted run)")
    p.add_argument("--screenshot", type=Path, default=None, help="save a PNG of the window after --frames")
    p.add_argument("--capture-every", type=int, default=0,
                   help="scripted run: capture the fused surface every N fused frames")
    p.add_argument("--tracker", default=None, choices=["classical", "neural", "none", "groundtruth"],
                   help="tracker for the scripted run (default: the controls' default, classical)")
    p.add_argument("--preset", type=Path, default=None, help="reconstruction preset file (.toml / .json)")
    p.add_argument("--size", default="1560x960", help="window size WxH (default 1560x960)")
    p.add_argument("--timeout", type=float, default=600.0, help="longest scripted run, seconds")
    p.add_argument("--report", type=Path, default=None, help="scripted run: write frames / stats as JSON")


def _needs_display() -> bool:
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM"))


def run(args: argparse.Namespace) -> int:
    """Open the window; scripted runs replay, screenshot and return 0 (2 on bad input)."""
    from fusion.errors import InputError

    scripted = args.frames is not None or args.screenshot is not None
    if scripted and _needs_display() and shutil.which("xvfb-run") and not os.environ.get("NRSTUDIO_NO_XVFB"):
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1200x24", sys.executable, "-m", "app.cli"]
        cmd += sys.argv[sys.argv.index("gui"):] if "gui" in sys.argv else ["gui"]
        env = dict(os.environ, NRSTUDIO_NO_XVFB="1")
        return subprocess.call(cmd, env=env)
    if not scripted and _needs_display():
        raise InputError("no display to open the window on (DISPLAY is not set); for a screenshot without one use "
                         "--frames N --screenshot PNG")
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {args.size}: expected WIDTHxHEIGHT, e.g. 1560x960") from None
    if args.frames is not None and args.frames < 1:
        raise InputError("--frames must be at least 1")

    from dataclasses import replace

    from PySide6 import QtWidgets

    from app.gui.main_window import SAMPLE, MainWindow
    from app.gui.settings import ReconSettings, load_preset

    settings = load_preset(args.preset) if args.preset else ReconSettings()
    if args.tracker:
        settings = replace(settings, tracker=args.tracker)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["nrstudio"])
    app.setApplicationName("nrstudio")
    win = MainWindow(settings)
    win.resize(w, h)
    win.show()
    if not scripted:
        if args.recording:
            win.open_source(args.recording)
        return int(app.exec())

    rec = args.recording or str(SAMPLE)
    if not (rec.startswith(("camera", "synthetic:"))) and not Path(rec).exists():
        win.close()
        raise InputError(f"{rec}: no such recording")
    try:
        res = win.replay_frames(rec, args.frames or 10, settings, args.timeout, args.capture_every)
        if not res["ok"]:
            raise InputError(f"{rec}: {res.get('error', 'replay failed').splitlines()[0]}")
        if args.screenshot is not None:
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            win.save_window_screenshot(args.screenshot)
            print(f"window screenshot -> {args.screenshot}")
        st = res["stats"]
        print(f"replayed {res['frames_in']} frames of {rec} ({res['frames_fused']} fused, tracker "
              f"{st.get('tracker')}, {st.get('nodes')} nodes, mesh {win.status_panel.mesh_info.get('vertices', 0):,} vertices)")
        fps = st.get("fused_fps")
        print(f"fusion {fps:.2f} frames/s" if fps else "fusion: -", "| stage ms (median):",
              ", ".join(f"{k} {v:.0f}" for k, v in (st.get("stage_ms_median") or {}).items()),
              f"| UI thread: longest gap {res['ui_max_gap_ms']:.0f} ms, median {res['ui_median_gap_ms']:.0f} ms, "
              f"{100 * res['ui_blocked_share']:.1f}% of the time in gaps > 100 ms")
        if args.report is not None:
            from app.report import write_report

            write_report(args.report, {"recording": rec, **{k: v for k, v in res.items() if k != "stats"},
                                       "stats": st, "mesh": win.status_panel.mesh_info})
    finally:
        win.close()
    return 0
