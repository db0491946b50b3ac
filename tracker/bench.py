"""`nrstudio bench` section "tracker": the neural tracker against the classical one, side by side.

- epe_neural_mm / epe_classical_mm (and identity, oracle): EPE 3D on held-out synthetic large-motion pairs
  at 320x240 (scene seeds >= tracker.data.HELDOUT_SEED_BASE, never drawn in training; speed 2.5-5, frame gap
  8-16: tens of pixels of flow, over 100 px at 640x480), each tracker from the identity; graph errors too;
  epe_ratio = neural / classical (target <= 0.7);
- corr_ms_640 / corr_ms_320 / corr_ms_160: Phi + Psi on one pair at that size, CPU, 2 torch threads
  (median wall time), and the same with 1 thread (`_1thread`); corr_cpu_ms_*: the CPU time per call
  (process time, all threads), since wall time on a shared, loaded machine includes waiting for a core
  and two OpenMP threads spin against each other there. The tracker runs Phi + Psi at 160x120;
- fps_320_neural / fps_cpu_320_neural: replay of the bundled synthetic sample through the fusion loop with
  the neural tracker at 320x240 (one keyframe: the interval is longer than the replay), wall and CPU-time
  frame rates, and its geometry / deformation errors; the same for the classical tracker beside it;
- seq017: the real DeepDeform pair 300 -> 600 (no ground-truth flow): mean depth residual of the warped
  source against the target before tracking and after neural / classical tracking.

`python -m tracker.bench --overlay docs/tracker_seq017_overlay.png` also writes the seq017 overlay image.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tracker.data import SyntheticPairConfig, build_pool

#: the held-out large-motion pairs of the bench
HELDOUT = replace(SyntheticPairConfig(width=320, height=240, speed=(2.5, 5.0), gap=(8, 16), background_prob=0.5)
                  .heldout())


def heldout_pairs(n: int, seed: int = 2024):
    """n held-out large-motion synthetic pairs (PairSample list), deterministic for a seed."""
    return build_pool(HELDOUT, n, seed=seed)


def epe_figures(n_pairs: int, device: str = "cpu", weights: str | None = None) -> dict[str, Any]:
    """EPE 3D / graph error (mm) of the neural, classical, identity and oracle trackers on held-out pairs."""
    from tracker.evaluation import evaluate_pairs, make_pair_tracker

    pairs = heldout_pairs(n_pairs)
    out: dict[str, Any] = {"pairs": n_pairs, "size": [HELDOUT.width, HELDOUT.height],
                           "flow_px_mean": float(np.mean([p.meta["flow_px_mean"] for p in pairs]))}
    for name in ("neural", "classical", "identity", "oracle"):
        rep = evaluate_pairs(pairs, make_pair_tracker(name, device, weights))
        out[f"epe_{name}_mm"] = rep["epe3d_mm"]
        out[f"graph_error_{name}_mm"] = rep["graph_error_mm"]
        out[f"failed_{name}"] = rep["failed"]
        out[f"seconds_per_pair_{name}"] = rep["seconds"] / max(1, rep["pairs"])
    if out["epe_classical_mm"]:
        out["epe_ratio"] = out["epe_neural_mm"] / out["epe_classical_mm"]
    return out


def corr_timing(width: int, height: int, threads: int = 2, repeats: int = 5, weights: str | None = None) -> dict:
    """Phi + Psi on one pair at width x height on the CPU with `threads` torch threads: median wall ms and
    median CPU ms (process time) per call."""
    from tracker.networks import NNRTNets, WeightNet, load_checkpoint
    from tracker.training import default_weights_path

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        p = Path(weights) if weights else default_weights_path()
        nets = load_checkpoint(p)[0] if p.is_file() else NNRTNets().eval()
        g = torch.Generator().manual_seed(0)
        rgb = torch.rand(2, 3, height, width, generator=g)
        pts = torch.rand(2, 3, height, width, generator=g) + torch.tensor([0, 0, 1.0]).view(1, 3, 1, 1)
        wall, cpu = [], []
        with torch.no_grad():
            for i in range(repeats + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                out = nets.phi(rgb[:1], rgb[1:], pts[:1, 2:3], pts[1:, 2:3])
                nets.psi(WeightNet.inputs(rgb[:1], pts[:1], rgb[1:], pts[1:], out.flow), out.features)
                if i:  # the first call warms up
                    wall.append(1e3 * (time.perf_counter() - t0))
                    cpu.append(1e3 * (time.process_time() - c0))
        return {"wall_ms": statistics.median(wall), "cpu_ms": statistics.median(cpu), "threads": threads,
                "phi_parameters": sum(p.numel() for p in nets.phi.parameters()),
                "psi_parameters": sum(p.numel() for p in nets.psi.parameters())}
    finally:
        torch.set_num_threads(old)


def replay_tracker(name: str, n_frames: int, weights: str | None = None) -> dict[str, Any]:
    """The bundled synthetic sample through the fusion loop with the "neural" or "classical" tracker at
    320x240: fps (wall), fps_cpu (frames per second of this process's CPU time, which does not count the
    time spent waiting for a core on a shared machine), stage times, geometry / deformation errors."""
    from fusion.bench_fusion import replay_figures
    from tracker.classical import ClassicalTracker
    from tracker.neural import NeuralTracker, NeuralTrackerConfig

    def make(gt):
        if name == "neural":
            return NeuralTracker(NeuralTrackerConfig(weights=weights, device="cpu"))
        return ClassicalTracker()

    c0 = time.process_time()
    out = replay_figures(make, n_frames, sizes=((320, 240),), suffix=f"_{name}")
    out[f"fps_cpu_320_{name}"] = n_frames / max(time.process_time() - c0, 1e-9)
    return out


def seq017_figures(overlay: str | Path | None = None, weights: str | None = None) -> dict[str, Any] | None:
    """Depth residual (mm) of the real DeepDeform seq017 pair 300 -> 600 before and after tracking (None when
    the shared data is absent); writes the overlay PNG when `overlay` is given."""
    from fusion.paths import shared_data_dir
    from tracker.data import find_pairs, load_pair
    from tracker.evaluation import depth_residual, make_pair_tracker, overlay_image, pair_model

    seq = shared_data_dir() / "deepdeform" / "test" / "seq017"
    if not seq.is_dir():
        return None
    pairs = [p for p in find_pairs(seq, with_flow_only=False) if (p.src, p.tgt) == (300, 600)]
    if not pairs:
        return None
    s = load_pair(pairs[0])
    model = pair_model(s)
    out: dict[str, Any] = {"graph_nodes": s.graph.num_nodes, "points": int(len(model.points))}
    motions = {"before (identity)": make_pair_tracker("identity")(s, model)}
    for name in ("neural", "classical"):
        t0 = time.perf_counter()
        m = make_pair_tracker(name, "cpu", weights)(s, model)
        out[f"seconds_{name}"] = time.perf_counter() - t0
        out[f"{name}_failed"] = m is None
        motions[f"after {name}"] = m if m is not None else motions["before (identity)"]
    for key, m in motions.items():
        r = depth_residual(s, m, model, max_residual=0.05)
        tag = key.split(" ")[-1].strip("()")
        out[f"depth_residual_mm_{tag}"] = r["depth_residual_mm"]
        out[f"inlier_fraction_5cm_{tag}"] = r.get("inlier_fraction")
        out[f"coverage_{tag}"] = r["coverage"]
    if overlay is not None:
        out["overlay"] = str(overlay_image(s, motions, overlay, model))
    return out


def run_bench(quick: bool) -> dict[str, Any]:
    """The "tracker" bench section (see the module docstring)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, Any] = {}
        out.update(epe_figures(3 if quick else 12))
        for w, h in ((640, 480), (320, 240), (160, 120)):
            for threads in (2, 1):
                t = corr_timing(w, h, threads, 2 if quick else 5)
                sfx = "" if threads == 2 else "_1thread"
                out[f"corr_ms_{w}{sfx}"] = t["wall_ms"]
                out[f"corr_cpu_ms_{w}{sfx}"] = t["cpu_ms"]
        out["phi_parameters"] = t["phi_parameters"]
        out["psi_parameters"] = t["psi_parameters"]
        n = 8 if quick else 30
        out.update(replay_tracker("neural", n))
        out.update(replay_tracker("classical", n))
        out["seq017"] = seq017_figures()
        return out
    finally:
        torch.set_num_threads(old)


def main(argv: list[str] | None = None) -> int:
    """`python -m tracker.bench [--quick] [--overlay PNG]`: print the section's figures (and the overlay)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--overlay", type=Path, default=None, help="write the seq017 overlay PNG here (only that)")
    args = ap.parse_args(argv)
    import json

    if args.overlay is not None:
        print(json.dumps(seq017_figures(args.overlay), indent=2))
        return 0
    print(json.dumps(run_bench(args.quick), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
