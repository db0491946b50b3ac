"""`nrstudio match SRC TGT --out MAP [--gt-map FILE | --gt-identity] [--report JSON]`: DiffuMatch.

MAP: one line per TARGET vertex holding its SOURCE vertex index (0-based), written atomically.
--gt-map uses the same layout. The report holds geodesic_error (mean geodesic distance on the source
between predicted and true match / sqrt(source area)), seconds, and the same under `baselines` for
WKS + ZoomOut (no learning) and the deep functional map without the prior, plus the WKS solve with the
orientation term (`wks_orient_zoomout`, a diagnostic); every method also reports the orientation energy
of its map (models/diffumatch/orientation.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio match`."""
    p.add_argument("src", type=Path, help="source mesh or point cloud (OBJ/PLY/OFF/STL/XYZ/NPY)")
    p.add_argument("tgt", type=Path, help="target mesh or point cloud")
    p.add_argument("--out", type=Path, required=True, help="map file: line j = source vertex of target vertex j")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--gt-map", type=Path, default=None, help="ground-truth map, same layout as --out")
    g.add_argument("--gt-identity", action="store_true", help="ground truth: target vertex j <-> source vertex j")
    p.add_argument("--report", type=Path, default=None, help="write figures as JSON")
    p.add_argument("--weights", type=Path, default=None, help="prior weights (default: assets/diffumatch/prior.pt)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--steps", type=int, default=None, help="feature-optimisation steps per pair")
    p.add_argument("--k-final", type=int, default=None, help="ZoomOut final map size")
    p.add_argument("--opt-vertices", type=int, default=None, help="decimated size used while optimising")
    p.add_argument("--no-baselines", action="store_true", help="skip the two baselines")
    p.add_argument("--n-eval", type=int, default=2000, help="target vertices used for the geodesic error (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the per-vertex nets are small, extra threads mostly contend)")


def run(args: argparse.Namespace) -> int:
    """Match, write the map, print and report the figures."""
    import sys
    from dataclasses import replace

    from app.report import write_report
    from fusion.errors import InputError
    from models.diffumatch.gtmaps import write_p2p
    from models.diffumatch.matching import MatchConfig, match_files
    from models.diffumatch.prior import load_prior
    from models.diffumatch.training import resolve_device

    for path in (args.src, args.tgt) + ((args.gt_map,) if args.gt_map else ()):
        if not path.exists():
            raise InputError(f"{path}: no such file")
    for name in ("steps", "k_final", "opt_vertices"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InputError(f"--{name.replace('_', '-')} must be positive (got {v})")
    if args.n_eval < 0:
        raise InputError(f"--n-eval must be >= 0 (got {args.n_eval}; 0 = all target vertices)")
    import torch

    torch.set_num_threads(max(1, args.threads))
    dev = resolve_device(args.device)
    cfg = MatchConfig(device=str(dev), seed=args.seed)
    over = {"steps": args.steps, "k_final": args.k_final, "n_opt_vertices": args.opt_vertices}
    cfg = replace(cfg, **{k: v for k, v in over.items() if v is not None})
    prior = load_prior(args.weights, device=dev)
    res = match_files(args.src, args.tgt, cfg, prior, gt_file=args.gt_map, gt_identity=args.gt_identity,
                      baselines=not args.no_baselines, n_eval=args.n_eval or None)
    write_p2p(args.out, res.pop("p2p_21"))
    report = {"src": str(args.src), "tgt": str(args.tgt), "out": str(args.out), "device": str(dev), **res}
    ge = res["geodesic_error"]
    print(f"map: {args.out} ({res['n_target']} target vertices -> {res['n_source']} source vertices)")
    print(f"{'diffumatch':<18s} geodesic_error {ge if ge is None else round(ge, 4)}   seconds {res['seconds']:.1f}"
          f"   cpu_seconds {res['cpu_seconds']:.1f}")
    for name, b in res.get("baselines", {}).items():
        e = b["geodesic_error"]
        print(f"{name:<18s} geodesic_error {e if e is None else round(e, 4)}   seconds {b['seconds']:.1f}"
              f"   cpu_seconds {b['cpu_seconds']:.1f}")
    sys.stdout.flush()
    write_report(args.report, report)
    return 0
