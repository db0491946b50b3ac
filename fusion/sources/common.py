"""Small helpers shared by the sources: depth conversion and checks, gray stand-in color, file checks."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fusion.errors import InputError

#: what a source does with a depth frame that holds no valid pixel: raise, deliver it, or skip it
EMPTY_DEPTH_POLICIES = ("error", "keep", "skip")


def depth_to_metres(raw: np.ndarray, units: float) -> np.ndarray:
    """Convert raw integer depth (uint16 [H, W], 0 = invalid) to float32 metres [H, W].

    `units` is metres per raw unit (RealSense depth units, or the depth scale of an image folder).
    """
    return (np.asarray(raw).astype(np.float32) * np.float32(units)).astype(np.float32, copy=False)


def metres_to_raw(depth: np.ndarray, units: float) -> np.ndarray:
    """Convert float32 metres [H, W] (0 / NaN / negative = invalid) to uint16 raw depth [H, W].

    Values beyond the uint16 range (deeper than 65535 * units) become 0 (invalid) rather than being
    clipped to a wrong depth.
    """
    d = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    raw = np.zeros(d.shape, dtype=np.float64)
    raw[ok] = np.rint(d[ok] / units)
    raw[(raw > 65535) | (raw < 0)] = 0
    return raw.astype(np.uint16)


def gray_from_depth(depth: np.ndarray) -> np.ndarray:
    """A gray stand-in color image for a source without color: uint8 [H, W, 3].

    depth: float32 [H, W] metres (0 = invalid). Near surfaces are bright, far ones dark (linear between
    the 2nd and 98th percentile of the valid depths); invalid pixels are black.
    """
    d = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    gray = np.zeros(d.shape, dtype=np.uint8)
    if valid.any():
        lo, hi = np.percentile(d[valid], [2, 98])
        span = max(float(hi - lo), 1e-6)
        g = 235.0 - 195.0 * np.clip((d - lo) / span, 0.0, 1.0)
        gray[valid] = np.rint(g[valid]).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def check_empty_policy(policy: str) -> str:
    """Validate an `empty_depth` option ("error", "keep" or "skip")."""
    if policy not in EMPTY_DEPTH_POLICIES:
        raise ValueError(f"empty_depth must be one of {EMPTY_DEPTH_POLICIES}, got {policy!r}")
    return policy


def depth_is_empty(depth: np.ndarray) -> bool:
    """True when a depth image has no pixel (zero size) or no valid (positive) depth."""
    return depth.size == 0 or not bool(np.any(depth > 0))


def require_file(path: Path, what: str = "file") -> Path:
    """Raise InputError unless `path` is an existing, non-empty file."""
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if not path.is_file():
        raise InputError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: {what} is empty (0 bytes)")
    return path


_NUM = re.compile(r"(\d+)(?!.*\d)")


def trailing_number(name: str) -> int | None:
    """The last run of digits in a file name stem ("frame_000050" -> 50), or None."""
    m = _NUM.search(Path(name).stem)
    return int(m.group(1)) if m else None
