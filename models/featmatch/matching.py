"""Implicit feature matching (paper §2.2): track vertices through the features of Φ while the latent
moves linearly from the source code to the target code.

At interpolation step t (t = 0..T-1) with z_t = z_src + (t/T)(z_tgt - z_src), every vertex x solves

    δ* = argmin_δ  ‖Φ_f(x + δ, z_{t+1}) - Φ_f(x, z_t)‖² + λ‖δ‖²                 (eq. 7)

by N Gauss-Newton iterations; at the iterate δ_k with r_k = Φ_f(x + δ_k, z_{t+1}) - Φ_f(x, z_t) and
J_k = ∂Φ_f/∂x (x + δ_k, z_{t+1}):

    δ_{k+1} = (J_kᵀ J_k + λ I)^{-1} (J_kᵀ J_k δ_k - J_kᵀ r_k)                     (eq. 8)

(the exact minimiser of the linearised energy, so on a linear feature map one iteration is the closed
form). Φ_f are the weighted features of the chosen layers (model.ImplicitDecoder.feature_fn).
Jacobians: model.FeatureJacobian, forward-mode differentiation written out for the MLP and batched
over all vertices (one GEMM per layer); MatchConfig.jacobian = 'jacfwd' uses torch.func.jacfwd under
torch.func.vmap instead (same numbers, slower on CPU; the tests check one against the other). The
step of a vertex is clipped to `search_radius`, so trajectories stay continuous.

Array convention: vertices float [V, 3] in the unit box; codes float [D].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
from torch.func import jacfwd, vmap

from fusion.errors import NRStudioError

from .config import MatchConfig
from .model import FeatureJacobian, ImplicitDecoder


class ProgressFn(Protocol):
    """progress(fraction in [0, 1], message) — called from the computing thread."""

    def __call__(self, fraction: float, message: str) -> None: ...


class DeformationCancelled(NRStudioError):
    """The caller's cancel() returned True; the deformation stopped between two steps."""

    exit_code = 130


@dataclass
class MatchResult:
    """Result of feature matching.

    vertices: float32 [V, 3] final positions (unit box); trajectory: float32 [T+1, V, 3] or None;
    max_step: float, the longest single-step displacement of any vertex; residual: float, mean final
    feature residual ‖Φ_f(x_T, z_tgt) - Φ_f(x_{T-1}, z_{T-1})‖ of the last step.
    """

    vertices: np.ndarray
    trajectory: np.ndarray | None
    max_step: float
    residual: float


def gauss_newton_update(jac: torch.Tensor, res: torch.Tensor, delta: torch.Tensor, reg: float) -> torch.Tensor:
    """One Gauss-Newton update of eq. 8, batched.

    jac: float [V, D, 3] Jacobian of the features at x + δ_k; res: float [V, D] residual r_k;
    delta: float [V, 3] current δ_k; reg: λ >= 0. Returns δ_{k+1} float [V, 3].
    """
    jtj = torch.einsum("vdi,vdj->vij", jac, jac)
    jtr = torch.einsum("vdi,vd->vi", jac, res)
    rhs = torch.einsum("vij,vj->vi", jtj, delta) - jtr
    eye = torch.eye(3, dtype=jac.dtype, device=jac.device)
    # a tiny floor keeps λ = 0 solvable where the features are locally flat (inactive for usual λ)
    lam = torch.clamp(1e-10 * (1.0 + jtj.diagonal(dim1=1, dim2=2).sum(-1)), min=reg)
    a = jtj + lam[:, None, None] * eye
    return torch.linalg.solve(a, rhs.unsqueeze(-1)).squeeze(-1)


def gauss_newton_update_reference(jac: np.ndarray, res: np.ndarray, delta: np.ndarray, reg: float) -> np.ndarray:
    """Slow numpy reference of `gauss_newton_update`: a per-vertex loop solving the 3x3 system."""
    out = np.zeros_like(delta, dtype=np.float64)
    for v in range(len(delta)):
        j = jac[v].astype(np.float64)
        a = j.T @ j + reg * np.eye(3)
        b = j.T @ j @ delta[v] - j.T @ res[v]
        out[v] = np.linalg.solve(a, b)
    return out


class JacfwdFeatures:
    """The torch.func path: features by `vmap(feature_fn)`, Jacobians by `vmap(jacfwd(feature_fn))`.

    Same interface as model.FeatureJacobian (features / features_and_jacobian, Jacobians direction-major
    [3, V, D_f]); several times slower on CPU, kept as the reference and as MatchConfig.jacobian='jacfwd'.
    `feat` is any per-point f(x [3], c [H1]) -> [D_f] (e.g. ImplicitDecoder.feature_fn).
    """

    def __init__(self, feat: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.feat = feat
        self._f = vmap(feat, in_dims=(0, None))
        self._j = vmap(jacfwd(lambda p, c: _dup(feat(p, c)), argnums=0, has_aux=True), in_dims=(0, None))

    def features(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """float [V, D_f] for x float [V, 3]."""
        return self._f(x, c)

    def features_and_jacobian(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float [V, D_f], float [3, V, D_f])."""
        jac, f = self._j(x, c)  # jac [V, D_f, 3]
        return f, jac.permute(2, 0, 1)


def _dup(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return f, f


def _clip(delta: torch.Tensor, radius: float | None) -> torch.Tensor:
    if radius is None or not np.isfinite(radius):
        return delta
    n = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(radius / n.clamp_min(1e-12), max=1.0)


def gauss_newton_update_t(jt: torch.Tensor, res: torch.Tensor, delta: torch.Tensor, reg: float) -> torch.Tensor:
    """`gauss_newton_update` for direction-major Jacobians jt float [3, V, D] (model.FeatureJacobian)."""
    jtj = torch.einsum("ivd,jvd->vij", jt, jt)
    jtr = torch.einsum("ivd,vd->vi", jt, res)
    rhs = (jtj @ delta.unsqueeze(-1)).squeeze(-1) - jtr
    lam = torch.clamp(1e-10 * (1.0 + jtj.diagonal(dim1=1, dim2=2).sum(-1)), min=reg)
    a = jtj + lam[:, None, None] * torch.eye(3, dtype=jt.dtype, device=jt.device)
    return torch.linalg.solve(a, rhs.unsqueeze(-1)).squeeze(-1)


def match_step(fj: "FeatureJacobian | JacfwdFeatures", x: torch.Tensor, f_ref: torch.Tensor, c_to: torch.Tensor,
               cfg: MatchConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One interpolation step for a batch of vertices (all at once).

    fj: batched features/Jacobians (model.FeatureJacobian or JacfwdFeatures); x: float [V, 3] current
    positions x_t; f_ref: float [V, D_f] their features Φ_f(x_t, z_t); c_to: first-layer latent bias of
    z_{t+1}. Returns (δ float [V, 3], new features Φ_f(x_t + δ, z_{t+1}) float [V, D_f] — the reference
    of the next step —, residual norm ‖Φ_f(x_t + δ, z_{t+1}) − f_ref‖ float [V]).
    """
    delta = torch.zeros_like(x)
    for _ in range(cfg.gn_iters):
        f, jt = fj.features_and_jacobian(x + delta, c_to)
        delta = _clip(gauss_newton_update_t(jt, f - f_ref, delta, cfg.reg), cfg.search_radius)
    f_new = fj.features(x + delta, c_to)
    return delta, f_new, (f_new - f_ref).norm(dim=-1)


def feature_match(decoder: ImplicitDecoder, vertices: np.ndarray, z_src: torch.Tensor, z_tgt: torch.Tensor,
                  cfg: MatchConfig = MatchConfig(), keep_trajectory: bool = False,
                  progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None) -> MatchResult:
    """Move `vertices` (float [V, 3], unit box, on the surface of Φ(·, z_src)) toward Φ(·, z_tgt).

    Runs cfg.steps interpolation steps of cfg.gn_iters Gauss-Newton iterations each, on the decoder's
    device, every vertex of a chunk (cfg.chunk) in one batched solve. The features of x_{t+1} at z_{t+1}
    computed for the residual are reused as the reference of the next step. `progress(fraction,
    message)` is called after each step; `cancel()` is polled before each step and raises
    DeformationCancelled when it returns True.
    """
    prm = next(decoder.parameters())
    dev, dt = prm.device, prm.dtype  # float32 normally; a float64 decoder (tests) computes in float64
    x = torch.as_tensor(np.asarray(vertices), device=dev).to(dt)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got {tuple(x.shape)}")
    z_src = z_src.to(dev, dt)
    z_tgt = z_tgt.to(dev, dt)
    if cfg.jacobian == "jacfwd":
        fj: FeatureJacobian | JacfwdFeatures = JacfwdFeatures(decoder.feature_fn(cfg.layers, cfg.layer_weights))
    else:
        fj = decoder.feature_jacobian_fn(cfg.layers, cfg.layer_weights)
    traj = [x.cpu().numpy().copy()] if keep_trajectory else None
    max_step = 0.0
    res_mean = 0.0
    T = cfg.steps
    chunks = [slice(s, s + cfg.chunk) for s in range(0, len(x), cfg.chunk)]
    with torch.inference_mode():
        c_from = decoder.latent_bias(z_src)
        f_ref = [fj.features(x[sl], c_from) for sl in chunks]
        for t in range(T):
            if cancel is not None and cancel():
                raise DeformationCancelled(f"deformation cancelled at step {t}/{T}")
            c_to = decoder.latent_bias(z_src + ((t + 1) / T) * (z_tgt - z_src))
            deltas, ress = [], []
            for i, sl in enumerate(chunks):
                d, f_ref[i], r = match_step(fj, x[sl], f_ref[i], c_to, cfg)
                deltas.append(d)
                ress.append(r)
            delta = torch.cat(deltas) if deltas else torch.zeros_like(x)
            if len(x):
                max_step = max(max_step, float(delta.norm(dim=-1).max()))
                res_mean = float(torch.cat(ress).mean())
            x = x + delta
            if traj is not None:
                traj.append(x.cpu().numpy().copy())
            if progress is not None:
                progress((t + 1) / T, f"feature matching step {t + 1}/{T}")
    return MatchResult(
        vertices=x.cpu().numpy(),
        trajectory=np.stack(traj) if traj is not None else None,
        max_step=max_step,
        residual=res_mean,
    )
