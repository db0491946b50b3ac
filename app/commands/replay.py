"""`nrstudio replay REC`: a recording (.bag / .db3 / image folder / synthetic:NAME) through the non-rigid
fusion pipeline, with mesh export and a JSON report.

Ground truth: when REC has a sidecar `<name>.gt.npz` (synthetic recordings written by
`fusion.synthetic.make_sample`) or `--gt FILE` is given, the report adds geometry_error_mm and
deformation_error_mm.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

MESH_FORMATS = (".ply", ".obj", ".glb", ".gltf")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got '{text}'") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got '{text}'")
    return w, h


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of `nrstudio replay`."""
    from app.trackers import FEATURES

    p.add_argument("recording", help="recording (.bag/.db3), image folder, or synthetic:NAME")
    p.add_argument("--tracker", choices=["classical", "neural"], default="classical")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--features", choices=FEATURES, default="none",
                   help="classical tracker: sparse keyframe feature matches against tangential drift "
                        "(helps well-textured surfaces; off by default, see docs/dev/tracker_experiments.md)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--voxel-size", type=float, default=0.01, help="TSDF voxel edge in metres (default 0.01)")
    p.add_argument("--trunc", type=float, default=4.0, metavar="VOXELS",
                   help="truncation band the tracker sees, in voxels (default 4)")
    p.add_argument("--mesh-trunc", type=float, default=2.0, metavar="VOXELS",
                   help="truncation band the mesh is extracted from, in voxels (default 2; 0: the tracker's)")
    p.add_argument("--carve", type=float, default=2.0, metavar="PX",
                   help="silhouette carving of the mesh channel: pixels without depth within PX of the object's "
                        "silhouette mark free space beside it, closing surface seen edge-on (default 2; 0: off)")
    p.add_argument("--processing-size", type=_size, default=None, metavar="WxH",
                   help="resize frames to WxH before processing (e.g. 320x240)")
    p.add_argument("--depth-max", type=float, default=3.0, help="ignore depth beyond this, metres")
    p.add_argument("--node-coverage", type=float, default=0.05, help="graph node radius, metres")
    p.add_argument("--export", type=Path, default=None, help="write the canonical mesh (.ply/.obj/.glb)")
    p.add_argument("--export-live", type=Path, default=None, help="write the live warped mesh of the last frame")
    p.add_argument("--export-sequence", type=Path, default=None, metavar="DIR",
                   help="write the warped-mesh sequence (constant connectivity), one PLY per frame")
    p.add_argument("--gt", type=Path, default=None, help="ground-truth sidecar (.gt.npz); default: REC's own")
    p.add_argument("--report", type=Path, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_mesh_path(path: Path | None) -> None:
    from fusion.errors import InputError

    if path is not None and path.suffix.lower() not in MESH_FORMATS:
        raise InputError(f"{path}: unknown mesh format '{path.suffix}' (use one of {', '.join(MESH_FORMATS)})")


def load_groundtruth_for(recording: str, explicit: Path | None) -> Any:
    """The ground truth of a recording: `explicit` if given, else its `.gt.npz` sidecar if present, else None."""
    from fusion.errors import InputError
    from fusion.synthetic.groundtruth import groundtruth_path, load_groundtruth

    if explicit is not None:
        if not explicit.exists():
            raise InputError(f"{explicit}: ground-truth file not found")
        return load_groundtruth(explicit)
    if recording.startswith("synthetic:"):
        return None
    side = groundtruth_path(recording)
    return load_groundtruth(side) if side.exists() else None


def replay(recording: str, *, tracker: str = "classical", device: str = "auto", max_frames: int | None = None,
           voxel_size: float = 0.01, processing_size: tuple[int, int] | None = None, depth_max: float = 3.0,
           node_coverage: float = 0.05, gt_path: Path | None = None, sequence: bool = False,
           progress: bool = True, trunc_voxels: float = 4.0, mesh_trunc_voxels: float = 2.0,
           features: str = "none", carve_px: float = 2.0) -> tuple[Any, dict]:
    """Run the fusion pipeline over a recording (truncations in voxels: the tracking channel's and the mesh
    channel's, see `fusion.tsdf.volume`; carve_px: the mesh channel's silhouette carving in pixels; features:
    the classical tracker's keyframe features, see `app.trackers.make_tracker`). Returns (pipeline, report
    dict)."""
    from app.trackers import make_tracker, resolve_device
    from fusion.errors import InputError
    from fusion.pipeline import FusionConfig, FusionPipeline
    from fusion.sources import open_source

    if voxel_size <= 0:
        raise InputError(f"--voxel-size must be positive, got {voxel_size}")
    dev = resolve_device(device)
    gt = load_groundtruth_for(recording, gt_path)
    cfg = FusionConfig(voxel_size=voxel_size, trunc_voxels=trunc_voxels, mesh_trunc_voxels=mesh_trunc_voxels,
                       carve_px=carve_px, processing_size=processing_size, depth_max=depth_max,
                       node_coverage=node_coverage, max_frames=max_frames, device=dev, freeze_sequence_after=1 if sequence else None)
    est = make_tracker(tracker, dev, features)
    pipe = FusionPipeline(cfg, est)
    t0 = time.perf_counter()
    with open_source(recording) as src:
        total = src.length if max_frames is None else min(max_frames, src.length or max_frames)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frame", desc="fusing", file=sys.stderr, leave=False)
        rep = pipe.run(src, groundtruth=gt, progress=(lambda i: bar.update(1)) if bar else None)
        if bar:
            bar.close()
    rep["wall_seconds"] = time.perf_counter() - t0
    rep["recording"] = str(recording)
    rep["ground_truth"] = gt is not None
    rep["features"] = features
    return pipe, rep


def _export(pipe: Any, args: argparse.Namespace, rep: dict) -> None:
    from fusion.export import export_sequence

    if args.export is not None:
        pipe.export(args.export, "canonical")
        rep["export"] = str(args.export)
        print(f"canonical mesh -> {args.export}")
    if args.export_live is not None:
        pipe.export(args.export_live, "live")
        rep["export_live"] = str(args.export_live)
        print(f"live mesh -> {args.export_live}")
    if args.export_sequence is not None:
        if pipe.sequence is None:
            rep["export_sequence"] = None
        else:
            files = export_sequence(args.export_sequence, pipe.sequence)
            rep["export_sequence"] = {"folder": str(args.export_sequence), "files": len(files)}
            print(f"{len(files)} warped meshes -> {args.export_sequence}")


def summary_line(rep: dict) -> str:
    """One human line of the main figures of a replay report."""
    parts = [f"{rep['frames_fused']}/{rep['frames']} frames fused"]
    if rep.get("fps"):
        parts.append(f"{rep['fps']:.1f} frames/s")
    parts.append(f"{rep['nodes']} nodes")
    parts.append(f"mesh {rep['mesh']['vertices']} v / {rep['mesh']['faces']} f")
    if rep.get("geometry_error_mm") is not None:
        parts.append(f"geometry error {rep['geometry_error_mm']:.2f} mm")
    if rep.get("deformation_error_mm") is not None:
        vis = rep.get("deformation_error_visible_mm")
        parts.append(f"deformation error {rep['deformation_error_mm']:.2f} mm"
                     + (f" ({vis:.2f} mm where the frame sees the surface)" if vis is not None else ""))
    if rep.get("frames_skipped"):
        parts.append(f"skipped {rep['frames_skipped']} {rep['skipped']}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Replay, export, report."""
    from app.report import write_report

    for p in (args.export, args.export_live):
        _check_mesh_path(p)
    pipe, rep = replay(args.recording, tracker=args.tracker, device=args.device, max_frames=args.max_frames,
                       voxel_size=args.voxel_size, processing_size=args.processing_size, depth_max=args.depth_max,
                       node_coverage=args.node_coverage, gt_path=args.gt,
                       sequence=args.export_sequence is not None, progress=not args.quiet,
                       trunc_voxels=args.trunc, mesh_trunc_voxels=args.mesh_trunc, features=args.features,
                       carve_px=args.carve)
    _export(pipe, args, rep)
    print(summary_line(rep))
    write_report(args.report, rep)
    return 0


def fuse_for_demo(recording: Path, out: Path, max_frames: int | None = None) -> dict:
    """The demo's fusion part: replay at 320x240 with the classical tracker, write demo_mesh.ply and a
    rendered preview demo_preview.png into `out`; returns the replay report."""
    from fusion.preview import render_mesh_views, save_png

    pipe, rep = replay(str(recording), processing_size=(320, 240), max_frames=max_frames)
    mesh_path = out / "demo_mesh.ply"
    mesh = pipe.export(mesh_path, "canonical")
    preview = out / "demo_preview.png"
    save_png(str(preview), render_mesh_views(mesh.vertices, mesh.faces, mesh.colors))
    rep["mesh_file"] = str(mesh_path)
    rep["preview"] = str(preview)
    print(summary_line(rep))
    print(f"mesh -> {mesh_path}, preview -> {preview}")
    return rep
