"""The non-rigid fusion loop (DynamicFusion): per frame, estimate the graph motion, integrate the live depth
into the canonical TSDF volume through the warp, extend the graph; meshes on request.

The motion comes from any `fusion.motion.MotionEstimator` (fusion never imports tracker/; app/ wires a
tracker in). `IdentityMotion` is the trivial estimator for rigid / static scenes and tests.

Per frame (`FusionPipeline.process`):
  preprocess  resize to the processing resolution, depth outside [depth_min, depth_max] (or outside the
              mask) set invalid; a frame with too little valid depth is skipped ("no_depth")
  init        (first good frame) volume bounds from the frame, rigid integration, graph over its surface
  track       estimator.estimate(TrackingInput) -> motion canonical -> live; a failed / invalid / raising
              estimate skips the frame ("tracker_failed", "tracker_invalid", "tracker_error")
  integrate   warped integration into the volume (allocation through the approximate inverse warp)
  graph       node insertion where the live surface mapped to canonical space is uncovered
  model       canonical surface samples (+ skinning) handed to the tracker for the next frame
Bad frames never stop the loop; they are counted per reason in the report, and the mesh fused so far can
be extracted and exported at any time.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from fusion.errors import InputError
from fusion.frame import RGBDFrame
from fusion.graph import DeformationGraph, GraphMotion
from fusion.meshing import TriMesh, WarpedMeshSequence, extract_mesh, skin_vertices, symmetric_surface_distance, warp_mesh
from fusion.motion import MotionEstimator, TrackingInput, TrackingResult
from fusion.tsdf.volume import TSDFVolume, VolumeConfig

STAGES = ("preprocess", "init", "track", "integrate", "graph", "model")


@dataclass(frozen=True)
class FusionConfig:
    """Options of the fusion loop (metres, pixels)."""

    voxel_size: float = 0.01
    """TSDF voxel edge, metres"""
    trunc_voxels: float = 4.0
    """truncation band in voxels of the tracking channel (what the tracker and the graph see)"""
    mesh_trunc_voxels: float = 2.0
    """truncation band in voxels of the mesh channel that meshes are extracted from (0: meshes from the
    tracking channel; see `fusion.tsdf.volume`)"""
    carve_px: float = 2.0
    """silhouette carving of the mesh channel, pixels (0: off; see `fusion.tsdf.VolumeConfig.carve_px`)"""
    depth_min: float = 0.1
    """nearer depth is ignored, metres"""
    depth_max: float = 3.0
    """farther depth is ignored, metres"""
    node_coverage: float = 0.05
    """deformation-graph node coverage radius, metres (NNRT default)"""
    graph_k: int = 8
    """neighbour edges per graph node"""
    graph_edge_mode: str = "geodesic"
    """graph edges by "geodesic" distance (along the surface: parts close in space but not along the surface
    stay apart; with graph-consistent skinning this halves phantom geometry between an arm and the torso,
    measured) or "euclidean" (node insertion is cheaper); skinning only blends a node with its neighbours"""
    processing_size: tuple[int, int] | None = None
    """(width, height) frames are resized to before processing; None = as delivered"""
    max_frames: int | None = None
    """stop after this many input frames (None = all)"""
    use_mask: bool = True
    """restrict depth to the frame's object mask when it has one"""
    min_valid_pixels: int = 64
    """frames with fewer valid depth pixels are skipped"""
    max_model_points: int = 20000
    """canonical surface samples handed to the tracker (evenly subsampled)"""
    min_weight: float = 1.0
    """voxels with less fusion weight are not part of the surface (model and meshes)"""
    model_channel: str = "track"
    """TSDF channel the tracker's model samples come from: "track" (the wide band the graph is built on) or
    "mesh" (the narrow, carved channel meshes come from; measured, not the default: see
    docs/dev/tracker_experiments.md, eighth round)"""
    extend_graph: bool = True
    """insert graph nodes where new surface appears"""
    max_weight: float = 64.0
    """cap on the per-voxel fusion weight"""
    memory_budget_gb: float = 2.0
    """the TSDF volume may use at most this much memory"""
    backend: str = "auto"
    """volume backend: auto | numba | torch"""
    device: str = "auto"
    """auto | cpu | cuda"""
    freeze_sequence_after: int | None = None
    """after this many fused frames the canonical mesh is frozen and warped every later frame (constant
    connectivity sequence); None = no sequence"""
    num_threads: int = 0
    """numba threads for the volume kernels (0 = by job size)"""
    warp_check: float = 0.5
    """warp-consistency check of non-rigid integration, in truncation distances (0 disables; see VolumeConfig)"""

    def __post_init__(self) -> None:
        if self.model_channel not in ("track", "mesh"):
            raise InputError(f"model_channel must be track or mesh, got {self.model_channel!r}")

    def volume_config(self) -> VolumeConfig:
        """The TSDF volume options implied by this config."""
        return VolumeConfig(
            voxel_size=self.voxel_size, trunc_voxels=self.trunc_voxels, mesh_trunc_voxels=self.mesh_trunc_voxels,
            carve_px=self.carve_px, depth_min=self.depth_min,
            depth_max=self.depth_max, max_weight=self.max_weight, memory_budget_gb=self.memory_budget_gb,
            num_threads=self.num_threads, warp_check=self.warp_check,
        )


class IdentityMotion:
    """The trivial motion estimator: nothing moves (static scenes, rigid tests). Always succeeds."""

    name = "identity"

    def estimate(self, inp: TrackingInput) -> TrackingResult:
        """The identity motion over `inp.graph`'s nodes."""
        return TrackingResult(GraphMotion.identity(inp.graph.num_nodes), ok=True)

    def reset(self) -> None:
        """No state."""


@dataclass
class GroundTruth:
    """Ground-truth surface per frame, as plain arrays (from synthetic scenes).

    vertices: float [T, V, 3] metres, the true surface at each source frame index (camera frame of that
    frame, constant vertex order); faces: int [F, 3].
    """

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, np.float64)
        self.faces = np.asarray(self.faces, np.int64).reshape(-1, 3)
        if self.vertices.ndim != 3 or self.vertices.shape[2] != 3 or self.vertices.shape[1] == 0:
            raise InputError(f"ground-truth vertices must be [T, V, 3], got {self.vertices.shape}")
        if not np.isfinite(self.vertices).all():
            raise InputError("ground-truth vertices hold NaN or infinite values")


def as_groundtruth(obj: Any) -> GroundTruth:
    """A `GroundTruth` from anything with `vertices` [T, V, 3] and `faces` [F, 3] attributes (e.g. the
    `fusion.synthetic` sidecar) or a (vertices, faces) pair."""
    if isinstance(obj, GroundTruth):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2:
        return GroundTruth(obj[0], obj[1])
    return GroundTruth(getattr(obj, "vertices"), getattr(obj, "faces"))


class GroundTruthMotion:
    """An oracle motion estimator for synthetic scenes: each node's transform is the least-squares rigid fit
    (Kabsch) of the true surface vertices around it, from the canonical frame to the live frame.

    Measures fusion (integration, graph, meshing) independently of any tracker, and gives the benchmark a
    real graph motion. gt: true vertices per source frame index (`GroundTruth`); canonical_index: the
    source index of the canonical (first fused) frame; neighbours: true vertices per node fit.
    """

    name = "groundtruth"

    def __init__(self, gt: Any, canonical_index: int = 0, neighbours: int = 16) -> None:
        self.gt = as_groundtruth(gt)
        self.canonical_index = int(canonical_index)
        self.neighbours = int(neighbours)
        self._tree = None
        self._nbr_cache: tuple[int, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the cached neighbourhoods."""
        self._nbr_cache = None

    def motion_for(self, graph: DeformationGraph, index: int) -> GraphMotion:
        """The fitted motion canonical -> frame `index` over `graph`'s nodes."""
        from scipy.spatial import cKDTree

        v0 = self.gt.vertices[self.canonical_index]
        vt = self.gt.vertices[index]
        n = graph.num_nodes
        if self._nbr_cache is None or self._nbr_cache[0] != n:
            k = min(self.neighbours, len(v0))
            _, nbr = cKDTree(v0).query(np.asarray(graph.nodes, np.float64), k=k)
            self._nbr_cache = (n, nbr.reshape(n, k))
        nbr = self._nbr_cache[1]
        a = v0[nbr]  # [N, k, 3]
        b = vt[nbr]
        ca, cb = a.mean(1), b.mean(1)
        h = np.einsum("nki,nkj->nij", a - ca[:, None], b - cb[:, None])
        u, _, vh = np.linalg.svd(h)
        d = np.sign(np.linalg.det(np.einsum("nij,njk->nik", vh.transpose(0, 2, 1), u.transpose(0, 2, 1))))
        dd = np.ones((n, 3))
        dd[:, 2] = d
        r = np.einsum("nji,nj,nkj->nik", vh, dd, u)  # V diag(d) U^T
        g = np.asarray(graph.nodes, np.float64)
        s = cb - np.einsum("nij,nj->ni", r, ca)
        t = s + np.einsum("nij,nj->ni", r, g) - g
        return GraphMotion(r.astype(np.float32), t.astype(np.float32))

    def estimate(self, inp: TrackingInput) -> TrackingResult:
        """The oracle motion of `inp.frame` (fails when the frame has no ground truth)."""
        i = int(inp.frame.index)
        if not 0 <= i < len(self.gt.vertices):
            return TrackingResult(inp.prev_motion, ok=False, message=f"no ground truth for frame {i}")
        return TrackingResult(self.motion_for(inp.graph, i))


@dataclass
class FrameResult:
    """What happened to one input frame: fused (ok) or skipped (reason), stage times (ms), graph size."""

    index: int
    ok: bool
    reason: str = ""
    message: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)
    nodes: int = 0
    tracker_stats: dict = field(default_factory=dict)


def _subsample(n: int, m: int) -> np.ndarray:
    """Evenly spaced indices of m out of n (all when n <= m)."""
    if n <= m:
        return np.arange(n)
    return np.linspace(0, n - 1, m).astype(np.int64)


def _motion_valid(motion: GraphMotion, n: int) -> str:
    r = np.asarray(motion.rotations)
    t = np.asarray(motion.translations)
    if r.shape != (n, 3, 3) or t.shape != (n, 3):
        return f"motion has shapes {r.shape} / {t.shape}, graph has {n} nodes"
    if not (np.isfinite(r).all() and np.isfinite(t).all()):
        return "motion holds NaN or infinite values"
    return ""


class FusionPipeline:
    """DynamicFusion loop over RGB-D frames with a pluggable motion estimator (see the module docstring)."""

    def __init__(self, config: FusionConfig, estimator: MotionEstimator | None = None,
                 on_frame: Callable[[FrameResult], None] | None = None) -> None:
        self.config = config
        self.estimator: MotionEstimator = estimator if estimator is not None else IdentityMotion()
        self.on_frame = on_frame
        self.volume: TSDFVolume | None = None
        self.graph = DeformationGraph(np.zeros((0, 3), np.float32), np.zeros((0, config.graph_k), np.int32),
                                      float(config.node_coverage))
        self.motion = GraphMotion.identity(0)
        self.model: dict[str, np.ndarray] | None = None
        self.canonical_frame: RGBDFrame | None = None  # the preprocessed frame the volume was initialised from
        self.sequence: WarpedMeshSequence | None = None
        self.frames_in = 0
        self.frames_fused = 0
        self.skipped: dict[str, int] = {}
        self.last_messages: dict[str, str] = {}
        self.stage_ms: dict[str, list[float]] = {s: [] for s in STAGES}
        self.frame_ms: list[float] = []
        self.motions: dict[int, GraphMotion] = {}
        self._gt_vis: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ per frame

    def _preprocess(self, frame: RGBDFrame) -> RGBDFrame:
        cfg = self.config
        if cfg.processing_size is not None and tuple(cfg.processing_size) != (frame.intrinsics.width, frame.intrinsics.height):
            frame = frame.resized(int(cfg.processing_size[0]), int(cfg.processing_size[1]))
        d = np.asarray(frame.depth, np.float32)
        bad = ~np.isfinite(d) | (d < cfg.depth_min) | (d > cfg.depth_max)
        if cfg.use_mask and frame.mask is not None:
            bad |= ~frame.mask.astype(bool)
        if bad.any():
            d = np.where(bad, 0.0, d).astype(np.float32)
        return RGBDFrame(frame.index, frame.timestamp_s, frame.color, d, frame.intrinsics, frame.mask, frame.meta)

    def _skip(self, res: FrameResult, reason: str, message: str) -> FrameResult:
        res.ok = False
        res.reason = reason
        res.message = message
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.last_messages[reason] = message
        return res

    def process(self, frame: RGBDFrame) -> FrameResult:
        """Fuse one frame (or skip it, counting the reason). Raises InputError only when the volume cannot be
        created (it would not fit in the memory budget); every other problem skips the frame."""
        t_start = time.perf_counter()
        self.frames_in += 1
        res = FrameResult(index=int(frame.index), ok=True)
        t0 = time.perf_counter()
        frame = self._preprocess(frame)
        res.stage_ms["preprocess"] = (time.perf_counter() - t0) * 1e3
        n_valid = int((frame.depth > 0).sum())
        if n_valid < self.config.min_valid_pixels:
            self._skip(res, "no_depth", f"frame {frame.index}: {n_valid} valid depth pixels")
        elif self.volume is None:
            self._init(frame, res)
        else:
            self._fuse(frame, res)
        res.nodes = self.graph.num_nodes
        if res.ok:
            self.frames_fused += 1
            for k, v in res.stage_ms.items():
                self.stage_ms.setdefault(k, []).append(v)
            self.motions[res.index] = self.motion
            self._after_fused(res.index)
        self.frame_ms.append((time.perf_counter() - t_start) * 1e3)
        if self.on_frame is not None:
            self.on_frame(res)
        return res

    def _init(self, frame: RGBDFrame, res: FrameResult) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        self.volume = TSDFVolume.from_frame(frame, cfg.volume_config(), backend=cfg.backend, device=cfg.device,
                                            use_mask=False)
        self.volume.integrate(frame)
        self.canonical_frame = frame
        self.estimator.reset()
        self._try_build_graph()
        self._refresh_model()
        res.stage_ms["init"] = (time.perf_counter() - t0) * 1e3

    def _try_build_graph(self) -> None:
        """Build the graph over the canonical surface when there is none yet (needs a few surface samples)."""
        from fusion.graph import build_graph

        if self.graph.num_nodes > 0 or self.volume is None:
            return
        pts, nrm, _ = self.volume.surface_points(self.config.min_weight)
        if len(pts) < 16:
            return
        try:
            g = build_graph(pts, nrm, radius=self.config.node_coverage, k=self.config.graph_k,
                            edge_mode=self.config.graph_edge_mode)
        except (InputError, ValueError):
            return
        if g.num_nodes == 0:
            return
        self.graph = g
        self.motion = GraphMotion.identity(g.num_nodes)
        self.volume.set_graph(g)

    def _refresh_model(self) -> None:
        pts, nrm, col = self.volume.surface_points(self.config.min_weight, channel=self.config.model_channel)
        idx = _subsample(len(pts), self.config.max_model_points)
        pts, nrm, col = pts[idx], nrm[idx], col[idx]
        if self.graph.num_nodes:
            a, w = skin_vertices(pts, self.graph)
        else:
            a, w = np.full((len(pts), 4), -1, np.int32), np.zeros((len(pts), 4), np.float32)
        self.model = {"points": pts, "normals": nrm, "colors": col, "anchors": a, "weights": w}

    def _fuse(self, frame: RGBDFrame, res: FrameResult) -> None:
        cfg = self.config
        vol = self.volume
        # ---- track
        t0 = time.perf_counter()
        motion = self.motion
        if self.graph.num_nodes > 0:
            m = self.model
            inp = TrackingInput(frame, self.graph, self.motion, m["points"], m["normals"], m["anchors"], m["weights"],
                                m["colors"], self.canonical_frame)
            try:
                out = self.estimator.estimate(inp)
            except Exception as e:  # a tracker bug or a singular system must not end the run
                res.stage_ms["track"] = (time.perf_counter() - t0) * 1e3
                self._skip(res, "tracker_error", f"frame {frame.index}: {type(e).__name__}: {e}")
                return
            res.stage_ms["track"] = (time.perf_counter() - t0) * 1e3
            res.tracker_stats = dict(out.stats)
            if not out.ok:
                self._skip(res, "tracker_failed", f"frame {frame.index}: {out.message or 'tracker gave up'}")
                return
            why = _motion_valid(out.motion, self.graph.num_nodes)
            if why:
                self._skip(res, "tracker_invalid", f"frame {frame.index}: {why}")
                return
            motion = out.motion
        else:
            res.stage_ms["track"] = (time.perf_counter() - t0) * 1e3
        # ---- integrate
        t0 = time.perf_counter()
        vol.integrate_warped(frame, self.graph, motion)
        res.stage_ms["integrate"] = (time.perf_counter() - t0) * 1e3
        self.motion = motion
        # ---- graph
        t0 = time.perf_counter()
        if self.graph.num_nodes == 0:
            self._try_build_graph()
        elif cfg.extend_graph and len(vol.last_surface_canonical):
            from fusion.graph import extend_graph, extend_motion

            pts = vol.last_surface_canonical
            pts = pts[_subsample(len(pts), 4 * cfg.max_model_points)]
            n_old = self.graph.num_nodes
            g, n_added = extend_graph(self.graph, pts)
            if n_added > 0:
                self.motion = extend_motion(self.motion, g, n_old)
                self.graph = g
                vol.set_graph(g)
        res.stage_ms["graph"] = (time.perf_counter() - t0) * 1e3
        # ---- model for the next frame
        t0 = time.perf_counter()
        self._refresh_model()
        res.stage_ms["model"] = (time.perf_counter() - t0) * 1e3

    def _after_fused(self, index: int) -> None:
        n = self.config.freeze_sequence_after
        if n is None:
            return
        if self.sequence is None and self.frames_fused >= n:
            mesh = self.canonical_mesh()
            if mesh.num_faces:
                self.sequence = WarpedMeshSequence.freeze(mesh, self.graph)
        if self.sequence is not None:
            self.sequence.add(index, self.graph, self.motion)

    # ------------------------------------------------------------------ whole runs

    def run(self, frames: Iterable[RGBDFrame], groundtruth: Any = None,
            progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Process `frames` (up to config.max_frames) and return the report (`report`). groundtruth: anything
        `as_groundtruth` accepts; adds the geometry / deformation errors to the report."""
        import itertools

        groundtruth = None if groundtruth is None else as_groundtruth(groundtruth)
        for i, frame in enumerate(itertools.islice(frames, self.config.max_frames)):
            res = self.process(frame)
            if groundtruth is not None and res.ok:
                self._gt_observe(frame, groundtruth)
            if progress is not None:
                progress(i)
        return self.report(groundtruth)

    # ------------------------------------------------------------------ meshes

    def canonical_mesh(self) -> TriMesh:
        """Marching cubes of the canonical volume (empty before the first fused frame)."""
        if self.volume is None:
            return TriMesh.empty()
        return extract_mesh(self.volume, self.config.min_weight)

    def live_mesh(self, canonical: TriMesh | None = None) -> TriMesh:
        """The canonical mesh warped by the current motion (the live camera frame of the last fused frame)."""
        mesh = self.canonical_mesh() if canonical is None else canonical
        return warp_mesh(mesh, self.graph, self.motion)

    def export(self, path, which: str = "canonical") -> TriMesh:
        """Extract the canonical or live mesh and write it (`fusion.export.save_mesh`, atomic). Returns it."""
        from fusion.export import save_mesh

        if which not in ("canonical", "live"):
            raise ValueError(f"which must be canonical or live, got {which}")
        mesh = self.canonical_mesh() if which == "canonical" else self.live_mesh()
        save_mesh(path, mesh)
        return mesh

    # ------------------------------------------------------------------ ground truth

    def _gt_observe(self, frame: RGBDFrame, gt: GroundTruth) -> None:
        """Remember which ground-truth vertices the (preprocessed) frame sees, for the evaluation."""
        if not 0 <= frame.index < len(gt.vertices):
            return
        f = self._preprocess(frame)
        k = f.intrinsics
        v = gt.vertices[frame.index]
        z = v[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.floor(k.fx * v[:, 0] / z + k.cx + 0.5)
            r = np.floor(k.fy * v[:, 1] / z + k.cy + 0.5)
        inside = (z > 0) & (u >= 0) & (u < k.width) & (r >= 0) & (r < k.height)
        d = np.zeros(len(v))
        d[inside] = f.depth[r[inside].astype(int), u[inside].astype(int)]
        tol = max(2 * self.config.voxel_size, 0.01)
        vis = inside & (d > 0) & (np.abs(d - z) < tol)
        self._gt_vis[frame.index] = (vis, v)

    def evaluate(self, gt: GroundTruth, mesh: TriMesh | None = None) -> dict[str, Any]:
        """Geometry and deformation errors (mm) against ground truth (mesh: the canonical mesh when already
        extracted).

        geometry_error_mm: symmetric mean surface distance between the canonical mesh and the ground-truth
        canonical surface (the true surface at the first fused frame), restricted to the true faces whose
        vertices some fused frame observed (depth within max(2 voxels, 1 cm) of the true vertex).
        deformation_error_mm: mean over fused frames and observed true vertices covered by the graph of
        |W_t(v_0) - v_t|: the true canonical vertex warped by the estimated motion of frame t against its
        true position in frame t, whether or not frame t sees the vertex (a limb hidden behind the torso
        counts). deformation_error_visible_mm: the same over the vertices frame t sees (the protocol of
        DeepDeform-style end-point errors, which exist only where the target frame observes the surface).
        """
        out: dict[str, Any] = {"geometry_error_mm": None, "deformation_error_mm": None}
        if not self._gt_vis or self.volume is None:
            return out
        first, seen = self._gt_observed(gt)
        v0 = gt.vertices[first]
        faces = gt.faces[seen[gt.faces].all(axis=1)] if len(gt.faces) else gt.faces
        out["gt_observed_fraction"] = float(seen.mean())
        mesh = self.canonical_mesh() if mesh is None else mesh
        if mesh.num_faces and len(faces):
            sym, acc, comp = symmetric_surface_distance(mesh.vertices, mesh.faces, v0, faces)
            out["geometry_error_mm"] = 1e3 * sym
            out["geometry_accuracy_mm"] = 1e3 * acc
            out["geometry_completeness_mm"] = 1e3 * comp
        per_frame, coverage = self._deformation_terms(gt)
        if per_frame:
            out["deformation_error_mm"] = 1e3 * float(np.concatenate([e for _, e, _ in per_frame]).mean())
            out["deformation_coverage"] = coverage
            ev = np.concatenate([e[vis] for _, e, vis in per_frame])
            out["deformation_error_visible_mm"] = 1e3 * float(ev.mean()) if len(ev) else None
        return out

    def _gt_observed(self, gt: GroundTruth) -> tuple[int, np.ndarray]:
        """(source index of the first fused frame, bool [V]: true vertices some fused frame observed)."""
        first = min(self._gt_vis)
        seen = np.zeros(len(gt.vertices[first]), bool)
        for vis, _ in self._gt_vis.values():
            seen |= vis
        return first, seen

    def deformation_errors(self, gt: GroundTruth) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Per fused frame after the first (sorted by source index): (index, errors float [V'] metres, visible
        bool [V']) of the true canonical vertices some fused frame observed and the graph covers, warped by
        that frame's estimated motion against their true positions (the terms of `evaluate`'s
        deformation errors; visible: the frame sees the vertex). Empty without a graph or observations."""
        return self._deformation_terms(gt)[0]

    def _deformation_terms(self, gt: GroundTruth) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], float | None]:
        """(`deformation_errors`, fraction of the observed true vertices the graph covers or None)."""
        if not self._gt_vis or not self.graph.num_nodes:
            return [], None
        from fusion.tsdf.volume import default_skinning
        from fusion.warp import warp_points

        first, seen = self._gt_observed(gt)
        pts = gt.vertices[first][seen].astype(np.float32)
        a, w = default_skinning(pts, self.graph)
        cov = a[:, 0] >= 0
        out = []
        for idx, (vis, vt) in sorted(self._gt_vis.items()):
            if idx == first or idx not in self.motions:
                continue
            m = self.motions[idx]
            n = m.num_nodes
            ok = cov & np.all(a < n, axis=1)
            if not ok.any():
                continue
            moved = warp_points(pts[ok], a[ok], w[ok], self.graph.nodes[:n], m.rotations, m.translations)
            out.append((idx, np.linalg.norm(moved - vt[seen][ok], axis=1), vis[seen][ok]))
        return out, float(cov.mean())

    # ------------------------------------------------------------------ report

    def report(self, groundtruth: Any = None, mesh: TriMesh | None = None) -> dict[str, Any]:
        """The replay report: frames, fps, stage_ms (median per stage), device, tracker, nodes, mesh counts,
        skipped frames per reason; geometry / deformation errors (mm) when ground truth is given."""
        total_s = sum(self.frame_ms) / 1e3
        mesh = self.canonical_mesh() if mesh is None else mesh
        rep: dict[str, Any] = {
            "frames": self.frames_in,
            "frames_fused": self.frames_fused,
            "frames_skipped": int(sum(self.skipped.values())),
            "skipped": dict(self.skipped),
            "skip_messages": dict(self.last_messages),
            "fps": (self.frames_in / total_s) if total_s > 0 else None,
            "frame_ms_median": float(np.median(self.frame_ms)) if self.frame_ms else None,
            "stage_ms": {k: float(np.median(v)) for k, v in self.stage_ms.items() if v},
            "device": self.volume.device if self.volume is not None else None,
            "backend": self.volume.backend if self.volume is not None else None,
            "tracker": getattr(self.estimator, "name", type(self.estimator).__name__),
            "nodes": self.graph.num_nodes,
            "mesh": {"vertices": mesh.num_vertices, "faces": mesh.num_faces},
            "volume": self.volume.stats() if self.volume is not None else None,
            "config": asdict(self.config),
        }
        if groundtruth is not None:
            rep.update(self.evaluate(as_groundtruth(groundtruth), mesh))
        return rep
