"""`nrstudio bench --only lpdc`: LPDC vs the ODE baseline vs nearest-neighbour tracking.

On the real samba sequence (../shared/data/sequences/samba, frames 0..16 = mesh_0000 .. mesh_0080,
the evaluation window; the shipped weights never saw these frames, they were trained on frames
17..34 and on horse-gallop plus procedural shapes): 300 points per frame with noise 0.001 (unit scale),
correspondence_l2 / chamfer / iou of the three methods, and the inference times of LPDC and the ODE
baseline (the fastest of `repeats` runs, CPU threads as set by the caller). Also a procedural
humanoid (seed 123456; training draws its shapes from other random streams), with evenly and with
unevenly sampled frame times, for a second, synthetic data point.
"""
from __future__ import annotations

import numpy as np
import torch

from models.lpdc.data import MeshSequence, load_mesh_sequence, procedural_mesh_sequence
from models.lpdc.pipeline import RunOptions, prepare_meshes, run_prepared

SAMBA_WINDOW = (0, 17)


def _summary(report: dict) -> dict:
    keep = ("correspondence_l2", "chamfer", "iou", "inference_s", "mesh_s", "motion_s", "inference_cpu_s",
            "mesh_cpu_s", "motion_cpu_s", "n_vertices")
    out = {"lpdc": {k: report.get(k) for k in keep}}
    for name, r in report.get("baselines", {}).items():
        out[name] = {k: r.get(k) for k in keep if k in r}
    return out


def _same_mesh_ode(prep, rec, opts: RunOptions) -> dict:
    """The ODE baseline's motion on LPDC's own t0 mesh: motion timings and accuracy on equal vertices."""
    from models.lpdc.generation import reconstruct
    from models.lpdc.pipeline import _figures
    from models.lpdc.training import default_weights, load_checkpoint, ode_weights_for

    path = ode_weights_for(opts.weights or default_weights())
    if not path.is_file():
        return {}
    ode, ocfg, _ = load_checkpoint(path, "cpu")
    best = None
    for _ in range(max(1, opts.repeats)):
        r = reconstruct(ode, prep.points, prep.times, ocfg.generation, "cpu", t0_mesh=(rec.vertices[0], rec.faces))
        best = r if best is None or r.timings["motion_cpu_s"] < best.timings["motion_cpu_s"] else best
    fig = _figures(best.vertices, best.faces, prep, opts, best.timings)
    keep = ("correspondence_l2", "chamfer", "iou", "motion_s", "motion_cpu_s", "n_vertices")
    return {k: fig.get(k) for k in keep}


def bench_sequence(seq: MeshSequence, opts: RunOptions, times: np.ndarray | None = None) -> dict:
    """All three methods on one constant-connectivity window (world units; frame times [T], default
    even) -> figures dict. Also the ODE's motion on LPDC's t0 mesh (`ode_on_lpdc_mesh`), so that the
    two motion models are compared on the same vertices."""
    prep = prepare_meshes(seq, opts, times=times)
    report, rec = run_prepared(prep, None, opts)
    fig = _summary(report)
    same = _same_mesh_ode(prep, rec, opts)
    if same:
        fig["ode_on_lpdc_mesh"] = same
        fig["motion_cpu_speedup_same_mesh"] = same["motion_cpu_s"] / max(report["motion_cpu_s"], 1e-9)
    fig["inference_s"] = report["inference_s"]
    if "ode" in report.get("baselines", {}):
        ode = report["baselines"]["ode"]
        fig["ode_inference_s"] = ode["inference_s"]
        for k in ("speedup_vs_ode", "motion_speedup_vs_ode", "cpu_speedup_vs_ode", "motion_cpu_speedup_vs_ode"):
            fig[k] = report[k]
    fig["notes"] = report.get("notes", [])
    return fig


def run_bench(quick: bool = False) -> dict:
    """The `lpdc` bench section (see module docstring). quick: fewer evaluation samples, 1 timing run.

    Runs with one torch thread (restored afterwards): on a shared CPU, OpenMP threads that wait for each
    other at barriers make multi-threaded timings erratic.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_bench(quick)
    finally:
        torch.set_num_threads(threads)


def _run_bench(quick: bool) -> dict:
    from fusion.paths import shared_data_dir
    from models.lpdc.training import default_weights

    if not default_weights().is_file():
        return {"error": f"no shipped weights at {default_weights()} (run `nrstudio train lpdc`)"}
    n_eval = 5_000 if quick else 30_000
    opts = RunOptions(frames=17, points=300, noise=0.001, seed=0, device="cpu", repeats=1 if quick else 3,
                      n_chamfer=n_eval, n_tracks=n_eval, n_iou=n_eval)
    out: dict = {"torch_threads": torch.get_num_threads()}
    samba = shared_data_dir() / "sequences" / "samba"
    if samba.is_dir():
        seq = load_mesh_sequence(samba)
        a, b = SAMBA_WINDOW
        win = MeshSequence(seq.vertices[a:b], seq.faces, seq.names[a:b])
        fig = bench_sequence(win, opts)
        out["inference_s"] = fig.pop("inference_s")
        out["ode_inference_s"] = fig.pop("ode_inference_s", None)
        for k in ("speedup_vs_ode", "motion_speedup_vs_ode", "cpu_speedup_vs_ode", "motion_cpu_speedup_vs_ode",
                  "motion_cpu_speedup_same_mesh"):
            out[k] = fig.pop(k, None)
        out["samba"] = fig
        out["samba"]["frames"] = f"{seq.names[a]}..{seq.names[b - 1]}"
        c = {k: v["correspondence_l2"] for k, v in fig.items()
             if isinstance(v, dict) and "correspondence_l2" in v and k != "ode_on_lpdc_mesh"}
        out["samba_best_correspondence"] = min(c, key=c.get) if c else None
    else:
        out["samba"] = f"skipped: {samba} not found"
    if not quick or not samba.is_dir():
        for name, uneven in (("procedural_humanoid", False), ("procedural_humanoid_uneven_times", True)):
            seq, times = procedural_mesh_sequence("humanoid", 17, seed=123_456, resolution=64, uneven=uneven)
            fig = bench_sequence(seq, opts, times=times)
            if "inference_s" not in out:
                out["inference_s"] = fig["inference_s"]
                out["ode_inference_s"] = fig.get("ode_inference_s")
            out[name] = {k: v for k, v in fig.items() if isinstance(v, dict)}
    return out


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run_bench(quick="--quick" in sys.argv), indent=2, default=float))
    np.seterr(all="ignore")
