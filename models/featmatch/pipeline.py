"""The whole deformation of a source shape toward a target shape, and its quality figures.

deform(): normalise both shapes into the unit box (each with the training convention), fit a code for
each with the network fixed, run feature matching, map the moved source vertices into the target's
original frame (undoing the target's normalisation), keep the source's faces, and measure.

GUI-friendly: `progress(fraction, message)` and `cancel() -> bool` are passed down; cancel raises
matching.DeformationCancelled.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fusion.errors import InputError
from models.common.io import Mesh, sample_surface
from models.common.metrics import chamfer_l1

from .config import FitConfig, MatchConfig, NormalizeConfig, SampleConfig
from .data import Normalization, normalization_for
from .fitting import fit_shape
from .matching import ProgressFn, feature_match
from .model import ImplicitDecoder


@dataclass(frozen=True)
class DeformConfig:
    """Everything `deform` needs besides the shapes and the network."""

    match: MatchConfig = field(default_factory=MatchConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    samples: SampleConfig = field(default_factory=SampleConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    metric_points: int = 10_000
    """Surface samples per shape for chamfer_to_target."""


@dataclass
class DeformResult:
    """vertices float64 [V, 3] and faces int64 [F, 3] of the deformed source in the target's frame;
    trajectory float64 [T+1, V, 3] (same frame) or None; report: the figures (see `deform`)."""

    vertices: np.ndarray
    faces: np.ndarray
    trajectory: np.ndarray | None
    report: dict


def self_intersecting_pairs(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Intersecting face pairs int64 [K, 2] (i < j, sorted rows) by Open3D; faces sharing a vertex are
    not tested (Open3D skips them), so a fold between two neighbouring faces is not counted.

    vertices float [V, 3], faces int [F, 3]; [0, 2] for a point cloud. Open3D tests every pair whose
    bounding boxes overlap; `self_intersecting_pairs_reference` is the slow numpy check of it.
    """
    if len(faces) == 0:
        return np.zeros((0, 2), np.int64)
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
                                  o3d.utility.Vector3iVector(np.asarray(faces, np.int32)))
    p = np.asarray(m.get_self_intersecting_triangles(), dtype=np.int64).reshape(-1, 2)
    p = np.sort(p, axis=1)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


def count_self_intersections(vertices: np.ndarray, faces: np.ndarray) -> int:
    """Number of intersecting face pairs (see `self_intersecting_pairs`); 0 for a point cloud."""
    return int(len(self_intersecting_pairs(vertices, faces)))


def new_pairs(after: np.ndarray, before: np.ndarray) -> int:
    """How many rows of `after` (int [K, 2] sorted face pairs) are not in `before` (int [L, 2])."""
    if len(after) == 0:
        return 0
    n = int(max(after.max(), before.max() if len(before) else 0)) + 1
    return int((~np.isin(after[:, 0] * n + after[:, 1], before[:, 0] * n + before[:, 1])).sum())


def introduced_self_intersections(v_before: np.ndarray, v_after: np.ndarray, faces: np.ndarray) -> int:
    """Face pairs that intersect after the deformation but did not before (same faces [F, 3]).

    Not count(after) − count(before): that difference hides new intersections behind removed ones
    (and can go negative); a pair is counted as introduced only if it is new.
    """
    a = self_intersecting_pairs(v_after, faces)
    return new_pairs(a, self_intersecting_pairs(v_before, faces)) if len(a) else 0


def _seg_tri(p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, eps: float) -> np.ndarray:
    """Closed segment p0-p1 [N, 3] vs triangle abc [N, 3] (Möller–Trumbore), bool [N]; parallel -> False."""
    d = p1 - p0
    e1, e2 = b - a, c - a
    h = np.cross(d, e2)
    det = (e1 * h).sum(1)
    ok = np.abs(det) > eps
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = p0 - a
    u = (s * h).sum(1) * inv
    q = np.cross(s, e1)
    v = (d * q).sum(1) * inv
    t = (e2 * q).sum(1) * inv
    return ok & (u >= -eps) & (v >= -eps) & (u + v <= 1 + eps) & (t >= -eps) & (t <= 1 + eps)


def self_intersecting_pairs_reference(vertices: np.ndarray, faces: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Slow, obvious numpy check of `self_intersecting_pairs` for non-degenerate, non-coplanar pairs.

    Every pair of faces sharing no vertex is tested (no culling beyond bounding boxes); two
    non-coplanar triangles intersect iff an edge of one crosses the other. Coplanar pairs (a measure-
    zero case for deformed meshes) are not detected here. Returns int64 [K, 2] sorted like the fast one.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    tri = v[f]
    lo, hi = tri.min(1), tri.max(1)
    out = []
    for i in range(len(f) - 1):
        j = np.arange(i + 1, len(f))
        j = j[((lo[j] <= hi[i]) & (hi[j] >= lo[i])).all(1)]
        j = j[~(f[j][:, :, None] == f[i][None, None, :]).any((1, 2))]
        if len(j) == 0:
            continue
        A = np.broadcast_to(tri[i], (len(j), 3, 3))
        B = tri[j]
        hit = np.zeros(len(j), bool)
        for k in range(3):
            hit |= _seg_tri(A[:, k], A[:, (k + 1) % 3], B[:, 0], B[:, 1], B[:, 2], eps)
            hit |= _seg_tri(B[:, k], B[:, (k + 1) % 3], A[:, 0], A[:, 1], A[:, 2], eps)
        out += [(i, int(jj)) for jj in j[hit]]
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def flipped_faces(v0: np.ndarray, v1: np.ndarray, faces: np.ndarray) -> int:
    """Faces whose normal turned by more than 90° between v0 and v1 (float [V, 3], faces int [F, 3]).

    Counts the fold-overs ("crumpling") that `self_intersecting_pairs` cannot see: it skips neighbouring
    faces, and a face folded onto its neighbour shares an edge with it.
    """
    if len(faces) == 0:
        return 0
    f = np.asarray(faces, dtype=np.int64)

    def normals(v: np.ndarray) -> np.ndarray:
        t = np.asarray(v, dtype=np.float64)[f]
        return np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])

    return int(((normals(v0) * normals(v1)).sum(1) < 0).sum())


def edge_length_distortion(v0: np.ndarray, v1: np.ndarray, faces: np.ndarray) -> float:
    """Mean relative change |l1 - l0| / l0 over the unique edges of `faces` (v0, v1 float [V, 3])."""
    if len(faces) == 0:
        return 0.0
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    l0 = np.linalg.norm(v0[e[:, 0]] - v0[e[:, 1]], axis=1)
    l1 = np.linalg.norm(v1[e[:, 0]] - v1[e[:, 1]], axis=1)
    ok = l0 > 1e-12
    return float((np.abs(l1[ok] - l0[ok]) / l0[ok]).mean()) if ok.any() else 0.0


def surface_points(mesh: Mesh, n: int, seed: int = 0) -> np.ndarray:
    """n points on a mesh surface (area-uniform) or the cloud's points (subsampled), float64 [n, 3]."""
    if mesh.is_cloud and len(mesh.vertices) <= n:
        return np.asarray(mesh.vertices, dtype=np.float64)
    return sample_surface(mesh, n, np.random.default_rng(seed))[0]


def _check(mesh: Mesh, name: str) -> None:
    if len(mesh.vertices) == 0:
        raise InputError(f"{name}: no vertices")
    if not np.isfinite(mesh.vertices).all():
        raise InputError(f"{name}: NaN or infinite coordinates")
    if len(mesh.faces) and (mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices)):
        raise InputError(f"{name}: face indices out of range")


def deform(src: Mesh, tgt: Mesh, decoder: ImplicitDecoder, train_codes: torch.Tensor, cfg: DeformConfig = DeformConfig(),
           keep_trajectory: bool = False, progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None,
           src_name: str = "source", tgt_name: str = "target") -> DeformResult:
    """Deform `src` (mesh or cloud, any units) toward `tgt` with implicit feature matching.

    report: chamfer_to_target (sum of the two mean NN distances between surface samples of the result
    and of the target, target units), edge_length_distortion (mean relative change of the source's edge
    lengths, measured in the unit box so that the normalisation's scale does not count),
    self_intersections (intersecting face pairs of the result), self_intersections_source,
    self_intersections_introduced (pairs that intersect in the result and did not in the source),
    flipped_faces (faces whose normal reversed: fold-overs between neighbours), fit BCEs, max_step (unit box),
    the intersection constraint's shrunk / held (vertex, step) counts (MatchConfig.no_new_intersections;
    the source's faces are passed to feature_match), seconds and their split.
    """
    _check(src, src_name)
    _check(tgt, tgt_name)
    prog = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    c0 = time.process_time()
    ns: Normalization = normalization_for(src.vertices, cfg.normalize, src_name)
    nt: Normalization = normalization_for(tgt.vertices, cfg.normalize, tgt_name)
    src_u = Mesh(ns.apply(src.vertices), src.faces)
    tgt_u = Mesh(nt.apply(tgt.vertices), tgt.faces)
    init = train_codes.mean(0) if len(train_codes) else None

    def sub(lo: float, hi: float) -> Callable[[float, str], None]:
        return lambda f, m: prog(lo + (hi - lo) * f, m)

    if cancel is not None and cancel():
        from .matching import DeformationCancelled

        raise DeformationCancelled("deformation cancelled before fitting")
    z_src, bce_src = fit_shape(decoder, src_u, init, cfg.fit, cfg.samples, sub(0.0, 0.2), train_codes)
    same = (np.array_equal(src_u.vertices, tgt_u.vertices) and np.array_equal(src.faces, tgt.faces))
    if same:
        z_tgt, bce_tgt = z_src.clone(), bce_src
    else:
        z_tgt, bce_tgt = fit_shape(decoder, tgt_u, init, cfg.fit, cfg.samples, sub(0.2, 0.4), train_codes)
    t_fit = time.perf_counter() - t0
    res = feature_match(decoder, src_u.vertices, z_src, z_tgt, cfg.match, keep_trajectory, sub(0.4, 0.97), cancel,
                        faces=src.faces if len(src.faces) else None)
    t_match = time.perf_counter() - t0 - t_fit
    out_v = nt.undo(res.vertices)
    traj = np.stack([nt.undo(x) for x in res.trajectory]) if res.trajectory is not None else None
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    prog(0.98, "measuring")
    out_mesh = Mesh(out_v, src.faces)
    chamfer = chamfer_l1(surface_points(out_mesh, cfg.metric_points, 1), surface_points(tgt, cfg.metric_points, 2))
    pairs_out = self_intersecting_pairs(out_v, src.faces)
    pairs_src = self_intersecting_pairs(src.vertices, src.faces)
    si_out, si_src, si_new = len(pairs_out), len(pairs_src), new_pairs(pairs_out, pairs_src)
    report = {
        "vertices": int(len(src.vertices)),
        "faces": int(len(src.faces)),
        "chamfer_to_target": chamfer,
        "edge_length_distortion": edge_length_distortion(src_u.vertices, res.vertices.astype(np.float64), src.faces),
        "self_intersections": si_out,
        "self_intersections_source": si_src,
        "self_intersections_introduced": si_new,
        "flipped_faces": flipped_faces(src.vertices, out_v, src.faces),
        "fit_bce_source": bce_src,
        "fit_bce_target": bce_tgt,
        "max_step_unit_box": res.max_step,
        "final_feature_residual": res.residual,
        "no_new_intersections": bool(cfg.match.no_new_intersections and len(src.faces) > 0),
        "shrunk_vertex_steps": res.shrunk_vertex_steps,
        "held_vertex_steps": res.held_vertex_steps,
        "steps": cfg.match.steps,
        "gn_iters": cfg.match.gn_iters,
        "seconds": seconds,
        "seconds_fit": t_fit,
        "seconds_match": t_match,
        "cpu_seconds": cpu_seconds,
        "device": str(next(decoder.parameters()).device),
    }
    prog(1.0, "done")
    return DeformResult(out_v, np.asarray(src.faces, dtype=np.int64), traj, report)
