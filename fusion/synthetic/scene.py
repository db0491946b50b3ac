"""Synthetic deforming scenes: configuration, rendering to RGB-D, and per-pixel ground truth.

Naming: frame i is at time t_i = i / fps seconds; the object moves as a function of `speed * t_i`.
`scene_flow(i, j)[v, u]` is the 3D motion (camera frame, metres) from frame i to frame j of the surface
point seen at pixel (u, v) of frame i; `optical_flow(i, j)[v, u]` is the image motion (pixels, (du, dv))
of that point. Both are NaN where frame i sees no surface. Ground truth is always that of the clean
(noise-free) surface, also when the rendered frames are noisy.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from fusion.camera import Intrinsics, project
from fusion.errors import InputError
from fusion.frame import RGBDFrame
from fusion.synthetic.noise import NoiseConfig, apply_noise
from fusion.synthetic.objects import OBJECTS, TEXTURES, DeformingObject, grid_faces
from fusion.synthetic.raster import NOISE, make_material, noise_table, rasterize, shade, vertex_normals

#: the default camera: a RealSense D435 colour stream at 640x480, scaled to the configured size
DEFAULT_INTRINSICS = Intrinsics(615.0, 615.0, 319.5, 239.5, 640, 480)


@dataclass(frozen=True)
class SceneConfig:
    """A synthetic scene. Every field has a default except the object name (see `list_scenes()`)."""

    #: which object: "cloth", "cylinder" or "humanoid"
    name: str
    #: image size in pixels
    width: int = 640
    height: int = 480
    #: number of frames and frame rate (frame i is at t = i / fps seconds)
    n_frames: int = 60
    fps: float = 30.0
    #: seeds the object's motion phases, directions and colours, the texture noise and the sensor noise
    seed: int = 0
    #: add sensor noise (depth noise, holes, quantisation, colour noise) to rendered frames
    noise: bool = False
    noise_params: NoiseConfig = field(default_factory=NoiseConfig)
    #: time scale of the motion: 2 = everything moves twice as fast (larger motion between frames)
    speed: float = 1.0
    #: motion amplitude: 0 = the static rest shape, 1 = moderate, 2 = large deformation and sway
    amplitude: float = 1.0
    #: distance of the object from the camera in metres (None: the object's default, 1.1-1.2 m)
    distance: float | None = None
    #: object size in metres (None: the object's default: cloth 0.7, cylinder 0.5, humanoid 0.8)
    size: float | None = None
    #: mesh resolution (None: the object's default)
    resolution: int | None = None
    #: texture override: "checker", "stripes", "noise" (None: the object's own textures)
    texture: str | None = None
    #: add a static textured background plane behind the object
    background: bool = False
    #: distance of the background plane behind the object's distance, metres
    background_offset: float = 0.6
    #: camera intrinsics (None: DEFAULT_INTRINSICS scaled to width x height)
    intrinsics: Intrinsics | None = None
    #: direction toward the light in the camera frame, and the ambient fraction of the Lambert shading
    light: tuple[float, float, float] = (-0.4, -0.6, -1.0)
    ambient: float = 0.35
    #: colour of background pixels (where nothing is rendered), RGB
    background_color: tuple[int, int, int] = (40, 40, 40)

    def __post_init__(self) -> None:
        if self.name not in OBJECTS:
            raise InputError(f"unknown synthetic scene {self.name!r}; known: {', '.join(list_scenes())}")
        if self.width <= 0 or self.height <= 0:
            raise InputError(f"synthetic scene size must be positive, got {self.width}x{self.height}")
        if self.n_frames < 1 or not self.fps > 0:
            raise InputError(f"synthetic scene needs n_frames >= 1 and fps > 0, got {self.n_frames}, {self.fps}")
        if self.texture is not None and self.texture not in TEXTURES:
            raise InputError(f"unknown texture {self.texture!r}; known: {', '.join(TEXTURES)}")
        if self.intrinsics is not None and (self.intrinsics.width, self.intrinsics.height) != (self.width, self.height):
            raise InputError("SceneConfig.intrinsics size differs from width x height")

    def camera(self) -> Intrinsics:
        """The intrinsics of the rendered frames."""
        return self.intrinsics or DEFAULT_INTRINSICS.scaled(self.width, self.height)


def list_scenes() -> list[str]:
    """Names of the available synthetic objects (values for SceneConfig.name)."""
    return list(OBJECTS)


@dataclass
class RenderLayers:
    """Clean (noise-free) render of one frame.

    depth float32 [H, W] metres (0 = nothing), color uint8 [H, W, 3], tri int32 [H, W] index into
    `SyntheticScene.faces` (-1 = nothing), bary float32 [H, W, 3] perspective-correct barycentrics,
    mask bool [H, W] pixels of the deforming object (not the background plane).
    """

    depth: np.ndarray
    color: np.ndarray
    tri: np.ndarray
    bary: np.ndarray
    mask: np.ndarray


class SyntheticScene:
    """A rendered deforming object with exact per-pixel ground truth (see the module docstring).

    `faces` / `vertices_at(i)` describe everything that is rendered (object first, then the optional
    background plane); `mesh_at(i)` is the deforming object alone. Object faces are 0 .. n_object_faces-1.
    """

    def __init__(self, cfg: SceneConfig, cache_size: int = 4) -> None:
        self.cfg = cfg
        self.intrinsics = cfg.camera()
        kw: dict = {"seed": cfg.seed, "amplitude": cfg.amplitude}
        for key in ("distance", "size", "resolution", "texture"):
            if getattr(cfg, key) is not None:
                kw[key] = getattr(cfg, key)
        self.object: DeformingObject = OBJECTS[cfg.name](**kw)
        obj = self.object
        self.n_object_faces = len(obj.faces)
        self.n_object_vertices = obj.n_vertices
        faces, uv, face_mat, mats = [obj.faces], [obj.uv], [obj.face_mat], [obj.mats]
        self._bg_vertices = np.zeros((0, 3))
        if cfg.background:
            k = self.intrinsics
            z = float(np.mean(obj.vertices(0.0)[:, 2])) + cfg.background_offset
            hw, hh = 0.6 * k.width / k.fx * z, 0.6 * k.height / k.fy * z
            cx, cy = (k.width / 2 - k.cx) / k.fx * z, (k.height / 2 - k.cy) / k.fy * z
            x, y = np.meshgrid(np.linspace(-hw, hw, 9) + cx, np.linspace(-hh, hh, 7) + cy)
            self._bg_vertices = np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], 1)
            faces.append(grid_faces(7, 9) + obj.n_vertices)
            uv.append(self._bg_vertices[:, :2] - self._bg_vertices[0, :2])
            rng = np.random.default_rng([cfg.seed, 404])
            mats.append(make_material(NOISE, (6.0, 6.0), tuple(0.35 + 0.1 * rng.random(3)),
                                      tuple(0.7 + 0.1 * rng.random(3)), 0.3)[None])
            face_mat.append(np.full(len(faces[-1]), len(obj.mats), np.int32))
        self.faces = np.ascontiguousarray(np.concatenate(faces), dtype=np.int32)
        self.uv = np.ascontiguousarray(np.concatenate(uv), dtype=np.float64)
        self.face_mat = np.ascontiguousarray(np.concatenate(face_mat), dtype=np.int32)
        self.mats = np.ascontiguousarray(np.concatenate(mats), dtype=np.float64)
        self.texture_table = noise_table(cfg.seed + 7)
        self._cache: OrderedDict[int, RenderLayers] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._area0: np.ndarray | None = None

    # ------------------------------------------------------------------ time and geometry

    @property
    def name(self) -> str:
        """The object name."""
        return self.cfg.name

    @property
    def n_frames(self) -> int:
        """Number of frames."""
        return self.cfg.n_frames

    @property
    def fps(self) -> float:
        """Frame rate, frames/s."""
        return float(self.cfg.fps)

    def timestamp(self, i: int) -> float:
        """Time of frame i in seconds (i / fps)."""
        return i / self.fps

    def _check(self, i: int) -> int:
        if not 0 <= int(i) < self.n_frames:
            raise IndexError(f"frame {i} outside 0..{self.n_frames - 1} of synthetic scene {self.name}")
        return int(i)

    def vertices_at_time(self, t_s: float) -> np.ndarray:
        """Object vertex positions at any time t_s seconds (not only frame times): float64 [V, 3] metres."""
        return self.object.vertices(float(t_s) * self.cfg.speed)

    def vertices_at(self, i: int) -> np.ndarray:
        """Positions of every rendered vertex (object, then background) at frame i: float64 [V_all, 3] metres."""
        v = self.vertices_at_time(self.timestamp(self._check(i)))
        return np.concatenate([v, self._bg_vertices]) if len(self._bg_vertices) else v

    def mesh_at(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The deforming object's surface at frame i: (vertices float32 [V, 3] metres, camera frame;
        faces int32 [F, 3]). The connectivity is the same for every frame; vertex k corresponds over time."""
        v = self.vertices_at_time(self.timestamp(self._check(i)))
        return v.astype(np.float32), self.faces[: self.n_object_faces].copy()

    def surface_samples(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """n random points on the object surface, uniform by area of frame 0's surface.

        Returns (face_ids int32 [n], barycentrics float32 [n, 3]); positions at frame i follow from
        `sample_positions`.
        """
        if self._area0 is None:
            v = self.vertices_at_time(0.0)
            tri = v[self.faces[: self.n_object_faces]]
            self._area0 = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        rng = np.random.default_rng(seed)
        p = self._area0 / self._area0.sum()
        fid = rng.choice(len(p), size=int(n), p=p).astype(np.int32)
        r1, r2 = rng.random(int(n)), rng.random(int(n))
        s = np.sqrt(r1)
        bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1).astype(np.float32)
        return fid, bary

    def sample_positions(self, face_ids: np.ndarray, bary: np.ndarray, i: int) -> np.ndarray:
        """Positions at frame i of surface points given as (face_ids int [n], bary float [n, 3]) on any
        rendered face: float32 [n, 3] metres, camera frame."""
        return self._points(self.vertices_at(i), np.asarray(face_ids), np.asarray(bary)).astype(np.float32)

    def _points(self, verts: np.ndarray, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
        tri = verts[self.faces[face_ids]]  # [n, 3, 3]
        return np.einsum("nk,nkc->nc", bary.astype(np.float64), tri)

    # ------------------------------------------------------------------ rendering

    def layers(self, i: int) -> RenderLayers:
        """The clean render of frame i (cached for the last few frames). Do not modify the arrays."""
        i = self._check(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        v = self.vertices_at(i)
        k = self.intrinsics
        depth, tri, bary = rasterize(v, self.faces, k)
        normals = vertex_normals(v, self.faces)
        color = shade(tri, bary, self.faces, self.uv, normals, self.face_mat, self.mats, self.texture_table, k,
                      np.asarray(self.cfg.light), self.cfg.ambient, self.cfg.background_color)
        mask = (tri >= 0) & (tri < self.n_object_faces)
        out = RenderLayers(depth, color, tri, bary, mask)
        for a in (depth, color, tri, bary, mask):
            a.setflags(write=False)
        self._cache[i] = out
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return out

    def render(self, i: int) -> RGBDFrame:
        """Frame i as an RGBDFrame (mask = object pixels), with sensor noise when cfg.noise.

        Noise is drawn from a generator seeded by (seed, i): frames are bit-identical for the same config,
        whatever order they are rendered in.
        """
        lay = self.layers(i)
        depth, color = lay.depth.copy(), lay.color.copy()
        if self.cfg.noise:
            rng = np.random.default_rng([self.cfg.seed, int(i), 9001])
            depth, color = apply_noise(depth, color, self.cfg.noise_params, rng)
        return RGBDFrame(int(i), self.timestamp(i), color, depth, self.intrinsics, lay.mask.copy(),
                         {"synthetic": self.name, "seed": self.cfg.seed, "noise": self.cfg.noise})

    # ------------------------------------------------------------------ ground truth

    def _pixel_points(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        lay = self.layers(i)
        rows, cols = np.nonzero(lay.tri >= 0)
        f = lay.tri[rows, cols]
        b = lay.bary[rows, cols]
        p_i = self._points(self.vertices_at(i), f, b)
        p_j = p_i if i == j else self._points(self.vertices_at(j), f, b)
        return rows, cols, p_i, p_j

    def scene_flow(self, i: int, j: int) -> np.ndarray:
        """3D motion from frame i to frame j of the surface point seen at each pixel of frame i.

        Returns float32 [H, W, 3] metres (camera frame), NaN where frame i sees no surface. Valid on the
        object and on the (static, flow 0) background plane; use `layers(i).mask` for the object only.
        """
        self._check(j)
        rows, cols, p_i, p_j = self._pixel_points(i, j)
        k = self.intrinsics
        out = np.full((k.height, k.width, 3), np.nan, np.float32)
        out[rows, cols] = p_j - p_i
        return out

    def optical_flow(self, i: int, j: int) -> np.ndarray:
        """Image motion from frame i to frame j: float32 [H, W, 2] pixels (du, dv) = projection at frame j
        of the surface point seen at pixel (u, v) of frame i, minus (u, v). NaN where frame i sees no
        surface. No occlusion test (see `visibility`)."""
        self._check(j)
        rows, cols, _, p_j = self._pixel_points(i, j)
        k = self.intrinsics
        uv, _ = project(p_j, k)
        out = np.full((k.height, k.width, 2), np.nan, np.float32)
        out[rows, cols, 0] = uv[:, 0] - cols
        out[rows, cols, 1] = uv[:, 1] - rows
        return out

    def visibility(self, i: int, j: int, tol: float = 0.01) -> np.ndarray:
        """bool [H, W]: pixels of frame i whose surface point is visible in frame j, i.e. it projects inside
        the image of frame j onto a pixel (nearest) whose clean depth is within `tol` metres of the point's
        depth at j. Cheap, and approximate by one pixel at depth edges."""
        self._check(j)
        rows, cols, _, p_j = self._pixel_points(i, j)
        k = self.intrinsics
        uv, z = project(p_j, k)
        lay_j = self.layers(j)
        with np.errstate(invalid="ignore"):
            uu, vv = np.rint(uv[:, 0]), np.rint(uv[:, 1])
            inside = (uu >= 0) & (uu < k.width) & (vv >= 0) & (vv < k.height)
        ui, vi = uu[inside].astype(int), vv[inside].astype(int)
        dj = lay_j.depth[vi, ui].astype(np.float64)
        ok = (dj > 0) & (np.abs(dj - z[inside]) < tol)
        vis = np.zeros((k.height, k.width), bool)
        idx = np.nonzero(inside)[0][ok]
        vis[rows[idx], cols[idx]] = True
        return vis


def make_scene(cfg: SceneConfig) -> SyntheticScene:
    """Build the synthetic scene described by `cfg`."""
    return SyntheticScene(cfg)
