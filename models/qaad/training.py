"""Training of the decoders (paper §3.4): QAAD (assignment MSE with QAAD_GREEDY + QAAD_REASSIGNMENT) or
augmented Chamfer (the comparison / baseline mode). Adam, sample-based steps, a time and/or step budget.

Progress goes to a callback `progress(fraction: float, message: str)`; `cancel` is a callable returning
True (or a threading.Event) to stop: the run then raises `Cancelled` at the next step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fusion.device import torch_device
from fusion.errors import NRStudioError
from models.common.metrics import augmented_chamfer_torch
from models.qaad.assignment import ReassignConfig, greedy_assignment, reassignment_step

ProgressFn = Callable[[float, str], None]


class Cancelled(NRStudioError):
    """The caller asked to stop (cancel flag set)."""

    exit_code = 130


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    mode: "qaad" (assignment MSE, paper §3.4) or "chamfer" (augmented Chamfer, eq. 11, on samples).
    steps: maximum optimizer steps; seconds: wall-clock budget (None = no limit; one of them must be set).
    batch: clouds per step. samples: points decoded per cloud per step (paper: 2048-4096), drawn as
        samples // K per patch. lr: Adam learning rate (paper: 1e-3); after `decay_at` of the budget
        (fraction of steps or time, whichever is further) it is multiplied by `decay`.
    greedy_leaf: leaf size of the initial QAAD_GREEDY assignment. reassign_every: run QAAD_REASSIGNMENT
        every this many steps (0 = never) on `reassign_clouds` clouds of the step's batch. reassign: its
        settings.
    clock: what `seconds` counts: "wall" (elapsed time) or "process" (this process's CPU time, fairer
        when other jobs share the machine; with one torch thread it is the compute spent).
    seed: seeds torch and numpy. device: "auto" | "cpu" | "cuda".
    """

    mode: str = "qaad"
    steps: int | None = 2000
    seconds: float | None = None
    batch: int = 4
    samples: int = 4096
    lr: float = 1e-3
    decay_at: float = 0.8
    decay: float = 0.2
    greedy_leaf: int = 64
    reassign_every: int = 4
    reassign_clouds: int = 1
    reassign: ReassignConfig = ReassignConfig()
    clock: str = "wall"
    seed: int = 0
    device: str = "auto"


@dataclass
class FitResult:
    """What a training run did: steps, seconds (on the config's clock), loss history (step, mean loss) every
    25 steps, assignment swaps applied by QAAD_REASSIGNMENT, the final assignments perms int64 [I, N] (qaad
    mode, else None)."""

    steps: int
    seconds: float
    history: list[tuple[int, float]] = field(default_factory=list)
    swaps: int = 0
    perms: np.ndarray | None = None

    @property
    def first_loss(self) -> float:
        """Mean loss over the first logged window."""
        return self.history[0][1] if self.history else float("nan")

    @property
    def last_loss(self) -> float:
        """Mean loss over the last logged window."""
        return self.history[-1][1] if self.history else float("nan")


resolve_device = torch_device  # the old name (models.qaad.inference imports it): str -> torch.device


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


@torch.no_grad()
def decode_numpy(model, instances: np.ndarray | list[int], device: torch.device | None = None, chunk: int = 8) -> np.ndarray:
    """Decode clouds of `instances` with `model` (in its normalised frame): float32 [len, N, 3]."""
    dev = device or next(model.parameters()).device
    out = []
    idx = torch.as_tensor(np.asarray(instances), dtype=torch.long, device=dev)
    for s in range(0, len(idx), chunk):
        out.append(model.decode_all(idx[s : s + chunk]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.n_points, 3), np.float32)


def initial_assignments(model, targets: np.ndarray, leaf_size: int, cancel=None,
                        progress: ProgressFn | None = None) -> np.ndarray:
    """QAAD_GREEDY for every cloud: perms int64 [I, N] from the decoder's current outputs to targets
    float [I, N, 3]."""
    perms = np.empty(targets.shape[:2], np.int64)
    for i in range(len(targets)):
        if _cancelled(cancel):
            raise Cancelled("cancelled")
        y = decode_numpy(model, [i])[0]
        perms[i] = greedy_assignment(y, targets[i], leaf_size=leaf_size)
        if progress:
            progress((i + 1) / len(targets), f"greedy assignment {i + 1}/{len(targets)}")
    return perms


def fit(model, targets: np.ndarray, config: TrainConfig, progress: ProgressFn | None = None, cancel=None,
        perms: np.ndarray | None = None) -> FitResult:
    """Train `model` (QAADDecoder / AtlasNetV2Decoder for I clouds) on targets float [I, N, 3] (normalised
    frame). In "qaad" mode `perms` (int64 [I, N]) continues earlier assignments, else QAAD_GREEDY makes
    them (its time counts toward the budget). Returns a FitResult; raises Cancelled when cancel is set."""
    if config.steps is None and config.seconds is None:
        raise ValueError("set steps or seconds")
    if config.mode not in ("qaad", "chamfer"):
        raise ValueError(f"unknown training mode {config.mode!r} (qaad|chamfer)")
    dev = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model.to(dev).train()
    cfg = model.cfg
    n_inst, n = targets.shape[:2]
    if n != cfg.n_points:
        raise ValueError(f"targets have {n} points, the model decodes {cfg.n_points}")
    k, m_all = cfg.patches, cfg.per_patch
    m = max(1, min(m_all, config.samples // k))
    x_t = torch.as_tensor(np.asarray(targets, np.float32), device=dev)
    if config.clock not in ("wall", "process"):
        raise ValueError(f"unknown clock {config.clock!r} (wall|process)")
    clock = time.perf_counter if config.clock == "wall" else time.process_time
    t0 = clock()

    def fraction(step: int) -> float:
        f = 0.0
        if config.steps:
            f = max(f, step / config.steps)
        if config.seconds:
            f = max(f, (clock() - t0) / config.seconds)
        return min(f, 1.0)

    swaps = 0
    if config.mode == "qaad":
        if perms is None:
            sub = (lambda f, msg: progress(0.0, msg)) if progress else None
            perms = initial_assignments(model, np.asarray(targets), config.greedy_leaf, cancel, sub)
        perms = np.array(perms, dtype=np.int64)
        perms_t = torch.as_tensor(perms, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    decayed = False
    history: list[tuple[int, float]] = []
    window: list[float] = []
    step = 0
    log_every = 25
    while fraction(step) < 1.0:
        if _cancelled(cancel):
            raise Cancelled("cancelled")
        if not decayed and fraction(step) >= config.decay_at:
            for g in opt.param_groups:
                g["lr"] = config.lr * config.decay
            decayed = True
        inst_np = rng.choice(n_inst, size=min(config.batch, n_inst), replace=False)
        inst = torch.as_tensor(inst_np, device=dev)
        local = torch.as_tensor(np.sort(rng.choice(m_all, size=m, replace=False)), device=dev)
        out = model(inst, local)  # [B, K, m, 3]
        gidx = (torch.arange(k, device=dev)[:, None] * m_all + local[None, :]).reshape(-1)  # [K*m]
        valid = gidx < n
        y = out.reshape(len(inst_np), -1, 3)[:, valid]
        if config.mode == "qaad":
            tgt_idx = perms_t[inst][:, gidx[valid]]  # [B, S]
            tgt = torch.gather(x_t[inst], 1, tgt_idx[..., None].expand(-1, -1, 3))
            loss = (y - tgt).square().sum(-1).mean()
        else:
            j = torch.as_tensor(rng.choice(n, size=y.shape[1], replace=False), device=dev)
            loss = augmented_chamfer_torch(y, x_t[inst][:, j]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        window.append(float(loss.detach()))
        if len(window) == log_every:
            history.append((step, float(np.mean(window))))
            window = []
            if progress:
                progress(fraction(step), f"step {step} loss {history[-1][1]:.3g}")
        if config.mode == "qaad" and config.reassign_every and step % config.reassign_every == 0:
            sel = inst_np[: config.reassign_clouds]
            model.eval()
            ys = decode_numpy(model, sel, dev)
            model.train()
            for b, i in enumerate(sel):
                perms[i], s = reassignment_step(ys[b], targets[i], perms[i], rng, config.reassign)
                swaps += s
            perms_t[torch.as_tensor(sel, device=dev)] = torch.as_tensor(perms[sel], device=dev)
    if window:
        history.append((step, float(np.mean(window))))
    model.eval()
    return FitResult(step, clock() - t0, history, swaps, perms if config.mode == "qaad" else None)
