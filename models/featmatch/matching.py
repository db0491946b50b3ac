"""Implicit feature matching (paper §2.2): track vertices through the features of Φ while the latent
moves linearly from the source code to the target code.

At interpolation step t (t = 0..T-1) with z_t = z_src + (t/T)(z_tgt - z_src), every vertex x solves

    δ* = argmin_δ  ‖Φ_f(x + δ, z_{t+1}) - Φ_f(x, z_t)‖² + λ‖δ‖²                 (eq. 7)

by N Gauss-Newton iterations; at the iterate δ_k with r_k = Φ_f(x + δ_k, z_{t+1}) - Φ_f(x, z_t) and
J_k = ∂Φ_f/∂x (x + δ_k, z_{t+1}):

    δ_{k+1} = (J_kᵀ J_k + λ I)^{-1} (J_kᵀ J_k δ_k - J_kᵀ r_k)                     (eq. 8)

(the exact minimiser of the linearised energy, so on a linear feature map one iteration is the closed
form). Φ_f are the weighted features of the chosen layers (model.ImplicitDecoder.feature_fn).
Jacobians: model.FeatureJacobian, forward-mode differentiation written out for the MLP and batched
over all vertices (one GEMM per layer); MatchConfig.jacobian = 'jacfwd' uses torch.func.jacfwd under
torch.func.vmap instead (same numbers, slower on CPU; the tests check one against the other). The
step of a vertex is clipped to `search_radius`, so trajectories stay continuous.

Discrete "trajectories cannot cross" (MatchConfig.no_new_intersections, when the faces are given):
after each step, `constrain_step` finds the face pairs that intersect and did not before the step and
shrinks the steps of their vertices (halving, then holding them at the previous position) until the
step introduces none. By induction the result then has no intersecting pair the source did not have.
Within a step, vertex paths are tested against the faces at both ends (`path_crossings`, so a sheet
cannot tunnel through another); this is not exact continuous collision detection.

Array convention: vertices float [V, 3] in the unit box; codes float [D].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch
from torch.func import jacfwd, vmap

from fusion.errors import NRStudioError

from .config import MatchConfig
from .model import FeatureJacobian, ImplicitDecoder


class ProgressFn(Protocol):
    """progress(fraction in [0, 1], message) — called from the computing thread."""

    def __call__(self, fraction: float, message: str) -> None: ...


class DeformationCancelled(NRStudioError):
    """The caller's cancel() returned True; the deformation stopped between two steps."""

    exit_code = 130


@dataclass
class MatchResult:
    """Result of feature matching.

    vertices: float32 [V, 3] final positions (unit box); trajectory: float32 [T+1, V, 3] or None;
    max_step: float, the longest single-step displacement of any vertex (as taken, after the constraint);
    residual: float, mean final feature residual ‖Φ_f(x_T, z_tgt) - Φ_f(x_{T-1}, z_{T-1})‖ of the last
    step (of the unconstrained step).
    """

    vertices: np.ndarray
    trajectory: np.ndarray | None
    max_step: float
    residual: float
    shrunk_vertex_steps: int = 0
    """(vertex, step) pairs whose step was shrunk by the intersection constraint (held ones included)."""
    held_vertex_steps: int = 0
    """(vertex, step) pairs held at the previous position by the intersection constraint."""
    constraint_checks: int = 0
    """Self-intersection tests run by the constraint (one per step plus one per retry)."""


def gauss_newton_update(jac: torch.Tensor, res: torch.Tensor, delta: torch.Tensor, reg: float) -> torch.Tensor:
    """One Gauss-Newton update of eq. 8, batched.

    jac: float [V, D, 3] Jacobian of the features at x + δ_k; res: float [V, D] residual r_k;
    delta: float [V, 3] current δ_k; reg: λ >= 0. Returns δ_{k+1} float [V, 3].
    """
    jtj = torch.einsum("vdi,vdj->vij", jac, jac)
    jtr = torch.einsum("vdi,vd->vi", jac, res)
    rhs = torch.einsum("vij,vj->vi", jtj, delta) - jtr
    eye = torch.eye(3, dtype=jac.dtype, device=jac.device)
    # a tiny floor keeps λ = 0 solvable where the features are locally flat (inactive for usual λ)
    lam = torch.clamp(1e-10 * (1.0 + jtj.diagonal(dim1=1, dim2=2).sum(-1)), min=reg)
    a = jtj + lam[:, None, None] * eye
    return torch.linalg.solve(a, rhs.unsqueeze(-1)).squeeze(-1)


def gauss_newton_update_reference(jac: np.ndarray, res: np.ndarray, delta: np.ndarray, reg: float) -> np.ndarray:
    """Slow numpy reference of `gauss_newton_update`: a per-vertex loop solving the 3x3 system."""
    out = np.zeros_like(delta, dtype=np.float64)
    for v in range(len(delta)):
        j = jac[v].astype(np.float64)
        a = j.T @ j + reg * np.eye(3)
        b = j.T @ j @ delta[v] - j.T @ res[v]
        out[v] = np.linalg.solve(a, b)
    return out


class JacfwdFeatures:
    """The torch.func path: features by `vmap(feature_fn)`, Jacobians by `vmap(jacfwd(feature_fn))`.

    Same interface as model.FeatureJacobian (features / features_and_jacobian, Jacobians direction-major
    [3, V, D_f]); several times slower on CPU, kept as the reference and as MatchConfig.jacobian='jacfwd'.
    `feat` is any per-point f(x [3], c [H1]) -> [D_f] (e.g. ImplicitDecoder.feature_fn).
    """

    def __init__(self, feat: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.feat = feat
        self._f = vmap(feat, in_dims=(0, None))
        self._j = vmap(jacfwd(lambda p, c: _dup(feat(p, c)), argnums=0, has_aux=True), in_dims=(0, None))

    def features(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """float [V, D_f] for x float [V, 3]."""
        return self._f(x, c)

    def features_and_jacobian(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(float [V, D_f], float [3, V, D_f])."""
        jac, f = self._j(x, c)  # jac [V, D_f, 3]
        return f, jac.permute(2, 0, 1)


def _dup(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return f, f


def _clip(delta: torch.Tensor, radius: float | None) -> torch.Tensor:
    if radius is None or not np.isfinite(radius):
        return delta
    n = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(radius / n.clamp_min(1e-12), max=1.0)


def gauss_newton_update_t(jt: torch.Tensor, res: torch.Tensor, delta: torch.Tensor, reg: float) -> torch.Tensor:
    """`gauss_newton_update` for direction-major Jacobians jt float [3, V, D] (model.FeatureJacobian)."""
    jtj = torch.einsum("ivd,jvd->vij", jt, jt)
    jtr = torch.einsum("ivd,vd->vi", jt, res)
    rhs = (jtj @ delta.unsqueeze(-1)).squeeze(-1) - jtr
    lam = torch.clamp(1e-10 * (1.0 + jtj.diagonal(dim1=1, dim2=2).sum(-1)), min=reg)
    a = jtj + lam[:, None, None] * torch.eye(3, dtype=jt.dtype, device=jt.device)
    return torch.linalg.solve(a, rhs.unsqueeze(-1)).squeeze(-1)


def _new_rows(after: np.ndarray, before: np.ndarray, n: int) -> np.ndarray:
    """bool [K]: rows of `after` (int [K, 2] sorted face pairs) not in `before` (int [L, 2]); n > any face id."""
    if len(after) == 0:
        return np.zeros(0, bool)
    return ~np.isin(after[:, 0] * n + after[:, 1], before[:, 0] * n + before[:, 1])


def _edge_keys(f: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique keys a * n + b (a < b) of the edges of faces f int [F, 3]; n = vertex count."""
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = np.sort(e, axis=1)
    return np.unique(e[:, 0] * n + e[:, 1])


def _near(v: np.ndarray, tri: np.ndarray, ekeys: np.ndarray, n: int) -> np.ndarray:
    """bool [K]: face tri[k] (int [K, 3]) contains vertex v[k] or one of its neighbours (an edge)."""
    a = np.minimum(v[:, None], tri)
    b = np.maximum(v[:, None], tri)
    return ((tri == v[:, None]) | np.isin(a * n + b, ekeys)).any(1)


def path_crossings(x0: np.ndarray, x1: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Vertex paths that pass through a face during a step, int64 [K, 2] rows (vertex, face), unique.

    x0, x1: float [V, 3] positions before / after the step; faces int [F, 3]. The straight path x0[v] ->
    x1[v] of every vertex that moved is tested against every face that shares no vertex with v's faces
    (neither v nor a neighbour of v: the analogue of the intersection count skipping faces that share a
    vertex, so folds between neighbours are left to `flipped_faces`), once with the faces at x0 and once
    at x1 (Open3D RaycastingScene.list_intersections, float32, hits with 0 <= t <= 1).
    Catches a sheet that tunnels through another within one step, which no end-point intersection test
    sees; not exact continuous collision detection when both the vertex and the face move.
    `path_crossings_reference` is the numpy check.
    """
    import open3d as o3d

    f = np.asarray(faces, dtype=np.int64)
    d = np.asarray(x1, np.float64) - np.asarray(x0, np.float64)
    mv = np.flatnonzero(np.linalg.norm(d, axis=1) > 0)
    if len(f) == 0 or len(mv) == 0:
        return np.zeros((0, 2), np.int64)
    rays = np.concatenate([np.asarray(x0, np.float64)[mv], d[mv]], 1).astype(np.float32)
    n = len(d)
    ekeys = _edge_keys(f, n)
    out = []
    for pos in (x0, x1):
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.asarray(pos, np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
        hit = scene.list_intersections(o3d.core.Tensor(rays))
        rid = hit["ray_ids"].numpy().astype(np.int64)
        fid = hit["primitive_ids"].numpy().astype(np.int64)
        t = hit["t_hit"].numpy()
        ok = (t >= 0) & (t <= 1)
        v, fi = mv[rid[ok]], fid[ok]
        own = _near(v, f[fi], ekeys, n)
        out.append(np.stack([v[~own], fi[~own]], 1))
    r = np.concatenate(out)
    return np.unique(r, axis=0) if len(r) else np.zeros((0, 2), np.int64)


def path_crossings_reference(x0: np.ndarray, x1: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Slow numpy check of `path_crossings`: Möller–Trumbore of every moved vertex's segment against
    every face sharing no vertex with the vertex's faces, faces at x0 and at x1 (float64).
    Returns int64 [K, 2] (vertex, face)."""
    from .pipeline import _seg_tri

    f = np.asarray(faces, dtype=np.int64)
    a0, a1 = np.asarray(x0, np.float64), np.asarray(x1, np.float64)
    out = set()
    for v in range(len(a0)):
        if not np.any(a1[v] != a0[v]):
            continue
        ring = np.unique(f[(f == v).any(1)])  # v and its neighbours
        fi = np.flatnonzero(~np.isin(f, ring).any(1))
        for pos in (a0, a1):
            tri = pos[f[fi]]
            p0 = np.broadcast_to(a0[v], (len(fi), 3))
            p1 = np.broadcast_to(a1[v], (len(fi), 3))
            hit = _seg_tri(p0, p1, tri[:, 0], tri[:, 1], tri[:, 2], 1e-12)
            out.update((v, int(j)) for j in fi[hit])
    return np.asarray(sorted(out), dtype=np.int64).reshape(-1, 2)


@dataclass
class StepConstraint:
    """What `constrain_step` did: vertices [V, 3] (dtype of x_prev) the positions after the constrained
    step, exactly as tested; scale float64 [V] in [0, 1] applied to each vertex's step; pairs int64
    [K, 2] the intersecting face pairs at `vertices`; checks: rounds of tests run; crossings: vertex
    paths found passing through a face (over all rounds; each led to a shrink)."""

    vertices: np.ndarray
    scale: np.ndarray
    pairs: np.ndarray
    checks: int
    crossings: int = 0


def constrain_step(x_prev: np.ndarray, delta: np.ndarray, faces: np.ndarray, pairs_prev: np.ndarray,
                   shrink_tries: int = 3,
                   pairs_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                   paths: bool = True) -> StepConstraint:
    """Shrink the steps `delta` so that x_prev + scale·delta has no intersecting face pair not in pairs_prev
    (and, with `paths`, no vertex path passing through a face during the step).

    x_prev: float [V, 3] positions before the step; delta: float [V, 3] the proposed step; faces: int [F, 3];
    pairs_prev: int [L, 2] sorted intersecting face pairs at x_prev (pipeline.self_intersecting_pairs).
    Each round tests x_prev + scale·delta: the vertices of every newly intersecting face pair, and of
    every vertex path crossing a face (`path_crossings`: the vertex and the face's corners), get their
    scale halved (rounds 1..shrink_tries) and afterwards set to 0 (held at x_prev). Terminates: a new
    pair always has a vertex with scale > 0 (a pair of faces all at x_prev is in pairs_prev), and a
    crossing path belongs to a vertex with scale > 0, so each later round holds at least one more
    vertex; at worst every vertex is held and the step is empty.
    pairs_fn(vertices, faces) -> sorted pairs (default pipeline.self_intersecting_pairs, Open3D).
    """
    if pairs_fn is None:
        from .pipeline import self_intersecting_pairs as pairs_fn  # lazy: pipeline imports this module
    x_prev = np.asarray(x_prev)
    dtype = x_prev.dtype if x_prev.dtype in (np.float32, np.float64) else np.float64
    x0 = x_prev.astype(np.float64)
    d = np.asarray(delta, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    scale = np.ones(len(x0))
    n = len(f) + 1
    checks = crossings = 0
    rnd = 0
    pairs: np.ndarray | None = None
    changed = np.zeros(len(x0), bool)
    while True:
        # positions rounded to the caller's dtype, so the tested mesh is exactly the one returned
        x = np.where(scale[:, None] > 0, x0 + scale[:, None] * d, x0).astype(dtype)
        pairs = pairs_fn(x, f) if pairs is None else _update_pairs(pairs_fn, x, f, pairs, changed)
        checks += 1
        new = _new_rows(pairs, pairs_prev, n)
        cr = path_crossings(x_prev, x, f) if paths else np.zeros((0, 2), np.int64)
        if not new.any() and len(cr) == 0:
            return StepConstraint(x, scale, pairs, checks, crossings)
        crossings += len(cr)
        vb = np.unique(np.concatenate([f[pairs[new]].ravel(), cr[:, 0], f[cr[:, 1]].ravel()]))
        rnd += 1
        before = scale.copy()
        if rnd <= shrink_tries:
            scale[vb] *= 0.5
        else:
            scale[vb] = 0.0
        changed = (scale != before) & np.any(d != 0, axis=1)


def _update_pairs(pairs_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], x: np.ndarray, f: np.ndarray,
                  pairs: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """The intersecting pairs at x, given `pairs` (the pairs before the vertices marked in `changed`
    (bool [V]) moved): only pairs with a face touching a changed vertex can differ, and such a face can
    only meet faces whose bounding boxes overlap its own, so pairs_fn runs on that sub-mesh (same
    vertices, same adjacency) and the other pairs are kept. Same result as pairs_fn(x, f)."""
    cf = np.flatnonzero(changed[f].any(1))
    if len(cf) == 0:
        return pairs
    tri = x[f].astype(np.float64)
    lo, hi = tri.min(1), tri.max(1)
    if len(cf) * len(f) > 50_000_000:  # the sub-mesh would be most of the mesh anyway
        return pairs_fn(x, f)
    near = np.zeros(len(f), bool)
    for s in range(0, len(cf), 256):
        c = cf[s:s + 256]
        near |= ((lo[None, :] <= hi[c, None]) & (hi[None, :] >= lo[c, None])).all(-1).any(0)
    cand = np.flatnonzero(near)  # includes cf itself
    sub = pairs_fn(x, f[cand])
    sub = np.sort(cand[sub], axis=1) if len(sub) else np.zeros((0, 2), np.int64)
    isc = np.zeros(len(f), bool)
    isc[cf] = True
    keep = pairs[~isc[pairs].any(1)] if len(pairs) else pairs
    add = sub[isc[sub].any(1)] if len(sub) else sub
    p = np.concatenate([keep, add]).astype(np.int64).reshape(-1, 2)
    return p[np.lexsort((p[:, 1], p[:, 0]))]


def match_step(fj: "FeatureJacobian | JacfwdFeatures", x: torch.Tensor, f_ref: torch.Tensor, c_to: torch.Tensor,
               cfg: MatchConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One interpolation step for a batch of vertices (all at once).

    fj: batched features/Jacobians (model.FeatureJacobian or JacfwdFeatures); x: float [V, 3] current
    positions x_t; f_ref: float [V, D_f] their features Φ_f(x_t, z_t); c_to: first-layer latent bias of
    z_{t+1}. Returns (δ float [V, 3], new features Φ_f(x_t + δ, z_{t+1}) float [V, D_f] — the reference
    of the next step —, residual norm ‖Φ_f(x_t + δ, z_{t+1}) − f_ref‖ float [V]).
    """
    delta = torch.zeros_like(x)
    for _ in range(cfg.gn_iters):
        f, jt = fj.features_and_jacobian(x + delta, c_to)
        delta = _clip(gauss_newton_update_t(jt, f - f_ref, delta, cfg.reg), cfg.search_radius)
    f_new = fj.features(x + delta, c_to)
    return delta, f_new, (f_new - f_ref).norm(dim=-1)


def feature_match(decoder: ImplicitDecoder, vertices: np.ndarray, z_src: torch.Tensor, z_tgt: torch.Tensor,
                  cfg: MatchConfig = MatchConfig(), keep_trajectory: bool = False,
                  progress: ProgressFn | None = None, cancel: Callable[[], bool] | None = None,
                  faces: np.ndarray | None = None) -> MatchResult:
    """Move `vertices` (float [V, 3], unit box, on the surface of Φ(·, z_src)) toward Φ(·, z_tgt).

    Runs cfg.steps interpolation steps of cfg.gn_iters Gauss-Newton iterations each, on the decoder's
    device, every vertex of a chunk (cfg.chunk) in one batched solve. The features of x_{t+1} at z_{t+1}
    computed for the residual are reused as the reference of the next step. `progress(fraction,
    message)` is called after each step; `cancel()` is polled before each step and raises
    DeformationCancelled when it returns True.

    faces: int [F, 3] of the mesh (optional). With faces and cfg.no_new_intersections, every step is
    passed through `constrain_step`, so no step introduces an intersecting face pair; a blocked vertex
    then tracks the features given by cfg.blocked_reference.
    """
    prm = next(decoder.parameters())
    dev, dt = prm.device, prm.dtype  # float32 normally; a float64 decoder (tests) computes in float64
    x = torch.as_tensor(np.asarray(vertices), device=dev).to(dt)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got {tuple(x.shape)}")
    z_src = z_src.to(dev, dt)
    z_tgt = z_tgt.to(dev, dt)
    if cfg.jacobian == "jacfwd":
        fj: FeatureJacobian | JacfwdFeatures = JacfwdFeatures(decoder.feature_fn(cfg.layers, cfg.layer_weights))
    else:
        fj = decoder.feature_jacobian_fn(cfg.layers, cfg.layer_weights)
    traj = [x.cpu().numpy().copy()] if keep_trajectory else None
    max_step = 0.0
    res_mean = 0.0
    use_faces = faces is not None and cfg.no_new_intersections and len(faces) > 0 and len(x) > 0
    if use_faces:
        from .pipeline import self_intersecting_pairs  # lazy: pipeline imports this module

        faces = np.asarray(faces, dtype=np.int64)
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= len(x):
            raise ValueError(f"faces must be int [F, 3] indexing {len(x)} vertices")
        pairs_prev = self_intersecting_pairs(x.cpu().numpy().astype(np.float64), faces)
    shrunk = held = checks = 0
    T = cfg.steps
    chunks = [slice(s, s + cfg.chunk) for s in range(0, len(x), cfg.chunk)]
    with torch.inference_mode():
        c_from = decoder.latent_bias(z_src)
        f_ref = [fj.features(x[sl], c_from) for sl in chunks]
        for t in range(T):
            if cancel is not None and cancel():
                raise DeformationCancelled(f"deformation cancelled at step {t}/{T}")
            c_to = decoder.latent_bias(z_src + ((t + 1) / T) * (z_tgt - z_src))
            deltas, ress = [], []
            for i, sl in enumerate(chunks):
                d, f_ref[i], r = match_step(fj, x[sl], f_ref[i], c_to, cfg)
                deltas.append(d)
                ress.append(r)
            delta = torch.cat(deltas) if deltas else torch.zeros_like(x)
            if use_faces:
                sc = constrain_step(x.cpu().numpy(), delta.cpu().numpy(), faces, pairs_prev, cfg.shrink_tries,
                                    paths=cfg.block_path_crossings)
                pairs_prev = sc.pairs
                checks += sc.checks
                cut = sc.scale < 1.0
                x_new = torch.as_tensor(sc.vertices, device=dev).to(dt)
                if cut.any():
                    shrunk += int(cut.sum())
                    held += int((sc.scale == 0.0).sum())
                    if cfg.blocked_reference == "actual":  # blocked vertices track the features where they are
                        for i, sl in enumerate(chunks):
                            f_ref[i] = fj.features(x_new[sl], c_to)
                delta = x_new - x
            else:
                x_new = x + delta
            if len(x):
                max_step = max(max_step, float(delta.norm(dim=-1).max()))
                res_mean = float(torch.cat(ress).mean())
            x = x_new
            if traj is not None:
                traj.append(x.cpu().numpy().copy())
            if progress is not None:
                progress((t + 1) / T, f"feature matching step {t + 1}/{T}")
    return MatchResult(
        vertices=x.cpu().numpy(),
        trajectory=np.stack(traj) if traj is not None else None,
        max_step=max_step,
        residual=res_mean,
        shrunk_vertex_steps=shrunk,
        held_vertex_steps=held,
        constraint_checks=checks,
    )
