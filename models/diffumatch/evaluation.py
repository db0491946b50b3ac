"""Geodesic error of point-to-point maps (the standard shape-matching protocol).

For a predicted map p2p_21 and a ground-truth map gt_21 (both: for each vertex j of shape 2 = target,
its vertex on shape 1 = source), the error at j is the geodesic distance on the SOURCE between
p2p_21[j] and gt_21[j], divided by sqrt(area of the source); the reported figure is the mean over the
evaluated target vertices. Distances come from the heat method (potpourri3d) on the source.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .spectral import GeodesicOracle


def geodesic_error_reference(dist: np.ndarray, pred_21: np.ndarray, gt_21: np.ndarray, area: float) -> float:
    """Slow, plain definition: mean_j dist[pred_21[j], gt_21[j]] / sqrt(area), dist a full [n1, n1] matrix."""
    return float(np.mean([dist[p, g] for p, g in zip(pred_21, gt_21)]) / np.sqrt(area))


def geodesic_errors(distance_from: Callable[[int], np.ndarray], area: float, gt_21: np.ndarray,
                    preds: dict[str, np.ndarray], n_eval: int | None = 2000, seed: int = 0) -> dict[str, dict]:
    """Geodesic errors of several predicted maps against one ground truth, sharing the distance solves.

    distance_from(i) -> float [n1] geodesic distances on the source from vertex i (any unit);
    area = source area in the same unit squared; gt_21 and preds[name] int [n2]. With n_eval, a seeded
    random subset of that many target vertices is evaluated (one distance solve per distinct gt vertex).
    Returns {name: {"mean": float, "median": float, "n_eval": int}} (mean/median of error / sqrt(area)).
    """
    n2 = len(gt_21)
    idx = np.arange(n2)
    if n_eval is not None and n_eval < n2:
        idx = np.sort(np.random.default_rng(seed).choice(n2, n_eval, replace=False))
    g = gt_21[idx]
    errs = {name: np.empty(len(idx)) for name in preds}
    order = np.argsort(g, kind="stable")
    uniq, starts = np.unique(g[order], return_index=True)
    bounds = list(starts) + [len(order)]
    for u, a, b in zip(uniq, bounds[:-1], bounds[1:]):
        d = distance_from(int(u))
        rows = order[a:b]
        for name, p in preds.items():
            errs[name][rows] = d[p[idx[rows]]]
    s = np.sqrt(area)
    return {name: {"mean": float(e.mean() / s), "median": float(np.median(e) / s), "n_eval": int(len(idx))} for name, e in errs.items()}


def geodesic_errors_on(verts: np.ndarray, faces: np.ndarray, area: float, gt_21: np.ndarray,
                       preds: dict[str, np.ndarray], n_eval: int | None = 2000, seed: int = 0) -> dict[str, dict]:
    """`geodesic_errors` with heat-method distances on the source mesh / cloud (verts [n1, 3], faces [F, 3])."""
    oracle = GeodesicOracle(verts, faces)
    return geodesic_errors(oracle.from_vertex, area, gt_21, preds, n_eval, seed)
