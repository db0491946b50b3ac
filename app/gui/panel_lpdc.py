"""The LPDC panel: a capture sequence (or files / a folder of PLY / OBJ / OFF) in, a 4D mesh out.

The chosen clouds (in order) are one time window: each is resampled to `points` points, the window is
normalised to unit scale (`models.lpdc.data.Normalisation`, all frames together) and reconstructed by
`models.lpdc.pipeline.run_prepared` (what `nrstudio lpdc` runs after loading its folder) with the shipped
weights in assets/lpdc/ (or another checkpoint): a mesh at t0 from the occupancy field, then every vertex
carried to every frame, so vertex i is one material point over time (constant connectivity).

The result is an animation (`PanelResult.frames`): frame t shows the mesh at t with each vertex colored
by its t0 position in the window (an RGB cube over the t0 bounding box: the same color marks the same
material point in every frame) and the input cloud of frame t (gray). Export writes the meshes as
`lpdc_mesh_<t>.ply`, the inputs as `lpdc_input_<t>.ply`, `lpdc_vertices.npy` float32 [T, V, 3],
`lpdc_faces.npy` int32 [F, 3], `lpdc_times.npy` and the summary.

Orientation: the model was trained with +y up (unit scale). Camera-frame captures have y down, so the
"up axis" parameter rotates the input into the model's frame and the meshes back; "auto" takes -y when
every cloud carries track ids (captures of the live model, also after saving and loading them) and +y
otherwise (files).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.gui.captures import Capture
from app.gui.shapes import coordinate_colors
from app.gui.panels import Cancelled, JobContext, Layer, PanelResult, Param, ShapePanel, register_panel
from fusion.errors import InputError

#: rotations taking the named up axis to the model's +y (proper rotations about x)
UP_ROTATIONS: dict[str, np.ndarray] = {
    "+y": np.eye(3),
    "-y": np.diag([1.0, -1.0, -1.0]),
    "+z": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
    "-z": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),
}

MAX_SHOWN_INPUT = 5000
"""input points drawn per frame (evenly subsampled)"""


def choose_up(caps: list[Capture], up: str) -> str:
    """The up axis to use: `up` itself, or for "auto" -y when every cloud has track ids (live captures,
    camera frame) and +y otherwise."""
    if up != "auto":
        if up not in UP_ROTATIONS:
            raise InputError(f"unknown up axis {up!r} (auto, {', '.join(UP_ROTATIONS)})")
        return up
    return "-y" if all(c.track_ids is not None for c in caps) else "+y"


def window_clouds(caps: list[Capture], frames: int, pad: bool) -> tuple[list[Capture], list[str]]:
    """The clouds of the window: the first `frames` of `caps` (0 = all); with fewer, the last repeated
    when `pad`, else InputError. Returns (clouds, notes)."""
    if len(caps) == 0:
        raise InputError("LPDC needs a sequence: choose at least 2 captures or files")
    n = len(caps) if frames <= 0 else int(frames)
    notes = []
    if n < 2:
        raise InputError(f"LPDC needs at least 2 frames, got {n}")
    if len(caps) < n:
        if not pad:
            raise InputError(f"{len(caps)} clouds chosen but {n} frames asked: choose more clouds, lower "
                             f"'Frames' (0 = all chosen), or tick 'Pad'")
        notes.append(f"padded from {len(caps)} to {n} frames by repeating the last cloud")
        caps = list(caps) + [caps[-1]] * (n - len(caps))
    elif len(caps) > n:
        notes.append(f"used the first {n} of {len(caps)} chosen clouds")
    for c in caps[:n]:
        if c.num_points < 3:
            raise InputError(f"{c.name}: only {c.num_points} points (LPDC needs at least 3 per frame)")
        if not np.isfinite(c.points).all():
            raise InputError(f"{c.name}: the cloud has NaN or infinite coordinates")
    return list(caps[:n]), notes


def prepare_clouds(clouds: list[np.ndarray], names: list[str], points: int, seed: int, notes: list[str]):
    """The network input of a window of clouds (model frame, float [P_t, 3] each): every cloud resampled to
    `points` points (with repeats when smaller), all normalised together. Returns a
    `models.lpdc.pipeline.PreparedInput` (points [T, points, 3] unit scale, times evenly spaced in [0, 1])."""
    from models.lpdc.data import Normalisation
    from models.lpdc.pipeline import PreparedInput

    rng = np.random.default_rng(seed)
    norm = Normalisation.from_points(np.concatenate(clouds))
    pts = np.stack([norm.to_unit(c[rng.choice(len(c), size=points, replace=len(c) < points)]) for c in clouds])
    return PreparedInput(pts, np.linspace(0.0, 1.0, len(clouds)), norm, list(names), len(clouds), "cloud",
                         notes=list(notes))


@register_panel
class LPDCPanel(ShapePanel):
    """A sequence of clouds -> a constant-connectivity 4D mesh (LPDC), played with a time slider."""

    key = "lpdc"
    title = "LPDC 4D"
    description = ("LPDC 4D reconstruction: a sequence of clouds (captures ticked in order, or files / a folder) "
                   "-> one mesh whose vertices follow the surface through all frames. Vertices are colored by "
                   "their t0 position, so a color marks the same material point in every frame.")
    inputs = ("Sequence",)
    sequence_inputs = ("Sequence",)
    params = (
        Param("frames", "Frames", "int", 0, 0, 64,
              tip="Frames of the window: the first N chosen clouds (0 = all chosen; the shipped model was trained on 17)"),
        Param("pad", "Pad", "bool", False, tip="With fewer clouds than Frames, repeat the last cloud"),
        Param("points", "Points per frame", "int", 300, 16, 100_000,
              tip="Input points per frame (the model was trained on 300)"),
        Param("resolution", "Grid resolution", "int", 32, 8, 256,
              tip="Cells per axis of the coarsest marching-cubes grid at t0"),
        Param("upsampling", "Refinement levels", "int", 1, 0, 4,
              tip="MISE refinement levels near the surface (each doubles the resolution; 0 = plain grid)"),
        Param("up", "Up axis", "choice", "auto", choices=("auto", "+y", "-y", "+z", "-z"),
              tip="Which input axis points up (the model's +y); auto: -y for live captures, +y for files"),
        Param("seed", "Seed", "int", 0, 0, 2**31 - 1, tip="Seed of the point resampling"),
        Param("device", "Device", "choice", "auto", choices=("auto", "cpu", "cuda")),
    )
    order = 10
    weights: str | None = None
    """checkpoint to use (None = the shipped assets/lpdc/lpdc.pt); a plain attribute for scripts / tests"""

    def compute(self, inputs: dict[str, Any], params: dict[str, Any], ctx: JobContext) -> PanelResult:
        """Resample, normalise and reconstruct the window (progress through ctx; Cancel stops between
        stages and during MISE), then build the animation frames."""
        from models.common.metrics import nn_distances
        from models.lpdc.generation import Cancelled as LPDCCancelled
        from models.lpdc.pipeline import RunOptions, run_prepared

        caps, notes = window_clouds(list(inputs["Sequence"]), int(params["frames"]), bool(params["pad"]))
        up = choose_up(caps, str(params["up"]))
        R = UP_ROTATIONS[up]
        ctx.progress(0.02, "preparing the input")
        prep = prepare_clouds([c.points.astype(np.float64) @ R.T for c in caps], [c.name for c in caps],
                              int(params["points"]), int(params["seed"]), notes)
        opts = RunOptions(frames=len(caps), points=int(params["points"]), seed=int(params["seed"]),
                          device=str(params["device"]), weights=self.weights, baselines=False, evaluate=False,
                          resolution0=int(params["resolution"]), upsampling_steps=int(params["upsampling"]))
        try:
            report, rec = run_prepared(prep, None, opts, lambda f, m: ctx.progress(0.05 + 0.85 * f, m),
                                       lambda: ctx.cancelled)
        except LPDCCancelled:
            raise Cancelled() from None
        ctx.progress(0.92, "colouring and measuring")
        world = prep.norm.to_world(rec.vertices) @ R  # [T, V, 3] back in the input frame (R orthonormal)
        faces = np.asarray(rec.faces, np.int32)
        colors = coordinate_colors(rec.vertices[0], floor=30)  # the same material point: the same color in every frame
        frames, fit = [], []
        for t, cap in enumerate(caps):
            ctx.check()
            idx = np.linspace(0, cap.num_points - 1, min(cap.num_points, MAX_SHOWN_INPUT)).astype(np.int64)
            shown = cap.points[idx]
            d, _ = nn_distances(shown.astype(np.float64), world[t])
            fit.append(float(d.mean()))
            frames.append([Layer("mesh", world[t].astype(np.float32), colors, faces),
                           Layer("input", shown, None, size=2.0, alpha=0.5)])
        summary: dict[str, Any] = {
            "frames": len(caps),
            "points_per_frame": int(params["points"]),
            "vertices": int(report["n_vertices"]),
            "faces": int(report["n_faces"]),
            "input_to_mesh_mean": float(np.mean(fit)),
            "vertex_motion_mean": float(np.linalg.norm(world[-1] - world[0], axis=1).mean()),
            "inference_s": float(report["inference_s"]),
            "encode_s": float(report["encode_s"]),
            "mesh_s": float(report["mesh_s"]),
            "motion_s": float(report["motion_s"]),
            "up_axis": up,
            "device": report["model"]["device"],
            "weights": report["model"]["weights"],
        }
        if report.get("notes"):
            summary["notes"] = "; ".join(report["notes"])
        ctx.progress(1.0, "done")
        return PanelResult(layers=[], summary=summary, frames=frames,
                           arrays={"vertices": world.astype(np.float32), "faces": faces,
                                   "times": np.asarray(rec.times, np.float32)})
