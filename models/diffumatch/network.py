"""Feature network (DiffusionNet-style, Sharp et al. 2022) and the FMReg functional-map layer.

The network consumes precomputed operators of a shape (`ShapeOps`: eigenbasis, mass, gradient
operators; see spectral.py) and maps per-vertex input features [V, C_in] (xyz, WKS or both) to
per-vertex descriptors [V, C_out]. Every block: learned-time spectral heat diffusion, spatial gradient
features (inner products of gradients with a learned rotation-like transform of them), per-vertex MLP,
residual. The same weights run on any discretisation, so a net optimised on a decimated shape is
evaluated on the full one.

FMReg (the regularised functional-map solve of ULRSSM / DUO-FMNet):
    FM_12 = argmin_C ||C A - B||^2 + lam * sum_ij mask_ij C_ij^2,
with A = evecs1.T M1 F1 [k1, d], B = evecs2.T M2 F2 [k2, d]; the mask [k2, k1] is the Laplacian
resolvent mask (fmaps.laplacian_mask) or the one derived from the prior (prior.prior_mask).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from .spectral import SpectralShape, unit_wks


@dataclass
class ShapeOps:
    """Torch operators of one shape: evals [k], evecs [V, k], mass [V], grad_x / grad_y sparse [V, V],
    verts [V, 3] (unit-area), wks [V, E]. All float32 on one device."""

    verts: torch.Tensor
    evals: torch.Tensor
    evecs: torch.Tensor
    mass: torch.Tensor
    grad_x: torch.Tensor
    grad_y: torch.Tensor
    wks: torch.Tensor

    @staticmethod
    def from_shape(s: SpectralShape, k: int = 64, n_wks: int = 32, device: str | torch.device = "cpu") -> "ShapeOps":
        """Convert a SpectralShape (first k eigenpairs) to torch; WKS from the same k eigenpairs (so that
        a decimated and a full version of a shape get comparable descriptors)."""

        def sparse(m) -> torch.Tensor:
            c = m.tocoo()
            idx = torch.as_tensor(np.stack([c.row, c.col]), dtype=torch.long)
            return torch.sparse_coo_tensor(idx, torch.as_tensor(c.data, dtype=torch.float32), c.shape, check_invariants=False).coalesce().to(device)

        f = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)  # noqa: E731
        w = unit_wks(s, k, n_wks)
        return ShapeOps(f(s.verts), f(s.evals[:k]), f(s.evecs[:, :k]), f(s.mass), sparse(s.grad_x), sparse(s.grad_y), f(w))

    def inputs(self, kind: str) -> torch.Tensor:
        """Input features [V, C_in] of the network: 'xyz', 'wks' or 'wks+xyz'."""
        if kind == "xyz":
            return self.verts
        if kind == "wks":
            return self.wks
        if kind == "wks+xyz":
            return torch.cat([self.wks, self.verts], dim=1)
        raise ValueError(f"unknown input kind {kind!r}")


def input_channels(kind: str, n_wks: int = 32) -> int:
    """Number of input channels of `ShapeOps.inputs(kind)`."""
    return {"xyz": 3, "wks": n_wks, "wks+xyz": n_wks + 3}[kind]


class LearnedTimeDiffusion(nn.Module):
    """Per-channel heat diffusion x -> evecs exp(-evals t_c) evecs.T M x with learned times t_c >= 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.t = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, ops: ShapeOps) -> torch.Tensor:
        t = self.t.clamp_min(1e-8)
        spec = ops.evecs.T @ (ops.mass[:, None] * x)  # [k, C]
        return ops.evecs @ (torch.exp(-ops.evals[:, None] * t[None, :]) * spec)


class SpatialGradientFeatures(nn.Module):
    """tanh(Re(conj(g) * (A g))) with g = (grad_x x) + i (grad_y x) per channel, A a learned complex C x C."""

    def __init__(self, channels: int):
        super().__init__()
        self.re = nn.Linear(channels, channels, bias=False)
        self.im = nn.Linear(channels, channels, bias=False)

    def forward(self, x: torch.Tensor, ops: ShapeOps) -> torch.Tensor:
        gx = torch.sparse.mm(ops.grad_x, x)
        gy = torch.sparse.mm(ops.grad_y, x)
        bx = self.re(gx) - self.im(gy)
        by = self.re(gy) + self.im(gx)
        return torch.tanh(gx * bx + gy * by)


class DiffusionBlock(nn.Module):
    """x + MLP([x, diffuse(x), gradfeat(diffuse(x))])."""

    def __init__(self, width: int):
        super().__init__()
        self.diff = LearnedTimeDiffusion(width)
        self.grad = SpatialGradientFeatures(width)
        self.mlp = nn.Sequential(nn.Linear(3 * width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor, ops: ShapeOps) -> torch.Tensor:
        d = self.diff(x, ops)
        return x + self.mlp(torch.cat([x, d, self.grad(d, ops)], dim=1))


class DiffusionNet(nn.Module):
    """Per-vertex features [V, C_in] -> descriptors [V, C_out] on a shape given by its ShapeOps."""

    def __init__(self, c_in: int, c_out: int = 64, width: int = 64, n_blocks: int = 3):
        super().__init__()
        self.first = nn.Linear(c_in, width)
        self.blocks = nn.ModuleList([DiffusionBlock(width) for _ in range(n_blocks)])
        self.last = nn.Linear(width, c_out)

    def forward(self, x: torch.Tensor, ops: ShapeOps) -> torch.Tensor:
        h = self.first(x)
        for b in self.blocks:
            h = b(h, ops)
        return self.last(h)


def fmreg(F1: torch.Tensor, F2: torch.Tensor, ops1: ShapeOps, ops2: ShapeOps, k: int, mask: torch.Tensor, lam: float) -> torch.Tensor:
    """FMReg solve: FM_12 [k, k] from descriptors F1 [V1, d], F2 [V2, d] (differentiable).

    Row i of C solves (A A^T + lam diag(mask_i)) c_i = A B_i^T, with A = evecs1[:, :k].T M1 F1 and
    B = evecs2[:, :k].T M2 F2; mask [k, k] (rows: shape-2 frequencies, columns: shape-1 frequencies).
    """
    A = ops1.evecs[:, :k].T @ (ops1.mass[:, None] * F1)
    B = ops2.evecs[:, :k].T @ (ops2.mass[:, None] * F2)
    AAt = A @ A.T
    BAt = B @ A.T
    lhs = AAt[None] + lam * torch.diag_embed(mask)
    return torch.linalg.solve(lhs, BAt[:, :, None])[:, :, 0]


def fmreg_oriented(F1: torch.Tensor, F2: torch.Tensor, ops1: ShapeOps, ops2: ShapeOps, k: int, mask: torch.Tensor,
                   lam: float, Q: torch.Tensor) -> torch.Tensor:
    """FMReg solve with the orientation term of Ren et al. 2018 (differentiable): FM_12 [k, k] =
    argmin_C ||C A - B||^2 + lam sum_ij mask_ij C_ij^2 + vec(C)^T Q vec(C), with Q [k^2, k^2]
    (column-major vec) = orientation.orientation_quadratic of the shapes' orientation operators. The
    orientation term couples the rows of C: one dense k^2 x k^2 solve. Numpy reference:
    orientation.solve_fm_oriented."""
    A = ops1.evecs[:, :k].T @ (ops1.mass[:, None] * F1)
    B = ops2.evecs[:, :k].T @ (ops2.mass[:, None] * F2)
    eye = torch.eye(k, dtype=A.dtype, device=A.device)
    H = torch.kron(A @ A.T, eye) + torch.diag(lam * mask.T.reshape(-1)) + Q
    x = torch.linalg.solve(H, (B @ A.T).T.reshape(-1, 1))[:, 0]
    return x.reshape(k, k).T


def fmreg_reference(F1: np.ndarray, F2: np.ndarray, evecs1: np.ndarray, evecs2: np.ndarray, mass1: np.ndarray,
                    mass2: np.ndarray, mask: np.ndarray, lam: float) -> np.ndarray:
    """Slow numpy reference of `fmreg`: minimise the vectorised quadratic with one dense solve of size k^2."""
    A = evecs1.T @ (mass1[:, None] * F1)
    B = evecs2.T @ (mass2[:, None] * F2)
    k2, k1 = mask.shape
    # ||C A - B||^2 = ||(A^T kron I) vec(C) - vec(B)||^2 with column-major vec
    K = np.kron(A.T, np.eye(k2))
    H = K.T @ K + lam * np.diag(mask.reshape(-1, order="F"))
    c = np.linalg.solve(H, K.T @ B.reshape(-1, order="F"))
    return c.reshape(k2, k1, order="F")
