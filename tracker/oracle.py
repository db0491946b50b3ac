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

`OracleDegradation` spoils them on purpose (a window of frames, a random fraction, pixel noise, wrong
matches, the depth read from the live frame as a network's would be) to measure how good a real
correspondence source would have to be (docs/dev/tracker_experiments.md, ninth round).

The gap between its figures and the ground-truth motion's (`fusion.pipeline.GroundTruthMotion`, the
per-node fit of the true surface) is what the solve itself (graph, skinning, energy) costs; the gap between
"visible" and "all" what occlusion costs; the gap to the plain tracker what its correspondences cost.
`bench/scene_sweep.py --motion perfect-visible|perfect-all|oracle` prints them per scene draw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.camera import project
from fusion.motion import TrackingInput, TrackingResult
from tracker.classical import ClassicalTracker, ClassicalTrackerConfig, Correspondences

MODES = ("visible", "all")


@dataclass(frozen=True)
class OracleDegradation:
    """How `PerfectCorrespondenceTracker` spoils its exact correspondences (defaults: not at all).

    frames: (first, last) source frame indices, inclusive, that get correspondences, or several such windows
      ((first, last), ...), kept as a tuple of windows; the plain tracker tracks the others (None: every
      frame). fraction: the random share of the correspondences kept. noise_px: Gaussian noise (sigma,
      pixels, each axis) added to the target pixels. outliers: the share of the kept ones moved uniformly up
      to outlier_px pixels off (each axis). live_depth: the target depth is read from the frame's depth at the
      rounded target pixel, as a correspondence network's would be (a pixel without depth drops the match),
      instead of the exact one. seed: of the random choices.
    """

    frames: tuple[int, int] | tuple[tuple[int, int], ...] | None = None
    fraction: float = 1.0
    noise_px: float = 0.0
    outliers: float = 0.0
    outlier_px: float = 30.0
    live_depth: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frames is not None:
            object.__setattr__(self, "frames", self._windows(self.frames))
        if not 0.0 <= self.fraction <= 1.0 or not 0.0 <= self.outliers <= 1.0:
            raise ValueError("fraction and outliers must lie in [0, 1]")
        if self.noise_px < 0 or self.outlier_px < 0:
            raise ValueError("noise_px and outlier_px must not be negative")

    @staticmethod
    def _windows(frames: Any) -> tuple[tuple[int, int], ...]:
        """`frames` as a tuple of (first, last) windows; ValueError when it is not one window or several."""
        try:
            wins = [frames] if len(frames) == 2 and all(np.ndim(f) == 0 for f in frames) else list(frames)
            out = tuple((int(a), int(b)) for a, b in wins)
        except (TypeError, ValueError):
            out = ()
        if not out or any(a > b for a, b in out):
            raise ValueError(f"frames must be (first, last) with first <= last, or a list of such windows, "
                             f"got {frames!r}")
        return out

    def active(self, index: int) -> bool:
        """Whether source frame `index` gets correspondences."""
        return self.frames is None or any(a <= index <= b for a, b in self.frames)

    def apply(self, corr: Correspondences, depth: np.ndarray, rng: np.random.Generator) -> Correspondences:
        """The spoiled copy of exact correspondences in a frame with depth float [H, W] metres."""
        keep = rng.random(len(corr.sample_ids)) < self.fraction
        ids, uv, z = corr.sample_ids[keep], corr.target_uv[keep].astype(np.float64), corr.target_depth[keep]
        if self.noise_px > 0:
            uv = uv + rng.normal(0.0, self.noise_px, uv.shape)
        if self.outliers > 0:
            bad = rng.random(len(uv)) < self.outliers
            uv[bad] += rng.uniform(-self.outlier_px, self.outlier_px, (int(bad.sum()), 2))
        if self.live_depth:
            h, w = depth.shape
            ui = np.clip(np.round(uv[:, 0]).astype(np.int64), 0, w - 1)
            vi = np.clip(np.round(uv[:, 1]).astype(np.int64), 0, h - 1)
            z = np.asarray(depth)[vi, ui].astype(np.float64)
            ok = z > 0
            ids, uv, z = ids[ok], uv[ok], z[ok]
        return Correspondences(ids, uv, z, np.ones(len(ids)))


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
    true live depth of a sample and the frame's depth at its pixel for it to count as seen; degrade: how to
    spoil them (`OracleDegradation`; None: exact, every frame).
    """

    name = "perfect-correspondences"

    def __init__(self, gt: Any, config: ClassicalTrackerConfig | None = None, mode: str = "visible",
                 max_offset: float = 0.01, visible_tolerance: float = 0.015,
                 degrade: OracleDegradation | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__(config)
        from fusion.pipeline import as_groundtruth

        self.gt = as_groundtruth(gt)
        self.mode = mode
        self.max_offset = float(max_offset)
        self.visible_tolerance = float(visible_tolerance)
        self.degrade = degrade
        self._rng = np.random.default_rng(degrade.seed if degrade is not None else 0)
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
        """Exact correspondences of inp's model samples (see the class doc; spoiled by `degrade` when set):
        sample ids [C], target pixels float [C, 2] and depths float [C] metres in inp.frame, weights 1."""
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
        corr = Correspondences(ids, np.c_[u, v][ids], z[ids], np.ones(len(ids)))
        return corr if self.degrade is None else self.degrade.apply(corr, np.asarray(inp.frame.depth), self._rng)

    def estimate(self, inp: TrackingInput) -> TrackingResult:
        """One frame with the exact (or `degrade`d) correspondences beside the tracker's own terms; outside
        the degradation's frame window, the tracker alone."""
        if self.degrade is not None and not self.degrade.active(int(inp.frame.index)):
            self.counts[int(inp.frame.index)] = 0
            return self.estimate_with_correspondences(inp, None)
        corr = self.correspondences(inp)
        self.counts[int(inp.frame.index)] = int(len(corr.sample_ids))
        return self.estimate_with_correspondences(inp, corr if len(corr.sample_ids) else None)
