"""Perfect correspondences for the classical tracker: how far exact data would take it (synthetic scenes).

`PerfectCorrespondenceTracker` is a `ClassicalTracker` that gets, every frame, the exact live position of
its model samples from the ground truth, as NNRT 2D + depth correspondences (what a flawless correspondence
network would give it, issue #4's upper bound), on top of its own depth ICP, photometric and ARAP terms:

- each canonical model sample is mapped to the closest point of the true canonical surface (barycentric on
  the true mesh, open3d `RaycastingScene`); samples farther than `max_offset` from it (phantom surface
  fused from misaligned depth, which has no true position) get none;
- its true live position is the same barycentric point on the live true mesh, plus its offset from the
  surface along the triangle's normal (the normal turned with the triangle); "visible" mode keeps only
  samples whose live position the frame sees (its pixel's depth within `visible_tolerance`), "all" keeps
  every sample (occlusion removed too).

The gap between its figures and the ground-truth motion's (`fusion.pipeline.GroundTruthMotion`, the
per-node fit of the true surface) is what the solve itself (graph, skinning, energy) costs; the gap between
"visible" and "all" what occlusion costs; the gap to the plain tracker what its correspondences cost.
`bench/scene_sweep.py --motion perfect-visible|perfect-all|oracle` prints them per scene draw.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fusion.camera import project
from fusion.motion import TrackingInput, TrackingResult
from tracker.classical import ClassicalTracker, ClassicalTrackerConfig, Correspondences

MODES = ("visible", "all")


def _unit_normals(tri: np.ndarray) -> np.ndarray:
    """Unit normals of triangles float [M, 3 corners, 3] (zero for degenerate ones): float [M, 3]."""
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 0, n / np.where(length > 0, length, 1.0), 0.0)


class PerfectCorrespondenceTracker(ClassicalTracker):
    """The classical tracker with exact correspondences from the ground truth (synthetic scenes only).

    gt: `fusion.pipeline.GroundTruth`-like (vertices float [T, V, 3] metres per source frame index, faces
    int [F, 3]); mode: "visible" or "all" (see the module doc); max_offset: metres a model sample may lie
    off the true canonical surface and still get a correspondence; visible_tolerance: metres between the
    true live depth of a sample and the frame's depth at its pixel for it to count as seen.
    """

    name = "perfect-correspondences"

    def __init__(self, gt: Any, config: ClassicalTrackerConfig | None = None, mode: str = "visible",
                 max_offset: float = 0.01, visible_tolerance: float = 0.015) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(config)
        from fusion.pipeline import as_groundtruth

        self.gt = as_groundtruth(gt)
        self.mode = mode
        self.max_offset = float(max_offset)
        self.visible_tolerance = float(visible_tolerance)
        self._scene: tuple[int, Any] | None = None
        #: correspondences given per frame (source frame index -> count)
        self.counts: dict[int, int] = {}

    def _raycaster(self, canonical_index: int):
        import open3d as o3d

        if self._scene is None or self._scene[0] != canonical_index:
            mesh = o3d.t.geometry.TriangleMesh()
            mesh.vertex.positions = o3d.core.Tensor(self.gt.vertices[canonical_index].astype(np.float32))
            mesh.triangle.indices = o3d.core.Tensor(self.gt.faces.astype(np.int32))
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(mesh)
            self._scene = (canonical_index, scene)
        return self._scene[1]

    def correspondences(self, inp: TrackingInput) -> Correspondences:
        """Exact correspondences of inp's model samples (see the class doc): sample ids [C], target pixels
        float [C, 2] and depths float [C] metres in inp.frame, weights 1."""
        import open3d as o3d

        can = int(inp.canonical_frame.index) if inp.canonical_frame is not None else 0
        idx = int(inp.frame.index)
        if not (0 <= idx < len(self.gt.vertices) and 0 <= can < len(self.gt.vertices)):
            raise ValueError(f"no ground truth for frame {idx} (canonical {can})")
        pts = np.ascontiguousarray(inp.model_points, np.float32)
        hit = self._raycaster(can).compute_closest_points(o3d.core.Tensor(pts))
        tri = self.gt.faces[hit["primitive_ids"].numpy().astype(np.int64)]
        uv = hit["primitive_uvs"].numpy().astype(np.float64)
        bary = np.c_[1.0 - uv.sum(1), uv]
        v_can, v_live = self.gt.vertices[can][tri], self.gt.vertices[idx][tri]  # [M, 3 corners, 3]
        closest = hit["points"].numpy().astype(np.float64)
        # the sample's offset from the surface, along the triangle's normal, moves with the triangle
        offset = np.einsum("mj,mj->m", pts - closest, _unit_normals(v_can))
        live = np.einsum("mk,mkj->mj", bary, v_live) + offset[:, None] * _unit_normals(v_live)
        k = inp.frame.intrinsics
        uv, z = project(live, k)
        u, v = uv[:, 0], uv[:, 1]
        ok = (np.linalg.norm(closest - pts, axis=1) <= self.max_offset) & (z > 1e-6)
        ok &= inp.model_anchors[:, 0] >= 0
        if self.mode == "visible":
            rows = np.flatnonzero(ok)
            ui, vi = np.round(u[rows]).astype(np.int64), np.round(v[rows]).astype(np.int64)
            inside = (ui >= 0) & (ui < k.width) & (vi >= 0) & (vi < k.height)
            rows, ui, vi = rows[inside], ui[inside], vi[inside]
            ok = np.zeros(len(pts), bool)
            ok[rows] = np.abs(np.asarray(inp.frame.depth)[vi, ui] - z[rows]) < self.visible_tolerance
        ids = np.flatnonzero(ok)
        return Correspondences(ids, np.c_[u, v][ids], z[ids], np.ones(len(ids)))

    def estimate(self, inp: TrackingInput) -> TrackingResult:
        """One frame with the exact correspondences (`correspondences`) beside the tracker's own terms."""
        corr = self.correspondences(inp)
        self.counts[int(inp.frame.index)] = int(len(corr.sample_ids))
        return self.estimate_with_correspondences(inp, corr if len(corr.sample_ids) else None)
