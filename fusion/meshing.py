"""Meshes from the canonical TSDF volume: marching cubes, the live warped mesh, warped-mesh sequences.

- `extract_mesh`: marching cubes (scikit-image, Lewiner) of the block-sparse volume assembled densely over
  the bounding box of its allocated blocks, so block seams need no special case. Only edges whose two
  voxels are observed (weight >= min_weight) and not a truncation jump (+1 next to -1) make vertices;
  faces touching any other vertex are dropped. Vertex colors are interpolated from the voxel colors,
  normals are area-weighted face normals pointing outside (toward positive TSDF).
- `warp_mesh`: the live mesh, vertices and normals warped by a `GraphMotion` (`fusion.warp`).
- `WarpedMeshSequence`: a canonical mesh frozen once and warped per frame (constant connectivity).

Conventions: vertices float32 [V, 3] metres, faces int32 [F, 3] (counter-clockwise seen from outside),
normals float32 [V, 3] unit, colors uint8 [V, 3] RGB.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fusion.graph import DeformationGraph, GraphMotion


@dataclass
class TriMesh:
    """A triangle mesh with per-vertex normals and colors (see the module conventions)."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None

    @property
    def num_vertices(self) -> int:
        """V."""
        return int(len(self.vertices))

    @property
    def num_faces(self) -> int:
        """F."""
        return int(len(self.faces))

    @property
    def is_empty(self) -> bool:
        """True when the mesh has no faces."""
        return self.num_faces == 0

    @staticmethod
    def empty() -> "TriMesh":
        """A mesh with no vertices and no faces."""
        return TriMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros((0, 3), np.float32),
                       np.zeros((0, 3), np.uint8))

    def copy(self) -> "TriMesh":
        """A deep copy."""
        return TriMesh(self.vertices.copy(), self.faces.copy(),
                       None if self.normals is None else self.normals.copy(),
                       None if self.colors is None else self.colors.copy())


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (float32 [V, 3], unit; zero for isolated vertices) of a mesh whose faces
    are counter-clockwise seen from the side the normals point to."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    n = np.zeros_like(v)
    if len(f):
        tri = v[f]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 x area
        for c in range(3):
            np.add.at(n, f[:, c], fn)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(ln > 0, n / np.where(ln > 0, ln, 1.0), 0.0).astype(np.float32)


def dense_from_blocks(blocks: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Assemble block-sparse volume data densely over the bounding box of its blocks.

    blocks: the dict of `TSDFVolume.blocks()` (coords int32 [B, 3], tsdf/weight [B, bs, bs, bs], color
    [B, bs, bs, bs, 3]). Returns (tsdf float32 [X, Y, Z] (1 outside blocks), weight float32 [X, Y, Z]
    (0 outside blocks), color uint8 [X, Y, Z, 3], first global voxel index int64 [3]).
    """
    c = np.asarray(blocks["coords"], np.int64)
    bs = int(blocks["block_size"])
    lo = c.min(axis=0)
    dims = c.max(axis=0) - lo + 1
    rel = c - lo
    t6 = np.ones(tuple(dims) + (bs, bs, bs), np.float32)
    w6 = np.zeros(tuple(dims) + (bs, bs, bs), np.float32)
    c6 = np.zeros(tuple(dims) + (bs, bs, bs, 3), np.uint8)
    t6[rel[:, 0], rel[:, 1], rel[:, 2]] = blocks["tsdf"]
    w6[rel[:, 0], rel[:, 1], rel[:, 2]] = blocks["weight"]
    c6[rel[:, 0], rel[:, 1], rel[:, 2]] = blocks["color"]
    shape = tuple(int(d) * bs for d in dims)
    tsdf = t6.transpose(0, 3, 1, 4, 2, 5).reshape(shape)
    weight = w6.transpose(0, 3, 1, 4, 2, 5).reshape(shape)
    color = c6.transpose(0, 3, 1, 4, 2, 5, 6).reshape(shape + (3,))
    return tsdf, weight, color, lo * bs


def marching_cubes_masked(tsdf: np.ndarray, weight: np.ndarray, min_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of a dense TSDF grid restricted to observed voxels.

    tsdf / weight float32 [X, Y, Z]. A vertex (on a grid edge) is kept when both edge voxels have
    weight >= min_weight and are not both truncated (|tsdf| >= 1); faces with a dropped vertex are removed.
    Returns (vertices float64 [V, 3] in voxel index units, faces int64 [F, 3] counter-clockwise seen from
    positive TSDF).
    """
    from skimage.measure import marching_cubes

    obs = weight >= min_weight
    if not obs.any() or min(tsdf.shape) < 2:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    vol = np.where(obs, tsdf, 1.0).astype(np.float32)
    if vol.min() >= 0 or vol.max() <= 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    try:
        v, f, _, _ = marching_cubes(vol, level=0.0, gradient_direction="descent", allow_degenerate=False)
    except (RuntimeError, ValueError):  # no surface at level 0
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    v = v.astype(np.float64)
    a = np.floor(v).astype(np.int64)
    frac = v - a
    axis = np.argmax(frac, axis=1)
    b = a.copy()
    has = frac[np.arange(len(v)), axis] > 0
    b[np.arange(len(v))[has], axis[has]] += 1
    hi = np.array(vol.shape) - 1
    a = np.clip(a, 0, hi)
    b = np.clip(b, 0, hi)
    ta = tsdf[a[:, 0], a[:, 1], a[:, 2]]
    tb = tsdf[b[:, 0], b[:, 1], b[:, 2]]
    ok = obs[a[:, 0], a[:, 1], a[:, 2]] & obs[b[:, 0], b[:, 1], b[:, 2]]
    ok &= ~((np.abs(ta) >= 1.0) & (np.abs(tb) >= 1.0))
    f = f[ok[f].all(axis=1)]
    used = np.unique(f)
    remap = np.full(len(v), -1, np.int64)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def _interp_colors(color: np.ndarray, weight: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of voxel colors (uint8 [X, Y, Z, 3]) at index-space points [V, 3], using only
    observed voxels (weight > 0). Returns uint8 [V, 3]."""
    a = np.floor(pts).astype(np.int64)
    t = pts - a
    hi = np.array(color.shape[:3]) - 1
    acc = np.zeros((len(pts), 3))
    wsum = np.zeros(len(pts))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                idx = np.clip(a + np.array([dx, dy, dz]), 0, hi)
                w = (t[:, 0] if dx else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1]) * (t[:, 2] if dz else 1 - t[:, 2])
                w = w * (weight[idx[:, 0], idx[:, 1], idx[:, 2]] > 0)
                acc += w[:, None] * color[idx[:, 0], idx[:, 1], idx[:, 2]]
                wsum += w
    return np.clip(np.round(acc / np.maximum(wsum, 1e-12)[:, None]), 0, 255).astype(np.uint8)


def extract_mesh(volume, min_weight: float = 1.0, channel: str = "mesh") -> TriMesh:
    """Marching cubes of a `fusion.tsdf.TSDFVolume` (its `channel`: "mesh", the narrow-band one, or "track")
    or of a `blocks()` dict, in the canonical frame.

    Returns a TriMesh (vertices float32 metres, faces int32, outward normals, interpolated colors); an empty
    mesh when nothing has been fused yet.
    """
    blocks = volume if isinstance(volume, dict) else volume.blocks(channel)
    if len(blocks["coords"]) == 0:
        return TriMesh.empty()
    tsdf, weight, color, g0 = dense_from_blocks(blocks)
    v_idx, faces = marching_cubes_masked(tsdf, weight, min_weight)
    if len(faces) == 0:
        return TriMesh.empty()
    vs = float(blocks["voxel_size"])
    verts = (np.asarray(blocks["origin"], np.float64) + (g0 + v_idx + 0.5) * vs).astype(np.float32)
    return TriMesh(verts, faces.astype(np.int32), vertex_normals(verts, faces), _interp_colors(color, weight, v_idx))


def skin_vertices(vertices: np.ndarray, graph: DeformationGraph) -> tuple[np.ndarray, np.ndarray]:
    """Skinning of surface points / mesh vertices (float32 [V, 3], canonical) to the graph: the same
    graph-consistent rule as the volume's voxels (`fusion.tsdf.volume.default_skinning`, the graph module's
    reach); vertices with no node within reach follow their nearest node alone. Returns (anchors int32
    [V, 4], weights float32 [V, 4])."""
    from scipy.spatial import cKDTree

    from fusion.tsdf.volume import default_skinning

    v = np.ascontiguousarray(vertices, np.float32)
    a, w = default_skinning(v, graph)
    none = a[:, 0] < 0
    if none.any() and graph.num_nodes > 0:
        _, nn = cKDTree(graph.nodes).query(v[none], k=1)
        a[none] = -1
        a[none, 0] = nn
        w[none] = 0
        w[none, 0] = 1
    return a, w


def warp_mesh(mesh: TriMesh, graph: DeformationGraph, motion: GraphMotion, anchors: np.ndarray | None = None,
              weights: np.ndarray | None = None) -> TriMesh:
    """The live mesh: canonical `mesh` warped by `motion` (vertices by the blended node transforms, normals by
    the blended rotations; `fusion.warp`). anchors / weights (int32 / float32 [V, 4]) default to
    `skin_vertices`. An empty graph leaves the mesh unchanged (identity warp)."""
    from fusion.warp import warp_normals, warp_points

    if mesh.num_vertices == 0 or graph.num_nodes == 0:
        return mesh.copy()
    if anchors is None or weights is None:
        anchors, weights = skin_vertices(mesh.vertices, graph)
    n = graph.num_nodes
    v = warp_points(mesh.vertices, anchors, weights, graph.nodes, motion.rotations[:n], motion.translations[:n])
    nrm = mesh.normals if mesh.normals is not None else vertex_normals(mesh.vertices, mesh.faces)
    nn = warp_normals(nrm, anchors, weights, motion.rotations[:n])
    return TriMesh(v, mesh.faces.copy(), nn, None if mesh.colors is None else mesh.colors.copy())


@dataclass
class WarpedMeshSequence:
    """A canonical mesh frozen once (constant connectivity) and its warped vertices per frame.

    canonical: the frozen mesh; anchors int32 [V, 4] / weights float32 [V, 4]: its skinning to the graph at
    freeze time (node ids stay valid because the graph only appends nodes); frames: list of
    (frame index, vertices float32 [V, 3], normals float32 [V, 3]) in the live camera frame of that frame.
    """

    canonical: TriMesh
    anchors: np.ndarray
    weights: np.ndarray
    num_nodes: int
    frames: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)

    @staticmethod
    def freeze(mesh: TriMesh, graph: DeformationGraph) -> "WarpedMeshSequence":
        """Freeze `mesh` (canonical) and skin it to `graph`."""
        a, w = skin_vertices(mesh.vertices, graph) if graph.num_nodes else (
            np.full((mesh.num_vertices, 4), -1, np.int32), np.zeros((mesh.num_vertices, 4), np.float32))
        return WarpedMeshSequence(mesh.copy(), a, w, graph.num_nodes)

    def add(self, frame_index: int, graph: DeformationGraph, motion: GraphMotion) -> TriMesh:
        """Warp the frozen mesh by the motion of frame `frame_index` (graph may have grown since the freeze:
        only the first `num_nodes` nodes are used). Returns the warped mesh and records it."""
        n = self.num_nodes
        if n == 0:
            m = self.canonical.copy()
        else:
            sub = DeformationGraph(graph.nodes[:n], graph.edges[:n], graph.radius)
            sub_motion = GraphMotion(motion.rotations[:n], motion.translations[:n])
            m = warp_mesh(self.canonical, sub, sub_motion, self.anchors, self.weights)
        self.frames.append((int(frame_index), m.vertices, m.normals))
        return m

    def __len__(self) -> int:
        return len(self.frames)

    def mesh(self, i: int) -> TriMesh:
        """The i-th recorded warped mesh (same faces and colors as the canonical one)."""
        _, v, n = self.frames[i]
        return TriMesh(v, self.canonical.faces, n, self.canonical.colors)


# ----------------------------------------------------------------------------------------------------------
# surface distances (ground-truth evaluation)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """`n` points sampled uniformly by area on a triangle mesh: float64 [n, 3] (vertices float [V, 3],
    faces int [F, 3]); the vertices themselves when the mesh has no faces."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    if len(f) == 0:
        return v[rng.choice(len(v), size=min(n, len(v)), replace=False)] if len(v) else np.zeros((0, 3))
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return tri.reshape(-1, 3)[:n]
    fi = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    return np.einsum("nk,nkd->nd", w, tri[fi])


def point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance from points p to triangles (a, b, c), row by row (all float [M, 3]) -> [M].

    Closest-point-on-triangle by Voronoi regions (Ericson, Real-Time Collision Detection, 5.1.5)."""
    p, a, b, c = (np.asarray(x, np.float64) for x in (p, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    d1 = (ab * ap).sum(1)
    d2 = (ac * ap).sum(1)
    bp = p - b
    d3 = (ab * bp).sum(1)
    d4 = (ac * bp).sum(1)
    cp = p - c
    d5 = (ab * cp).sum(1)
    d6 = (ac * cp).sum(1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v = np.where(denom != 0, vb / denom, 0.0)
        w = np.where(denom != 0, vc / denom, 0.0)
        q = a + ab * v[:, None] + ac * w[:, None]  # interior
        # edge regions
        t_ab = np.where(d1 - d3 != 0, d1 / (d1 - d3), 0.0)
        e_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        q = np.where(e_ab[:, None], a + t_ab[:, None] * ab, q)
        t_ac = np.where(d2 - d6 != 0, d2 / (d2 - d6), 0.0)
        e_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        q = np.where(e_ac[:, None], a + t_ac[:, None] * ac, q)
        t_bc = np.where((d4 - d3) + (d5 - d6) != 0, (d4 - d3) / ((d4 - d3) + (d5 - d6)), 0.0)
        e_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
        q = np.where(e_bc[:, None], b + t_bc[:, None] * (c - b), q)
    # vertex regions
    q = np.where(((d1 <= 0) & (d2 <= 0))[:, None], a, q)
    q = np.where(((d3 >= 0) & (d4 <= d3))[:, None], b, q)
    q = np.where(((d6 >= 0) & (d5 <= d6))[:, None], c, q)
    return np.linalg.norm(p - q, axis=1)


def point_mesh_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, candidates: int = 16) -> np.ndarray:
    """Distance (float64 [M], mesh units) from each point to a triangle mesh: the exact point-triangle distance
    minimised over the `candidates` triangles with the nearest centroids (exact for meshes whose triangles
    are small against the distances of interest)."""
    from scipy.spatial import cKDTree

    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    p = np.asarray(points, np.float64)
    if len(f) == 0:
        d, _ = cKDTree(v).query(p, k=1)
        return d
    kk = min(candidates, len(f))
    cen = v[f].mean(axis=1)
    _, idx = cKDTree(cen).query(p, k=kk)
    idx = idx.reshape(len(p), kk)
    best = np.full(len(p), np.inf)
    for j in range(kk):
        fj = f[idx[:, j]]
        best = np.minimum(best, point_triangle_distance(p, v[fj[:, 0]], v[fj[:, 1]], v[fj[:, 2]]))
    return best


def symmetric_surface_distance(v_a: np.ndarray, f_a: np.ndarray, v_b: np.ndarray, f_b: np.ndarray,
                               n: int = 20000, seed: int = 0) -> tuple[float, float, float]:
    """Symmetric mean surface distance between meshes A and B (same units as the vertices).

    `n` area-uniform samples on each surface are measured to the other surface (exact point-to-triangle).
    Returns (symmetric = (mean A->B + mean B->A) / 2, mean A->B, mean B->A).
    """
    pa = sample_surface(v_a, f_a, n, seed)
    pb = sample_surface(v_b, f_b, n, seed + 1)
    if len(pa) == 0 or len(pb) == 0:
        return float("nan"), float("nan"), float("nan")
    ab = float(point_mesh_distance(pa, v_b, f_b).mean())
    ba = float(point_mesh_distance(pb, v_a, f_a).mean())
    return 0.5 * (ab + ba), ab, ba
