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


def _rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def render_mesh_views(
    vertices: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray | None = None,
    size: int = 360,
    yaws: Sequence[float] = (-40.0, 0.0, 40.0),
) -> np.ndarray:
    """Render a mesh from a few viewpoints around its centre, side by side (software z-buffer, no GL).

    vertices float [V, 3] metres (OpenCV camera frame); faces int [F, 3]; colors optional uint8 [V, 3]
    (gray when absent). Each view looks at the mesh centroid from the front (-z side) turned by `yaw`
    degrees about the vertical axis, Lambert-shaded with a headlight. Returns uint8 [size, size * len(yaws), 3].
    """
    from fusion.camera import Intrinsics
    from fusion.synthetic.raster import rasterize

    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    out = np.full((size, size * len(yaws), 3), 28, np.uint8)
    if len(v) == 0 or len(f) == 0:
        return out
    col = np.full((len(v), 3), 200, np.float64) if colors is None else np.asarray(colors, np.float64)
    centre = 0.5 * (v.min(0) + v.max(0))
    radius = float(np.linalg.norm(v - centre, axis=1).max()) or 1.0
    k = Intrinsics(size * 1.2, size * 1.2, (size - 1) / 2, (size - 1) / 2, size, size)
    dist = 1.2 / 0.45  # in units of the radius: the bounding sphere fills ~90 % of the view
    for n, yaw in enumerate(yaws):
        r = _rot_y(yaw)
        pv = ((v - centre) / radius) @ r.T + np.array([0.0, 0.0, dist])
        depth, tri, bary = rasterize(pv, f, k)
        hit = tri >= 0
        if not hit.any():
            continue
        fi = tri[hit]
        b = bary[hit].astype(np.float64)
        a_, b_, c_ = pv[f[fi, 0]], pv[f[fi, 1]], pv[f[fi, 2]]
        nrm = np.cross(b_ - a_, c_ - a_)
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True) + 1e-12
        pts = b[:, :1] * a_ + b[:, 1:2] * b_ + b[:, 2:3] * c_
        view = -pts / (np.linalg.norm(pts, axis=1, keepdims=True) + 1e-12)
        lam = np.abs((nrm * view).sum(1))  # two-sided headlight
        albedo = b[:, :1] * col[f[fi, 0]] + b[:, 1:2] * col[f[fi, 1]] + b[:, 2:3] * col[f[fi, 2]]
        shaded = np.clip(albedo * (0.25 + 0.75 * lam[:, None]), 0, 255)
        tile = out[:, n * size : (n + 1) * size]
        tile[hit] = shaded.astype(np.uint8)
    return out
