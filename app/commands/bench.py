"""`nrstudio bench [--report JSON] [--only SECTION ...]`: every benchmark section, side by side.

Each section is a function `run_bench(quick: bool) -> dict` registered in SECTIONS. A section measures
our code and its reference (open3d, scipy, a baseline) in the same process and returns figures and
ratios; the command prints them as a table and writes them to --report.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

SECTIONS: dict[str, tuple[str, str]] = {
    # section: (module, issue that brings it)
    "playback": ("fusion.bench", "#2 foundation"),
    "fusion": ("app.bench_fusion", "#3 fusion core"),
    "tracker": ("tracker.bench", "#4 neural tracker"),
    "qaad": ("models.qaad.bench", "#6 NeuralQAAD"),
    "lpdc": ("models.lpdc.bench", "#7 LPDC"),
    "featmatch": ("models.featmatch.bench", "#8 feature matching"),
    "diffumatch": ("models.diffumatch.bench", "#9 DiffuMatch"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio bench`."""
    p.add_argument("--only", nargs="+", choices=sorted(SECTIONS), default=None, help="run only these sections")
    p.add_argument("--quick", action="store_true", help="smaller problem sizes (smoke test of the benchmarks)")
    p.add_argument("--report", type=Path, default=None, help="write all figures as JSON")


def _print_section(name: str, figures: dict, indent: str = "  ") -> None:
    for k, v in figures.items():
        if isinstance(v, dict):
            print(f"{indent}{k}:")
            _print_section(name, v, indent + "  ")
        elif isinstance(v, float):
            print(f"{indent}{k:<28s} {v:12.4g}")
        else:
            print(f"{indent}{k:<28s} {v!s:>12s}")


def run(args: argparse.Namespace) -> int:
    """Run the sections that are available and print / write their figures."""
    from app.report import write_report

    report: dict = {"sections_missing": {}}
    names = args.only or list(SECTIONS)
    for name in names:
        module, issue = SECTIONS[name]
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                report["sections_missing"][name] = f"lands with issue {issue}"
                continue
            raise
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        figures = mod.run_bench(quick=args.quick)
        figures["bench_seconds"] = time.perf_counter() - t0
        report[name] = figures
        _print_section(name, figures)
        sys.stdout.flush()
    for name, why in report["sections_missing"].items():
        print(f"[{name}] not available yet: {why}")
    write_report(args.report, report)
    return 0
