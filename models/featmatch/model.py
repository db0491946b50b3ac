"""The latent-coded implicit occupancy network Φ(x, z) and its per-layer features.

IM-Net style: x [3] ⊕ z [latent_dim] -> Linear -> LeakyReLU -> ... -> Linear -> occupancy logit.
Layer k (1-based) is the LeakyReLU output of the k-th linear layer; the last layer is the logit.
The matching code uses the *features* of chosen layers as a function of x only (the latent's
contribution to the first layer, W_z z + b, is precomputed once per latent: `latent_bias`).

A plain numpy reference of the features (`features_reference_np`) lives beside the torch path.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from fusion.device import torch_device
from fusion.errors import InputError

from .config import ModelConfig


class ImplicitDecoder(nn.Module):
    """Φ(x, z): occupancy logits of points x [..., P, 3] for codes z [..., latent_dim]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [3 + cfg.latent_dim, *cfg.hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1))
        # He init for LeakyReLU keeps the activations' scale through the depth (trains much faster than
        # PyTorch's default uniform init, which shrinks them layer by layer)
        for lin in self.layers:
            nn.init.kaiming_normal_(lin.weight, a=cfg.leaky_slope, nonlinearity="leaky_relu")
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Occupancy logits.

        x: float [B, P, 3] (or [P, 3]) points in the unit box; z: float [B, D] (or [D]) codes.
        Returns float [B, P] (or [P]) logits; sigmoid(logit) > 0.5 means inside.
        """
        c = self.latent_bias(z)  # [B, H1] or [H1]
        if x.dim() == 3 and c.dim() == 2:
            c = c[:, None, :]
        h = F.leaky_relu(x @ self.layers[0].weight[:, :3].T + c, self.cfg.leaky_slope)
        for lin in self.layers[1:-1]:
            h = F.leaky_relu(lin(h), self.cfg.leaky_slope)
        return self.layers[-1](h)[..., 0]

    def latent_bias(self, z: torch.Tensor) -> torch.Tensor:
        """The latent's contribution to the first layer, W_z z + b1: float [..., H1] for z [..., D]."""
        w = self.layers[0].weight
        return z @ w[:, 3:].T + self.layers[0].bias

    def feature_fn(self, layers: tuple[int, ...], weights: tuple[float, ...]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """A per-point feature function f(x [3], c [H1]) -> float [D_f] for torch.func (vmap/jacfwd).

        The features are the concatenation over `layers` (1-based) of sqrt(w_l) · h_l(x), so that the
        squared norm of a feature difference is Σ_l w_l ‖Δh_l‖². `c` is `latent_bias(z)`.
        """
        nl = self.cfg.num_layers
        if any(l < 1 or l > nl for l in layers):
            raise ValueError(f"feature layers must be in 1..{nl}, got {layers}")
        top = max(layers)
        wx = self.layers[0].weight[:, :3].detach()
        lins = [(lin.weight.detach(), lin.bias.detach()) for lin in self.layers[1:top]]
        scales = {l: float(np.sqrt(w)) for l, w in zip(layers, weights)}
        slope = self.cfg.leaky_slope
        last = nl  # the logit layer has no activation

        def f(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            # F.linear (not `w @ h`): its vmap/jvp batching rules turn into single GEMMs
            h = F.linear(x, wx, c)
            if last != 1:
                h = F.leaky_relu(h, slope)
            out = [scales[1] * h] if 1 in scales else []
            for k, (w, b) in enumerate(lins, start=2):
                h = F.linear(h, w, b)
                if k != last:
                    h = F.leaky_relu(h, slope)
                if k in scales:
                    out.append(scales[k] * h)
            return torch.cat(out)

        return f


    def feature_jacobian_fn(self, layers: tuple[int, ...], weights: tuple[float, ...]) -> "FeatureJacobian":
        """The batched features *and* their x-Jacobians of all points at once (see FeatureJacobian)."""
        return FeatureJacobian(self, layers, weights)


class FeatureJacobian:
    """Weighted layer features of Φ(·, z) and their Jacobians w.r.t. x, batched over points.

    Forward-mode differentiation written out for the MLP: with pre-activations a_k = W_k h_{k-1} + b_k
    and LeakyReLU slopes m_k = (a_k > 0 ? 1 : slope), the Jacobian of layer k along the direction e_i
    is J_k e_i = m_k ⊙ (W_k J_{k-1} e_i): one GEMM of [3V, H_{k-1}] × [H_{k-1}, H_k] per layer for all V
    points, so the cost is ≈ 4 forward passes (torch.func.jacfwd under vmap gives the same numbers but is
    slower on CPU; `ImplicitDecoder.feature_fn` + jacfwd is the reference it is tested on).
    Jacobians are stored direction-major, jt float [3, V, D_f] (jt[i, v] = ∂f(x_v)/∂x_i), which keeps
    every GEMM and mask product contiguous. Features are concat_l sqrt(w_l) h_l (as feature_fn), so
    ‖Δf‖² = Σ_l w_l ‖Δh_l‖².
    """

    def __init__(self, decoder: ImplicitDecoder, layers: tuple[int, ...], weights: tuple[float, ...]) -> None:
        nl = decoder.cfg.num_layers
        if any(l < 1 or l > nl for l in layers):
            raise ValueError(f"feature layers must be in 1..{nl}, got {layers}")
        self.top = max(layers)
        self.nl = nl
        self.slope = decoder.cfg.leaky_slope
        self.wx_t = decoder.layers[0].weight[:, :3].detach().T.contiguous()          # [3, H1]
        self.lins = [(lin.weight.detach().T.contiguous(), lin.bias.detach()) for lin in decoder.layers[1:self.top]]
        self.scales = {l: float(np.sqrt(w)) for l, w in zip(layers, weights)}

    def _act(self, a: torch.Tensor, k: int) -> torch.Tensor:
        return a if k == self.nl else F.leaky_relu(a, self.slope)  # the logit layer has no activation

    def _slopes(self, a: torch.Tensor) -> torch.Tensor:
        """LeakyReLU derivative (1 or slope) of pre-activations a, in a's dtype."""
        one = torch.ones((), dtype=a.dtype, device=a.device)
        return torch.where(a > 0, one, one * self.slope)

    def features(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Features float [V, D_f] of points x float [V, 3] for the first-layer latent bias c [H1]."""
        h = self._act(x @ self.wx_t + c, 1)
        out = [self.scales[1] * h] if 1 in self.scales else []
        for k, (wt, b) in enumerate(self.lins, start=2):
            h = self._act(torch.addmm(b, h, wt), k)
            if k in self.scales:
                out.append(self.scales[k] * h)
        return torch.cat(out, dim=-1)

    def features_and_jacobian(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features float [V, D_f], Jacobians ∂f/∂x direction-major float [3, V, D_f]) of x float [V, 3]."""
        a = x @ self.wx_t + c
        h = self._act(a, 1)
        jt = self.wx_t.unsqueeze(1).expand(3, x.shape[0], -1)
        if self.nl != 1:
            jt = jt * self._slopes(a)
        fs, js = ([self.scales[1] * h], [self.scales[1] * jt]) if 1 in self.scales else ([], [])
        for k, (wt, b) in enumerate(self.lins, start=2):
            a = torch.addmm(b, h, wt)
            h = self._act(a, k)
            jt = torch.matmul(jt, wt)
            if k != self.nl:
                jt.mul_(self._slopes(a))
            if k in self.scales:
                fs.append(self.scales[k] * h)
                js.append(self.scales[k] * jt)
        return torch.cat(fs, dim=-1), torch.cat(js, dim=-1)


def features_reference_np(params: list[tuple[np.ndarray, np.ndarray]], slope: float, x: np.ndarray, z: np.ndarray,
                          layers: tuple[int, ...], weights: tuple[float, ...]) -> np.ndarray:
    """Slow, obvious numpy reference of the weighted layer features for one code.

    params: [(W_k [out, in], b_k [out])] of every linear layer (the first takes x ⊕ z);
    x: float [V, 3]; z: float [D]. Returns float64 [V, D_f] = concat_l sqrt(w_l) h_l(x, z).
    """
    nl = len(params)
    out = []
    for v in range(len(x)):
        h = np.concatenate([x[v], z]).astype(np.float64)
        feats = []
        for k, (w, b) in enumerate(params, start=1):
            h = w.astype(np.float64) @ h + b.astype(np.float64)
            if k != nl:
                h = np.where(h > 0, h, slope * h)
            if k in layers:
                feats.append(np.sqrt(weights[layers.index(k)]) * h)
        out.append(np.concatenate(feats))
    return np.asarray(out)


resolve_device = torch_device  # the old name (training, bench, app.commands.deform import it): str -> torch.device


def save_checkpoint(path: str | Path, decoder: ImplicitDecoder, train_codes: torch.Tensor, meta: dict) -> None:
    """Write the decoder, the training codes [S, D] and metadata atomically (torch.save)."""
    from fusion.atomic import atomic_path

    payload = {
        "format": "nrstudio-featmatch-1",
        "model": asdict(decoder.cfg),
        "state_dict": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
        "train_codes": train_codes.detach().cpu().to(torch.float32),
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[ImplicitDecoder, torch.Tensor, dict]:
    """Load (decoder in eval mode, training codes float [S, D], metadata); InputError on a bad file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such weights file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
        m = payload["model"]
        cfg = ModelConfig(latent_dim=int(m["latent_dim"]), hidden=tuple(int(h) for h in m["hidden"]),
                          leaky_slope=float(m["leaky_slope"]))
        dec = ImplicitDecoder(cfg)
        dec.load_state_dict(payload["state_dict"])
        codes = payload["train_codes"]
        meta = payload.get("meta", {})
    except Exception as e:
        raise InputError(f"{p}: not a featmatch checkpoint ({type(e).__name__}: {e})") from e
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    dec = dec.to(dev).eval()
    for prm in dec.parameters():
        prm.requires_grad_(False)
    return dec, codes.to(dev), meta
