"""tracker.oracle.PerfectCorrespondenceTracker: exact correspondences from the ground truth of a synthetic scene."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.bench_fusion import scene_and_truth
from fusion.graph import GraphMotion, build_graph, skinning
from fusion.motion import TrackingInput
from fusion.pipeline import FusionConfig, FusionPipeline, GroundTruthMotion
from tracker.classical import ClassicalTracker
from tracker.oracle import OracleDegradation, PerfectCorrespondenceTracker


@pytest.fixture(scope="module")
def humanoid():
    scene, gt = scene_and_truth("humanoid", 8, 160, 120)
    return scene, gt


def _input(scene, gt, index: int, points: np.ndarray) -> TrackingInput:
    graph = build_graph(points.astype(np.float32), None, radius=0.05)
    an, aw = skinning(points.astype(np.float32), graph)
    normals = np.tile(np.float32([0, 0, -1]), (len(points), 1))
    return TrackingInput(scene.render(index), graph, GraphMotion.identity(graph.num_nodes), points.astype(np.float32),
                         normals, an, aw, canonical_frame=scene.render(0))


def test_correspondences_are_the_true_live_positions_of_seen_samples(humanoid):
    scene, gt = humanoid
    rng = np.random.default_rng(0)
    v0 = gt.vertices[0]
    tri = gt.faces[rng.integers(0, len(gt.faces), 3000)]
    bary = rng.dirichlet(np.ones(3), len(tri))
    on_surface = np.einsum("mk,mkj->mj", bary, v0[tri])
    tr = PerfectCorrespondenceTracker(gt, mode="visible")
    # phantom samples, more than 1 cm off the true surface, have no true position
    import open3d as o3d

    shifted = (on_surface[:400] + np.float64([0.0, 0.0, -0.03])).astype(np.float32)
    off = tr._raycaster(0).compute_distance(o3d.core.Tensor(shifted)).numpy()
    phantom = shifted[off > 0.01]
    assert len(phantom) > 100
    inp = _input(scene, gt, 5, np.r_[on_surface, phantom])
    c = tr.correspondences(inp)
    assert c.sample_ids.max() < len(on_surface)  # phantom samples get none
    truth = np.einsum("mk,mkj->mj", bary, gt.vertices[5][tri])[c.sample_ids]
    k = inp.frame.intrinsics
    assert np.allclose(c.target_depth, truth[:, 2], atol=1e-6)
    assert np.allclose(c.target_uv[:, 0], k.fx * truth[:, 0] / truth[:, 2] + k.cx, atol=1e-3)
    # visible ones lie on the frame's depth; the back of the body is not seen
    u, v = np.round(c.target_uv).astype(int).T
    assert np.abs(inp.frame.depth[v, u] - c.target_depth).max() < 0.015
    every = PerfectCorrespondenceTracker(gt, mode="all").correspondences(inp)
    assert len(on_surface) * 0.15 < len(c.sample_ids) < 0.8 * len(every.sample_ids)
    assert len(every.sample_ids) > 0.95 * len(on_surface)


def test_a_sample_off_the_surface_keeps_its_offset_along_the_turned_normal(humanoid):
    """A sample 4 mm off the true surface (fused surfaces are never exact) corresponds to the point 4 mm off the
    live surface along the live triangle's normal, not to the live surface itself."""
    scene, gt = humanoid
    from tracker.oracle import _unit_normals

    rng = np.random.default_rng(1)
    tri = gt.faces[rng.integers(0, len(gt.faces), 2000)]
    bary = rng.dirichlet(np.ones(3) * 5, len(tri))  # away from edges: the closest point stays on the triangle
    v0, v5 = gt.vertices[0][tri], gt.vertices[5][tri]
    pts = np.einsum("mk,mkj->mj", bary, v0) + 0.004 * _unit_normals(v0)
    inp = _input(scene, gt, 5, pts)
    c = PerfectCorrespondenceTracker(gt, mode="all").correspondences(inp)
    truth = (np.einsum("mk,mkj->mj", bary, v5) + 0.004 * _unit_normals(v5))[c.sample_ids]
    assert len(c.sample_ids) > 0.9 * len(pts)
    # most samples find their own triangle as the closest; thin parts may give a neighbour's
    err = np.abs(c.target_depth - truth[:, 2])
    assert np.median(err) < 1e-5 and np.mean(err < 1e-4) > 0.9


def test_bad_mode_and_frame_without_truth(humanoid):
    scene, gt = humanoid
    with pytest.raises(ValueError, match="mode"):
        PerfectCorrespondenceTracker(gt, mode="some")
    inp = _input(scene, gt, 3, gt.vertices[0][::7])
    inp.frame.index = 99
    with pytest.raises(ValueError, match="no ground truth"):
        PerfectCorrespondenceTracker(gt).correspondences(inp)


def test_exact_correspondences_track_closer_than_the_plain_tracker():
    """On a short humanoid run exact correspondences bring the tracker near the ground-truth motion."""
    scene, gt = scene_and_truth("humanoid", 12, 320, 240)
    frames = [scene.render(i) for i in range(12)]

    def run(est):
        return FusionPipeline(FusionConfig(device="cpu", processing_size=(160, 120)), est).run(frames, groundtruth=gt)

    plain = run(ClassicalTracker())["deformation_error_mm"]
    perfect = run(PerfectCorrespondenceTracker(gt, mode="all"))["deformation_error_mm"]
    oracle = run(GroundTruthMotion(gt))["deformation_error_mm"]
    assert perfect < plain and perfect < 1.5 * oracle + 1.0, (plain, perfect, oracle)


def test_degraded_correspondences_are_thinned_noisy_and_windowed(humanoid):
    """OracleDegradation: the kept share, the pixel noise, the wrong matches and the live-depth targets are
    what was asked, and frames outside the window get no correspondences (the plain tracker tracks them)."""
    scene, gt = humanoid
    rng = np.random.default_rng(1)
    v0 = gt.vertices[0]
    tri = gt.faces[rng.integers(0, len(gt.faces), 4000)]
    pts = np.einsum("mk,mkj->mj", rng.dirichlet(np.ones(3), len(tri)), v0[tri])
    inp = _input(scene, gt, 5, pts)
    exact = PerfectCorrespondenceTracker(gt).correspondences(inp)
    half = PerfectCorrespondenceTracker(gt, degrade=OracleDegradation(fraction=0.5)).correspondences(inp)
    assert 0.4 < len(half.sample_ids) / len(exact.sample_ids) < 0.6
    assert np.isin(half.sample_ids, exact.sample_ids).all()
    noisy = PerfectCorrespondenceTracker(gt, degrade=OracleDegradation(noise_px=2.0)).correspondences(inp)
    assert np.array_equal(noisy.sample_ids, exact.sample_ids)
    d = noisy.target_uv - exact.target_uv
    assert 1.7 < d.std() < 2.3 and abs(d.mean()) < 0.2
    assert np.array_equal(noisy.target_depth, exact.target_depth)
    wrong = PerfectCorrespondenceTracker(gt, degrade=OracleDegradation(outliers=0.3, outlier_px=20))
    far = np.abs(wrong.correspondences(inp).target_uv - exact.target_uv).max(1)
    assert 0.2 < (far > 1e-9).mean() < 0.4 and far.max() <= 20
    live = PerfectCorrespondenceTracker(gt, degrade=OracleDegradation(live_depth=True)).correspondences(inp)
    u, v = np.round(live.target_uv).astype(int).T
    assert np.array_equal(live.target_depth, inp.frame.depth[v, u]) and (live.target_depth > 0).all()
    assert np.abs(live.target_depth - exact.target_depth[np.isin(exact.sample_ids, live.sample_ids)]).max() < 0.015
    window = OracleDegradation(frames=(3, 4))
    assert [window.active(i) for i in (2, 3, 4, 5)] == [False, True, True, False]
    several = OracleDegradation(frames=[[1, 1], (4, 5)])
    assert several.frames == ((1, 1), (4, 5))
    assert [several.active(i) for i in range(7)] == [False, True, False, False, True, True, False]
    for bad in [(5, 2), [(1, 2), (6, 3)], [], 3, "ab", [(1, 2, 3)]]:
        with pytest.raises(ValueError):
            OracleDegradation(frames=bad)
    with pytest.raises(ValueError):
        OracleDegradation(fraction=1.5)
    # in a short fusion run, only the window's frames get correspondences
    tr = PerfectCorrespondenceTracker(gt, degrade=window)
    FusionPipeline(FusionConfig(voxel_size=0.01), tr).run(scene.render(i) for i in range(7))
    assert tr.counts[2] == 0 and tr.counts[5] == 0 and tr.counts[3] > 100 and tr.counts[4] > 100
