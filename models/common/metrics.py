"""Shape metrics shared by the side panels. Point sets are float [N, 3] / [M, 3] in the same units.

Each metric has a plain definition in its docstring; KD-trees come from scipy.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def nn_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distances both ways: (d_ab [N] = min_j |a_i - b_j|, d_ba [M])."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d_ab, _ = cKDTree(b).query(a, k=1)
    d_ba, _ = cKDTree(a).query(b, k=1)
    return d_ab, d_ba


def chamfer_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the two mean nearest-neighbour distances: mean_i d(a_i, B) + mean_j d(b_j, A)."""
    d_ab, d_ba = nn_distances(a, b)
    return float(d_ab.mean() + d_ba.mean())


def chamfer_l2(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the two mean squared nearest-neighbour distances (the LPDC / Occupancy Flow form)."""
    d_ab, d_ba = nn_distances(a, b)
    return float((d_ab**2).mean() + (d_ba**2).mean())
