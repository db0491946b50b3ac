"""When does a synthetic scene's tracking go wrong? Per-frame deformation error of one scene draw, for several
motions side by side (the tracker, the tracker with perfect correspondences, the ground truth; see
bench/scene_sweep.py for what they are), as a table and optionally a plot.

    .venv/bin/python bench/per_frame_error.py --scene humanoid --seed 0 --plot docs/dev/humanoid_seed0.png

The figures per frame are the terms of the replay report's `deformation_error_mm` (`FusionPipeline.
deformation_errors`): the true canonical vertices warped by that frame's estimated motion against their true
positions, mean and 95th percentile in mm, over all observed vertices and over those the frame sees.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

COLORS = {"tracker": (220, 60, 40), "perfect-visible": (40, 120, 220), "perfect-all": (120, 60, 200),
          "oracle": (40, 160, 60)}


def per_frame(scene: str, seed: int, frames: int, motion: str, spec: dict[str, Any],
              degrade: Any = None) -> list[dict[str, float]]:
    """[{frame, mean_mm, p95_mm, visible_mm}] of one scene draw fused at 320x240 with `motion` (perfect-*
    correspondences spoiled by `degrade`, a `tracker.oracle.OracleDegradation`, when given)."""
    import numpy as np

    from fusion.bench_fusion import scene_and_truth
    from fusion.pipeline import FusionConfig, FusionPipeline
    from scene_sweep import estimator_factory

    sc, gt = scene_and_truth(scene, frames, seed=seed)
    make = estimator_factory(spec, motion, degrade)
    pipe = FusionPipeline(FusionConfig(voxel_size=0.01, processing_size=(320, 240)), make(gt))
    pipe.run((sc.render(i) for i in range(frames)), groundtruth=gt)
    rows = []
    for idx, err, vis in pipe.deformation_errors(gt):
        e = 1e3 * err
        rows.append({"frame": int(idx), "mean_mm": float(e.mean()), "p95_mm": float(np.percentile(e, 95)),
                     "visible_mm": float(e[vis].mean()) if vis.any() else float("nan")})
    return rows


def plot(curves: dict[str, list[dict[str, float]]], title: str, path: Path) -> None:
    """A PNG of the mean per-frame error of each motion (pyqtgraph, offscreen), written atomically."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg
    import pyqtgraph.exporters
    from PySide6 import QtWidgets

    from fusion.atomic import atomic_path

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    w = pg.PlotWidget()  # colours set on the widget: pyqtgraph's global options belong to the app
    w.setBackground("w")
    w.setTitle(title, color="k")
    for side in ("left", "bottom"):
        w.getAxis(side).setPen("k")
        w.getAxis(side).setTextPen("k")
    w.resize(900, 420)
    w.addLegend(offset=(10, 10), labelTextColor="k")
    w.setLabel("bottom", "frame")
    w.setLabel("left", "deformation error", units="mm")
    for name, rows in curves.items():
        x = [r["frame"] for r in rows]
        w.plot(x, [r["mean_mm"] for r in rows], pen=pg.mkPen(COLORS.get(name, (0, 0, 0)), width=2), name=name)
    w.addLine(y=10, pen=pg.mkPen((120, 120, 120), style=pg.QtCore.Qt.PenStyle.DashLine))  # issue #3's target
    w.show()
    app.processEvents()
    exp = pyqtgraph.exporters.ImageExporter(w.plotItem)
    exp.parameters()["width"] = 900
    with atomic_path(path, ".png") as tmp:
        exp.export(str(tmp))


def main(argv: list[str] | None = None) -> int:
    """Print the per-frame table (and write the plot); returns the exit code (2 on bad arguments)."""
    from scene_sweep import MOTIONS, json_object, oracle_degradation, tracker_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default="humanoid", choices=("cloth", "cylinder", "humanoid"))
    ap.add_argument("--seed", type=int, default=0, help="draw of the scene's motion")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--motions", default="tracker,perfect-visible,oracle", help=f"comma list of {', '.join(MOTIONS)}")
    ap.add_argument("--config", default="{}", help="ClassicalTrackerConfig settings as a JSON object")
    ap.add_argument("--oracle", default="{}", help="OracleDegradation settings (JSON) for the perfect-* motions")
    ap.add_argument("--every", type=int, default=3, help="print every N-th frame")
    ap.add_argument("--plot", type=Path, help="write a PNG of the curves")
    ap.add_argument("--json", type=Path, help="write the per-frame figures as JSON")
    args = ap.parse_args(argv)
    motions = [m for m in args.motions.split(",") if m]
    try:
        spec = json_object(args.config, "--config")
        tracker_config(spec)
        degrade = oracle_degradation(json_object(args.oracle, "--oracle"))
        bad = [m for m in motions if m not in MOTIONS]
        if bad or not motions:
            raise ValueError(f"--motions: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(MOTIONS)}")
        if args.frames < 2:
            raise ValueError("--frames must be at least 2")
    except (ValueError, TypeError) as e:
        print(f"per_frame_error: {e}", file=sys.stderr)
        return 2
    curves = {m: per_frame(args.scene, args.seed, args.frames, m, spec, degrade) for m in motions}
    print(f"{args.scene} seed {args.seed}: deformation error per frame, mean / 95th percentile (mm)")
    print("frame  " + "  ".join(f"{m:>17}" for m in motions))
    by_frame = {m: {r["frame"]: r for r in rows} for m, rows in curves.items()}
    for f in sorted(by_frame[motions[0]]):
        if f % max(1, args.every):
            continue
        cells = [by_frame[m].get(f) for m in motions]
        print(f"{f:>5}  " + "  ".join(f"{c['mean_mm']:>8.1f} / {c['p95_mm']:>6.1f}" if c else f"{'-':>17}" for c in cells))
    if args.json:
        from fusion.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(curves, indent=1))
    if args.plot:
        plot(curves, f"{args.scene}, motion draw {args.seed}: per-frame deformation error", args.plot)
        print(f"plot -> {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
