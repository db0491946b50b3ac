"""The DiffuMatch prior: a denoiser D(C_noisy, sigma) over k x k functional maps (reference k = 30).

A tiny DiT sees the map as a k x k image cut into 5 x 5 patches (learned position embeddings, since the
position of an entry is its pair of frequencies) and is conditioned on the noise level by adaLN-Zero.
EDM preconditioning (Karras et al. 2022):
    D(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, c_noise(s)),
    c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2),
    c_noise = ln(s) / 4, trained by denoising score matching with weight (s^2 + sd^2) / (s sd)^2 and
    ln(s) ~ N(P_mean, P_std^2).
Maps are augmented with random eigenvector signs (C -> S2 C S1, S diagonal +-1) because Laplacian
eigenvectors have no canonical sign, so the prior is sign-invariant. `sds_loss` gives the score-
distillation gradient C - D(C + s eps, s) for a map that is being optimised.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion.errors import InputError
from fusion.paths import ASSETS


@dataclass(frozen=True)
class PriorConfig:
    """Shape and EDM hyper-parameters of the denoiser."""

    k: int = 30
    """map size (k x k)."""
    dim: int = 64
    """transformer width."""
    depth: int = 3
    """transformer blocks."""
    patch: int = 5
    """patch size (the map is cut into patch x patch tiles)."""
    sigma_data: float = 0.17
    """standard deviation of the map entries over the training set (EDM sigma_data)."""
    p_mean: float = -1.2
    """mean of ln(sigma) during training."""
    p_std: float = 1.2
    """std of ln(sigma) during training."""


def default_weights_path() -> Path:
    """The shipped prior weights: assets/diffumatch/prior.pt."""
    return ASSETS / "diffumatch" / "prior.pt"


class _DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on the noise embedding (DiT, Peebles & Xie 2023)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.n1 = nn.LayerNorm(d, elementwise_affine=False)
        self.n2 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.heads = heads
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
        self.mod = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.mod(F.silu(e))[:, None].chunk(6, dim=-1)
        h = self.n1(x) * (1 + sc1) + sh1
        B, T, D = h.shape
        q, k, v = self.qkv(h).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D)
        x = x + g1 * self.proj(o)
        return x + g2 * self.mlp(self.n2(x) * (1 + sc2) + sh2)


class MapDiT(nn.Module):
    """F(x, c_noise): [B, k, k] x [B] -> [B, k, k]; a tiny DiT on the map cut into p x p patches with
    learned position embeddings (the position of an entry is its pair of frequencies)."""

    def __init__(self, k: int = 30, patch: int = 5, dim: int = 64, depth: int = 3, heads: int = 4):
        super().__init__()
        self.k, self.patch = k, patch
        self.kp = -(-k // patch) * patch  # k padded to a multiple of the patch size
        g = self.kp // patch
        self.embed = nn.Linear(patch * patch, dim)
        self.pos = nn.Parameter(torch.randn(1, g * g, dim) * 0.02)
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(100.0), 16)), persistent=False)
        self.temb = nn.Sequential(nn.Linear(32, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList([_DiTBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.out = nn.Linear(dim, patch * patch)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        B, k, p, kp = x.shape[0], self.k, self.patch, self.kp
        g = kp // p
        if kp != k:
            x = F.pad(x, (0, kp - k, 0, kp - k))
        t = x.reshape(B, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(B, g * g, p * p)
        h = self.embed(t) + self.pos
        ang = c_noise[:, None] * self.freqs[None]
        e = self.temb(torch.cat([torch.sin(ang), torch.cos(ang)], dim=1))
        for blk in self.blocks:
            h = blk(h, e)
        o = self.out(self.norm(h)).reshape(B, g, g, p, p).permute(0, 1, 3, 2, 4).reshape(B, kp, kp)
        return o[:, :k, :k]


class Denoiser(nn.Module):
    """EDM-preconditioned denoiser D(x [B, k, k], sigma [B]) -> estimate of the clean map [B, k, k]."""

    def __init__(self, cfg: PriorConfig = PriorConfig()):
        super().__init__()
        self.cfg = cfg
        self.net = MapDiT(cfg.k, cfg.patch, cfg.dim, cfg.depth)
        self.register_buffer("mask", torch.zeros(cfg.k, cfg.k))  # prior-derived FMReg mask (see prior_mask)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sd = self.cfg.sigma_data
        s = sigma.reshape(-1, 1, 1).to(x.dtype)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        c_in = 1 / torch.sqrt(s**2 + sd**2)
        c_noise = torch.log(s.reshape(-1)) / 4
        return c_skip * x + c_out * self.net(c_in * x, c_noise)


def random_signs(maps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """C -> S2 C S1 with random diagonal sign matrices (first eigenfunction, the constant, keeps +)."""
    B, k, _ = maps.shape
    s = torch.randint(0, 2, (2, B, k), generator=generator, device=maps.device).to(maps.dtype) * 2 - 1
    s[:, :, 0] = 1
    return s[0][:, :, None] * maps * s[1][:, None, :]


def edm_loss(model: Denoiser, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score-matching loss (EDM weighting) of clean maps x0 [B, k, k]; a scalar tensor."""
    cfg = model.cfg
    B = x0.shape[0]
    ln_s = torch.randn(B, generator=generator, device=x0.device) * cfg.p_std + cfg.p_mean
    sigma = torch.exp(ln_s).to(x0.dtype)
    n = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) * sigma[:, None, None]
    D = model(x0 + n, sigma)
    w = (sigma**2 + cfg.sigma_data**2) / (sigma * cfg.sigma_data) ** 2
    return (w[:, None, None] * (D - x0) ** 2).mean()


@torch.no_grad()
def sample(model: Denoiser, n: int, steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 3.0,
           rho: float = 7.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw n maps [n, k, k] from the prior with EDM's deterministic Heun sampler."""
    dev = next(model.parameters()).device
    i = torch.arange(steps, dtype=torch.float64)
    t = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = torch.cat([t, torch.zeros(1, dtype=torch.float64)]).float().to(dev)
    x = torch.randn((n, model.cfg.k, model.cfg.k), generator=generator).to(dev) * t[0]
    for a, b in zip(t[:-1], t[1:]):
        d = (x - model(x, a.expand(n))) / a
        x_next = x + (b - a) * d
        if b > 0:
            d2 = (x_next - model(x_next, b.expand(n))) / b
            x_next = x + (b - a) * 0.5 * (d + d2)
        x = x_next
    return x


@torch.no_grad()
def prior_mask(model: Denoiser, n: int = 128, eps: float = 1e-3, generator: torch.Generator | None = None) -> torch.Tensor:
    """The FMReg mask derived from the denoiser [k, k]: from prior samples C, v_ij = E[C_ij^2] and
    mask_ij = 1 / (v_ij + eps) - min (a Gaussian MAP penalty), scaled to mean 1. Entries the prior keeps
    small (far from the diagonal) get a large penalty; frequencies that correspond get ~0."""
    C = sample(model, n, generator=generator)
    v = (C**2).mean(0)
    m = 1.0 / (v + eps)
    m = m - m.min()
    return m / m.mean().clamp_min(1e-12)


def sds_loss(model: Denoiser, C: torch.Tensor, sigma_min: float = 0.02, sigma_max: float = 0.5,
             n_samples: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Score-distillation loss of maps C [B, k, k] (or [k, k]) under the prior; its gradient w.r.t. C is
    mean over samples of (C - D(C + s eps, s)) with ln s ~ U(ln sigma_min, ln sigma_max), i.e. the SDS
    gradient w(s) (eps_hat - eps) with w(s) = s. The denoiser gets no gradient. Returns a scalar."""
    if C.dim() == 2:
        C = C[None]
    k = model.cfg.k
    if C.shape[-1] != k or C.shape[-2] != k:
        raise ValueError(f"the prior is for {k}x{k} maps, got {tuple(C.shape[-2:])}")
    B = C.shape[0]
    Cr = C.detach().repeat(n_samples, 1, 1)
    u = torch.rand(Cr.shape[0], generator=generator).to(C.device)
    sigma = torch.exp(math.log(sigma_min) + u * (math.log(sigma_max) - math.log(sigma_min))).to(C.dtype)
    noise = torch.randn(Cr.shape, generator=generator).to(C.device, C.dtype)
    with torch.no_grad():
        D = model(Cr + sigma[:, None, None] * noise, sigma)
    target = D.reshape(n_samples, B, k, k).mean(0)
    return 0.5 * ((C - target) ** 2).sum() / B


def save_prior(path: str | Path, model: Denoiser, meta: dict) -> None:
    """Write the denoiser (config, weights, mask, `meta`) atomically as a torch checkpoint."""
    from fusion.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"config": asdict(model.cfg), "state": model.state_dict(), "meta": meta}, tmp)


def load_prior(path: str | Path | None = None, device: str | torch.device = "cpu") -> Denoiser:
    """Load a denoiser saved by `save_prior` (default: the shipped weights). InputError if missing/corrupt."""
    p = Path(path) if path is not None else default_weights_path()
    if not p.exists():
        raise InputError(f"{p}: no prior weights (train them with `nrstudio train diffumatch`)")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=False)
        model = Denoiser(PriorConfig(**ck["config"]))
        model.load_state_dict(ck["state"])
    except Exception as e:
        raise InputError(f"{p}: cannot read prior weights ({type(e).__name__}: {e})") from e
    model.meta = ck.get("meta", {})  # type: ignore[attr-defined]
    return model.to(device).eval()


def maps_to_tensor(maps: np.ndarray) -> torch.Tensor:
    """float maps [P, k, k] -> float32 tensor (a copy)."""
    return torch.as_tensor(np.ascontiguousarray(maps), dtype=torch.float32).clone()
