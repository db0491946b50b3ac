"""Numba CPU kernels of the block-sparse TSDF volume (the fast path; `reference.py` holds the plain numpy one).

Storage (see `fusion.tsdf.volume`): the volume is a dense index of blocks over its bounds
(`index` int32 [BX, BY, BZ], -1 = not allocated) and a pool of allocated blocks; block `b` has integer
block coordinates `coords[b]` and per-voxel arrays `tsdf[b, v]`, `weight[b, v]` (float32),
`color[b, v, 3]` (uint8), skinning `anchors[b, v, 4]` (int32, -1 = none) and `skin_w[b, v, 4]` (float32).
Voxel `v = (i * bs + j) * bs + k` of block (bx, by, bz) has global index (bx*bs+i, by*bs+j, bz*bs+k) and
its centre at `origin + (global + 0.5) * voxel_size` (metres, canonical frame).

The forward warp W(p) = sum_k w_k (R_k (p - g_k) + g_k + t_k) (NNRT eq. 2, defined in `fusion.warp`) is
evaluated in float32 through per-node affine maps (`affine_maps`; 1.7x faster than `fusion.warp.warp_point_nb`
in the integration loop, and tested against `fusion.warp.warp_points_np`); the approximate inverse warp used
for allocation blends per-node inverse affine maps.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import numba
import numpy as np
from numba import njit, prange



@contextlib.contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """Run the enclosed numba parallel kernels on `n` threads (0: numba's default); restores the previous
    setting (numba's thread count is per calling thread)."""
    old = numba.get_num_threads()
    want = numba.config.NUMBA_NUM_THREADS if n <= 0 else min(int(n), numba.config.NUMBA_NUM_THREADS)
    if want == old:
        yield
        return
    numba.set_num_threads(want)
    try:
        yield
    finally:
        numba.set_num_threads(old)


# ----------------------------------------------------------------------------------------------------------
# integration


def affine_maps(nodes: np.ndarray, rotations: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """Per-node affine maps aff[n] = [R_n | g_n + t_n - R_n g_n] (float32 [N, 3, 4]).

    With them the warp W(p) = sum_k w_k (R_k (p - g_k) + g_k + t_k) (NNRT eq. 2, `fusion.warp`) is the
    algebraically identical sum_k w_k aff[k] @ [p, 1], one 3x4 product per anchor in the hot loops.
    nodes float [N, 3] m, rotations float [N, 3, 3], translations float [N, 3] m.
    """
    g = np.asarray(nodes, np.float64)
    r = np.asarray(rotations, np.float64)
    aff = np.empty((len(g), 3, 4), np.float32)
    aff[:, :, :3] = r
    aff[:, :, 3] = g + np.asarray(translations, np.float64) - np.einsum("nij,nj->ni", r, g)
    return aff


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def integrate_blocks(
    active: np.ndarray,
    coords: np.ndarray,
    tsdf: np.ndarray,
    weight: np.ndarray,
    color: np.ndarray,
    anchors: np.ndarray,
    skin_w: np.ndarray,
    aff: np.ndarray,
    use_warp: bool,
    depth: np.ndarray,
    image: np.ndarray,
    use_color: bool,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    origin: np.ndarray,
    voxel: float,
    bs: int,
    trunc: float,
    max_weight: float,
    dmin: float,
    dmax: float,
    check_pts: np.ndarray,
    check_pix: np.ndarray,
    check_stride: int,
    check_dist: float,
    tsdf_mesh: np.ndarray,
    weight_mesh: np.ndarray,
    mesh_trunc: float,
    carve: np.ndarray,
    carve_weight: float,
) -> int:
    """Projective TSDF update of the voxels of the blocks `active` (int32 [A]) from one depth image.

    Each voxel centre p (canonical) is mapped to the live camera frame either by the skinned warp
    (`use_warp`: W(p) = sum_a w_a aff[n_a] @ [p, 1] over the voxel's cached anchors n_a / weights w_a,
    aff float32 [N, 3, 4] from `affine_maps`; voxels with no valid anchor are skipped) or by the rigid
    pose aff[0] (camera <- canonical, float32 [3, 4]). It is projected to the nearest pixel; with live
    depth d (metres, valid in [dmin, dmax]) and voxel depth z, sdf = d - z; voxels with sdf < -trunc are
    left alone, others get tsdf <- (tsdf*w + min(1, sdf/trunc)) / (w + 1), w <- min(w + 1, max_weight),
    and (when sdf <= trunc and `use_color`) the color is blended the same way. Arithmetic is float32.
    Mesh channel (mesh_trunc > 0; tsdf_mesh / weight_mesh float32 like tsdf / weight): every observation
    that updates a voxel with sdf >= -mesh_trunc updates it the same way there, truncated at mesh_trunc,
    unless it is a near-surface one (sdf <= mesh_trunc) that fails the warp-consistency check scaled to the
    mesh band (check_dist x mesh_trunc / trunc). Silhouette carving of the mesh channel (carve float32 [H, W]
    from `carve_depth`; any other shape: off): a voxel whose pixel has no valid depth but a carve depth
    c > 0, with z <= c, gets a free-space observation of weight carve_weight there (tsdf_mesh <-
    (tsdf_mesh w + carve_weight) / (w + carve_weight)); it does not count as updated.
    depth: float32 [H, W] metres; image: uint8 [H, W, 3]. Returns the number of voxels updated.

    Warp-consistency check (check_dist > 0): a near-surface observation (sdf <= trunc) is rejected when the
    canonical position of the live surface point seen by the voxel, check_pts[check_pix[sampled pixel
    nearest to the voxel's pixel]] (the live surface mapped back by the inverse warp, float32 [P, 3]; pix
    int32 [ceil(H / s), ceil(W / s)] from `band_samples` with stride s = check_stride, -1 = none), lies
    farther than 1.2 |sdf| + check_dist metres from the voxel (it should lie about |sdf| away along the
    voxel's ray, 1.2 allowing for the ray's slant): the voxel then moves with another part of the object
    than the surface in front of it (e.g. a voxel beside the torso seen behind a swinging arm), and fusing
    it would leave a phantom surface.
    """
    h, w = depth.shape
    counts = np.zeros(active.shape[0], np.int64)
    vox = np.float32(voxel)
    half = np.float32(0.5)
    one = np.float32(1.0)
    ox = np.float32(origin[0]) + half * vox
    oy = np.float32(origin[1]) + half * vox
    oz = np.float32(origin[2]) + half * vox
    ffx = np.float32(fx)
    ffy = np.float32(fy)
    fcx = np.float32(cx)
    fcy = np.float32(cy)
    ftr = np.float32(trunc)
    itr = np.float32(1.0 / trunc)
    umax = np.float32(w - 0.5)
    vmax = np.float32(h - 0.5)
    fdmin = np.float32(dmin)
    fdmax = np.float32(dmax)
    fmaxw = np.float32(max_weight)
    use_check = check_dist > 0.0
    chk = np.float32(check_dist)
    prow = check_pix.shape[0] - 1
    pcol = check_pix.shape[1] - 1
    istr = np.float32(1.0 / check_stride)
    use_mesh = mesh_trunc > 0.0
    mtr = np.float32(mesh_trunc)
    imtr = np.float32(1.0 / mesh_trunc) if use_mesh else np.float32(0.0)
    chk_mesh = np.float32(check_dist * mesh_trunc / trunc)  # the same check, scaled to the mesh band
    use_carve = use_mesh and carve.shape[0] == h and carve.shape[1] == w
    cw = np.float32(carve_weight)
    for ii in prange(active.shape[0]):
        b = active[ii]
        bx = coords[b, 0] * bs
        by = coords[b, 1] * bs
        bz = coords[b, 2] * bs
        cnt = 0
        v = -1
        for i in range(bs):
            px = ox + np.float32(bx + i) * vox
            for j in range(bs):
                py = oy + np.float32(by + j) * vox
                for k in range(bs):
                    pz = oz + np.float32(bz + k) * vox
                    v += 1
                    x = np.float32(0.0)
                    y = np.float32(0.0)
                    z = np.float32(0.0)
                    if use_warp:
                        hit = False
                        for a in range(4):
                            n = anchors[b, v, a]
                            if n < 0:
                                continue
                            hit = True
                            wa = skin_w[b, v, a]
                            x += wa * (aff[n, 0, 0] * px + aff[n, 0, 1] * py + aff[n, 0, 2] * pz + aff[n, 0, 3])
                            y += wa * (aff[n, 1, 0] * px + aff[n, 1, 1] * py + aff[n, 1, 2] * pz + aff[n, 1, 3])
                            z += wa * (aff[n, 2, 0] * px + aff[n, 2, 1] * py + aff[n, 2, 2] * pz + aff[n, 2, 3])
                        if not hit:
                            continue
                    else:
                        x = aff[0, 0, 0] * px + aff[0, 0, 1] * py + aff[0, 0, 2] * pz + aff[0, 0, 3]
                        y = aff[0, 1, 0] * px + aff[0, 1, 1] * py + aff[0, 1, 2] * pz + aff[0, 1, 3]
                        z = aff[0, 2, 0] * px + aff[0, 2, 1] * py + aff[0, 2, 2] * pz + aff[0, 2, 3]
                    if z <= np.float32(1e-6):
                        continue
                    iz = one / z
                    uf = ffx * x * iz + fcx
                    vf = ffy * y * iz + fcy
                    if not (uf > -half and uf < umax and vf > -half and vf < vmax):
                        continue
                    u = int(uf + half)
                    r = int(vf + half)
                    d = depth[r, u]
                    if d <= np.float32(0.0) or d < fdmin or d > fdmax:
                        if use_carve:
                            cz = carve[r, u]
                            if cz > np.float32(0.0) and z <= cz:
                                wm_old = weight_mesh[b, v]
                                wm_new = wm_old + cw
                                tsdf_mesh[b, v] = (tsdf_mesh[b, v] * wm_old + cw) / wm_new
                                weight_mesh[b, v] = min(wm_new, fmaxw)
                        continue
                    sdf = d - z
                    if sdf < -ftr:
                        continue
                    mesh_ok = use_mesh and sdf >= -mtr
                    if use_check and sdf <= ftr:
                        q = check_pix[min(int(vf * istr + half), prow), min(int(uf * istr + half), pcol)]
                        if q >= 0:
                            ex = px - check_pts[q, 0]
                            ey = py - check_pts[q, 1]
                            ez = pz - check_pts[q, 2]
                            e2 = ex * ex + ey * ey + ez * ez
                            lim = np.float32(1.2) * abs(sdf) + chk
                            if e2 > lim * lim:
                                continue
                            if mesh_ok and sdf <= mtr:
                                lim = np.float32(1.2) * abs(sdf) + chk_mesh
                                mesh_ok = e2 <= lim * lim
                    t = min(sdf * itr, one)
                    w_old = weight[b, v]
                    w_new = w_old + one
                    tsdf[b, v] = (tsdf[b, v] * w_old + t) / w_new
                    if use_color and sdf <= ftr:
                        for c in range(3):
                            val = (np.float32(color[b, v, c]) * w_old + np.float32(image[r, u, c])) / w_new
                            color[b, v, c] = np.uint8(min(np.float32(255.0), val + half))
                    weight[b, v] = min(w_new, fmaxw)
                    if mesh_ok:
                        wm_old = weight_mesh[b, v]
                        wm_new = wm_old + one
                        tsdf_mesh[b, v] = (tsdf_mesh[b, v] * wm_old + min(sdf * imtr, one)) / wm_new
                        weight_mesh[b, v] = min(wm_new, fmaxw)
                    cnt += 1
        counts[ii] = cnt
    return int(counts.sum())


# ----------------------------------------------------------------------------------------------------------
# allocation


@njit(cache=True, nogil=True)
def build_point_grid(points: np.ndarray, cell: float) -> tuple:
    """Uniform grid over `points` (float32 [N, 3]) with cubic cells of `cell` metres (counting sort).

    Returns (gmin float64 [3], dims int64 [3], start int64 [C + 1], items int64 [N]): the points of
    cell c = (ix * dims[1] + iy) * dims[2] + iz are items[start[c]:start[c + 1]].
    """
    n = points.shape[0]
    gmin = np.empty(3)
    dims = np.empty(3, np.int64)
    for a in range(3):
        lo = np.inf
        hi = -np.inf
        for i in range(n):
            lo = min(lo, points[i, a])
            hi = max(hi, points[i, a])
        if n == 0:
            lo = 0.0
            hi = 0.0
        gmin[a] = lo
        dims[a] = max(1, int(np.floor((hi - lo) / cell)) + 1)
    ncell = dims[0] * dims[1] * dims[2]
    cid = np.empty(n, np.int64)
    start = np.zeros(ncell + 1, np.int64)
    for i in range(n):
        ix = min(dims[0] - 1, int((points[i, 0] - gmin[0]) / cell))
        iy = min(dims[1] - 1, int((points[i, 1] - gmin[1]) / cell))
        iz = min(dims[2] - 1, int((points[i, 2] - gmin[2]) / cell))
        c = (ix * dims[1] + iy) * dims[2] + iz
        cid[i] = c
        start[c + 1] += 1
    for c in range(ncell):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    items = np.empty(n, np.int64)
    for i in range(n):
        items[fill[cid[i]]] = i
        fill[cid[i]] += 1
    return gmin, dims, start, items


@njit(cache=True, nogil=True)
def _block_points(px: int, py: int, pz: int, dims: np.ndarray, start: np.ndarray, items: np.ndarray,
                  points: np.ndarray, cidx: np.ndarray, cxyz: np.ndarray, pos: int, write: bool) -> int:
    """The points of the grid cells in the 3x3x3 block around padded cell (px, py, pz) (grid cell
    (px - 1, py - 1, pz - 1)), in scan order (x, then y, then z ascending): written to cidx / cxyz from
    `pos` on when `write`, else only counted. Returns pos plus their number."""
    for a in range(max(px - 2, 0), min(px + 1, dims[0])):
        for b in range(max(py - 2, 0), min(py + 1, dims[1])):
            for c in range(max(pz - 2, 0), min(pz + 1, dims[2])):
                cc = (a * dims[1] + b) * dims[2] + c
                if not write:
                    pos += start[cc + 1] - start[cc]
                    continue
                for s in range(start[cc], start[cc + 1]):
                    n = items[s]
                    cidx[pos] = n
                    cxyz[pos, 0] = points[n, 0]
                    cxyz[pos, 1] = points[n, 1]
                    cxyz[pos, 2] = points[n, 2]
                    pos += 1
    return pos


@njit(cache=True, nogil=True)
def cell_candidates(points: np.ndarray, dims: np.ndarray, start: np.ndarray, items: np.ndarray) -> tuple:
    """Candidate lists for nearest-point queries on a `build_point_grid` grid: for every cell of the grid
    padded by one cell on each side (padded dims = dims + 2; padded cell (px, py, pz) is grid cell
    (px - 1, py - 1, pz - 1)), the points of the grid cells in the 3x3x3 block around it, stored
    contiguously, so that a query inside the grid or up to one cell outside reads one list.

    Returns (cstart int64 [P + 1], cidx int64 [L], cxyz [L, 3] of points' dtype): padded cell c's
    candidates are cidx[cstart[c]:cstart[c + 1]], with their coordinates in cxyz (L <= 27 N).
    """
    p1, p2 = dims[1] + 2, dims[2] + 2
    ncell = (dims[0] + 2) * p1 * p2
    cstart = np.zeros(ncell + 1, np.int64)
    cidx = np.empty(0, np.int64)
    cxyz = np.empty((0, 3), points.dtype)
    for write in (False, True):  # count, then fill
        pos = 0
        for px in range(dims[0] + 2):
            for py in range(p1):
                for pz in range(p2):
                    cstart[(px * p1 + py) * p2 + pz] = pos
                    pos = _block_points(px, py, pz, dims, start, items, points, cidx, cxyz, pos, write)
        cstart[ncell] = pos
        if not write:
            cidx = np.empty(pos, np.int64)
            cxyz = np.empty((pos, 3), points.dtype)
    return cstart, cidx, cxyz


@njit(fastmath=True, cache=True, nogil=True)
def knn_list_query(
    qx: float, qy: float, qz: float, lo: int, hi: int, cidx: np.ndarray, cxyz: np.ndarray, k: int,
    out_idx: np.ndarray, out_d2: np.ndarray,
) -> int:
    """The up-to-`k` nearest to q of the candidates cidx[lo:hi] (coordinates cxyz[lo:hi]); ties keep the
    list's order. Fills out_idx (int64 [k]) and out_d2 (squared distances, ascending); returns how many
    were found."""
    found = 0
    for s in range(lo, hi):
        dx = cxyz[s, 0] - qx
        dy = cxyz[s, 1] - qy
        dz = cxyz[s, 2] - qz
        d2 = dx * dx + dy * dy + dz * dz
        if found < k:
            pos = found
            found += 1
        elif d2 < out_d2[k - 1]:
            pos = k - 1
        else:
            continue
        while pos > 0 and out_d2[pos - 1] > d2:
            out_d2[pos] = out_d2[pos - 1]
            out_idx[pos] = out_idx[pos - 1]
            pos -= 1
        out_d2[pos] = d2
        out_idx[pos] = cidx[s]
    return found


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def inverse_warp_points(
    live: np.ndarray, warped_nodes: np.ndarray, inv_aff: np.ndarray, sigma: float, cell: float, group: int
) -> np.ndarray:
    """Approximate inverse warp of live-frame points to the canonical frame.

    live: float32 [M, 3] metres (camera frame), in groups of `group` consecutive points that share one
    inverse transform (e.g. the 3 band samples of a pixel: the transform is evaluated at the group's middle
    point); warped_nodes: float32 [N, 3] = g_n + t_n; inv_aff: float32 [N, 3, 4] = [R_n^T | g_n - R_n^T (g_n + t_n)]
    (the inverse of each node transform). The transform of a group is the blend of the inverse transforms
    of the 4 nearest warped nodes to its middle point (among the grid cells of edge `cell` around it; the
    nearest node overall when none) with weights exp(-(d^2 - d_0^2) / (2 sigma^2)). Returns float32 [M, 3].
    """
    m = live.shape[0]
    out = np.empty((m, 3), np.float32)
    gmin, dims, start, items = build_point_grid(warped_nodes, cell)
    cstart, cidx, cxyz = cell_candidates(warped_nodes, dims, start, items)
    p0, p1, p2 = dims[0] + 2, dims[1] + 2, dims[2] + 2  # the padded grid of the candidate lists
    all_ids = np.arange(warped_nodes.shape[0])
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    ng = m // group
    chunk = 256  # groups per task: the scratch arrays are allocated once per chunk, not once per group
    for ci in prange((ng + chunk - 1) // chunk):
        idx = np.empty(4, np.int64)
        d2 = np.empty(4)
        t = np.empty((3, 4))
        for gi in range(ci * chunk, min(ng, ci * chunk + chunk)):
            c = gi * group + group // 2
            qx, qy, qz = live[c, 0], live[c, 1], live[c, 2]
            ix = int(np.floor((qx - gmin[0]) / cell)) + 1  # padded cell
            iy = int(np.floor((qy - gmin[1]) / cell)) + 1
            iz = int(np.floor((qz - gmin[2]) / cell)) + 1
            nf = 0
            if 0 <= ix < p0 and 0 <= iy < p1 and 0 <= iz < p2:  # the cell's candidate list
                cc = (ix * p1 + iy) * p2 + iz
                nf = knn_list_query(qx, qy, qz, cstart[cc], cstart[cc + 1], cidx, cxyz, 4, idx, d2)
            if nf == 0:  # no node in the cells around: the nearest one of all
                nf = knn_list_query(qx, qy, qz, 0, len(all_ids), all_ids, warped_nodes, 1, idx, d2)
            t[:] = 0.0
            ws = 0.0
            for a in range(nf):
                wa = np.exp(-(d2[a] - d2[0]) * inv2s2)  # relative to the nearest: never all zero
                n = idx[a]
                for r in range(3):
                    for q in range(4):
                        t[r, q] += wa * inv_aff[n, r, q]
                ws += wa
            for j in range(gi * group, gi * group + group):
                px, py, pz = live[j, 0], live[j, 1], live[j, 2]
                out[j, 0] = (t[0, 0] * px + t[0, 1] * py + t[0, 2] * pz + t[0, 3]) / ws
                out[j, 1] = (t[1, 0] * px + t[1, 1] * py + t[1, 2] * pz + t[1, 3]) / ws
                out[j, 2] = (t[2, 0] * px + t[2, 1] * py + t[2, 2] * pz + t[2, 3]) / ws
    return out


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def band_samples(
    depth: np.ndarray, stride: int, fx: float, fy: float, cx: float, cy: float, dmin: float, dmax: float,
    trunc: float, mask: np.ndarray, use_mask: bool,
) -> tuple:
    """Live-frame points on the truncation band of the depth image, for block allocation.

    Every `stride`-th pixel (both axes) with valid depth d in [dmin, dmax] (and mask, when used) gives the
    3 points at depths d - trunc, d, d + trunc on its ray. Returns (points float32 [3P, 3] metres, camera
    frame; pix int32 [ceil(H / stride), ceil(W / stride)]: the sample number p of each sampled pixel, whose
    surface point is points[3p + 1], or -1 where the pixel has no valid depth).
    """
    h, w = depth.shape
    rows = (h + stride - 1) // stride
    cols = (w + stride - 1) // stride
    rc = np.zeros(rows, np.int64)
    for r in prange(rows):
        c = 0
        for q in range(cols):
            d = depth[r * stride, q * stride]
            if d > 0 and d >= dmin and d <= dmax and (not use_mask or mask[r * stride, q * stride]):
                c += 1
        rc[r] = c
    off = np.zeros(rows + 1, np.int64)
    for r in range(rows):
        off[r + 1] = off[r] + rc[r]
    out = np.empty((off[rows] * 3, 3), np.float32)
    pix = np.full((rows, cols), -1, np.int32)
    for r in prange(rows):
        s = off[r] * 3
        vv = r * stride
        for q in range(cols):
            uu = q * stride
            d = depth[vv, uu]
            if d > 0 and d >= dmin and d <= dmax and (not use_mask or mask[vv, uu]):
                pix[r, q] = s // 3
                rx = (uu - cx) / fx
                ry = (vv - cy) / fy
                for e in range(3):
                    z = d + (e - 1) * trunc
                    out[s, 0] = rx * z
                    out[s, 1] = ry * z
                    out[s, 2] = z
                    s += 1
    return out, pix


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def candidate_blocks(points: np.ndarray, origin: np.ndarray, block_m: float, index: np.ndarray, dilate: float) -> np.ndarray:
    """Linear ids of the unallocated blocks near `points` (canonical, float32 [S, 3] metres).

    Each point marks the blocks holding the 8 corners of the cube of half-side `dilate` (metres) around it,
    so that blocks the surface only grazes are allocated too. Returns int64 [S * 8]: the linear block id
    (bx * BY + by) * BZ + bz of an unallocated block inside the bounds, else -1. Read-only on `index`.
    """
    nx, ny, nz = index.shape
    s = points.shape[0]
    out = np.full(s * 8, -1, np.int64)
    for i in prange(s):
        for c in range(8):
            x = points[i, 0] + (dilate if (c & 1) else -dilate)
            y = points[i, 1] + (dilate if (c & 2) else -dilate)
            z = points[i, 2] + (dilate if (c & 4) else -dilate)
            bx = int(np.floor((x - origin[0]) / block_m))
            by = int(np.floor((y - origin[1]) / block_m))
            bz = int(np.floor((z - origin[2]) / block_m))
            if bx < 0 or by < 0 or bz < 0 or bx >= nx or by >= ny or bz >= nz:
                continue
            if index[bx, by, bz] == -1:
                out[i * 8 + c] = (bx * ny + by) * nz + bz
    return out


@njit(cache=True, nogil=True)
def mark_new_blocks(cands: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Deduplicate candidate linear block ids (int64, -1 = none) into the block coordinates (int32 [B_new, 3])
    of blocks still unallocated in `index` (int32 [BX, BY, BZ]); each is marked -2 there so that it is listed
    once. The caller assigns pool ids (or resets the mark to -1 when the pool is full)."""
    nx, ny, nz = index.shape
    out = np.empty((cands.shape[0], 3), np.int32)
    c = 0
    for i in range(cands.shape[0]):
        lin = cands[i]
        if lin < 0:
            continue
        bz = lin % nz
        by = (lin // nz) % ny
        bx = lin // (ny * nz)
        if index[bx, by, bz] == -1:
            index[bx, by, bz] = -2
            out[c, 0] = bx
            out[c, 1] = by
            out[c, 2] = bz
            c += 1
    return out[:c].copy()


# ----------------------------------------------------------------------------------------------------------
# visibility


@functools.lru_cache(maxsize=8)
def carve_offsets(radius: float) -> np.ndarray:
    """Pixel offsets (dy, dx) within `radius` pixels, nearest first, ties in row-major order: int64 [K, 2]
    (K = 0 for radius < 1; cached per radius, read-only). The first valid pixel at p + offset is p's nearest
    valid pixel."""
    rad = int(np.floor(radius))
    o = sorted((dy * dy + dx * dx, dy, dx) for dy in range(-rad, rad + 1) for dx in range(-rad, rad + 1)
               if 0 < dy * dy + dx * dx <= radius * radius)
    out = np.array([(dy, dx) for _, dy, dx in o], np.int64).reshape(-1, 2)
    out.setflags(write=False)
    return out


@njit(cache=True, nogil=True)
def near_tiles(tiles: np.ndarray) -> np.ndarray:
    """bool [TH, TW]: the tiles (of `depth_tiles`) that hold valid depth or touch one that does (8-neighbours):
    the only ones where a pixel can lie within one tile edge of valid depth."""
    th, tw = tiles.shape
    near = np.zeros((th, tw), np.bool_)
    for ty in range(th):
        for tx in range(tw):
            if tiles[ty, tx] > 0:
                for y in range(max(ty - 1, 0), min(ty + 2, th)):
                    for x in range(max(tx - 1, 0), min(tx + 2, tw)):
                        near[y, x] = True
    return near


def carve_depth(depth: np.ndarray, radius: float, dmin: float, dmax: float, tile: int = 8,
                tiles: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Silhouette-carving map of a depth image (float32 [H, W] metres, valid in [dmin, dmax]): at every pixel
    without valid depth that lies within `radius` pixels (Euclidean, at most `tile`) of a valid one, the depth
    of the nearest valid pixel (ties: the first in row-major order); 0 elsewhere. float32 [H, W] (`out`, a
    buffer to reuse, when given). tiles: the image's `depth_tiles` of edge `tile` when at hand; only pixels
    in tiles that hold valid depth or touch one that does (`near_tiles`) are searched."""
    if radius > tile:
        raise ValueError(f"carving radius {radius} px exceeds the depth tile ({tile} px)")
    d = np.ascontiguousarray(depth, np.float32)
    if out is None or out.shape != d.shape or out.dtype != np.float32:
        out = np.empty(d.shape, np.float32)
    if tiles is None:
        tiles = depth_tiles(d, tile, dmin, dmax)
    _carve_depth_nb(d, tiles, near_tiles(tiles), int(tile), carve_offsets(radius), float(dmin), float(dmax), out)
    return out


@njit(parallel=True, cache=True, nogil=True)
def _carve_depth_nb(depth, tiles, near, tile, offs, dmin, dmax, out):  # pragma: no cover - compiled
    """`carve_depth` into out: per pixel of a near tile without valid depth, the first valid pixel at
    (r, c) + offs[k] (offsets nearest first). In a tile without valid depth, only pixels within the offsets'
    reach (rad = max |offset| per axis) of a neighbour tile that has valid depth can find one: the others
    are not searched."""
    h, w = depth.shape
    th, tw = tiles.shape
    rad = 0
    for k in range(offs.shape[0]):
        rad = max(rad, abs(offs[k, 0]), abs(offs[k, 1]))
    for r in prange(h):
        ty = r // tile
        ly = r - ty * tile
        up = ly < rad and ty > 0
        down = ly >= tile - rad and ty + 1 < th
        for c in range(w):
            out[r, c] = 0.0
        for tx in range(tw):
            if not near[ty, tx]:
                continue
            empty = tiles[ty, tx] <= 0
            row_any = left = right = False
            if empty:  # which neighbour tiles with depth this row can reach
                row_any = (up and tiles[ty - 1, tx] > 0) or (down and tiles[ty + 1, tx] > 0)
                left = tx > 0 and (tiles[ty, tx - 1] > 0 or (up and tiles[ty - 1, tx - 1] > 0)
                                   or (down and tiles[ty + 1, tx - 1] > 0))
                right = tx + 1 < tw and (tiles[ty, tx + 1] > 0 or (up and tiles[ty - 1, tx + 1] > 0)
                                         or (down and tiles[ty + 1, tx + 1] > 0))
                if not (row_any or left or right):
                    continue
            for c in range(tx * tile, min(w, tx * tile + tile)):
                if empty and not row_any:
                    lx = c - tx * tile
                    if not ((left and lx < rad) or (right and lx >= tile - rad)):
                        continue
                d = depth[r, c]
                if d > 0 and d >= dmin and d <= dmax:
                    continue
                for k in range(offs.shape[0]):
                    y = r + offs[k, 0]
                    x = c + offs[k, 1]
                    if y < 0 or y >= h or x < 0 or x >= w:
                        continue
                    t = depth[y, x]
                    if t > 0 and t >= dmin and t <= dmax:
                        out[r, c] = t
                        break


@njit(parallel=True, cache=True, nogil=True)
def depth_tiles(depth: np.ndarray, tile: int, dmin: float, dmax: float) -> np.ndarray:
    """Largest valid depth (metres; 0 = none valid) of each `tile` x `tile` pixel tile of a depth image
    (float32 [H, W]); valid means in [dmin, dmax]. Returns float32 [ceil(H / tile), ceil(W / tile)]."""
    h, w = depth.shape
    th = (h + tile - 1) // tile
    tw = (w + tile - 1) // tile
    out = np.zeros((th, tw), np.float32)
    for ty in prange(th):
        for r in range(ty * tile, min(h, ty * tile + tile)):
            for c in range(w):
                d = depth[r, c]
                if d > 0 and d >= dmin and d <= dmax and d > out[ty, c // tile]:
                    out[ty, c // tile] = d
    return out


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def visible_blocks(
    n_blocks: int, coords: np.ndarray, anchors: np.ndarray, skin_w: np.ndarray, aff: np.ndarray, use_warp: bool,
    fx: float, fy: float, cx: float, cy: float, width: int, height: int, origin: np.ndarray, voxel: float,
    bs: int, slack: float, tiles: np.ndarray, tile: int, trunc: float,
) -> np.ndarray:
    """Ids (int32) of the allocated blocks that the depth image may update (aff / use_warp as in
    `integrate_blocks`).

    The block is taken as the ball of radius `slack` x its half-diagonal around its warped centre (the
    centre voxel's skinning; blocks whose centre has no anchor are kept). It is dropped when that ball
    projects outside the image, when no pixel under its projected disc has valid depth, or when it lies
    entirely more than `trunc` behind the farthest valid depth there (`tiles` from `depth_tiles` with edge
    `tile`): then none of its voxels would be updated.
    """
    keep = np.zeros(n_blocks, np.bool_)
    half = bs // 2
    vc = (half * bs + half) * bs + half
    rad = slack * 0.5 * np.sqrt(3.0) * bs * voxel
    th, tw = tiles.shape
    for b in prange(n_blocks):
        px = origin[0] + (coords[b, 0] * bs + half + 0.5) * voxel
        py = origin[1] + (coords[b, 1] * bs + half + 0.5) * voxel
        pz = origin[2] + (coords[b, 2] * bs + half + 0.5) * voxel
        x = 0.0
        y = 0.0
        z = 0.0
        if use_warp:
            hit = False
            for a in range(4):
                n = anchors[b, vc, a]
                if n < 0:
                    continue
                hit = True
                wa = skin_w[b, vc, a]
                x += wa * (aff[n, 0, 0] * px + aff[n, 0, 1] * py + aff[n, 0, 2] * pz + aff[n, 0, 3])
                y += wa * (aff[n, 1, 0] * px + aff[n, 1, 1] * py + aff[n, 1, 2] * pz + aff[n, 1, 3])
                z += wa * (aff[n, 2, 0] * px + aff[n, 2, 1] * py + aff[n, 2, 2] * pz + aff[n, 2, 3])
            if not hit:
                keep[b] = True
                continue
        else:
            x = aff[0, 0, 0] * px + aff[0, 0, 1] * py + aff[0, 0, 2] * pz + aff[0, 0, 3]
            y = aff[0, 1, 0] * px + aff[0, 1, 1] * py + aff[0, 1, 2] * pz + aff[0, 1, 3]
            z = aff[0, 2, 0] * px + aff[0, 2, 1] * py + aff[0, 2, 2] * pz + aff[0, 2, 3]
        if z + rad <= 1e-6:
            continue
        if z - rad <= 1e-3:
            keep[b] = True  # straddles the camera plane
            continue
        zn = z - rad
        # the ball projects into a disc of radius <= f * rad / (z - rad) around its centre's projection
        ur = fx * rad / zn
        vr = fy * rad / zn
        u = fx * x / z + cx
        v = fy * y / z + cy
        if not (u + ur > -0.5 and u - ur < width - 0.5 and v + vr > -0.5 and v - vr < height - 0.5):
            continue
        t0 = max(0, int((v - vr + 0.5) // tile))
        t1 = min(th - 1, int((v + vr + 0.5) // tile))
        s0 = max(0, int((u - ur + 0.5) // tile))
        s1 = min(tw - 1, int((u + ur + 0.5) // tile))
        dm = 0.0
        for ty in range(t0, t1 + 1):
            for tx in range(s0, s1 + 1):
                dm = max(dm, tiles[ty, tx])
        if dm > 0.0 and z - rad <= dm + trunc:
            keep[b] = True
    return np.nonzero(keep)[0].astype(np.int32)


# ----------------------------------------------------------------------------------------------------------
# surface points (zero crossings) for the tracking model


@njit(cache=True, inline="always")
def _lookup(gx: int, gy: int, gz: int, index: np.ndarray, bs: int) -> tuple:
    """(block id, voxel id) of global voxel (gx, gy, gz); block id < 0 when outside or unallocated."""
    nx, ny, nz = index.shape
    if gx < 0 or gy < 0 or gz < 0:
        return -1, 0
    bx = gx // bs
    by = gy // bs
    bz = gz // bs
    if bx >= nx or by >= ny or bz >= nz:
        return -1, 0
    b = index[bx, by, bz]
    return b, ((gx - bx * bs) * bs + (gy - by * bs)) * bs + (gz - bz * bs)


@njit(cache=True, nogil=True)
def _grad(gx: int, gy: int, gz: int, index: np.ndarray, tsdf: np.ndarray, weight: np.ndarray, bs: int,
          min_w: float, out: np.ndarray) -> None:
    """TSDF gradient at a voxel by central differences (one-sided where a neighbour is unobserved)."""
    b0, v0 = _lookup(gx, gy, gz, index, bs)
    f0 = tsdf[b0, v0]
    for a in range(3):
        dx = 1 if a == 0 else 0
        dy = 1 if a == 1 else 0
        dz = 1 if a == 2 else 0
        bp, vp = _lookup(gx + dx, gy + dy, gz + dz, index, bs)
        bm, vm = _lookup(gx - dx, gy - dy, gz - dz, index, bs)
        okp = bp >= 0 and weight[bp, vp] >= min_w
        okm = bm >= 0 and weight[bm, vm] >= min_w
        if okp and okm:
            out[a] = 0.5 * (tsdf[bp, vp] - tsdf[bm, vm])
        elif okp:
            out[a] = tsdf[bp, vp] - f0
        elif okm:
            out[a] = f0 - tsdf[bm, vm]
        else:
            out[a] = 0.0


@njit(parallel=True, cache=True, nogil=True)
def surface_points(
    n_blocks: int, coords: np.ndarray, index: np.ndarray, tsdf: np.ndarray, weight: np.ndarray,
    color: np.ndarray, origin: np.ndarray, voxel: float, bs: int, min_w: float,
) -> tuple:
    """Zero crossings of the TSDF along the voxel edges (the marching-cubes vertices, without faces).

    An edge between two observed voxels (weight >= min_w) whose TSDF values have opposite signs and are
    both inside the band (|tsdf| < 1) gives a point at the linear zero crossing, its normal (the normalised
    interpolated TSDF gradient, pointing outside, toward positive TSDF) and its interpolated color.
    Returns (points float32 [P, 3] metres, normals float32 [P, 3], colors uint8 [P, 3]).
    """
    nv = bs * bs * bs
    cnt = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        c = 0
        for v in range(nv):
            if weight[b, v] < min_w:
                continue
            f0 = tsdf[b, v]
            if f0 >= 1.0 or f0 <= -1.0:
                continue
            gx = coords[b, 0] * bs + v // (bs * bs)
            gy = coords[b, 1] * bs + (v // bs) % bs
            gz = coords[b, 2] * bs + v % bs
            for a in range(3):
                ex = 1 if a == 0 else 0
                ey = 1 if a == 1 else 0
                ez = 1 if a == 2 else 0
                b1, v1 = _lookup(gx + ex, gy + ey, gz + ez, index, bs)
                if b1 < 0 or weight[b1, v1] < min_w:
                    continue
                f1 = tsdf[b1, v1]
                if f1 >= 1.0 or f1 <= -1.0:
                    continue
                if (f0 < 0.0) != (f1 < 0.0):
                    c += 1
        cnt[b] = c
    off = np.zeros(n_blocks + 1, np.int64)
    for b in range(n_blocks):
        off[b + 1] = off[b] + cnt[b]
    total = off[n_blocks]
    pts = np.empty((total, 3), np.float32)
    nrm = np.empty((total, 3), np.float32)
    col = np.empty((total, 3), np.uint8)
    for b in prange(n_blocks):
        s = off[b]
        g0 = np.empty(3)
        g1 = np.empty(3)
        for v in range(nv):
            if weight[b, v] < min_w:
                continue
            f0 = tsdf[b, v]
            if f0 >= 1.0 or f0 <= -1.0:
                continue
            gx = coords[b, 0] * bs + v // (bs * bs)
            gy = coords[b, 1] * bs + (v // bs) % bs
            gz = coords[b, 2] * bs + v % bs
            for a in range(3):
                ex = 1 if a == 0 else 0
                ey = 1 if a == 1 else 0
                ez = 1 if a == 2 else 0
                b1, v1 = _lookup(gx + ex, gy + ey, gz + ez, index, bs)
                if b1 < 0 or weight[b1, v1] < min_w:
                    continue
                f1 = tsdf[b1, v1]
                if f1 >= 1.0 or f1 <= -1.0:
                    continue
                if (f0 < 0.0) == (f1 < 0.0):
                    continue
                t = f0 / (f0 - f1)
                pts[s, 0] = origin[0] + (gx + 0.5 + t * ex) * voxel
                pts[s, 1] = origin[1] + (gy + 0.5 + t * ey) * voxel
                pts[s, 2] = origin[2] + (gz + 0.5 + t * ez) * voxel
                _grad(gx, gy, gz, index, tsdf, weight, bs, min_w, g0)
                _grad(gx + ex, gy + ey, gz + ez, index, tsdf, weight, bs, min_w, g1)
                nx_ = (1 - t) * g0[0] + t * g1[0]
                ny_ = (1 - t) * g0[1] + t * g1[1]
                nz_ = (1 - t) * g0[2] + t * g1[2]
                nn = np.sqrt(nx_ * nx_ + ny_ * ny_ + nz_ * nz_)
                if nn > 0:
                    nrm[s, 0] = nx_ / nn
                    nrm[s, 1] = ny_ / nn
                    nrm[s, 2] = nz_ / nn
                else:
                    nrm[s, 0] = 0.0
                    nrm[s, 1] = 0.0
                    nrm[s, 2] = 0.0
                for c in range(3):
                    col[s, c] = np.uint8(min(255.0, (1 - t) * color[b, v, c] + t * color[b1, v1, c] + 0.5))
                s += 1
    return pts, nrm, col


# ----------------------------------------------------------------------------------------------------------
# skinning-cache maintenance


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def voxels_needing_reskin(
    n_blocks: int, coords: np.ndarray, anchors: np.ndarray, nodes: np.ndarray, new_nodes: np.ndarray,
    ring_changed: np.ndarray, reach: float, origin: np.ndarray, voxel: float, bs: int,
) -> np.ndarray:
    """bool [n_blocks, bs^3]: voxels whose skinning may change when `new_nodes` (float32 [A, 3]) join the graph.

    Skinning takes the 4 nearest nodes within `reach` metres, then keeps those linked to the nearest one. A
    voxel is flagged when its nearest anchor's graph edges changed (`ring_changed` bool [N_old]), or when a
    new node lies within reach and either the voxel has a free anchor slot (-1) or the new node is nearer
    than its farthest current anchor (an exact test for the k-nearest selection).
    nodes: float32 [N_old, 3] (the ids the cached anchors refer to).
    """
    nv = bs * bs * bs
    out = np.zeros((n_blocks, nv), np.bool_)
    r2 = reach * reach
    for b in prange(n_blocks):
        for v in range(nv):
            a0 = anchors[b, v, 0]
            if a0 >= 0 and ring_changed[a0]:
                out[b, v] = True
                continue
            px = origin[0] + (coords[b, 0] * bs + v // (bs * bs) + 0.5) * voxel
            py = origin[1] + (coords[b, 1] * bs + (v // bs) % bs + 0.5) * voxel
            pz = origin[2] + (coords[b, 2] * bs + v % bs + 0.5) * voxel
            near = np.inf
            for q in range(new_nodes.shape[0]):
                dx = new_nodes[q, 0] - px
                dy = new_nodes[q, 1] - py
                dz = new_nodes[q, 2] - pz
                near = min(near, dx * dx + dy * dy + dz * dz)
            if near > r2:
                continue
            far = 0.0
            free = False
            for a in range(4):
                n = anchors[b, v, a]
                if n < 0:
                    free = True
                    continue
                dx = nodes[n, 0] - px
                dy = nodes[n, 1] - py
                dz = nodes[n, 2] - pz
                far = max(far, dx * dx + dy * dy + dz * dz)
            if free or near < far:
                out[b, v] = True
    return out
