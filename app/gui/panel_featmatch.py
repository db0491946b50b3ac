"""The feature-matching panel: implicit feature-matching deformation of a source shape toward a target
(models.featmatch, the entry point `nrstudio deform` uses: `pipeline.deform` with the shipped weights).

Both shapes are normalised into the network's unit box, a latent code is fitted for each, and the source
points are tracked through the chosen layers' features while the code moves from the source's to the
target's in `steps` interpolation steps (each `gn_iters` Gauss-Newton iterations). The result is an
animation: frame t shows the source (mesh or cloud, colored by its starting position) after t steps, in the
target's frame, over the target (light gray points, static). The summary holds the Chamfer distance to the target
before (the source only normalised into the target's box, frame 0) and after, the edge-length distortion,
self-intersections and timings. Export: the static target, every frame as PLY, the whole trajectory as
one .npy (float32 [steps + 1, V, 3]) and the summary.

Inputs are clouds (captures or files); a file that is a mesh keeps its faces (`Capture.faces`, see
panel_diffumatch.mesh_faces_of). Shapes above `max_points` are reduced first (meshes decimated, clouds
evenly subsampled). A cloud's occupancy is labelled by flood-filling a voxel grid, which needs a closed
surface at the grid's size: partial single-view captures fit poorly (a known limit of the method here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.gui.captures import Capture
from app.gui.shapes import coordinate_colors, reduce_shape, torch_threads
from app.gui.panels import Cancelled, JobContext, Layer, PanelResult, Param, ShapePanel, register_panel
from fusion.errors import InputError

N_LAYER_PARAMS = 7
"""feature layers offered in the form (the shipped network's linear layers; 7 = the occupancy logit)"""
DEFAULT_LAYER_WEIGHTS = {3: 1.0, 6: 0.1}
"""the CLI's default (--layers 3:1,6:0.1)"""


def layer_selection(params: dict[str, Any], num_layers: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The layers with a positive weight (1-based) and their weights from params["layer_<k>"];
    InputError when none is positive or a weighted layer is beyond the network's `num_layers`."""
    chosen = [(k, float(params.get(f"layer_{k}", 0.0))) for k in range(1, N_LAYER_PARAMS + 1)]
    chosen = [(k, w) for k, w in chosen if w > 0]
    if not chosen:
        raise InputError("feature matching: give at least one layer a weight above 0")
    bad = [k for k, _ in chosen if k > num_layers]
    if bad:
        raise InputError(f"feature matching: the network has {num_layers} layers; layer {bad[0]} has a weight")
    return tuple(k for k, _ in chosen), tuple(w for _, w in chosen)


def run_featmatch(source: Capture, target: Capture, params: dict[str, Any], ctx: JobContext) -> PanelResult:
    """Deform `source` toward `target` with models.featmatch.pipeline.deform and build the panel result.

    params: steps, gn_iters, reg, layer_1 .. layer_7 (feature weights), fit_iters, max_points, voxel_res,
    use_faces, device ("auto" | "cpu" | "cuda"), threads. Layers: the target (light gray points). Frames
    (steps + 1): the source at each interpolation step, float32 points in the target's frame and units,
    colored by position at step 0, with the source's faces when it is a mesh. Arrays: trajectory float32
    [steps + 1, V, 3]. Raises InputError for bad inputs or parameters, Cancelled on Cancel.
    """
    from dataclasses import replace

    from models.common.io import Mesh
    from models.common.metrics import chamfer_l1
    from models.featmatch.config import FitConfig, MatchConfig, SampleConfig
    from models.featmatch.matching import DeformationCancelled
    from models.featmatch.model import load_checkpoint, resolve_device
    from models.featmatch.pipeline import DeformConfig, deform, surface_points
    from models.featmatch.weights import default_weights_path

    steps, gn_iters, reg = int(params["steps"]), int(params["gn_iters"]), float(params["reg"])
    fit_iters, max_points, voxel_res = int(params["fit_iters"]), int(params["max_points"]), int(params["voxel_res"])
    if steps < 1 or gn_iters < 1 or fit_iters < 1:
        raise InputError("feature matching: steps, Gauss-Newton iterations and fitting iterations must be >= 1")
    if reg < 0:
        raise InputError(f"feature matching: the regulariser must be >= 0 (got {reg})")
    if max_points < 20 or voxel_res < 8:
        raise InputError(f"feature matching: max points must be >= 20 and the voxel grid >= 8 (got {max_points}, {voxel_res})")
    ctx.progress(0.0, "reading the shapes")
    S = reduce_shape(source, max_points, bool(params["use_faces"]), "source", min_points=4)
    T = reduce_shape(target, max_points, bool(params["use_faces"]), "target", min_points=4)
    dev = resolve_device(str(params["device"]))
    with torch_threads(int(params["threads"])):
        decoder, codes, _ = load_checkpoint(default_weights_path(), dev)
        layers, weights = layer_selection(params, decoder.cfg.num_layers)
        cfg = DeformConfig(
            match=MatchConfig(steps=steps, gn_iters=gn_iters, reg=reg, layers=layers, layer_weights=weights),
            fit=replace(FitConfig(), iters=fit_iters, points=1024),
            samples=replace(SampleConfig(), n_uniform=2048, n_surface=4096, voxel_res=voxel_res),
            metric_points=4000,
        )
        ctx.progress(0.02, "fitting the latent codes")

        def progress(f: float, text: str) -> None:
            ctx.progress(0.02 + 0.93 * f, "measuring" if text == "done" else text)

        try:
            res = deform(Mesh(S.verts, S.faces), Mesh(T.verts, T.faces), decoder, codes, cfg, keep_trajectory=True,
                         progress=progress, cancel=lambda: ctx.cancelled, src_name=f"source {source.name!r}",
                         tgt_name=f"target {target.name!r}")
        except DeformationCancelled:
            raise Cancelled() from None
    ctx.progress(0.96, "building the animation")
    traj = np.asarray(res.trajectory, np.float32)  # [steps + 1, V, 3], target frame
    faces = S.faces if len(S.faces) else None
    tgt_mesh = Mesh(T.verts, T.faces)
    before = chamfer_l1(surface_points(Mesh(traj[0].astype(np.float64), S.faces), cfg.metric_points, 1),
                        surface_points(tgt_mesh, cfg.metric_points, 2))
    colors = coordinate_colors(traj[0])
    frames = [[Layer("Source (deforming)", traj[t], colors, faces, size=4.0)] for t in range(len(traj))]
    rep = res.report
    summary: dict[str, Any] = {
        "source_points": int(len(S.verts)), "target_points": int(len(T.verts)),
        "source_shape": S.kind, "target_shape": T.kind,
        "chamfer_before": float(before), "chamfer_to_target": float(rep["chamfer_to_target"]),
        "edge_length_distortion": float(rep["edge_length_distortion"]),
        "self_intersections": int(rep["self_intersections"]),
        "self_intersections_introduced": int(rep["self_intersections_introduced"]),
        "fit_bce_source": float(rep["fit_bce_source"]), "fit_bce_target": float(rep["fit_bce_target"]),
        "steps": steps, "gn_iters": gn_iters,
        "layers": ", ".join(f"{k}:{w:g}" for k, w in zip(layers, weights)),
        "frames": int(len(frames)),
        "seconds": float(rep["seconds"]), "device": str(rep["device"]),
    }
    target_layer = Layer(f"Target: {target.name}", T.verts.astype(np.float32),
                         np.full((len(T.verts), 3), (200, 200, 205), np.uint8), None, size=2.5)
    ctx.progress(1.0, "done")
    return PanelResult([target_layer], summary, {"trajectory": traj}, frames=frames)


@register_panel
class FeatMatchPanel(ShapePanel):
    """Source + target -> the source deformed toward the target, as an animation over the steps."""

    key = "featmatch"
    title = "Feature matching"
    description = ("Deform a source toward a target (captures or files) by implicit feature matching: the "
                   "source points follow the network's features while the shape code moves from the source's "
                   "to the target's. Play the animation under the view; export writes every step.")
    inputs = ("Source", "Target")
    params = (
        Param("steps", "Steps", "int", 10, 1, 1000, tip="Latent interpolation steps T (animation frames - 1)"),
        Param("gn_iters", "Gauss-Newton iterations", "int", 2, 1, 50, tip="Per step"),
        Param("reg", "Regulariser λ", "float", 0.01, 0.0, 100.0, decimals=4, tip="Weight of ‖δ‖² per step"),
        *(Param(f"layer_{k}", f"Layer {k} weight", "float", DEFAULT_LAYER_WEIGHTS.get(k, 0.0), 0.0, 100.0,
                decimals=3, tip="Weight of this layer's features (0 = not matched)"
                + ("; layer 7 is the occupancy logit" if k == N_LAYER_PARAMS else ""))
          for k in range(1, N_LAYER_PARAMS + 1)),
        Param("fit_iters", "Code fitting iterations", "int", 50, 1, 10_000, tip="Adam iterations per shape"),
        Param("max_points", "Max points per shape", "int", 2000, 20, 200_000,
              tip="Larger shapes are reduced first (meshes decimated, clouds evenly subsampled)"),
        Param("voxel_res", "Cloud voxel grid", "int", 48, 8, 256,
              tip="Occupancy grid for clouds and open meshes (coarser closes sparser clouds)"),
        Param("use_faces", "Use mesh faces", "bool", True, tip="When a file input is a mesh, deform the mesh"),
        Param("device", "Device", "choice", "auto", choices=("auto", "cpu", "cuda")),
        Param("threads", "CPU threads", "int", 1, 1, 64, tip="torch threads while running (one is fastest on a busy CPU)"),
    )
    order = 30

    def compute(self, inputs: dict[str, Capture], params: dict[str, Any], ctx: JobContext) -> PanelResult:
        """Run `run_featmatch` on the chosen source and target."""
        return run_featmatch(inputs["Source"], inputs["Target"], params, ctx)
