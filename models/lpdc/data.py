"""Data for LPDC: procedural 4D sequences with exact occupancy and correspondences, real mesh-sequence
loaders (constant-connectivity OBJ/PLY/OFF folders, the D-FAUST registrations layout), and the
training-example sampler.

Conventions
-----------
* World units are whatever the source uses (metres for the procedural shapes, y is up).
* `Normalisation` maps a whole window of frames into *unit scale*: p_unit = (p_world - center) / scale,
  with `scale` the largest side of the window's bounding box, so the window fits [-0.5, 0.5]^3.
* A training example (`draw`) is a dict of float32 numpy arrays, all in unit scale:
  inputs [T, N, 3] noisy surface points, times [T] (t_0 = 0, t_T-1 = 1), occ_p0 [Q0, 3] + occ_0 [Q0]
  (occupancy 0/1 at t0), occ_pt [T-1, Q, 3] + occ_t [T-1, Q] (frames 1..T-1), corr [T, P, 3]
  (surface points at t0 and their exact positions at every frame).

Procedural shapes are unions of parts (capsules, ellipsoids, bent tubes). Each part has an analytic
signed function in its own rest frame and a per-frame bijective map to the world (a rigid transform,
preceded for tubes by Barr's bend with a closed-form inverse). So occupancy at any frame is exact
(`inside(q, k) = any_i f_i(map_i,k^-1(q)) < 0`) and a material point of part i moves exactly as
`map_i,k(x_rest)`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.errors import InputError
from models.common.io import CLOUD_EXTS, MESH_EXTS, Mesh, load_mesh, load_points
from models.lpdc.config import DataConfig, RealSource

# --------------------------------------------------------------------------------------------------
# normalisation


@dataclass(frozen=True)
class Normalisation:
    """p_unit = (p_world - center) / scale; center float64 [3], scale float (world units per unit)."""

    center: np.ndarray
    scale: float

    @staticmethod
    def from_points(points: np.ndarray, name: str = "") -> "Normalisation":
        """The normalisation of a set of points [..., 3] (all frames of a window together); `name` (the
        input's folder or file) prefixes the InputError raised for empty or zero-extent input."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        where = f"{name}: " if name else ""
        if len(p) == 0:
            raise InputError(f"{where}the sequence holds no points")
        lo, hi = p.min(axis=0), p.max(axis=0)
        scale = float((hi - lo).max())
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(f"{where}the sequence has zero extent (all points coincide)")
        return Normalisation((lo + hi) / 2.0, scale)

    def to_unit(self, p: np.ndarray) -> np.ndarray:
        """World [..., 3] -> unit scale [..., 3]."""
        return (np.asarray(p, dtype=np.float64) - self.center) / self.scale

    def to_world(self, p: np.ndarray) -> np.ndarray:
        """Unit scale [..., 3] -> world [..., 3]."""
        return np.asarray(p, dtype=np.float64) * self.scale + self.center


# --------------------------------------------------------------------------------------------------
# small geometry helpers


def rot_x(a: float) -> np.ndarray:
    """Rotation matrix [3, 3] about x by angle a (radians)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rot_y(a: float) -> np.ndarray:
    """Rotation matrix [3, 3] about y by angle a (radians)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_z(a: float) -> np.ndarray:
    """Rotation matrix [3, 3] about z by angle a (radians)."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def rotation_to(d: np.ndarray) -> np.ndarray:
    """A rotation [3, 3] taking the x axis to the unit direction d [3]."""
    d = np.asarray(d, dtype=np.float64)
    d = d / np.linalg.norm(d)
    helper = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    y = helper - d * (helper @ d)
    y /= np.linalg.norm(y)
    z = np.cross(d, y)
    return np.stack([d, y, z], axis=1)


def random_unit(n: int, rng: np.random.Generator) -> np.ndarray:
    """n uniformly distributed unit vectors [n, 3]."""
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-12)


def bend(x: np.ndarray, kappa) -> np.ndarray:
    """Barr's bend of the x axis into an arc of curvature kappa in the xy plane (signed).

    x [..., 3]; kappa a scalar or an array broadcastable to x[..., 0].
    (x, y, z) -> ((R - y) sin(x/R), R - (R - y) cos(x/R), z), R = 1/kappa (kappa < 0: mirrored in y);
    identity for |kappa| < 1e-6. The origin and the tangent there are fixed.
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.broadcast_to(np.asarray(kappa, dtype=np.float64), x.shape[:-1])
    sgn = np.where(k < 0, -1.0, 1.0)
    small = np.abs(k) < 1e-6
    R = 1.0 / np.where(small, 1.0, np.abs(k))
    y1 = x[..., 1] * sgn
    th = x[..., 0] / R
    r = R - y1
    bx = np.where(small, x[..., 0], r * np.sin(th))
    by = np.where(small, y1, R - r * np.cos(th))
    return np.stack([bx, by * sgn, x[..., 2]], axis=-1)


def unbend(y: np.ndarray, kappa) -> np.ndarray:
    """Inverse of `bend`: y [..., 3] -> rest side [..., 3] (exact for |x| |kappa| < pi, |y| |kappa| < 1)."""
    y = np.asarray(y, dtype=np.float64)
    k = np.broadcast_to(np.asarray(kappa, dtype=np.float64), y.shape[:-1])
    sgn = np.where(k < 0, -1.0, 1.0)
    small = np.abs(k) < 1e-6
    R = 1.0 / np.where(small, 1.0, np.abs(k))
    dx = y[..., 0]
    dy = R - y[..., 1] * sgn
    th = np.arctan2(dx, dy)
    rho = np.sqrt(dx * dx + dy * dy)
    ux = np.where(small, y[..., 0], th * R)
    uy = np.where(small, y[..., 1] * sgn, R - rho)
    return np.stack([ux, uy * sgn, y[..., 2]], axis=-1)


# --------------------------------------------------------------------------------------------------
# parts


@dataclass
class Part:
    """One solid of a procedural shape.

    kind: "capsule" (segment from (0,0,0) to (0,-length,0), radius r), "ellipsoid" (center c, radii
    [3], axis-aligned in the part frame) or "tube" (capsule from (0,0,0) to (length,0,0), radius r,
    bent with curvature kappa[k] at frame k). R [T, 3, 3], tr [T, 3]: world = R_k @ local + tr_k.
    """

    kind: str
    R: np.ndarray
    tr: np.ndarray
    length: float = 0.0
    radius: float = 0.0
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radii: np.ndarray = field(default_factory=lambda: np.ones(3))
    kappa: np.ndarray | None = None

    def area(self) -> float:
        """Approximate surface area in the rest frame (world units^2)."""
        if self.kind in ("capsule", "tube"):
            return 2 * math.pi * self.radius * self.length + 4 * math.pi * self.radius**2
        a, b, c = self.radii
        p = 1.6075
        return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)

    def f_local(self, x: np.ndarray) -> np.ndarray:
        """Signed function in the part frame, x [..., 3] -> [...] (< 0 inside; exact sign)."""
        if self.kind == "capsule":
            y = np.clip(-x[..., 1], 0.0, self.length)
            return np.sqrt(x[..., 0] ** 2 + (x[..., 1] + y) ** 2 + x[..., 2] ** 2) - self.radius
        if self.kind == "tube":
            s = np.clip(x[..., 0], 0.0, self.length)
            return np.sqrt((x[..., 0] - s) ** 2 + x[..., 1] ** 2 + x[..., 2] ** 2) - self.radius
        q = (x - self.center) / self.radii
        return (np.sqrt((q * q).sum(-1)) - 1.0) * float(self.radii.min())

    def sample_local(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points [n, 3] on the rest surface, uniform by area (ellipsoids by rejection)."""
        if self.kind in ("capsule", "tube"):
            r, L = self.radius, self.length
            a_cyl, a_sph = 2 * math.pi * r * L, 4 * math.pi * r * r
            on_cyl = rng.random(n) < a_cyl / (a_cyl + a_sph)
            u = random_unit(n, rng)
            ang = rng.uniform(0, 2 * math.pi, n)
            s = rng.uniform(0, L, n)
            # in axis-aligned coordinates (axis = first coordinate)
            cyl = np.stack([s, r * np.cos(ang), r * np.sin(ang)], axis=1)
            sph = r * u + np.where(u[:, :1] > 0, L, 0.0) * np.array([1.0, 0.0, 0.0])
            pts = np.where(on_cyl[:, None], cyl, sph)
            if self.kind == "capsule":  # axis along -y
                pts = np.stack([pts[:, 1], -pts[:, 0], pts[:, 2]], axis=1)
            return pts
        a, b, c = self.radii
        out = []
        need = n
        wmax = max(b * c, a * c, a * b)
        while need > 0:
            u = random_unit(2 * need + 8, rng)
            w = np.sqrt((b * c * u[:, 0]) ** 2 + (a * c * u[:, 1]) ** 2 + (a * b * u[:, 2]) ** 2) / wmax
            keep = u[rng.random(len(u)) < w][:need]
            out.append(keep * self.radii + self.center)
            need -= len(keep)
        return np.concatenate(out, axis=0)

    def to_world(self, x: np.ndarray, k: int) -> np.ndarray:
        """Rest-frame points x [n, 3] -> world at frame k [n, 3]."""
        y = bend(x, float(self.kappa[k])) if self.kind == "tube" else x
        return y @ self.R[k].T + self.tr[k]

    def to_local(self, q: np.ndarray, k: int) -> np.ndarray:
        """World points q [n, 3] at frame k -> rest frame [n, 3]."""
        y = (q - self.tr[k]) @ self.R[k]
        return unbend(y, float(self.kappa[k])) if self.kind == "tube" else y

    def stretch(self, x: np.ndarray, k: int) -> np.ndarray:
        """Area stretch factor of the rest->world map at rest points x [n, 3] (1 for rigid parts)."""
        if self.kind != "tube":
            return np.ones(len(x))
        return 1.0 - float(self.kappa[k]) * x[:, 1]

    def to_world_at(self, x: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """Rest points x [K, m, 3] -> world [K, m, 3], row j at frame ks[j]."""
        y = bend(x, self.kappa[ks][:, None]) if self.kind == "tube" else x
        return np.matmul(y, self.R[ks].transpose(0, 2, 1)) + self.tr[ks][:, None, :]

    def to_local_at(self, q: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """World points q [K, m, 3], row j at frame ks[j] -> rest frame [K, m, 3]."""
        y = np.matmul(q - self.tr[ks][:, None, :], self.R[ks])
        return unbend(y, self.kappa[ks][:, None]) if self.kind == "tube" else y

    def stretch_at(self, x: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """`stretch` for rest points x [K, m, 3] at frames ks [K] -> [K, m]."""
        if self.kind != "tube":
            return np.ones(x.shape[:-1])
        return 1.0 - self.kappa[ks][:, None] * x[..., 1]


class ProceduralShape:
    """A union of `Part`s over T frames with exact occupancy, surface samples and correspondences."""

    def __init__(self, parts: list[Part], n_frames: int) -> None:
        self.parts = parts
        self.n_frames = n_frames
        areas = np.array([p.area() for p in parts])
        self.area_frac = areas / areas.sum()

    def inside(self, q: np.ndarray, k: int) -> np.ndarray:
        """World points q [n, 3] at frame k -> bool [n], exact occupancy of the union."""
        occ = np.zeros(len(q), dtype=bool)
        for p in self.parts:
            occ |= p.f_local(p.to_local(q, k)) < 0
        return occ

    def _surface_rest(self, n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n rest-frame points on the union surface at frame k: (part index [n], rest coords [n, 3]).

        Candidates are drawn on every part by area, kept where no other part contains them.
        """
        ids_all, xs_all = [], []
        have = 0
        tol = 1e-5
        while have < n:
            m = max(3 * (n - have), 64)
            counts = rng.multinomial(m, self.area_frac)
            ids, xs, ws = [], [], []
            for i, (part, c) in enumerate(zip(self.parts, counts)):
                if c == 0:
                    continue
                x = part.sample_local(int(c), rng)
                st = part.stretch(x, k)
                x = x[rng.random(len(x)) * st.max() < st]
                ids.append(np.full(len(x), i))
                xs.append(x)
                ws.append(part.to_world(x, k))
            ids_c, xs_c, w = np.concatenate(ids), np.concatenate(xs), np.concatenate(ws)
            f = np.stack([p.f_local(p.to_local(w, k)) for p in self.parts], axis=1)
            f[np.arange(len(w)), ids_c] = np.inf
            ok = f.min(axis=1) > -tol
            ids_all.append(ids_c[ok])
            xs_all.append(xs_c[ok])
            have += int(ok.sum())
        ids_a, xs_a = np.concatenate(ids_all), np.concatenate(xs_all)
        sel = rng.permutation(len(ids_a))[:n]
        return ids_a[sel], xs_a[sel]

    def inside_at(self, q: np.ndarray, ks: np.ndarray) -> np.ndarray:
        """World points q [K, m, 3], row j at frame ks[j] -> bool [K, m] (vectorised `inside`)."""
        ks = np.asarray(ks)
        occ = np.zeros(q.shape[:-1], dtype=bool)
        for p in self.parts:
            occ |= p.f_local(p.to_local_at(q, ks)) < 0
        return occ

    def surface_frames(self, n: int, rng: np.random.Generator, ks: np.ndarray | None = None) -> np.ndarray:
        """n world points on the union surface at each frame of ks (default all): [K, n, 3].

        Vectorised over frames; equivalent to calling `surface(n, k)` per frame (its per-frame loop is
        the reference), to which it falls back for a frame that runs short of accepted candidates.
        """
        ks = np.arange(self.n_frames) if ks is None else np.asarray(ks)
        K = len(ks)
        tol = 1e-5
        m = 3 * n + 64
        counts = rng.multinomial(m, self.area_frac)
        ids, ws, acc = [], [], []
        for i, (part, c) in enumerate(zip(self.parts, counts)):
            if c == 0:
                continue
            x = part.sample_local(K * int(c), rng).reshape(K, int(c), 3)
            st = part.stretch_at(x, ks)
            acc.append(rng.random(st.shape) * st.max() < st)
            ws.append(part.to_world_at(x, ks))
            ids.append(np.full(int(c), i))
        ids_c, w, ok = np.concatenate(ids), np.concatenate(ws, axis=1), np.concatenate(acc, axis=1)
        for j, part in enumerate(self.parts):
            f = part.f_local(part.to_local_at(w, ks))
            f[:, ids_c == j] = np.inf
            ok &= f > -tol
        out = np.empty((K, n, 3))
        for r in range(K):
            good = np.flatnonzero(ok[r])
            if len(good) >= n:
                out[r] = w[r, rng.choice(good, size=n, replace=False)]
            else:
                out[r] = self.surface(n, int(ks[r]), rng)
        return out

    def tracks_fast(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Vectorised `tracks`: n points on the t0 surface and their positions at every frame [T, n, 3]."""
        ids, xs = self._surface_rest(n, 0, rng)
        out = np.empty((self.n_frames, n, 3))
        ks = np.arange(self.n_frames)
        for i, part in enumerate(self.parts):
            msk = ids == i
            if msk.any():
                out[:, msk] = part.to_world_at(np.broadcast_to(xs[msk], (self.n_frames, int(msk.sum()), 3)), ks)
        return out

    def _rest_to_world(self, ids: np.ndarray, xs: np.ndarray, k: int) -> np.ndarray:
        out = np.empty_like(xs)
        for i, part in enumerate(self.parts):
            m = ids == i
            if m.any():
                out[m] = part.to_world(xs[m], k)
        return out

    def surface(self, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
        """n world points [n, 3] on the union surface at frame k."""
        ids, xs = self._surface_rest(n, k, rng)
        return self._rest_to_world(ids, xs, k)

    def tracks(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points on the t0 surface and their exact world positions at every frame: [T, n, 3]."""
        ids, xs = self._surface_rest(n, 0, rng)
        return np.stack([self._rest_to_world(ids, xs, k) for k in range(self.n_frames)], axis=0)

    def sdf(self, q: np.ndarray, k: int) -> np.ndarray:
        """Signed function [n] of the union at world points q [n, 3], frame k (< 0 inside; exact sign)."""
        return np.min(np.stack([p.f_local(p.to_local(q, k)) for p in self.parts], axis=1), axis=1)

    def part_of(self, q: np.ndarray, k: int) -> np.ndarray:
        """Index [n] of the part whose signed function is smallest at world points q [n, 3], frame k."""
        f = np.stack([p.f_local(p.to_local(q, k)) for p in self.parts], axis=1)
        return f.argmin(axis=1)

    def move_points(self, q0: np.ndarray) -> np.ndarray:
        """Carry world points q0 [n, 3] at t0 (near the surface) to every frame with their nearest
        part's motion: [T, n, 3]. Exact for points of a single part; used to animate t0 meshes."""
        ids = self.part_of(q0, 0)
        xs = np.empty_like(q0)
        for i, part in enumerate(self.parts):
            m = ids == i
            if m.any():
                xs[m] = part.to_local(q0[m], 0)
        return np.stack([self._rest_to_world(ids, xs, k) for k in range(self.n_frames)], axis=0)


def _osc(rng: np.random.Generator, times: np.ndarray, base: float, amp: float, lo: float, hi: float,
         freq: tuple[float, float] = (0.3, 1.6)) -> np.ndarray:
    """A random sinusoid base + amp * sin(2 pi f t + phase), clipped to [lo, hi]; [T]."""
    f = rng.uniform(*freq)
    ph = rng.uniform(0, 2 * math.pi)
    a = amp * rng.uniform(0.2, 1.0)
    return np.clip(base + a * np.sin(2 * math.pi * f * times + ph), lo, hi)


def _root_motion(rng: np.random.Generator, times: np.ndarray, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Random global motion: rotations [T, 3, 3] (yaw + slight sway) and translations [T, 3]."""
    T = len(times)
    yaw0 = rng.uniform(0, 2 * math.pi)
    yaw_rate = rng.normal(0, 1.0)
    sway = rng.uniform(0, 0.15)
    ph = rng.uniform(0, 2 * math.pi, 2)
    f = rng.uniform(0.5, 2.0)
    v = rng.normal(0, 0.25 * height, 3) * np.array([1.0, 0.1, 1.0])
    bob = rng.uniform(0, 0.08 * height)
    R = np.empty((T, 3, 3))
    tr = np.empty((T, 3))
    for k, t in enumerate(times):
        R[k] = rot_y(yaw0 + yaw_rate * t) @ rot_z(sway * math.sin(2 * math.pi * f * t + ph[0]))
        tr[k] = v * t + np.array([0.0, bob * abs(math.sin(2 * math.pi * f * t + ph[1])), 0.0])
    return R, tr


class _Skeleton:
    """Forward kinematics of a joint tree: joint rotations per frame -> world R [T, 3, 3], t [T, 3]."""

    def __init__(self, n_frames: int) -> None:
        self.T = n_frames
        self.R: list[np.ndarray] = []
        self.t: list[np.ndarray] = []

    def add(self, parent: int | None, offset, local_rot: np.ndarray, root=None) -> int:
        """Add a joint at `offset` [3] in the parent frame with local rotations [T, 3, 3]; returns its id."""
        if parent is None:
            R, t = root
        else:
            Rp, tp = self.R[parent], self.t[parent]
            R = Rp @ local_rot
            t = tp + np.einsum("kij,j->ki", Rp, np.asarray(offset, dtype=np.float64))
        self.R.append(R)
        self.t.append(t)
        return len(self.R) - 1

    def place(self, j: int, offset=(0.0, 0.0, 0.0), rot: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """World transform of a part fixed in joint j's frame at `offset`, with extra rotation `rot`."""
        R = self.R[j] if rot is None else self.R[j] @ rot
        t = self.t[j] + np.einsum("kij,j->ki", self.R[j], np.asarray(offset, dtype=np.float64))
        return R, t


def _euler(times: np.ndarray, rx=None, ry=None, rz=None) -> np.ndarray:
    """Per-frame rotations Rz @ Ry @ Rx from angle arrays [T] (None = 0) -> [T, 3, 3]."""
    T = len(times)
    z = np.zeros(T)
    rx, ry, rz = (z if a is None else a for a in (rx, ry, rz))
    return np.stack([rot_z(c) @ rot_y(b) @ rot_x(a) for a, b, c in zip(rx, ry, rz)], axis=0)


def make_humanoid(times: np.ndarray, rng: np.random.Generator) -> ProceduralShape:
    """A blobby humanoid (ellipsoid torso and head, capsule limbs) dancing / walking with swinging limbs."""
    T = len(times)
    s = rng.uniform(0.85, 1.15)  # overall size
    lw = rng.uniform(0.8, 1.35)  # limb girth
    sk = _Skeleton(T)
    root = sk.add(None, None, None, root=_root_motion(rng, times, 1.7 * s))
    zero = np.zeros(T)
    spine = sk.add(root, (0, 0.08 * s, 0), _euler(times, _osc(rng, times, 0, 0.35, -0.6, 0.5),
                                                   _osc(rng, times, 0, 0.4, -0.6, 0.6), _osc(rng, times, 0, 0.2, -0.3, 0.3)))
    chest = sk.add(spine, (0, 0.25 * s, 0), _euler(times, _osc(rng, times, 0, 0.15, -0.3, 0.3)))
    head = sk.add(chest, (0, 0.24 * s, 0), _euler(times, _osc(rng, times, 0, 0.3, -0.5, 0.5), _osc(rng, times, 0, 0.5, -0.8, 0.8)))
    parts: list[Part] = []

    def ell(j, off, radii, rot=None):
        R, t = sk.place(j, off, rot)
        parts.append(Part("ellipsoid", R, t, radii=np.asarray(radii, dtype=np.float64) * s))

    def cap(j, length, r, off=(0, 0, 0), rot=None):
        R, t = sk.place(j, off, rot)
        parts.append(Part("capsule", R, t, length=length * s, radius=r * s * lw))

    torso_w = rng.uniform(0.85, 1.2)
    ell(root, (0, 0.0, 0), (0.16 * torso_w, 0.12, 0.11))
    ell(spine, (0, 0.13 * s, 0), (0.14 * torso_w, 0.16, 0.1))
    ell(chest, (0, 0.08 * s, 0), (0.19 * torso_w, 0.17, 0.12))
    cap(chest, 0.1, 0.05, off=(0, 0.27 * s, 0), rot=rot_x(math.pi))  # neck, pointing up
    ell(head, (0, 0.14 * s, 0.01 * s), (0.09, 0.115, 0.1))
    sym = rng.random() < 0.5  # symmetric (walk-like, anti-phase) or independent limb motion
    walk_ph = rng.uniform(0, 2 * math.pi)
    wf = rng.uniform(0.5, 1.5)
    for side in (1.0, -1.0):
        # arm: shoulder swing (x), abduction (z), twist (y); elbow flex
        if sym:
            swing = 0.6 * np.sin(2 * math.pi * wf * times + walk_ph + (0 if side > 0 else math.pi)) * rng.uniform(0.3, 1.2)
            abd = np.full(T, rng.uniform(0.05, 0.5))
        else:
            swing = _osc(rng, times, rng.uniform(-0.8, 0.2), 1.4, -2.6, 0.8)
            abd = _osc(rng, times, rng.uniform(0.1, 1.4), 1.2, 0.0, 2.7)
        sh = sk.add(chest, (side * 0.2 * s * torso_w, 0.17 * s, 0), _euler(times, swing, None, side * abd))
        cap(sh, 0.28, 0.045)
        el = sk.add(sh, (0, -0.28 * s, 0), _euler(times, _osc(rng, times, -0.6, 1.0, -2.3, 0.0)))
        cap(el, 0.27, 0.037)
        # leg: hip swing (x) and abduction (z); knee flex; foot
        if sym:
            hswing = -0.5 * np.sin(2 * math.pi * wf * times + walk_ph + (math.pi if side > 0 else 0)) * rng.uniform(0.3, 1.0)
            habd = np.full(T, rng.uniform(0.0, 0.2))
        else:
            hswing = _osc(rng, times, rng.uniform(-0.5, 0.1), 0.9, -1.6, 0.5)
            habd = _osc(rng, times, 0.1, 0.5, -0.1, 0.8)
        hip = sk.add(root, (side * 0.09 * s * torso_w, -0.06 * s, 0), _euler(times, hswing, None, side * habd))
        cap(hip, 0.42, 0.068)
        kn = sk.add(hip, (0, -0.42 * s, 0), _euler(times, _osc(rng, times, 0.4, 0.9, 0.0, 1.9)))
        cap(kn, 0.4, 0.05)
        ft = sk.add(kn, (0, -0.4 * s, 0), _euler(times, zero))
        ell(ft, (0, -0.03 * s, 0.05 * s), (0.045, 0.035, 0.11))
    return ProceduralShape(parts, T)


def make_quadruped(times: np.ndarray, rng: np.random.Generator) -> ProceduralShape:
    """A blobby four-legged animal (ellipsoid body, capsule legs, neck, head, tail) galloping / walking."""
    T = len(times)
    s = rng.uniform(0.8, 1.2)
    lw = rng.uniform(0.8, 1.3)
    body_len = rng.uniform(0.45, 0.65)
    sk = _Skeleton(T)
    Rr, tr = _root_motion(rng, times, 1.5 * s)
    f = rng.uniform(0.5, 2.0)
    ph0 = rng.uniform(0, 2 * math.pi)
    pitch = rng.uniform(0, 0.2) * np.sin(2 * math.pi * f * times + ph0)
    Rr = np.einsum("kij,kjl->kil", Rr, _euler(times, pitch))
    root = sk.add(None, None, None, root=(Rr, tr))
    parts: list[Part] = []

    def ell(j, off, radii, rot=None):
        R, t = sk.place(j, off, rot)
        parts.append(Part("ellipsoid", R, t, radii=np.asarray(radii, dtype=np.float64) * s))

    def cap(j, length, r, off=(0, 0, 0), rot=None):
        R, t = sk.place(j, off, rot)
        parts.append(Part("capsule", R, t, length=length * s, radius=r * s * lw))

    ell(root, (0, 0, 0), (0.17, 0.19, body_len))
    neck = sk.add(root, (0, 0.08 * s, 0.85 * body_len * s), _euler(times, -0.9 + _osc(rng, times, 0, 0.35, -0.5, 0.5)))
    cap(neck, 0.4, 0.075, rot=rot_x(math.pi))  # from the shoulders up and forward
    headj = sk.add(neck, (0, 0.4 * s, 0), _euler(times, 0.9 + _osc(rng, times, 0, 0.3, -0.5, 0.5)))
    ell(headj, (0, 0.02 * s, 0.12 * s), (0.07, 0.08, 0.17))
    tail = sk.add(root, (0, 0.05 * s, -body_len * s), _euler(times, -2.4 + _osc(rng, times, 0, 0.5, -0.7, 0.7)))
    cap(tail, 0.3, 0.035, rot=rot_x(math.pi))
    gait = rng.uniform(0, 2 * math.pi, 4) if rng.random() < 0.3 else np.array([0, 0.3, math.pi, math.pi + 0.3]) + ph0
    amp = rng.uniform(0.3, 0.9)
    for i, (x, z) in enumerate([(1, 1), (-1, 1), (1, -1), (-1, -1)]):
        sw = amp * np.sin(2 * math.pi * f * times + gait[i])
        hip = sk.add(root, (x * 0.11 * s, -0.08 * s, z * 0.75 * body_len * s), _euler(times, sw))
        cap(hip, 0.36, 0.065)
        kf = amp * 0.8 * (1 + np.sin(2 * math.pi * f * times + gait[i] + 1.2)) * (1 if z > 0 else -1)
        kn = sk.add(hip, (0, -0.36 * s, 0), _euler(times, kf))
        cap(kn, 0.36, 0.04)
    return ProceduralShape(parts, T)


def make_tubes(times: np.ndarray, rng: np.random.Generator) -> ProceduralShape:
    """Bending tubes: a single bending tube, or an ellipsoid body with 1-5 bending tentacles."""
    T = len(times)
    Rr, tr = _root_motion(rng, times, 1.0)
    parts: list[Part] = []
    if rng.random() < 0.35:
        n_tubes, body = 1, None
    else:
        n_tubes = int(rng.integers(1, 6))
        body = rng.uniform(0.1, 0.25, 3)
        parts.append(Part("ellipsoid", Rr.copy(), tr.copy(), radii=body))
    for i in range(n_tubes):
        r = rng.uniform(0.03, 0.09)
        L = rng.uniform(0.3, 0.8) if body is not None else rng.uniform(0.6, 1.2)
        d = random_unit(1, rng)[0]
        attach = np.zeros(3) if body is None else 0.7 * body * d
        if body is None:
            attach = -0.5 * L * d
        kmax = min(0.8 / r, 0.9 * math.pi / (L + r))
        k0 = rng.uniform(-0.5, 0.5) * kmax
        k1 = rng.uniform(0.2, 1.0) * kmax
        kap = np.clip(k0 + k1 * np.sin(2 * math.pi * rng.uniform(0.3, 1.5) * times + rng.uniform(0, 2 * math.pi)), -kmax, kmax)
        base = rotation_to(d) @ rot_x(rng.uniform(0, 2 * math.pi))
        R = np.einsum("kij,jl->kil", Rr, base)
        t = tr + np.einsum("kij,j->ki", Rr, attach)
        parts.append(Part("tube", R, t, length=L, radius=r, kappa=kap))
    return ProceduralShape(parts, T)


SHAPE_MAKERS = {"humanoid": make_humanoid, "quadruped": make_quadruped, "tubes": make_tubes}


def random_times(n_frames: int, uneven: bool, rng: np.random.Generator) -> np.ndarray:
    """Frame times [T] in [0, 1] with t_0 = 0 and t_T-1 = 1: evenly spaced, or with random gaps."""
    if not uneven or n_frames < 3:
        return np.linspace(0.0, 1.0, n_frames)
    gaps = rng.dirichlet(np.full(n_frames - 1, 2.0))
    return np.concatenate([[0.0], np.cumsum(gaps)]).clip(0, 1)


def make_procedural(kind: str, times: np.ndarray, rng: np.random.Generator) -> ProceduralShape:
    """A random procedural shape of family `kind` ("humanoid" | "quadruped" | "tubes") over `times` [T]."""
    if kind not in SHAPE_MAKERS:
        raise ValueError(f"unknown procedural kind {kind!r} ({sorted(SHAPE_MAKERS)})")
    return SHAPE_MAKERS[kind](np.asarray(times, dtype=np.float64), rng)


# --------------------------------------------------------------------------------------------------
# meshes: sampling, occupancy, sequences on disk


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Triangle areas [F] of vertices [V, 3] / faces [F, 3]."""
    v = np.asarray(vertices, dtype=np.float64)
    a = v[faces[:, 1]] - v[faces[:, 0]]
    b = v[faces[:, 2]] - v[faces[:, 0]]
    cx = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    cy = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    cz = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return 0.5 * np.sqrt(cx * cx + cy * cy + cz * cz)


def sample_barycentric(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator,
                       cdf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n area-uniform surface samples: (face index int64 [n], barycentric weights float64 [n, 3]).

    cdf: optional precomputed cumulative face areas [F] of this mesh (any scale), to skip the area pass.
    """
    if cdf is None:
        cdf = np.cumsum(face_areas(vertices, faces))
    fi = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    return fi, np.stack([1 - s, s * (1 - r2), s * r2], axis=1)


def from_barycentric(vertices: np.ndarray, faces: np.ndarray, fi: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Points [n, 3] at barycentric coordinates bary [n, 3] of faces fi [n] of a mesh with vertices [V, 3]."""
    return np.einsum("nk,nkd->nd", bary, vertices[faces[fi]])


def mesh_occupancy(vertices: np.ndarray, faces: np.ndarray, q: np.ndarray, nsamples: int = 3) -> np.ndarray:
    """Inside test bool [n] of points q [n, 3] for a closed mesh (ray parity, majority of `nsamples` rays;
    open3d's RaycastingScene)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
                        o3d.core.Tensor(np.ascontiguousarray(faces, dtype=np.uint32)))
    occ = scene.compute_occupancy(o3d.core.Tensor(np.ascontiguousarray(q, dtype=np.float32)), nsamples=nsamples)
    return occ.numpy().astype(bool)


def is_watertight(faces: np.ndarray) -> bool:
    """True when every edge of the triangle mesh faces [F, 3] is shared by exactly two faces."""
    if len(faces) == 0:
        return False
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return bool((counts == 2).all())


@dataclass
class MeshSequence:
    """A constant-connectivity mesh sequence: vertices float64 [T, V, 3] (vertex i corresponds over
    time), faces int64 [F, 3], names of the frames (file stems), world units of the source."""

    vertices: np.ndarray
    faces: np.ndarray
    names: list[str]

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.vertices.shape[0])

    @property
    def watertight(self) -> bool:
        """Closed 2-manifold connectivity (so volumetric IoU is defined)."""
        return is_watertight(self.faces)


@dataclass
class SequenceFolder:
    """What a sequence folder holds: `kind` "mesh" or "cloud", one entry per frame in natural order.

    meshes: list of `Mesh` (clouds have no faces); files: the paths; constant connectivity is
    `mesh_sequence is not None`.
    """

    kind: str
    files: list[Path]
    meshes: list[Mesh]
    mesh_sequence: MeshSequence | None
    note: str = ""


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


GEOMETRY_EXTS = MESH_EXTS | CLOUD_EXTS


def list_sequence_files(folder: str | Path) -> list[Path]:
    """Geometry files of a sequence folder in natural order (other files such as README are ignored).

    Raises InputError for a missing folder, no geometry files, or mixed file types.
    """
    d = Path(folder)
    if not d.exists():
        raise InputError(f"{d}: no such folder")
    if not d.is_dir():
        raise InputError(f"{d}: not a folder (expected a folder of one mesh / point cloud per frame)")
    files = [p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in GEOMETRY_EXTS]
    if not files:
        raise InputError(f"{d}: no mesh or point-cloud files ({', '.join(sorted(GEOMETRY_EXTS))})")
    exts = sorted({p.suffix.lower() for p in files})
    if len(exts) > 1:
        raise InputError(f"{d}: mixed file types {exts}: a sequence folder holds one format, one file per frame")
    return sorted(files, key=_natural_key)


def load_sequence_folder(folder: str | Path, max_frames: int | None = None, start: int = 0) -> SequenceFolder:
    """Load a folder of per-frame meshes (OBJ/PLY/OFF/...) or point clouds (PLY/XYZ/NPY/...).

    Frames [start, start + max_frames) in natural file order. Raises InputError (naming the file) for
    unreadable files, NaN coordinates, a mix of meshes and point clouds.
    """
    files = list_sequence_files(folder)
    if start < 0 or start >= len(files):
        raise InputError(f"{folder}: --start {start} is outside the {len(files)} frames")
    files = files[start:] if max_frames is None else files[start:start + max_frames]
    meshes = []
    for f in files:
        if f.suffix.lower() in {".npy", ".npz", ".xyz", ".pts"}:
            meshes.append(Mesh(load_points(f), np.zeros((0, 3), dtype=np.int64)))
        else:
            meshes.append(load_mesh(f))
    has_faces = [not m.is_cloud for m in meshes]
    if any(has_faces) and not all(has_faces):
        i = has_faces.index(False)
        raise InputError(f"{files[i]}: a point cloud among meshes: a sequence folder holds one kind of frame")
    kind = "mesh" if all(has_faces) else "cloud"
    seq, note = None, ""
    if kind == "mesh":
        v0, f0 = meshes[0].vertices, meshes[0].faces
        same = all(len(m.vertices) == len(v0) and m.faces.shape == f0.shape and np.array_equal(m.faces, f0) for m in meshes)
        if same:
            seq = MeshSequence(np.stack([m.vertices for m in meshes]), f0.copy(), [f.stem for f in files])
        else:
            note = "meshes do not share connectivity: no correspondence ground truth, no evaluation"
    return SequenceFolder(kind, files, meshes, seq, note)


def load_mesh_sequence(folder: str | Path) -> MeshSequence:
    """A constant-connectivity mesh sequence folder as `MeshSequence` (InputError otherwise)."""
    sf = load_sequence_folder(folder)
    if sf.mesh_sequence is None:
        raise InputError(f"{folder}: not a constant-connectivity mesh sequence ({sf.note or 'point clouds'})")
    return sf.mesh_sequence


def list_dfaust(root: str | Path) -> list[str]:
    """Sequence names `<subject>_<sequence>` available under a D-FAUST root.

    Two layouts: the official registrations files `registrations_m.hdf5` / `registrations_f.hdf5`
    (datasets `<sid>_<seq>` of shape [6890, 3, T] and `faces` [13776, 3]), and the folders written by
    D-FAUST's `write_sequence_to_obj.py`: `<root>/<sid>_<seq>/00000.obj ...`.
    """
    r = Path(root)
    if not r.is_dir():
        raise InputError(f"{r}: no such D-FAUST folder")
    names = set()
    for h5 in sorted(r.glob("registrations_*.hdf5")):
        h5py = _h5py()
        try:
            with h5py.File(h5, "r") as f:
                names |= {k for k in f.keys() if k != "faces"}
        except OSError as e:
            raise InputError(f"{h5}: cannot read HDF5 ({e})") from e
    for d in sorted(r.iterdir()):
        if d.is_dir() and re.match(r"^\d+_.+", d.name) and any(p.suffix.lower() in MESH_EXTS for p in d.iterdir()):
            names.add(d.name)
    return sorted(names)


def _h5py():
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - h5py is a dependency
        raise InputError("reading D-FAUST .hdf5 registrations needs the h5py package") from e
    return h5py


def load_dfaust(root: str | Path, name: str) -> MeshSequence:
    """Load D-FAUST sequence `name` (`<sid>_<seq>`, e.g. `50004_jumping_jacks`) from either layout
    (see `list_dfaust`); vertices [T, 6890, 3] in metres."""
    r = Path(root)
    folder = r / name
    if folder.is_dir():
        return load_mesh_sequence(folder)
    for h5 in sorted(r.glob("registrations_*.hdf5")):
        h5py = _h5py()
        try:
            with h5py.File(h5, "r") as f:
                if name not in f:
                    continue
                if "faces" not in f:
                    raise InputError(f"{h5}: no 'faces' dataset (not a D-FAUST registrations file)")
                v = np.asarray(f[name][...], dtype=np.float64)
                faces = np.asarray(f["faces"][...], dtype=np.int64)
        except OSError as e:
            raise InputError(f"{h5}: cannot read HDF5 ({e})") from e
        if v.ndim != 3 or v.shape[1] != 3:
            raise InputError(f"{h5}:{name}: expected an array [V, 3, T], got shape {v.shape}")
        v = v.transpose(2, 0, 1)
        if not np.isfinite(v).all():
            raise InputError(f"{h5}:{name}: NaN or infinite coordinates")
        return MeshSequence(v, faces, [f"{name}_{i:05d}" for i in range(len(v))])
    raise InputError(f"{r}: D-FAUST sequence {name!r} not found (have: {', '.join(list_dfaust(r)[:8]) or 'none'})")


# --------------------------------------------------------------------------------------------------
# training examples


def _query_points(surface: np.ndarray, n: int, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """n query points (unit scale), shuffled: half uniform in the padded cube, half near the surface samples [m, 3]."""
    half = 0.5 + cfg.padding / 2
    n_u = n // 2
    uni = rng.uniform(-half, half, size=(n_u, 3))
    idx = rng.integers(0, len(surface), n - n_u)
    std = np.where(rng.random(n - n_u) < 0.5, cfg.near_surface_std[0], cfg.near_surface_std[1])
    near = surface[idx] + rng.normal(size=(n - n_u, 3)) * std[:, None]
    return np.concatenate([uni, near], axis=0)[rng.permutation(n)]


def procedural_example(cfg: DataConfig, rng: np.random.Generator, kind: str | None = None,
                       uneven: bool | None = None) -> dict[str, np.ndarray]:
    """One training example from a random procedural shape (see module docstring for the fields)."""
    T = cfg.n_frames
    kind = kind or str(rng.choice(list(cfg.procedural_kinds)))
    uneven = bool(rng.random() < cfg.uneven_prob) if uneven is None else uneven
    times = random_times(T, uneven, rng)
    shape = make_procedural(kind, times, rng)
    dense = shape.surface_frames(cfg.n_points, rng)  # [T, N, 3] world
    norm = Normalisation.from_points(dense)
    inputs = norm.to_unit(dense)
    inputs = inputs + rng.normal(size=inputs.shape) * cfg.noise_std
    occ_p0 = _query_points(inputs[0], cfg.n_occ_t0, cfg, rng)
    occ_0 = shape.inside_at(norm.to_world(occ_p0)[None], np.array([0]))[0]
    occ_pt = np.stack([_query_points(inputs[k], cfg.n_occ_t, cfg, rng) for k in range(1, T)])
    occ_t = shape.inside_at(norm.to_world(occ_pt), np.arange(1, T))
    corr = norm.to_unit(shape.tracks_fast(cfg.n_corr, rng))
    return _pack(inputs, times, occ_p0, occ_0, occ_pt, occ_t, corr)


def _pack(inputs, times, occ_p0, occ_0, occ_pt, occ_t, corr) -> dict[str, np.ndarray]:
    f = np.float32
    return {"inputs": inputs.astype(f), "times": np.asarray(times, dtype=f), "occ_p0": occ_p0.astype(f),
            "occ_0": occ_0.astype(f), "occ_pt": occ_pt.astype(f), "occ_t": occ_t.astype(f), "corr": corr.astype(f)}


class RealSequenceSource:
    """Training windows drawn from a constant-connectivity mesh sequence (exact correspondences).

    Occupancy labels come from ray-parity inside tests against the frame's mesh (majority of 3 rays,
    robust to the small holes of non-watertight meshes such as horse-gallop).
    """

    def __init__(self, src: RealSource) -> None:
        seq = load_mesh_sequence(src.path)
        last = seq.n_frames if src.last < 0 else min(src.last, seq.n_frames)
        if last - src.first < 2:
            raise InputError(f"{src.path}: frames [{src.first}, {last}) are too few for training")
        self.src = src
        self.vertices = seq.vertices[src.first:last]
        self.faces = seq.faces
        self.names = seq.names[src.first:last]
        self._scenes: dict[int, object] = {}
        # cumulative face areas per frame (area ratios do not change under rotation, mirroring, scaling)
        self.cdfs = [np.cumsum(face_areas(v, self.faces)) for v in self.vertices]

    def _occupancy(self, frame: int, q: np.ndarray) -> np.ndarray:
        import open3d as o3d

        sc = self._scenes.get(frame)
        if sc is None:
            sc = o3d.t.geometry.RaycastingScene()
            sc.add_triangles(o3d.core.Tensor(self.vertices[frame].astype(np.float32)),
                             o3d.core.Tensor(self.faces.astype(np.uint32)))
            self._scenes[frame] = sc
        return sc.compute_occupancy(o3d.core.Tensor(q.astype(np.float32)), nsamples=3).numpy().astype(bool)

    def window(self, n_frames: int, rng: np.random.Generator, uneven: bool) -> tuple[np.ndarray, np.ndarray]:
        """Frame indices [T] (into this source) and their times [T] for a random window.

        Even: T consecutive frames. Uneven: T distinct frames (first and last kept) out of a random
        span of T..n consecutive frames. Cyclic sources may wrap around the end.
        """
        n = len(self.vertices)
        if n_frames > n:
            raise InputError(f"{self.src.path}: {n} training frames, fewer than the {n_frames} a window needs")
        span = int(rng.integers(n_frames, n + 1)) if uneven else n_frames
        start = int(rng.integers(0, n)) if self.src.cyclic else int(rng.integers(0, n - span + 1))
        if span == n_frames:
            offs = np.arange(n_frames)
        else:
            inner = np.sort(rng.choice(np.arange(1, span - 1), size=n_frames - 2, replace=False))
            offs = np.concatenate([[0], inner, [span - 1]])
        return (start + offs) % n, offs / offs[-1]

    def example(self, cfg: DataConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One training example (fields as in the module docstring)."""
        T = cfg.n_frames
        idx, times = self.window(T, rng, uneven=bool(rng.random() < cfg.uneven_prob))
        if cfg.augment_real and rng.random() < 0.5:
            idx, times = idx[::-1].copy(), (1.0 - times[::-1]).copy()
        A = np.eye(3)
        if cfg.augment_real:
            A = rot_y(rng.uniform(0, 2 * math.pi)) @ np.diag([-1.0 if rng.random() < 0.5 else 1.0, 1.0, 1.0])
        verts = self.vertices[idx] @ A.T  # [T, V, 3] augmented world
        norm = Normalisation.from_points(verts)
        vu = norm.to_unit(verts)
        n_dense = cfg.n_points
        inputs, occ_pt, occ_t = [], [], []
        surf0 = None
        for k in range(T):
            fi, bc = sample_barycentric(vu[k], self.faces, n_dense, rng, self.cdfs[int(idx[k])])
            s = from_barycentric(vu[k], self.faces, fi, bc)
            inputs.append(s[:cfg.n_points])
            if k == 0:
                surf0 = s
            else:
                q = _query_points(s, cfg.n_occ_t, cfg, rng)
                occ_pt.append(q)
                occ_t.append(self._occupancy(int(idx[k]), norm.to_world(q) @ A))
        inputs = np.stack(inputs) + rng.normal(size=(T, cfg.n_points, 3)) * cfg.noise_std
        occ_p0 = _query_points(surf0, cfg.n_occ_t0, cfg, rng)
        occ_0 = self._occupancy(int(idx[0]), norm.to_world(occ_p0) @ A)
        fi, bc = sample_barycentric(vu[0], self.faces, cfg.n_corr, rng, self.cdfs[int(idx[0])])
        corr = np.stack([from_barycentric(vu[k], self.faces, fi, bc) for k in range(T)])
        return _pack(inputs, times, occ_p0, occ_0, np.stack(occ_pt), np.stack(occ_t), corr)


class ExampleSampler:
    """Draws training examples: procedural shapes, mixed with real mesh sequences (`real_fraction`)."""

    def __init__(self, cfg: DataConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        self.real = [RealSequenceSource(s) for s in cfg.real_sources] if cfg.real_fraction > 0 else []
        w = np.array([s.weight for s in cfg.real_sources], dtype=np.float64) if self.real else np.zeros(0)
        self.real_p = w / w.sum() if len(w) else w

    def draw(self) -> dict[str, np.ndarray]:
        """One example (dict of float32 arrays, see the module docstring)."""
        if self.real and self.rng.random() < self.cfg.real_fraction:
            src = self.real[int(self.rng.choice(len(self.real), p=self.real_p))]
            return src.example(self.cfg, self.rng)
        return procedural_example(self.cfg, self.rng)

    def batch(self, n: int) -> dict[str, np.ndarray]:
        """n examples stacked along a new first axis."""
        ex = [self.draw() for _ in range(n)]
        return {k: np.stack([e[k] for e in ex]) for k in ex[0]}


def procedural_mesh_sequence(kind: str, n_frames: int, seed: int, resolution: int = 64,
                             uneven: bool = False) -> tuple[MeshSequence, np.ndarray]:
    """A constant-connectivity mesh sequence of a procedural shape (world units) and its times [T].

    The t0 mesh is marching cubes of the union's signed function (exact zero set); its vertices are carried to every frame by
    the motion of their nearest part (exact inside a part; near joints of articulated shapes the
    carried surface deviates slightly from the exact union, as a real skinned mesh would).
    """
    rng = np.random.default_rng(seed)
    times = random_times(n_frames, uneven, rng)
    shape = make_procedural(kind, times, rng)
    s0 = shape.surface(4000, 0, rng)
    lo0, hi0 = s0.min(0) - 0.05, s0.max(0) + 0.05
    step = float((hi0 - lo0).max()) / resolution
    axes = [np.arange(lo0[i], hi0[i] + step, step) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    f = shape.sdf(grid, 0).reshape(len(axes[0]), len(axes[1]), len(axes[2]))
    verts, faces = marching_cubes_oriented(np.pad(f, 1, constant_values=1.0), 0.0, inside_negative=True)
    verts = (verts - 1) * step + lo0
    return MeshSequence(shape.move_points(verts), faces, [f"{i:04d}" for i in range(n_frames)]), times


def marching_cubes_oriented(volume: np.ndarray, level: float, inside_negative: bool) -> tuple[np.ndarray, np.ndarray]:
    """skimage marching cubes with outward-facing triangles.

    volume [X, Y, Z] float, iso-`level`; inside where values are below (inside_negative) or above the
    level. Returns (vertices float64 [V, 3] in voxel index units, faces int64 [F, 3]); faces are flipped
    when the enclosed signed volume comes out negative.
    """
    from skimage.measure import marching_cubes

    vol = volume if inside_negative else -volume
    lev = level if inside_negative else -level
    verts, faces, _, _ = marching_cubes(np.asarray(vol, dtype=np.float32), lev)
    verts = verts.astype(np.float64)
    faces = faces.astype(np.int64)
    tri = verts[faces]
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    if signed < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces
