"""Autodecoder training of the implicit occupancy network on a shape collection (DeepSDF-style).

Each training shape owns a code z_s (nn.Embedding); the decoder and the codes are optimised jointly on
binary cross-entropy of occupancy samples plus a code prior code_reg·‖z_s‖². Runs on CPU or CUDA, and
under `torchrun` (WORLD_SIZE set) with DistributedDataParallel: every rank draws its own shapes and
points, gradients are all-reduced, rank 0 writes the checkpoint.

`nrstudio train featmatch --preset tiny|small|full [--out CKPT] [--steps N]` calls `train_cli`.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from fusion.errors import InputError
from fusion.paths import ASSETS

from .config import PRESETS, TrainConfig
from .data import mesh_folder_collection, procedural_collection, procedural_samples
from .model import ImplicitDecoder, resolve_device, save_checkpoint


class AutoDecoder(nn.Module):
    """The decoder plus one trainable code per training shape (so DDP all-reduces both)."""

    def __init__(self, decoder: ImplicitDecoder, n_shapes: int, init_std: float, gen: torch.Generator) -> None:
        super().__init__()
        self.decoder = decoder
        self.codes = nn.Embedding(n_shapes, decoder.cfg.latent_dim)
        with torch.no_grad():
            self.codes.weight.copy_(torch.randn(n_shapes, decoder.cfg.latent_dim, generator=gen) * init_std)

    def forward(self, idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """idx int64 [B] shape ids, x float [B, P, 3] -> (logits [B, P], codes [B, D])."""
        z = self.codes(idx)
        return self.decoder(x, z), z


def build_dataset(cfg: TrainConfig, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Occupancy pools of the collection: (points float32 [S, M, 3], occupancy float32 [S, M], info)."""
    if cfg.mesh_dir:
        names, pts, occ = mesh_folder_collection(cfg.mesh_dir, cfg.samples, seed)
        return pts, occ, {"source": f"mesh folder {cfg.mesh_dir}", "shapes": names}
    shapes = procedural_collection(cfg.n_shapes, seed)
    rng = np.random.default_rng(seed + 1)
    pts, occ = zip(*(procedural_samples(s, cfg.samples, rng, cfg.mc_res) for s in shapes))
    cats = [s.category for s in shapes]
    info = {"source": f"procedural collection (seed {seed})",
            "categories": {c: cats.count(c) for c in sorted(set(cats))}}
    return np.stack(pts), np.stack(occ), info


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def train(cfg: TrainConfig, device: str = "auto", progress: Callable[[float, str], None] | None = None,
          data: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[ImplicitDecoder, torch.Tensor, dict]:
    """Train decoder + codes. Returns (decoder on CPU in eval mode, codes float32 [S, D], history).

    history: {"loss": [(step, mean loss of the window)], "loss_first", "loss_final", "accuracy_final",
    "seconds", "world_size"}. `data` = (points [S, M, 3], occupancy [S, M]) overrides the collection.
    """
    world, rank, local = _dist_info()
    dev = resolve_device(device)
    if world > 1:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if data is None:
        pts_np, occ_np, info = build_dataset(cfg, cfg.seed)
    else:
        pts_np, occ_np, info = data[0], data[1], {"source": "given arrays"}
    if not np.isfinite(pts_np).all():
        raise InputError("training data: non-finite sample points")
    pts = torch.as_tensor(pts_np, dtype=torch.float32, device=dev)
    occ = torch.as_tensor(occ_np, dtype=torch.float32, device=dev)
    S, M = occ.shape
    model = AutoDecoder(ImplicitDecoder(cfg.model), S, cfg.code_init_std, gen).to(dev)
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam([
        {"params": model.decoder.parameters(), "lr": cfg.lr_net},
        {"params": model.codes.parameters(), "lr": cfg.lr_code},
    ])
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_decay_every, gamma=0.5)
    sgen = torch.Generator(device="cpu").manual_seed(cfg.seed * 1000 + rank + 17)
    hist: list[tuple[int, float]] = []
    window: list[float] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    B = min(cfg.batch_shapes, S)
    for step in range(cfg.steps):
        idx = torch.randperm(S, generator=sgen)[:B].to(dev)
        pidx = torch.randint(0, M, (B, cfg.points_per_shape), generator=sgen).to(dev)
        x = torch.gather(pts[idx], 1, pidx[..., None].expand(-1, -1, 3))
        y = torch.gather(occ[idx], 1, pidx)
        logits, z = net(idx, x)
        bce = F.binary_cross_entropy_with_logits(logits, y)
        loss = bce + cfg.code_reg * (z * z).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = float(bce.detach())
        window.append(lv)
        losses.append(lv)
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            hist.append((step + 1, float(np.mean(window))))
            window = []
            if progress is not None:
                progress((step + 1) / cfg.steps, f"step {step + 1}/{cfg.steps} bce {hist[-1][1]:.4f}")
    # final accuracy of the occupancy on every shape's pool (rank-local, no grad)
    model.eval()
    with torch.no_grad():
        correct = 0
        for s in range(0, S, 16):
            ii = torch.arange(s, min(S, s + 16), device=dev)
            lg, _ = model(ii, pts[ii])
            correct += int(((lg > 0).float() == (occ[ii] > 0.5).float()).sum())
    k = max(1, min(20, len(losses) // 5))
    history = {
        "loss": hist,
        "loss_first": float(np.mean(losses[:k])),
        "loss_final": float(np.mean(losses[-k:])),
        "accuracy_final": correct / float(S * M),
        "seconds": time.perf_counter() - t0,
        "world_size": world,
        "data": info,
    }
    dec = model.decoder.cpu().eval()
    codes = model.codes.weight.detach().cpu().clone()
    return dec, codes, history


def train_cli(preset: str, out: str | Path | None, device: str, steps: int | None, seed: int) -> dict:
    """`nrstudio train featmatch`: train the preset, write the checkpoint, return the summary dict."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset '{preset}' (expected one of {sorted(PRESETS)})")
    cfg = PRESETS[preset]
    cfg = replace(cfg, seed=seed, steps=steps if steps is not None else cfg.steps)
    if cfg.steps < 1:
        raise InputError(f"--steps must be >= 1, got {cfg.steps}")
    if resolve_device(device).type == "cpu":
        torch.set_num_threads(cfg.threads)
    out_path = Path(out) if out is not None else ASSETS / "featmatch" / f"featmatch_{preset}.pt"
    world, rank, _ = _dist_info()
    from tqdm import tqdm

    with tqdm(total=cfg.steps, desc="featmatch", unit="step", disable=rank != 0, mininterval=10.0) as bar:
        def progress(f: float, msg: str) -> None:
            bar.n = round(f * cfg.steps)
            bar.set_postfix_str(msg.split(" ", 2)[-1])

        dec, codes, hist = train(cfg, device, progress=progress)
    summary = {
        "preset": preset,
        "steps": cfg.steps,
        "seed": seed,
        "out": str(out_path),
        "loss_first": hist["loss_first"],
        "loss_final": hist["loss_final"],
        "accuracy_final": hist["accuracy_final"],
        "seconds": hist["seconds"],
        "world_size": hist["world_size"],
        "data": hist["data"],
        "loss_curve": hist["loss"],
        "config": asdict(cfg),
    }
    if rank == 0:
        save_checkpoint(out_path, dec, codes, {k: v for k, v in summary.items() if k != "config"})
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    return summary
