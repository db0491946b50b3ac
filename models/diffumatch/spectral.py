"""Spectral machinery: Laplacian + mass, eigenbasis (cached on disk), gradients, geodesics, WKS / HKS.

Every shape is first scaled to unit surface area (the standard normalisation for functional maps, so that
maps between shapes of different size are comparable); `SpectralShape.scale` records the factor, and
geodesic distances computed on the normalised shape are therefore already divided by sqrt(area).

Expensive operators are computed once per shape and cached on disk by a content hash of the (normalised)
vertices, faces and options, in `cache_dir()`: env NRSTUDIO_CACHE, default ~/.cache/nrstudio (the layout
follows diffusion-net's operator cache).
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
from scipy.spatial import cKDTree

from fusion.atomic import write_bytes_atomic
from fusion.errors import InputError

_CACHE_VERSION = "v2"


def cache_dir() -> Path:
    """The operator cache folder: env NRSTUDIO_CACHE, default ~/.cache/nrstudio; `spectral/` inside it."""
    root = os.environ.get("NRSTUDIO_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "nrstudio"
    return base / "spectral"


@dataclass(frozen=True)
class SpectralConfig:
    """Options of the spectral pre-processing of one shape."""

    k: int = 120
    """number of Laplace-Beltrami eigenpairs to compute (ZoomOut needs its final size)."""
    n_neighbors: int = 30
    """neighbours of the point-cloud Laplacian (robust_laplacian.point_cloud_laplacian)."""
    use_cache: bool = True
    """read / write the on-disk operator cache."""


@dataclass
class SpectralShape:
    """A shape with its spectral operators; all geometry is scaled to unit area.

    verts float64 [V, 3] (unit-area scaled), faces int64 [F, 3] (F = 0 for a point cloud),
    evals float64 [k] (ascending, evals[0] ~ 0), evecs float64 [V, k] (mass-orthonormal:
    evecs.T @ diag(mass) @ evecs = I), mass float64 [V] (lumped vertex areas, sum = 1),
    grad_x / grad_y sparse [V, V] (per-vertex tangent-plane gradient operators), frames float64 [V, 3, 3]
    (tangent x, tangent y, normal per vertex), scale float (original length = verts / scale).

    derived: quantities computed from this shape alone, kept for reuse and keyed by what they depend on
    (e.g. the WKS orientation operators of the matcher, ~0.3 s on 5k vertices, asked for several times
    per pair); not part of the shape's data (no effect on equality or repr).
    """

    verts: np.ndarray
    faces: np.ndarray
    evals: np.ndarray
    evecs: np.ndarray
    mass: np.ndarray
    grad_x: sp.csr_matrix
    grad_y: sp.csr_matrix
    frames: np.ndarray
    scale: float
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n(self) -> int:
        """Number of vertices."""
        return len(self.verts)

    @property
    def is_cloud(self) -> bool:
        """True for a point cloud (no faces)."""
        return len(self.faces) == 0


def laplacian_mass(verts: np.ndarray, faces: np.ndarray, n_neighbors: int = 30) -> tuple[sp.csc_matrix, np.ndarray]:
    """The (positive semi-definite) Laplacian L [V, V] and lumped mass [V] of a mesh or point cloud.

    Uses robust_laplacian (intrinsic Delaunay / tufted cover); a point cloud (faces empty) uses the
    point-cloud Laplacian with `n_neighbors` neighbours. Units: L ~ 1 / length^0, mass ~ length^2.
    """
    import robust_laplacian

    v = np.ascontiguousarray(verts, dtype=np.float64)
    if len(faces) == 0:
        L, M = robust_laplacian.point_cloud_laplacian(v, n_neighbors=min(n_neighbors, len(v) - 1))
    else:
        L, M = robust_laplacian.mesh_laplacian(v, np.ascontiguousarray(faces, dtype=np.int64))
    return sp.csc_matrix(L), np.asarray(M.diagonal(), dtype=np.float64)


def eigenbasis(L: sp.spmatrix, mass: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest generalised eigenpairs L phi = lambda M phi (scipy eigsh, shift-invert).

    Returns (evals float64 [k] ascending, clipped at 0; evecs float64 [V, k], M-orthonormal).
    """
    from threadpoolctl import threadpool_limits

    n = L.shape[0]
    k = min(k, n - 2)
    M = sp.diags(mass)
    eps = 1e-8
    # ARPACK's many small BLAS calls get far slower with a multi-threaded BLAS on a busy machine
    with threadpool_limits(limits=1, user_api="blas"):
        for attempt in range(3):
            try:
                evals, evecs = eigsh(L + eps * M, k=k, M=M, sigma=-0.01 * 10**attempt, which="LM")
                break
            except RuntimeError:  # factorisation trouble: regularise more
                eps *= 100
        else:  # pragma: no cover - numerical failure
            raise InputError("eigendecomposition failed (degenerate mesh?)")
    order = np.argsort(evals)
    evals = np.clip(evals[order] - eps, 0.0, None)
    evecs = evecs[:, order]
    # make every vector exactly M-orthonormal and fix the sign convention (largest-magnitude entry > 0)
    norms = np.sqrt(np.einsum("vk,v,vk->k", evecs, mass, evecs))
    evecs = evecs / norms
    idx = np.argmax(np.abs(evecs), axis=0)
    evecs = evecs * np.sign(evecs[idx, np.arange(evecs.shape[1])])
    return evals, evecs


def vertex_normals(verts: np.ndarray, faces: np.ndarray, n_neighbors: int = 30) -> np.ndarray:
    """Unit vertex normals float64 [V, 3]: area-weighted face normals, or local PCA for a cloud."""
    if len(faces):
        tri = verts[faces]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n = np.zeros_like(verts)
        for j in range(3):
            np.add.at(n, faces[:, j], fn)
    else:
        _, nb = cKDTree(verts).query(verts, k=min(n_neighbors, len(verts)))
        pts = verts[nb] - verts[nb].mean(axis=1, keepdims=True)
        cov = np.einsum("vni,vnj->vij", pts, pts)
        _, vec = np.linalg.eigh(cov)
        n = vec[:, :, 0]
        # orient away from the centroid (a heuristic; signs only matter for the gradient frame handedness)
        out = verts - verts.mean(axis=0)
        n = n * np.where(np.einsum("vi,vi->v", n, out) < 0, -1.0, 1.0)[:, None]
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    bad = norm[:, 0] < 1e-12
    n[bad] = np.array([0.0, 0.0, 1.0])
    norm[bad] = 1.0
    return n / norm


def tangent_frames(normals: np.ndarray) -> np.ndarray:
    """Per-vertex orthonormal frames float64 [V, 3, 3]: rows (tangent x, tangent y, normal)."""
    n = normals
    ref = np.where(np.abs(n[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    tx = ref - np.einsum("vi,vi->v", ref, n)[:, None] * n
    tx /= np.linalg.norm(tx, axis=1, keepdims=True)
    ty = np.cross(n, tx)
    return np.stack([tx, ty, n], axis=1)


def gradient_operators(verts: np.ndarray, faces: np.ndarray, frames: np.ndarray, n_neighbors: int = 12) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Per-vertex gradient operators (grad_x, grad_y) sparse [V, V] in the tangent frames.

    For vertex i with neighbours j (mesh 1-ring, or k nearest points for a cloud), the gradient of a
    scalar field f is the least-squares solution g of  (p_j - p_i) projected on the tangent plane . g =
    f_j - f_i  (diffusion-net's construction). Returns the x and y components as linear operators.
    """
    V = len(verts)
    if len(faces):
        e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        e = np.concatenate([e, e[:, ::-1]])
        e = np.unique(e, axis=0)
        src, dst = e[:, 0], e[:, 1]
    else:
        k = min(n_neighbors + 1, V)
        _, nb = cKDTree(verts).query(verts, k=k)
        src = np.repeat(np.arange(V), k - 1)
        dst = nb[:, 1:].reshape(-1)
    d = verts[dst] - verts[src]
    dx = np.einsum("ei,ei->e", d, frames[src, 0])
    dy = np.einsum("ei,ei->e", d, frames[src, 1])
    # normal equations per vertex: (sum D^T D + reg) g = sum D^T (f_j - f_i)
    ata = np.zeros((V, 2, 2))
    np.add.at(ata, src, np.stack([np.stack([dx * dx, dx * dy], -1), np.stack([dx * dy, dy * dy], -1)], -2))
    reg = 1e-6 * (np.trace(ata, axis1=1, axis2=2) + 1e-12)
    ata[:, 0, 0] += reg
    ata[:, 1, 1] += reg
    inv = np.linalg.inv(ata)
    w = np.einsum("eab,eb->ea", inv[src], np.stack([dx, dy], -1))  # [E, 2]: coefficient of (f_j - f_i)
    rows = np.concatenate([src, src])
    cols = np.concatenate([dst, src])
    gx = sp.csr_matrix((np.concatenate([w[:, 0], -w[:, 0]]), (rows, cols)), shape=(V, V))
    gy = sp.csr_matrix((np.concatenate([w[:, 1], -w[:, 1]]), (rows, cols)), shape=(V, V))
    return gx, gy


def surface_area(verts: np.ndarray, faces: np.ndarray, n_neighbors: int = 30) -> float:
    """Total area of a mesh (sum of triangle areas) or, for a cloud, the sum of its Laplacian mass."""
    if len(faces):
        tri = verts[faces]
        return float(0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum())
    return float(laplacian_mass(verts, faces, n_neighbors)[1].sum())


def _hash(verts: np.ndarray, faces: np.ndarray, cfg: SpectralConfig) -> str:
    h = hashlib.sha1()
    h.update(_CACHE_VERSION.encode())
    h.update(np.ascontiguousarray(verts, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    h.update(f"{cfg.k}-{cfg.n_neighbors}".encode())
    return h.hexdigest()


def _check(verts: np.ndarray, faces: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) < 10:
        raise InputError(f"{name}: a shape needs at least 10 vertices with 3 coordinates (got {v.shape})")
    if not np.isfinite(v).all():
        raise InputError(f"{name}: NaN or infinite coordinates")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise InputError(f"{name}: face indices out of range")
    return v, f


def prepare_shape(verts: np.ndarray, faces: np.ndarray | None = None, cfg: SpectralConfig = SpectralConfig(), name: str = "shape") -> SpectralShape:
    """Normalise a mesh / cloud to unit area and compute (or load from the cache) its spectral operators.

    verts float [V, 3] any unit; faces int [F, 3] or None / empty for a point cloud. Raises InputError
    for fewer than 10 vertices, non-finite coordinates or out-of-range faces; `name` goes in the message.
    """
    v, f = _check(verts, np.zeros((0, 3)) if faces is None else faces, name)
    if len(f):  # drop degenerate faces, keep vertex order
        tri = v[f]
        a = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        f = f[a > 1e-14 * max(a.max(), 1e-300)]
    area = surface_area(v - v.mean(0), f, cfg.n_neighbors)
    if not area > 0:
        raise InputError(f"{name}: the shape has zero area")
    scale = 1.0 / np.sqrt(area)
    v = (v - v.mean(axis=0)) * scale
    key = _hash(v, f, cfg)
    path = cache_dir() / f"{key}.npz"
    if cfg.use_cache and path.exists():
        try:
            z = np.load(path)
            gx = sp.csr_matrix((z["gx_data"], z["g_indices"], z["g_indptr"]), shape=(len(v), len(v)))
            gy = sp.csr_matrix((z["gy_data"], z["g_indices"], z["g_indptr"]), shape=(len(v), len(v)))
            return SpectralShape(v, f, z["evals"], z["evecs"], z["mass"], gx, gy, z["frames"], float(scale))
        except Exception:  # a corrupt cache entry: recompute
            pass
    L, mass = laplacian_mass(v, f, cfg.n_neighbors)
    evals, evecs = eigenbasis(L, mass, cfg.k)
    frames = tangent_frames(vertex_normals(v, f, cfg.n_neighbors))
    gx, gy = gradient_operators(v, f, frames)
    gx.sort_indices()
    gy = sp.csr_matrix(gy)
    gy.sort_indices()
    shape = SpectralShape(v, f, evals, evecs, mass, gx, gy, frames, float(scale))
    if cfg.use_cache:
        # gx and gy share their sparsity pattern (same rows/cols construction)
        buf = io.BytesIO()
        np.savez(buf, evals=evals, evecs=evecs, mass=mass, frames=frames, gx_data=gx.data, gy_data=gy.data,
                 g_indices=gx.indices, g_indptr=gx.indptr)
        if np.array_equal(gx.indices, gy.indices) and np.array_equal(gx.indptr, gy.indptr):
            try:
                write_bytes_atomic(path, buf.getvalue())
            except OSError:  # a read-only cache is not an error
                pass
    return shape


# ---------------------------------------------------------------------------------------------- geodesics


class GeodesicOracle:
    """Geodesic distances on one shape by the heat method (potpourri3d), solver factorised once.

    `from_vertex(i)` -> float64 [V] distances from vertex i (in the shape's own units: for a
    SpectralShape, unit-area units, i.e. already divided by sqrt(area)).
    """

    def __init__(self, verts: np.ndarray, faces: np.ndarray):
        import potpourri3d as pp3d

        v = np.ascontiguousarray(verts, dtype=np.float64)
        if len(faces):
            self._solver = pp3d.MeshHeatMethodDistanceSolver(v, np.ascontiguousarray(faces, dtype=np.int64))
        else:
            self._solver = pp3d.PointCloudHeatSolver(v)

    def from_vertex(self, i: int) -> np.ndarray:
        """Distances float64 [V] from vertex i to every vertex."""
        return np.asarray(self._solver.compute_distance(int(i)), dtype=np.float64)


# --------------------------------------------------------------------------------------------- descriptors


def wks(evals: np.ndarray, evecs: np.ndarray, n_energies: int = 100, scaled: bool = True) -> np.ndarray:
    """Wave kernel signature float64 [V, n_energies] (Aubry et al. 2011), energies spread log-uniformly.

    evals [k] >= 0, evecs [V, k]; the constant eigenpair (evals ~ 0) is dropped. With `scaled`, each
    energy column is divided by its total filter weight (the pyFM `auto_WKS` convention).
    """
    keep = evals > 1e-8 * evals.max()
    ev, phi = np.abs(evals[keep]), evecs[:, keep]
    e_min, e_max = np.log(ev[0]), np.log(ev[-1])
    sigma = 7 * (e_max - e_min) / n_energies
    e_min, e_max = e_min + 2 * sigma, e_max - 2 * sigma
    energies = np.linspace(e_min, e_max, n_energies)
    coefs = np.exp(-np.square(energies[:, None] - np.log(ev)[None, :]) / (2 * sigma**2))  # [E, k]
    out = np.einsum("tk,nk->nt", coefs, np.square(phi))
    if scaled:
        out = out / coefs.sum(1)[None, :]
    return out


def unit_wks(s: "SpectralShape", k: int, n_energies: int) -> np.ndarray:
    """`wks` from the first k eigenpairs of s, each energy scaled to unit L2(M) norm on s: float64
    [V, n_energies]. The descriptor the feature net gets as input, the orientation term is built from and
    the WKS baseline solves with."""
    w = wks(s.evals[:k], s.evecs[:, :k], n_energies)
    return w / np.sqrt((s.mass[:, None] * w**2).sum(0, keepdims=True))


def hks(evals: np.ndarray, evecs: np.ndarray, n_times: int = 16, scaled: bool = True) -> np.ndarray:
    """Heat kernel signature float64 [V, n_times] at times log-spaced in [4 ln10 / l_max, 4 ln10 / l_1]."""
    keep = evals > 1e-8 * evals.max()
    ev, phi = evals[keep], evecs[:, keep]
    t = np.geomspace(4 * np.log(10) / ev[-1], 4 * np.log(10) / ev[0], n_times)
    coefs = np.exp(-t[:, None] * ev[None, :])  # [T, k]
    out = np.einsum("tk,nk->nt", coefs, np.square(phi))
    if scaled:
        out = out / coefs.sum(1)[None, :]
    return out
