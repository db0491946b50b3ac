"""Write a synthetic scene as a DeepDeform-layout folder (see ../shared/data/README.md), with exact
ground-truth flow for chosen frame pairs, so that tracking evaluation can run on synthetic data.

Layout written: `color/NNNNNN.jpg` (or .png), `depth/NNNNNN.png` (uint16 millimetres, 0 = invalid),
`mask/NNNNNN_<object>.png` (uint8 0/255), `intrinsics.txt` (4x4 camera matrix),
`scene_flow/<object>_<src>_<tgt>.sflow` and `optical_flow/<object>_<src>_<tgt>.oflow` (src, tgt: 6-digit
frame numbers). Flow files: uint32 width, height, channels (little-endian), then float32 [C, H, W];
scene flow in metres (C = 3), optical flow in pixels (C = 2, du then dv); NaN = invalid. Flow is given
for the object pixels of the source frame (the background plane, if any, is NaN).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from fusion.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from fusion.errors import InputError


def encode_flow(flow: np.ndarray) -> bytes:
    """Bytes of a DeepDeform flow file for flow float [H, W, C] (C = 2 optical, 3 scene flow)."""
    f = np.asarray(flow, np.float32)
    if f.ndim != 3:
        raise ValueError(f"flow must be [H, W, C], got {f.shape}")
    h, w, c = f.shape
    return np.array([w, h, c], "<u4").tobytes() + np.ascontiguousarray(f.transpose(2, 0, 1)).astype("<f4").tobytes()


def write_flow(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write flow float [H, W, C] as a DeepDeform .sflow / .oflow file (atomic)."""
    write_bytes_atomic(path, encode_flow(flow))


def read_flow(path: str | os.PathLike) -> np.ndarray:
    """Read a DeepDeform .sflow / .oflow file: float32 [C, H, W] as stored. Raises InputError when the
    file is missing, truncated or has an impossible header."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: flow file not found")
    data = path.read_bytes()
    if len(data) < 12:
        raise InputError(f"{path}: flow file too short for its header")
    w, h, c = (int(x) for x in np.frombuffer(data[:12], "<u4"))
    n = w * h * c
    if w == 0 or h == 0 or c == 0 or len(data) != 12 + 4 * n:
        raise InputError(f"{path}: flow file size {len(data)} does not match its header {w}x{h}x{c}")
    return np.frombuffer(data[12:], "<f4").reshape(c, h, w).astype(np.float32)


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG")  # uint16 -> 16-bit PNG ("I;16")
    return buf.getvalue()


def write_deepdeform_folder(scene: "object", out_dir: str | os.PathLike, pairs: Iterable[tuple[int, int]] = (),
                            frames: Iterable[int] | None = None, object_name: str = "object",
                            color_format: str = "jpg", jpeg_quality: int = 95) -> Path:
    """Write `scene` (a SyntheticScene) in the DeepDeform layout under `out_dir`.

    pairs: (src, tgt) frame pairs for which scene_flow/optical_flow files are written. frames: which frames
    get color/depth/mask images (default: every frame appearing in a pair, or all frames when there are no
    pairs). Depth is the rendered depth (noisy when the scene is), rounded to millimetres. color_format:
    "jpg" (DeepDeform's own) or "png" (lossless). Every file is written atomically. Returns out_dir.
    """
    if color_format not in ("jpg", "png"):
        raise ValueError(f"color_format must be 'jpg' or 'png', got {color_format!r}")
    out = Path(out_dir)
    pairs = [(int(a), int(b)) for a, b in pairs]
    if frames is None:
        idx = sorted({i for p in pairs for i in p}) if pairs else list(range(scene.n_frames))
    else:
        idx = sorted({int(i) for i in frames} | {i for p in pairs for i in p})
    for i in list(idx) + [i for p in pairs for i in p]:
        if not 0 <= i < scene.n_frames:
            raise InputError(f"frame {i} outside 0..{scene.n_frames - 1} of synthetic scene {scene.name}")
    from PIL import Image

    for i in idx:
        fr = scene.render(i)
        if color_format == "jpg":
            buf = io.BytesIO()
            Image.fromarray(fr.color).save(buf, format="JPEG", quality=int(jpeg_quality))
            write_bytes_atomic(out / "color" / f"{i:06d}.jpg", buf.getvalue())
        else:
            write_bytes_atomic(out / "color" / f"{i:06d}.png", _png_bytes(fr.color))
        mm = np.clip(np.rint(fr.depth.astype(np.float64) * 1000.0), 0, 65535).astype(np.uint16)
        write_bytes_atomic(out / "depth" / f"{i:06d}.png", _png_bytes(mm))
        write_bytes_atomic(out / "mask" / f"{i:06d}_{object_name}.png", _png_bytes(fr.mask.astype(np.uint8) * 255))
    k = scene.intrinsics
    m = np.eye(4)
    m[:3, :3] = k.matrix
    with atomic_path(out / "intrinsics.txt") as tmp:
        np.savetxt(tmp, m, fmt="%.18e")
    for a, b in pairs:
        mask = scene.layers(a).mask
        sf = scene.scene_flow(a, b)
        of = scene.optical_flow(a, b)
        sf[~mask] = np.nan
        of[~mask] = np.nan
        write_flow(out / "scene_flow" / f"{object_name}_{a:06d}_{b:06d}.sflow", sf)
        write_flow(out / "optical_flow" / f"{object_name}_{a:06d}_{b:06d}.oflow", of)
    write_text_atomic(out / "SYNTHETIC.txt", f"synthetic scene written by nrstudio: {scene.cfg!r}\n")
    return out
