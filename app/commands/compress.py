"""`nrstudio compress INPUT... --out FILE [--report JSON]`: NeuralQAAD compression of point clouds.

INPUT: point clouds (PLY/XYZ/NPY/NPZ/PCD) or meshes (OBJ/PLY/OFF/STL/GLB, sampled by area), or folders
of them. All clouds are brought to one size (resampled, with a note on stderr). Writes one `.qaad` file
(atomically) and prints EM-kD, Chamfer and the compression ratio.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio compress`."""
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="point clouds, meshes or folders of them")
    p.add_argument("--out", type=Path, required=True, help="the .qaad file to write")
    p.add_argument("--report", type=Path, default=None, help="write emkd / chamfer / compression_ratio / seconds as JSON")
    p.add_argument("--points", type=int, default=None, help="points per cloud (default: the clouds' common size, else 16384)")
    p.add_argument("--patches", type=int, default=16, help="patches K of the template cloud")
    p.add_argument("--latent", type=int, default=8, help="latent code size per cloud")
    p.add_argument("--ratio", type=float, default=100.0, help="target compression ratio (dataset floats : stored floats)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (maximum)")
    p.add_argument("--seconds", type=float, default=None, help="training time budget in seconds")
    p.add_argument("--mode", choices=["qaad", "chamfer"], default="qaad",
                   help="training: QAP assignment MSE (qaad) or augmented Chamfer (chamfer)")
    p.add_argument("--decoder", choices=["qaad", "atlasnet"], default="qaad",
                   help="NeuralQAAD decoder or the AtlasNetV2-style baseline")
    p.add_argument("--batch", type=int, default=4, help="clouds per training step")
    p.add_argument("--samples", type=int, default=2048, help="points per cloud per training step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (paper: 1e-3)")
    p.add_argument("--fp16", action="store_true", help="store the weights as float16")
    p.add_argument("--eval-clouds", type=int, default=None, help="measure EM-kD on this many clouds (default all)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load, train, write the .qaad file, print the figures."""
    from tqdm import tqdm

    from app.report import write_report
    from fusion.errors import InputError
    from models.qaad.data import load_dataset
    from models.qaad.format import save_qaad
    from models.qaad.inference import CompressConfig, compress_clouds
    from models.qaad.training import TrainConfig

    for name, v in (("--patches", args.patches), ("--latent", args.latent), ("--batch", args.batch),
                    ("--samples", args.samples), ("--steps", args.steps), ("--points", args.points),
                    ("--eval-clouds", args.eval_clouds)):
        if v is not None and v < 1:
            raise InputError(f"{name} must be positive, got {v}")
    if args.ratio <= 0 or args.lr <= 0 or (args.seconds is not None and args.seconds <= 0):
        raise InputError("--ratio, --lr and --seconds must be positive")
    if args.out.exists() and args.out.is_dir():
        raise InputError(f"{args.out}: is a folder, expected a .qaad file path")
    ds = load_dataset(args.inputs, n_points=args.points, seed=args.seed)
    for note in ds.notes:
        print(f"nrstudio compress: {note}", file=sys.stderr)
    train = TrainConfig(mode=args.mode, steps=args.steps, seconds=args.seconds, batch=args.batch,
                        samples=args.samples, lr=args.lr, seed=args.seed, device=args.device)
    cfg = CompressConfig(kind=args.decoder, patches=args.patches, latent=args.latent, ratio=args.ratio, train=train,
                         fp16=args.fp16, eval_clouds=args.eval_clouds)
    bar = None if args.quiet else tqdm(total=1000, file=sys.stderr, desc="compress", leave=False)

    def progress(frac: float, msg: str) -> None:
        if bar is not None:
            bar.n = int(1000 * frac)
            bar.set_postfix_str(msg, refresh=True)

    try:
        res = compress_clouds(ds, cfg, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    size = save_qaad(args.out, res.file)
    rep = res.report()
    rep["file_bytes"] = size
    rep["out"] = str(args.out)
    write_report(args.report, rep)
    print(f"{args.out}: {res.file.n_clouds} clouds x {res.file.config.n_points} points, {size} bytes; "
          f"compression ratio {res.compression_ratio:.1f}:1, EM-kD {res.emkd:.5g}, Chamfer {res.chamfer:.5g}, "
          f"{res.seconds:.1f} s")
    return 0
