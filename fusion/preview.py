"""Pictures a person would rather look at than read: depth colormaps, contact sheets of frames.

All functions return uint8 RGB images [H, W, 3] and never touch Qt or OpenGL.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fusion.frame import RGBDFrame

# Turbo colormap (Google, Apache-2.0), 9 control points, linearly interpolated.
_TURBO = np.array(
    [
        [48, 18, 59], [70, 107, 227], [40, 187, 236], [50, 241, 152], [164, 252, 60],
        [237, 208, 58], [251, 128, 34], [208, 47, 5], [122, 4, 3],
    ],
    dtype=np.float32,
)


def colormap_turbo(x: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (float [...]) to turbo RGB uint8 [..., 3]; NaN maps to black."""
    x = np.asarray(x, dtype=np.float32)
    nan = ~np.isfinite(x)
    t = np.clip(np.where(nan, 0, x), 0, 1) * (len(_TURBO) - 1)
    i0 = np.floor(t).astype(int)
    i1 = np.minimum(i0 + 1, len(_TURBO) - 1)
    f = (t - i0)[..., None]
    rgb = _TURBO[i0] * (1 - f) + _TURBO[i1] * f
    rgb[nan] = 0
    return rgb.astype(np.uint8)


def depth_to_rgb(depth: np.ndarray, near: float | None = None, far: float | None = None) -> np.ndarray:
    """Colorise a depth image (float32 [H, W] metres, 0 = invalid) with turbo; invalid pixels black.

    near/far default to the 2nd and 98th percentiles of the valid depths.
    """
    d = np.asarray(depth, dtype=np.float32)
    valid = d > 0
    if not valid.any():
        return np.zeros(d.shape + (3,), np.uint8)
    lo = float(np.percentile(d[valid], 2)) if near is None else near
    hi = float(np.percentile(d[valid], 98)) if far is None else far
    x = (d - lo) / max(hi - lo, 1e-6)
    x[~valid] = np.nan
    return colormap_turbo(x)


def contact_sheet(frames: Sequence[RGBDFrame], columns: int = 4, thumb_width: int = 240) -> np.ndarray:
    """A grid of thumbnails, one row-pair per frame: color above depth (turbo), with a 2-px gutter.

    Returns uint8 [H, W, 3]. The depth range is shared by all frames so colors compare across them.
    """
    from PIL import Image

    if not frames:
        raise ValueError("contact_sheet needs at least one frame")
    k = frames[0].intrinsics
    tw = thumb_width
    th = int(round(tw * k.height / k.width))
    valid = np.concatenate([f.depth[f.depth > 0] for f in frames] or [np.zeros(0, np.float32)])
    near, far = (float(np.percentile(valid, 2)), float(np.percentile(valid, 98))) if valid.size else (0.0, 1.0)
    cols = min(columns, len(frames))
    rows = (len(frames) + cols - 1) // cols
    g = 2
    sheet = np.full((rows * (2 * th + 3 * g), cols * (tw + g) + g, 3), 24, np.uint8)
    for n, f in enumerate(frames):
        r, c = divmod(n, cols)
        y0, x0 = r * (2 * th + 3 * g) + g, c * (tw + g) + g
        col = np.asarray(Image.fromarray(f.color).resize((tw, th), Image.BILINEAR))
        dep = np.asarray(Image.fromarray(depth_to_rgb(f.depth, near, far)).resize((tw, th), Image.NEAREST))
        sheet[y0 : y0 + th, x0 : x0 + tw] = col
        sheet[y0 + th + g : y0 + 2 * th + g, x0 : x0 + tw] = dep
    return sheet


def save_png(path: str, image: np.ndarray) -> None:
    """Write a uint8 RGB image as PNG, atomically."""
    from PIL import Image

    from fusion.atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp, format="PNG")
