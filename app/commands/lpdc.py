"""`nrstudio lpdc SEQ_DIR --out DIR [--report JSON]`: LPDC 4D reconstruction of a point-cloud / mesh sequence.

SEQ_DIR holds one file per frame (point clouds, or meshes sampled to --points noisy points per frame).
Writes one mesh per frame to DIR (constant connectivity: vertex i is the same material point in every
frame). With constant-connectivity input meshes, LPDC, the ODE baseline and nearest-neighbour tracking
are evaluated against them (chamfer, correspondence_l2, iou when watertight, inference_s).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio lpdc`."""
    p.add_argument("seq_dir", type=Path, help="folder with one point cloud or mesh per frame (natural file order)")
    p.add_argument("--out", type=Path, required=True, help="folder for the reconstructed meshes (one per frame)")
    p.add_argument("--report", type=Path, default=None, help="write figures and timings as JSON")
    p.add_argument("--frames", type=int, default=17, help="frames to reconstruct (the shipped model takes 17)")
    p.add_argument("--start", type=int, default=0, help="first frame (index in file order)")
    p.add_argument("--pad", action="store_true", help="with fewer frames than --frames, repeat the last one")
    p.add_argument("--points", type=int, default=300, help="input points per frame")
    p.add_argument("--noise", type=float, default=0.001, help="noise std (unit scale) on points sampled from meshes")
    p.add_argument("--weights", type=Path, default=None, help="LPDC checkpoint (default: assets/lpdc/lpdc.pt)")
    p.add_argument("--ode-weights", type=Path, default=None, help="ODE-baseline checkpoint (default: beside --weights)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--no-baselines", action="store_true", help="skip the ODE and nearest-neighbour baselines")
    p.add_argument("--resolution", type=int, default=None, help="coarsest marching-cubes grid (cells per axis)")
    p.add_argument("--upsampling-steps", type=int, default=None, help="MISE refinement levels (0 = plain grid)")
    p.add_argument("--format", choices=["obj", "ply", "off"], default="obj", help="output mesh format")
    p.add_argument("--seed", type=int, default=0, help="seed of the point sampling")
    p.add_argument("--eval-points", type=int, default=30_000,
                   help="surface / volume samples per frame for chamfer, correspondence and IoU")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    """Run the reconstruction, print a summary, write the report."""
    from app.report import write_report
    from models.lpdc.pipeline import RunOptions, run as run_lpdc, set_threads

    set_threads(args.threads)
    opts = RunOptions(frames=args.frames, points=args.points, noise=args.noise, start=args.start, pad=args.pad,
                      seed=args.seed, device=args.device, weights=str(args.weights) if args.weights else None,
                      ode_weights=str(args.ode_weights) if args.ode_weights else None,
                      baselines=not args.no_baselines, out_ext="." + args.format, resolution0=args.resolution,
                      upsampling_steps=args.upsampling_steps, n_chamfer=args.eval_points,
                      n_tracks=max(args.eval_points, 10_000), n_iou=args.eval_points)
    report = run_lpdc(args.seq_dir, args.out, opts)
    n = len(report["outputs"])
    print(f"lpdc: {n} meshes ({report['n_vertices']} vertices, {report['n_faces']} faces) -> {args.out}")
    print(f"  inference {report['inference_s']:.3f} s (encode {report['encode_s']:.3f}, t0 mesh {report['mesh_s']:.3f}, "
          f"all frames {report['motion_s']:.3f}); CPU {report['inference_cpu_s']:.3f} s")
    if "speedup_vs_ode" in report:
        print(f"  vs the ODE baseline: {report['speedup_vs_ode']:.2f}x faster (wall), "
              f"{report['cpu_speedup_vs_ode']:.2f}x (CPU time)")
    rows = [("lpdc", report)] + list(report.get("baselines", {}).items())
    if report.get("correspondence_l2") is not None:
        print(f"  {'method':<26s} {'corr_l2':>9s} {'chamfer':>10s} {'iou':>7s} {'inference_s':>12s} {'cpu_s':>8s}")
        for name, r in rows:
            if "correspondence_l2" not in r:
                continue
            iou = "-" if r.get("iou") is None else f"{r['iou']:.3f}"
            print(f"  {name:<26s} {r['correspondence_l2']:9.4f} {r['chamfer']:10.6f} {iou:>7s} {r['inference_s']:12.3f}"
                  f" {r['inference_cpu_s']:8.3f}")
    for note in report.get("notes", []):
        print(f"  note: {note}", file=sys.stderr)
    write_report(args.report, report)
    return 0
