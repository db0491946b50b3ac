"""Inference: occupancy -> mesh at t0 (marching cubes, with Occupancy Networks' multi-resolution
iso-surface extraction MISE or a plain grid), then every vertex carried to every frame.

For LPDC all vertices go to all frames in ONE batched call of the displacement field; the ODE baseline
integrates them through the frames with its fixed-step solver. Everything here is in unit scale.
Panel-friendly: `reconstruct` takes `progress(fraction, message)` and `cancel() -> bool`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fusion.errors import NRStudioError
from models.lpdc.config import GenerationConfig
from models.lpdc.data import marching_cubes_oriented

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]


class Cancelled(NRStudioError):
    """The run was cancelled through its `cancel` callable."""

    exit_code = 130


def _check(cancel: Cancel | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled")


def _logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def grid_coords(n_cells: int, half: float) -> np.ndarray:
    """Coordinates [n+1] of the grid points along one axis of the cube [-half, half] with n cells."""
    return np.linspace(-half, half, n_cells + 1)


def _eval_points(fn: Callable[[np.ndarray], np.ndarray], idx: np.ndarray, coords: np.ndarray, batch: int) -> np.ndarray:
    """fn at grid points with integer indices idx [M, 3] (axis coordinates `coords`) -> [M] float32."""
    out = np.empty(len(idx), dtype=np.float32)
    for i in range(0, len(idx), batch):
        p = coords[idx[i:i + batch]]
        out[i:i + batch] = fn(p.astype(np.float32))
    return out


def extract_dense(fn: Callable[[np.ndarray], np.ndarray], n_cells: int, half: float, batch: int = 200_000) -> np.ndarray:
    """Reference: fn on every point of the (n+1)^3 grid of [-half, half]^3 -> values float32 [n+1]*3."""
    n1 = n_cells + 1
    idx = np.stack(np.meshgrid(np.arange(n1), np.arange(n1), np.arange(n1), indexing="ij"), axis=-1).reshape(-1, 3)
    return _eval_points(fn, idx, grid_coords(n_cells, half), batch).reshape(n1, n1, n1)


def _upsample2(v: np.ndarray) -> np.ndarray:
    """Trilinear upsampling of a grid [n+1]^3 to [2n+1]^3 (old points at even indices)."""
    for ax in range(3):
        v = np.moveaxis(v, ax, 0)
        out = np.empty((2 * v.shape[0] - 1,) + v.shape[1:], dtype=v.dtype)
        out[0::2] = v
        out[1::2] = 0.5 * (v[:-1] + v[1:])
        v = np.moveaxis(out, 0, ax)
    return v


def extract_mise(fn: Callable[[np.ndarray], np.ndarray], resolution0: int, upsampling_steps: int, threshold_logit: float,
                 half: float, batch: int = 200_000, cancel: Cancel | None = None,
                 progress: Progress | None = None) -> tuple[np.ndarray, int]:
    """Multi-resolution iso-surface extraction (Mescheder et al. 2019, MISE).

    Evaluates fn on the resolution0^3-cell grid, then `upsampling_steps` times subdivides the cells
    whose corners straddle `threshold_logit` (dilated by one cell) and evaluates fn only at their new
    corners; elsewhere values are trilinearly interpolated. Returns (values float32 [R+1]^3 with
    R = resolution0 * 2^steps, number of fn evaluations).
    """
    from scipy.ndimage import binary_dilation

    R = resolution0 * 2**upsampling_steps
    coords = grid_coords(R, half)
    S = 2**upsampling_steps
    n = resolution0
    idx0 = np.stack(np.meshgrid(*(np.arange(0, R + 1, S),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    vals = _eval_points(fn, idx0, coords, batch).reshape(n + 1, n + 1, n + 1)
    n_eval = len(idx0)
    for level in range(upsampling_steps):
        _check(cancel)
        if progress is not None:
            progress(level / max(upsampling_steps, 1), f"refining the t0 surface ({n} -> {2 * n} cells)")
        occ = vals > threshold_logit
        corners = [occ[a:a + n, b:b + n, c:c + n] for a in (0, 1) for b in (0, 1) for c in (0, 1)]
        anyo = np.logical_or.reduce(corners)
        allo = np.logical_and.reduce(corners)
        active = binary_dilation(anyo & ~allo, structure=np.ones((3, 3, 3), dtype=bool))
        fine = _upsample2(vals)
        mask = np.zeros((2 * n + 1,) * 3, dtype=bool)
        for a in range(3):
            for b in range(3):
                for c in range(3):
                    mask[a:a + 2 * n:2, b:b + 2 * n:2, c:c + 2 * n:2] |= active
        mask[0::2, 0::2, 0::2] = False  # already known
        sel = np.argwhere(mask)
        if len(sel):
            step = S // 2 ** (level + 1)
            fine[mask] = _eval_points(fn, sel * step, coords, batch)
            n_eval += len(sel)
        vals = fine
        n *= 2
    return vals, n_eval


def mesh_from_values(values: np.ndarray, threshold_logit: float, half: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of the occupancy logits [n+1]^3 on [-half, half]^3 at `threshold_logit`.

    Returns (vertices float64 [V, 3] unit scale, faces int64 [F, 3] outward); empty arrays when the
    level is not crossed.
    """
    if not (values.max() > threshold_logit > values.min()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    n = values.shape[0] - 1
    # pad with "outside" so that the surface is closed even when it touches the box
    pad = np.pad(values, 1, constant_values=min(float(values.min()), threshold_logit - 10.0))
    verts, faces = marching_cubes_oriented(pad, threshold_logit, inside_negative=False)
    verts = (verts - 1) * (2 * half / n) - half
    return verts, faces


@dataclass
class Reconstruction:
    """A reconstructed 4D mesh: vertices float64 [T, V, 3] (unit scale; vertex i is one material point
    over time), faces int64 [F, 3] (shared by all frames), times [T], timings in seconds."""

    vertices: np.ndarray
    faces: np.ndarray
    times: np.ndarray
    timings: dict = field(default_factory=dict)
    n_decoder_evals: int = 0


def encode(model: torch.nn.Module, points: np.ndarray, times: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """points [T, N, 3], times [T] (unit scale) -> codes (s [1, T, C], z [1, T, C]) on device."""
    x = torch.as_tensor(np.asarray(points, dtype=np.float32), device=device)[None]
    t = torch.as_tensor(np.asarray(times, dtype=np.float32), device=device)[None]
    return model.encode(x, t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reconstruct(model: torch.nn.Module, points: np.ndarray, times: np.ndarray, gen: GenerationConfig,
                device: torch.device | str = "cpu", progress: Progress | None = None, cancel: Cancel | None = None,
                t0_mesh: tuple[np.ndarray, np.ndarray] | None = None) -> Reconstruction:
    """Reconstruct a constant-connectivity mesh sequence from point clouds (unit scale).

    points [T, N, 3] float, times [T] in [0, 1]. The t0 mesh comes from the occupancy decoder (MISE when
    gen.upsampling_steps > 0, else a plain resolution0^3 grid) unless `t0_mesh` = (vertices [V, 3],
    faces [F, 3]) is given; its vertices then go to all frames: LPDC in one batched displacement call,
    the ODE baseline by integration. timings: encode_s, mesh_s, motion_s, inference_s (their sum), wall
    seconds; and the process CPU seconds mesh_cpu_s, motion_cpu_s, inference_cpu_s (steadier than wall
    time on a shared machine).
    """
    dev = torch.device(device) if isinstance(device, str) else device
    half = 0.5 + gen.padding / 2
    thr = _logit(gen.threshold)

    def prog(f: float, msg: str) -> None:
        if progress is not None:
            progress(float(min(max(f, 0.0), 1.0)), msg)

    model.eval()
    with torch.no_grad():
        _check(cancel)
        prog(0.0, "encoding the point clouds")
        t_a, c_a = time.perf_counter(), time.process_time()
        s, z = encode(model, points, times, dev)
        _sync(dev)
        t_b, c_b = time.perf_counter(), time.process_time()
        n_eval = 0
        if t0_mesh is None:
            s0 = s[:, 0]

            def fn(p: np.ndarray) -> np.ndarray:
                q = torch.as_tensor(p, device=dev)[None]
                return model.occupancy_logits(q, s0)[0].float().cpu().numpy()

            if gen.upsampling_steps > 0:
                vals, n_eval = extract_mise(fn, gen.resolution0, gen.upsampling_steps, thr, half, gen.points_batch,
                                            cancel, lambda f, m: prog(0.05 + 0.6 * f, m))
            else:
                vals = extract_dense(fn, gen.resolution0, half, gen.points_batch)
                n_eval = vals.size
            verts, faces = mesh_from_values(vals, thr, half)
        else:
            verts, faces = np.asarray(t0_mesh[0], dtype=np.float64), np.asarray(t0_mesh[1], dtype=np.int64)
        t_c, c_c = time.perf_counter(), time.process_time()
        _check(cancel)
        prog(0.7, f"moving {len(verts)} vertices to {len(times)} frames")
        if len(verts):
            v = torch.as_tensor(verts.astype(np.float32), device=dev)[None]
            tt = torch.as_tensor(np.asarray(times, dtype=np.float32), device=dev)[None]
            seq = model.to_frames(v, z, tt)[0].float().cpu().numpy().astype(np.float64)
        else:
            seq = np.zeros((len(times), 0, 3))
        _sync(dev)
        t_d, c_d = time.perf_counter(), time.process_time()
    prog(1.0, "done")
    timings = {"encode_s": t_b - t_a, "mesh_s": t_c - t_b, "motion_s": t_d - t_c, "inference_s": t_d - t_a,
               "mesh_cpu_s": c_c - c_b, "motion_cpu_s": c_d - c_c, "inference_cpu_s": c_d - c_a}
    return Reconstruction(seq, faces, np.asarray(times, dtype=np.float64), timings, n_eval)
