"""End-to-end training of the neural tracker (NNRT sections 4.4 and 5.1): Phi, Psi and the differentiable
Gauss-Newton solver Omega, on large-motion synthetic pairs (tracker/data.py) or a DeepDeform-layout tree.

Three-stage schedule (NNRT):
  1. "corr":   Phi alone with L_corr;
  2. "weights": Psi alone, self-supervised through the solver (L_graph + L_warp), Phi fixed;
  3. "joint":  Phi and Psi together with lambda_corr L_corr + lambda_graph L_graph + lambda_warp L_warp.
Each step: Phi + Psi on a batch of pairs, then (stages 2-3) per pair `tracker.diffsolver.solve_motion`
(3 Gauss-Newton iterations, dense Cholesky, differentiable) on a random subset of the source pixels.

`nrstudio train tracker --preset tiny|small|full [--out CKPT] [--device] [--steps N] [--seed S]` calls
`train_cli`. Under `torchrun` (WORLD_SIZE set) the nets are wrapped in DistributedDataParallel (gloo on the
CPU, nccl on CUDA); each rank draws its own pairs; rank 0 writes the checkpoint and the loss log
(`<out>.log.jsonl`, one JSON line per logged step) and shows the tqdm progress bar.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from fusion.camera import backproject_depth
from tracker.data import PairSample, SyntheticPairConfig, build_pool, synthetic_pair
from tracker.diffsolver import DiffSolverConfig, arap_edge_weights, sample_correspondences, solve_motion
from tracker.energy import warp_parts
from tracker.losses import corr_loss, graph_loss, warp_loss
from tracker.networks import NNRTNets, phi_config, psi_config, save_checkpoint

__all__ = ["TrainConfig", "PRESETS", "train", "train_cli", "batch_tensors", "pair_losses", "default_weights_path"]


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    size: network size ("tiny" | "small" | "full"); data: synthetic pair distribution; pool: pairs kept in
    memory (one is redrawn every `refresh_every` steps); batch: pairs per step; steps: (stage 1, stage 2,
    stage 3) step counts; lr: Adam learning rate per stage; max_points: source pixels per pair in the
    solver; lambda_corr / lambda_graph / lambda_warp: loss weights (lengths in metres, flows in pixels);
    solver: Omega's settings; deepdeform: a DeepDeform-layout root to train on instead (None = synthetic);
    corr_q: the robust exponent q of L_corr (NNRT 0.4); corr_warmup_q / corr_warmup: the first
      `corr_warmup` fraction of stage 1 uses exponent corr_warmup_q instead (1 = the L1 flow loss PWC-Net is
      pre-trained with; it stands in for the FlyingChairs / FlyingThings pre-training NNRT starts from,
      which q = 0.4 alone learns very slowly from scratch);
    log_every: steps between loss-log lines; threads: torch CPU threads (0 = leave as is).
    """

    size: str = "small"
    data: SyntheticPairConfig = field(default_factory=SyntheticPairConfig)
    pool: int = 64
    refresh_every: int = 2
    batch: int = 4
    steps: tuple[int, int, int] = (600, 150, 250)
    lr: tuple[float, float, float] = (1e-3, 1e-3, 3e-4)
    max_points: int = 800
    lambda_corr: float = 1.0
    lambda_graph: float = 100.0
    lambda_warp: float = 100.0
    solver: DiffSolverConfig = field(default_factory=DiffSolverConfig)
    deepdeform: str | None = None
    corr_q: float = 0.4
    corr_warmup_q: float = 1.0
    corr_warmup: float = 0.5
    log_every: int = 10
    threads: int = 0
    grad_clip: float = 10.0


PRESETS: dict[str, TrainConfig] = {
    # a few seconds: the unit test and smoke runs
    "tiny": TrainConfig(size="tiny", data=SyntheticPairConfig(width=64, height=48, n_frames=24, gap=(3, 6)), pool=4,
                        refresh_every=0, batch=2, steps=(30, 10, 10), lr=(2e-3, 2e-3, 1e-3), max_points=200,
                        log_every=5),
    # the shipped CPU weights (about 20 minutes on one loaded CPU core)
    "small": TrainConfig(steps=(1100, 60, 100), max_points=600, threads=1),
    # GPU: full-size Phi / Psi at 320x240, longer schedule
    "full": TrainConfig(size="full", data=SyntheticPairConfig(width=320, height=240), pool=512, refresh_every=1,
                        batch=8, steps=(60000, 10000, 30000), lr=(1e-4, 1e-4, 1e-5), max_points=3000, log_every=50),
}


def default_weights_path() -> Path:
    """assets/tracker/nnrt_small.pt: the shipped weights."""
    from fusion.paths import ASSETS

    return ASSETS / "tracker" / "nnrt_small.pt"


# --------------------------------------------------------------------------------------------------
# batches
# --------------------------------------------------------------------------------------------------
def batch_tensors(samples: list[PairSample], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Stack pairs (same size) into tensors: src_rgb / tgt_rgb [B,3,H,W] in [0,1], src_points / tgt_points
    [B,3,H,W] metres, gt_flow [B,2,H,W] pixels (0 where invalid), flow_valid [B,1,H,W] float, tgt_depth
    [B,H,W] metres."""
    def rgb(a):
        return torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float().div_(255.0)

    def pts(depths, k):
        return torch.from_numpy(np.stack([backproject_depth(d, k) for d in depths])).permute(0, 3, 1, 2).float()

    k = samples[0].intrinsics
    flows, valids = [], []
    for s in samples:
        f = s.flow if s.flow is not None else np.full(s.src_depth.shape + (2,), np.nan, np.float32)
        v = np.isfinite(f).all(-1) & s.src_mask
        flows.append(np.where(v[..., None], f, 0.0).astype(np.float32))
        valids.append(v.astype(np.float32))
    out = {
        "src_rgb": rgb([s.src_color for s in samples]),
        "tgt_rgb": rgb([s.tgt_color for s in samples]),
        "src_points": pts([s.src_depth for s in samples], k),
        "tgt_points": pts([s.tgt_depth for s in samples], k),
        "gt_flow": torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous(),
        "flow_valid": torch.from_numpy(np.stack(valids))[:, None],
        "tgt_depth": torch.from_numpy(np.stack([s.tgt_depth for s in samples])),
    }
    return {key: v.to(device) for key, v in out.items()}


def pair_losses(sample: PairSample, flow: torch.Tensor, weights: torch.Tensor, tgt_depth: torch.Tensor,
                cfg: DiffSolverConfig, max_points: int, rng: np.random.Generator) -> dict[str, torch.Tensor] | None:
    """Solve one pair with Omega and return {"graph": L_graph, "warp": L_warp, "valid_nodes": n} (tensors),
    or None when the pair gives no usable problem.

    flow [2,H,W] (source -> target pixels), weights [H,W] in (0,1), tgt_depth [H,W] metres (tensors on one
    device). A random subset of at most max_points source pixels with ground truth and anchors is used.
    """
    dev = flow.device
    sf = sample.scene_flow
    if sf is None:
        return None
    cand = sample.src_mask & (sample.pixel_anchors[..., 0] >= 0) & np.isfinite(sf).all(-1)
    vv, uu = np.nonzero(cand)
    if len(vv) < 16:
        return None
    if len(vv) > max_points:
        pick = rng.choice(len(vv), max_points, replace=False)
        vv, uu = vv[pick], uu[pick]
    k = sample.intrinsics
    z = sample.src_depth[vv, uu]
    p = np.stack([(uu - k.cx) / k.fx * z, (vv - k.cy) / k.fy * z, z], 1).astype(np.float32)
    uv = torch.from_numpy(np.stack([uu, vv], 1)).to(dev)
    tuv, tz, valid = sample_correspondences(flow, tgt_depth, uv)
    conf = weights[torch.from_numpy(vv).to(dev), torch.from_numpy(uu).to(dev)] * valid.to(flow.dtype)
    g = sample.graph
    f = flow.dtype
    pt = torch.from_numpy(p).to(dev, f)
    an = torch.from_numpy(sample.pixel_anchors[vv, uu]).to(dev).long()
    aw = torch.from_numpy(sample.pixel_weights[vv, uu]).to(dev, f)
    nodes = torch.from_numpy(g.nodes).to(dev, f)
    edges = torch.from_numpy(g.edges).to(dev).long()
    ewn = arap_edge_weights(g.edges, g.edge_weights) if cfg.arap_edge_weighting else None
    ew = None if ewn is None else torch.from_numpy(ewn).to(dev, f)
    res = solve_motion(pt, an, aw, nodes, edges, tuv, tz, conf, k, cfg, edge_weights=ew)
    if not res.ok:
        return None
    node_ok = torch.from_numpy(sample.node_valid).to(dev) & res.node_mask
    gt_t = torch.from_numpy(np.nan_to_num(sample.node_translations)).to(dev, f)
    lg = graph_loss(res.translations, gt_t, node_ok)
    # dense warp of the points whose anchors all lie in kept nodes
    keep_pt = (torch.where(an >= 0, res.node_mask[an.clamp_min(0)], torch.ones_like(an, dtype=torch.bool))).all(1)
    warped = warp_parts(pt, an, aw, nodes, res.rotations, res.translations).warped
    target = pt + torch.from_numpy(sf[vv, uu]).to(dev, f)
    lw = warp_loss(warped, target, keep_pt)
    return {"graph": lg, "warp": lw, "valid_nodes": node_ok.sum(), "points": keep_pt.sum()}


# --------------------------------------------------------------------------------------------------
# distributed helpers
# --------------------------------------------------------------------------------------------------
def _dist_setup(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    from fusion.device import resolve_device

    device = resolve_device(device)  # "cpu" | "cuda" | "cuda:N"; InputError without CUDA or for other names
    dev = torch.device(f"cuda:{local}" if device == "cuda" else device)  # plain "cuda": one GPU per local rank
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return rank, world, dev


def _avg_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce the gradients across ranks (the DDP reduction, done explicitly so that the frozen / unused
    network of each stage needs no special casing)."""
    if world <= 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
def _stage_of(step: int, steps: tuple[int, int, int]) -> tuple[int, int]:
    s1, s2, _ = steps
    if step < s1:
        return 1, step
    if step < s1 + s2:
        return 2, step - s1
    return 3, step - s1 - s2


def _pairs_source(cfg: TrainConfig, seed: int):
    """A function next_batch() -> list[PairSample], plus a description of the data."""
    rng = np.random.default_rng(seed)
    if cfg.deepdeform:
        from tracker.data import DeepDeformPairs

        ds = DeepDeformPairs(cfg.deepdeform, node_radius=cfg.data.node_radius)
        if len(ds) == 0:
            from fusion.errors import InputError

            raise InputError(f"{cfg.deepdeform}: no pairs with scene flow to train on")
        cache: dict[int, PairSample] = {}

        def next_dd() -> list[PairSample]:
            out = []
            idx = rng.choice(len(ds), cfg.batch, replace=len(ds) < cfg.batch)
            for i in idx:
                if int(i) not in cache and len(cache) < cfg.pool:
                    cache[int(i)] = ds[int(i)]
                out.append(cache[int(i)] if int(i) in cache else ds[int(i)])
            sizes = {s.size for s in out}
            return out if len(sizes) == 1 else [out[0]]

        return next_dd, {"kind": "deepdeform", "root": cfg.deepdeform, "pairs": len(ds)}
    pool = build_pool(cfg.data, cfg.pool, seed=seed)
    state = {"step": 0}

    def next_syn() -> list[PairSample]:
        state["step"] += 1
        if cfg.refresh_every and state["step"] % cfg.refresh_every == 0:
            pool[int(rng.integers(len(pool)))] = synthetic_pair(cfg.data, rng)
        idx = rng.choice(len(pool), cfg.batch, replace=len(pool) < cfg.batch)
        return [pool[int(i)] for i in idx]

    return next_syn, {"kind": "synthetic", "config": asdict(cfg.data), "pool": cfg.pool,
                      "refresh_every": cfg.refresh_every}


def train(cfg: TrainConfig, out: Path | None = None, device: str = "auto", seed: int = 0,
          progress: bool = True, nets: NNRTNets | None = None) -> dict:
    """Run the three-stage schedule of `cfg`; write the checkpoint to `out` (when given) and the loss log to
    `<out>.log.jsonl`. Returns the summary: steps, seconds, per-stage first / last mean losses, final losses,
    the loss history (list of dicts), the data description and the checkpoint path."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, dev = _dist_setup(device)
    torch.manual_seed(seed)
    nets = nets if nets is not None else NNRTNets(phi_config(cfg.size), psi_config(cfg.size))
    nets = nets.to(dev)
    if world > 1:  # identical initial weights on every rank
        for p in nets.parameters():
            torch.distributed.broadcast(p.data, 0)
    next_batch, data_desc = _pairs_source(cfg, seed * 1000 + rank)
    total = sum(cfg.steps)
    log_path = None if out is None else Path(str(out) + ".log.jsonl")
    log_fh = None
    if rank == 0 and log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(log_path, "w")
    bar = None
    if rank == 0 and progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="train tracker", unit="step", dynamic_ncols=True)
    rng = np.random.default_rng(seed + 7 * rank)
    history: list[dict] = []
    window: dict[int, list[dict]] = {1: [], 2: [], 3: []}
    opt = None
    cur_stage = 0
    t_start = time.perf_counter()
    for step in range(total):
        stage, in_stage = _stage_of(step, cfg.steps)
        if stage != cur_stage:
            cur_stage = stage
            params = list(nets.phi.parameters()) if stage == 1 else (
                list(nets.psi.parameters()) if stage == 2 else list(nets.parameters()))
            for p in nets.parameters():
                p.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam(params, lr=cfg.lr[stage - 1])
            n_stage = cfg.steps[stage - 1]
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda i, n=n_stage: 0.5 * (1 + math.cos(math.pi * min(i, n) / max(n, 1))) * 0.9 + 0.1)
        samples = next_batch()
        b = batch_tensors(samples, dev)
        nets.train()
        if stage == 2:
            with torch.no_grad():
                phi_out = nets.phi(b["src_rgb"], b["tgt_rgb"], b["src_points"][:, 2:3], b["tgt_points"][:, 2:3])
        else:
            phi_out = nets.phi(b["src_rgb"], b["tgt_rgb"], b["src_points"][:, 2:3], b["tgt_points"][:, 2:3])
        losses: dict[str, torch.Tensor] = {}
        q = cfg.corr_warmup_q if (stage == 1 and in_stage < cfg.corr_warmup * cfg.steps[0]) else cfg.corr_q
        lc = corr_loss(phi_out.flows, phi_out.levels, phi_out.flow, b["gt_flow"], b["flow_valid"], q=q)
        losses["corr"] = lc
        total_loss = cfg.lambda_corr * lc if stage in (1, 3) else torch.zeros((), device=dev)
        if stage >= 2:
            from tracker.networks import WeightNet

            x = WeightNet.inputs(b["src_rgb"], b["src_points"], b["tgt_rgb"], b["tgt_points"], phi_out.flow)
            wts = nets.psi(x, phi_out.features)
            lg, lw, n_ok = [], [], 0
            for i, s in enumerate(samples):
                r = pair_losses(s, phi_out.flow[i], wts[i, 0], b["tgt_depth"][i], cfg.solver, cfg.max_points, rng)
                if r is None:
                    continue
                lg.append(r["graph"])
                lw.append(r["warp"])
                n_ok += 1
            if n_ok:
                losses["graph"] = torch.stack(lg).mean()
                losses["warp"] = torch.stack(lw).mean()
                total_loss = total_loss + cfg.lambda_graph * losses["graph"] + cfg.lambda_warp * losses["warp"]
            losses["weight_mean"] = wts.detach()[b["flow_valid"] > 0].mean()
        opt.zero_grad(set_to_none=True)
        if total_loss.requires_grad:
            total_loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        _avg_grads(params, world)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if total_loss.requires_grad:
            opt.step()
        sched.step()
        rec = {"step": step + 1, "stage": stage, "total": float(total_loss.detach()), "q": q}
        rec.update({k: float(v.detach()) for k, v in losses.items()})
        window[stage].append(rec)
        if rank == 0:
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in rec.items() if k in ("stage", "corr", "graph", "warp")})
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                recent = window[stage][-cfg.log_every:]
                line = {"step": step + 1, "stage": stage, "q": q, "seconds": round(time.perf_counter() - t_start, 2)}
                for key in ("total", "corr", "graph", "warp", "weight_mean"):
                    vals = [r[key] for r in recent if key in r]
                    if vals:
                        line[key] = float(np.mean(vals))
                history.append(line)
                if log_fh is not None:
                    log_fh.write(json.dumps(line) + "\n")
                    log_fh.flush()
    if bar is not None:
        bar.close()
    if log_fh is not None:
        log_fh.close()
    seconds = time.perf_counter() - t_start

    def stage_summary(st: int) -> dict:
        recs = window[st]
        if not recs:
            return {}
        n = max(1, min(len(recs) // 4, 50))
        out_d = {"steps": len(recs)}
        for key in ("corr", "graph", "warp", "total"):
            vals = [r[key] for r in recs if key in r]
            if vals:
                out_d[f"{key}_first"] = float(np.mean(vals[:n]))
                out_d[f"{key}_last"] = float(np.mean(vals[-n:]))
        return out_d

    summary = {
        "preset_size": cfg.size, "steps": total, "stages": {str(s): stage_summary(s) for s in (1, 2, 3)},
        "seconds": seconds, "device": str(dev), "world_size": world, "seed": seed, "data": data_desc,
        "config": json.loads(json.dumps(asdict(cfg), default=str)), "history": history,
        "final": {k: v for k, v in (history[-1].items() if history else {}) if k not in ("step",)},
        "log": None if log_path is None else str(log_path),
    }
    if out is not None:  # rank 0 writes it; every rank reports where it is
        if rank == 0:
            save_checkpoint(nets, out, {k: summary[k] for k in ("preset_size", "steps", "stages", "seconds", "seed",
                                                                "data", "final")})
        summary["checkpoint"] = str(out)
    if world > 1:
        torch.distributed.barrier()
    return summary


def train_cli(preset: str = "small", out: Path | None = None, device: str = "auto", steps: int | None = None,
              seed: int = 0) -> dict:
    """`nrstudio train tracker`: run PRESETS[preset] (steps overrides the total, split over the three stages
    in the preset's proportions) and write the checkpoint to `out` (default: runs/tracker_<preset>.pt; the
    shipped weights live in assets/tracker/). Returns the training summary."""
    if preset not in PRESETS:
        from fusion.errors import InputError

        raise InputError(f"unknown tracker preset {preset!r} (tiny | small | full)")
    cfg = PRESETS[preset]
    if steps is not None:
        if steps < 3:
            from fusion.errors import InputError

            raise InputError("--steps must be at least 3 (one per stage)")
        tot = sum(cfg.steps)
        s1 = max(1, round(steps * cfg.steps[0] / tot))
        s2 = max(1, round(steps * cfg.steps[1] / tot))
        cfg = replace(cfg, steps=(s1, s2, max(1, steps - s1 - s2)))
    out = Path(out) if out is not None else Path("runs") / f"tracker_{preset}.pt"
    summary = train(cfg, out, device=device, seed=seed)
    summary["preset"] = preset
    if len(summary.get("history", [])) > 200:  # the full history is in the loss log
        summary["history"] = summary["history"][-200:]
    return summary
