"""The canonical TSDF volume: truncated signed distance, weight and color in sparse 8^3 voxel blocks.

Layout: a dense index of blocks over the volume's bounds (`index` int32 [BX, BY, BZ], -1 = not
allocated) and a growing pool of allocated blocks (see `fusion.tsdf.kernels_nb` for the per-voxel arrays
and the voxel numbering). Only blocks touched by the truncation band of some observed surface are
allocated, so memory follows the surface area, not the bounds.

Two backends behind one API: "numba" (CPU kernels) and "torch" (same maths with tensors; runs on CUDA
when present). Integration is rigid (`integrate`, a camera <- canonical pose) or non-rigid
(`integrate_warped`, DynamicFusion): voxel centres are warped forward by a `GraphMotion` with per-voxel
skinning (4 anchors + weights) cached in the pool and refreshed when the graph grows; new blocks are
allocated around the live surface mapped back to canonical space by an approximate inverse warp.

Three rules keep non-rigid fusion from growing phantom surfaces between parts that are close in space
(an arm beside the torso): voxels are skinned only to nodes within coverage radius + truncation
(`skin_reach`), only to the nearest node and its graph neighbours (`default_skinning`), and a near-surface
observation is dropped when the live surface point in front of the voxel maps back (inverse warp) far from
the voxel (`VolumeConfig.warp_check`, see `kernels_nb.integrate_blocks`).

Two signed-distance channels share the blocks, the warp and the colour: the tracking channel (`tsdf`,
`weight`, truncation `trunc_voxels`), whose wide band tolerates the tracker's errors and gives it surface
samples and normals, and the mesh channel (`tsdf_mesh`, `weight_mesh`, truncation `mesh_trunc_voxels`),
which the mesh is extracted from: a narrow band keeps close surfaces apart (an arm hanging beside the
torso) and grazing rays from blurring silhouettes. Measured with the true motion (synthetic scenes, 1 cm
voxels, 90 frames): geometry error humanoid 4.56 -> 2.82 mm, cylinder 3.77 -> 2.27 mm with a 2-voxel mesh
channel beside the 4-voxel tracking one (docs/dev/tracker_experiments.md, fifth round).

Units: metres; the canonical frame is the camera frame of the first fused frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fusion.camera import backproject_depth
from fusion.device import resolve_device  # noqa: F401  (also exported by fusion.tsdf)
from fusion.errors import InputError
from fusion.frame import RGBDFrame
from fusion.graph import DeformationGraph, GraphMotion
from fusion.tsdf import kernels_nb as nb

#: bytes per voxel in the pool: tsdf f32, weight f32, color 3 x u8, anchors 4 x i32, skin weights 4 x f32
BYTES_PER_VOXEL = 4 + 4 + 3 + 16 + 16
#: bytes per voxel of the mesh channel (tsdf f32, weight f32) when it is separate
BYTES_PER_VOXEL_MESH = 4 + 4
#: kernels touching fewer voxels / samples than this run on one thread when config.num_threads == 0: the
#: fork/join of a parallel region costs more than it saves for small jobs. At 1 << 16 a frame's non-rigid
#: integration (~110k voxels at 1 cm) runs on all threads: 2.69 -> 1.84 ms on a quiet 2-core machine
#: (measured; 1 << 20 kept it on one thread, which only paid off on a heavily loaded machine)
PARALLEL_MIN_WORK = 1 << 16
#: the work of one 4-nearest-node grid query in those units (a voxel update ~ 1): ~30-60 node distances and
#: the blend of 4 inverse transforms. 2535 pixel groups at 320x240 run in 0.44 ms on one thread, 0.23 on two
KNN_QUERY_WORK = 100
#: the work of marking one sample's 8 corner blocks (`candidate_blocks`) in those units
BLOCK_MARK_WORK = 16
#: pixel tile of the per-frame max-depth map used to skip blocks that no pixel can update
DEPTH_TILE = 8


@dataclass(frozen=True)
class VolumeConfig:
    """Options of the canonical TSDF volume."""

    voxel_size: float = 0.01
    """edge of a voxel, metres"""
    trunc_voxels: float = 4.0
    """truncation distance in voxels of the tracking channel (the band of the signed distance)"""
    mesh_trunc_voxels: float = 2.0
    """truncation in voxels of the mesh channel that meshes are extracted from (updated from the same
    observations, only within its own band behind the surface); 0 or >= trunc_voxels: no separate channel,
    meshes come from the tracking channel"""
    block_size: int = 8
    """voxels per block edge"""
    max_weight: float = 64.0
    """cap on the per-voxel fusion weight (lets the model follow slow changes)"""
    depth_min: float = 0.1
    """depths below this (metres) are ignored"""
    depth_max: float = 3.0
    """depths above this (metres) are ignored"""
    margin_m: float = 0.05
    """bounds grow by at least this much (metres) around the first frame's object"""
    margin_frac: float = 0.5
    """... and by this fraction of the object's largest extent (room for unseen sides and motion)"""
    memory_budget_gb: float = 2.0
    """the volume may use at most this much memory (GiB); beyond it construction fails up front"""
    max_blocks: int | None = None
    """hard cap on allocated blocks (None: as many as the bounds hold within the budget)"""
    alloc_stride: int = 0
    """pixel stride of block allocation samples (0: from alloc_spacing)"""
    alloc_spacing: float = 1.0
    """automatic stride: samples this many voxels apart on the surface (each marks the blocks within one
    voxel of it; the same samples, mapped to canonical space, serve the warp-consistency check)"""
    carve_px: float = 2.0
    """mesh channel, silhouette carving: a pixel with no valid depth within this many pixels of valid depth (a
    ray just beside the object's silhouette, which passes outside the object) marks the voxels it sees that
    lie no deeper than its nearest valid pixel's depth as free space (+1) in the mesh channel. Without it,
    surface seen only edge-on (the sides of limbs, a turning torso) has observed voxels inside it and never
    observed ones outside, and marching cubes leaves a hole there. 0 disables; the tracking channel is never
    carved"""
    carve_weight: float = 0.5
    """fusion weight of one carving observation (a depth observation weighs 1)"""
    knn_cell: float = 2.0
    """grid cell of the inverse warp's nearest-node search, in node coverage radii (3x3x3 cells searched)"""
    warp_check: float = 0.5
    """non-rigid integration rejects a near-surface observation when the live surface point in front of the
    voxel maps back (inverse warp) farther than 1.2 |sdf| + warp_check x trunc from it; 0 disables"""
    integrate_color: bool = True
    """fuse the color image too"""
    num_threads: int = 0
    """numba threads of the CPU kernels (0: one thread for small jobs, all for large ones)"""

    def __post_init__(self) -> None:
        if not (self.voxel_size > 0 and math.isfinite(self.voxel_size)):
            raise InputError(f"voxel size must be a positive number of metres, got {self.voxel_size}")
        if not self.trunc_voxels >= 1:
            raise InputError(f"truncation must be at least 1 voxel, got {self.trunc_voxels}")
        if not (self.mesh_trunc_voxels == 0 or self.mesh_trunc_voxels >= 1):
            raise InputError(f"mesh truncation must be 0 (off) or at least 1 voxel, got {self.mesh_trunc_voxels}")
        if self.block_size < 2:
            raise InputError(f"block size must be >= 2 voxels, got {self.block_size}")
        if not 0 <= self.carve_px <= DEPTH_TILE:
            raise InputError(f"carve_px must be a number of pixels in [0, {DEPTH_TILE}], got {self.carve_px}")
        if not (self.carve_weight > 0 and math.isfinite(self.carve_weight)):
            raise InputError(f"carve_weight must be positive, got {self.carve_weight}")
        if not 0 <= self.depth_min < self.depth_max:
            raise InputError(f"depth range [{self.depth_min}, {self.depth_max}] m is empty")

    @property
    def trunc(self) -> float:
        """Truncation distance of the tracking channel in metres."""
        return self.trunc_voxels * self.voxel_size

    @property
    def mesh_channel(self) -> bool:
        """Whether the mesh channel is separate (0 < mesh_trunc_voxels < trunc_voxels)."""
        return 0 < self.mesh_trunc_voxels < self.trunc_voxels

    @property
    def carving(self) -> bool:
        """Whether the mesh channel is carved beside silhouettes (a separate mesh channel and carve_px > 0)."""
        return self.mesh_channel and self.carve_px > 0

    @property
    def mesh_trunc(self) -> float:
        """Truncation distance of the mesh channel in metres (the tracking one when it is not separate)."""
        return (self.mesh_trunc_voxels if self.mesh_channel else self.trunc_voxels) * self.voxel_size


def object_bounds(frame: RGBDFrame, depth_min: float, depth_max: float, use_mask: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (lo, hi float64 [3], metres, camera frame) of the valid depth of a frame.

    Pixels count when their depth lies in [depth_min, depth_max] and, when `use_mask` and the frame has a
    mask, inside the mask. The 0.5 / 99.5 percentiles per axis are used so that a few flying pixels do not
    blow up the bounds. Raises InputError when no pixel is valid.
    """
    d = frame.depth
    valid = (d > 0) & (d >= depth_min) & (d <= depth_max) & np.isfinite(d)
    if use_mask and frame.mask is not None:
        valid &= frame.mask.astype(bool)
    if int(valid.sum()) < 16:
        where = " inside the mask" if use_mask and frame.mask is not None else ""
        raise InputError(f"frame {frame.index}: no valid depth in [{depth_min:g}, {depth_max:g}] m{where}")
    pts = backproject_depth(d, frame.intrinsics)[valid].astype(np.float64)
    lo = np.percentile(pts, 0.5, axis=0)
    hi = np.percentile(pts, 99.5, axis=0)
    return lo, hi


def estimate_bytes(n_blocks: int, block_size: int = 8, mesh_channel: bool = True) -> int:
    """Pool memory (bytes) of `n_blocks` allocated blocks of block_size^3 voxels (with a separate mesh
    channel or without)."""
    return int(n_blocks) * block_size**3 * (BYTES_PER_VOXEL + (BYTES_PER_VOXEL_MESH if mesh_channel else 0))


def _inverse_affine_from_motion(graph: DeformationGraph, motion: GraphMotion) -> tuple[np.ndarray, np.ndarray]:
    """(warped nodes g + t float32 [N, 3], inverse maps [R^T | g - R^T (g + t)] float32 [N, 3, 4])."""
    g = np.asarray(graph.nodes, np.float64)
    r = np.asarray(motion.rotations, np.float64)
    t = np.asarray(motion.translations, np.float64)
    rt = np.transpose(r, (0, 2, 1))
    wn = g + t
    inv = np.empty((len(g), 3, 4), np.float32)
    inv[:, :, :3] = rt
    inv[:, :, 3] = g - np.einsum("nij,nj->ni", rt, wn)
    return wn.astype(np.float32), inv


def _pose34(pose: np.ndarray | None) -> np.ndarray:
    """A camera <- canonical pose (4x4 or 3x4, None = identity) as float32 [3, 4]."""
    if pose is None:
        return np.eye(4, dtype=np.float32)[:3].copy()
    p = np.asarray(pose, np.float64)
    if p.shape not in ((4, 4), (3, 4)):
        raise ValueError(f"pose must be 4x4 or 3x4, got {p.shape}")
    return np.ascontiguousarray(p[:3], dtype=np.float32)


def default_skinning(points: np.ndarray, graph: DeformationGraph, reach: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Graph-consistent skinning of canonical points: `fusion.graph.skinning` with 4 anchors within `reach`
    metres (None: the graph module's default), keeping only the anchors that are the nearest anchor or its
    graph neighbours (weights renormalised).

    Plain nearest-node skinning mixes the motions of parts that are close in space but not along the
    surface (an arm and the torso beside it); voxels in the gap between them then move with both and
    leave phantom surfaces. points float32 [M, 3] -> (anchors int32 [M, 4] (-1 = none), weights float32 [M, 4]).
    """
    from fusion.graph import skinning

    a, w = skinning(np.ascontiguousarray(points, np.float32), graph, k=4, reach=reach)
    a = np.ascontiguousarray(a, np.int32)
    w = np.ascontiguousarray(w, np.float32)
    if len(a) == 0 or graph.num_nodes == 0 or graph.edges.size == 0:
        return a, w
    n0 = a[:, 0]
    has = n0 >= 0
    ring = np.asarray(graph.edges)[np.where(has, n0, 0)]  # [M, K]
    linked = (ring[:, :, None] == a[:, None, 1:]).any(axis=1) & (a[:, 1:] >= 0)
    drop = ~linked & has[:, None]
    if drop.any():
        a[:, 1:][drop] = -1
        w[:, 1:][drop] = 0.0
        s = w.sum(axis=1, keepdims=True)
        w = np.where(s > 0, w / np.where(s > 0, s, 1.0), 0.0).astype(np.float32)
    return a, w


class TSDFVolume:
    """Block-sparse canonical TSDF volume with a numba (CPU) or torch (CPU/CUDA) backend.

    Construct with explicit bounds (`lo`, `hi`, metres, canonical frame) or from a first frame with
    `TSDFVolume.from_frame`. The memory guard runs in the constructor: a volume whose pool cannot hold what
    it is asked to (max_blocks, or the first frame's surface) within `memory_budget_gb` raises InputError.
    """

    def __init__(
        self,
        config: VolumeConfig,
        lo: np.ndarray,
        hi: np.ndarray,
        backend: str = "auto",
        device: str = "auto",
        skinning_fn: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        self.config = config
        dev = resolve_device(device)
        if backend == "auto":
            backend = "torch" if dev.startswith("cuda") else "numba"
        if backend not in ("numba", "torch"):
            raise InputError(f"volume backend must be numba or torch, got '{backend}'")
        if backend == "numba" and dev.startswith("cuda"):
            raise InputError("the numba backend runs on the CPU; use backend='torch' for cuda")
        self.backend = backend
        self.device = dev
        self.skinning_fn = skinning_fn or default_skinning
        vs = float(config.voxel_size)
        bs = int(config.block_size)
        self.bs = bs
        self.nv = bs**3
        self.voxel_size = vs
        self.trunc = float(config.trunc)
        self.block_m = bs * vs
        lo = np.asarray(lo, np.float64)
        hi = np.asarray(hi, np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()) or np.any(hi <= lo):
            raise InputError(f"volume bounds are empty or not finite: lo={lo.tolist()} hi={hi.tolist()}")
        self.origin = (np.floor(lo / self.block_m) * self.block_m).astype(np.float64)
        self.dims = np.maximum(1, np.ceil((hi - self.origin) / self.block_m).astype(np.int64))
        total = int(np.prod(self.dims))
        budget = float(config.memory_budget_gb) * 2**30
        index_bytes = total * 4
        region = float(np.prod(self.dims * self.block_m))
        if index_bytes > 0.25 * budget:
            raise InputError(
                f"a {region:.3g} m^3 volume at {vs * 1000:g} mm voxels needs a {index_bytes / 2**30:.2f} GiB block index "
                f"alone (budget {config.memory_budget_gb:g} GiB): use a larger voxel size or a tighter depth range"
            )
        bpb = estimate_bytes(1, bs, config.mesh_channel)
        if config.max_blocks is not None:
            cap = min(int(config.max_blocks), total)
            if cap * bpb + index_bytes > budget:
                raise InputError(
                    f"max_blocks={config.max_blocks} at {vs * 1000:g} mm voxels needs {(cap * bpb + index_bytes) / 2**30:.2f} GiB "
                    f"(budget {config.memory_budget_gb:g} GiB): lower max_blocks or use a larger voxel size"
                )
        else:
            cap = min(total, int((budget - index_bytes) // bpb))
        self.capacity = cap
        self.dropped_blocks = 0
        self._graph: DeformationGraph | None = None
        self._n = 0
        #: canonical positions (float32 [S, 3]) of the live surface samples of the last allocation, i.e. the
        #: live surface mapped back through the (inverse) warp: where new graph nodes may be needed
        self.last_surface_canonical = np.zeros((0, 3), np.float32)
        self._last_pix: tuple[np.ndarray, int] = (np.full((1, 1), -1, np.int32), 1)
        self._carve_buf: np.ndarray | None = None  # the last silhouette-carving map (reused as a buffer)
        #: (canonical surface points float32 [P, 3], sampled pixel -> point map int32, stride) of the last warped
        #: allocation: the warp-consistency check of the next warped update (None after a rigid allocation)
        self.check_data: tuple[np.ndarray, np.ndarray, int] | None = None
        self._alloc_index()
        self._alloc_pool(min(cap, 256))

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_frame(
        cls,
        frame: RGBDFrame,
        config: VolumeConfig,
        backend: str = "auto",
        device: str = "auto",
        use_mask: bool = True,
        skinning_fn: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> "TSDFVolume":
        """A volume whose bounds hold the first frame's object plus a margin (config.margin_m/_frac).

        Raises InputError when the frame has no valid depth (in range / mask) or when the blocks its surface
        needs would not fit in the memory budget.
        """
        lo, hi = object_bounds(frame, config.depth_min, config.depth_max, use_mask)
        ext = float(np.max(hi - lo))
        m = max(config.margin_m, config.margin_frac * ext, 2 * config.trunc)
        vol = cls(config, lo - m, hi + m, backend=backend, device=device, skinning_fn=skinning_fn)
        need = vol.count_new_blocks(frame, use_mask=use_mask)
        if need > vol.capacity:
            raise InputError(
                f"frame {frame.index}: the surface needs about {estimate_bytes(need, vol.bs, config.mesh_channel) / 2**30:.2f} GiB of voxel blocks "
                f"at {config.voxel_size * 1000:g} mm (budget {config.memory_budget_gb:g} GiB): use a larger voxel size "
                f"or a tighter depth range"
            )
        return vol

    def _alloc_index(self) -> None:
        shape = tuple(int(x) for x in self.dims)
        if self.backend == "numba":
            self.index = np.full(shape, -1, np.int32)
        else:
            import torch

            self.index = torch.full(shape, -1, dtype=torch.int32, device=self.device)

    def _alloc_pool(self, cap: int) -> None:
        nv = self.nv
        if self.backend == "numba":
            self.coords = np.zeros((cap, 3), np.int32)
            self.tsdf = np.ones((cap, nv), np.float32)
            self.weight = np.zeros((cap, nv), np.float32)
            self.color = np.zeros((cap, nv, 3), np.uint8)
            self.anchors = np.full((cap, nv, 4), -1, np.int32)
            self.skin_w = np.zeros((cap, nv, 4), np.float32)
            if self.config.mesh_channel:
                self.tsdf_mesh = np.ones((cap, nv), np.float32)
                self.weight_mesh = np.zeros((cap, nv), np.float32)
        else:
            import torch

            d = self.device
            self.coords = torch.zeros((cap, 3), dtype=torch.int32, device=d)
            self.tsdf = torch.ones((cap, nv), dtype=torch.float32, device=d)
            self.weight = torch.zeros((cap, nv), dtype=torch.float32, device=d)
            self.color = torch.zeros((cap, nv, 3), dtype=torch.uint8, device=d)
            self.anchors = torch.full((cap, nv, 4), -1, dtype=torch.int32, device=d)
            self.skin_w = torch.zeros((cap, nv, 4), dtype=torch.float32, device=d)
            if self.config.mesh_channel:
                self.tsdf_mesh = torch.ones((cap, nv), dtype=torch.float32, device=d)
                self.weight_mesh = torch.zeros((cap, nv), dtype=torch.float32, device=d)
        if not self.config.mesh_channel:  # one channel serves both
            self.tsdf_mesh = self.tsdf
            self.weight_mesh = self.weight

    def _grow_pool(self, need: int) -> None:
        cur = int(self.coords.shape[0])
        if need <= cur:
            return
        new_cap = min(self.capacity, max(need, 2 * cur))
        old = self.pool_arrays()
        self._alloc_pool(new_cap)
        n = self._n
        for dst, src in zip(self.pool_arrays(), old):
            dst[:n] = src[:n]

    def pool_arrays(self) -> tuple:
        """The per-block arrays of the pool: coords, tsdf, weight, color, anchors, skin_w, then tsdf_mesh and
        weight_mesh when the mesh channel is separate."""
        arrs = (self.coords, self.tsdf, self.weight, self.color, self.anchors, self.skin_w)
        return arrs + ((self.tsdf_mesh, self.weight_mesh) if self.config.mesh_channel else ())

    # ------------------------------------------------------------------ properties

    @property
    def num_blocks(self) -> int:
        """Allocated blocks."""
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes held by the index and the block pool (its current capacity)."""
        arrs = (self.index, *self.pool_arrays())
        if self.backend == "numba":
            return int(sum(a.nbytes for a in arrs))
        return int(sum(a.numel() * a.element_size() for a in arrs))

    @property
    def graph(self) -> DeformationGraph | None:
        """The graph the cached voxel skinning refers to (None: not skinned yet)."""
        return self._graph

    def stats(self) -> dict[str, Any]:
        """Figures for reports: blocks, voxels, bytes, capacity, dropped blocks, voxel size, backend."""
        return {
            "blocks": self._n,
            "voxels": self._n * self.nv,
            "bytes": self.nbytes,
            "capacity_blocks": self.capacity,
            "dropped_blocks": self.dropped_blocks,
            "voxel_size_m": self.voxel_size,
            "trunc_m": self.trunc,
            "mesh_trunc_m": float(self.config.mesh_trunc),
            "carve_px": float(self.config.carve_px) if self.config.carving else 0.0,
            "backend": self.backend,
            "device": self.device,
        }

    # ------------------------------------------------------------------ allocation

    def _stride(self, frame: RGBDFrame) -> int:
        """Pixel stride of allocation samples: alloc_spacing voxels apart at the nearer depths of the frame."""
        if self.config.alloc_stride > 0:
            return int(self.config.alloc_stride)
        d = frame.depth[::16, ::16].ravel()
        d = d[(d > self.config.depth_min) & (d <= self.config.depth_max)]
        if d.size == 0:
            return 1
        k = frame.intrinsics
        z = float(np.partition(d, d.size // 4)[d.size // 4])
        return max(1, int(self.config.alloc_spacing * self.voxel_size * min(k.fx, k.fy) / z))

    def _band(self, frame: RGBDFrame, use_mask: bool) -> np.ndarray:
        k = frame.intrinsics
        m = frame.mask if (use_mask and frame.mask is not None) else np.zeros((1, 1), np.bool_)
        stride = self._stride(frame)
        with nb.numba_threads(self._threads(k.width * k.height // (stride * stride) * 8)):
            pts, pix = nb.band_samples(
                np.ascontiguousarray(frame.depth, np.float32), stride, k.fx, k.fy, k.cx, k.cy,
                self.config.depth_min, self.config.depth_max, self.trunc, np.ascontiguousarray(m, np.bool_),
                bool(use_mask and frame.mask is not None),
            )
        self._last_pix = (pix, stride)
        return pts

    def count_new_blocks(self, frame: RGBDFrame, pose: np.ndarray | None = None, use_mask: bool = True) -> int:
        """How many blocks a rigid allocation of `frame` at `pose` (camera <- canonical) would add."""
        pts = self._band(frame, use_mask)
        p34 = _pose34(pose).astype(np.float64)
        r, t = p34[:, :3], p34[:, 3]
        can = ((pts - t) @ r).astype(np.float32)
        idx = self.index if self.backend == "numba" else self.index.cpu().numpy()
        with nb.numba_threads(self._threads(len(can) * BLOCK_MARK_WORK)):
            cands = nb.candidate_blocks(can, self.origin, self.block_m, idx, self.voxel_size)
        c = cands[cands >= 0]
        return int(np.unique(c).size)

    def _commit(self, cand: np.ndarray) -> np.ndarray:
        """Allocate the blocks of candidate linear ids; returns the new block ids (int64)."""
        if self.backend == "numba":
            new = nb.mark_new_blocks(np.ascontiguousarray(cand[cand >= 0]), self.index)
        else:
            new = self._t.mark_new_blocks_t(self, cand)
        n_new = int(new.shape[0])
        if n_new == 0:
            return np.zeros(0, np.int64)
        room = self.capacity - self._n
        if n_new > room:
            self.dropped_blocks += n_new - room
            drop = new[room:]
            new = new[:room]
            n_new = room
            if self.backend == "numba":
                self.index[drop[:, 0], drop[:, 1], drop[:, 2]] = -1
            else:
                self._t.reset_marks_t(self, drop)
        self._grow_pool(self._n + n_new)
        ids = np.arange(self._n, self._n + n_new, dtype=np.int64)
        if self.backend == "numba":
            self.coords[ids] = new
            self.index[new[:, 0], new[:, 1], new[:, 2]] = ids.astype(np.int32)
        else:
            self._t.assign_blocks_t(self, new, ids)
        self._n += n_new
        return ids

    @property
    def _t(self):  # the torch kernels module, imported on first use
        from fusion.tsdf import kernels_torch

        return kernels_torch

    def allocate(self, frame: RGBDFrame, pose: np.ndarray | None = None, use_mask: bool = False) -> np.ndarray:
        """Allocate the blocks around the truncation band of `frame`'s surface, rigidly placed by `pose`
        (camera <- canonical, None = identity). Returns the new block ids (int64 [B_new])."""
        p34 = _pose34(pose).astype(np.float64)
        r, t = p34[:, :3], p34[:, 3]
        if self.backend == "numba":
            pts = self._band(frame, use_mask)
            can = ((pts - t) @ r).astype(np.float32)
            with nb.numba_threads(self._threads(len(can) * BLOCK_MARK_WORK)):
                cand = nb.candidate_blocks(can, self.origin, self.block_m, self.index, self.voxel_size)
        else:
            cand, can, pix = self._t.candidates_rigid_t(self, frame, r, t, self._stride(frame), use_mask)
            self._last_pix = (pix, self._stride(frame))
        self.last_surface_canonical = np.ascontiguousarray(can[1::3])
        self.check_data = None
        ids = self._commit(cand)
        self._skin_new(ids)
        return ids

    def allocate_warped(self, frame: RGBDFrame, graph: DeformationGraph, motion: GraphMotion, use_mask: bool = False) -> np.ndarray:
        """Allocate blocks around `frame`'s surface mapped back to the canonical frame by the approximate
        inverse of the warp `motion` (the 4 nearest warped nodes' inverse transforms, blended).
        Returns the new block ids (int64 [B_new])."""
        if graph.num_nodes == 0:
            return self.allocate(frame, None, use_mask)
        wn, inv = _inverse_affine_from_motion(graph, motion)
        sigma = float(graph.radius)
        cell = float(graph.radius) * self.config.knn_cell
        if self.backend == "numba":
            pts = self._band(frame, use_mask)
            with nb.numba_threads(self._threads(len(pts) // 3 * KNN_QUERY_WORK)):
                can = nb.inverse_warp_points(pts, wn, inv, sigma, cell, 3)
            with nb.numba_threads(self._threads(len(can) * BLOCK_MARK_WORK)):
                cand = nb.candidate_blocks(can, self.origin, self.block_m, self.index, self.voxel_size)
        else:
            cand, can, pix = self._t.candidates_warped_t(self, frame, wn, inv, sigma, cell, self._stride(frame), use_mask)
            self._last_pix = (pix, self._stride(frame))
        self.last_surface_canonical = np.ascontiguousarray(can[1::3])
        self.check_data = (self.last_surface_canonical, *self._last_pix)
        self.set_graph(graph)
        ids = self._commit(cand)
        self._skin_new(ids)
        return ids

    def allocate_region(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Allocate every block that overlaps the box [lo, hi] (metres, canonical), e.g. to measure the memory
        of a fully populated region. Returns the new block ids."""
        a = np.clip(np.floor((np.asarray(lo) - self.origin) / self.block_m).astype(np.int64), 0, self.dims - 1)
        b = np.clip(np.ceil((np.asarray(hi) - self.origin) / self.block_m).astype(np.int64), 1, self.dims)
        g = np.stack(np.meshgrid(*[np.arange(a[i], b[i]) for i in range(3)], indexing="ij"), -1).reshape(-1, 3)
        lin = (g[:, 0] * self.dims[1] + g[:, 1]) * self.dims[2] + g[:, 2]
        return self._commit(np.ascontiguousarray(lin, np.int64))

    # ------------------------------------------------------------------ skinning cache

    def voxel_centers(self, ids: np.ndarray) -> np.ndarray:
        """Canonical voxel centres of blocks `ids` (int [B]): float32 [B, bs^3, 3] metres."""
        bs = self.bs
        v = np.arange(self.nv)
        local = np.stack([v // (bs * bs), (v // bs) % bs, v % bs], -1).astype(np.float64)
        c = self.coords[ids] if self.backend == "numba" else self.coords[self._t.as_index(self, ids)].cpu().numpy()
        g = c[:, None, :].astype(np.float64) * bs + local[None] + 0.5
        return (self.origin + g * self.voxel_size).astype(np.float32)

    def _write_skin(self, ids: np.ndarray, a: np.ndarray, w: np.ndarray) -> None:
        if self.backend == "numba":
            self.anchors[ids] = a
            self.skin_w[ids] = w
        else:
            self._t.write_skin_t(self, ids, a, w)

    def skin_reach(self, graph: DeformationGraph) -> float:
        """Skinning reach of voxels (metres): node coverage radius + truncation distance. A voxel in the
        truncation band of a covered surface is within trunc of a surface point that is within radius of a
        node; voxels farther from every node belong to no tracked surface yet and are left alone (warping
        them by distant nodes leaves phantom surfaces)."""
        return float(graph.radius) + self.trunc

    def _skin_new(self, ids: np.ndarray) -> None:
        if self._graph is None or len(ids) == 0 or self._graph.num_nodes == 0:
            return
        pts = self.voxel_centers(ids).reshape(-1, 3)
        a, w = self.skinning_fn(pts, self._graph, self.skin_reach(self._graph))
        self._write_skin(ids, a.reshape(len(ids), self.nv, 4), w.reshape(len(ids), self.nv, 4))

    def set_graph(self, graph: DeformationGraph) -> int:
        """Make the cached per-voxel skinning refer to `graph`. When `graph` extends the cached one (same
        first nodes), only voxels whose skinning may change are re-skinned (`voxels_needing_reskin`);
        otherwise all are.
        Returns the number of voxels re-skinned."""
        old = self._graph
        if old is graph:
            return 0
        n = self._n
        self._graph = graph
        if n == 0 or graph.num_nodes == 0:
            return 0
        n_old = 0 if old is None else old.num_nodes
        same_prefix = (
            old is not None
            and graph.num_nodes >= n_old
            and np.array_equal(np.asarray(graph.nodes[:n_old]), np.asarray(old.nodes))
            and float(graph.radius) == float(old.radius)
        )
        if same_prefix and graph.num_nodes == n_old:
            return 0
        if not same_prefix or n_old == 0:
            ids = np.arange(n, dtype=np.int64)
            self._skin_new(ids)
            return n * self.nv
        anchors = self.anchors[:n] if self.backend == "numba" else self.anchors[:n].cpu().numpy()
        coords = self.coords[:n] if self.backend == "numba" else self.coords[:n].cpu().numpy()
        old_edges = np.asarray(old.edges)
        new_edges = np.asarray(graph.edges)[:n_old]
        if old_edges.shape == new_edges.shape:
            ring_changed = np.any(old_edges != new_edges, axis=1)
        else:
            ring_changed = np.ones(n_old, bool)
        with nb.numba_threads(self._threads(n * self.nv)):
            flag = nb.voxels_needing_reskin(
                n, coords, anchors, np.ascontiguousarray(old.nodes, np.float32),
                np.ascontiguousarray(graph.nodes[n_old:], np.float32), ring_changed, self.skin_reach(graph),
                self.origin, self.voxel_size, self.bs,
            )
        bsel, vsel = np.nonzero(flag)
        if len(bsel) == 0:
            return 0
        ub, inv = np.unique(bsel, return_inverse=True)
        pts = self.voxel_centers(ub)[inv, vsel]  # the flagged voxels' centres
        a, w = self.skinning_fn(pts, graph, self.skin_reach(graph))
        if self.backend == "numba":
            self.anchors[bsel, vsel] = a
            self.skin_w[bsel, vsel] = w
        else:
            self._t.write_skin_voxels_t(self, bsel, vsel, a, w)
        return int(len(bsel))

    # ------------------------------------------------------------------ integration

    def integrate(self, frame: RGBDFrame, pose: np.ndarray | None = None, use_mask: bool = False) -> dict[str, Any]:
        """Rigid fusion of `frame` at `pose` (camera <- canonical, 4x4; None = identity): allocate the blocks
        of its truncation band, then update every allocated block in view. Returns counts (new blocks,
        updated voxels)."""
        ids = self.allocate(frame, pose, use_mask)
        n_upd = self._update(frame, None, None, _pose34(pose), use_mask)
        return {"new_blocks": int(len(ids)), "updated_voxels": n_upd, "blocks": self._n}

    def integrate_warped(self, frame: RGBDFrame, graph: DeformationGraph, motion: GraphMotion, use_mask: bool = False) -> dict[str, Any]:
        """Non-rigid fusion (DynamicFusion) of `frame` whose geometry is the canonical model warped by
        `motion` (canonical -> live): allocate blocks around the inversely-warped live surface, warp the
        allocated voxel centres forward with their cached skinning and update them projectively.
        An empty graph means the identity warp. Returns counts (new blocks, updated voxels, re-skinned)."""
        if motion.num_nodes != graph.num_nodes:
            raise ValueError(f"motion has {motion.num_nodes} nodes, graph {graph.num_nodes}")
        if graph.num_nodes == 0:
            return self.integrate(frame, None, use_mask)
        reskinned = self.set_graph(graph)
        ids = self.allocate_warped(frame, graph, motion, use_mask)
        n_upd = self._update(frame, graph, motion, None, use_mask)
        return {"new_blocks": int(len(ids)), "updated_voxels": n_upd, "blocks": self._n, "reskinned_voxels": reskinned}

    def _update(self, frame: RGBDFrame, graph: DeformationGraph | None, motion: GraphMotion | None,
                pose34: np.ndarray | None, use_mask: bool) -> int:
        if self._n == 0:
            return 0
        cfg = self.config
        k = frame.intrinsics
        depth = frame.depth
        if use_mask and frame.mask is not None:
            depth = np.where(frame.mask, depth, 0).astype(np.float32)
        use_warp = graph is not None
        if use_warp:
            aff = nb.affine_maps(graph.nodes, motion.rotations, motion.translations)
        else:
            aff = np.ascontiguousarray((pose34 if pose34 is not None else _pose34(None))[None], np.float32)
        if use_warp and self.check_data is not None and cfg.warp_check > 0:
            chk_pts, chk_pix, chk_stride = self.check_data
            chk_dist = cfg.warp_check * self.trunc
        else:
            chk_pts, chk_pix, chk_stride, chk_dist = np.zeros((1, 3), np.float32), np.full((1, 1), -1, np.int32), 1, 0.0
        if self.backend == "torch":
            return self._t.update_t(self, frame, depth, aff, use_warp, chk_pts, chk_pix, chk_stride, chk_dist,
                                    self._carve_map(depth))
        depth = np.ascontiguousarray(depth, np.float32)
        with nb.numba_threads(self._threads(self._n * self.nv)):
            tiles = nb.depth_tiles(depth, DEPTH_TILE, cfg.depth_min, cfg.depth_max)
            active = nb.visible_blocks(
                self._n, self.coords, self.anchors, self.skin_w, aff, use_warp, k.fx, k.fy, k.cx, k.cy,
                k.width, k.height, self.origin, self.voxel_size, self.bs, 1.5, tiles, DEPTH_TILE, self.trunc,
            )
            return nb.integrate_blocks(
                active, self.coords, self.tsdf, self.weight, self.color, self.anchors, self.skin_w, aff, use_warp,
                np.ascontiguousarray(depth, np.float32), np.ascontiguousarray(frame.color),
                bool(cfg.integrate_color), k.fx, k.fy, k.cx, k.cy, self.origin, self.voxel_size, self.bs, self.trunc,
                cfg.max_weight, cfg.depth_min, cfg.depth_max, chk_pts, chk_pix, int(chk_stride), float(chk_dist),
                self.tsdf_mesh, self.weight_mesh, float(cfg.mesh_trunc) if cfg.mesh_channel else 0.0,
                self._carve_map(depth, tiles), float(cfg.carve_weight),
            )

    def _carve_map(self, depth: np.ndarray, tiles: np.ndarray | None = None) -> np.ndarray:
        """The silhouette-carving map of a depth image (`kernels_nb.carve_depth`, float32 [H, W]; a buffer the
        next frame reuses), or a 1x1 zero array, which both update kernels take as "off", when the mesh
        channel is not carved. tiles: its `depth_tiles` when at hand."""
        cfg = self.config
        if not cfg.carving:
            return np.zeros((1, 1), np.float32)
        self._carve_buf = nb.carve_depth(depth, cfg.carve_px, cfg.depth_min, cfg.depth_max, DEPTH_TILE, tiles,
                                         self._carve_buf)
        return self._carve_buf

    def _threads(self, work: int) -> int:
        """numba threads for a kernel touching `work` voxels / points (config.num_threads, 0 = by size)."""
        if self.config.num_threads > 0:
            return int(self.config.num_threads)
        return 0 if work >= PARALLEL_MIN_WORK else 1

    # ------------------------------------------------------------------ read-out

    def _channel(self, channel: str) -> tuple[Any, Any]:
        """(tsdf, weight) pool arrays of a channel: "track" or "mesh"."""
        if channel == "track":
            return self.tsdf, self.weight
        if channel == "mesh":
            return self.tsdf_mesh, self.weight_mesh
        raise ValueError(f"channel must be track or mesh, got {channel!r}")

    def blocks(self, channel: str = "track") -> dict[str, np.ndarray]:
        """The allocated blocks as numpy arrays: coords int32 [B, 3], tsdf float32 [B, bs, bs, bs] (i, j, k =
        x, y, z voxel offsets), weight float32 [B, bs, bs, bs] of the channel ("track" or "mesh", see the
        module doc), color uint8 [B, bs, bs, bs, 3], plus origin float64 [3] (metres), voxel_size, block_size
        and trunc (the channel's truncation, metres)."""
        n, bs = self._n, self.bs
        tsdf, weight = self._channel(channel)

        def cpu(a):  # the first n rows as numpy
            return a[:n] if self.backend == "numba" else a[:n].cpu().numpy()

        return {
            "coords": cpu(self.coords).copy(),
            "tsdf": cpu(tsdf).reshape(n, bs, bs, bs).copy(),
            "weight": cpu(weight).reshape(n, bs, bs, bs).copy(),
            "color": cpu(self.color).reshape(n, bs, bs, bs, 3).copy(),
            "origin": self.origin.copy(),
            "voxel_size": self.voxel_size,
            "block_size": bs,
            "trunc": self.trunc if channel == "track" else float(self.config.mesh_trunc),
        }

    def surface_points(self, min_weight: float = 1.0, channel: str = "track") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Canonical surface samples: the TSDF zero crossings on voxel edges of a channel ("track": what the
        tracker and the graph use; "mesh": the sharper surface meshes are extracted from).

        Returns (points float32 [P, 3] metres, normals float32 [P, 3] unit, outward; colors uint8 [P, 3]).
        """
        tsdf, weight = self._channel(channel)
        if self._n == 0:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        if self.backend == "torch":
            return self._t.surface_points_t(self, min_weight, tsdf, weight)
        with nb.numba_threads(self._threads(self._n * self.nv)):
            return nb.surface_points(
                self._n, self.coords, self.index, tsdf, weight, self.color, self.origin, self.voxel_size,
                self.bs, float(min_weight),
            )

    def query_tsdf(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TSDF and weight (tracking channel) of the voxels holding canonical `points` (float [M, 3] metres),
        nearest voxel.

        Returns (tsdf float32 [M] (1 where unallocated), weight float32 [M] (0 where unallocated))."""
        p = np.asarray(points, np.float64)
        g = np.floor((p - self.origin) / self.voxel_size).astype(np.int64)
        bsz = self.bs
        blk = g // bsz
        inside = np.all((blk >= 0) & (blk < self.dims), axis=1)
        out_t = np.ones(len(p), np.float32)
        out_w = np.zeros(len(p), np.float32)
        idx = self.index if self.backend == "numba" else self.index.cpu().numpy()
        bi = np.full(len(p), -1, np.int64)
        bi[inside] = idx[blk[inside, 0], blk[inside, 1], blk[inside, 2]]
        ok = bi >= 0
        loc = g - blk * bsz
        v = (loc[:, 0] * bsz + loc[:, 1]) * bsz + loc[:, 2]
        tsdf = self.tsdf if self.backend == "numba" else self.tsdf.cpu().numpy()
        wgt = self.weight if self.backend == "numba" else self.weight.cpu().numpy()
        out_t[ok] = tsdf[bi[ok], v[ok]]
        out_w[ok] = wgt[bi[ok], v[ok]]
        return out_t, out_w
