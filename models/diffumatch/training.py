"""Training of the DiffuMatch prior: `nrstudio train diffumatch --preset tiny|small|full`.

Data: functional maps (k = 30) between members of registered collections (data.py): the procedural
skinned creatures and the constant-connectivity sequences in ../shared/data/sequences (horse-gallop,
samba) when present. None of the evaluation shapes (TOSCA cat / lion, camel-gallop) is used.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fusion.device import torch_device
from fusion.paths import shared_data_dir

from . import data
from .prior import Denoiser, PriorConfig, default_weights_path, edm_loss, maps_to_tensor, prior_mask, random_signs, save_prior


@dataclass(frozen=True)
class TrainConfig:
    """One training run of the prior."""

    steps: int = 2000
    batch: int = 32
    lr: float = 3e-3
    k: int = 30
    dim: int = 64
    depth: int = 3
    patch: int = 5
    n_procedural: int = 32
    """members per procedural template (3 templates)."""
    use_sequences: bool = True
    """add ../shared/data/sequences/{horse-gallop,samba} when present."""
    max_pairs_per_collection: int = 1500
    val_fraction: float = 0.1
    ema: float = 0.999
    seed: int = 0


PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(steps=60, batch=32, n_procedural=6, use_sequences=False, dim=32, depth=2, max_pairs_per_collection=60),
    "small": TrainConfig(),
    "full": TrainConfig(steps=20000, batch=64, n_procedural=64, dim=96, depth=4, max_pairs_per_collection=4000),
}


resolve_device = torch_device  # the old name (app.commands.match imports it): str -> torch.device


def build_maps(cfg: TrainConfig, progress: Callable[[float, str], None] | None = None) -> tuple[np.ndarray, list[str]]:
    """All training maps float32 [P, k, k] and a description of the collections used."""
    rng = np.random.default_rng(cfg.seed)
    cols = data.procedural_collections(cfg.n_procedural, seed=cfg.seed)
    if cfg.use_sequences:
        seq = shared_data_dir() / "sequences"
        for name in ("horse-gallop", "samba"):
            if (seq / name).is_dir():
                cols.append(data.folder_collection(seq / name))
    maps, used = [], []
    for i, col in enumerate(cols):
        if progress:
            progress(i / len(cols), f"spectra of {col.name}")
        shapes = data.collection_bases(col, k=cfg.k)
        m = data.identity_maps(shapes, k=cfg.k, max_pairs=cfg.max_pairs_per_collection, rng=rng)
        maps.append(m)
        used.append(f"{col.name}: {len(col.verts)} members x {len(col.faces)} faces, {len(m)} maps")
    return np.concatenate(maps), used


def train_prior(cfg: TrainConfig, device: str = "auto", progress: Callable[[float, str], None] | None = None,
                maps: np.ndarray | None = None) -> tuple[Denoiser, dict]:
    """Train a denoiser on registered-shape maps (or on given `maps` float [P, k, k]); returns (EMA model
    with its prior mask set, summary dict with first / last training and validation losses)."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dev = resolve_device(device)
    if maps is None:
        maps, used = build_maps(cfg, progress)
    else:
        used = [f"given: {len(maps)} maps"]
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(maps))
    n_val = max(8, int(cfg.val_fraction * len(maps)))
    val = maps_to_tensor(maps[perm[:n_val]]).to(dev)
    tr = maps_to_tensor(maps[perm[n_val:]]).to(dev)
    sigma_data = float(tr.std())
    model = Denoiser(PriorConfig(k=maps.shape[-1], dim=cfg.dim, depth=cfg.depth, patch=cfg.patch, sigma_data=round(sigma_data, 4))).to(dev)
    ema = Denoiser(model.cfg).to(dev)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)

    def val_loss(m: Denoiser) -> float:
        g = torch.Generator().manual_seed(12345)
        m.eval()
        with torch.no_grad():
            vals = [float(edm_loss(m, random_signs(val, g), g)) for _ in range(4)]
        m.train()
        return float(np.mean(vals))

    val0 = val_loss(model)
    losses = []
    for step in range(cfg.steps):
        idx = torch.randint(0, len(tr), (cfg.batch,), generator=gen)
        x0 = random_signs(tr[idx], gen)
        loss = edm_loss(model, x0, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            d = min(cfg.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)
        losses.append(loss.item())
        if progress and (step % 50 == 0 or step == cfg.steps - 1):
            progress(step / cfg.steps, f"step {step} loss {np.mean(losses[-50:]):.4f}")
    ema.eval()
    ema.mask.copy_(prior_mask(ema, generator=torch.Generator().manual_seed(cfg.seed)).to(dev))
    n_first = max(1, min(50, len(losses) // 4))
    summary = {
        "config": asdict(cfg),
        "device": str(dev),
        "data": used,
        "n_maps_train": int(len(tr)),
        "n_maps_val": int(len(val)),
        "sigma_data": sigma_data,
        "train_loss_first": float(np.mean(losses[:n_first])),
        "train_loss_last": float(np.mean(losses[-n_first:])),
        "val_loss_init": val0,
        "val_loss_final_ema": val_loss(ema),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "seconds": time.perf_counter() - t0,
    }
    return ema.cpu(), summary


def train_cli(preset: str, out: Path | None, device: str, steps: int | None, seed: int) -> dict:
    """`nrstudio train diffumatch`: train the prior with a preset and write it to `out` (default: the
    shipped weights path assets/diffumatch/prior.pt). Returns the summary dict."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    cfg = PRESETS[preset]
    cfg = replace(cfg, seed=seed, **({"steps": steps} if steps else {}))
    with tqdm(total=1000, desc="diffumatch prior", mininterval=5) as bar:
        def progress(frac: float, msg: str) -> None:
            bar.n = int(1000 * frac)
            bar.set_postfix_str(msg, refresh=False)
            bar.refresh()

        model, summary = train_prior(cfg, device, progress)
    path = Path(out) if out is not None else default_weights_path()
    summary["command"] = f"nrstudio train diffumatch --preset {preset}" + (f" --steps {steps}" if steps else "") + f" --seed {seed}"
    save_prior(path, model, summary)
    summary["out"] = str(path)
    summary["size_bytes"] = path.stat().st_size
    return summary
