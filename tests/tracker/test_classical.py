"""Classical tracker: association, rigid pre-alignment, ICP + ARAP tracking of analytic deforming surfaces,
NNRT correspondence terms, failure cases (ok=False, never an exception), a synthetic scene."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fusion.camera import Intrinsics
from fusion.frame import RGBDFrame
from fusion.graph import GraphMotion, build_graph, skinning
from fusion.motion import MotionEstimator, TrackingInput
from fusion.warp import warp_points_np
from synthetic_surfaces import sheet_case
from tracker.association import live_geometry, live_geometry_np, projective_association, projective_association_np
from tracker.classical import ClassicalTracker, ClassicalTrackerConfig, Correspondences
from tracker.rigid import LiveGeometry, rigid_icp

K = Intrinsics(144.0, 144.0, 79.5, 59.5, 160, 120)


@pytest.fixture(scope="module")
def rolled():
    """Bumpy sheet rolled onto a 1 m cylinder + rotated 0.04 rad + shifted ~1.5 cm (isometric)."""
    case = sheet_case(K)
    g = build_graph(case.model_points, radius=0.05)
    a, w = skinning(case.model_points, g)
    return case, g, a, w


@pytest.fixture(scope="module")
def cloth_pair():
    """Frames 0 and 2 of the procedural cloth at 160x120 (double speed), the surface seen in frame 0 with its
    true positions in frame 2 (ground-truth scene flow), colours, graph and skinning."""
    synthetic = pytest.importorskip("fusion.synthetic")
    scene = synthetic.make_scene(synthetic.SceneConfig("cloth", width=160, height=120, n_frames=4, speed=2.0))
    f0, f1 = scene.render(0), scene.render(2)
    p, n, v = live_geometry(f0.depth, f0.intrinsics, f0.mask)
    flow = scene.scene_flow(0, 2)
    ok = v & np.isfinite(flow).all(-1)
    pts, nrm, truth, col = p[ok], n[ok], (p + flow)[ok], f0.color[ok]
    g = build_graph(pts, radius=0.05)
    a, w = skinning(pts, g)
    return SimpleNamespace(scene=scene, f0=f0, f1=f1, p=p, ok=ok, pts=pts, nrm=nrm, truth=truth, col=col, g=g, a=a, w=w)


def _inp(case, g, a, w, frame=None, motion=None):
    return TrackingInput(frame or case.live, g, motion or GraphMotion.identity(g.num_nodes), case.model_points,
                         case.model_normals, a, w)


def _errors(case, g, a, w, motion):
    nodes = np.linalg.norm(g.nodes + motion.translations - case.true_warp(g.nodes), axis=1)
    pts = warp_points_np(case.model_points, a, w, g.nodes, motion.rotations, motion.translations)
    return nodes.mean(), np.linalg.norm(pts - case.true_warp(case.model_points), axis=1).mean()


def test_is_a_motion_estimator():
    t = ClassicalTracker()
    assert isinstance(t, MotionEstimator) and t.name == "classical"
    t.reset()


def test_live_geometry_and_association_match_numpy(rolled, rng):
    case, *_ = rolled
    depth = case.live.depth.copy()
    depth[50:60, 70:90] = 0  # a hole
    mask = np.ones(depth.shape, bool)
    mask[:, :10] = False
    p, n, v = live_geometry(depth, K, mask)
    pr, nr, vr = live_geometry_np(depth, K, mask)
    np.testing.assert_array_equal(v, vr)
    np.testing.assert_allclose(p, pr, atol=1e-6)
    np.testing.assert_allclose(n[v], nr[v], atol=1e-5)
    assert v.sum() > 0.7 * (depth > 0).sum() and not v[:, :10].any()
    # normals face the camera and are unit
    assert ((n[v] * p[v]).sum(1) < 0).all()
    np.testing.assert_allclose(np.linalg.norm(n[v], axis=1), 1.0, atol=1e-5)
    # association of perturbed model points
    pts = case.model_points + rng.normal(scale=0.01, size=case.model_points.shape).astype(np.float32)
    nrm = case.model_normals
    m = projective_association(pts, nrm, p, n, v, K, 0.02, 30.0)
    mr = projective_association_np(pts, nrm, p, n, v, K, 0.02, 30.0)
    # identical except possibly at exact rounding ties
    assert (m == mr).mean() > 0.999
    ok = m >= 0
    assert 0.2 < ok.mean() < 1.0
    assert (np.linalg.norm(p.reshape(-1, 3)[m[ok]] - pts[ok], axis=1) <= 0.02 + 1e-6).all()


def test_rigid_icp_recovers_a_rigid_motion():
    case = sheet_case(K, roll=None, angle=0.06, shift=(0.015, -0.01, 0.02))
    p, n, v = live_geometry(case.live.depth, K)
    t64 = lambda x: torch.from_numpy(np.asarray(x, np.float64))  # noqa: E731
    r, t, info = rigid_icp(t64(case.model_points), t64(case.model_normals), LiveGeometry(p, n, v, K), iterations=8)
    assert info["ok"]
    moved = case.model_points @ r.numpy().T + t.numpy()
    err0 = np.linalg.norm(case.model_points - case.true_warp(case.model_points), axis=1).mean()
    err = np.linalg.norm(moved - case.true_warp(case.model_points), axis=1).mean()
    assert err0 > 0.02 and err < 0.002, (err0, err)


def test_tracks_a_rolled_bumpy_sheet(rolled):
    case, g, a, w = rolled
    res = ClassicalTracker().estimate(_inp(case, g, a, w))
    assert res.ok, res.message
    node0, pts0 = _errors(case, g, a, w, GraphMotion.identity(g.num_nodes))
    node1, pts1 = _errors(case, g, a, w, res.motion)
    hist = res.stats["history"]
    # the point-to-plane residual drops and the nodes move to the truth
    assert hist[-1]["rms_mm"] < 0.1 * hist[0]["rms_mm"]
    assert node0 > 0.02 and node1 < 0.15 * node0 and node1 < 0.004, (node0, node1)
    assert pts1 < 0.004
    assert res.motion.rotations.dtype == np.float32 and res.motion.translations.shape == (g.num_nodes, 3)
    np.testing.assert_allclose(res.motion.rotations @ np.swapaxes(res.motion.rotations, 1, 2),
                               np.broadcast_to(np.eye(3), res.motion.rotations.shape), atol=1e-5)
    # tracking the next frame from this result keeps it (no drift on a static repeat)
    res2 = ClassicalTracker().estimate(_inp(case, g, a, w, motion=res.motion))
    assert res2.ok and _errors(case, g, a, w, res2.motion)[0] < 0.004


def test_solvers_agree(rolled):
    case, g, a, w = rolled
    out = {}
    for solver in ("pcg", "direct"):
        cfg = ClassicalTrackerConfig(linear_solver=solver, pcg_iterations=500, pcg_tol=1e-10, iterations=3)
        res = ClassicalTracker(cfg).estimate(_inp(case, g, a, w))
        assert res.ok
        out[solver] = res.motion.translations
    np.testing.assert_allclose(out["pcg"], out["direct"], atol=1e-4)


def test_correspondence_terms_recover_motion(rolled):
    """NNRT 2D + depth terms on exact correspondences alone (no ICP) recover the rolled sheet."""
    case, g, a, w = rolled
    ids = np.arange(0, len(case.model_points), 3)
    tgt = case.true_warp(case.model_points[ids]).astype(np.float64)
    uv = np.stack([K.fx * tgt[:, 0] / tgt[:, 2] + K.cx, K.fy * tgt[:, 1] / tgt[:, 2] + K.cy], 1)
    corr = Correspondences(ids, uv, tgt[:, 2], np.ones(len(ids)))
    cfg = ClassicalTrackerConfig(lambda_icp=0.0, rigid_iterations=0, iterations=6, lambda_arap=0.01)
    res = ClassicalTracker(cfg).estimate_with_correspondences(_inp(case, g, a, w), corr)
    assert res.ok, res.message
    node1, pts1 = _errors(case, g, a, w, res.motion)
    assert node1 < 0.002 and pts1 < 0.002, (node1, pts1)


def test_failure_cases_return_not_ok(rolled):
    case, g, a, w = rolled
    tracker = ClassicalTracker()
    empty = dataclasses.replace(case.live, depth=np.zeros_like(case.live.depth))
    res = tracker.estimate(_inp(case, g, a, w, frame=empty))
    assert not res.ok and "depth" in res.message
    assert res.motion.num_nodes == g.num_nodes
    # the surface has moved away: nothing associates -> too few correspondences (a singular system)
    far_depth = np.where(case.live.depth > 0, case.live.depth + 0.5, 0).astype(np.float32)
    far = dataclasses.replace(case.live, depth=far_depth)
    res = ClassicalTracker(ClassicalTrackerConfig(rigid_iterations=0)).estimate(_inp(case, g, a, w, frame=far))
    assert not res.ok and "correspondences" in res.message
    # no anchored model points
    res = tracker.estimate(TrackingInput(case.live, g, GraphMotion.identity(g.num_nodes), case.model_points,
                                         case.model_normals, np.full_like(a, -1), w))
    assert not res.ok
    # motion of the wrong size, NaN motion
    res = tracker.estimate(_inp(case, g, a, w, motion=GraphMotion.identity(g.num_nodes + 1)))
    assert not res.ok
    bad = GraphMotion.identity(g.num_nodes)
    bad.translations[0, 0] = np.nan
    assert not tracker.estimate(_inp(case, g, a, w, motion=bad)).ok


def test_two_frames_of_a_synthetic_scene(cloth_pair):
    """Track frame 2 of the procedural cloth from frame 0 (fusion.synthetic ground-truth scene flow).

    The cloth moves by travelling waves: depth ICP + ARAP alone slides along the waves (the error grows),
    the photometric term on the textured cloth pins the motion down."""
    c = cloth_pair
    scene, f1, p, ok, pts, nrm, truth, col, g, a, w = c.scene, c.f1, c.p, c.ok, c.pts, c.nrm, c.truth, c.col, c.g, c.a, c.w
    errs = {}
    for name, colors in (("depth", None), ("depth+color", col)):
        inp = TrackingInput(f1, g, GraphMotion.identity(g.num_nodes), pts, nrm, a, w, colors)
        tracker = ClassicalTracker()
        res = tracker.estimate(inp)
        assert res.ok, res.message
        warped = warp_points_np(pts, a, w, g.nodes, res.motion.rotations, res.motion.translations)
        errs[name] = np.linalg.norm(warped - truth, axis=1).mean()
    err0 = np.linalg.norm(pts - truth, axis=1).mean()
    assert err0 > 0.005
    assert errs["depth+color"] < 0.4 * err0 and errs["depth+color"] < errs["depth"], (err0, errs)
    # without a canonical frame, the first frame compares with the model colours, later frames with the
    # previous tracked frame and the keyframe (the first tracked frame)
    assert res.stats["color_reference"] == "model"
    f2 = scene.render(3)
    res2 = tracker.estimate(TrackingInput(f2, g, res.motion, pts, nrm, a, w, col))
    assert res2.ok and res2.stats["color_reference"] == "previous+keyframe"
    truth2 = (p + scene.scene_flow(0, 3))[ok]
    warped2 = warp_points_np(pts, a, w, g.nodes, res2.motion.rotations, res2.motion.translations)
    assert np.linalg.norm(warped2 - truth2, axis=1).mean() < 0.4 * np.linalg.norm(pts - truth2, axis=1).mean()
    tracker.reset()
    assert tracker.estimate(TrackingInput(f2, g, res.motion, pts, nrm, a, w, col)).stats["color_reference"] == "model"


def test_constant_velocity_prediction(rolled):
    """The initial guess continues the last per-frame change of every node (rotation and translation)."""
    from tracker.so3 import exp_so3

    case, g, a, w = rolled
    n = g.num_nodes
    r_step = exp_so3(np.tile([0.0, 0.02, 0.01], (n, 1)))
    t1 = np.zeros((n, 3))
    t2 = np.tile([0.01, 0.0, -0.005], (n, 1))
    r1 = np.tile(np.eye(3), (n, 1, 1))
    r2 = r_step @ r1
    tracker = ClassicalTracker(ClassicalTrackerConfig(velocity_prediction=1.0))
    tracker._history = [(4, r1, t1), (5, r2, t2)]
    frame = dataclasses.replace(case.live, index=6)
    inp = TrackingInput(frame, g, GraphMotion(r2.astype(np.float32), t2.astype(np.float32)), case.model_points,
                        case.model_normals, a, w)
    stats: dict = {}
    rot, tr = tracker._predict(inp, torch.from_numpy(r2), torch.from_numpy(t2), stats)
    assert stats.get("predicted")
    np.testing.assert_allclose(tr.numpy(), 2 * t2 - t1, atol=1e-6)
    np.testing.assert_allclose(rot.numpy(), r_step @ r2, atol=1e-6)
    # a frame gap of 2 doubles the step; an unrelated prev_motion (e.g. after a skipped frame) disables it
    inp2 = dataclasses.replace(inp, frame=dataclasses.replace(case.live, index=7))
    _, tr2 = tracker._predict(inp2, torch.from_numpy(r2), torch.from_numpy(t2), {})
    np.testing.assert_allclose(tr2.numpy(), 3 * t2 - 2 * t1, atol=1e-6)
    stats = {}
    _, tr3 = tracker._predict(inp, torch.from_numpy(r1), torch.from_numpy(t1), stats)
    assert "predicted" not in stats and np.allclose(tr3.numpy(), t1)
    tracker.reset()
    assert tracker._history == []


@pytest.mark.parametrize("options", [
    {"flow": "medium", "flow_reference": "previous", "flow_iterations": 4},
    {"flow": "ultrafast", "flow_reference": "model", "flow_iterations": 2},
    {"arap_reference": "previous", "arap_huber": 0.01},
    {"color_reference": "previous+keyframe"},
    {"color_reference": "both", "color_normalize": 0.0, "arap_reference": "canonical", "velocity_prediction": 0.5,
     "velocity_min_support": 0.0, "lambda_color": 0.02, "color_huber": 0.1, "color_min_facing": 0.0},
])
def test_optional_terms_track_a_synthetic_scene(options):
    """The opt-in data terms (optical-flow correspondences from the previous frame or from the rendered model,
    ARAP relative to the previous motion with a Huber kernel, a keyframe photometric reference, the former
    defaults: raw intensities against the previous frame and the model colours, canonical ARAP) run through
    three frames of the textured cloth and still track it (their closed-loop figures are in
    docs/dev/tracker_experiments.md)."""
    from dataclasses import replace as dc_replace

    synthetic = pytest.importorskip("fusion.synthetic")
    scene = synthetic.make_scene(synthetic.SceneConfig("cloth", width=160, height=120, n_frames=4, speed=2.0))
    f0 = scene.render(0)
    p, n, v = live_geometry(f0.depth, f0.intrinsics, f0.mask)
    ok = v & np.isfinite(scene.scene_flow(0, 1)).all(-1)
    pts, nrm, col = p[ok], n[ok], f0.color[ok]
    g = build_graph(pts, radius=0.05)
    a, w = skinning(pts, g)
    tracker = ClassicalTracker(dc_replace(ClassicalTrackerConfig(), **options))
    motion = GraphMotion.identity(g.num_nodes)
    for i in (1, 2, 3):
        res = tracker.estimate(TrackingInput(scene.render(i), g, motion, pts, nrm, a, w, col))
        assert res.ok, res.message
        motion = res.motion
        truth = (p + scene.scene_flow(0, i))[ok]
        warped = warp_points_np(pts, a, w, g.nodes, motion.rotations, motion.translations)
        assert np.linalg.norm(warped - truth, axis=1).mean() < 0.5 * np.linalg.norm(pts - truth, axis=1).mean()
    if "flow" in options:
        assert res.stats["flow_correspondences"] > 100
    if "keyframe" in options.get("color_reference", ""):
        assert res.stats["color_reference"] == "previous+keyframe" and res.stats["keyframe"]["index"] == 1


def test_unknown_flow_preset_is_refused():
    with pytest.raises(ValueError):
        ClassicalTracker(ClassicalTrackerConfig(flow="fastest"))


def test_normalized_intensity_cancels_smooth_shading():
    """A texture times a smooth shading ramp normalises to (nearly) the texture's own normalised image, away
    from the border; raw intensities differ by the shading; the background does not leak in."""
    from tracker.energy import normalized_intensity_t

    rng = np.random.default_rng(0)
    h, w = 60, 80
    tex = torch.from_numpy(0.5 + 0.2 * rng.standard_normal((h, w)))
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    shade = 0.4 + 0.6 * xx / w  # Lambert-like ramp across the surface
    valid = torch.zeros(h, w, dtype=torch.bool)
    valid[5:55, 5:75] = True
    a = normalized_intensity_t(tex, valid, 2.0)
    b = normalized_intensity_t(tex * shade, valid, 2.0)
    inner = torch.zeros_like(valid)
    inner[12:48, 12:68] = True
    assert (a[~valid] == 0).all() and (b[~valid] == 0).all()
    raw_diff = (tex - tex * shade)[inner].abs().mean()
    norm_diff = (a - b)[inner].abs().mean()
    assert norm_diff < 0.1 * raw_diff, (float(norm_diff), float(raw_diff))
    # a bright background next to the object does not change the normalised object pixels near the border
    bg = torch.where(valid, tex, torch.full_like(tex, 5.0))
    assert torch.allclose(normalized_intensity_t(bg, valid, 2.0), a)


def test_facing_weight():
    from tracker.classical import facing_weight

    pts = torch.tensor([[0.0, 0.0, 1.0]] * 3, dtype=torch.float64)
    c = np.cos(np.deg2rad(60.0))
    nrm = torch.tensor([[0.0, 0.0, -1.0], [0.0, np.sin(np.deg2rad(60.0)), -c], [1.0, 0.0, 0.0]], dtype=torch.float64)
    w = facing_weight(pts, nrm, 0.25)
    assert torch.allclose(w, torch.tensor([1.0, (c - 0.25) / 0.75, 0.0], dtype=torch.float64))


def test_normalised_keyframe_reference_from_the_canonical_frame(cloth_pair):
    """The canonical frame (identity motion) is the keyframe when TrackingInput carries it: the cloth's
    travelling waves make depth ICP slide, the shading-normalised keyframe term pins the surface down."""
    c = cloth_pair
    f0, f1, pts, nrm, truth, g, a, w = c.f0, c.f1, c.pts, c.nrm, c.truth, c.g, c.a, c.w
    cfg = dict(color_reference="keyframe", color_normalize=3.0, color_min_facing=0.5, lambda_color=0.1,
               color_huber=0.3, arap_reference="previous")
    errs = {}
    for name, extra in (("depth", dict(lambda_color=0.0)), ("keyframe", {})):
        tracker = ClassicalTracker(ClassicalTrackerConfig(**{**cfg, **extra}))
        res = tracker.estimate(TrackingInput(f1, g, GraphMotion.identity(g.num_nodes), pts, nrm, a, w, None,
                                             canonical_frame=f0))
        assert res.ok, res.message
        warped = warp_points_np(pts, a, w, g.nodes, res.motion.rotations, res.motion.translations)
        errs[name] = np.linalg.norm(warped - truth, axis=1).mean()
    assert res.stats["color_reference"] == "keyframe" and res.stats["keyframe"]["index"] == f0.index
    assert res.stats["keyframe"]["visible"] > 0.9
    err0 = np.linalg.norm(pts - truth, axis=1).mean()
    assert errs["keyframe"] < 0.4 * err0 and errs["keyframe"] < 0.7 * errs["depth"], (err0, errs)


def test_normalized_intensity_cpu_blur_matches_the_torch_blur():
    """The OpenCV fast path of the shading normalisation equals the torch reference (shifted-copy blur)."""
    from tracker.energy import intensity_image_t, normalized_intensity_t

    rng = np.random.default_rng(1)
    gray = torch.from_numpy(rng.random((40, 50)))
    valid = torch.from_numpy(rng.random((40, 50)) > 0.2)
    fast = normalized_intensity_t(gray, valid, 3.0)
    m = valid.to(gray.dtype)
    num = intensity_image_t((gray * m)[..., None].expand(-1, -1, 3), 3.0)
    den = intensity_image_t(m[..., None].expand(-1, -1, 3), 3.0)
    mean = num / den.clamp_min(1e-6)
    ref = torch.where(valid & (mean > 1e-3), gray / mean.clamp_min(1e-3) - 1.0, torch.zeros_like(gray))
    assert torch.allclose(fast, ref, atol=1e-9)


def test_photometric_residual_sees_motion_along_the_surface(cloth_pair):
    """`photometric_residual` (used by the neural tracker to refuse motions that slide along the surface):
    the tracked motion of the cloth matches the canonical keyframe's texture better than the same motion
    slid 1.5 cm sideways, which depth alone could not tell apart; None without a keyframe."""
    c = cloth_pair
    f0, f1, pts, nrm, g, a, w = c.f0, c.f1, c.pts, c.nrm, c.g, c.a, c.w
    tracker = ClassicalTracker()
    inp = TrackingInput(f1, g, GraphMotion.identity(g.num_nodes), pts, nrm, a, w, None, canonical_frame=f0)
    assert tracker.photometric_residual(inp, GraphMotion.identity(g.num_nodes)) is None  # no keyframe yet
    res = tracker.estimate(inp)
    assert res.ok
    slid = GraphMotion(res.motion.rotations.copy(), res.motion.translations + np.float32([0.015, 0.0, 0.0]))
    good, bad = tracker.photometric_residual(inp, res.motion), tracker.photometric_residual(inp, slid)
    assert good is not None and bad is not None and bad > 1.3 * good, (good, bad)
