"""Training of LPDC-Net and of the Occupancy-Flow-style ODE baseline.

Losses (all on a batch of examples from `data.ExampleSampler`, unit scale):

* ``occ_t0``  BCE of the occupancy decoder at t0 (code s_0) on the t0 query points.
* ``occ_bwd`` BCE at frames 1..T-1: query points seen at frame k are carried back to t0 (LPDC: backward
  displacement g(p ⊕ z_k ⊕ z_0); ODE: the velocity field integrated from t_k to t_0) and decoded at t0.
* ``occ_fwd`` (LPDC only, as in the reference code) BCE of t0 query points carried forward to frame k
  by g(p ⊕ z_0 ⊕ z_k) and decoded with that frame's code s_k against their t0 occupancy.
* ``corr``    L2 correspondence: mean Euclidean distance between the predicted and the true positions
  of tracked surface points at every frame.

`train` runs plainly, or under ``torchrun`` with DistributedDataParallel when WORLD_SIZE is set
(gloo on CPU, nccl on CUDA; each rank draws its own examples; rank 0 writes the checkpoint).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion.atomic import atomic_path, write_text_atomic
from models.lpdc.config import LPDCConfig, config_from_dict, preset, to_dict
from models.lpdc.data import ExampleSampler
from models.lpdc.model import build_model, resolve_device

LOSS_NAMES = {"lpdc": ("occ_t0", "occ_bwd", "occ_fwd", "corr"), "ode": ("occ_t0", "occ_bwd", "corr"),
              "occupancy": ("occ_t0", "occ_frames")}


class LossModule(nn.Module):
    """Wraps a model (LPDCNet or OFlowNet) so that one forward call returns every loss (DDP-friendly).

    stage "full": the method's losses (module docstring). stage "occupancy": the warm-up stage shared
    by both methods, spatial branch + occupancy decoder only: BCE at t0 (code s_0) and at every other
    frame k with that frame's own code s_k (the reference code's reconstruction loss without transport).
    """

    def __init__(self, model: nn.Module, cfg: LPDCConfig, ode_bwd_points: int | None = None,
                 ode_corr_points: int | None = None, stage: str = "full") -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.kind = model.kind
        self.ode_bwd_points = ode_bwd_points
        self.ode_corr_points = ode_corr_points
        self.stage = stage

    def _occupancy_stage(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        m = self.model
        s = m.encoder.spatial(batch["inputs"])  # [B, T, C]
        B, T, C = s.shape
        out = {"occ_t0": F.binary_cross_entropy_with_logits(m.occupancy_logits(batch["occ_p0"], s[:, 0]).float(),
                                                             batch["occ_0"])}
        Q = batch["occ_pt"].shape[2]
        logits = m.occupancy_logits(batch["occ_pt"].reshape(B * (T - 1), Q, 3), s[:, 1:].reshape(B * (T - 1), C))
        out["occ_frames"] = F.binary_cross_entropy_with_logits(logits.float(), batch["occ_t"].reshape(B * (T - 1), Q))
        out["total"] = out["occ_t0"] + out["occ_frames"]
        return out

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: tensors as produced by `to_tensors` -> dict of scalar losses (+ "total")."""
        if self.stage == "occupancy":
            return self._occupancy_stage(batch)
        m, w = self.model, self.cfg.train
        inputs, times = batch["inputs"], batch["times"]
        B, T = times.shape
        s, z = m.encode(inputs, times)
        out: dict[str, torch.Tensor] = {}
        logits0 = m.occupancy_logits(batch["occ_p0"], s[:, 0])
        out["occ_t0"] = F.binary_cross_entropy_with_logits(logits0.float(), batch["occ_0"])
        occ_pt, occ_t = batch["occ_pt"], batch["occ_t"]
        if self.kind == "ode" and self.ode_bwd_points is not None and self.ode_bwd_points < occ_pt.shape[2]:
            occ_pt, occ_t = occ_pt[:, :, : self.ode_bwd_points], occ_t[:, :, : self.ode_bwd_points]
        Q = occ_pt.shape[2]
        back = m.to_t0(occ_pt, z, times)  # [B, T-1, Q, 3]
        logits_b = m.occupancy_logits(back.reshape(B, (T - 1) * Q, 3), s[:, 0])
        out["occ_bwd"] = F.binary_cross_entropy_with_logits(logits_b.float(), occ_t.reshape(B, -1))
        corr = batch["corr"]
        P = corr.shape[2]
        if self.kind == "lpdc":
            qf = batch["occ_p0"][:, : self.cfg.data.n_occ_t]
            pts = torch.cat([corr[:, 0], qf], dim=1)
            moved = m.to_frames(pts, z, times)  # ONE batched displacement call for all frames
            pred = moved[:, :, :P]
            fwd = moved[:, 1:, P:]  # [B, T-1, Qf, 3]
            Qf = fwd.shape[2]
            C = s.shape[-1]
            logits_f = m.occupancy_logits(fwd.reshape(B * (T - 1), Qf, 3), s[:, 1:].reshape(B * (T - 1), C))
            target_f = batch["occ_0"][:, None, :Qf].expand(B, T - 1, Qf).reshape(B * (T - 1), Qf)
            out["occ_fwd"] = F.binary_cross_entropy_with_logits(logits_f.float(), target_f)
        else:
            if self.ode_corr_points is not None and self.ode_corr_points < P:
                corr = corr[:, :, : self.ode_corr_points]
            pred = m.to_frames(corr[:, 0], z, times)
        out["corr"] = torch.linalg.norm(pred.float() - corr, dim=-1).mean()
        weights = {"occ_t0": w.w_occ_t0, "occ_bwd": w.w_occ_bwd, "occ_fwd": w.w_occ_fwd, "corr": w.w_corr}
        out["total"] = sum(weights[k] * v for k, v in out.items())
        return out


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """numpy batch (float32 arrays) -> torch tensors on `device`."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, cfg: LPDCConfig, seed: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        info = torch.utils.data.get_worker_info()
        sampler = ExampleSampler(self.cfg.data, seed=self.seed * 7919 + (info.id if info else 0))
        while True:
            yield sampler.draw()


def _batches(cfg: LPDCConfig, seed: int, workers: int) -> Iterator[dict[str, np.ndarray]]:
    if workers <= 0:
        sampler = ExampleSampler(cfg.data, seed=seed * 7919)
        while True:
            yield sampler.batch(cfg.train.batch_size)
    loader = torch.utils.data.DataLoader(
        _Stream(cfg, seed), batch_size=cfg.train.batch_size, num_workers=workers,
        collate_fn=lambda ex: {k: np.stack([e[k] for e in ex]) for k in ex[0]}, prefetch_factor=4,
        persistent_workers=False, worker_init_fn=lambda _: torch.set_num_threads(1))
    yield from iter(loader)


def _ddp_env() -> tuple[bool, int, int, int]:
    ws = int(os.environ.get("WORLD_SIZE", "0") or 0)
    if ws < 1:
        return False, 0, 1, 0
    return True, int(os.environ.get("RANK", "0")), ws, int(os.environ.get("LOCAL_RANK", "0"))


def state_for_checkpoint(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with floating tensors stored as float16 (small shipped weights)."""
    return {k: (v.detach().to("cpu").half() if v.is_floating_point() else v.detach().to("cpu")) for k, v in model.state_dict().items()}


def save_checkpoint(path: str | Path, model: nn.Module, cfg: LPDCConfig, summary: dict) -> None:
    """Write {kind, config, state_dict (float16), summary} atomically with torch.save."""
    payload = {"kind": model.kind, "config": to_dict(cfg), "state_dict": state_for_checkpoint(model), "summary": summary}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, LPDCConfig, dict]:
    """Load a checkpoint written by `save_checkpoint`: (model in eval mode, float32, on device; config; summary).

    Raises InputError for a missing or unreadable file.
    """
    from fusion.errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such weights file (train one with `nrstudio train lpdc`)")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
        cfg = config_from_dict(payload["config"])
        model = build_model(payload["kind"], cfg.model, cfg.ode)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["state_dict"].items()})
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{p}: not an LPDC checkpoint ({type(e).__name__}: {e})") from e
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    return model.to(dev).eval(), cfg, payload.get("summary", {})


def train(cfg: LPDCConfig, out: str | Path | None = None, device: str = "auto", seed: int = 0,
          workers: int = 0, ode_bwd_points: int | None = None, ode_corr_points: int | None = None,
          progress: Callable[[int, dict], None] | None = None,
          fixed_batch: dict[str, np.ndarray] | None = None, snapshot_every: int = 0,
          stage: str = "full", init: str | Path | None = None) -> tuple[nn.Module, dict]:
    """Train one model (`cfg.kind` = "lpdc" | "ode") for cfg.train.steps steps (or cfg.train.max_minutes).

    workers: DataLoader worker processes drawing examples (0 = in the training process).
    ode_bwd_points / ode_corr_points: query points per frame of the ODE's backward loss and tracked
    points of its correspondence loss (None = all). Every solver step re-evaluates the velocity field,
    and carrying a point back from frame k costs k intervals, so subsets keep the baseline's step time
    close to LPDC's (both are trained for the same number of steps on the same examples).
    fixed_batch: train on this one batch every step (tests: loss must go down on it).
    snapshot_every: also save `<out stem>.step<N><suffix>` every N steps (0 = never).
    stage: "full" (the method's losses) or "occupancy" (warm-up of spatial encoder + decoder, see
    `LossModule`). init: a checkpoint whose matching tensors (same name and shape) initialise the model
    (e.g. the shared occupancy warm-up for both LPDC and the ODE baseline).
    progress(step, running_losses) is called every `log_every` steps. Returns (model, summary).
    """
    ddp, rank, world, local_rank = _ddp_env()
    dev = resolve_device(device)
    if ddp:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    torch.manual_seed(seed * 1000 + rank)
    model = build_model(cfg.kind, cfg.model, cfg.ode).to(dev)
    init_info = None
    if init is not None:
        init_info = _load_matching(model, init)
    lossmod: nn.Module = LossModule(model, cfg, ode_bwd_points, ode_corr_points, stage)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        lossmod = DDP(lossmod, device_ids=[local_rank] if dev.type == "cuda" else None)
    tc = cfg.train
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)

    def lr_at(step: int, elapsed: float) -> float:
        # cosine over the run's progress: steps done, or wall time when a time limit is set
        frac = step / max(tc.steps, 1)
        if tc.max_minutes > 0:
            frac = max(frac, elapsed / (60 * tc.max_minutes))
        f = 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        return tc.lr_final + (tc.lr - tc.lr_final) * f

    batches = None if fixed_batch is not None else _batches(cfg, seed * 1000 + rank, workers)
    names = LOSS_NAMES["occupancy" if stage == "occupancy" else cfg.kind]
    history: dict[str, list[float]] = {k: [] for k in names + ("total",)}
    t_start = time.perf_counter()
    step = 0
    amp = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if tc.bf16 else contextlib.nullcontext())
    model.train()
    for step in range(1, tc.steps + 1):
        nb = fixed_batch if fixed_batch is not None else next(batches)
        batch = to_tensors(nb, dev)
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1, time.perf_counter() - t_start)
        with amp:
            losses = lossmod(batch)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        for k in history:
            history[k].append(float(losses[k].detach()))
        if snapshot_every and out is not None and rank == 0 and step % snapshot_every == 0:
            model.eval()
            p = Path(out)
            save_checkpoint(p.with_name(f"{p.stem}.step{step}{p.suffix}"), model, cfg, {"steps": step})
            model.train()
        if progress is not None and (step % tc.log_every == 0 or step == tc.steps):
            progress(step, {k: float(np.mean(v[-tc.log_every:])) for k, v in history.items()})
        if tc.max_minutes > 0 and time.perf_counter() - t_start > 60 * tc.max_minutes:
            break
    seconds = time.perf_counter() - t_start
    n_avg = max(1, min(tc.log_every, step // 4 or 1))
    summary = {
        "kind": cfg.kind, "stage": stage, "init": None if init is None else str(init), "init_tensors": init_info,
        "steps": step, "planned_steps": tc.steps, "seconds": round(seconds, 1),
        "ddp": ddp, "world_size": world, "rank": rank, "device": str(dev), "seed": seed, "batch_size": tc.batch_size,
        "torch_threads": torch.get_num_threads(), "bf16": tc.bf16,
        "ode_bwd_points": ode_bwd_points if cfg.kind == "ode" else None,
        "ode_corr_points": ode_corr_points if cfg.kind == "ode" else None,
        "first_losses": {k: float(np.mean(v[:n_avg])) for k, v in history.items()},
        "final_losses": {k: float(np.mean(v[-n_avg:])) for k, v in history.items()},
        "loss_history_every_log": {k: [float(np.mean(v[i:i + tc.log_every])) for i in range(0, len(v), tc.log_every)]
                                   for k, v in history.items()},
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    model.eval()
    if out is not None and rank == 0:
        save_checkpoint(out, model, cfg, summary)
    if ddp:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return model, summary


def _load_matching(model: nn.Module, path: str | Path) -> int:
    """Copy the tensors of checkpoint `path` whose name and shape match into `model`; returns how many."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    own = model.state_dict()
    take = {k: v.to(own[k].dtype) for k, v in payload["state_dict"].items() if k in own and own[k].shape == v.shape}
    own.update(take)
    model.load_state_dict(own)
    return len(take)


def _shared_root() -> str | None:
    from fusion.paths import shared_data_dir

    d = shared_data_dir()
    return str(d) if (d / "sequences" / "samba").is_dir() else None


def default_weights() -> Path:
    """The shipped LPDC weights: assets/lpdc/lpdc.pt (the ODE baseline's lie beside: lpdc_ode.pt)."""
    from fusion.paths import ASSETS

    return ASSETS / "lpdc" / "lpdc.pt"


def ode_weights_for(path: str | Path) -> Path:
    """Where the ODE baseline's weights lie beside LPDC weights `path` (<stem>_ode.pt)."""
    p = Path(path)
    return p.with_name(p.stem + "_ode" + p.suffix)


def warmup_config(cfg: LPDCConfig) -> LPDCConfig:
    """The occupancy warm-up variant of a preset: short 5-frame windows, 256 query points on every
    frame, twice the batch and the learning rate, half the steps / 45 % of the time limit (the warm-up
    trains only the spatial branch and the decoder, so examples are cheap)."""
    data = replace(cfg.data, n_frames=min(5, cfg.data.n_frames), n_occ_t=256, n_corr=8)
    tr = replace(cfg.train, batch_size=2 * cfg.train.batch_size, steps=max(1, cfg.train.steps // 2),
                 max_minutes=cfg.train.max_minutes * 0.45, lr=2 * cfg.train.lr, lr_final=2 * cfg.train.lr_final)
    return replace(cfg, data=data, train=tr)


ODE_SUBSETS = {"tiny": (None, None), "small": (16, 128), "full": (32, 256)}
"""Per preset: (ode_bwd_points, ode_corr_points) of the ODE baseline's losses."""


def train_cli(preset: str = "small", out: str | Path | None = None, device: str = "auto", steps: int | None = None,
              seed: int = 0) -> dict:
    """`nrstudio train lpdc`: the occupancy warm-up, then LPDC-Net and the ODE baseline, both starting
    from the warm-up, with the same data and schedule (one after the other).

    out: LPDC checkpoint path (default out/lpdc/lpdc.pt); the ODE baseline goes beside it as
    <stem>_ode.pt, the warm-up as <stem>_warmup.pt. Real data (samba training frames, horse-gallop) is
    mixed in when the shared data folder is present. Returns {"warmup", "lpdc", "ode": summaries}.
    """
    from models.lpdc import config as C

    out = Path(out) if out is not None else Path("out/lpdc/lpdc.pt")
    root = _shared_root()
    workers = 0 if preset == "tiny" else 1
    result = {}
    base = C.preset(preset, "lpdc", data_root=root)
    if steps is not None:
        base = replace(base, train=replace(base.train, steps=int(steps)))
    warm = out.with_name(out.stem + "_warmup" + out.suffix)
    _, result["warmup"] = train(warmup_config(base), warm, device=device, seed=seed, workers=workers, stage="occupancy")
    for kind, path in (("lpdc", out), ("ode", ode_weights_for(out))):
        cfg = replace(base, kind=kind)
        _, summary = train(cfg, path, device=device, seed=seed, workers=workers, init=warm,
                           ode_bwd_points=ODE_SUBSETS[preset][0], ode_corr_points=ODE_SUBSETS[preset][1])
        summary["checkpoint"] = str(path)
        summary["real_data"] = [s.path for s in cfg.data.real_sources]
        result[kind] = summary
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m models.lpdc.training --kind lpdc|ode --preset small --out CKPT`: one model, logged to stdout."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", choices=["lpdc", "ode"], default="lpdc")
    ap.add_argument("--preset", choices=["tiny", "small", "full"], default="small")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    ap.add_argument("--workers", type=int, default=1, help="data worker processes")
    ap.add_argument("--no-real", action="store_true", help="procedural data only")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--real-fraction", type=float, default=None, help="fraction of examples from real sequences")
    ap.add_argument("--snapshot-every", type=int, default=0, help="also save a checkpoint every N steps")
    ap.add_argument("--stage", choices=["full", "occupancy"], default="full",
                    help="occupancy = warm-up of spatial encoder + decoder (preset 'warmup' data)")
    ap.add_argument("--init", type=Path, default=None, help="initialise matching tensors from this checkpoint")
    ap.add_argument("--summary", type=Path, default=None, help="write the training summary JSON here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = preset(a.preset, a.kind, data_root=None if a.no_real else _shared_root())
    if a.stage == "occupancy":
        cfg = warmup_config(cfg)
    tr = cfg.train
    if a.steps is not None:
        tr = replace(tr, steps=a.steps)
    if a.max_minutes is not None:
        tr = replace(tr, max_minutes=a.max_minutes)
    if a.batch_size is not None:
        tr = replace(tr, batch_size=a.batch_size)
    if a.lr is not None:
        tr = replace(tr, lr=a.lr)
    cfg = replace(cfg, train=tr)
    if a.real_fraction is not None and cfg.data.real_sources:
        cfg = replace(cfg, data=replace(cfg.data, real_fraction=a.real_fraction))

    def log(step: int, losses: dict) -> None:
        print(f"[{a.kind}] step {step:6d}  " + "  ".join(f"{k} {v:.4f}" for k, v in losses.items()), flush=True)

    _, summary = train(cfg, a.out, device=a.device, seed=a.seed, workers=a.workers,
                       ode_bwd_points=ODE_SUBSETS[a.preset][0], ode_corr_points=ODE_SUBSETS[a.preset][1],
                       progress=log, snapshot_every=a.snapshot_every, stage=a.stage, init=a.init)
    if summary["rank"] != 0:
        return 0
    summary["checkpoint"] = str(a.out)
    summary["real_data"] = [s.path for s in cfg.data.real_sources]
    summary["config"] = to_dict(cfg)
    if a.summary is not None:
        write_text_atomic(a.summary, json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("kind", "steps", "seconds", "final_losses")}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
