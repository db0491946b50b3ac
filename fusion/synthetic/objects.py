"""Procedural deforming objects: constant-connectivity textured triangle meshes whose vertex positions are
deterministic functions of time.

Every object exposes `faces` int32 [F, 3], texture coordinates `uv` float64 [V, 2] (metres along the
surface, so that material frequencies are in periods per metre), `face_mat` int32 [F] and the material
table `mats` float64 [M, MAT_COLS] (see fusion.synthetic.raster), and `vertices(t)` -> float64 [V, 3],
the camera-frame positions (OpenCV: x right, y down, z forward; metres) at time `t` seconds.

Objects sit around (0, 0, distance) in front of the camera. `amplitude` scales every motion (1 =
moderate, 0 = static rest shape); `seed` draws phases, directions and colours.
"""
from __future__ import annotations

import colorsys

import numpy as np

from fusion.synthetic.raster import CHECKER, NOISE, STRIPES, make_material

TEXTURES = {"checker": CHECKER, "stripes": STRIPES, "noise": NOISE}


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _colors(rng: np.random.Generator) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Two well-contrasted RGB colours in [0, 1]: a saturated one and a light one of another hue."""
    h = rng.random()
    a = colorsys.hsv_to_rgb(h, 0.75, 0.85)
    b = colorsys.hsv_to_rgb((h + 0.35 + 0.3 * rng.random()) % 1.0, 0.25, 0.95)
    return a, b


def grid_faces(rows: int, cols: int) -> np.ndarray:
    """Two triangles per cell of a rows x cols vertex grid (row-major vertex ids): int32 [2 (rows-1)(cols-1), 3]."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (r * cols + c).ravel()
    b, d, e = a + 1, a + cols, a + cols + 1
    return np.concatenate([np.stack([a, d, b], 1), np.stack([b, d, e], 1)]).astype(np.int32)


def revolution(profile_s: np.ndarray, profile_r: np.ndarray, n_around: int) -> dict:
    """A closed-or-open surface of revolution around a local axis, with the seam duplicated for the uv map.

    profile_s / profile_r: float [K] axial position and radius of each ring (metres). Returns a dict with
    s, phi, r (float64 [V], V = K (n_around + 1)), uv float64 [V, 2] (arc length around, arc length along;
    metres) and faces int32 [2 (K-1) n_around, 3].
    """
    ps, pr = np.asarray(profile_s, np.float64), np.asarray(profile_r, np.float64)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(ps), np.diff(pr)))])
    phi = np.linspace(0.0, 2 * np.pi, n_around + 1)
    s = np.repeat(ps, n_around + 1)
    r = np.repeat(pr, n_around + 1)
    ph = np.tile(phi, len(ps))
    uv = np.stack([ph * pr.max(), np.repeat(arc, n_around + 1)], axis=1)
    return {"s": s, "phi": ph, "r": r, "uv": uv, "faces": grid_faces(len(ps), n_around + 1)}


class DeformingObject:
    """Base of the procedural objects (see the module docstring for the attributes)."""

    name = "object"
    faces: np.ndarray
    uv: np.ndarray
    face_mat: np.ndarray
    mats: np.ndarray

    def vertices(self, t: float) -> np.ndarray:
        """Camera-frame vertex positions at time t seconds: float64 [V, 3] metres."""
        raise NotImplementedError

    @property
    def n_vertices(self) -> int:
        """Number of vertices V."""
        return len(self.uv)


# --------------------------------------------------------------------------------------------------
# (a) waving cloth
# --------------------------------------------------------------------------------------------------


class Cloth(DeformingObject):
    """A rectangular sheet (0.7 x 0.5 m by default) facing the camera, with travelling waves, a fold of its
    lower part toward the camera that opens and closes, and a slow rigid sway."""

    name = "cloth"

    def __init__(self, seed: int, amplitude: float = 1.0, distance: float = 1.1, size: float = 0.7,
                 resolution: int = 56, texture: str = "checker") -> None:
        rng = np.random.default_rng([seed, 101])
        self.amplitude, self.distance = float(amplitude), float(distance)
        self.w, self.h = size, size * 5 / 7
        nx, ny = resolution, max(3, int(round(resolution * 5 / 7)))
        x, y = np.meshgrid(np.linspace(-self.w / 2, self.w / 2, nx), np.linspace(-self.h / 2, self.h / 2, ny))
        self.x, self.y = x.ravel(), y.ravel()
        self.faces = grid_faces(ny, nx)
        self.uv = np.stack([self.x + self.w / 2, self.y + self.h / 2], axis=1)
        ca, cb = _colors(rng)
        freq = 1.0 / 0.05 if texture == "checker" else 12.0
        self.mats = make_material(TEXTURES[texture], (freq, freq), ca, cb, 0.35)[None]
        self.face_mat = np.zeros(len(self.faces), np.int32)
        # three travelling waves: amplitude (m), wave vector (rad/m), angular frequency (rad/s), phase
        ang = rng.uniform(0, 2 * np.pi, 3)
        lam = rng.uniform(0.25, 0.5, 3)
        self.wave_a = rng.uniform(0.012, 0.025, 3)
        self.wave_k = np.stack([np.cos(ang), np.sin(ang)], 1) * (2 * np.pi / lam)[:, None]
        self.wave_w = 2 * np.pi * rng.uniform(0.4, 0.9, 3)
        self.wave_p = rng.uniform(0, 2 * np.pi, 3)
        self.fold_y = rng.uniform(-0.02, 0.06) * size / 0.7
        self.fold_len = 0.08 * size / 0.7
        self.fold_w = 2 * np.pi * rng.uniform(0.25, 0.4)
        self.fold_p = rng.uniform(0, 2 * np.pi)
        self.sway = rng.uniform(0, 2 * np.pi, 4)

    def vertices(self, t: float) -> np.ndarray:
        """Camera-frame vertex positions at time t seconds: float64 [V, 3] metres."""
        a = self.amplitude
        dz = np.zeros_like(self.x)
        for k in range(3):
            dz += self.wave_a[k] * np.sin(self.wave_k[k, 0] * self.x + self.wave_k[k, 1] * self.y
                                          - self.wave_w[k] * t + self.wave_p[k])
        dz *= a
        # fold of the part below the line y = fold_y (y grows downward) toward the camera (-z)
        theta = a * 1.3 * (0.5 - 0.5 * np.cos(self.fold_w * t + self.fold_p))
        d = self.y - self.fold_y
        ell = self.fold_len
        alpha = np.clip(d, 0.0, ell) / ell * theta  # bend angle reached at this point
        kappa = theta / ell
        arc = np.clip(d, 0.0, ell)
        # arc part, written to stay exact as kappa -> 0: sin(k a)/k and (1 - cos(k a))/k
        sy = arc * np.sinc(kappa * arc / np.pi)
        sz = kappa * arc**2 / 2 * np.sinc(kappa * arc / (2 * np.pi)) ** 2
        rest = np.clip(d - ell, 0.0, None)
        yy = np.where(d > 0, self.fold_y + sy + rest * np.cos(alpha), self.y)
        zz = np.where(d > 0, -sz - rest * np.sin(alpha), 0.0)
        # waves act along the local normal of the folded sheet, n = (0, sin(alpha), cos(alpha))
        yy = yy + dz * np.where(d > 0, np.sin(alpha), 0.0)
        zz = zz + dz * np.where(d > 0, np.cos(alpha), 1.0)
        p = np.stack([self.x, yy, zz], axis=1)
        s = self.sway
        r = _rot_y(a * 0.35 * np.sin(0.9 * t + s[0])) @ _rot_x(a * 0.2 * np.sin(0.7 * t + s[1]))
        tr = np.array([a * 0.08 * np.sin(0.6 * t + s[2]), a * 0.04 * np.sin(0.8 * t + s[3]), self.distance])
        return p @ r.T + tr


# --------------------------------------------------------------------------------------------------
# (b) bending and twisting cylinder
# --------------------------------------------------------------------------------------------------


class Cylinder(DeformingObject):
    """A capped cylinder (0.5 m long, 8 cm radius by default) lying diagonally, bending (curvature and
    bending plane change over time), twisting about its axis, and swaying rigidly."""

    name = "cylinder"

    def __init__(self, seed: int, amplitude: float = 1.0, distance: float = 1.1, size: float = 0.5,
                 resolution: int = 48, texture: str = "noise") -> None:
        rng = np.random.default_rng([seed, 202])
        self.amplitude, self.distance = float(amplitude), float(distance)
        self.length, self.radius = size, size * 0.16
        n_cap = max(3, resolution // 8)
        body = np.linspace(-size / 2, size / 2, resolution)
        beta = np.linspace(0, np.pi / 2, n_cap + 1)[1:]
        cap_s = size / 2 + 0.5 * self.radius * np.sin(beta)
        cap_r = self.radius * np.cos(beta)
        ps = np.concatenate([-cap_s[::-1], body, cap_s])
        pr = np.concatenate([cap_r[::-1], np.full(resolution, self.radius), cap_r])
        rev = revolution(ps, pr, max(8, int(resolution * 2 / 3)))
        self.s, self.phi, self.r = rev["s"], rev["phi"], rev["r"]
        self.uv, self.faces = rev["uv"], rev["faces"]
        ca, cb = _colors(rng)
        freq = {"checker": 1 / 0.04, "stripes": 8.0, "noise": 14.0}[texture]
        fv = freq * 0.7 if texture == "stripes" else freq  # stripes run diagonally around the cylinder
        self.mats = make_material(TEXTURES[texture], (freq, fv), ca, cb, 0.3)[None]
        self.face_mat = np.zeros(len(self.faces), np.int32)
        self.tilt = rng.uniform(-0.6, 0.6)
        self.w = 2 * np.pi * rng.uniform([0.3, 0.35, 0.1, 0.3, 0.25], [0.5, 0.6, 0.2, 0.45, 0.4])
        self.p = rng.uniform(0, 2 * np.pi, 6)

    def vertices(self, t: float) -> np.ndarray:
        """Camera-frame vertex positions at time t seconds: float64 [V, 3] metres."""
        a, w, p = self.amplitude, self.w, self.p
        twist = a * 1.4 * np.sin(w[0] * t + p[0]) / self.length  # rad per metre
        kappa = a * 3.2 * np.sin(w[1] * t + p[1]) * (0.5 / self.length)  # 1/m, bend angle <= 1.6 rad over L
        gamma = p[2] + w[2] * t * 2.0
        s = np.clip(self.s, -self.length / 2, self.length / 2)
        ds = self.s - s  # the caps continue straight beyond the body ends
        ph = self.phi + twist * s
        o1, o2 = self.r * np.cos(ph), self.r * np.sin(ph)  # offset in the (y, z) cross-section plane
        d = np.array([0.0, np.cos(gamma), np.sin(gamma)])
        b = np.array([0.0, -np.sin(gamma), np.cos(gamma)])
        ea = np.array([1.0, 0.0, 0.0])
        oa = o1 * d[1] + o2 * d[2]
        ob = o1 * b[1] + o2 * b[2]
        ks = kappa * s
        cx = s * np.sinc(ks / np.pi)
        cd = kappa * s**2 / 2 * np.sinc(ks / (2 * np.pi)) ** 2
        tangent = np.cos(ks)[:, None] * ea + np.sin(ks)[:, None] * d
        normal = -np.sin(ks)[:, None] * ea + np.cos(ks)[:, None] * d
        pts = cx[:, None] * ea + cd[:, None] * d + oa[:, None] * normal + ob[:, None] * b + ds[:, None] * tangent
        r = _rot_z(self.tilt + a * 0.25 * np.sin(w[3] * t + p[3])) @ _rot_y(a * 0.45 * np.sin(w[4] * t + p[4]))
        tr = np.array([a * 0.07 * np.sin(0.5 * t + p[5]), a * 0.04 * np.sin(0.7 * t + p[5] + 1.0), self.distance])
        return pts @ r.T + tr


# --------------------------------------------------------------------------------------------------
# (c) articulated humanoid: skinned primitives, linear blend skinning
# --------------------------------------------------------------------------------------------------

# joint: (name, parent, rest position in the model frame: y up, z toward the camera; metres at scale 1)
_JOINTS = [
    ("pelvis", -1, (0.0, 0.0, 0.0)),
    ("chest", 0, (0.0, 0.10, 0.0)),
    ("neck", 1, (0.0, 0.30, 0.0)),
    ("head", 2, (0.0, 0.36, 0.0)),
    ("l_shoulder", 1, (0.125, 0.27, 0.0)),
    ("l_elbow", 4, (0.145, 0.09, 0.0)),
    ("l_wrist", 5, (0.155, -0.07, 0.0)),
    ("r_shoulder", 1, (-0.125, 0.27, 0.0)),
    ("r_elbow", 7, (-0.145, 0.09, 0.0)),
    ("r_wrist", 8, (-0.155, -0.07, 0.0)),
    ("l_hip", 0, (0.07, -0.03, 0.0)),
    ("l_knee", 10, (0.075, -0.24, 0.0)),
    ("l_ankle", 11, (0.08, -0.45, 0.0)),
    ("r_hip", 0, (-0.07, -0.03, 0.0)),
    ("r_knee", 13, (-0.075, -0.24, 0.0)),
    ("r_ankle", 14, (-0.08, -0.45, 0.0)),
]
_J = {n: i for i, (n, _, _) in enumerate(_JOINTS)}


def _smooth(x: np.ndarray) -> np.ndarray:
    """Odd smoothstep on [-1, 1] -> [-1, 1] (clamped outside)."""
    x = np.clip(x, -1.0, 1.0)
    return x * (3.0 - x * x) / 2.0


def _frame_for_axis(axis: np.ndarray) -> np.ndarray:
    """A rotation whose third column is the unit `axis` (for placing primitives along a segment)."""
    a = axis / np.linalg.norm(axis)
    helper = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(helper, a)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(a, e1)
    return np.stack([e1, e2, a], axis=1)


class Humanoid(DeformingObject):
    """A small humanoid (about 0.8 m tall by default) built from capsules and ellipsoids skinned to a
    16-joint skeleton with linear blend skinning; it walks on the spot, swings and raises its arms, turns,
    nods and sways."""

    name = "humanoid"

    def __init__(self, seed: int, amplitude: float = 1.0, distance: float = 1.3, size: float = 0.8,
                 resolution: int = 16, texture: str | None = None) -> None:
        rng = np.random.default_rng([seed, 303])
        self.amplitude, self.distance = float(amplitude), float(distance)
        sc = size / 0.97  # the rest skeleton is 0.97 m from soles to head top
        self.scale = sc
        self.parents = np.array([p for _, p, _ in _JOINTS])
        self.rest = np.array([q for _, _, q in _JOINTS], np.float64) * sc
        n = max(8, resolution)
        mats, parts = [], []
        hue = rng.random()

        def mat(kind: int, freq: float, h: float, detail: float = 0.3) -> int:
            a = colorsys.hsv_to_rgb(h % 1.0, 0.7, 0.85)
            b = colorsys.hsv_to_rgb((h + 0.45) % 1.0, 0.2, 0.95)
            if texture is not None:
                kind = TEXTURES[texture]
            mats.append(make_material(kind, (freq, freq * (0.6 if kind == STRIPES else 1.0)), a, b, detail))
            return len(mats) - 1

        m_shirt = mat(STRIPES, 10.0, hue)
        m_arm = mat(CHECKER, 1 / 0.03, hue + 0.15)
        m_leg = mat(NOISE, 18.0, hue + 0.6)
        m_skin = mat(NOISE, 25.0, 0.07, 0.2)
        m_foot = mat(CHECKER, 1 / 0.02, hue + 0.3)
        J = self.rest

        def cap(a: str, b: str, r: float, m: int) -> None:
            parts.append(("capsule", _J[a], _J[b], r * sc, m))

        def ell(bone: str, centre: tuple, radii: tuple, m: int, blend_parent: bool = False) -> None:
            parts.append(("ellipsoid", _J[bone], np.array(centre) * sc, np.array(radii) * sc, m, blend_parent))

        ell("pelvis", (0.0, -0.01, 0.0), (0.12, 0.075, 0.075), m_leg)
        ell("chest", (0.0, 0.17, 0.0), (0.14, 0.155, 0.085), m_shirt, True)
        cap("neck", "head", 0.035, m_skin)
        ell("head", (0.0, 0.44, 0.01), (0.075, 0.09, 0.08), m_skin)
        for side in ("l", "r"):
            cap(f"{side}_shoulder", f"{side}_elbow", 0.04, m_arm)
            cap(f"{side}_elbow", f"{side}_wrist", 0.033, m_arm)
            wx = J[_J[f"{side}_wrist"]] / sc
            ell(f"{side}_wrist", (wx[0], wx[1] - 0.045, 0.0), (0.025, 0.05, 0.018), m_skin)
            cap(f"{side}_hip", f"{side}_knee", 0.055, m_leg)
            cap(f"{side}_knee", f"{side}_ankle", 0.042, m_leg)
            ax = J[_J[f"{side}_ankle"]] / sc
            ell(f"{side}_ankle", (ax[0], ax[1] - 0.02, 0.04), (0.04, 0.028, 0.075), m_foot)

        verts, uvs, faces, fmat, wts = [], [], [], [], []
        nj = len(_JOINTS)
        off = 0
        for part in parts:
            if part[0] == "capsule":
                _, ja, jb, r, m = part
                pa, pb = J[ja], J[jb]
                length = np.linalg.norm(pb - pa)
                k = max(4, n // 2)
                beta = np.linspace(-np.pi / 2, 0, k // 2 + 1)
                prof_s = np.concatenate([r * np.sin(beta), np.linspace(0, length, k)[1:-1], length + r * np.sin(-beta[::-1])])
                prof_r = np.concatenate([r * np.cos(beta), np.full(k - 2, r), r * np.cos(-beta[::-1])])
                rev = revolution(prof_s, prof_r, n)
                fr = _frame_for_axis(pb - pa)
                local = np.stack([rev["r"] * np.cos(rev["phi"]), rev["r"] * np.sin(rev["phi"]), rev["s"]], 1)
                v = pa + local @ fr.T
                blend = min(0.04 * sc, length / 3)
                w = np.zeros((len(v), nj))
                wp = 0.5 - 0.5 * _smooth(rev["s"] / blend)
                wc = 0.5 + 0.5 * _smooth((rev["s"] - length) / blend)
                parent = self.parents[ja]
                has_child = any(pp[1] == jb for pp in parts if pp[0] == "capsule") or any(
                    pp[0] == "ellipsoid" and pp[1] == jb for pp in parts)
                if parent < 0:
                    wp[:] = 0
                if not has_child:
                    wc[:] = 0
                w[:, ja] = 1 - wp - wc
                if parent >= 0:
                    w[:, parent] += wp
                w[:, jb] += wc
            else:
                _, jb_, centre, radii, m, blend_parent = part
                k = max(6, n // 2 + 2)
                beta = np.linspace(-np.pi / 2, np.pi / 2, k)
                rev = revolution(np.sin(beta), np.cos(beta), n)
                local = np.stack([rev["r"] * np.cos(rev["phi"]), rev["s"], rev["r"] * np.sin(rev["phi"])], 1)
                v = centre + local * radii
                rev["uv"] = rev["uv"] * float(np.mean(radii))
                w = np.zeros((len(v), nj))
                w[:, jb_] = 1.0
                parent = self.parents[jb_]
                if blend_parent and parent >= 0:
                    # the lower part of the chest follows the pelvis
                    y0 = J[jb_][1]
                    wp = 0.5 - 0.5 * _smooth((v[:, 1] - y0) / (0.06 * sc))
                    w[:, jb_] = 1 - wp
                    w[:, parent] = wp
            verts.append(v)
            uvs.append(rev["uv"])
            faces.append(rev["faces"] + off)
            fmat.append(np.full(len(rev["faces"]), m, np.int32))
            wts.append(w)
            off += len(v)
        self.rest_vertices = np.concatenate(verts)
        self.uv = np.concatenate(uvs)
        self.faces = np.concatenate(faces).astype(np.int32)
        self.face_mat = np.concatenate(fmat)
        self.mats = np.stack(mats)
        self.weights = np.concatenate(wts)
        self.w = 2 * np.pi * rng.uniform(0.45, 0.65)
        self.p = rng.uniform(0, 2 * np.pi, 12)
        self.rest_h = np.c_[self.rest_vertices, np.ones(len(self.rest_vertices))]

    def joint_rotations(self, t: float) -> np.ndarray:
        """Local joint rotations at time t: float64 [16, 3, 3] (model frame, y up, z toward the camera)."""
        a, w, p = self.amplitude, self.w, self.p
        ph = w * t
        rots = np.tile(np.eye(3), (len(_JOINTS), 1, 1))
        rots[_J["pelvis"]] = _rot_y(a * 0.5 * np.sin(0.35 * ph + p[0])) @ _rot_z(a * 0.08 * np.sin(0.5 * ph + p[1]))
        rots[_J["chest"]] = _rot_y(a * 0.3 * np.sin(ph + p[2])) @ _rot_x(a * 0.15 * np.sin(0.6 * ph + p[3]))
        rots[_J["head"]] = _rot_x(a * 0.3 * np.sin(1.3 * ph + p[4])) @ _rot_y(a * 0.4 * np.sin(0.7 * ph + p[5]))
        for sgn, side in ((1.0, "l"), (-1.0, "r")):
            swing = a * 0.8 * np.sin(ph + p[6] + (0 if sgn > 0 else np.pi))
            raise_ = a * 0.7 * (1.0 - np.cos(0.5 * ph + p[7] + (0 if sgn > 0 else 1.3)))
            rots[_J[f"{side}_shoulder"]] = _rot_z(sgn * raise_) @ _rot_x(-swing)
            rots[_J[f"{side}_elbow"]] = _rot_x(-a * (0.5 + 0.45 * np.sin(1.5 * ph + p[8] + sgn)))
            rots[_J[f"{side}_wrist"]] = _rot_z(sgn * a * 0.4 * np.sin(2.0 * ph + p[9]))
            leg = a * 0.55 * np.sin(ph + p[10] + (np.pi if sgn > 0 else 0))
            rots[_J[f"{side}_hip"]] = _rot_x(-leg) @ _rot_z(sgn * a * 0.1 * (1 + np.sin(0.5 * ph + p[11])))
            rots[_J[f"{side}_knee"]] = _rot_x(a * 0.45 * (1.0 + np.sin(ph + p[10] + (np.pi if sgn > 0 else 0) - 1.2)))
            rots[_J[f"{side}_ankle"]] = _rot_x(-a * 0.2 * np.sin(ph + p[10]))
        return rots

    def skinning_matrices(self, t: float) -> np.ndarray:
        """Per-joint 4x4 skinning matrices G_j(t) G_j(rest)^-1 in the model frame: float64 [16, 4, 4]."""
        rots = self.joint_rotations(t)
        nj = len(_JOINTS)
        g = np.zeros((nj, 4, 4))
        for j in range(nj):
            loc = np.eye(4)
            loc[:3, :3] = rots[j]
            par = self.parents[j]
            loc[:3, 3] = self.rest[j] - (self.rest[par] if par >= 0 else 0.0)
            g[j] = loc if par < 0 else g[par] @ loc
        inv_rest = np.tile(np.eye(4), (nj, 1, 1))
        inv_rest[:, :3, 3] = -self.rest
        return g @ inv_rest

    def vertices(self, t: float) -> np.ndarray:
        """Camera-frame vertex positions at time t seconds: float64 [V, 3] metres."""
        a, w, p = self.amplitude, self.w, self.p
        m = self.skinning_matrices(t)  # [J, 4, 4]
        blended = np.einsum("vj,jab->vab", self.weights, m[:, :3, :])  # [V, 3, 4]
        model = np.einsum("vab,vb->va", blended, self.rest_h)
        ph = w * t
        root = np.array([a * 0.10 * np.sin(0.5 * ph + p[0]),
                         0.03 * self.scale * a * np.abs(np.sin(ph + p[10])),
                         a * 0.08 * np.sin(0.3 * ph + p[1])])
        model = model + root
        # model (y up, z toward camera) -> camera (y down, z forward): rotation by pi about x, then place
        cam = model * np.array([1.0, -1.0, -1.0])
        return cam + np.array([0.0, 0.01, self.distance])


OBJECTS = {"cloth": Cloth, "cylinder": Cylinder, "humanoid": Humanoid}
