"""The RGB-D frame, the one data type every source delivers."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusion.camera import Intrinsics


@dataclass
class RGBDFrame:
    """One RGB-D frame, depth aligned to color (same size, shared intrinsics).

    index: 0-based position of the frame in its source.
    timestamp_s: seconds since the first frame of the source.
    color: uint8 [H, W, 3] RGB.
    depth: float32 [H, W] metres; 0 marks an invalid pixel (never NaN inside the program).
    intrinsics: the camera of both images.
    mask: optional bool [H, W] object mask (image folders with masks, synthetic scenes).
    meta: free-form per-frame metadata from the source (frame numbers, sensor timestamps ...).
    """

    index: int
    timestamp_s: float
    color: np.ndarray
    depth: np.ndarray
    intrinsics: Intrinsics
    mask: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        h, w = self.intrinsics.height, self.intrinsics.width
        if self.depth.shape != (h, w):
            raise ValueError(f"depth is {self.depth.shape}, intrinsics say {h}x{w}")
        if self.color.shape != (h, w, 3):
            raise ValueError(f"color is {self.color.shape}, expected {(h, w, 3)}")
        if self.color.dtype != np.uint8:
            raise ValueError(f"color must be uint8, got {self.color.dtype}")
        if self.depth.dtype != np.float32:
            raise ValueError(f"depth must be float32 metres, got {self.depth.dtype}")
        if self.mask is not None and self.mask.shape != (h, w):
            raise ValueError(f"mask is {self.mask.shape}, expected {(h, w)}")

    @property
    def valid(self) -> np.ndarray:
        """bool [H, W]: pixels with a valid (positive) depth."""
        return self.depth > 0

    def resized(self, width: int, height: int) -> "RGBDFrame":
        """The frame at another resolution: color by area averaging, depth by nearest valid sample.

        Depth is never interpolated across edges (no flying pixels): each output pixel takes the depth
        of the input pixel at its centre.
        """
        if (width, height) == (self.intrinsics.width, self.intrinsics.height):
            return self
        from PIL import Image

        k = self.intrinsics.scaled(width, height)
        color = np.asarray(Image.fromarray(self.color).resize((width, height), Image.BILINEAR))
        rows = np.clip(((np.arange(height) + 0.5) * self.intrinsics.height / height).astype(int), 0, self.intrinsics.height - 1)
        cols = np.clip(((np.arange(width) + 0.5) * self.intrinsics.width / width).astype(int), 0, self.intrinsics.width - 1)
        depth = np.ascontiguousarray(self.depth[rows][:, cols])
        mask = None if self.mask is None else np.ascontiguousarray(self.mask[rows][:, cols])
        return RGBDFrame(self.index, self.timestamp_s, np.ascontiguousarray(color), depth, k, mask, dict(self.meta))


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """Return float32 depth with non-finite and negative values set to 0 (invalid)."""
    d = np.asarray(depth, dtype=np.float32)
    bad = ~np.isfinite(d) | (d < 0)
    if bad.any():
        d = d.copy()
        d[bad] = 0.0
    return d
