"""The canonical TSDF volume (block-sparse, numba CPU and torch backends), its numpy reference and small
synthetic scenes for tests and benchmarks."""
from __future__ import annotations

from fusion.tsdf.volume import TSDFVolume, VolumeConfig, estimate_bytes, object_bounds, resolve_device

__all__ = ["TSDFVolume", "VolumeConfig", "estimate_bytes", "object_bounds", "resolve_device"]
