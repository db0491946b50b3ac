"""Rendering speed of the synthetic scenes: `python -m fusion.synthetic.bench [--quick]`.

`run_bench(quick)` returns, per object, the milliseconds per 640x480 frame (after JIT) of a whole clean
render and of its parts (vertex animation, normals, rasterisation, shading), of a whole noisy render
(render + sensor noise), of the ground-truth scene flow, and the rasteriser's speed-up over the numpy
reference on a small image. `*_ms` is wall-clock time, `*_cpu_ms` this process's CPU time (the kernels
are single-threaded, so it is the wall time of an unloaded machine).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Callable

import numpy as np

from fusion.synthetic.raster import rasterize, rasterize_reference, shade, vertex_normals
from fusion.synthetic.scene import SceneConfig, make_scene


def _ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall-clock milliseconds of fn() over `repeat` calls, after one warm-up call."""
    fn()  # warm-up (JIT, caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def _cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median process CPU milliseconds of fn() (robust to other processes sharing the cores)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return 1000.0 * float(np.median(times))


def run_bench(quick: bool = False) -> dict:
    """Figures (milliseconds, median of repeats) for each synthetic object at 640x480."""
    repeat = 3 if quick else 10
    out: dict = {"resolution": "640x480"}
    for name in ("cloth", "cylinder", "humanoid"):
        sc = make_scene(SceneConfig(name, n_frames=1000, noise=True))
        k = sc.intrinsics
        frame_idx = iter(range(1, 1000))

        def render_clean() -> None:
            sc._cache.clear()
            sc.layers(next(frame_idx))

        def render_noisy() -> None:
            sc._cache.clear()
            sc.render(next(frame_idx))

        v = sc.vertices_at(5)
        depth, tri, bary = rasterize(v, sc.faces, k)
        normals = vertex_normals(v, sc.faces)
        light = np.asarray(sc.cfg.light)
        fig = {
            "faces": int(len(sc.faces)),
            "object_pixels": int((tri >= 0).sum()),
            "render_clean_ms": _ms(render_clean, repeat),
            "render_clean_cpu_ms": _cpu_ms(render_clean, repeat),
            "render_noisy_ms": _ms(render_noisy, repeat),
            "render_noisy_cpu_ms": _cpu_ms(render_noisy, repeat),
            "vertices_ms": _ms(lambda: sc.vertices_at(5), repeat),
            "normals_ms": _ms(lambda: vertex_normals(v, sc.faces), repeat),
            "rasterize_ms": _ms(lambda: rasterize(v, sc.faces, k), repeat),
            "shade_ms": _ms(lambda: shade(tri, bary, sc.faces, sc.uv, normals, sc.face_mat, sc.mats,
                                          sc.texture_table, k, light), repeat),
            "scene_flow_ms": _ms(lambda: sc.scene_flow(7, 30), repeat),
        }
        out[name] = fig
    small = make_scene(SceneConfig("humanoid", width=160, height=120))
    v = small.vertices_at(3)
    t_ref = _ms(lambda: rasterize_reference(v, small.faces, small.intrinsics), 1)
    t_nb = _ms(lambda: rasterize(v, small.faces, small.intrinsics), repeat)
    out["rasterize_160x120_reference_ms"] = t_ref
    out["rasterize_160x120_numba_ms"] = t_nb
    out["rasterize_speedup_vs_reference"] = t_ref / max(t_nb, 1e-6)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    args = p.parse_args(argv)
    print(json.dumps(run_bench(args.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
