"""The `nrstudio` command line: one sub-command per entry of the CLI contract (../shared/ARCHITECTURE.md).

Each command lives in its own module `app.commands.<module>` exposing

    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int

Modules import heavy packages (torch, open3d, Qt) inside `run`, so `nrstudio --help` stays fast.
User mistakes raise `fusion.errors.InputError` and end as a one-line message with exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from dataclasses import dataclass

from fusion.errors import InputError, NRStudioError


@dataclass(frozen=True)
class Command:
    """One CLI command: its name, one-line help, implementing module (None until its issue lands)."""

    name: str
    help: str
    module: str | None
    issue: str


COMMANDS: list[Command] = [
    Command("demo", "bundled recording -> mesh + report + preview image", "app.commands.demo", "#2, #3"),
    Command("replay", "replay a recording (.bag/.db3/folder) through the fusion pipeline", "app.commands.replay", "#3"),
    Command("record", "record from a connected RealSense to .db3", "app.commands.record", "#2 foundation"),
    Command("devices", "list connected RealSense devices", "app.commands.devices", "#2 foundation"),
    Command("gui", "the desktop app", "app.commands.gui", "#5 desktop app"),
    Command("eval-tracking", "EPE 3D / graph error on a DeepDeform-layout folder", "app.commands.eval_tracking", "#4 neural tracker"),
    Command("lpdc", "LPDC 4D reconstruction of a point-cloud / mesh sequence", "app.commands.lpdc", "#7 LPDC"),
    Command("deform", "implicit feature-matching deformation of SRC toward TGT", "app.commands.deform", "#8 feature matching"),
    Command("match", "DiffuMatch shape matching SRC -> TGT", "app.commands.match", "#9 DiffuMatch"),
    Command("compress", "NeuralQAAD compression of point clouds", "app.commands.compress", "#6 NeuralQAAD"),
    Command("decompress", "decompress a .qaad file to PLY clouds", "app.commands.decompress", "#6 NeuralQAAD"),
    Command("train", "train a learned component (tracker, lpdc, featmatch, diffumatch)", "app.commands.train", "#4, #7, #8, #9"),
    Command("bench", "benchmarks with reference runs side by side", "app.commands.bench", "#2"),
    Command("inspect", "print what a recording or folder holds (streams, intrinsics, frames)", "app.commands.inspect", "#2 foundation"),
]


def _not_available(cmd: Command) -> int:
    print(f"nrstudio {cmd.name}: not available yet: it lands with issue {cmd.issue}", file=sys.stderr)
    return 4


def _broken(cmd: Command, err: ImportError) -> int:
    print(f"nrstudio {cmd.name}: not available in this installation ({type(err).__name__}: {err})", file=sys.stderr)
    return 4


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every command of the contract."""
    parser = argparse.ArgumentParser(
        prog="nrstudio",
        description="Non-rigid 3D reconstruction from a single RGB-D camera.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version="nrstudio 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.module is None:
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(_run=lambda args, c=cmd: _not_available(c))
            continue
        try:
            mod = importlib.import_module(cmd.module)
        except ImportError as e:  # a broken or missing module must not take the other commands down
            p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            p.set_defaults(_run=lambda args, c=cmd, err=e: _broken(c, err))
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `nrstudio` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except InputError as e:
        if args.debug:
            traceback.print_exc()
        print(f"nrstudio {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except NRStudioError as e:
        if args.debug:
            traceback.print_exc()
        print(f"nrstudio {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"nrstudio {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal bug: one line, the traceback on --debug
        if args.debug:
            traceback.print_exc()
        print(
            f"nrstudio {args.command}: internal error: {type(e).__name__}: {e} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
