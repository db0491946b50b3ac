"""Z-buffer triangle rasteriser and procedural-texture shading (numba), with plain numpy references.

Conventions (shared by the fast kernels and the references):

* Vertices are camera-frame points (OpenCV: x right, y down, z forward), metres, float64 [V, 3].
* A pixel (u, v) = (column, row) is covered by a triangle when its centre, at integer coordinates,
  lies inside or on the border of the projected triangle (both windings are drawn: no back-face
  culling, so open surfaces such as a cloth are visible from both sides).
* Triangles with a vertex closer than `NEAR` (5 cm) are skipped (no clipping; the scenes keep
  everything far in front of the camera).
* Depth is the z of the surface point seen through the pixel centre (perspective-correct: 1/z is
  interpolated linearly in the image), not the ray length. Ties keep the first triangle drawn.
* Barycentrics are perspective-correct: the surface point is sum_k bary[k] * vertex[faces[f, k]].

Materials: a float64 table [M, MAT_COLS], one row per material:
`[kind, freq_u, freq_v, a_r, a_g, a_b, b_r, b_g, b_b, detail]` with colours in [0, 1] and kind one of
CHECKER, STRIPES, NOISE, or VERTEX (the albedo is the interpolated per-vertex colour). The pattern is a function of the interpolated texture coordinates (u, v), so
the texture moves with the surface and optical flow is well defined; `detail` modulates the albedo
with fine value noise so that uniform checker cells still carry texture. Shading is Lambert with a
directional light plus ambient, two-sided (normals are flipped toward the camera).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from fusion.camera import Intrinsics

NEAR = 0.05
CHECKER, STRIPES, NOISE, VERTEX = 0, 1, 2, 3
MAT_COLS = 10


def make_material(kind: int, freq: tuple[float, float], color_a: tuple[float, float, float],
                  color_b: tuple[float, float, float], detail: float = 0.25) -> np.ndarray:
    """One material row (float64 [MAT_COLS]); colours are RGB in [0, 1], freq in pattern periods per uv unit."""
    return np.array([kind, freq[0], freq[1], *color_a, *color_b, detail], dtype=np.float64)


def noise_table(seed: int, size: int = 64) -> np.ndarray:
    """The lattice of value noise used by the NOISE pattern and the detail modulation: float64 [size, size] in [0, 1]."""
    return np.random.default_rng(seed).random((size, size))


# --------------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _rasterize_nb(verts: np.ndarray, faces: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                  width: int, height: int, depth: np.ndarray, tri: np.ndarray, bary: np.ndarray) -> None:
    zbuf = np.full((height, width), np.inf)
    for f in range(faces.shape[0]):
        i0 = faces[f, 0]
        i1 = faces[f, 1]
        i2 = faces[f, 2]
        z0 = verts[i0, 2]
        z1 = verts[i1, 2]
        z2 = verts[i2, 2]
        if z0 < NEAR or z1 < NEAR or z2 < NEAR:
            continue
        x0 = fx * verts[i0, 0] / z0 + cx
        y0 = fy * verts[i0, 1] / z0 + cy
        x1 = fx * verts[i1, 0] / z1 + cx
        y1 = fy * verts[i1, 1] / z1 + cy
        x2 = fx * verts[i2, 0] / z2 + cx
        y2 = fy * verts[i2, 1] / z2 + cy
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if abs(area) < 1e-12:
            continue
        umin = max(int(np.ceil(min(x0, min(x1, x2)))), 0)
        umax = min(int(np.floor(max(x0, max(x1, x2)))), width - 1)
        vmin = max(int(np.ceil(min(y0, min(y1, y2)))), 0)
        vmax = min(int(np.floor(max(y0, max(y1, y2)))), height - 1)
        if umin > umax or vmin > vmax:
            continue
        iz0 = 1.0 / z0
        iz1 = 1.0 / z1
        iz2 = 1.0 / z2
        for v in range(vmin, vmax + 1):
            py = float(v)
            for u in range(umin, umax + 1):
                px = float(u)
                l0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area
                l1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area
                l2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) / area
                if l0 < 0.0 or l1 < 0.0 or l2 < 0.0:
                    continue
                w0 = l0 * iz0
                w1 = l1 * iz1
                w2 = l2 * iz2
                s = w0 + w1 + w2
                z = 1.0 / s
                if z < zbuf[v, u]:
                    zbuf[v, u] = z
                    depth[v, u] = z
                    tri[v, u] = f
                    bary[v, u, 0] = w0 / s
                    bary[v, u, 1] = w1 / s
                    bary[v, u, 2] = w2 / s


@njit(cache=True, nogil=True)
def _lattice(table: np.ndarray, x: float, y: float) -> float:
    n = table.shape[0]
    xf = np.floor(x)
    yf = np.floor(y)
    tx = x - xf
    ty = y - yf
    tx = tx * tx * (3.0 - 2.0 * tx)
    ty = ty * ty * (3.0 - 2.0 * ty)
    ix = int(xf) % n
    iy = int(yf) % n
    jx = (ix + 1) % n
    jy = (iy + 1) % n
    a = table[iy, ix] * (1.0 - tx) + table[iy, jx] * tx
    b = table[jy, ix] * (1.0 - tx) + table[jy, jx] * tx
    return a * (1.0 - ty) + b * ty


@njit(cache=True, nogil=True)
def _fbm(table: np.ndarray, x: float, y: float) -> float:
    s = _lattice(table, x, y)
    s += 0.5 * _lattice(table, 2.0 * x + 31.7, 2.0 * y + 11.3)
    s += 0.25 * _lattice(table, 4.0 * x + 3.1, 4.0 * y + 47.9)
    return s / 1.75


@njit(cache=True, nogil=True)
def _shade_nb(tri: np.ndarray, bary: np.ndarray, faces: np.ndarray, uv: np.ndarray, normals: np.ndarray,
              face_mat: np.ndarray, mats: np.ndarray, table: np.ndarray, vcol: np.ndarray, fx: float, fy: float,
              cx: float, cy: float, light: np.ndarray, ambient: float, bg: np.ndarray, color: np.ndarray) -> None:
    h, w = tri.shape
    for v in range(h):
        for u in range(w):
            f = tri[v, u]
            if f < 0:
                color[v, u, 0] = bg[0]
                color[v, u, 1] = bg[1]
                color[v, u, 2] = bg[2]
                continue
            b0 = float(bary[v, u, 0])
            b1 = float(bary[v, u, 1])
            b2 = float(bary[v, u, 2])
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            tu = b0 * uv[i0, 0] + b1 * uv[i1, 0] + b2 * uv[i2, 0]
            tv = b0 * uv[i0, 1] + b1 * uv[i1, 1] + b2 * uv[i2, 1]
            nx = b0 * normals[i0, 0] + b1 * normals[i1, 0] + b2 * normals[i2, 0]
            ny = b0 * normals[i0, 1] + b1 * normals[i1, 1] + b2 * normals[i2, 1]
            nz = b0 * normals[i0, 2] + b1 * normals[i1, 2] + b2 * normals[i2, 2]
            nn = np.sqrt(nx * nx + ny * ny + nz * nz)
            if nn > 0.0:
                nx /= nn
                ny /= nn
                nz /= nn
            rx = (u - cx) / fx
            ry = (v - cy) / fy
            if nx * rx + ny * ry + nz > 0.0:
                nx = -nx
                ny = -ny
                nz = -nz
            lam = nx * light[0] + ny * light[1] + nz * light[2]
            if lam < 0.0:
                lam = 0.0
            sh = ambient + (1.0 - ambient) * lam
            m = face_mat[f]
            kind = int(mats[m, 0])
            pu = tu * mats[m, 1]
            pv = tv * mats[m, 2]
            if kind == 0:
                t = float((int(np.floor(pu)) + int(np.floor(pv))) % 2)
            elif kind == 1:
                t = 0.5 + 0.5 * np.sin(2.0 * np.pi * (pu + pv))
            elif kind == 2:
                t = _fbm(table, pu, pv)
            else:
                t = 0.0
            d = _fbm(table, 4.0 * pu + 17.3, 4.0 * pv + 5.1)
            mod = 1.0 + mats[m, 9] * (2.0 * d - 1.0)
            for c in range(3):
                if kind == 3:
                    a = b0 * vcol[i0, c] + b1 * vcol[i1, c] + b2 * vcol[i2, c]
                else:
                    a = mats[m, 3 + c] * (1.0 - t) + mats[m, 6 + c] * t
                val = a * (mod * sh) * 255.0 + 0.5
                if val < 0.0:
                    val = 0.0
                if val > 255.0:
                    val = 255.0
                color[v, u, c] = np.uint8(int(val))


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def _check_mesh(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    verts = np.ascontiguousarray(verts, dtype=np.float64)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got {verts.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError("faces index outside the vertex array")
    return verts, faces


def rasterize(verts: np.ndarray, faces: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer rasterisation of a triangle mesh (numba).

    verts: float [V, 3] camera-frame metres; faces: int [F, 3]; k: the camera.
    Returns (depth float32 [H, W] metres, 0 = background; tri int32 [H, W], -1 = background;
    bary float32 [H, W, 3] perspective-correct barycentrics, 0 on background).
    """
    verts, faces = _check_mesh(verts, faces)
    h, w = int(k.height), int(k.width)
    depth = np.zeros((h, w), np.float32)
    tri = np.full((h, w), -1, np.int32)
    bary = np.zeros((h, w, 3), np.float32)
    _rasterize_nb(verts, faces, float(k.fx), float(k.fy), float(k.cx), float(k.cy), w, h, depth, tri, bary)
    return depth, tri, bary


def shade(tri: np.ndarray, bary: np.ndarray, faces: np.ndarray, uv: np.ndarray, normals: np.ndarray,
          face_mat: np.ndarray, mats: np.ndarray, table: np.ndarray, k: Intrinsics, light: np.ndarray,
          ambient: float = 0.35, bg: tuple[int, int, int] = (40, 40, 40),
          vertex_colors: np.ndarray | None = None) -> np.ndarray:
    """Colour of every pixel from its triangle id and barycentrics (numba).

    tri int32 [H, W] (-1 = background), bary float32 [H, W, 3], faces int [F, 3], uv float [V, 2] texture
    coordinates, normals float [V, 3] unit vertex normals (camera frame), face_mat int [F] material
    row per face, mats float64 [M, MAT_COLS], table float64 [N, N] noise lattice, light float [3] unit
    direction toward the light (camera frame), vertex_colors float [V, 3] RGB in [0, 1] (used by VERTEX
    materials; None = none). Returns color uint8 [H, W, 3] RGB.
    """
    h, w = tri.shape
    vcol = _vertex_colors(vertex_colors, len(uv))
    color = np.empty((h, w, 3), np.uint8)
    light = np.asarray(light, np.float64)
    light = light / np.linalg.norm(light)
    _shade_nb(np.ascontiguousarray(tri, np.int32), np.ascontiguousarray(bary, np.float32),
              np.ascontiguousarray(faces, np.int32), np.ascontiguousarray(uv, np.float64),
              np.ascontiguousarray(normals, np.float64), np.ascontiguousarray(face_mat, np.int32),
              np.ascontiguousarray(mats, np.float64), np.ascontiguousarray(table, np.float64), vcol,
              float(k.fx), float(k.fy), float(k.cx), float(k.cy), light, float(ambient),
              np.asarray(bg, np.uint8), color)
    return color


def _vertex_colors(vertex_colors: np.ndarray | None, n: int) -> np.ndarray:
    if vertex_colors is None:
        return np.zeros((n, 3))
    vc = np.ascontiguousarray(vertex_colors, np.float64)
    if vc.shape != (n, 3):
        raise ValueError(f"vertex_colors must be [{n}, 3], got {vc.shape}")
    return vc


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals: verts float [V, 3], faces int [F, 3] -> float64 [V, 3]."""
    v = np.asarray(verts, np.float64)
    tri = v[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = np.zeros_like(v)
    idx = np.asarray(faces).ravel()
    for c in range(3):
        n[:, c] = np.bincount(idx, weights=np.repeat(fn[:, c], 3), minlength=len(v))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.where(norm > 0, norm, 1.0)


# --------------------------------------------------------------------------------------------------
# plain numpy references (slow; tiny images in tests)
# --------------------------------------------------------------------------------------------------


def rasterize_reference(verts: np.ndarray, faces: np.ndarray, k: Intrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plain numpy version of `rasterize` (same outputs, same conventions), one triangle at a time."""
    verts, faces = _check_mesh(verts, faces)
    h, w = int(k.height), int(k.width)
    zbuf = np.full((h, w), np.inf)
    tri = np.full((h, w), -1, np.int32)
    bary = np.zeros((h, w, 3), np.float64)
    for f, (a, b, c) in enumerate(faces):
        p = verts[[a, b, c]]
        z = p[:, 2]
        if np.any(z < NEAR):
            continue
        x = k.fx * p[:, 0] / z + k.cx
        y = k.fy * p[:, 1] / z + k.cy
        area = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
        if abs(area) < 1e-12:
            continue
        u0, u1 = max(int(np.ceil(x.min())), 0), min(int(np.floor(x.max())), w - 1)
        v0, v1 = max(int(np.ceil(y.min())), 0), min(int(np.floor(y.max())), h - 1)
        if u0 > u1 or v0 > v1:
            continue
        uu, vv = np.meshgrid(np.arange(u0, u1 + 1, dtype=np.float64), np.arange(v0, v1 + 1, dtype=np.float64))
        l0 = ((x[2] - x[1]) * (vv - y[1]) - (y[2] - y[1]) * (uu - x[1])) / area
        l1 = ((x[0] - x[2]) * (vv - y[2]) - (y[0] - y[2]) * (uu - x[2])) / area
        l2 = ((x[1] - x[0]) * (vv - y[0]) - (y[1] - y[0]) * (uu - x[0])) / area
        inside = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        iz = 1.0 / z
        wts = np.stack([l0 * iz[0], l1 * iz[1], l2 * iz[2]], axis=-1)
        s = wts[..., 0] + wts[..., 1] + wts[..., 2]  # this order, as in the kernel (numpy's sum may reorder)
        with np.errstate(divide="ignore"):
            zz = 1.0 / s
        box = (slice(v0, v1 + 1), slice(u0, u1 + 1))
        closer = inside & (zz < zbuf[box])
        zbuf[box][closer] = zz[closer]
        tri[box][closer] = f
        bary[box][closer] = wts[closer] / s[closer, None]
    depth = np.where(tri >= 0, zbuf, 0.0).astype(np.float32)
    return depth, tri, bary.astype(np.float32)


def _lattice_ref(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = table.shape[0]
    xf, yf = np.floor(x), np.floor(y)
    tx, ty = x - xf, y - yf
    tx = tx * tx * (3 - 2 * tx)
    ty = ty * ty * (3 - 2 * ty)
    ix, iy = np.mod(xf.astype(np.int64), n), np.mod(yf.astype(np.int64), n)
    jx, jy = (ix + 1) % n, (iy + 1) % n
    a = table[iy, ix] * (1 - tx) + table[iy, jx] * tx
    b = table[jy, ix] * (1 - tx) + table[jy, jx] * tx
    return a * (1 - ty) + b * ty


def _fbm_ref(table: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    s = _lattice_ref(table, x, y)
    s = s + 0.5 * _lattice_ref(table, 2 * x + 31.7, 2 * y + 11.3)
    s = s + 0.25 * _lattice_ref(table, 4 * x + 3.1, 4 * y + 47.9)
    return s / 1.75


def shade_reference(tri: np.ndarray, bary: np.ndarray, faces: np.ndarray, uv: np.ndarray, normals: np.ndarray,
                    face_mat: np.ndarray, mats: np.ndarray, table: np.ndarray, k: Intrinsics, light: np.ndarray,
                    ambient: float = 0.35, bg: tuple[int, int, int] = (40, 40, 40),
                    vertex_colors: np.ndarray | None = None) -> np.ndarray:
    """Plain numpy version of `shade` (same arguments and output)."""
    h, w = tri.shape
    color = np.empty((h, w, 3), np.uint8)
    color[:] = np.asarray(bg, np.uint8)
    vv, uu = np.nonzero(tri >= 0)
    f = tri[vv, uu]
    b = bary[vv, uu].astype(np.float64)
    fv = np.asarray(faces)[f]
    tuv = np.einsum("nk,nkc->nc", b, np.asarray(uv, np.float64)[fv])
    n = np.einsum("nk,nkc->nc", b, np.asarray(normals, np.float64)[fv])
    nn = np.linalg.norm(n, axis=1, keepdims=True)
    n = n / np.where(nn > 0, nn, 1.0)
    ray = np.stack([(uu - k.cx) / k.fx, (vv - k.cy) / k.fy, np.ones(len(uu))], axis=1)
    n = np.where(((n * ray).sum(1) > 0)[:, None], -n, n)
    light = np.asarray(light, np.float64) / np.linalg.norm(light)
    lam = np.clip(n @ light, 0.0, None)
    sh = ambient + (1 - ambient) * lam
    m = np.asarray(mats)[np.asarray(face_mat)[f]]
    pu, pv = tuv[:, 0] * m[:, 1], tuv[:, 1] * m[:, 2]
    kind = m[:, 0].astype(int)
    t = np.where(kind == CHECKER, np.mod(np.floor(pu).astype(np.int64) + np.floor(pv).astype(np.int64), 2).astype(float),
                 np.where(kind == STRIPES, 0.5 + 0.5 * np.sin(2 * np.pi * (pu + pv)), _fbm_ref(table, pu, pv)))
    d = _fbm_ref(table, 4 * pu + 17.3, 4 * pv + 5.1)
    mod = 1 + m[:, 9] * (2 * d - 1)
    t = np.where(kind == VERTEX, 0.0, t)
    alb = m[:, 3:6] * (1 - t[:, None]) + m[:, 6:9] * t[:, None]
    vc = np.einsum("nk,nkc->nc", b, _vertex_colors(vertex_colors, len(uv))[fv])
    alb = np.where((kind == VERTEX)[:, None], vc, alb)
    val = np.clip(alb * (mod * sh)[:, None] * 255.0 + 0.5, 0, 255)
    color[vv, uu] = val.astype(np.uint8)
    return color
