"""Registered shape collections and the functional maps between their members (training data of the prior).

A registered collection is a list of meshes with the same vertex count and faces, vertex i corresponding
across members. Two sources:
  * procedural: skinned template creatures (a humanoid and two quadrupeds) built once as an implicit
    union of cones along a skeleton and meshed by marching cubes; every member is the template's mesh
    re-posed and re-proportioned by linear blend skinning (bone lengths, limb thickness, joint angles), so
    maps between members are non-isometric as well as articulated;
  * folders of constant-connectivity meshes (../shared/data/sequences/{horse-gallop,samba}).
Between members a and b the identity correspondence gives p2p_ba = arange(n) and so
FM_ab = evecs_b.T @ diag(mass_b) @ evecs_a (the convention of fmaps.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.errors import InputError

from .spectral import SpectralConfig, SpectralShape, prepare_shape


@dataclass(frozen=True)
class Skeleton:
    """A template skeleton: joints float [J, 3] (rest positions), parent int [J] (-1 root), radius float
    [J] (body radius at each joint, in the same units)."""

    joints: np.ndarray
    parent: np.ndarray
    radius: np.ndarray
    name: str = "template"


def humanoid() -> Skeleton:
    """A T-posed humanoid (units ~ metres, y up)."""
    J = [
        (0, 0.95, 0), (0, 1.22, 0), (0, 1.48, 0), (0, 1.72, 0.02),  # pelvis spine neck head
        (0.2, 1.43, 0), (0.46, 1.43, 0), (0.7, 1.43, 0),  # left arm
        (-0.2, 1.43, 0), (-0.46, 1.43, 0), (-0.7, 1.43, 0),  # right arm
        (0.1, 0.88, 0), (0.1, 0.5, 0), (0.1, 0.08, 0), (0.1, 0.04, 0.13),  # left leg
        (-0.1, 0.88, 0), (-0.1, 0.5, 0), (-0.1, 0.08, 0), (-0.1, 0.04, 0.13),  # right leg
    ]
    P = [-1, 0, 1, 2, 2, 4, 5, 2, 7, 8, 0, 10, 11, 12, 0, 14, 15, 16]
    R = [0.13, 0.14, 0.06, 0.1, 0.06, 0.045, 0.035, 0.06, 0.045, 0.035, 0.08, 0.06, 0.045, 0.035, 0.08, 0.06, 0.045, 0.035]
    return Skeleton(np.array(J, float), np.array(P), np.array(R, float), "humanoid")


def quadruped(neck: float = 1.0, tail: bool = True) -> Skeleton:
    """A standing quadruped (x forward, y up); `neck` scales the neck length (camel / giraffe-like > 1)."""
    hy = 1.0 + 0.25 * (neck - 1.0)
    J = [
        (0.0, 1.0, 0), (0.4, 1.02, 0), (0.8, 1.04, 0),  # hip mid chest
        (0.8 + 0.25 * neck, 1.04 + 0.35 * neck, 0), (0.8 + 0.4 * neck, 1.04 + 0.42 * neck, 0), (0.95 + 0.45 * neck, hy + 0.35, 0),  # neck head snout
        (0.8, 0.85, 0.13), (0.8, 0.45, 0.13), (0.82, 0.05, 0.13),  # front left
        (0.8, 0.85, -0.13), (0.8, 0.45, -0.13), (0.82, 0.05, -0.13),  # front right
        (0.0, 0.85, 0.13), (-0.02, 0.45, 0.13), (0.0, 0.05, 0.13),  # hind left
        (0.0, 0.85, -0.13), (-0.02, 0.45, -0.13), (0.0, 0.05, -0.13),  # hind right
    ]
    P = [-1, 0, 1, 2, 3, 4, 2, 6, 7, 2, 9, 10, 0, 12, 13, 0, 15, 16]
    R = [0.2, 0.2, 0.21, 0.09, 0.11, 0.06, 0.08, 0.055, 0.04, 0.08, 0.055, 0.04, 0.09, 0.06, 0.04, 0.09, 0.06, 0.04]
    if tail:
        J += [(-0.35, 1.0, 0), (-0.7, 0.85, 0)]
        P += [0, 18]
        R += [0.05, 0.03]
    return Skeleton(np.array(J, float), np.array(P), np.array(R, float), f"quadruped{neck:g}")


def _segment_distance(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance [N] from points x [N, 3] to segment ab, and the segment parameter t in [0, 1]."""
    ab = b - a
    t = np.clip(((x - a) @ ab) / max(ab @ ab, 1e-12), 0.0, 1.0)
    return np.linalg.norm(x - a - t[:, None] * ab, axis=1), t


def _bone_sdf(x: np.ndarray, sk: Skeleton) -> np.ndarray:
    """Signed distances [N, B] of points to each bone's cone (bone b = joint b+1 to its parent)."""
    out = []
    for j in range(len(sk.joints)):
        p = sk.parent[j]
        if p < 0:
            continue
        d, t = _segment_distance(x, sk.joints[p], sk.joints[j])
        r = (1 - t) * sk.radius[p] + t * sk.radius[j]
        out.append(d - r)
    return np.stack(out, axis=1)


def template_mesh(sk: Skeleton, resolution: int = 56, target_vertices: int = 2500) -> tuple[np.ndarray, np.ndarray]:
    """Mesh the smooth union of the skeleton's cones by marching cubes (scikit-image), then decimate.

    Returns (verts float64 [V, 3], faces int64 [F, 3]) with V close to `target_vertices`.
    """
    import open3d as o3d
    from skimage.measure import marching_cubes

    lo = sk.joints.min(0) - sk.radius.max() - 0.05
    hi = sk.joints.max(0) + sk.radius.max() + 0.05
    h = (hi - lo).max() / resolution
    axes = [np.arange(lo[i], hi[i] + h, h) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    d = _bone_sdf(grid, sk)
    k = 0.04  # smooth-min blending radius
    sdf = -k * np.log(np.exp(-d / k).sum(1) + 1e-300)
    vol = sdf.reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    v, f, _, _ = marching_cubes(vol, level=0.0, spacing=(h, h, h))
    v = v + lo
    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(f[:, ::-1].copy()))
    m = m.simplify_quadric_decimation(target_number_of_triangles=2 * target_vertices)
    m.remove_degenerate_triangles()
    m.remove_unreferenced_vertices()
    return np.asarray(m.vertices, dtype=np.float64), np.asarray(m.triangles, dtype=np.int64)


def skinning_weights(verts: np.ndarray, sk: Skeleton, sharpness: float = 6.0) -> np.ndarray:
    """Linear-blend-skinning weights float64 [V, B] (softmax of -sharpness * distance / radius per bone)."""
    rb = np.array([sk.radius[j] for j in range(len(sk.joints)) if sk.parent[j] >= 0])
    d = _bone_sdf(verts, sk) + rb[None]  # ~ distance to each bone's axis segment
    z = -sharpness * d / rb[None]
    z -= z.max(1, keepdims=True)
    w = np.exp(z)
    return w / w.sum(1, keepdims=True)


def _rot(axis_angle: np.ndarray) -> np.ndarray:
    th = np.linalg.norm(axis_angle)
    if th < 1e-12:
        return np.eye(3)
    k = axis_angle / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def pose_mesh(verts: np.ndarray, sk: Skeleton, weights: np.ndarray, rng: np.random.Generator,
              angle_std: float = 0.22, length_std: float = 0.15, thick_std: float = 0.15) -> np.ndarray:
    """Re-pose and re-proportion a template mesh by LBS: random joint rotations, bone length and radial
    thickness scales. verts [V, 3], weights [V, B] -> new verts float64 [V, 3]."""
    bones = [j for j in range(len(sk.joints)) if sk.parent[j] >= 0]
    G = {-1: np.eye(3)}
    newJ = {}
    root = int(np.where(sk.parent < 0)[0][0])
    newJ[root] = sk.joints[root].copy()
    G[root] = _rot(rng.normal(scale=0.05, size=3))
    scale_len = {j: float(np.exp(rng.normal(scale=length_std))) for j in bones}
    scale_rad = {j: float(np.exp(rng.normal(scale=thick_std))) for j in bones}
    order = sorted(bones, key=lambda j: _depth(sk, j))
    out = np.zeros_like(verts)
    for j in order:
        p = sk.parent[j]
        Rl = _rot(rng.normal(scale=angle_std, size=3))
        G[j] = G[p] @ Rl
        newJ[j] = newJ[p] + G[j] @ (scale_len[j] * (sk.joints[j] - sk.joints[p]))
    for b_idx, j in enumerate(bones):
        p = sk.parent[j]
        a, c = sk.joints[p], sk.joints[j]
        u = (c - a) / max(np.linalg.norm(c - a), 1e-12)
        rel = verts - a
        t = rel @ u
        radial = rel - t[:, None] * u[None]
        local = scale_len[j] * t[:, None] * u[None] + scale_rad[j] * radial
        out += weights[:, b_idx : b_idx + 1] * (newJ[p] + local @ G[j].T)
    return out


def _depth(sk: Skeleton, j: int) -> int:
    d = 0
    while sk.parent[j] >= 0:
        j = sk.parent[j]
        d += 1
    return d


@dataclass
class Collection:
    """A registered collection: members share faces int64 [F, 3] and vertex order; verts list of [V, 3]."""

    name: str
    faces: np.ndarray
    verts: list[np.ndarray] = field(default_factory=list)


def procedural_collections(n_per_template: int = 24, seed: int = 0, target_vertices: int = 2000) -> list[Collection]:
    """Procedural registered collections: a humanoid, a short-necked and a long-necked quadruped, each with
    `n_per_template` skinned members (random pose and proportions, shared connectivity)."""
    rng = np.random.default_rng(seed)
    out = []
    for sk in (humanoid(), quadruped(1.0), quadruped(1.8, tail=False)):
        v0, f = template_mesh(sk, target_vertices=target_vertices)
        w = skinning_weights(v0, sk)
        col = Collection(sk.name, f)
        for _ in range(n_per_template):
            col.verts.append(pose_mesh(v0, sk, w, rng))
        out.append(col)
    return out


def folder_collection(folder: str | Path, max_members: int | None = None, stride: int = 1) -> Collection:
    """A constant-connectivity mesh folder (sorted .obj/.off/.ply files) as a Collection.

    Raises InputError when the folder is missing or empty, or members differ in vertex count or faces.
    """
    from models.common.io import load_mesh

    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: no such folder")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in {".obj", ".off", ".ply"})[::stride]
    if max_members is not None:
        files = files[:max_members]
    if not files:
        raise InputError(f"{d}: no mesh files")
    first = load_mesh(files[0], require_faces=True)
    col = Collection(d.name, first.faces, [first.vertices])
    for p in files[1:]:
        m = load_mesh(p, require_faces=True)
        if len(m.vertices) != len(first.vertices) or not np.array_equal(m.faces, first.faces):
            raise InputError(f"{p}: connectivity differs from {files[0].name}; not a registered collection")
        col.verts.append(m.vertices)
    return col


def collection_bases(col: Collection, k: int = 30, cfg: SpectralConfig | None = None) -> list[SpectralShape]:
    """Spectral shapes (k eigenpairs, on-disk cached) of every member of a collection."""
    cfg = cfg or SpectralConfig(k=k)
    return [prepare_shape(v, col.faces, cfg, name=f"{col.name}[{i}]") for i, v in enumerate(col.verts)]


def identity_maps(shapes: list[SpectralShape], k: int = 30, max_pairs: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Functional maps FM_ab = evecs_b[:, :k].T diag(mass_b) evecs_a[:, :k] float32 [P, k, k] for ordered
    pairs a != b of registered shapes (identity correspondence); at most `max_pairs` random pairs."""
    pairs = [(a, b) for a in range(len(shapes)) for b in range(len(shapes)) if a != b]
    if max_pairs is not None and len(pairs) > max_pairs:
        rng = rng or np.random.default_rng(0)
        pairs = [pairs[i] for i in rng.choice(len(pairs), max_pairs, replace=False)]
    out = np.empty((len(pairs), k, k), np.float32)
    for n, (a, b) in enumerate(pairs):
        A, B = shapes[a], shapes[b]
        out[n] = B.evecs[:, :k].T @ (B.mass[:, None] * A.evecs[:, :k])
    return out
