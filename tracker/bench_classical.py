"""Benchmark of the classical tracker alone: ms per frame and tracking error on synthetic scenes.

    python -m tracker.bench_classical [--quick] [--frames N] [--scene cloth] [--report out.json]

The canonical model is the surface seen in frame 0 (back-projected, with its colours); every later frame
is tracked from the previous motion, as the fusion loop does, but without the TSDF, so the figure is the
tracker's own cost. `run_bench(quick)` returns the figures for a bench section.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def track_sequence(scene_name: str, width: int, height: int, frames: int, config=None, seed: int = 0) -> dict:
    """Track `frames` frames of a synthetic scene at width x height; returns timing and error figures.

    Figures: wall_ms / cpu_ms (median per frame; cpu = process time, all threads), nodes, samples,
    failures, err_mm_first / err_mm_last (mean 3D error of the tracked frame-0 surface points visible in
    that frame vs the ground-truth scene flow), identity_mm_last (the error without tracking).
    """
    import torch

    from fusion.graph import GraphMotion, build_graph, skinning
    from fusion.motion import TrackingInput
    from fusion.synthetic import SceneConfig, make_scene
    from fusion.warp import warp_points
    from tracker.association import live_geometry
    from tracker.classical import ClassicalTracker, ClassicalTrackerConfig

    scene = make_scene(SceneConfig(scene_name, width=width, height=height, n_frames=frames + 1, seed=seed))
    f0 = scene.render(0)
    p, n, v = live_geometry(f0.depth, f0.intrinsics, f0.mask)
    pts, nrm, col = p[v], n[v], f0.color[v]
    graph = build_graph(pts, nrm, radius=0.05)
    anchors, weights = skinning(pts, graph)
    tracker = ClassicalTracker(config or ClassicalTrackerConfig())
    motion = GraphMotion.identity(graph.num_nodes)
    wall, cpu, errs, fails = [], [], [], 0
    ident = float("nan")
    for j in range(1, frames + 1):
        frame = scene.render(j)
        t0, c0 = time.perf_counter(), time.process_time()
        res = tracker.estimate(TrackingInput(frame, graph, motion, pts, nrm, anchors, weights, col, canonical_frame=f0))
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if res.ok:
            motion = res.motion
        else:
            fails += 1
        flow = scene.scene_flow(0, j)[v]
        ok = np.isfinite(flow).all(1) & scene.visibility(0, j)[v]
        warped = warp_points(pts, anchors, weights, graph.nodes, motion.rotations, motion.translations)
        errs.append(float(np.linalg.norm(warped - (pts + flow), axis=1)[ok].mean()) * 1e3)
        ident = float(np.linalg.norm(flow[ok], axis=1).mean()) * 1e3
    return {
        "scene": scene_name, "size": f"{width}x{height}", "frames": frames, "nodes": graph.num_nodes,
        "samples": int(min(len(pts), tracker.config.max_points)), "failures": fails,
        "wall_ms": float(np.median(wall)) * 1e3, "cpu_ms": float(np.median(cpu)) * 1e3,
        "err_mm_first": errs[0], "err_mm_last": errs[-1], "identity_mm_last": ident,
        "torch_threads": torch.get_num_threads(),
    }


def run_bench(quick: bool = False) -> dict:
    """Bench-section entry: classical tracker ms/frame at 320x240 and 640x480 (cloth scene) + errors."""
    frames = 5 if quick else 30
    out: dict = {}
    for w, h in ((320, 240), (640, 480)):
        r = track_sequence("cloth", w, h, frames)
        out[f"classical_ms_{w}"] = r["wall_ms"]
        out[f"classical_cpu_ms_{w}"] = r["cpu_ms"]
        out[f"classical_err_mm_{w}"] = r["err_mm_last"]
        out[f"classical_run_{w}"] = r
    return out


def main() -> None:
    """CLI of the benchmark (prints JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--scene", nargs="+", default=None, help="scenes to run (default: run_bench's set)")
    ap.add_argument("--size", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--report", default=None)
    args = ap.parse_args()
    if args.scene is None and args.frames is None:
        res = run_bench(args.quick)
    else:
        res = {}
        for s in args.scene or ["cloth"]:
            for size in args.size:
                w, h = (int(x) for x in size.split("x"))
                res[f"{s}_{size}"] = track_sequence(s, w, h, args.frames or 30)
    text = json.dumps(res, indent=2)
    print(text)
    if args.report:
        with open(args.report, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
