"""`nrstudio bench` section "fusion": our non-rigid TSDF integration against open3d's rigid VoxelBlockGrid
integration of the same frames at the same voxel size, measured side by side in one run; the memory of a
fully allocated 2 m^3 volume at 5 mm; and, with an oracle (ground-truth) graph motion, the fusion loop's
frame rate and geometry / deformation errors on the bundled synthetic scene.

The scene is the bundled sample's (`fusion.synthetic.make_sample.SAMPLE_CONFIG`: a noisy 640x480 deforming
humanoid), rendered directly. Our integration uses a real graph motion: the graph is built over the first
frame's fused surface and each frame's node transforms are fitted to the true surface motion
(`fusion.pipeline.GroundTruthMotion`). Open3d integrates the same depth/color rigidly (identity pose),
which is the reference the issue's target compares against (non-rigid <= 2x open3d rigid).

fps_320 / fps_640 / geometry_error_mm / deformation_error_mm are the replay figures with the classical
tracker; fusion cannot import tracker/, so they are None here unless a caller passes an estimator factory to
`replay_figures` (app/ or tracker/ can); the same figures with the oracle motion are always reported with an
`_oracle` suffix.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable

import numpy as np

from fusion.frame import RGBDFrame
from fusion.motion import MotionEstimator


def scene_and_truth(name: str, n: int, width: int = 640, height: int = 480,
                    seed: int | None = None) -> tuple[Any, Any]:
    """The bundled sample's scene settings with the object `name` ("cloth", "cylinder", "humanoid"), n frames
    at width x height (its random motion drawn with `seed`; None: the sample's), and its ground truth
    (`fusion.pipeline.GroundTruth`, vertices per frame in the camera frame). Returns (scene, ground truth);
    frames are rendered on demand (`scene.render(i)`)."""
    from dataclasses import replace

    from fusion.pipeline import GroundTruth
    from fusion.synthetic.make_sample import SAMPLE_CONFIG
    from fusion.synthetic.scene import make_scene

    cfg = replace(SAMPLE_CONFIG, name=name, width=width, height=height, n_frames=max(n, 1))
    scene = make_scene(cfg if seed is None else replace(cfg, seed=int(seed)))
    gt = GroundTruth(np.stack([scene.vertices_at(i) for i in range(n)]), scene.mesh_at(0)[1])
    return scene, gt


def scene_frames(n: int, width: int = 640, height: int = 480) -> tuple[list[RGBDFrame], Any]:
    """The first `n` frames of the bundled synthetic sample scene at width x height, and its ground truth
    (`fusion.pipeline.GroundTruth`, vertices per frame in the camera frame)."""
    from fusion.synthetic.make_sample import SAMPLE_CONFIG

    scene, gt = scene_and_truth(SAMPLE_CONFIG.name, n, width, height)
    return [scene.render(i) for i in range(n)], gt


class _Open3dTSDF:
    """open3d.t VoxelBlockGrid rigid integration (tsdf, weight, color), CPU."""

    def __init__(self, voxel: float, trunc_voxels: float, depth_max: float, block_resolution: int = 8) -> None:
        import open3d as o3d
        import open3d.core as o3c

        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
        self.o3d, self.o3c = o3d, o3c
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)), voxel_size=voxel, block_resolution=block_resolution,
            block_count=100000, device=o3c.Device("CPU:0"))
        self.trunc = trunc_voxels
        self.depth_max = depth_max
        self.extrinsic = o3c.Tensor(np.eye(4), o3c.float64)

    def integrate(self, depth: np.ndarray, color: np.ndarray, k) -> None:
        """Fuse one frame (depth float32 metres, color float32 [0, 1]) at the identity pose."""
        o3d, o3c = self.o3d, self.o3c
        kt = o3c.Tensor(k.matrix, o3c.float64)
        d = o3d.t.geometry.Image(o3c.Tensor(depth))
        c = o3d.t.geometry.Image(o3c.Tensor(color))
        blocks = self.vbg.compute_unique_block_coordinates(d, kt, self.extrinsic, 1.0, self.depth_max,
                                                           trunc_voxel_multiplier=self.trunc)
        self.vbg.integrate(blocks, d, c, kt, kt, self.extrinsic, 1.0, self.depth_max, trunc_voxel_multiplier=self.trunc)

    def num_blocks(self) -> int:
        """Allocated blocks."""
        return int(self.vbg.hashmap().size())


def bench_integration(frames: list[RGBDFrame], gt: Any, voxel: float = 0.01, trunc_voxels: float = 4.0,
                      depth_max: float = 3.0, node_coverage: float = 0.05, repeats: int = 3) -> dict[str, Any]:
    """Per-frame integration time (ms) of our non-rigid volume with an oracle graph motion and of open3d's
    rigid VoxelBlockGrid on the same frames at the same voxel size, in alternating blocks of all frames so
    that both see the same machine load. Each frame is integrated `repeats` times by each (the first run
    allocates its blocks); the figures are the median over frames of each frame's best run
    (`*_all_runs`: the median of every run; `*_cpu_ms`: the median CPU time of the process over a run, all
    threads, which a loaded machine's scheduling does not inflate)."""
    from fusion.graph import build_graph
    from fusion.pipeline import GroundTruthMotion
    from fusion.tsdf import TSDFVolume, VolumeConfig

    cfg = VolumeConfig(voxel_size=voxel, trunc_voxels=trunc_voxels, depth_max=depth_max)
    f0 = frames[0]
    vol = TSDFVolume.from_frame(f0, cfg, backend="numba")
    vol.integrate(f0)
    pts, nrm, _ = vol.surface_points()
    graph = build_graph(pts, nrm, radius=node_coverage)
    oracle = GroundTruthMotion(gt, canonical_index=f0.index)
    motions = [oracle.motion_for(graph, f.index) for f in frames]
    o3 = _Open3dTSDF(voxel, trunc_voxels, depth_max)
    colors = [np.ascontiguousarray(f.color, np.float32) / 255.0 for f in frames]
    o3.integrate(f0.depth, colors[0], f0.intrinsics)
    vol.set_graph(graph)
    # warm-up (numba dispatch, open3d thread pool) on the first frame, not timed
    vol.integrate_warped(frames[1 % len(frames)], graph, motions[1 % len(frames)])
    n = len(frames) - 1
    best = {0: np.full(n, np.inf), 1: np.full(n, np.inf)}  # per frame: the best of `repeats` runs
    all_runs: dict[int, list[float]] = {0: [], 1: []}
    cpu_runs: dict[int, list[float]] = {0: [], 1: []}
    for rep in range(repeats):
        # block-wise (every frame by one, then every frame by the other; the order alternates): interleaving
        # frame by frame let one library's idle OpenMP threads, still spinning, slow the other down
        for which in ((0, 1) if rep % 2 else (1, 0)):
            for i, f in enumerate(frames[1:], start=1):
                t0, c0 = time.perf_counter(), time.process_time()
                if which == 0:
                    vol.integrate_warped(f, graph, motions[i])
                else:
                    o3.integrate(f.depth, colors[i], f.intrinsics)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                best[which][i - 1] = min(best[which][i - 1], dt)
                all_runs[which].append(dt)
                cpu_runs[which].append(dc)
    ours, ref = list(best[0]), list(best[1])
    ours_all, ref_all, ours_cpu, ref_cpu = all_runs[0], all_runs[1], cpu_runs[0], cpu_runs[1]
    ours_ms = 1e3 * float(np.median(ours))
    ref_ms = 1e3 * float(np.median(ref))
    cpu_ours = 1e3 * float(np.median(ours_cpu))
    cpu_ref = 1e3 * float(np.median(ref_cpu))
    k = f0.intrinsics
    return {
        "integrate_ms": ours_ms,
        "open3d_integrate_ms": ref_ms,
        "integrate_ratio": ours_ms / ref_ms if ref_ms > 0 else None,
        "integrate_ms_all_runs": 1e3 * float(np.median(ours_all)),
        "open3d_integrate_ms_all_runs": 1e3 * float(np.median(ref_all)),
        "integrate_cpu_ms": cpu_ours,
        "open3d_integrate_cpu_ms": cpu_ref,
        "integrate_ratio_cpu": cpu_ours / cpu_ref if cpu_ref > 0 else None,
        "integrate_threads": "all (both)",
        "integrate_frames": len(ours),
        "integrate_resolution": f"{k.width}x{k.height}",
        "integrate_voxel_mm": voxel * 1e3,
        "integrate_carve_px": cfg.carve_px if cfg.carving else 0.0,  # the mesh channel's silhouette carving
        "integrate_nodes": graph.num_nodes,
        "integrate_blocks": vol.num_blocks,
        "open3d_blocks": o3.num_blocks(),
    }


def bench_memory(quick: bool) -> dict[str, Any]:
    """Memory of a fully allocated 2 m^3 region at 5 mm voxels (every block of the region allocated, i.e. the
    worst case of a sparse volume): pool + index bytes, and the process's resident-memory growth."""
    from fusion.tsdf import TSDFVolume, VolumeConfig, estimate_bytes

    side = 2.0 ** (1.0 / 3.0)
    cfg = VolumeConfig(voxel_size=0.005)
    out: dict[str, Any] = {"memory_region_m3": 2.0, "memory_voxel_mm": 5.0}
    vol = TSDFVolume(cfg, np.zeros(3), np.full(3, side), backend="numba")
    n_blocks = int(np.prod(vol.dims))
    out["memory_blocks"] = n_blocks
    out["memory_estimate_gb"] = (estimate_bytes(n_blocks, vol.bs, cfg.mesh_channel) + vol.index.nbytes) / 2**30
    if quick:
        return out
    rss0 = _rss_bytes()
    vol.allocate_region(np.zeros(3), np.full(3, side))
    for a in vol.pool_arrays()[1:]:  # touch every page
        a[: vol.num_blocks] = 1
    out["memory_gb"] = vol.nbytes / 2**30
    rss1 = _rss_bytes()
    if rss0 and rss1:
        out["memory_rss_growth_gb"] = (rss1 - rss0) / 2**30
    del vol
    gc.collect()
    return out


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def replay_figures(make_estimator: Callable[[Any], MotionEstimator], n_frames: int,
                   sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 480)), voxel: float = 0.01,
                   suffix: str = "", warmup: int = 10) -> dict[str, Any]:
    """Replay the synthetic sample through `FusionPipeline` with the estimator `make_estimator(gt)` at each
    processing size: fps_<width> (frames / wall second over the whole loop, first frame included) and, from
    the largest size, geometry_error_mm and deformation_error_mm against the ground truth (also per size).
    A first, untimed replay of `warmup` frames at each size loads what the first frames of a process load
    (numba's compiled kernels from its cache, torch, OpenCV), which took more than a second of the first
    timed replay."""
    from fusion.pipeline import FusionConfig, FusionPipeline

    out: dict[str, Any] = {}
    frames, gt = scene_frames(n_frames, 640, 480)
    for w, h in sizes:
        cfg = FusionConfig(voxel_size=voxel, processing_size=(w, h))
        if warmup > 0:
            FusionPipeline(cfg, make_estimator(gt)).run(frames[:warmup])
        pipe = FusionPipeline(cfg, make_estimator(gt))
        rep = pipe.run(frames, gt)
        out[f"fps_{w}{suffix}"] = rep["fps"]
        out[f"stage_ms_{w}{suffix}"] = rep["stage_ms"]
        out[f"geometry_error_mm_{w}{suffix}"] = rep.get("geometry_error_mm")
        out[f"deformation_error_mm_{w}{suffix}"] = rep.get("deformation_error_mm")
        out[f"skipped_{w}{suffix}"] = rep["frames_skipped"]
    w = max(s[0] for s in sizes)
    out[f"geometry_error_mm{suffix}"] = out[f"geometry_error_mm_{w}{suffix}"]
    out[f"deformation_error_mm{suffix}"] = out[f"deformation_error_mm_{w}{suffix}"]
    return out


def run_bench(quick: bool) -> dict[str, Any]:
    """The "fusion" bench section (see the module docstring)."""
    from fusion.pipeline import GroundTruthMotion

    n = 8 if quick else 30
    out: dict[str, Any] = {}
    frames, gt = scene_frames(n, 640, 480)
    reps = 2 if quick else 3
    out.update(bench_integration(frames, gt, voxel=0.01, repeats=reps))
    frames_320 = [f.resized(320, 240) for f in frames]
    r320 = bench_integration(frames_320, gt, voxel=0.01, repeats=reps)
    for key in ("integrate_ms", "open3d_integrate_ms", "integrate_ratio", "integrate_cpu_ms", "open3d_integrate_cpu_ms",
                "integrate_ratio_cpu", "integrate_ms_all_runs", "open3d_integrate_ms_all_runs"):
        out[f"{key}_320"] = r320[key]
    del frames, frames_320
    out.update(bench_memory(quick))
    out.update({"fps_320": None, "fps_640": None, "geometry_error_mm": None, "deformation_error_mm": None})
    out.update(replay_figures(lambda g: GroundTruthMotion(g), n, suffix="_oracle"))
    return out


def scene_run(name: str, n_frames: int, make_estimator: Callable[[Any], MotionEstimator],
              size: tuple[int, int] = (320, 240), voxel: float = 0.01, seed: int | None = None,
              fusion: dict[str, Any] | None = None) -> dict[str, Any]:
    """One synthetic scene (the bundled sample's settings with `name` swapped in: "cloth", "cylinder",
    "humanoid"; `seed`: another draw of its random motion), n_frames rendered at 640x480 and fused at `size`
    with `make_estimator(gt)` (`fusion`: other `FusionConfig` settings).

    Returns geometry_error_mm / deformation_error_mm (and deformation_error_visible_mm: over the vertices each
    frame sees) against the ground truth, frames skipped, fps (wall),
    the graph's node count after the first and the last frame (`nodes_first`, `nodes`: phantom surface fused
    from misaligned depth makes the graph grow), `live_coverage` (fraction of the last frame's observed depth
    within 2 cm of the tracked model: a tracker that lost the object leaves it uncovered) and `finite`."""
    from fusion.pipeline import FusionConfig, FusionPipeline

    scene, gt = scene_and_truth(name, n_frames, seed=seed)
    pipe = FusionPipeline(FusionConfig(voxel_size=voxel, processing_size=size, **(fusion or {})), make_estimator(gt))
    seen = {"nodes_first": None, "finite": True, "last": None}

    def frames():  # rendered one at a time: 300 frames at 640x480 would not fit comfortably in memory
        for i in range(n_frames):
            seen["last"] = scene.render(i)
            yield seen["last"]

    def after_frame(_: int) -> None:
        if seen["nodes_first"] is None and pipe.graph.num_nodes:
            seen["nodes_first"] = pipe.graph.num_nodes
        seen["finite"] &= bool(np.isfinite(pipe.motion.rotations).all() and np.isfinite(pipe.motion.translations).all())

    rep = pipe.run(frames(), groundtruth=gt, progress=after_frame)
    nodes_first, finite, last = seen["nodes_first"], seen["finite"], seen["last"]
    cover = live_depth_coverage(pipe, last) if last is not None else None
    return {"frames": n_frames, "fps": rep["fps"], "skipped": rep["frames_skipped"],
            "geometry_error_mm": rep.get("geometry_error_mm"), "deformation_error_mm": rep.get("deformation_error_mm"),
            "deformation_error_visible_mm": rep.get("deformation_error_visible_mm"), "nodes_first": nodes_first,
            "nodes": pipe.graph.num_nodes, "live_coverage": cover, "finite": finite}


def live_depth_coverage(pipe: Any, frame: RGBDFrame, tolerance: float = 0.02) -> float | None:
    """Fraction of `frame`'s observed depth pixels (after the pipeline's preprocessing) within `tolerance`
    metres of the pipeline's model samples warped by its current motion; None without a model or depth.
    A tracker that lost part of the object leaves that part of the live depth uncovered."""
    from scipy.spatial import cKDTree

    from fusion.warp import warp_points

    if pipe.model is None or pipe.graph.num_nodes == 0:
        return None
    f = pipe._preprocess(frame)
    m = pipe.model
    ok = m["anchors"][:, 0] >= 0
    live = warp_points(m["points"][ok], m["anchors"][ok], m["weights"][ok], pipe.graph.nodes,
                       pipe.motion.rotations, pipe.motion.translations)
    k = f.intrinsics
    v, u = np.nonzero(f.depth > 0)
    if len(v) == 0 or len(live) == 0:
        return None
    z = f.depth[v, u]
    obs = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], 1)
    return float(np.mean(cKDTree(live).query(obs)[0] < tolerance))
