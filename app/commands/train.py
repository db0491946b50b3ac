"""`nrstudio train {tracker,lpdc,featmatch,diffumatch} [--preset tiny|small|full] [--out CKPT]`.

Each learned component registers a trainer function `train_cli(preset, out, device, extra) -> dict`
in TRAINERS (module path, function name); the returned dict is the training summary (losses, steps,
seconds) and goes to --report.
"""
from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path

from fusion.errors import NotAvailableError

TRAINERS: dict[str, tuple[str, str, str]] = {
    # name: (module, function, issue that brings it)
    "tracker": ("tracker.training", "train_cli", "#4 neural tracker"),
    "lpdc": ("models.lpdc.training", "train_cli", "#7 LPDC"),
    "featmatch": ("models.featmatch.training", "train_cli", "#8 feature matching"),
    "diffumatch": ("models.diffumatch.training", "train_cli", "#9 DiffuMatch"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio train`."""
    p.add_argument("what", choices=sorted(TRAINERS), help="which learned component to train")
    p.add_argument("--preset", choices=["tiny", "small", "full"], default="small", help="size of the run")
    p.add_argument("--out", type=Path, default=None, help="checkpoint path (default: the method's default)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", type=Path, default=None, help="write the training summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the component's trainer."""
    from app.report import write_report

    module, func, issue = TRAINERS[args.what]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            raise NotAvailableError(f"training {args.what} is not available yet: it lands with issue {issue}") from e
        raise
    summary = getattr(mod, func)(preset=args.preset, out=args.out, device=args.device, steps=args.steps, seed=args.seed)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes the report
        write_report(args.report, summary)
    return 0
