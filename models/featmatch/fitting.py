"""Latent codes for new shapes by optimisation with the network fixed (autodecoder inference).

z* = argmin_z  BCE(Φ(x_i, z), o_i) + code_reg·‖z‖², started from the mean training code, Adam.
Deterministic for a given input and seed, so identical shapes get identical codes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from fusion.errors import InputError
from models.common.io import Mesh

from .config import FitConfig, SampleConfig
from .data import occupancy_samples
from .model import ImplicitDecoder


def fit_latent(decoder: ImplicitDecoder, points: np.ndarray, occupancy: np.ndarray, init: torch.Tensor | None = None,
               cfg: FitConfig = FitConfig(), progress: Callable[[float, str], None] | None = None) -> tuple[torch.Tensor, float]:
    """Optimise a code for occupancy samples (points float [M, 3] unit box, occupancy float [M] in [0, 1]).

    init: float [D] start code (default zeros). Returns (code float32 [D] on the decoder's device,
    final BCE of the full sample set).
    """
    dev = next(decoder.parameters()).device
    if len(points) == 0:
        raise InputError("latent fitting: no occupancy samples")
    x_all = torch.as_tensor(np.asarray(points, dtype=np.float32), device=dev)
    y_all = torch.as_tensor(np.asarray(occupancy, dtype=np.float32), device=dev)
    D = decoder.cfg.latent_dim
    z = (init.detach().clone().to(dev, torch.float32) if init is not None else torch.zeros(D, device=dev)).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    req = [p.requires_grad for p in decoder.parameters()]
    for p in decoder.parameters():
        p.requires_grad_(False)
    try:
        for it in range(cfg.iters):
            idx = torch.randint(0, len(x_all), (min(cfg.points, len(x_all)),), generator=gen).to(dev)
            loss = F.binary_cross_entropy_with_logits(decoder(x_all[idx], z), y_all[idx]) + cfg.code_reg * (z * z).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress is not None and (it + 1) % 25 == 0:
                progress((it + 1) / cfg.iters, f"fitting the latent code {it + 1}/{cfg.iters}")
        with torch.no_grad():
            final = float(F.binary_cross_entropy_with_logits(decoder(x_all, z), y_all))
    finally:
        for p, r in zip(decoder.parameters(), req):
            p.requires_grad_(r)
    return z.detach(), final


def best_code(decoder: ImplicitDecoder, points: np.ndarray, occupancy: np.ndarray, codes: torch.Tensor,
              max_points: int = 2048) -> torch.Tensor:
    """The row of `codes` (float [S, D]) with the lowest BCE on (the first `max_points` of) the samples.

    points float [M, 3] unit box, occupancy float [M]; one batched forward of S × max_points points.
    """
    dev = next(decoder.parameters()).device
    x = torch.as_tensor(np.asarray(points[:max_points], dtype=np.float32), device=dev)
    y = torch.as_tensor(np.asarray(occupancy[:max_points], dtype=np.float32), device=dev)
    c = codes.to(dev, torch.float32)
    with torch.inference_mode():
        logits = decoder(x.expand(len(c), -1, -1), c)  # [S, P]
        bce = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none").mean(1)
    return c[int(bce.argmin())].clone()


def fit_shape(decoder: ImplicitDecoder, mesh: Mesh, init: torch.Tensor | None = None, fit: FitConfig = FitConfig(),
              samples: SampleConfig = SampleConfig(), progress: Callable[[float, str], None] | None = None,
              train_codes: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Code of a mesh or point cloud already normalised into the unit box (see data.occupancy_samples).

    Start: with fit.init == 'best' and `train_codes` (float [S, D]) given, the training code that
    explains the samples best (`best_code`); otherwise `init` (e.g. the mean training code) or zeros.
    """
    rng = np.random.default_rng(fit.seed)
    pts, occ = occupancy_samples(mesh, samples, rng)
    if fit.init == "best" and train_codes is not None and len(train_codes):
        init = best_code(decoder, pts, occ, train_codes)
    return fit_latent(decoder, pts, occ, init, fit, progress)


def occupancy_iou(decoder: ImplicitDecoder, z: torch.Tensor, points: np.ndarray, occupancy: np.ndarray) -> float:
    """IoU of the decoded occupancy (logit > 0) with reference occupancy [M] at points [M, 3]."""
    dev = next(decoder.parameters()).device
    with torch.no_grad():
        pred = (decoder(torch.as_tensor(np.asarray(points, dtype=np.float32), device=dev), z.to(dev)) > 0).cpu().numpy()
    ref = np.asarray(occupancy) > 0.5
    union = (pred | ref).sum()
    return float((pred & ref).sum() / union) if union else 1.0
