"""Regenerate the screenshots and figures of docs/walkthrough.md by doing what a new user does, headless.

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python docs/walkthrough/make_walkthrough.py

Steps (each writes a PNG next to this script; the numbers go to figures.json and demo_output.txt):
 0. `nrstudio demo` (what `make demo` runs after its set-up) -> its stdout and its preview image;
 1. the window as `nrstudio gui assets/sample.db3` opens it (the recording's first frame on screen);
 2. Start with the default settings (classical tracker) and play 30 frames;
 3. Reset, back to frame 1, Tracker = Neural, a capture series (every 10 frames, 3 times), play 30 frames:
    the color view shows the tracker's correspondences and weight map;
 4. the capture list with its thumbnails;
 5. File > Export mesh… (the dialog), the export, and the written file read back and rendered;
 6. Shape panels > Compare on the first and the last capture (with the Status dock closed).
The window is driven in-process (as tests/app/test_gui_window.py does); every step waits for the app's own
signals, so the script is re-runnable and ends in about a minute on two cores. Exit code 0 on success.

Usage: make_walkthrough.py [--out DIR] [--frames N] [--skip-demo]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _clean_tqdm(text: str) -> str:
    """Keep the last state of every carriage-return-updated (tqdm) line."""
    return "\n".join(line.split("\r")[-1] for line in text.split("\n"))


def run_demo(out: Path, work: Path) -> dict:
    """`nrstudio demo --out work/demo`; stdout to out/demo_output.txt, preview to out/00_demo_preview.png."""
    import shutil

    demo = work / "demo"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--out", str(demo)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # bytes: keep tqdm's \r as they are
    wall = time.perf_counter() - t0
    text = _clean_tqdm(proc.stdout.decode("utf-8", "replace")).replace(str(demo), "out")
    text = "\n".join(line for line in text.split("\n") if line.strip())
    (out / "demo_output.txt").write_text(f"$ nrstudio demo\n{text.strip()}\n")
    if proc.returncode != 0:
        raise SystemExit(f"nrstudio demo failed ({proc.returncode}):\n{text}")
    shutil.copyfile(demo / "demo_preview.png", out / "00_demo_preview.png")
    rep = json.loads((demo / "demo_report.json").read_text())
    return {"wall_s": round(wall, 1), "report_keys": sorted(rep),
            "summary": [line for line in text.splitlines() if "frames fused" in line]}


def main() -> int:
    """Run the walkthrough; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    ap.add_argument("--frames", type=int, default=30, help="frames played in steps 2 and 3")
    ap.add_argument("--skip-demo", action="store_true", help="leave step 0 (nrstudio demo) out")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nrstudio-walkthrough-"))
    figures: dict = {}
    if not args.skip_demo:
        figures["demo"] = run_demo(out, work)
        print("0. demo:", *figures["demo"]["summary"])

    import app.gui  # noqa: F401  (shared GL contexts before the QApplication)
    from PySide6 import QtWidgets

    from app.gui.main_window import MainWindow

    qapp = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["nrstudio"])
    qapp.setApplicationName("nrstudio")
    win = MainWindow()  # the settings a new user gets
    win.resize(1560, 960)
    win.show()
    try:
        return _session(win, out, work, figures, args.frames)
    finally:
        win.close()
        del qapp


def _session(win, out: Path, work: Path, figures: dict, frames: int) -> int:
    """Steps 1-6 on the open window (see the module docstring)."""
    import numpy as np
    from PySide6 import QtCore
    from PySide6.QtTest import QTest

    from app.gui.main_window import SAMPLE

    wait = win.wait_until

    def shot(name: str, widget=None) -> Path:
        wait(lambda: False, 0.4)  # let the last paints happen
        p = out / name
        if widget is None:
            win.save_window_screenshot(p)
        elif not widget.grab().save(str(p)):
            raise SystemExit(f"cannot save {p}")
        print(f"   -> {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}")
        return p

    def check(ok: bool, what: str) -> None:
        if not ok:
            errs = "; ".join(t for _, t in win.errors[-3:])
            raise SystemExit(f"walkthrough: {what} did not happen" + (f" (errors: {errs})" if errs else ""))

    def play_and_wait(frames: int) -> None:
        target = win.last_stats.get("frames_in", 0) + frames
        m0 = win.mesh_updates
        win.play(frames)
        check(wait(lambda: win.last_stats.get("frames_in", 0) >= target and not win.state.get("playing")
                   and win.mesh_updates > m0, 900), f"playing {frames} frames")

    # 1. `nrstudio gui assets/sample.db3` opens the window with the recording
    check(wait(lambda: win.controls.tracker.model().item(win.controls.tracker.findData("neural")) is not None
               and bool(win.controls._tracker_ok), 60), "the tracker probe")
    win.open_source(str(SAMPLE))
    check(wait(lambda: win.source_info is not None and win.frames_shown > 0, 120), "opening the sample")
    print("1. opened:", win.status_label.text())
    shot("01_opened.png")

    # 2. Start (default settings: classical tracker, 320x240) and watch it fuse
    settings = win.controls.settings()
    figures["defaults"] = settings.to_dict()
    win.start_reconstruction(paused=True)
    check(wait(lambda: bool(win.state.get("fusing")), 120), "starting the reconstruction")
    t0 = time.perf_counter()
    play_and_wait(frames)
    st = win.last_stats
    figures["classical"] = {"frames_in": st["frames_in"], "frames_fused": st["frames_fused"], "nodes": st["nodes"],
                            "wall_s": round(time.perf_counter() - t0, 1), "skipped": st.get("skipped"),
                            "mesh_vertices": win.status_panel.mesh_info.get("vertices")}
    print("2. classical:", figures["classical"])
    shot("02_fusing_classical.png")

    # 3. Reset, back to the first frame, the neural tracker, a capture series, play
    win.reset_reconstruction()
    check(wait(lambda: not win.state.get("has_model") and not win.state.get("fusing"), 60), "the reset")
    shown = win.frames_shown
    QTest.mouseClick(win.transport.start_btn, QtCore.Qt.MouseButton.LeftButton)
    check(wait(lambda: win.frames_shown > shown and win.state.get("position") == 0, 60), "going back to frame 1")
    c = win.controls.tracker
    c.setCurrentIndex(c.findData("neural"))
    check(win.controls.settings().tracker == "neural", "choosing the neural tracker")
    win.start_reconstruction(paused=True)
    check(wait(lambda: bool(win.state.get("fusing")), 120), "starting with the neural tracker")
    win.capture_dock.every.setValue(max(1, frames // 3))
    win.capture_dock.times.setValue(3)
    QTest.mouseClick(win.capture_dock.series_btn, QtCore.Qt.MouseButton.LeftButton)
    t0 = time.perf_counter()
    play_and_wait(frames)
    check(wait(lambda: win.last_tracker_overlay is not None and "size" in win.last_tracker_overlay, 30),
          "the neural tracker's overlay")
    check(wait(lambda: len(win.captures) >= 3, 60), "three captures")
    st = win.last_stats
    ov = win.last_tracker_overlay
    figures["neural"] = {"frames_in": st["frames_in"], "frames_fused": st["frames_fused"], "nodes": st["nodes"],
                         "wall_s": round(time.perf_counter() - t0, 1), "skipped": st.get("skipped"),
                         "keyframes": st.get("keyframes"), "overlay_frame": ov["frame_index"] + 1,
                         "overlay_correspondences": int(len(ov["weights"])),
                         "overlay_valid": int(np.count_nonzero(ov["valid"])),
                         "overlay_weight_median": round(float(np.median(ov["weights"])), 3),
                         "heatmap_shape": list(ov["heatmap"].shape),
                         "overlays_shown": win.color_view.tracker_overlay_shown,
                         "track_ms_median": round(st.get("stage_ms_median", {}).get("track", float("nan")), 1)}
    print("3. neural:", figures["neural"])
    shot("03_neural_tracker.png")
    # a closer look: the image column wider for a moment, the graph nodes off
    images = win.color_view.parentWidget()  # the color / depth splitter
    sizes, isizes = win.views_split.sizes(), images.sizes()
    win.views_split.setSizes([sum(sizes) - 820, 820])
    images.setSizes([sum(isizes) - 40, 40])
    win.color_view.overlay_box.setChecked(False)
    shot("03_neural_overlays.png", win.color_view)
    win.color_view.overlay_box.setChecked(True)
    win.views_split.setSizes(sizes)
    images.setSizes(isizes)

    # 4. the captures (thumbnails)
    figures["captures"] = [{"name": cap.name, "points": cap.num_points, "frame": cap.frame_index + 1}
                           for cap in win.captures.items]
    print("4. captures:", figures["captures"])
    shot("04_captures.png", win.captures_dock)

    # 5. File > Export mesh…: the dialog, the export, the file read back
    from app.gui.dialogs import ExportDialog
    from fusion.export import load_mesh
    from fusion.preview import render_mesh_views, save_png

    dlg = ExportDialog(win, has_sequence=bool(win.state.get("has_sequence")), default_dir=str(work))
    dlg.show()
    check(wait(lambda: dlg.isVisible(), 10), "the export dialog")
    shot("05_export_dialog.png", dlg)
    req = dlg.request()
    dlg.accept()
    win.export_mesh(req["which"], req["path"], req["fmt"])
    check(wait(lambda: win.last_export is not None, 120), "the export")
    check(bool(win.last_export.get("ok")), f"the export ({win.last_export.get('message')})")
    mesh = load_mesh(req["path"])
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    figures["export"] = {"which": req["which"], "format": req["fmt"], "file": Path(req["path"]).name,
                         "bytes": Path(req["path"]).stat().st_size, "message": win.last_export["message"],
                         "reread_vertices": mesh.num_vertices, "reread_faces": mesh.num_faces,
                         "extent_m": [round(float(x), 3) for x in hi - lo]}
    print("5. export:", figures["export"])
    save_png(str(out / "05_exported_mesh.png"), render_mesh_views(mesh.vertices, mesh.faces, mesh.colors, size=300))
    print(f"   -> {(out / '05_exported_mesh.png')}")

    # 6. Shape panels > Compare: first and last capture
    panel = win.panels.panels["compare"]
    win.panels_dock.raise_()
    win.status_dock.hide()  # as a user has to (View > Status): otherwise the panel's result view is scrolled away
    panel.choosers["A"].select_capture(0)
    panel.choosers["B"].select_capture(len(win.captures) - 1)
    check(panel.run() is not None, "starting the Compare panel")
    check(wait(lambda: panel.result is not None, 300), "the Compare panel's result")
    figures["compare"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in panel.result.summary.items()}
    print("6. compare:", figures["compare"])
    shot("06_compare.png")

    figures["log"] = [f"{lvl}: {re.sub(str(work), '<tmp>', t.splitlines()[0])}" for lvl, t in win.log_pane.entries]
    figures["errors"] = [list(e) for e in win.errors]
    (out / "figures.json").write_text(json.dumps(figures, indent=1, default=str) + "\n")
    print(f"figures -> {out / 'figures.json'}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written and the window is closed; skip the interpreter's final garbage collection, which
    # now and then aborts inside PySide6 ("none_dealloc: deallocating None") after a Compare job has run.
    os._exit(code)
