"""Pinhole camera model (OpenCV convention: x right, y down, z forward; metres) and its maths.

Every function exists for numpy arrays and for torch tensors (suffix `_t`); the numpy version is the
reference. Pixel coordinates are (u, v) = (column, row) with the centre of the top-left pixel at (0, 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily so that numpy-only users do not pay for it
    import torch


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of `width` x `height` pixels.

    fx, fy: focal lengths in pixels; cx, cy: principal point in pixels.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("fx", "fy"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise ValueError(f"Intrinsics.{name} must be a positive finite number, got {v}")
        for name in ("cx", "cy"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"Intrinsics.{name} must be finite")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Intrinsics size must be positive, got {self.width}x{self.height}")

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_matrix(cls, k: np.ndarray, width: int, height: int) -> "Intrinsics":
        """Build from a 3x3 (or 4x4) camera matrix."""
        k = np.asarray(k, dtype=np.float64)
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), int(width), int(height))

    def scaled(self, width: int, height: int) -> "Intrinsics":
        """Intrinsics of the same camera for an image resized to `width` x `height` pixels.

        Uses the pixel-centre convention: u' = (u + 0.5) * s - 0.5.
        """
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, int(width), int(height)
        )

    def as_dict(self) -> dict:
        """Plain dict for reports and JSON."""
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width, "height": self.height}


def pixel_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v), each float32 [height, width]."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    return u, v


def backproject_depth(depth: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Back-project a depth image to camera-frame points.

    depth: float32 [H, W] metres (0 or non-finite = invalid). Returns float32 [H, W, 3]; invalid pixels
    give (0, 0, 0).
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != (k.height, k.width):
        raise ValueError(f"depth shape {depth.shape} does not match intrinsics {k.height}x{k.width}")
    u, v = pixel_grid(k.width, k.height)
    z = np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)
    x = (u - k.cx) / k.fx * z
    y = (v - k.cy) / k.fy * z
    return np.stack([x, y, z], axis=-1)


def backproject(uv: np.ndarray, z: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Back-project pixels with depths: uv [..., 2] pixels, z [...] metres -> points [..., 3] metres."""
    uv = np.asarray(uv, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    x = (uv[..., 0] - k.cx) / k.fx * z
    y = (uv[..., 1] - k.cy) / k.fy * z
    return np.stack([x, y, z], axis=-1)


def project(points: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points [..., 3] (metres) to pixels.

    Returns (uv [..., 2] float pixels, z [...] metres). Points with z <= 0 get uv = NaN.
    """
    p = np.asarray(points, dtype=np.float64)
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        safe = np.where(z > 0, z, np.nan)
        u = k.fx * p[..., 0] / safe + k.cx
        v = k.fy * p[..., 1] / safe + k.cy
    return np.stack([u, v], axis=-1), z


def backproject_depth_t(depth: "torch.Tensor", k: Intrinsics) -> "torch.Tensor":
    """Torch version of `backproject_depth`: depth [..., H, W] metres -> points [..., H, W, 3]."""
    import torch

    h, w = depth.shape[-2:]
    if (h, w) != (k.height, k.width):
        raise ValueError(f"depth shape {(h, w)} does not match intrinsics {k.height}x{k.width}")
    v, u = torch.meshgrid(
        torch.arange(h, dtype=depth.dtype, device=depth.device),
        torch.arange(w, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    z = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
    x = (u - k.cx) / k.fx * z
    y = (v - k.cy) / k.fy * z
    return torch.stack([x, y, z], dim=-1)


def project_t(points: "torch.Tensor", k: Intrinsics) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Torch version of `project`: points [..., 3] -> (uv [..., 2], z [...]); z <= 0 gives NaN uv."""
    import torch

    z = points[..., 2]
    safe = torch.where(z > 0, z, torch.full_like(z, float("nan")))
    u = k.fx * points[..., 0] / safe + k.cx
    v = k.fy * points[..., 1] / safe + k.cy
    return torch.stack([u, v], dim=-1), z


def transform_points(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Apply the rigid transform x -> R x + t to points [..., 3]."""
    return np.asarray(points) @ np.asarray(rotation).T + np.asarray(translation)
