"""`nrstudio deform SRC TGT --out MESH`: implicit feature-matching deformation of SRC toward TGT.

Meshes or point clouds in (any format models.common.io reads); each is normalised into the model's unit
box; latent codes are fitted for both; the source vertices are tracked through the network's features
while the code moves from source to target; the result keeps the source's faces and is written in the
target's frame. --trajectory DIR writes every interpolation step as DIR/step_XXX.<ext>.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio deform`."""
    p.add_argument("src", type=Path, help="source mesh or point cloud (its vertices are moved)")
    p.add_argument("tgt", type=Path, help="target mesh or point cloud")
    p.add_argument("--out", type=Path, required=True, help="output mesh (source faces, moved vertices; .ply/.obj/.off/...)")
    p.add_argument("--report", type=Path, default=None, help="write the figures as JSON")
    p.add_argument("--steps", type=int, default=50, help="latent interpolation steps T (default 50)")
    p.add_argument("--gn-iters", type=int, default=3, help="Gauss-Newton iterations per step N (default 3)")
    p.add_argument("--reg", type=float, default=0.01, help="displacement regulariser λ (default 0.01)")
    p.add_argument("--layers", type=str, default="3:1,6:0.1",
                   help="feature layers and weights 'layer:weight,...' (default 3:1,6:0.1)")
    p.add_argument("--fit-iters", type=int, default=None, help="latent fitting iterations (default 150)")
    p.add_argument("--trajectory", type=Path, default=None, help="folder for the whole trajectory as a mesh sequence")
    p.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the shipped assets/featmatch weights)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def _parse_layers(text: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    from fusion.errors import InputError

    layers, weights = [], []
    try:
        for part in text.split(","):
            if ":" in part:
                a, b = part.split(":")
                layers.append(int(a))
                weights.append(float(b))
            else:
                layers.append(int(part))
                weights.append(1.0)
    except ValueError as e:
        raise InputError(f"--layers '{text}': expected 'layer:weight,...' ({e})") from e
    if not layers:
        raise InputError("--layers: no layer given")
    return tuple(layers), tuple(weights)


def run(args: argparse.Namespace) -> int:
    """Fit, match, write MESH atomically (and the trajectory), print and write the report."""
    import sys
    from dataclasses import replace

    from app.report import write_report
    from fusion.errors import InputError
    from models.common.io import MESH_EXTS, load_mesh, save_mesh
    from models.featmatch.config import FitConfig, MatchConfig
    from models.featmatch.model import load_checkpoint, resolve_device
    from models.featmatch.pipeline import DeformConfig, deform
    from models.featmatch.weights import default_weights_path

    if args.steps < 1 or args.gn_iters < 1:
        raise InputError("--steps and --gn-iters must be >= 1")
    if args.reg < 0:
        raise InputError("--reg must be >= 0")
    ext = args.out.suffix.lower()
    if ext not in MESH_EXTS | {".ply"}:
        raise InputError(f"{args.out}: unknown output format '{ext}' (expected one of {sorted(MESH_EXTS)})")
    layers, weights = _parse_layers(args.layers)
    src = load_mesh(args.src)
    tgt = load_mesh(args.tgt)
    dev = resolve_device(args.device)
    wpath = args.weights or default_weights_path()
    decoder, codes, _ = load_checkpoint(wpath, dev)
    nl = decoder.cfg.num_layers
    if any(l < 1 or l > nl for l in layers):
        raise InputError(f"--layers: layers must be in 1..{nl} for {wpath}")
    try:
        match = MatchConfig(steps=args.steps, gn_iters=args.gn_iters, reg=args.reg, layers=layers, layer_weights=weights)
    except ValueError as e:
        raise InputError(f"--layers: {e}") from e
    fit = FitConfig() if args.fit_iters is None else replace(FitConfig(), iters=max(1, args.fit_iters))
    cfg = DeformConfig(match=match, fit=fit)

    last = [-1]

    def progress(f: float, msg: str) -> None:
        pct = int(f * 100)
        if pct // 10 != last[0] // 10:
            last[0] = pct
            print(f"  {pct:3d}%  {msg}", file=sys.stderr, flush=True)

    result = deform(src, tgt, decoder, codes, cfg, keep_trajectory=args.trajectory is not None, progress=progress,
                    src_name=str(args.src), tgt_name=str(args.tgt))
    save_mesh(args.out, result.vertices, result.faces)
    if result.trajectory is not None:
        args.trajectory.mkdir(parents=True, exist_ok=True)
        for t, v in enumerate(result.trajectory):
            save_mesh(args.trajectory / f"step_{t:03d}{ext}", v, result.faces)
    rep = dict(result.report, src=str(args.src), tgt=str(args.tgt), out=str(args.out), weights=str(wpath),
               trajectory=str(args.trajectory) if args.trajectory else None)
    for k in ("chamfer_to_target", "edge_length_distortion", "self_intersections", "self_intersections_source",
              "self_intersections_introduced", "flipped_faces", "seconds", "cpu_seconds"):
        v = rep[k]
        print(f"{k:<28s} {v:.5g}" if isinstance(v, float) else f"{k:<28s} {v}")
    print(f"wrote {args.out}")
    write_report(args.report, rep)
    return 0
