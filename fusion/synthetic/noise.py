"""Sensor noise for synthetic RGB-D frames: depth-dependent Gaussian depth noise, holes at depth edges,
random dropouts, depth quantisation and colour noise. Deterministic for a given generator state."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special


@dataclass(frozen=True)
class NoiseConfig:
    """Parameters of the sensor model (defaults: a RealSense / Kinect-like structured-light camera)."""

    #: depth noise sigma(z) = sigma0 + sigma2 * (z - z0)^2, metres (z in metres)
    sigma0: float = 0.0012
    sigma2: float = 0.0019
    z0: float = 0.4
    #: probability that a pixel within `edge_width` pixels of a depth discontinuity becomes a hole
    edge_dropout: float = 0.5
    #: half-width in pixels of the band around depth discontinuities where holes appear
    edge_width: int = 1
    #: a neighbour differing by more than this (metres), or an invalid neighbour, makes a discontinuity
    edge_jump: float = 0.02
    #: probability that any valid pixel becomes a hole (isolated dropouts)
    dropout: float = 0.003
    #: depth quantisation step in metres (0 = none); 0.001 = the 1 mm units of a 16-bit depth image
    quantization: float = 0.001
    #: standard deviation of additive Gaussian colour noise (rounded to levels, truncated at 2.66 sigma), in
    #: 8-bit levels (0 = none)
    color_sigma: float = 2.0

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Depth noise standard deviation (metres) at depth z (metres), same shape as z."""
        return self.sigma0 + self.sigma2 * (np.asarray(z, np.float64) - self.z0) ** 2


def depth_edges(depth: np.ndarray, jump: float) -> np.ndarray:
    """bool [H, W]: valid pixels of `depth` (float32 metres, 0 = invalid) with a 4-neighbour that is
    invalid or differs by more than `jump` metres (the outside of the image does not count)."""
    d = np.asarray(depth, np.float32)
    valid = d > 0
    edge = np.zeros(d.shape, bool)
    # a neighbour pair is a discontinuity when one side is invalid or their depths differ by > jump
    jh = (np.abs(d[:, 1:] - d[:, :-1]) > jump) | (valid[:, 1:] != valid[:, :-1])
    jv = (np.abs(d[1:, :] - d[:-1, :]) > jump) | (valid[1:, :] != valid[:-1, :])
    edge[:, 1:] |= jh
    edge[:, :-1] |= jh
    edge[1:, :] |= jv
    edge[:-1, :] |= jv
    return edge & valid


def apply_noise(depth: np.ndarray, color: np.ndarray, cfg: NoiseConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of a clean frame.

    depth: float32 [H, W] metres (0 = invalid); color: uint8 [H, W, 3]. Returns (depth float32 [H, W],
    color uint8 [H, W, 3]). Order: Gaussian depth noise with sigma(z), quantisation to `cfg.quantization`
    (values are float32(n) * float32(step), bit-identical to a uint16 depth image decoded with that unit),
    holes (edge band and random dropouts: depth set to 0), colour noise. Holes only remove pixels: no
    depth is ever invented where the clean depth is 0.
    """
    d = np.asarray(depth, np.float32)
    valid = d > 0
    h, w = d.shape
    z = d[valid].astype(np.float64)
    zn = z + rng.standard_normal(z.size) * cfg.sigma(z)
    noisy = np.zeros((h, w), np.float32)
    if cfg.quantization > 0:
        # float32(steps) * float32(step): the very values a 16-bit depth image with this unit decodes to
        steps = np.maximum(np.round(zn / cfg.quantization), 1.0)
        noisy[valid] = steps.astype(np.float32) * np.float32(cfg.quantization)
    else:
        noisy[valid] = np.maximum(zn, 1e-4)
    holes = np.zeros((h, w), bool)
    if cfg.edge_dropout > 0 and cfg.edge_width > 0:
        band = depth_edges(d, cfg.edge_jump)
        if cfg.edge_width > 1:
            band = ndimage.binary_dilation(band, iterations=cfg.edge_width - 1) & valid
        holes |= band & (rng.random((h, w), dtype=np.float32) < cfg.edge_dropout)
    if cfg.dropout > 0:
        holes |= rng.random((h, w), dtype=np.float32) < cfg.dropout
    noisy[holes] = 0.0
    col = np.ascontiguousarray(color, dtype=np.uint8)
    if cfg.color_sigma > 0:
        # Gaussian noise rounded to whole levels, drawn by inverse-CDF lookup from random bytes (the 256
        # equiprobable quantiles of N(0, sigma^2), i.e. truncated at 2.66 sigma): 10x cheaper than
        # standard_normal for the 0.9 M values of a 640x480 image
        lut = np.rint(cfg.color_sigma * special.ndtri((np.arange(256) + 0.5) / 256)).astype(np.int16)
        n = lut[rng.integers(0, 256, size=col.shape, dtype=np.uint8)]
        n += col
        np.clip(n, 0, 255, out=n)
        col = n.astype(np.uint8)
    return noisy, col
