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


def _straddling_cells(values: np.ndarray, threshold_logit: float) -> np.ndarray:
    """Cells of the grid values [a+1, b+1, c+1] whose 8 corners lie on both sides of the level -> bool
    [a, b, c] (any and all of the corners, reduced one axis at a time)."""
    anyo = values > threshold_logit
    allo = anyo
    for ax in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        anyo = anyo[tuple(lo)] | anyo[tuple(hi)]
        allo = allo[tuple(lo)] & allo[tuple(hi)]
    return anyo & ~allo


def _straddling_cells_reference(values: np.ndarray, threshold_logit: float) -> np.ndarray:
    """Slow reference of `_straddling_cells`: every cell's 8 corners looked at one cell at a time."""
    occ = values > threshold_logit
    a, b, c = (s - 1 for s in values.shape)
    out = np.zeros((a, b, c), dtype=bool)
    for i in range(a):
        for j in range(b):
            for k in range(c):
                corner = occ[i:i + 2, j:j + 2, k:k + 2]
                out[i, j, k] = corner.any() and not corner.all()
    return out


def _cell_corners(cells: np.ndarray) -> np.ndarray:
    """bool cells [a, b, c] -> bool grid points [a+1, b+1, c+1]: the 8 corners of every marked cell."""
    out = cells
    for ax in range(3):  # separable: a point is a corner of a marked cell along every axis in turn
        lo = [(0, 0)] * 3
        hi = [(0, 0)] * 3
        lo[ax], hi[ax] = (0, 1), (1, 0)
        out = np.pad(out, lo) | np.pad(out, hi)
    return out


def _follow_mask(values: np.ndarray, known: np.ndarray, sel: np.ndarray, threshold_logit: float) -> np.ndarray:
    """Grid points to evaluate next when following the surface: the unknown corners of straddling cells,
    looked for in the box around the just-evaluated points sel [M, 3] (a cell can only change its
    straddling state when one of its corners changed). values, known [n+1]^3 -> bool [n+1]^3."""
    lo = np.maximum(sel.min(axis=0) - 1, 0)
    hi = np.minimum(sel.max(axis=0) + 2, np.array(values.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    out = np.zeros(values.shape, dtype=bool)
    if min(b - a for a, b in zip(lo, hi)) >= 2:
        out[box] = _cell_corners(_straddling_cells(values[box], threshold_logit)) & ~known[box]
    return out


def extract_mise(fn: Callable[[np.ndarray], np.ndarray], resolution0: int, upsampling_steps: int, threshold_logit: float,
                 half: float, batch: int = 200_000, cancel: Cancel | None = None,
                 progress: Progress | None = None, dilation: int = 0, follow: bool = True,
                 max_follow_rounds: int = 64) -> tuple[np.ndarray, int]:
    """Multi-resolution iso-surface extraction (Mescheder et al. 2019, MISE).

    Evaluates fn on the resolution0^3-cell grid, then `upsampling_steps` times subdivides the cells
    whose corners straddle `threshold_logit` (Occupancy Networks' rule; `dilation` > 0 also subdivides
    that many rings of neighbours) and evaluates fn only at their new corners; elsewhere values are
    trilinearly interpolated. With `follow`, each level then follows the surface across cell borders:
    every fine cell that straddles the level with a corner not yet evaluated gets that corner
    evaluated, repeated until every straddling cell has only evaluated corners (this catches surface
    that crosses into a coarse cell whose own corners all agreed, which plain MISE misses). Returns
    (values float32 [R+1]^3 with R = resolution0 * 2^steps, number of fn evaluations).
    """
    from scipy.ndimage import binary_dilation

    R = resolution0 * 2**upsampling_steps
    coords = grid_coords(R, half)
    S = 2**upsampling_steps
    n = resolution0
    idx0 = np.stack(np.meshgrid(*(np.arange(0, R + 1, S),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    vals = _eval_points(fn, idx0, coords, batch).reshape(n + 1, n + 1, n + 1)
    known = np.ones(vals.shape, dtype=bool)
    n_eval = len(idx0)
    for level in range(upsampling_steps):
        _check(cancel)
        if progress is not None:
            progress(level / max(upsampling_steps, 1), f"refining the t0 surface ({n} -> {2 * n} cells)")
        active = _straddling_cells(vals, threshold_logit)
        if dilation > 0:
            active = binary_dilation(active, structure=np.ones((3, 3, 3), dtype=bool), iterations=dilation)
        fine = _upsample2(vals)
        fknown = np.zeros(fine.shape, dtype=bool)
        fknown[0::2, 0::2, 0::2] = known
        # the 27 points of every subdivided cell = the corners of its 8 children
        mask = _cell_corners(np.repeat(np.repeat(np.repeat(active, 2, axis=0), 2, axis=1), 2, axis=2))
        mask &= ~fknown
        step = S // 2 ** (level + 1)
        for _ in range(max_follow_rounds + 1):
            sel = np.argwhere(mask)
            if len(sel) == 0:
                break
            fine[mask] = _eval_points(fn, sel * step, coords, batch)
            fknown |= mask
            n_eval += len(sel)
            if not follow:
                break
            _check(cancel)
            mask = _follow_mask(fine, fknown, sel, threshold_logit)
        vals, known = fine, fknown
        n *= 2
    return vals, n_eval


def mise_levels(gen: GenerationConfig) -> tuple[int, int]:
    """(coarsest grid cells per axis, refinement levels) that MISE runs for `gen`: resolution0 halved
    (and a level added) while it stays an even multiple of gen.coarsest; the final resolution
    resolution0 * 2^upsampling_steps is unchanged. A plain grid (upsampling_steps 0) is kept."""
    r0, steps = gen.resolution0, gen.upsampling_steps
    if steps > 0 and gen.coarsest > 0:
        while r0 % 2 == 0 and r0 // 2 >= gen.coarsest:
            r0, steps = r0 // 2, steps + 1
    return r0, steps


def mesh_from_values(values: np.ndarray, threshold_logit: float, half: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of the occupancy logits [n+1]^3 on [-half, half]^3 at `threshold_logit`.

    Returns (vertices float64 [V, 3] unit scale, faces int64 [F, 3] outward); empty arrays when the
    level is not crossed.
    """
    if not (values.max() > threshold_logit > values.min()):
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    n = values.shape[0] - 1
    # only the box around the cells the surface crosses (+1 point), padded with "outside" so that the
    # surface is closed even when it touches the box
    cells = np.argwhere(_straddling_cells(values, threshold_logit))
    lo, hi = cells.min(axis=0), cells.max(axis=0) + 2
    box = values[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    pad = np.pad(box, 1, constant_values=min(float(values.min()), threshold_logit - 10.0))
    verts, faces = marching_cubes_oriented(pad, threshold_logit, inside_negative=False)
    verts = (verts - 1 + lo) * (2 * half / n) - half
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

    points [T, N, 3] float, times [T] in [0, 1]. The t0 mesh comes from the occupancy decoder (MISE
    from the levels `mise_levels(gen)` gives when gen.upsampling_steps > 0, else a plain resolution0^3
    grid; the decoder folded for the t0 code) unless `t0_mesh` = (vertices [V, 3], faces [F, 3]) is given; its vertices then go to all frames: LPDC in one batched displacement call,
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
    with torch.inference_mode():
        _check(cancel)
        prog(0.0, "encoding the point clouds")
        t_a, c_a = time.perf_counter(), time.process_time()
        s, z = encode(model, points, times, dev)
        _sync(dev)
        t_b, c_b = time.perf_counter(), time.process_time()
        n_eval = 0
        if t0_mesh is None:
            s0 = s[:, 0]
            folded = model.decoder.folded(s0) if hasattr(model, "decoder") else None

            def fn(p: np.ndarray) -> np.ndarray:
                q = torch.as_tensor(p, device=dev)
                out = folded(q) if folded is not None else model.occupancy_logits(q[None], s0)[0]
                return out.float().cpu().numpy()

            if gen.upsampling_steps > 0:
                r0, steps = mise_levels(gen)
                vals, n_eval = extract_mise(fn, r0, steps, thr, half, gen.points_batch,
                                            cancel, lambda f, m: prog(0.05 + 0.6 * f, m), gen.mise_dilation,
                                            gen.mise_follow)
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
