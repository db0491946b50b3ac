"""The DiffuMatch panel: dense correspondence between two shapes (captures or files) by zero-shot
functional-map matching with the shipped diffusion prior (models.diffumatch, the same entry points as
`nrstudio match`: `prepare` + `diffumatch`).

Shown: the source colored by a smooth map of its coordinates, and beside it (shifted along +x) the target,
each of its points colored with the color of its matched source point: where the map is right, the color
patterns agree. Export: the point map `map_target_to_source` (int64, one entry per ORIGINAL target point:
the index of its matched ORIGINAL source point; `.npy`), both layers as PLY in their own coordinates (the
display shift undone), and the summary.

Inputs: the panel's inputs are captures or files. When an input is a mesh (a mesh file: its faces come
with the capture, `Capture.faces`), the mesh Laplacian is used; otherwise the method runs on the
point-cloud Laplacian (robust_laplacian), which models.diffumatch supports directly. Shapes above `max_points` are reduced first (meshes by quadric decimation, clouds by
an even subsample); the exported map still covers every original target point (each takes the match of
its nearest reduced target point) and names original source points (the reduced source point's nearest
original).

When both inputs carry track ids (captures of one fused model), the summary also reports how far, on the
source, each predicted match lies from the source point with the same track id (the ground truth the
captures bring).

Input and display helpers (`reduce_shape`, `coordinate_colors`, ...) are in app/gui/shapes.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.gui.captures import Capture
from app.gui.panels import Cancelled, JobContext, Layer, PanelResult, Param, ShapePanel, register_panel
from app.gui.shapes import (ReducedShape, coordinate_colors, mesh_faces_of, reduce_shape,  # noqa: F401 (re-exported)
                            side_by_side_shift, torch_threads)
from fusion.errors import InputError

# ----------------------------------------------------------------------------------------------------------
# the computation


@dataclass
class MatchPanelResult(PanelResult):
    """A PanelResult plus the display shift of the target (float64 [3], added to the layers in
    `shifted_layers` for the side-by-side view; export removes it)."""

    target_shift: np.ndarray = field(default_factory=lambda: np.zeros(3))
    shifted_layers: tuple[int, ...] = ()


def track_id_errors(src: Capture, tgt: Capture, tgt_index: np.ndarray, pred_src_index: np.ndarray) -> dict[str, Any]:
    """Errors of a map against shared track ids (captures of one model).

    tgt_index int [m]: target points evaluated (indices into tgt); pred_src_index int [m]: their predicted
    source points (indices into src). A target point counts when its track id (>= 0) also occurs on the
    source; its error is the distance between the predicted and the same-id source point (source units;
    metres for captures). Returns {} when either side has no track ids or none are shared, else
    {"track_id_pairs", "track_id_error_mean_mm", "track_id_error_median_mm"}.
    """
    if src.track_ids is None or tgt.track_ids is None or src.num_points == 0:
        return {}
    order = np.argsort(src.track_ids, kind="stable")
    sorted_ids = src.track_ids[order]
    ids_t = tgt.track_ids[tgt_index]
    pos = np.clip(np.searchsorted(sorted_ids, ids_t), 0, len(sorted_ids) - 1)
    ok = (ids_t >= 0) & (sorted_ids[pos] == ids_t)
    if not ok.any():
        return {}
    true_src = order[pos[ok]]
    d = np.linalg.norm(src.points[pred_src_index[ok]].astype(np.float64) - src.points[true_src].astype(np.float64), axis=1)
    return {"track_id_pairs": int(ok.sum()), "track_id_error_mean_mm": 1e3 * float(d.mean()),
            "track_id_error_median_mm": 1e3 * float(np.median(d))}


def run_diffumatch(source: Capture, target: Capture, params: dict[str, Any], ctx: JobContext) -> MatchPanelResult:
    """Match `source` and `target` with DiffuMatch (models.diffumatch.matching.prepare + diffumatch, the
    CLI's entry points) and build the panel result.

    params: max_points, steps, opt_vertices, k_final, use_faces, device ("auto" | "cpu" | "cuda"), threads,
    seed. Layers: source (coordinate colors) and target (source colors pulled through the map, shifted
    beside the source). Arrays: map_target_to_source int64 [N_target] (original target point -> original
    source point). Raises InputError for bad inputs or parameters, Cancelled on Cancel.
    """
    import time

    from scipy.spatial import cKDTree

    from models.diffumatch.matching import MatchCancelled, MatchConfig, diffumatch, prepare
    from models.diffumatch.prior import load_prior
    from models.diffumatch.training import resolve_device

    t0 = time.perf_counter()
    max_points, steps = int(params["max_points"]), int(params["steps"])
    k_final, n_opt = int(params["k_final"]), int(params["opt_vertices"])
    if max_points < 20 or steps < 1 or n_opt < 20 or k_final < 1:
        raise InputError(f"DiffuMatch: max points and optimisation vertices must be >= 20 and steps >= 1 "
                         f"(got {max_points}, {n_opt}, {steps})")
    ctx.progress(0.0, "reading the shapes")
    S = reduce_shape(source, max_points, bool(params["use_faces"]), "source")
    T = reduce_shape(target, max_points, bool(params["use_faces"]), "target")
    dev = resolve_device(str(params["device"]))
    cfg = MatchConfig(steps=steps, k_final=k_final, n_opt_vertices=n_opt, zoomout_sub=min(2000, max_points),
                      seed=int(params["seed"]), device=str(dev))
    with torch_threads(int(params["threads"])):
        try:
            prior = load_prior(device=dev)
            ctx.progress(0.02, "spectral pre-processing: source")
            P1 = prepare(S.verts, S.faces, cfg, name=f"source {source.name!r}")
            ctx.progress(0.08, "spectral pre-processing: target")
            P2 = prepare(T.verts, T.faces, cfg, name=f"target {target.name!r}")

            def progress(f: float, text: str) -> None:
                ctx.progress(0.15 + 0.8 * f, "matched" if text == "done" else text)

            res = diffumatch(P1, P2, prior, cfg, progress, lambda: ctx.cancelled)
        except MatchCancelled:
            raise Cancelled() from None
    ctx.progress(0.96, "colors and map")
    p2p = np.asarray(res.p2p_21, np.int64)  # reduced target vertex -> reduced source vertex
    # the map on every original target point: the match of its nearest reduced target vertex
    near_t = cKDTree(T.verts).query(target.points.astype(np.float64))[1]
    full_map = S.orig_index[p2p[near_t]].astype(np.int64)
    src_colors = coordinate_colors(S.verts)
    tgt_colors = src_colors[p2p]
    shift = side_by_side_shift(S.verts, T.verts)
    seconds = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "source_points": int(len(S.verts)), "target_points": int(len(T.verts)),
        "source_shape": S.kind, "target_shape": T.kind,
        "source_coverage": float(len(np.unique(p2p)) / len(S.verts)),
        "steps": steps, "k_final": k_final,
        "final_loss": float(res.history[-1]) if res.history else float("nan"),
        "matching_seconds": float(res.seconds), "seconds": float(seconds),
        "device": str(dev),
    }
    summary.update(track_id_errors(source, target, T.orig_index, S.orig_index[p2p]))
    layers = [
        Layer(f"Source: {source.name}", S.verts.astype(np.float32), src_colors,
              S.faces if len(S.faces) else None, size=4.0),
        Layer(f"Target: {target.name} (source colors through the map)", (T.verts + shift).astype(np.float32),
              tgt_colors, T.faces if len(T.faces) else None, size=4.0),
    ]
    ctx.progress(1.0, "done")
    return MatchPanelResult(layers, summary, {"map_target_to_source": full_map}, target_shift=shift,
                            shifted_layers=(1,))


@register_panel
class DiffuMatchPanel(ShapePanel):
    """Two shapes -> a dense point map (target -> source) by DiffuMatch, shown as transferred colors."""

    key = "diffumatch"
    title = "DiffuMatch"
    description = ("Dense correspondence between two captures or files (zero-shot functional maps with the "
                   "shipped diffusion prior). The source is colored by position; the target, shown beside it, "
                   "takes the color of its matched source point. Export writes the map (.npy: for each target "
                   "point its source point) and both shapes.")
    inputs = ("Source", "Target")
    params = (
        Param("max_points", "Max points per shape", "int", 1500, 20, 200_000,
              tip="Larger shapes are reduced first (meshes decimated, clouds evenly subsampled)"),
        Param("steps", "Optimisation steps", "int", 30, 1, 5000,
              tip="Per-pair feature-optimisation steps (the CLI default is 150)"),
        Param("opt_vertices", "Optimisation vertices", "int", 500, 20, 100_000,
              tip="Decimated size of each shape while the features are optimised"),
        Param("k_final", "ZoomOut size", "int", 40, 1, 500, tip="Final functional-map size after ZoomOut"),
        Param("use_faces", "Use mesh faces", "bool", True,
              tip="When a file input is a mesh, use its faces (mesh Laplacian); else the point-cloud Laplacian"),
        Param("device", "Device", "choice", "auto", choices=("auto", "cpu", "cuda")),
        Param("threads", "CPU threads", "int", 1, 1, 64,
              tip="torch threads while matching (one is fastest on a busy CPU)"),
        Param("seed", "Seed", "int", 0, 0, 2**31 - 1),
    )
    order = 20

    def compute(self, inputs: dict[str, Capture], params: dict[str, Any], ctx: JobContext) -> PanelResult:
        """Run `run_diffumatch` on the chosen source and target."""
        return run_diffumatch(inputs["Source"], inputs["Target"], params, ctx)

    def export(self, result: PanelResult, folder: Path) -> list[Path]:
        """The map (.npy), both layers as PLY in their own coordinates (the display shift removed) and the
        summary (JSON)."""
        if isinstance(result, MatchPanelResult) and result.shifted_layers:
            layers = [dataclasses.replace(l, points=(l.points - result.target_shift).astype(np.float32))
                      if i in result.shifted_layers else l for i, l in enumerate(result.layers)]
            result = dataclasses.replace(result, layers=layers, shifted_layers=())
        return super().export(result, folder)
