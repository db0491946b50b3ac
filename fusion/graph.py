"""Embedded deformation graph over the canonical surface (DynamicFusion / NNRT) and its motion.

Data contracts (../shared/ARCHITECTURE.md):
- DeformationGraph(nodes [N,3] float32 m, edges [N,K] int32 (-1 = none), radius m)
- GraphMotion(rotations [N,3,3] float32, translations [N,3] float32)
The warp of a canonical point p with anchors a_k and skinning weights w_k (sum 1) is
    W(p) = sum_k w_k (R_{a_k} (p - g_{a_k}) + g_{a_k} + t_{a_k})        (NNRT eq. 2)
Node sampling, neighbours, skinning and node insertion are implemented below this header:

- `build_graph`: Poisson-disk node sampling over the surface samples with a coverage radius (every
  sample is within `radius` of a node, nodes are more than `radius` apart), K neighbour edges by
  Euclidean or geodesic (over the surface samples) distance, removal of small isolated clusters;
- `graph_edges_for`: the K Euclidean neighbour edges of a node set;
- `skinning`: anchors / weights exp(-d^2 / 2 sigma^2) over the k nearest nodes, sigma = radius;
- `extend_graph` / `extend_motion`: DynamicFusion node insertion where the surface is uncovered, and the
  motion of the inserted nodes interpolated from the existing graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba as nb
import numpy as np
from scipy.spatial import cKDTree

from fusion.errors import InputError

#: edges longer than this many radii are never made (they would tie separate surfaces together)
MAX_EDGE_FACTOR = 3.0
#: skinning reach in radii: a point farther than this from every node gets no anchors
SKIN_REACH_FACTOR = 2.0


@dataclass
class DeformationGraph:
    """Graph nodes in the canonical frame.

    nodes: float32 [N, 3] metres; edges: int32 [N, K] neighbour ids, -1 = none;
    radius: node coverage radius in metres (skinning sigma follows from it).
    """

    nodes: np.ndarray
    edges: np.ndarray
    radius: float
    edge_weights: np.ndarray | None = None  # float32 [N, K], optional
    edge_mode: str = "euclidean"  # how the edges were measured: "euclidean" | "geodesic"

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.nodes.shape[0])

    @property
    def sigma(self) -> float:
        """Skinning / edge-weight sigma in metres (tied to the coverage radius, as in NNRT)."""
        return float(self.radius)

    @property
    def num_edges(self) -> int:
        """Number of valid (directed) edges."""
        return int((self.edges >= 0).sum())

    def __getstate__(self) -> dict:
        """Pickled without cached lookup tables (attributes starting with "_", e.g. skinning's hop table)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclass
class GraphMotion:
    """Per-node rigid transforms: rotations float32 [N, 3, 3], translations float32 [N, 3] metres."""

    rotations: np.ndarray
    translations: np.ndarray
    meta: dict = field(default_factory=dict)

    @staticmethod
    def identity(n: int) -> "GraphMotion":
        """The motion that leaves every node in place."""
        return GraphMotion(np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)), np.zeros((n, 3), np.float32))

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.translations.shape[0])


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------
def _points_arg(points: np.ndarray, what: str = "points") -> np.ndarray:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"{what} must be an [M, 3] array, got shape {p.shape}")
    p = p.astype(np.float32, copy=False)
    if not np.isfinite(p).all():
        raise InputError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(p)


# --------------------------------------------------------------------------------------------------
# node sampling (Poisson disk with a coverage radius), numba over a sparse cell grid
# --------------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _greedy_cover_kernel(points, order, cell_of_point, neigh_cells, radius, pre_nodes, pre_cell):  # pragma: no cover
    """Visit points in `order`; accept one as a node when no node is within `radius`.

    cell_of_point int64 [M]; neigh_cells int64 [C, 27] (-1 = empty cell); pre_nodes [P,3] / pre_cell [P]:
    nodes that exist already (they block, they are not returned). Returns the accepted point ids.
    """
    n_cells = neigh_cells.shape[0]
    slots = np.full((n_cells, 16), -1, np.int64)  # node ids per cell (nodes > radius apart: <= 8 per cell)
    counts = np.zeros(n_cells, np.int64)
    n_pre = pre_nodes.shape[0]
    store = np.empty((n_pre + points.shape[0], 3), np.float32)
    for j in range(n_pre):
        c = pre_cell[j]
        store[j] = pre_nodes[j]
        if c >= 0 and counts[c] < 16:
            slots[c, counts[c]] = j
            counts[c] += 1
    n_store = n_pre
    accepted = np.empty(points.shape[0], np.int64)
    n_acc = 0
    r2 = radius * radius
    for oi in range(order.shape[0]):
        i = order[oi]
        c = cell_of_point[i]
        px = points[i, 0]
        py = points[i, 1]
        pz = points[i, 2]
        covered = False
        for q in range(27):
            cc = neigh_cells[c, q]
            if cc < 0:
                continue
            for s in range(counts[cc]):
                j = slots[cc, s]
                dx = store[j, 0] - px
                dy = store[j, 1] - py
                dz = store[j, 2] - pz
                if dx * dx + dy * dy + dz * dz <= r2:
                    covered = True
                    break
            if covered:
                break
        if covered:
            continue
        store[n_store] = points[i]
        if counts[c] < 16:
            slots[c, counts[c]] = n_store
            counts[c] += 1
        n_store += 1
        accepted[n_acc] = i
        n_acc += 1
    return accepted[:n_acc]


def _cell_grid(points: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse grid of cubic cells: (cell id per point [M], neighbour cell ids [C,27], origin, key fn data)."""
    origin = points.min(axis=0).astype(np.float64) - cell
    ijk = np.floor((points - origin) / cell).astype(np.int64) + 1
    dims = ijk.max(axis=0) + 3
    keys = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    ukeys, inv = np.unique(keys, return_inverse=True)
    cell_ijk = np.stack([ukeys // (dims[1] * dims[2]), (ukeys // dims[2]) % dims[1], ukeys % dims[2]], axis=1)
    offs = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)], np.int64)
    nijk = cell_ijk[:, None, :] + offs[None]
    nkeys = (nijk[..., 0] * dims[1] + nijk[..., 1]) * dims[2] + nijk[..., 2]
    pos = np.clip(np.searchsorted(ukeys, nkeys), 0, len(ukeys) - 1)
    neigh = np.where(ukeys[pos] == nkeys, pos, -1).astype(np.int64)
    return inv.astype(np.int64).ravel(), neigh, origin, (ukeys, dims)


def sample_nodes(points: np.ndarray, radius: float, existing: np.ndarray | None = None,
                 seed: int | None = 0) -> np.ndarray:
    """Poisson-disk sample of surface points with a coverage radius.

    points float32 [M,3] m; existing float32 [P,3] nodes that already cover (never returned).
    Visits the points in a random order (seeded; None = the given order) and keeps a point when no kept
    node or existing node lies within `radius`. Every point ends up within `radius` of a node, kept nodes
    are more than `radius` apart. Returns the ids (int64 [S], into `points`) of the new nodes.
    """
    pts = _points_arg(points)
    if len(pts) == 0:
        return np.zeros(0, np.int64)
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    pre = np.zeros((0, 3), np.float32) if existing is None else _points_arg(existing, "existing nodes")
    allp = np.concatenate([pts, pre]) if len(pre) else pts
    cell_of, neigh, _, _ = _cell_grid(allp, float(radius))
    order = np.arange(len(pts)) if seed is None else np.random.default_rng(seed).permutation(len(pts))
    return _greedy_cover_kernel(pts, order.astype(np.int64), cell_of[: len(pts)], neigh, np.float32(radius),
                                pre, cell_of[len(pts):])


# --------------------------------------------------------------------------------------------------
# edges
# --------------------------------------------------------------------------------------------------
def graph_edges_for(nodes: np.ndarray, k: int = 8, max_distance: float | None = None) -> np.ndarray:
    """The k nearest other nodes of every node by Euclidean distance.

    nodes float32 [N,3] m. max_distance (m): farther neighbours are not linked (None = no limit).
    Returns int32 [N,k] neighbour ids sorted by distance, -1 where there is none.
    """
    nodes = _points_arg(nodes, "nodes")
    n = len(nodes)
    edges = np.full((n, k), -1, np.int32)
    if n < 2 or k <= 0:
        return edges
    kk = min(k + 1, n)
    d, idx = cKDTree(nodes).query(nodes, k=kk, distance_upper_bound=np.inf if max_distance is None else max_distance)
    d = d.reshape(n, kk)
    idx = idx.reshape(n, kk)
    for i in range(n):  # drop self (normally column 0; robust to duplicates)
        row = [int(j) for j, dj in zip(idx[i], d[i]) if j != i and j < n and np.isfinite(dj)][:k]
        edges[i, : len(row)] = row
    return edges


def _edge_lengths(nodes: np.ndarray, edges: np.ndarray) -> np.ndarray:
    valid = edges >= 0
    e = np.where(valid, edges, 0)
    d = np.linalg.norm(nodes[e] - nodes[:, None, :], axis=-1)
    return np.where(valid, d, np.inf).astype(np.float32)


def edge_weights_for(lengths: np.ndarray, edges: np.ndarray, radius: float) -> np.ndarray:
    """Edge weights exp(-d^2 / 2 radius^2) from edge lengths float [N,K] m; 0 where edges == -1. float32 [N,K]."""
    w = np.exp(-np.square(np.where(edges >= 0, lengths, 0.0)) / (2.0 * radius * radius))
    return np.where(edges >= 0, w, 0.0).astype(np.float32)


def _geodesic_edges(points: np.ndarray, nodes: np.ndarray, k: int, radius: float, max_distance: float,
                    sources: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """K nearest nodes by shortest path over a neighbourhood graph of the surface samples, for the nodes
    `sources` (int ids; None: all); the other rows stay empty (-1 / inf)."""
    from scipy.sparse.csgraph import dijkstra

    # sub-sample the surface at radius/4 so that the geodesic graph stays small
    step = radius / 4.0
    vox = np.floor(points / step).astype(np.int64)
    _, first = np.unique(vox, axis=0, return_index=True)
    surf = np.concatenate([nodes, points[np.sort(first)]])
    tree = cKDTree(surf)
    adj = tree.sparse_distance_matrix(tree, max_distance=step * 2.0, output_type="coo_matrix").tocsr()
    n = len(nodes)
    edges = np.full((n, k), -1, np.int32)
    lengths = np.full((n, k), np.inf, np.float32)
    src = np.arange(n) if sources is None else np.asarray(sources, np.int64)
    for s in range(0, len(src), 256):
        ids = src[s:s + 256]
        d = dijkstra(adj, directed=False, indices=ids, limit=max_distance)[:, :n]  # node i is surf row i
        d[np.arange(len(ids)), ids] = np.inf
        order = np.argsort(d, axis=1)[:, :k]
        dd = np.take_along_axis(d, order, axis=1)
        ok = np.isfinite(dd)
        edges[ids] = np.where(ok, order, -1)
        lengths[ids] = np.where(ok, dd, np.inf)
    return edges, lengths


def _component_sizes(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the (symmetrised) edge graph: (label per node [N], size per label)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = edges.shape[0]
    src = np.repeat(np.arange(n), edges.shape[1])
    dst = edges.ravel()
    ok = dst >= 0
    a = coo_matrix((np.ones(int(ok.sum())), (src[ok], dst[ok])), shape=(n, n))
    _, labels = connected_components(a, directed=False)
    return labels, np.bincount(labels)


def _remap_edges(edges: np.ndarray, keep: np.ndarray) -> np.ndarray:
    new_id = np.full(len(keep), -1, np.int64)
    new_id[keep] = np.arange(int(keep.sum()))
    e = edges[keep]
    return np.where(e >= 0, new_id[np.where(e >= 0, e, 0)], -1).astype(np.int32)


def build_graph(points: np.ndarray, normals: np.ndarray | None = None, radius: float = 0.05, k: int = 8, *,
                edge_mode: str = "euclidean", min_cluster_nodes: int = 3, max_edge_factor: float = MAX_EDGE_FACTOR,
                seed: int | None = 0) -> DeformationGraph:
    """Build the deformation graph over canonical surface samples.

    points float32 [M,3] m (canonical frame); normals float32 [M,3] or None (unused by the sampling; kept
    for the API and for callers that pass oriented samples). radius: node coverage radius in metres
    (NNRT default 0.05). k: neighbour edges per node. edge_mode: "euclidean" (k nearest nodes within
    max_edge_factor * radius) or "geodesic" (k nearest by shortest path over the surface samples, within
    the same distance; separates surfaces that touch in space but not along the surface).
    Connected clusters of fewer than `min_cluster_nodes` nodes are removed (the largest is always kept).
    Raises InputError on empty or non-finite input.
    """
    pts = _points_arg(points)
    if len(pts) == 0:
        raise InputError("cannot build a deformation graph from an empty point set")
    if normals is not None and np.asarray(normals).shape != pts.shape:
        raise InputError(f"normals {np.asarray(normals).shape} do not match points {pts.shape}")
    if edge_mode not in ("euclidean", "geodesic"):
        raise ValueError(f"edge_mode must be 'euclidean' or 'geodesic', got {edge_mode!r}")
    ids = sample_nodes(pts, radius, seed=seed)
    nodes = pts[ids].copy()
    max_d = max_edge_factor * radius
    if edge_mode == "geodesic":
        edges, lengths = _geodesic_edges(pts, nodes, k, radius, max_d)
    else:
        edges = graph_edges_for(nodes, k, max_d)
        lengths = _edge_lengths(nodes, edges)
    if min_cluster_nodes > 1 and len(nodes) > 1:
        labels, sizes = _component_sizes(edges)
        keep = (sizes[labels] >= min_cluster_nodes) | (labels == int(np.argmax(sizes)))
        if not keep.all():
            lengths = lengths[keep]
            edges = _remap_edges(edges, keep)
            nodes = nodes[keep]
    return DeformationGraph(nodes=np.ascontiguousarray(nodes, np.float32), edges=edges, radius=float(radius),
                            edge_weights=edge_weights_for(lengths, edges, radius), edge_mode=edge_mode)


# --------------------------------------------------------------------------------------------------
# skinning
# --------------------------------------------------------------------------------------------------
def skinning(points: np.ndarray, graph: DeformationGraph, k: int = 4, reach: float | None = None,
             max_hops: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Skinning anchors and weights of points over the graph nodes.

    points float32 [M,3] m (canonical frame). Anchors are the k nearest nodes within `reach` metres
    (default 2 * radius) that are at most `max_hops` graph edges away from the nearest one (None: no
    such check): with geodesic edges this keeps a point on one limb from being skinned to a node of a
    limb or surface that only passes close by in space. Weights w = exp(-d^2 / 2 sigma^2),
    sigma = graph.radius, normalised to sum 1 over the valid anchors. Returns (anchors int32 [M,k]
    sorted by distance, -1 = none; weights float32 [M,k], 0 where the anchor is -1). A point with no
    node within reach has all anchors -1.
    """
    pts = _points_arg(points)
    m = len(pts)
    anchors = np.full((m, k), -1, np.int32)
    weights = np.zeros((m, k), np.float32)
    n = graph.num_nodes
    if m == 0 or n == 0:
        return anchors, weights
    reach = SKIN_REACH_FACTOR * graph.radius if reach is None else float(reach)
    kk = min(k, n)
    d, idx = cKDTree(graph.nodes).query(pts, k=kk, distance_upper_bound=reach)
    d = np.asarray(d, np.float64).reshape(m, kk)
    idx = np.asarray(idx).reshape(m, kk)
    valid = np.isfinite(d) & (idx < n)
    if max_hops is not None and kk > 1 and (graph.edges >= 0).any():
        near = _hop_lookup(graph, max_hops)
        first = np.where(valid[:, 0], idx[:, 0], 0)
        for c in range(1, kk):
            ok = valid[:, c]
            if ok.any():
                rows = np.flatnonzero(ok)
                valid[rows, c] = np.asarray(near[first[rows], idx[rows, c]]).ravel() > 0
    w = np.where(valid, np.exp(-np.square(np.where(valid, d, 0.0)) / (2.0 * graph.sigma**2)), 0.0)
    s = w.sum(axis=1, keepdims=True)
    w = np.where(s > 0, w / np.where(s > 0, s, 1.0), 0.0)
    a = np.where(valid, idx, -1)
    # keep the valid anchors first (sorted by distance), -1 after them
    order = np.argsort(~valid, axis=1, kind="stable")
    anchors[:, :kk] = np.take_along_axis(a, order, 1)
    weights[:, :kk] = np.take_along_axis(w, order, 1)
    return anchors, weights


DENSE_HOPS_MAX_NODES = 4096  # up to this many nodes the hop table is a dense bool array (16 MB at most)


def _hop_lookup(graph: DeformationGraph, hops: int):
    """`_hop_matrix` as a table indexable by (node rows, node cols): a dense bool array [N, N] for graphs of up
    to DENSE_HOPS_MAX_NODES nodes (scipy's sparse fancy indexing cost more than the rest of `skinning`),
    else the CSR matrix. Cached on the graph object (skinning runs several times per frame on one graph);
    the cache is dropped when the graph's edges change."""
    cached = graph.__dict__.get("_hop_cache")
    if cached is not None and cached[0] == hops and np.array_equal(cached[1], graph.edges):
        return cached[2]
    near = _hop_matrix(graph, hops)
    if graph.num_nodes <= DENSE_HOPS_MAX_NODES:
        near = near.toarray() > 0
    graph.__dict__["_hop_cache"] = (hops, np.array(graph.edges, copy=True), near)
    return near


def _hop_matrix(graph: DeformationGraph, hops: int):
    """scipy CSR [N,N] with a nonzero where two nodes are at most `hops` (symmetrised) edges apart."""
    from scipy.sparse import coo_matrix, identity

    n = graph.num_nodes
    src = np.repeat(np.arange(n), graph.edges.shape[1])
    dst = graph.edges.ravel()
    ok = (dst >= 0) & (dst < n)
    a = coo_matrix((np.ones(int(ok.sum()), np.float32), (src[ok], dst[ok])), shape=(n, n)).tocsr()
    a = ((a + a.T + identity(n, dtype=np.float32, format="csr")) > 0).astype(np.float32)
    out = a
    for _ in range(max(0, hops - 1)):
        out = ((out @ a) > 0).astype(np.float32)
    return out.tocsr()


# --------------------------------------------------------------------------------------------------
# node insertion (DynamicFusion)
# --------------------------------------------------------------------------------------------------
def uncovered_mask(points: np.ndarray, graph: DeformationGraph) -> np.ndarray:
    """bool [M]: points (float32 [M,3] m, canonical) with no graph node within graph.radius."""
    pts = _points_arg(points)
    if graph.num_nodes == 0:
        return np.ones(len(pts), bool)
    d, _ = cKDTree(graph.nodes).query(pts, k=1, distance_upper_bound=graph.radius * (1 + 1e-6))
    return ~np.isfinite(d)


def extend_graph(graph: DeformationGraph, points: np.ndarray, normals: np.ndarray | None = None, *,
                 k: int | None = None, min_cluster_nodes: int = 3, max_edge_factor: float = MAX_EDGE_FACTOR,
                 seed: int | None = 0) -> tuple[DeformationGraph, int]:
    """Insert nodes where the canonical surface is not covered (DynamicFusion node insertion).

    points float32 [M,3] m: canonical surface samples (e.g. the live frame warped back, or mesh vertices);
    normals: unused, kept for the API. Uncovered points (no node within radius) are Poisson-disk sampled
    with the graph's radius; new nodes are appended after the existing ones (old node ids stay valid),
    new nodes that would form an isolated cluster of fewer than `min_cluster_nodes` nodes are dropped
    (noise), and the edges are recomputed (Euclidean graphs: all nodes; geodesic graphs: the new nodes,
    geodesic over `points`, merged into their neighbours' lists). Returns (graph, n_added); the input
    graph is returned unchanged when nothing is added.
    """
    pts = _points_arg(points)
    if len(pts) == 0:
        return graph, 0
    if graph.num_nodes == 0:
        g = build_graph(pts, None, graph.radius, k or graph.edges.shape[1] or 8, edge_mode=graph.edge_mode,
                        min_cluster_nodes=min_cluster_nodes, max_edge_factor=max_edge_factor, seed=seed)
        return g, g.num_nodes
    kk = int(k or graph.edges.shape[1])
    unc = pts[uncovered_mask(pts, graph)]
    if len(unc) == 0:
        return graph, 0
    new_ids = sample_nodes(unc, graph.radius, existing=graph.nodes, seed=seed)
    if len(new_ids) == 0:
        return graph, 0
    n_old = graph.num_nodes
    nodes = np.concatenate([graph.nodes, unc[new_ids]]).astype(np.float32)
    max_d = max_edge_factor * graph.radius

    def edges_of(nd: np.ndarray) -> np.ndarray:
        if graph.edge_mode == "geodesic":
            return _merge_geodesic(graph, nd, pts, kk, max_d)
        return graph_edges_for(nd, kk, max_d)

    edges = edges_of(nodes)
    if min_cluster_nodes > 1:
        # checked on the graph's own edges: a geodesic graph can give a node close to the graph in space no
        # path to it along the surface samples, i.e. no edges at all; with nothing to hold it, it flies off
        keep = _new_nodes_in_clusters(edges, n_old, min_cluster_nodes)
        if not keep.all():
            nodes = nodes[keep]
            if len(nodes) == n_old:
                return graph, 0
            edges = edges_of(nodes)
    n_added = len(nodes) - n_old
    lengths = _edge_lengths(nodes, edges)  # edge weights from straight-line lengths after insertion
    new = DeformationGraph(nodes=nodes, edges=edges, radius=graph.radius,
                           edge_weights=edge_weights_for(lengths, edges, graph.radius), edge_mode=graph.edge_mode)
    return new, n_added


def _new_nodes_in_clusters(edges: np.ndarray, n_old: int, min_cluster_nodes: int) -> np.ndarray:
    """bool [N]: old nodes, and new nodes (ids >= n_old) whose connected component (edges int [N,K], -1 =
    none) holds an old node or at least min_cluster_nodes nodes."""
    labels, sizes = _component_sizes(edges)
    keep = np.ones(len(edges), bool)
    new_lab = labels[n_old:]
    keep[n_old:] = np.isin(new_lab, np.unique(labels[:n_old])) | (sizes[new_lab] >= min_cluster_nodes)
    return keep


def _merge_geodesic(graph: DeformationGraph, nodes: np.ndarray, pts: np.ndarray, k: int, max_d: float) -> np.ndarray:
    """Old nodes keep their edges; new nodes get geodesic edges over `pts`; links are made symmetric."""
    n_old = graph.num_nodes
    n = len(nodes)
    e_all, _ = _geodesic_edges(pts, nodes, k, graph.radius, max_d, sources=np.arange(n_old, n))
    edges = np.full((n, k), -1, np.int32)
    edges[:n_old, : graph.edges.shape[1]] = graph.edges[:, :k]
    edges[n_old:] = e_all[n_old:]
    for i in range(n_old, n):  # add the new node to its old neighbours' lists when closer than their worst
        for j in edges[i]:
            if j < 0 or j >= n_old or i in edges[j]:
                continue
            row = [int(x) for x in edges[j] if x >= 0] + [i]
            row.sort(key=lambda q: float(np.linalg.norm(nodes[q] - nodes[j])))
            edges[j, :] = -1
            edges[j, : min(k, len(row))] = row[:k]
    return edges


def extend_motion(motion: GraphMotion, graph: DeformationGraph, n_old: int) -> GraphMotion:
    """The motion of a graph extended by `extend_graph`: old nodes keep theirs, new nodes interpolate.

    motion: GraphMotion over the first n_old nodes of `graph`. A new node at g gets the translation
    W(g) - g of the old graph's warp at g (skinning over the old nodes; the nearest old node when none is
    within reach) and the blended rotation sum_k w_k R_k projected onto SO(3). Returns a GraphMotion over
    graph.num_nodes nodes (float32).
    """
    from fusion.warp import warp_points_np

    n = graph.num_nodes
    if motion.num_nodes != n_old:
        raise ValueError(f"motion has {motion.num_nodes} nodes, expected n_old={n_old}")
    if n == n_old:
        return motion
    old_edges = np.where(graph.edges[:n_old] < n_old, graph.edges[:n_old], -1).astype(np.int32)
    old = DeformationGraph(graph.nodes[:n_old], old_edges, graph.radius)
    new_pts = graph.nodes[n_old:]
    anchors, weights = skinning(new_pts, old, k=4)
    none = anchors[:, 0] < 0
    if none.any():
        _, nn = cKDTree(old.nodes).query(new_pts[none], k=1)
        anchors[none, 0] = nn
        weights[none, 0] = 1.0
    warped = warp_points_np(new_pts, anchors, weights, old.nodes, motion.rotations, motion.translations)
    rot_blend = np.einsum("mk,mkij->mij", weights.astype(np.float64),
                          np.asarray(motion.rotations, np.float64)[np.where(anchors >= 0, anchors, 0)])
    u, _, vt = np.linalg.svd(rot_blend)
    det = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= det[:, None]
    rots = u @ vt
    return GraphMotion(
        rotations=np.concatenate([motion.rotations, rots.astype(np.float32)]).astype(np.float32),
        translations=np.concatenate([motion.translations, (warped - new_pts).astype(np.float32)]).astype(np.float32),
        meta=dict(motion.meta),
    )
