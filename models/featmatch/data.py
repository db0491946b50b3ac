"""Shape collections for the implicit network: procedural shapes with part labels and mesh folders.

Procedural shapes are unions of primitives (capsules, rounded boxes, ellipsoids), each primitive
carrying a semantic part label; occupancy is exact (inside iff some primitive's inside test holds) and
the part of a point is the primitive with the smallest signed distance. Categories:

- humanoid: head, torso, arm_left, arm_right, leg_left, leg_right (varied proportions and poses)
- animal (quadruped): head, neck, body, legs_front, legs_back, tail
- chair: seat, back, legs, arms (arms only on arm-chairs)

Mesh folders: occupancy by ray parity (Open3D; generalised winding numbers are the reference) for
watertight meshes, from a voxelisation
with flood fill for non-watertight meshes and point clouds.

Every shape is normalised into the unit box: bounding-box centre at 0, longest side = extent (0.9).
Arrays: points float32/float64 [N, 3]; occupancy float32 [N] in {0, 0.5 (on the surface), 1}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from fusion.errors import InputError
from models.common.io import MESH_EXTS, Mesh, load_mesh, sample_surface

from .config import NormalizeConfig, SampleConfig

CATEGORIES = ("humanoid", "animal", "chair")
PART_NAMES: dict[str, tuple[str, ...]] = {
    "humanoid": ("head", "torso", "arm_left", "arm_right", "leg_left", "leg_right"),
    "animal": ("head", "neck", "body", "legs_front", "legs_back", "tail"),
    "chair": ("seat", "back", "legs", "arms"),
}


# ----------------------------------------------------------------------------------------------
# primitives (signed distances, numpy, points float64 [N, 3])

@dataclass(frozen=True)
class Capsule:
    """Segment a-b swept by a ball of radius r."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    r: float

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Exact signed distance float [N]."""
        a, b = np.asarray(self.a), np.asarray(self.b)
        ab = b - a
        t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
        return np.linalg.norm(p - (a + t[:, None] * ab), axis=1) - self.r

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (lo [3], hi [3])."""
        a, b = np.asarray(self.a), np.asarray(self.b)
        return np.minimum(a, b) - self.r, np.maximum(a, b) + self.r


@dataclass(frozen=True)
class Box:
    """Box of half sizes h around c, rotated by `tilt` radians about the x axis, edges rounded by r."""

    c: tuple[float, float, float]
    h: tuple[float, float, float]
    r: float = 0.0
    tilt: float = 0.0

    def _local(self, p: np.ndarray) -> np.ndarray:
        q = p - np.asarray(self.c)
        if self.tilt:
            ca, sa = np.cos(self.tilt), np.sin(self.tilt)
            q = np.stack([q[:, 0], ca * q[:, 1] + sa * q[:, 2], -sa * q[:, 1] + ca * q[:, 2]], axis=1)
        return q

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Exact signed distance float [N] (of the rounded box)."""
        q = np.abs(self._local(p)) - (np.asarray(self.h) - self.r)
        return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0) - self.r

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds (conservative for a tilted box)."""
        rad = float(np.linalg.norm(self.h))
        c = np.asarray(self.c)
        if not self.tilt:
            return c - np.asarray(self.h), c + np.asarray(self.h)
        return c - rad, c + rad


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid with centre c and radii s."""

    c: tuple[float, float, float]
    s: tuple[float, float, float]

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Signed distance estimate float [N]; its sign is exact (inside iff Σ(q/s)² < 1)."""
        q = (p - np.asarray(self.c))
        s = np.asarray(self.s)
        k0 = np.linalg.norm(q / s, axis=1)
        k1 = np.linalg.norm(q / (s * s), axis=1)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounds."""
        return np.asarray(self.c) - np.asarray(self.s), np.asarray(self.c) + np.asarray(self.s)


Primitive = Capsule | Box | Ellipsoid


@dataclass
class ProceduralShape:
    """A union of labelled primitives, normalised into the unit box.

    prims: [(primitive, part id)]; the shape's own units are mapped to the unit box by
    p_unit = (p - center) * scale. `category` names the label set PART_NAMES[category].
    """

    category: str
    prims: list[tuple[Primitive, int]]
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0

    def normalize(self, cfg: NormalizeConfig = NormalizeConfig()) -> "ProceduralShape":
        """Set center/scale from the primitives' bounds (longest side -> cfg.extent); returns self."""
        lo = np.min([p.bounds()[0] for p, _ in self.prims], axis=0)
        hi = np.max([p.bounds()[1] for p, _ in self.prims], axis=0)
        # the bounds of tilted boxes are conservative: refine on a grid of the true surface
        g = np.stack(np.meshgrid(*[np.linspace(lo[i], hi[i], 40) for i in range(3)], indexing="ij"), -1).reshape(-1, 3)
        inside = g[self._sdf_world(g)[0] < 0]
        if len(inside):
            step = (hi - lo) / 39
            lo, hi = inside.min(0) - step, inside.max(0) + step
        self.center = 0.5 * (lo + hi)
        self.scale = cfg.extent / float((hi - lo).max())
        return self

    def _sdf_world(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.stack([prim.sdf(p) for prim, _ in self.prims], axis=1)
        k = d.argmin(axis=1)
        labels = np.asarray([lab for _, lab in self.prims])[k]
        return d[np.arange(len(p)), k], labels

    def sdf(self, p_unit: np.ndarray) -> np.ndarray:
        """Signed distance estimate float [N] of unit-box points [N, 3] (negative inside; exact sign)."""
        d, _ = self._sdf_world(np.asarray(p_unit, dtype=np.float64) / self.scale + self.center)
        return d * self.scale

    def occupancy(self, p_unit: np.ndarray) -> np.ndarray:
        """Exact occupancy float32 [N] in {0, 1} of unit-box points [N, 3]."""
        return (self.sdf(p_unit) < 0).astype(np.float32)

    def part_labels(self, p_unit: np.ndarray) -> np.ndarray:
        """Part id int64 [N] of each unit-box point: the primitive with the smallest signed distance."""
        _, lab = self._sdf_world(np.asarray(p_unit, dtype=np.float64) / self.scale + self.center)
        return lab.astype(np.int64)

    def mesh(self, res: int = 48) -> tuple[Mesh, np.ndarray]:
        """Marching-cubes surface on a res³ grid over the unit box: (Mesh in unit coords, labels int64 [V])."""
        from skimage.measure import marching_cubes

        lin = np.linspace(-0.5, 0.5, res)
        g = np.stack(np.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
        vol = self.sdf(g).reshape(res, res, res)
        v, f, _, _ = marching_cubes(vol, level=0.0, spacing=(lin[1] - lin[0],) * 3)
        v = v - 0.5
        return Mesh(v.astype(np.float64), f.astype(np.int64)), self.part_labels(v)


# ----------------------------------------------------------------------------------------------
# procedural categories

def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def make_humanoid(rng: np.random.Generator) -> ProceduralShape:
    """A standing humanoid (y up, z forward) of random proportions and arm/leg pose."""
    H, NE, AR, AL, LL, LE = range(6)
    leg_len = _u(rng, 0.6, 1.0)
    torso_h = _u(rng, 0.45, 0.75)
    torso_w = _u(rng, 0.14, 0.26)
    torso_d = _u(rng, 0.09, 0.15)
    head_r = _u(rng, 0.09, 0.15)
    arm_len = _u(rng, 0.5, 0.85)
    limb_r = _u(rng, 0.05, 0.075)
    arm_ang = np.radians(_u(rng, 10, 80))   # from hanging down to nearly horizontal
    elbow = np.radians(_u(rng, 0, 35))
    leg_ang = np.radians(_u(rng, 2, 20))
    hip_y = leg_len
    prims: list[tuple[Primitive, int]] = [
        (Ellipsoid((0, hip_y + torso_h / 2, 0), (torso_w, torso_h / 2 + 0.03, torso_d)), NE),
        (Ellipsoid((0, hip_y + torso_h + head_r * 0.95, 0), (head_r * 0.85, head_r, head_r * 0.9)), H),
    ]
    sh_y = hip_y + torso_h * 0.88
    for side, lab in ((1, AL), (-1, AR)):
        sh = np.array([side * (torso_w * 0.85), sh_y, 0.0])
        d1 = np.array([side * np.sin(arm_ang), -np.cos(arm_ang), 0.0])
        el = sh + d1 * arm_len * 0.5
        a2 = arm_ang - elbow
        d2 = np.array([side * np.sin(a2), -np.cos(a2), 0.0])
        wr = el + d2 * arm_len * 0.5
        prims += [(Capsule(tuple(sh), tuple(el), limb_r), lab), (Capsule(tuple(el), tuple(wr), limb_r * 0.85), lab)]
    for side, lab in ((1, LL), (-1, LE)):
        hip = np.array([side * torso_w * 0.5, hip_y + 0.02, 0.0])
        d = np.array([side * np.sin(leg_ang), -np.cos(leg_ang), 0.0])
        knee = hip + d * leg_len * 0.5
        foot = hip + d * leg_len
        prims += [(Capsule(tuple(hip), tuple(knee), limb_r * 1.3), lab), (Capsule(tuple(knee), tuple(foot), limb_r * 1.1), lab)]
    return ProceduralShape("humanoid", prims).normalize()


def make_animal(rng: np.random.Generator) -> ProceduralShape:
    """A quadruped (y up, x forward) of random proportions: body, neck, head, four legs, tail."""
    HEAD, NECK, BODY, LF, LB, TAIL = range(6)
    body_l = _u(rng, 0.5, 1.1)
    body_r = _u(rng, 0.12, 0.24)
    leg_len = _u(rng, 0.25, 0.7)
    leg_r = _u(rng, 0.05, 0.08)
    neck_len = _u(rng, 0.15, 0.6)
    neck_ang = np.radians(_u(rng, 20, 75))
    head_r = _u(rng, 0.08, 0.15)
    tail_len = _u(rng, 0.1, 0.45)
    tail_ang = np.radians(_u(rng, -40, 30))
    leg_spread = _u(rng, 0.0, 0.15)
    y = leg_len + body_r * 0.6
    prims: list[tuple[Primitive, int]] = [(Ellipsoid((0, y, 0), (body_l / 2, body_r, body_r * 0.85)), BODY)]
    n0 = np.array([body_l * 0.4, y + body_r * 0.3, 0.0])
    n1 = n0 + neck_len * np.array([np.cos(neck_ang), np.sin(neck_ang), 0.0])
    prims.append((Capsule(tuple(n0), tuple(n1), _u(rng, 0.05, 0.08)), NECK))
    prims.append((Ellipsoid(tuple(n1 + np.array([head_r * 0.6, 0, 0])), (head_r * 1.4, head_r, head_r * 0.8)), HEAD))
    t0 = np.array([-body_l * 0.45, y + body_r * 0.2, 0.0])
    t1 = t0 + tail_len * np.array([-np.cos(tail_ang), np.sin(tail_ang), 0.0])
    prims.append((Capsule(tuple(t0), tuple(t1), _u(rng, 0.035, 0.055)), TAIL))
    for fx, lab in ((0.32, LF), (-0.32, LB)):
        for side in (1, -1):
            top = np.array([fx * body_l, y - body_r * 0.3, side * body_r * 0.55])
            foot = np.array([fx * body_l + np.sign(fx) * leg_spread, leg_r, side * body_r * 0.6])
            prims.append((Capsule(tuple(top), tuple(foot), leg_r), lab))
    return ProceduralShape("animal", prims).normalize()


def make_chair(rng: np.random.Generator, arms: bool | None = None) -> ProceduralShape:
    """A chair (y up, z forward): seat, back, four legs, optional arms (arm-chair)."""
    SEAT, BACK, LEGS, ARMS = range(4)
    if arms is None:
        arms = bool(rng.random() < 0.5)
    w = _u(rng, 0.4, 0.65)
    d = _u(rng, 0.4, 0.6)
    seat_y = _u(rng, 0.35, 0.55)
    seat_t = _u(rng, 0.06, 0.1)
    back_h = _u(rng, 0.3, 0.7)
    back_t = _u(rng, 0.05, 0.09)
    tilt = np.radians(_u(rng, 0, 15))
    leg_r = _u(rng, 0.03, 0.05)
    rr = 0.01
    prims: list[tuple[Primitive, int]] = [
        (Box((0, seat_y, 0), (w / 2, seat_t / 2, d / 2), rr), SEAT),
        (Box((0, seat_y + back_h / 2, -d / 2 + back_t / 2 + np.sin(tilt) * back_h / 2), (w / 2, back_h / 2, back_t / 2), rr, -tilt), BACK),
    ]
    for sx in (1, -1):
        for sz in (1, -1):
            x, z = sx * (w / 2 - leg_r * 1.5), sz * (d / 2 - leg_r * 1.5)
            prims.append((Box((x, seat_y / 2, z), (leg_r, seat_y / 2, leg_r), rr), LEGS))
    if arms:
        arm_h = _u(rng, 0.15, 0.28)
        arm_t = _u(rng, 0.045, 0.07)
        for sx in (1, -1):
            x = sx * (w / 2 - arm_t / 2)
            prims.append((Box((x, seat_y + arm_h, 0), (arm_t / 2, arm_t / 2, d / 2), rr), ARMS))
            prims.append((Box((x, seat_y + arm_h / 2, d / 2 - arm_t), (arm_t / 2, arm_h / 2, arm_t / 2), rr), ARMS))
    return ProceduralShape("chair", prims).normalize()


def make_shape(category: str, rng: np.random.Generator, **kw: object) -> ProceduralShape:
    """A random shape of `category` ('humanoid' | 'animal' | 'chair')."""
    if category == "humanoid":
        return make_humanoid(rng)
    if category == "animal":
        return make_animal(rng)
    if category == "chair":
        return make_chair(rng, **kw)  # type: ignore[arg-type]
    raise ValueError(f"unknown category {category!r}")


def procedural_collection(n: int, seed: int) -> list[ProceduralShape]:
    """`n` procedural shapes, cycling humanoid, animal, chair (chairs alternate with/without arms)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        cat = CATEGORIES[i % 3]
        kw = {"arms": (i // 3) % 2 == 0} if cat == "chair" else {}
        out.append(make_shape(cat, rng, **kw))
    return out


# ----------------------------------------------------------------------------------------------
# normalisation

@dataclass(frozen=True)
class Normalization:
    """p_unit = (p - center) * scale; `undo` maps back."""

    center: np.ndarray
    scale: float

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Original units -> unit box (float64 [N, 3])."""
        return (np.asarray(p, dtype=np.float64) - self.center) * self.scale

    def undo(self, p: np.ndarray) -> np.ndarray:
        """Unit box -> original units (float64 [N, 3])."""
        return np.asarray(p, dtype=np.float64) / self.scale + self.center


def normalization_for(points: np.ndarray, cfg: NormalizeConfig = NormalizeConfig(), name: str = "input") -> Normalization:
    """The transform putting `points` float [N, 3] into the unit box (bbox centre 0, longest side cfg.extent)."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 0:
        raise InputError(f"{name}: no points")
    lo, hi = p.min(0), p.max(0)
    ext = float((hi - lo).max())
    if not np.isfinite(ext) or ext <= 0:
        raise InputError(f"{name}: the shape has zero extent (all points coincide)")
    return Normalization(0.5 * (lo + hi), cfg.extent / ext)


# ----------------------------------------------------------------------------------------------
# occupancy of meshes and clouds

@numba.njit(cache=True, parallel=True, fastmath=False)
def _winding_numbers_numba(q: np.ndarray, tri: np.ndarray) -> np.ndarray:  # pragma: no cover - numba
    out = np.zeros(len(q))
    for i in numba.prange(len(q)):
        s = 0.0
        for f in range(len(tri)):
            ax = tri[f, 0, 0] - q[i, 0]; ay = tri[f, 0, 1] - q[i, 1]; az = tri[f, 0, 2] - q[i, 2]
            bx = tri[f, 1, 0] - q[i, 0]; by = tri[f, 1, 1] - q[i, 1]; bz = tri[f, 1, 2] - q[i, 2]
            cx = tri[f, 2, 0] - q[i, 0]; cy = tri[f, 2, 1] - q[i, 1]; cz = tri[f, 2, 2] - q[i, 2]
            la = np.sqrt(ax * ax + ay * ay + az * az)
            lb = np.sqrt(bx * bx + by * by + bz * bz)
            lc = np.sqrt(cx * cx + cy * cy + cz * cz)
            det = ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx)
            den = la * lb * lc + (ax * bx + ay * by + az * bz) * lc + (bx * cx + by * cy + bz * cz) * la \
                + (cx * ax + cy * ay + cz * az) * lb
            s += 2.0 * np.arctan2(det, den)
        out[i] = s / (4.0 * np.pi)
    return out


def winding_numbers(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Generalised winding numbers float64 [N] of points [N, 3] w.r.t. a triangle mesh (numba, parallel).

    ≈1 inside and ≈0 outside a closed, outward-oriented mesh (Jacobson et al. 2013, solid angles by
    Van Oosterom-Strackee).
    """
    tri = np.ascontiguousarray(np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)])
    return _winding_numbers_numba(np.ascontiguousarray(np.asarray(points, dtype=np.float64)), tri)


def winding_numbers_reference(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Slow numpy reference of `winding_numbers` (same formula, vectorised over faces, loop over points)."""
    tri = np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64)]
    out = np.zeros(len(points))
    for i, q in enumerate(np.asarray(points, dtype=np.float64)):
        a, b, c = tri[:, 0] - q, tri[:, 1] - q, tri[:, 2] - q
        la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
        det = np.einsum("ij,ij->i", a, np.cross(b, c))
        den = la * lb * lc + (a * b).sum(1) * lc + (b * c).sum(1) * la + (c * a).sum(1) * lb
        out[i] = (2 * np.arctan2(det, den)).sum() / (4 * np.pi)
    return out


def inside_watertight(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Inside test bool [N] of points [N, 3] for a closed mesh: Open3D ray parity with a BVH (3 rays,
    majority vote). Milliseconds where `winding_numbers` (its reference; they agree on closed meshes)
    takes seconds for a 10k-face mesh."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)))
    occ = scene.compute_occupancy(o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32)), nsamples=3)
    return occ.numpy() > 0.5


def is_watertight(mesh: Mesh) -> bool:
    """True when every edge of the mesh is shared by exactly two faces (consistently oriented)."""
    if mesh.is_cloud:
        return False
    f = mesh.faces
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # directed edges must each appear once and their reverses once
    key = e[:, 0] * (len(mesh.vertices) + 1) + e[:, 1]
    rkey = e[:, 1] * (len(mesh.vertices) + 1) + e[:, 0]
    uk, cnt = np.unique(key, return_counts=True)
    if (cnt != 1).any():
        return False
    return bool(np.isin(rkey, uk).all())


def voxel_occupancy(surface: np.ndarray, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxelise surface points [N, 3] (unit box) on a res³ grid and flood-fill the outside.

    Returns (label int8 [res, res, res]: 0 outside, 1 inside, 2 surface shell (unknown); grid
    origin -0.5, spacing 1/res). The shell is the voxels holding a point, dilated once.
    """
    from scipy import ndimage

    idx = np.clip(((np.asarray(surface) + 0.5) * res).astype(np.int64), 0, res - 1)
    shell = np.zeros((res, res, res), dtype=bool)
    shell[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    shell = ndimage.binary_dilation(shell, iterations=1)
    filled = ndimage.binary_fill_holes(shell)
    lab = np.zeros((res, res, res), dtype=np.int8)
    lab[filled] = 1
    lab[shell] = 2
    return lab, idx


def occupancy_samples(mesh: Mesh, cfg: SampleConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy samples for a mesh or cloud already in the unit box.

    Watertight meshes: near-surface + uniform points labelled inside/outside by `inside_watertight`.
    Other meshes and clouds: labels from `voxel_occupancy`; points in the unknown shell are dropped and
    the surface samples themselves are added with occupancy 0.5.
    Returns (points float32 [M, 3], occupancy float32 [M]).
    """
    n_s = cfg.n_surface
    surf, _ = sample_surface(mesh, n_s, rng)
    half = n_s // 2
    near = surf + np.concatenate([rng.normal(scale=cfg.sigmas[0], size=(half, 3)),
                                  rng.normal(scale=cfg.sigmas[1], size=(n_s - half, 3))])
    uni = rng.uniform(-0.5, 0.5, size=(cfg.n_uniform, 3))
    q = np.concatenate([near, uni])
    if is_watertight(mesh):
        return q.astype(np.float32), inside_watertight(q, mesh.vertices, mesh.faces).astype(np.float32)
    # the shell must be closed at the voxel size: use every cloud point, or dense mesh samples
    if mesh.is_cloud:
        dense = np.asarray(mesh.vertices, dtype=np.float64)
    else:
        dense = np.concatenate([surf, sample_surface(mesh, 8 * cfg.voxel_res ** 2, rng)[0]])
    lab, _ = voxel_occupancy(dense, cfg.voxel_res)
    qi = np.clip(((q + 0.5) * cfg.voxel_res).astype(np.int64), 0, cfg.voxel_res - 1)
    ql = lab[qi[:, 0], qi[:, 1], qi[:, 2]]
    keep = ql != 2
    pts = np.concatenate([q[keep], surf])
    occ = np.concatenate([ql[keep].astype(np.float32), np.full(len(surf), 0.5, np.float32)])
    return pts.astype(np.float32), occ


def procedural_samples(shape: ProceduralShape, cfg: SampleConfig, rng: np.random.Generator, mc_res: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Exact occupancy samples of a procedural shape: (points float32 [M, 3], occupancy float32 [M])."""
    mesh, _ = shape.mesh(mc_res)
    n_s = cfg.n_surface
    surf, _ = sample_surface(mesh, n_s, rng)
    half = n_s // 2
    near = surf + np.concatenate([rng.normal(scale=cfg.sigmas[0], size=(half, 3)),
                                  rng.normal(scale=cfg.sigmas[1], size=(n_s - half, 3))])
    q = np.concatenate([near, rng.uniform(-0.5, 0.5, size=(cfg.n_uniform, 3))])
    return q.astype(np.float32), shape.occupancy(q)


def mesh_folder_collection(folder: str | Path, cfg: SampleConfig, seed: int, norm: NormalizeConfig = NormalizeConfig()) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Occupancy samples of every mesh in `folder` (normalised into the unit box each).

    Returns (names, points float32 [S, M, 3], occupancy float32 [S, M]); InputError when the folder
    holds no mesh. Samples are resampled to a common M per shape.
    """
    d = Path(folder)
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in MESH_EXTS) if d.is_dir() else []
    if not files:
        raise InputError(f"{d}: no mesh files ({sorted(MESH_EXTS)}) found")
    rng = np.random.default_rng(seed)
    pts, occs = [], []
    m_target = cfg.n_uniform + cfg.n_surface
    for f in files:
        m = load_mesh(f)
        nz = normalization_for(m.vertices, norm, str(f))
        mu = Mesh(nz.apply(m.vertices), m.faces)
        p, o = occupancy_samples(mu, cfg, rng)
        sel = rng.choice(len(p), size=m_target, replace=len(p) < m_target)
        pts.append(p[sel])
        occs.append(o[sel])
    return [f.name for f in files], np.stack(pts), np.stack(occs)
