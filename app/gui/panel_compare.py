"""The Compare panel: Chamfer distance between two clouds (captures or files) and a per-point distance
colormap. When both clouds carry track ids (captures of one model), it also reports how far the shared
ids moved between them.

Metrics come from models.common.metrics (`nn_distances`; the Chamfer value is its definition in
`chamfer_l1`: mean_i d(a_i, B) + mean_j d(b_j, A)).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.gui.captures import Capture
from app.gui.shapes import even_subsample  # noqa: F401 (also used by the tests)
from app.gui.panels import JobContext, Layer, PanelResult, Param, ShapePanel, register_panel


def distance_colors(d: np.ndarray, vmax: float) -> np.ndarray:
    """Turbo colors uint8 [N, 3] for distances d [N] over [0, vmax]."""
    from fusion.preview import colormap_turbo

    return colormap_turbo(np.asarray(d, np.float64) / max(vmax, 1e-12))


def compare_clouds(a: Capture, b: Capture, max_points: int = 50000, clip_mm: float = 0.0,
                   ctx: JobContext | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chamfer comparison of two clouds (metres in, millimetres in the summary).

    Returns (summary, ia, ib, d_ab, d_ba): ia / ib the indices of the points used (even subsample of at
    most max_points each), d_ab float [len(ia)] distance of each used A point to B (metres), d_ba likewise.
    clip_mm: the colormap's upper end (0 = the 95th percentile of d_ab).
    """
    from models.common.metrics import nn_distances

    def step(f: float, text: str) -> None:
        if ctx is not None:
            ctx.progress(f, text)

    if a.num_points == 0 or b.num_points == 0:
        from fusion.errors import InputError

        raise InputError(f"cannot compare an empty cloud ({a.name}: {a.num_points} points, {b.name}: {b.num_points})")
    step(0.05, "subsampling")
    ia = even_subsample(a.num_points, max_points)
    ib = even_subsample(b.num_points, max_points)
    pa, pb = a.points[ia].astype(np.float64), b.points[ib].astype(np.float64)
    step(0.15, "nearest neighbours")
    d_ab, d_ba = nn_distances(pa, pb)
    step(0.85, "statistics")
    s: dict[str, Any] = {
        "chamfer_l1_mm": 1e3 * float(d_ab.mean() + d_ba.mean()),
        "mean_a_to_b_mm": 1e3 * float(d_ab.mean()),
        "mean_b_to_a_mm": 1e3 * float(d_ba.mean()),
        "median_a_to_b_mm": 1e3 * float(np.median(d_ab)),
        "p95_a_to_b_mm": 1e3 * float(np.percentile(d_ab, 95)),
        "hausdorff_mm": 1e3 * float(max(d_ab.max(), d_ba.max())),
        "points_a": int(len(ia)),
        "points_b": int(len(ib)),
    }
    s["colormap_max_mm"] = float(clip_mm) if clip_mm > 0 else max(s["p95_a_to_b_mm"], 1e-3)
    if a.track_ids is not None and b.track_ids is not None:
        ids_a, ids_b = a.track_ids[ia], b.track_ids[ib]
        common, ja, jb = np.intersect1d(ids_a, ids_b, assume_unique=False, return_indices=True)
        keep = common >= 0
        s["shared_track_ids"] = int(keep.sum())
        if keep.any():
            disp = np.linalg.norm(pa[ja[keep]] - pb[jb[keep]], axis=1)
            s["shared_ids_mean_motion_mm"] = 1e3 * float(disp.mean())
            s["shared_ids_max_motion_mm"] = 1e3 * float(disp.max())
    step(1.0, "done")
    return s, ia, ib, d_ab, d_ba


@register_panel
class ComparePanel(ShapePanel):
    """Two clouds -> Chamfer distance and A colored by its distance to B."""

    key = "compare"
    title = "Compare"
    description = ("Chamfer distance between two captures or files (L1: mean distance A→B plus B→A) and A "
                   "colored by each point's distance to B (turbo: blue near, red far).")
    inputs = ("A", "B")
    params = (
        Param("max_points", "Max points per cloud", "int", 50000, 100, 5_000_000,
              tip="Clouds are evenly subsampled to at most this many points"),
        Param("clip_mm", "Colormap max (mm)", "float", 0.0, 0.0, 10000.0, decimals=1,
              tip="Distance shown red; 0 = the 95th percentile of A→B"),
        Param("show_b", "Show B", "bool", True, tip="Draw B (gray) with A"),
    )
    order = 0

    def compute(self, inputs: dict[str, Capture], params: dict[str, Any], ctx: JobContext) -> PanelResult:
        """Run `compare_clouds` and build the layers (A colored by distance, B gray)."""
        a, b = inputs["A"], inputs["B"]
        s, ia, ib, d_ab, d_ba = compare_clouds(a, b, int(params["max_points"]), float(params["clip_mm"]), ctx)
        colors = distance_colors(d_ab, s["colormap_max_mm"] / 1e3)
        layers = [Layer(f"A: {a.name} (distance)", a.points[ia], colors, size=3.0),
                  Layer(f"B: {b.name}", b.points[ib], None, size=2.0, alpha=0.35, visible=bool(params["show_b"]))]
        return PanelResult(layers, s, {"distances_a_to_b_m": d_ab.astype(np.float32),
                                       "distances_b_to_a_m": d_ba.astype(np.float32)})
