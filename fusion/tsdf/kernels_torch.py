"""Torch kernels of the block-sparse TSDF volume: the same maths as `kernels_nb`, vectorised over voxels and
pixels, on any torch device (CUDA when present). Called by `TSDFVolume` when backend == "torch"; the volume's
arrays (`index`, `coords`, `tsdf`, `weight`, `color`, `anchors`, `skin_w`) are tensors on `vol.device`.

Results equal the numba backend up to float rounding (tested on the CPU); pool ids of blocks allocated in
the same call may be in a different order (blocks are compared by their coordinates).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from fusion.frame import RGBDFrame

if TYPE_CHECKING:  # pragma: no cover
    from fusion.tsdf.volume import TSDFVolume

#: blocks per chunk of the vectorised integration (bounds the temporary memory to ~100 MB)
CHUNK_BLOCKS = 512


def as_index(vol: "TSDFVolume", ids) -> torch.Tensor:
    """Block ids (numpy / list / tensor) as a long tensor on the volume's device."""
    return torch.as_tensor(np.asarray(ids, np.int64) if not torch.is_tensor(ids) else ids, device=vol.device).long()


def _local(vol: "TSDFVolume") -> torch.Tensor:
    """Voxel offsets inside a block, long [bs^3, 3] (voxel v = (i*bs + j)*bs + k)."""
    bs = vol.bs
    v = torch.arange(vol.nv, device=vol.device)
    return torch.stack([v // (bs * bs), (v // bs) % bs, v % bs], -1)


# ---------------------------------------------------------------------------------------------- allocation


def _band_t(vol: "TSDFVolume", frame: RGBDFrame, stride: int, use_mask: bool) -> tuple[torch.Tensor, np.ndarray]:
    """Live points on the truncation band (float32 [3P, 3]) and the sampled-pixel -> sample map (int32 numpy);
    same samples, order and map as `kernels_nb.band_samples`."""
    cfg = vol.config
    k = frame.intrinsics
    d = torch.as_tensor(np.ascontiguousarray(frame.depth[::stride, ::stride]), device=vol.device)
    ok = (d > 0) & (d >= cfg.depth_min) & (d <= cfg.depth_max)
    if use_mask and frame.mask is not None:
        ok &= torch.as_tensor(np.ascontiguousarray(frame.mask[::stride, ::stride]), device=vol.device).bool()
    rr, cc = torch.nonzero(ok, as_tuple=True)
    z = d[rr, cc]
    vv = (rr * stride).float()
    uu = (cc * stride).float()
    rx = (uu - k.cx) / k.fx
    ry = (vv - k.cy) / k.fy
    zs = z[:, None] + torch.tensor([-vol.trunc, 0.0, vol.trunc], device=vol.device, dtype=torch.float32)[None]
    pts = torch.stack([rx[:, None] * zs, ry[:, None] * zs, zs], -1)
    pix = torch.full(ok.shape, -1, dtype=torch.int32, device=vol.device)
    pix[rr, cc] = torch.arange(len(rr), device=vol.device, dtype=torch.int32)
    return pts.reshape(-1, 3), pix.cpu().numpy()


def _candidates_t(vol: "TSDFVolume", can: torch.Tensor) -> torch.Tensor:
    """Unique linear ids (long) of unallocated blocks holding the 8 corners of the cube of half-side one voxel
    around each canonical point (as `kernels_nb.candidate_blocks`)."""
    dil = vol.voxel_size
    signs = torch.tensor([[(c & 1) * 2 - 1, ((c >> 1) & 1) * 2 - 1, ((c >> 2) & 1) * 2 - 1] for c in range(8)],
                         device=vol.device, dtype=torch.float32)
    corners = can[:, None, :] + dil * signs[None]
    origin = torch.as_tensor(vol.origin, device=vol.device, dtype=torch.float64)
    b = torch.floor((corners.double() - origin) / vol.block_m).long().reshape(-1, 3)
    dims = torch.as_tensor(vol.dims, device=vol.device)
    ok = torch.all((b >= 0) & (b < dims), dim=1)
    b = b[ok]
    lin = (b[:, 0] * dims[1] + b[:, 1]) * dims[2] + b[:, 2]
    lin = torch.unique(lin)
    free = vol.index.reshape(-1)[lin] == -1
    return lin[free]


def candidates_rigid_t(vol: "TSDFVolume", frame: RGBDFrame, r: np.ndarray, t: np.ndarray, stride: int,
                       use_mask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rigid allocation candidates: (unique unallocated linear block ids int64, canonical band points float32
    [3P, 3], sampled-pixel -> sample map int32)."""
    pts, pix = _band_t(vol, frame, stride, use_mask)
    rt = torch.as_tensor(r, device=vol.device, dtype=torch.float32)
    tt = torch.as_tensor(t, device=vol.device, dtype=torch.float32)
    can = (pts - tt) @ rt
    return _candidates_t(vol, can).cpu().numpy(), can.cpu().numpy(), pix


def inverse_warp_points_t(live: torch.Tensor, warped_nodes: torch.Tensor, inv_aff: torch.Tensor, sigma: float,
                          cell: float, group: int = 1) -> torch.Tensor:
    """Torch twin of `kernels_nb.inverse_warp_points` (same neighbourhood rule: the 4 nearest warped nodes
    among the grid cells of edge `cell` around each group's middle point, the nearest node overall when none;
    one blended inverse transform per group of `group` consecutive points)."""
    n = warped_nodes.shape[0]
    gmin = warped_nodes.double().min(0).values
    hi = warped_nodes.double().max(0).values
    dims = torch.clamp(torch.floor((hi - gmin) / cell).long() + 1, min=1)
    ncell = torch.minimum(torch.floor((warped_nodes.double() - gmin) / cell).long(), dims - 1)
    grouped = live.reshape(-1, group, 3)
    mid = grouped[:, group // 2]
    out = torch.empty_like(grouped)
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    kk = min(4, n)
    for s in range(0, mid.shape[0], 8192):
        q = mid[s:s + 8192]
        qcell = torch.floor((q.double() - gmin) / cell).long()
        d2 = torch.cdist(q.double(), warped_nodes.double()) ** 2
        near = torch.all((ncell[None] - qcell[:, None]).abs() <= 1, dim=-1)
        d2m = torch.where(near, d2, torch.full_like(d2, float("inf")))
        vals, idx = torch.topk(d2m, kk, dim=1, largest=False)
        none = ~torch.isfinite(vals[:, 0])
        if none.any():
            nn = torch.argmin(d2[none], dim=1)
            idx[none, 0] = nn
            vals[none, 0] = d2[none].gather(1, nn[:, None])[:, 0]
            vals[none, 1:] = float("inf")
        valid = torch.isfinite(vals)
        w = torch.where(valid, torch.exp(-(vals - vals[:, :1]) * inv2s2), torch.zeros_like(vals))
        a = (w[..., None, None] * inv_aff[idx].double()).sum(1) / w.sum(1)[:, None, None]  # [Q, 3, 4]
        pts = grouped[s:s + 8192].double()
        res = torch.einsum("qij,qgj->qgi", a[..., :3], pts) + a[:, None, :, 3]
        out[s:s + 8192] = res.to(live.dtype)
    return out.reshape(-1, 3)


def candidates_warped_t(vol: "TSDFVolume", frame: RGBDFrame, wn: np.ndarray, inv: np.ndarray, sigma: float,
                        cell: float, stride: int, use_mask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-rigid allocation candidates through the approximate inverse warp (see `kernels_nb`); returns as
    `candidates_rigid_t`."""
    pts, pix = _band_t(vol, frame, stride, use_mask)
    can = inverse_warp_points_t(pts, torch.as_tensor(wn, device=vol.device), torch.as_tensor(inv, device=vol.device),
                                sigma, cell, 3)
    return _candidates_t(vol, can).cpu().numpy(), can.cpu().numpy(), pix


def mark_new_blocks_t(vol: "TSDFVolume", cand: np.ndarray) -> np.ndarray:
    """Block coordinates (int32 [B, 3]) of unique, still unallocated candidate linear ids."""
    lin = np.unique(np.asarray(cand, np.int64))
    lin = lin[lin >= 0]
    if len(lin) == 0:
        return np.zeros((0, 3), np.int32)
    free = vol.index.reshape(-1)[torch.as_tensor(lin, device=vol.device)].cpu().numpy() == -1
    lin = lin[free]
    ny, nz = int(vol.dims[1]), int(vol.dims[2])
    return np.stack([lin // (ny * nz), (lin // nz) % ny, lin % nz], -1).astype(np.int32)


def reset_marks_t(vol: "TSDFVolume", coords: np.ndarray) -> None:
    """Nothing to reset: the torch path does not mark pending blocks in the index."""


def assign_blocks_t(vol: "TSDFVolume", new: np.ndarray, ids: np.ndarray) -> None:
    """Record blocks `new` (int32 [B, 3]) under pool ids `ids` (int64 [B])."""
    c = torch.as_tensor(new, device=vol.device).long()
    i = as_index(vol, ids)
    vol.coords[i] = c.int()
    vol.index[c[:, 0], c[:, 1], c[:, 2]] = i.int()


def write_skin_t(vol: "TSDFVolume", ids: np.ndarray, a: np.ndarray, w: np.ndarray) -> None:
    """Store skinning of whole blocks: a int32 / w float32 [B, bs^3, 4]."""
    i = as_index(vol, ids)
    vol.anchors[i] = torch.as_tensor(a, device=vol.device).int()
    vol.skin_w[i] = torch.as_tensor(w, device=vol.device).float()


def write_skin_voxels_t(vol: "TSDFVolume", bsel: np.ndarray, vsel: np.ndarray, a: np.ndarray, w: np.ndarray) -> None:
    """Store skinning of single voxels (block ids / voxel ids int [M]; a int32 / w float32 [M, 4])."""
    b = as_index(vol, bsel)
    v = as_index(vol, vsel)
    vol.anchors[b, v] = torch.as_tensor(a, device=vol.device).int()
    vol.skin_w[b, v] = torch.as_tensor(w, device=vol.device).float()


# ---------------------------------------------------------------------------------------------- integration


def update_t(vol: "TSDFVolume", frame: RGBDFrame, depth: np.ndarray, aff: np.ndarray, use_warp: bool,
             check_pts: np.ndarray, check_pix: np.ndarray, check_stride: int, check_dist: float,
             carve: np.ndarray | None = None) -> int:
    """Projective TSDF update of all allocated blocks (torch twin of `kernels_nb.integrate_blocks`, including
    its warp-consistency check and the mesh channel's silhouette carving: carve float32 [H, W] from
    `kernels_nb.carve_depth`; None or any other shape: off)."""
    cfg = vol.config
    k = frame.intrinsics
    dev = vol.device
    d_img = torch.as_tensor(np.ascontiguousarray(depth, np.float32), device=dev)
    c_img = torch.as_tensor(np.ascontiguousarray(frame.color), device=dev)
    aff_t = torch.as_tensor(aff, device=dev, dtype=torch.float32)
    local = _local(vol)
    vox = torch.tensor(vol.voxel_size, dtype=torch.float32, device=dev)
    o = torch.as_tensor(vol.origin, dtype=torch.float32, device=dev) + 0.5 * vox
    h, w = k.height, k.width
    trunc = float(vol.trunc)
    use_check = check_dist > 0
    if use_check:
        c_pts = torch.as_tensor(check_pts, device=dev, dtype=torch.float32)
        c_pix = torch.as_tensor(check_pix, device=dev).long()
        prow, pcol = c_pix.shape[0] - 1, c_pix.shape[1] - 1
    use_carve = cfg.mesh_channel and carve is not None and tuple(carve.shape) == (h, w)
    if use_carve:
        carve_img = torch.as_tensor(np.ascontiguousarray(carve, np.float32), device=dev)
    total = 0
    for s in range(0, vol.num_blocks, CHUNK_BLOCKS):
        ids = torch.arange(s, min(s + CHUNK_BLOCKS, vol.num_blocks), device=dev)
        g = vol.coords[ids].long()[:, None, :] * vol.bs + local[None]  # [C, nv, 3]
        p = o + g.float() * vox
        if use_warp:
            an = vol.anchors[ids].long()
            valid = an >= 0
            wa = torch.where(valid, vol.skin_w[ids], torch.zeros_like(vol.skin_w[ids]))
            a = aff_t[an.clamp(min=0)]  # [C, nv, 4, 3, 4]
            moved = torch.einsum("cvkij,cvj->cvki", a[..., :3], p) + a[..., 3]
            x = (wa[..., None] * moved).sum(2)
            ok = valid.any(-1)
        else:
            x = p @ aff_t[0, :, :3].T + aff_t[0, :, 3]
            ok = torch.ones(x.shape[:2], dtype=torch.bool, device=dev)
        z = x[..., 2]
        ok &= z > 1e-6
        zs = torch.where(ok, z, torch.ones_like(z))
        uf = k.fx * x[..., 0] / zs + k.cx
        vf = k.fy * x[..., 1] / zs + k.cy
        ok &= (uf > -0.5) & (uf < w - 0.5) & (vf > -0.5) & (vf < h - 0.5)
        u = torch.where(ok, torch.floor(uf + 0.5), torch.zeros_like(uf)).long().clamp(0, w - 1)
        r = torch.where(ok, torch.floor(vf + 0.5), torch.zeros_like(vf)).long().clamp(0, h - 1)
        d = d_img[r, u]
        d_ok = (d > 0) & (d >= cfg.depth_min) & (d <= cfg.depth_max)
        in_view = ok  # before the depth tests: what carving may mark free
        ok = ok & d_ok
        sdf = d - z
        ok &= sdf >= -trunc
        if use_check:
            q = c_pix[torch.clamp((vf / check_stride + 0.5).floor().long(), 0, prow),
                      torch.clamp((uf / check_stride + 0.5).floor().long(), 0, pcol)]
            e2 = ((p - c_pts[q.clamp(min=0)]) ** 2).sum(-1)
            lim = 1.2 * sdf.abs() + check_dist
            ok &= ~((sdf <= trunc) & (q >= 0) & (e2 > lim * lim))
        t = torch.clamp(sdf / trunc, max=1.0)
        w_old = vol.weight[ids]
        w_new = w_old + 1.0
        vol.tsdf[ids] = torch.where(ok, (vol.tsdf[ids] * w_old + t) / w_new, vol.tsdf[ids])
        if cfg.integrate_color:
            cm = ok & (sdf <= trunc)
            old_c = vol.color[ids].float()
            new_c = torch.clamp(torch.floor((old_c * w_old[..., None] + c_img[r, u].float()) / w_new[..., None] + 0.5), max=255.0)
            vol.color[ids] = torch.where(cm[..., None], new_c.to(torch.uint8), vol.color[ids])
        vol.weight[ids] = torch.where(ok, torch.clamp(w_new, max=float(cfg.max_weight)), w_old)
        if cfg.mesh_channel:
            mtr = float(cfg.mesh_trunc)
            om = ok & (sdf >= -mtr)
            if use_check:  # the check scaled to the mesh band
                lim = 1.2 * sdf.abs() + check_dist * mtr / trunc
                om &= ~((sdf <= mtr) & (q >= 0) & (e2 > lim * lim))
            wm_old = vol.weight_mesh[ids]
            wm_new = wm_old + 1.0
            vol.tsdf_mesh[ids] = torch.where(om, (vol.tsdf_mesh[ids] * wm_old + torch.clamp(sdf / mtr, max=1.0)) / wm_new,
                                             vol.tsdf_mesh[ids])
            vol.weight_mesh[ids] = torch.where(om, torch.clamp(wm_new, max=float(cfg.max_weight)), wm_old)
            if use_carve:
                cz = carve_img[r, u]
                free = in_view & ~d_ok & (cz > 0) & (z <= cz)
                cw = float(cfg.carve_weight)
                wm_old = vol.weight_mesh[ids]
                wm_new = wm_old + cw
                vol.tsdf_mesh[ids] = torch.where(free, (vol.tsdf_mesh[ids] * wm_old + cw) / wm_new, vol.tsdf_mesh[ids])
                vol.weight_mesh[ids] = torch.where(free, torch.clamp(wm_new, max=float(cfg.max_weight)), wm_old)
        total += int(ok.sum())
    return total


# ---------------------------------------------------------------------------------------------- surface points


def _neighbour(vol: "TSDFVolume", g: torch.Tensor, delta: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(block id, voxel id) long [...] of the voxel at global index g + delta (block id -1 when unallocated)."""
    bs = vol.bs
    q = g + torch.tensor(delta, device=g.device)
    blk = torch.div(q, bs, rounding_mode="floor")
    dims = torch.as_tensor(vol.dims, device=g.device)
    inside = torch.all((q >= 0) & (blk < dims), dim=-1)
    bc = torch.where(inside[..., None], blk, torch.zeros_like(blk))
    b = vol.index[bc[..., 0], bc[..., 1], bc[..., 2]].long()
    b = torch.where(inside, b, torch.full_like(b, -1))
    loc = q - blk * bs
    v = (loc[..., 0] * bs + loc[..., 1]) * bs + loc[..., 2]
    return b, v


def surface_points_t(vol: "TSDFVolume", min_weight: float, tsdf_all: torch.Tensor,
                     weight_all: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Torch twin of `kernels_nb.surface_points` over one channel's pool arrays (tsdf_all / weight_all, e.g.
    vol.tsdf / vol.weight; same points, the order may differ). Returns numpy arrays."""
    n = vol.num_blocks
    dev = vol.device
    local = _local(vol)
    g = vol.coords[:n].long()[:, None, :] * vol.bs + local[None]  # [n, nv, 3]
    tsdf = tsdf_all[:n]
    wgt = weight_all[:n]

    def val(b, v):
        ok = b >= 0
        bb = b.clamp(min=0)
        return torch.where(ok, tsdf_all[bb, v], torch.zeros_like(tsdf)), ok & (weight_all[bb, v] >= min_weight)

    # gradient at every voxel (central differences, one-sided where a neighbour is unobserved)
    grad = torch.zeros(g.shape, dtype=torch.float32, device=dev)
    for a in range(3):
        e = [0, 0, 0]
        e[a] = 1
        fp, okp = val(*_neighbour(vol, g, tuple(e)))
        fm, okm = val(*_neighbour(vol, g, tuple(-x for x in e)))
        grad[..., a] = torch.where(okp & okm, 0.5 * (fp - fm),
                                   torch.where(okp, fp - tsdf, torch.where(okm, tsdf - fm, torch.zeros_like(tsdf))))
    base = (wgt >= min_weight) & (tsdf.abs() < 1.0)
    pts, nrm, col = [], [], []
    origin = torch.as_tensor(vol.origin, device=dev, dtype=torch.float64)
    for a in range(3):
        e = [0, 0, 0]
        e[a] = 1
        b1, v1 = _neighbour(vol, g, tuple(e))
        f1, ok1 = val(b1, v1)
        m = base & ok1 & (f1.abs() < 1.0) & ((tsdf < 0) != (f1 < 0))
        bi, vi = torch.nonzero(m, as_tuple=True)
        f0 = tsdf[bi, vi]
        ff = f1[bi, vi]
        t = f0 / (f0 - ff)
        gg = g[bi, vi].double()
        gg[:, a] += t.double()
        pts.append(origin + (gg + 0.5) * vol.voxel_size)
        bb1 = b1[bi, vi]
        vv1 = v1[bi, vi]
        gr = (1 - t)[:, None] * grad[bi, vi] + t[:, None] * grad[bb1, vv1]
        ln = gr.norm(dim=1, keepdim=True)
        nrm.append(torch.where(ln > 0, gr / ln.clamp_min(1e-30), torch.zeros_like(gr)))
        c = (1 - t)[:, None] * vol.color[bi, vi].float() + t[:, None] * vol.color[bb1, vv1].float()
        col.append(torch.clamp(torch.floor(c + 0.5), max=255).to(torch.uint8))
    return (torch.cat(pts).float().cpu().numpy(), torch.cat(nrm).float().cpu().numpy(), torch.cat(col).cpu().numpy())
