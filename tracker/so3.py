"""Rotation helpers: so(3) hat / exponential map (torch, differentiable; numpy reference) and SO(3) projection.

Convention used by every solver in tracker/: a node rotation R is updated by a left-multiplied increment,
R <- exp([w]_x) R, with w in so(3) (axis-angle, radians); translations are updated additively.
"""
from __future__ import annotations

import numpy as np
import torch


def hat_t(v: torch.Tensor) -> torch.Tensor:
    """Skew-symmetric matrices [v]_x of vectors v [..., 3] -> [..., 3, 3] (so that [v]_x a = v x a)."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2)


def hat(v: np.ndarray) -> np.ndarray:
    """numpy version of `hat_t`: [..., 3] -> [..., 3, 3]."""
    v = np.asarray(v, np.float64)
    z = np.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([z, -w, y], -1), np.stack([w, z, -x], -1), np.stack([-y, x, z], -1)], -2)


def exp_so3_t(w: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle vectors w [..., 3] (radians) -> rotation matrices [..., 3, 3].

    Differentiable everywhere, including w = 0 (Taylor expansion of the coefficients for small angles).
    """
    theta2 = (w * w).sum(-1)
    small = theta2 < 1e-8
    t2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(t2)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / t2)
    k = hat_t(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def exp_so3(w: np.ndarray) -> np.ndarray:
    """numpy reference of `exp_so3_t` (float64)."""
    w = np.asarray(w, np.float64)
    theta = np.linalg.norm(w, axis=-1)
    small = theta < 1e-4
    ts = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(ts) / ts)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(ts)) / ts**2)
    k = hat(w)
    return np.eye(3) + a[..., None, None] * k + b[..., None, None] * (k @ k)


def log_so3(r: np.ndarray) -> np.ndarray:
    """Axis-angle vectors [..., 3] of rotation matrices [..., 3, 3] (float64; angles in [0, pi])."""
    from scipy.spatial.transform import Rotation

    r = np.asarray(r, np.float64)
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(r.shape[:-2] + (3,))


def project_to_so3(m: np.ndarray) -> np.ndarray:
    """The nearest rotation (Frobenius) of each 3x3 matrix in m [..., 3, 3] (SVD, det +1). float64."""
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt
