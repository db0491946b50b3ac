"""The `qaad` bench section: EM-kD vs exact EMD (speed and value), and NeuralQAAD vs the AtlasNetV2-style
baseline on the horse-gallop and samba sequences (same parameter count, same training time).

Figures (full run): emkd_ms_8192, emd_ms_8192, emkd_speedup, emkd_over_emd on one real 8192-point pair
(horse frame 0 vs frame 12, sampled from the meshes); auction_ms_1024 / auction_over_emd_1024; per sequence
emkd_qaad, emkd_atlasnet, emkd_reduction (1 - qaad / atlasnet), compression_ratio, the float counts, steps,
decompress_clouds_per_s (CPU, one thread, all clouds of 16k points); and, in quick runs too, the
decompression target at full size on an untrained file shaped like samba (`bench_decode`:
decompress_16k_clouds_per_s, median of 3 wall-clock runs, and per CPU second). Training budgets are CPU seconds
(60 per model and sequence), Adam lr 3e-3 for both. quick=True shrinks everything (2048-point metric pair,
512-point auction, 2048-point clouds at 20:1, 5 CPU seconds of training) to run in about a minute on an idle
machine; its figures are smoke values.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fusion.paths import shared_data_dir
from models.common.io import load_mesh, sample_surface
from models.common.metrics import AuctionConfig, emd_auction, emd_exact, emkd
from models.qaad.data import load_dataset
from models.qaad.inference import CompressConfig, compress_clouds, config_for_baseline, decode_file
from models.qaad.training import TrainConfig

SEQUENCES = ("horse-gallop", "samba")


def _metric_pair(n: int, seq_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(seq_dir.glob("*.obj"))
    a, _ = sample_surface(load_mesh(files[0]), n, rng=np.random.default_rng(1))
    b, _ = sample_surface(load_mesh(files[len(files) // 2]), n, rng=np.random.default_rng(2))
    return a, b


def bench_metrics(n: int, seq_dir: Path, n_auction: int) -> dict:
    """EM-kD vs exact EMD (scipy LAP) on one real pair of n points, the torch auction on n_auction of them."""
    a, b = _metric_pair(n, seq_dir)
    t, c = time.perf_counter(), time.process_time()
    v_kd = emkd(a, b, leaf_size=1024)
    t_kd, c_kd = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    v_emd = emd_exact(a, b)
    t_emd, c_emd = time.perf_counter() - t, time.process_time() - c
    fig = {
        f"emkd_ms_{n}": 1e3 * t_kd,
        f"emd_ms_{n}": 1e3 * t_emd,
        "emkd_speedup": t_emd / t_kd,
        f"emkd_cpu_ms_{n}": 1e3 * c_kd,
        f"emd_cpu_ms_{n}": 1e3 * c_emd,
        "emkd_speedup_cpu": c_emd / max(c_kd, 1e-9),
        "emkd_over_emd": v_kd / v_emd,
        "emkd_value": v_kd,
        "emd_value": v_emd,
    }
    m = min(n, n_auction)
    a2, b2 = a[:m], b[:m]
    e2 = emd_exact(a2, b2) if m != n else v_emd
    t = time.perf_counter()
    res = emd_auction(a2, b2, AuctionConfig(eps_rel=1e-3), device="cpu")
    fig[f"auction_ms_{m}"] = 1e3 * (time.perf_counter() - t)
    fig[f"auction_over_emd_{m}"] = res.mean_cost / e2
    return fig


def bench_sequence(seq_dir: Path, n_points: int, seconds: float, eval_clouds: int, ratio: float) -> dict:
    """Train NeuralQAAD and the same-size AtlasNetV2-style baseline for the same CPU time on one sequence
    (process clock, one torch thread: the budget is compute, not wall time on a shared machine)."""
    files = sorted(seq_dir.glob("*.obj"))
    ds = load_dataset(files, n_points=n_points, seed=0)
    train = TrainConfig(mode="qaad", steps=None, seconds=seconds, clock="process", batch=4, samples=2048,
                        lr=3e-3, reassign_every=4, device="cpu")
    qcfg = CompressConfig(kind="qaad", patches=16, latent=8, ratio=ratio, train=train, eval_clouds=eval_clouds)
    q = compress_clouds(ds, qcfg)
    bcfg, _ = config_for_baseline(qcfg, len(ds.clouds), n_points)
    a = compress_clouds(ds, bcfg)
    t, c = time.perf_counter(), time.process_time()
    decoded = decode_file(q.file, "cpu")
    t_dec, c_dec = time.perf_counter() - t, time.process_time() - c
    return {
        "clouds": len(ds.clouds),
        "points": n_points,
        "emkd_qaad": q.emkd,
        "emkd_atlasnet": a.emkd,
        "emkd_reduction": 1.0 - q.emkd / a.emkd,
        "chamfer_qaad": q.chamfer,
        "chamfer_atlasnet": a.chamfer,
        "compression_ratio": q.compression_ratio,
        "compression_ratio_atlasnet": a.compression_ratio,
        "floats_qaad": q.file.stored_floats,
        "floats_atlasnet": a.file.stored_floats,
        "train_cpu_seconds_each": seconds,
        "lr": train.lr,
        "steps_qaad": q.fit.steps,
        "steps_atlasnet": a.fit.steps,
        "decompress_clouds_per_s": len(decoded) / t_dec,
        "decompress_clouds_per_cpu_s": len(decoded) / max(c_dec, 1e-9),
        "eval_clouds": len(q.evaluated),
    }


def bench_decode(seq_dir: Path, n_clouds: int = 35, n_points: int = 16384, ratio: float = 100.0,
                 repeats: int = 3) -> dict:
    """Decompression speed at the target size, independent of training: a NeuralQAAD file sized like the
    samba set (n_clouds x n_points at `ratio`, template initialised from a real horse frame; decoding cost
    does not depend on the weight values), decoded `repeats` times on the CPU with one torch thread
    (`decode_file`, what `nrstudio decompress` runs). Figures: the best and median clouds per wall second
    and per CPU second."""
    from models.qaad.data import Normalisation
    from models.qaad.format import pack
    from models.qaad.model import build_decoder, sized_config

    files = sorted(seq_dir.glob("*.obj"))
    sample, _ = sample_surface(load_mesh(files[0]), n_points, rng=np.random.default_rng(3))
    norm = Normalisation.fit([sample])
    cfg = sized_config(n_clouds, n_points, ratio)
    torch.manual_seed(0)
    model = build_decoder(cfg, n_clouds)
    model.init_template(norm.apply(sample))
    with torch.no_grad():  # non-zero heads, as after training
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    f = pack(model, norm, [f"cloud{i}" for i in range(n_clouds)])
    decode_file(f, "cpu", [0])  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = decode_file(f, "cpu")
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    assert out.shape == (n_clouds, n_points, 3)
    return {
        "decompress_16k_clouds": n_clouds,
        "decompress_16k_clouds_per_s": n_clouds / float(np.median(wall)),
        "decompress_16k_clouds_per_s_best": n_clouds / min(wall),
        "decompress_16k_clouds_per_cpu_s": n_clouds / float(np.median(cpu)),
    }


def run_bench(quick: bool) -> dict:
    """The section's figures (see the module docstring); sequences missing from the data folder are skipped."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # more threads only add synchronisation cost on a shared 2-core machine
    try:
        root = shared_data_dir() / "sequences"
        fig: dict = {}
        if not (root / "horse-gallop").is_dir():
            fig["skipped"] = f"{root} not found"
            return fig
        fig.update(bench_metrics(2048, root / "horse-gallop", 512) if quick else
                   bench_metrics(8192, root / "horse-gallop", 1024))
        fig.update(bench_decode(root / "horse-gallop"))  # the decompression target, also in quick runs
        for name in SEQUENCES:
            if not (root / name).is_dir():
                fig[name] = {"skipped": "not found"}
                continue
            if quick:
                fig[name] = bench_sequence(root / name, 2048, seconds=5.0, eval_clouds=2, ratio=20.0)
            else:
                fig[name] = bench_sequence(root / name, 16384, seconds=60.0, eval_clouds=6, ratio=100.0)
        return fig
    finally:
        torch.set_num_threads(threads)
