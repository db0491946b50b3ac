"""`nrstudio eval-tracking DEEPDEFORM_DIR [--tracker classical|neural] [--report JSON]`.

Runs a tracker on every pair with a ground-truth scene flow file under a DeepDeform-layout folder (one
sequence folder or a tree of them) and prints EPE 3D and graph error 3D in millimetres (NNRT Table 1).
The report has `pairs`, `epe3d_mm`, `graph_error_mm`, `seconds` and the per-pair figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio eval-tracking`."""
    p.add_argument("folder", type=Path, help="DeepDeform-layout folder (a sequence or a tree of sequences)")
    p.add_argument("--tracker", choices=["classical", "neural", "identity"], default="neural",
                   help="which tracker to evaluate (identity: the no-motion baseline)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--weights", type=Path, default=None, help="neural-tracker checkpoint (default: the shipped one)")
    p.add_argument("--report", type=Path, default=None, help="write the figures as JSON")


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one line per pair and the means."""
    from app.report import write_report
    from tracker.evaluation import evaluate_folder

    def show(i: int, rec: dict) -> None:
        ge = rec["graph_error_mm"]
        print(f"  {rec['name']}: EPE 3D {rec['epe3d_mm']:.1f} mm, graph error "
              f"{'n/a' if ge is None or ge != ge else f'{ge:.1f} mm'}"
              f"{' (tracking failed: identity scored)' if rec['failed'] else ''}", flush=True)

    rep = evaluate_folder(args.folder, args.tracker, args.device, None if args.weights is None else str(args.weights),
                          progress=show)
    if rep["pairs"] == 0:
        print(f"{args.folder}: no pair with a ground-truth scene_flow file; nothing to evaluate", file=sys.stderr)
    else:
        fmt = lambda v: "n/a" if v is None else f"{v:.1f} mm"  # noqa: E731
        print(f"{args.tracker}: {rep['pairs']} pairs, EPE 3D {fmt(rep['epe3d_mm'])}, graph error "
              f"{fmt(rep['graph_error_mm'])}, {rep['failed']} failed, {rep['seconds']:.1f} s")
    write_report(args.report, rep)
    return 0
