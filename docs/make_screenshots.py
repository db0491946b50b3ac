"""Regenerate the app screenshots in docs/ (run under a display, e.g. `xvfb-run -a -s "-screen 0 1920x1200x24"
.venv/bin/python docs/make_screenshots.py`): the main window during a replay of the bundled sample with the
classical tracker and a capture series, then the Compare panel on the first and last capture.

Usage: make_screenshots.py [--frames N] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    """Write docs/screenshot_main.png and docs/screenshot_compare.png; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--tracker", default="classical")
    args = ap.parse_args()

    import app.gui  # noqa: F401  (shared GL contexts before the QApplication)
    from PySide6 import QtWidgets

    from app.gui.main_window import SAMPLE, MainWindow
    from app.gui.settings import ReconSettings

    qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["nrstudio"])
    win = MainWindow(ReconSettings(tracker=args.tracker))
    win.resize(1560, 960)
    win.show()
    res = win.replay_frames(str(SAMPLE), args.frames, None, 1800, capture_every=max(1, args.frames // 3))
    if not res["ok"]:
        print(res.get("error"), file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    win.save_window_screenshot(args.out / "screenshot_main.png")
    print(f"main window -> {args.out / 'screenshot_main.png'} ({res['frames_in']} frames, "
          f"{res['captures']} captures)")
    panel = win.panels.panels["compare"]
    win.panels_dock.raise_()
    win.status_dock.hide()  # the panel gets the whole right column
    panel.choosers["A"].select_capture(0)
    panel.choosers["B"].select_capture(len(win.captures) - 1)
    panel.run()
    win.wait_until(lambda: not panel.running, 600)
    win.wait_until(lambda: False, 0.5)
    win.save_window_screenshot(args.out / "screenshot_compare.png")
    print(f"compare panel -> {args.out / 'screenshot_compare.png'}: {panel.result.summary if panel.result else None}")
    win.close()
    del qapp
    return 0


if __name__ == "__main__":
    sys.exit(main())
