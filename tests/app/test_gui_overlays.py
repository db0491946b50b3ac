"""Neural-tracker overlays: the tracker keeps the last frame's correspondences and weight map
(`NeuralTracker.last_overlay`), the worker forwards them (`overlayReady`), the color view draws arrows and a
heatmap, each with a check box, disabled for trackers without overlays. Plain widgets: offscreen Qt is enough."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import app.gui  # noqa: F401  (Qt attributes before the QApplication exists)
from fusion.paths import ASSETS

pytestmark = pytest.mark.xdist_group("gui")

SAMPLE = ASSETS / "sample.db3"
SLOW_WAIT = 300_000  # ms; a cold numba cache compiles the kernels on the first fused frame


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------- tracker

def test_overlay_heatmap_follows_the_backward_flow():
    from tracker.neural import overlay_heatmap

    h, w = 24, 32
    weights = np.tile(np.linspace(0.0, 1.0, w, dtype=np.float32), (h, 1))  # grows left to right
    kf_depth = np.ones((h, w), np.float32)
    live = np.ones((h, w), np.float32)
    live[:, :4] = 0.0  # no live depth on the left
    back = np.zeros((h, w, 2), np.float32)
    back[..., 0] = -3.0  # each live pixel comes from 3 px further left in the keyframe
    heat, space = overlay_heatmap(weights, kf_depth, live, back, (w, h))
    assert space == "live" and heat.shape == (h, w) and heat.dtype == np.float32
    assert np.isnan(heat[:, :4]).all()  # no live depth
    np.testing.assert_allclose(heat[:, 4:], weights[:, 1:w - 3], atol=1e-6)
    # half the resolution: pixel centres of the coarse grid read the fine map between two pixels
    heat2, _ = overlay_heatmap(weights, kf_depth, live, back, (w // 2, h // 2))
    assert heat2.shape == (h // 2, w // 2)
    np.testing.assert_allclose(heat2[:, 3], 0.5 * (weights[0, 3] + weights[0, 4]), atol=1e-6)
    # mapped outside the keyframe -> no data; without the backward flow: keyframe pixels with depth
    back[..., 0] = -100.0
    assert np.isnan(overlay_heatmap(weights, kf_depth, live, back, (w, h))[0]).all()
    kf_depth[:5] = 0.0
    heat3, space3 = overlay_heatmap(weights, kf_depth, live, None, (w, h))
    assert space3 == "keyframe" and np.isnan(heat3[:5]).all()
    np.testing.assert_allclose(heat3[5:], weights[5:], atol=1e-6)


def test_neural_tracker_keeps_the_overlay_of_the_last_frame(one_thread):
    from fusion.pipeline import FusionConfig, FusionPipeline
    from fusion.sources import open_source
    from tracker.neural import NeuralTracker, NeuralTrackerConfig

    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} not found")
    tracker = NeuralTracker(NeuralTrackerConfig(device="cpu", overlay_points=120))
    pipe = FusionPipeline(FusionConfig(processing_size=(160, 120), voxel_size=0.015), tracker)
    seen = []
    with open_source(str(SAMPLE)) as src:
        for frame in itertools.islice(iter(src.next_frame, None), 4):
            res = pipe.process(frame)
            small = frame.resized(160, 120)
            seen.append((res, tracker.last_overlay, small))
    # frame 0 builds the graph (no tracking), frame 1 bootstraps classically and becomes keyframe 0
    assert seen[0][1] is None and seen[1][1] is None
    kf_frame = seen[1][2]
    for res, ov, live in seen[2:]:
        assert res.ok and ov is not None
        assert ov.frame_index == res.index and ov.keyframe_index == 1
        assert ov.size == (160, 120)
        c = len(ov.weights)
        assert 20 <= c <= 120
        assert ov.src_uv.shape == ov.tgt_uv.shape == (c, 2) and ov.valid.shape == (c,)
        assert ov.src_uv.dtype == ov.tgt_uv.dtype == ov.weights.dtype == np.float32 and ov.valid.dtype == bool
        assert ((ov.weights >= 0) & (ov.weights <= 1)).all()
        # sources are keyframe pixels on the keyframe's depth; valid targets land on live depth
        su, sv = ov.src_uv[:, 0].astype(int), ov.src_uv[:, 1].astype(int)
        assert (kf_frame.depth[sv, su] > 0).all()
        assert ov.valid.any()
        tu = np.clip(np.round(ov.tgt_uv[ov.valid, 0]).astype(int), 0, 159)
        tv = np.clip(np.round(ov.tgt_uv[ov.valid, 1]).astype(int), 0, 119)
        assert (live.depth[tv, tu] > 0).mean() > 0.9
        assert (ov.weights[ov.valid] >= tracker.config.min_weight).all()
        # the weight map: the network's resolution, in live pixels, data only where the live frame has depth
        assert ov.heatmap_space == "live" and ov.heatmap.shape == (120, 160) and ov.heatmap.dtype == np.float32
        fin = np.isfinite(ov.heatmap)
        assert 0.02 < fin.mean() and (live.depth[~fin.reshape(120, 160)] == 0).mean() > 0.5
        assert fin.sum() and (ov.heatmap[fin] > 0).all() and (ov.heatmap[fin] < 1).all()
        assert (live.depth[fin] > 0).all()
        d = ov.as_dict()
        assert d["size"] == (160, 120) and d["heatmap"] is ov.heatmap
    assert seen[2][1].frame_index != seen[3][1].frame_index
    tracker.reset()
    assert tracker.last_overlay is None


# ---------------------------------------------------------------------------------------------- the view

def _payload(n=40, size=(160, 120)) -> dict:
    from app.gui.views import heatmap_rgba

    rng = np.random.default_rng(0)
    src = rng.uniform([10, 10], [150, 110], (n, 2)).astype(np.float32)
    tgt = (src + rng.normal(0, 4, (n, 2))).astype(np.float32)
    heat = np.full((60, 80), np.nan, np.float32)
    heat[10:50, 20:60] = np.linspace(0.05, 0.95, 40, dtype=np.float32)[None, :]
    return {"available": True, "frame_index": 5, "keyframe_index": 1, "size": size, "src_uv": src, "tgt_uv": tgt,
            "weights": rng.uniform(0, 1, n).astype(np.float32), "valid": rng.uniform(0, 1, n) > 0.3,
            "heatmap": heat, "heatmap_space": "live", "heatmap_rgba": heatmap_rgba(heat)}


def _view_pixels(view) -> np.ndarray:
    from app.gui.views import qimage_to_numpy

    view.glw.repaint()
    return qimage_to_numpy(view.glw.grab().toImage()).astype(np.int16)


def test_color_view_draws_and_toggles_the_tracker_overlays(qtbot):
    from app.gui.views import DepthView, ImageView, heatmap_rgba

    view = ImageView("Color")
    qtbot.addWidget(view)
    view.resize(660, 520)
    view.show()
    qtbot.waitExposed(view)
    view.set_image(np.full((480, 640, 3), 90, np.uint8))
    # classical tracker: nothing to show, boxes disabled
    view.set_tracker_overlay({"available": False})
    assert not view.corr_box.isEnabled() and not view.heat_box.isEnabled()
    assert view.tracker_overlay_shown == {"matches": False, "weights": False}
    qtbot.wait(50)
    plain = _view_pixels(view)
    p = _payload()
    view.set_tracker_overlay(p)
    assert view.corr_box.isEnabled() and view.heat_box.isEnabled()
    assert view.tracker_overlay_shown == {"matches": True, "weights": True}
    assert view.corr.count == 40
    assert view.heat.image.shape == (60, 80, 4)
    # scaled from the 160x120 tracked frame to the 640x480 image on screen
    r = view.heat.mapRectToParent(view.heat.boundingRect())
    assert (r.x(), r.y(), r.width(), r.height()) == pytest.approx((0, 0, 640, 480))
    b = view.corr.boundingRect()
    assert b.left() < 4 * 20 and b.right() > 4 * 140
    qtbot.wait(50)
    both = _view_pixels(view)
    assert np.abs(both - plain).sum(-1).astype(bool).mean() > 0.05
    view.heat_box.setChecked(False)
    assert view.tracker_overlay_shown == {"matches": True, "weights": False}
    qtbot.wait(50)
    lines = _view_pixels(view)
    assert 0.001 < np.abs(lines - plain).sum(-1).astype(bool).mean() < np.abs(both - plain).sum(-1).astype(bool).mean()
    view.corr_box.setChecked(False)
    assert view.tracker_overlay_shown == {"matches": False, "weights": False}
    qtbot.wait(50)
    assert np.abs(_view_pixels(view) - plain).max() == 0
    view.heat_box.setChecked(True)
    view.corr_box.setChecked(True)
    assert view.tracker_overlay_shown == {"matches": True, "weights": True}
    # a frame without overlay data clears the drawing but keeps the boxes usable
    view.set_tracker_overlay({"available": True, "empty": True})
    assert view.corr_box.isEnabled() and view.tracker_overlay_shown == {"matches": False, "weights": False}
    # the heatmap colors: turbo, transparent where there is no data
    rgba = heatmap_rgba(p["heatmap"])
    assert (rgba[0, 0, 3] == 0) and (rgba[20, 30, 3] > 0)
    assert rgba[20, 21, 2] > rgba[20, 21, 0] and rgba[20, 58, 0] > rgba[20, 58, 2]  # blue low, red high
    depth = DepthView("Depth")
    qtbot.addWidget(depth)
    assert depth.corr_box.isHidden() and depth.heat_box.isHidden()


# ---------------------------------------------------------------------------------------------- the worker

def test_worker_forwards_the_neural_overlay(qtbot, one_thread):
    from app.gui.settings import ReconSettings
    from app.gui.worker import WorkerHost

    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} not found")
    host = WorkerHost(overlay_period_s=10.0)  # throttled: only the first and the forced last one come through
    got: list[dict] = []
    state: dict = {}
    errors: list = []
    stats: list[dict] = []
    host.worker.overlayReady.connect(got.append)
    host.worker.stateChanged.connect(state.update)
    host.worker.statsReady.connect(stats.append)
    host.worker.errorRaised.connect(lambda a, b: errors.append((a, b)))
    host.start()
    try:
        host.send("open", {"spec": str(SAMPLE)})
        qtbot.waitUntil(lambda: state.get("opened"), timeout=SLOW_WAIT)
        host.send("start", {"settings": ReconSettings(tracker="neural", processing_size=(160, 120), voxel_size=0.015),
                            "paused": True})
        qtbot.waitUntil(lambda: bool(got), timeout=SLOW_WAIT)
        assert got[0] == {"available": True, "empty": True}
        host.send("play", {"frames": 5})
        qtbot.waitUntil(lambda: not state.get("playing") and state.get("position", -1) >= 4
                        and "size" in got[-1], timeout=SLOW_WAIT)
        assert not errors
        last = got[-1]
        assert last["frame_index"] == 4 and last["available"]
        assert last["heatmap_rgba"].shape == (120, 160, 4) and last["heatmap_rgba"].dtype == np.uint8
        assert 0 < len(last["weights"]) <= 300
        assert len(got) <= 4  # start, at most one per period while playing, the forced last one
        # the Status says whose motion was kept: the first tracked frame bootstraps classically, then neural
        # or classical by fit, one count per fused frame after the first
        qtbot.waitUntil(lambda: any("kept" in s_ for s_ in stats), timeout=SLOW_WAIT)
        kept = [s_ for s_ in stats if "kept" in s_][-1]["kept"]
        assert kept.get("classical", 0) >= 1 and kept.get("neural", 0) + kept.get("classical", 0) == 4
        host.send("reset")
        qtbot.waitUntil(lambda: got[-1] == {"available": False}, timeout=SLOW_WAIT)
        host.send("start", {"settings": ReconSettings(tracker="classical", processing_size=(160, 120)), "paused": True})
        qtbot.waitUntil(lambda: got[-1] == {"available": False, "empty": True}, timeout=SLOW_WAIT)
    finally:
        assert host.shutdown(20000)


def test_kept_motion_reads_the_neural_trackers_stats():
    from app.gui.worker import kept_motion

    assert kept_motion({"selected": "neural", "correspondence_ms": 3.0}) == "neural"
    assert kept_motion({"selected": "classical", "correspondence_ms": 3.0}) == "classical"
    assert kept_motion({"fallback": "classical", "correspondence_ms": 3.0}) == "classical"
    assert kept_motion({"neural": {"bootstrap": "classical (no keyframe yet)"}}) == "classical"
    assert kept_motion({"correspondence_ms": 3.0}) == "neural"  # no selection run: the neural solve + ICP
    assert kept_motion({"rms_mm": 2.0}) == "-"  # the classical tracker
