"""Parts of the desktop app without OpenGL (offscreen Qt is enough): settings and presets, capture files and
track ids, the Compare computation, panel jobs (progress, cancel), the pipeline worker with sources that
stall or fail mid-stream, transport and controls widgets."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import app.gui  # noqa: F401  (Qt attributes before the QApplication exists)
from app.gui.captures import Capture, lattice_track_ids, load_captures, read_capture_ply, render_thumbnail, save_captures, write_capture_ply
from app.gui.settings import ReconSettings, load_preset, save_preset
from fusion.camera import Intrinsics
from fusion.errors import DeviceError, InputError
from fusion.frame import RGBDFrame

pytestmark = pytest.mark.xdist_group("gui")

# generous: a fresh checkout compiles the numba kernels on the first fused frame (cold cache, loaded CI box);
# waitUntil returns as soon as the condition holds, so passing runs do not wait this long
SLOW_WAIT = 300_000


# ---------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("ext", ["toml", "json"])


def test_preset_round_trip(tmp_path, ext):
    s = ReconSettings(tracker="none", voxel_size=0.007, depth_max=1.25, node_coverage=0.04, keyframe_interval=12,
                      processing_size=(640, 480), sequence_after=0, memory_budget_gb=1.5, features="sift")
    p = save_preset(tmp_path / f"p.{ext}", s)
    assert load_preset(p) == s
    s2 = ReconSettings(processing_size=None)
    assert load_preset(save_preset(tmp_path / f"q.{ext}", s2)) == s2


def test_preset_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[reconstruction]\nvoxel_size = 'big'\n")
    with pytest.raises(InputError, match="bad.toml.*voxel_size"):
        load_preset(bad)
    bad.write_text("[reconstruction]\nvoxel = 0.01\n")
    with pytest.raises(InputError, match="unknown setting"):
        load_preset(bad)
    bad.write_text("this is = = not toml")
    with pytest.raises(InputError, match="bad.toml"):
        load_preset(bad)
    with pytest.raises(InputError, match="not found"):
        load_preset(tmp_path / "missing.json")
    with pytest.raises(InputError, match="depth range"):
        ReconSettings(depth_min=2.0, depth_max=1.0)
    with pytest.raises(InputError):
        ReconSettings(voxel_size=float("nan"))


def test_settings_to_fusion_config():
    cfg = ReconSettings(voxel_size=0.008, trunc_voxels=3, sequence_after=0, processing_size=(320, 240)).fusion_config()
    assert cfg.voxel_size == 0.008 and cfg.trunc_voxels == 3 and cfg.freeze_sequence_after is None
    assert cfg.processing_size == (320, 240)
    assert ReconSettings(sequence_after=7).fusion_config().freeze_sequence_after == 7
    assert ReconSettings().fusion_config().volume_config().mesh_channel
    assert ReconSettings(mesh_trunc_voxels=0).fusion_config().mesh_trunc_voxels == 0
    assert not ReconSettings(mesh_trunc_voxels=0).fusion_config().volume_config().mesh_channel
    with pytest.raises(InputError, match="mesh_trunc_voxels"):
        ReconSettings(mesh_trunc_voxels=0.5)
    assert ReconSettings().fusion_config().volume_config().carving
    assert ReconSettings(carve_px=3).fusion_config().volume_config().carve_px == 3
    assert not ReconSettings(carve_px=0).fusion_config().volume_config().carving
    with pytest.raises(InputError, match="carve_px"):
        ReconSettings(carve_px=-1)


def test_settings_features_reach_the_classical_tracker():
    from app.gui.settings import make_estimator

    assert make_estimator(ReconSettings(features="orb")).config.features == "orb"
    assert make_estimator(ReconSettings()).config.features == "none"
    with pytest.raises(InputError, match="features"):
        ReconSettings(features="surf")


# ---------------------------------------------------------------------------------------------- captures

def _cloud(n=500, seed=0, ids=True) -> Capture:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3)).astype(np.float32) * 0.1 + np.array([0, 0, 1], np.float32)
    nrm = rng.normal(size=(n, 3)).astype(np.float32)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    col = rng.integers(0, 256, (n, 3)).astype(np.uint8)
    tid = np.arange(n, dtype=np.int64) * 7 + (1 << 45) if ids else None
    return Capture(p, nrm, col, tid, frame_index=3, timestamp_s=0.1, name=f"cloud {seed}", source="test")


def test_capture_ply_round_trip(tmp_path):
    c = _cloud()
    write_capture_ply(tmp_path / "c.ply", c)
    back = read_capture_ply(tmp_path / "c.ply")
    np.testing.assert_array_equal(back.points, c.points)
    np.testing.assert_array_equal(back.normals, c.normals)
    np.testing.assert_array_equal(back.colors, c.colors)
    np.testing.assert_array_equal(back.track_ids, c.track_ids)
    assert back.name == "cloud 0"
    # the file is a standard PLY that other tools read
    import trimesh

    assert len(trimesh.load(tmp_path / "c.ply").vertices) == c.num_points


def test_read_ascii_ply_and_errors(tmp_path):
    p = tmp_path / "a.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                 "end_header\n0 0 1\n1 2 3\n")
    c = read_capture_ply(p)
    np.testing.assert_allclose(c.points, [[0, 0, 1], [1, 2, 3]])
    assert c.track_ids is None and c.colors is None
    p.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nproperty float y\n"
                  b"property float z\nend_header\n" + b"\0" * 30)
    with pytest.raises(InputError, match="a.ply"):
        read_capture_ply(p)
    p.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a PLY"):
        read_capture_ply(p)


def test_captures_folder_round_trip_and_corrupt_index(tmp_path):
    caps = [_cloud(300, 0), _cloud(200, 1, ids=False)]
    idx = save_captures(tmp_path / "caps", caps)
    back = load_captures(idx.parent)
    assert [c.name for c in back] == ["cloud 0", "cloud 1"]
    assert back[1].track_ids is None or (back[1].track_ids == -1).all()
    np.testing.assert_array_equal(back[0].track_ids, caps[0].track_ids)
    assert back[0].thumbnail is not None and back[0].thumbnail.std() > 0
    idx.write_text("{not json")
    with pytest.raises(InputError, match="captures.json"):
        load_captures(tmp_path / "caps")
    with pytest.raises(InputError, match="not a captures folder"):
        load_captures(tmp_path)


def test_lattice_track_ids_name_edges():
    origin, vs = np.array([-0.5, -0.3, 0.2]), 0.01
    rng = np.random.default_rng(3)
    vox = rng.integers(0, 200, (400, 3))
    axis = rng.integers(0, 3, 400)
    t = rng.uniform(0.05, 0.95, 400)
    off = np.zeros((400, 3))
    off[np.arange(400), axis] = t
    pts = (origin + (vox + 0.5 + off) * vs).astype(np.float32)
    ids = lattice_track_ids(pts, origin, vs)
    key = vox[:, 0] * 10**8 + vox[:, 1] * 10**4 + vox[:, 2]
    distinct = len(np.unique(np.stack([key, axis], 1), axis=0))
    assert len(np.unique(ids)) == distinct  # one id per (voxel, axis) edge
    # the crossing moves along its edge (TSDF updates): the id stays
    off2 = np.zeros((400, 3))
    off2[np.arange(400), axis] = rng.uniform(0.05, 0.95, 400)
    pts2 = (origin + (vox + 0.5 + off2) * vs).astype(np.float32)
    np.testing.assert_array_equal(lattice_track_ids(pts2, origin, vs), ids)


def test_thumbnail_shows_the_cloud():
    c = _cloud(2000)
    k = Intrinsics(300.0, 300.0, 160.0, 120.0, 320, 240)
    img = render_thumbnail(c, k)
    assert img.shape == (96, 128, 3) and img.dtype == np.uint8
    assert (np.abs(img.astype(int) - 40).sum(-1) > 0).mean() > 0.05


# ---------------------------------------------------------------------------------------------- compare + jobs

def test_compare_clouds_matches_chamfer_and_tracks_motion():
    from app.gui.panel_compare import compare_clouds
    from models.common.metrics import chamfer_l1

    a = _cloud(800, 0)
    b = Capture(a.points + np.array([0.01, 0, 0], np.float32), track_ids=a.track_ids, name="b")
    s, ia, ib, d_ab, d_ba = compare_clouds(a, b, max_points=10_000)
    assert s["chamfer_l1_mm"] == pytest.approx(1e3 * chamfer_l1(a.points, b.points), rel=1e-9)
    assert s["shared_track_ids"] == 800
    assert s["shared_ids_mean_motion_mm"] == pytest.approx(10.0, abs=1e-3)
    assert len(d_ab) == 800 and (d_ab <= 0.01 + 1e-6).all()
    s2, ia2, *_ = compare_clouds(a, b, max_points=100)
    assert len(ia2) == 100 and s2["points_a"] == 100
    with pytest.raises(InputError, match="empty"):
        compare_clouds(a, Capture(np.zeros((0, 3))), 10)


def test_panel_job_progress_and_cancel(qtbot):
    from PySide6 import QtCore

    from app.gui.panels import PanelJob, PanelResult

    def compute(inputs, params, ctx):
        for i in range(params["steps"]):
            ctx.progress((i + 1) / params["steps"], f"step {i + 1}")
            time.sleep(0.01)
        return PanelResult(summary={"n": inputs["A"].num_points})

    job = PanelJob(compute, {"A": _cloud(10)}, {"steps": 5})
    seen = []
    job.progress.connect(lambda f, t: seen.append(f))
    with qtbot.waitSignal(job.finished, timeout=SLOW_WAIT) as sig:
        job.start()
    assert sig.args[0].summary == {"n": 10}
    qtbot.waitUntil(lambda: len(seen) == 5, timeout=5000)
    assert seen == sorted(seen) and seen[-1] == 1.0
    job.thread.wait(5000)

    job2 = PanelJob(compute, {"A": _cloud(10)}, {"steps": 1000})
    job2.progress.connect(lambda f, t: job2.cancel(), QtCore.Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(job2.cancelled, timeout=SLOW_WAIT):
        job2.start()
    job2.thread.wait(5000)

    def broken(inputs, params, ctx):
        raise InputError("a.ply: the file holds no vertices")

    job3 = PanelJob(broken, {}, {})
    with qtbot.waitSignal(job3.failed, timeout=SLOW_WAIT) as sig:
        job3.start()
    assert "a.ply" in sig.args[0]
    job3.thread.wait(5000)


def test_panels_are_discovered():
    from app.gui.panels import PANEL_REGISTRY, discover_panels

    assert discover_panels() == []
    assert "compare" in PANEL_REGISTRY
    assert PANEL_REGISTRY["compare"].inputs == ("A", "B")


# ---------------------------------------------------------------------------------------------- the worker

def _sphere_frame(i: int) -> RGBDFrame:
    k = Intrinsics(80.0, 80.0, 39.5, 29.5, 80, 60)
    u, v = np.meshgrid(np.arange(80), np.arange(60))
    x, y = (u - k.cx) / k.fx, (v - k.cy) / k.fy
    # a sphere of radius 0.25 m at 1 m, moving 1 mm per frame
    c = np.array([0.001 * i, 0.0, 1.0])
    a = x * x + y * y + 1
    b = -2 * (x * c[0] + y * c[1] + c[2])
    cc = c @ c - 0.25**2
    disc = b * b - 4 * a * cc
    z = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0).astype(np.float32)
    color = np.zeros((60, 80, 3), np.uint8)
    color[..., 0] = 200
    color[..., 1] = (u * 3).astype(np.uint8)
    return RGBDFrame(i, i / 30.0, color, z, k)


class FakeLive:
    """A live source: `good` frames, then it blocks (until `release`) or raises `fail`."""

    def __init__(self, good: int, fail: Exception | None = None) -> None:
        self.good, self.fail = good, fail
        self.release = threading.Event()
        self.closed = False
        self.n = 0

    # the FrameSource interface, duck-typed
    name = "fake camera"
    length = None
    fps = 30.0
    is_live = True

    @property
    def intrinsics(self) -> Intrinsics:
        return _sphere_frame(0).intrinsics

    def next_frame(self):
        if self.n < self.good:
            self.n += 1
            return _sphere_frame(self.n - 1)
        if self.fail is not None:
            raise self.fail
        self.release.wait(60)
        return None

    def seek(self, i):
        raise NotImplementedError

    def close(self):
        self.closed = True


def _host(monkeypatch, src, **kw):
    import fusion.sources

    from app.gui.worker import WorkerHost

    monkeypatch.setattr(fusion.sources, "open_source", lambda spec, **o: src)
    host = WorkerHost(**kw)
    rec = {"log": [], "errors": [], "frames": 0, "state": {}, "stats": {}, "export": None}
    w = host.worker
    w.logMessage.connect(lambda lvl, t: rec["log"].append((lvl, t)))
    w.errorRaised.connect(lambda a, b: rec["errors"].append((a, b)))
    w.frameReady.connect(lambda f: rec.__setitem__("frames", rec["frames"] + 1))
    w.stateChanged.connect(lambda s: rec.__setitem__("state", s))
    w.statsReady.connect(lambda s: rec.__setitem__("stats", s))
    w.exportFinished.connect(lambda r: rec.__setitem__("export", r))
    host.start()
    return host, rec


def test_stalled_source_keeps_the_ui_responsive(qtbot, monkeypatch):
    from PySide6 import QtCore

    src = FakeLive(good=2)
    host, rec = _host(monkeypatch, src, stall_s=0.5)
    ticks = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    try:
        host.send("open", {"spec": "fake"})
        host.send("play")
        qtbot.waitUntil(lambda: rec["frames"] == 2, timeout=SLOW_WAIT)
        qtbot.waitUntil(lambda: any("no frame from" in t for _, t in rec["log"]), timeout=SLOW_WAIT)
        n = len(ticks)
        qtbot.wait(300)
        assert len(ticks) > n + 5  # the UI thread's timer keeps firing while the source is stuck
        assert not rec["errors"]
    finally:
        timer.stop()
        src.release.set()
        t0 = time.monotonic()
        assert host.shutdown(20000)
        assert time.monotonic() - t0 < 20
    assert src.closed


def test_camera_unplugged_mid_stream_keeps_the_model(qtbot, monkeypatch, tmp_path):
    from fusion.export import load_mesh

    src = FakeLive(good=4, fail=DeviceError("camera 1234: device disconnected (unplugged?)"))
    host, rec = _host(monkeypatch, src)
    try:
        host.send("open", {"spec": "fake"})
        host.send("start", {"settings": ReconSettings(tracker="none", voxel_size=0.01, processing_size=None,
                                                      sequence_after=0)})
        qtbot.waitUntil(lambda: bool(rec["errors"]), timeout=SLOW_WAIT)
        title, text = rec["errors"][-1]
        assert "disconnected" in text and "kept" in text
        assert rec["stats"]["frames_fused"] == 4 and not rec["state"]["playing"]
        assert rec["state"]["has_model"]
        host.send("export", {"which": "canonical", "path": str(tmp_path / "m.ply")})
        qtbot.waitUntil(lambda: rec["export"] is not None, timeout=SLOW_WAIT)
        assert rec["export"]["ok"], rec["export"]
        assert load_mesh(tmp_path / "m.ply").num_faces > 50
    finally:
        assert host.shutdown(20000)


# ---------------------------------------------------------------------------------------------- widgets

def test_transport_labels_and_requests(qtbot):
    from app.gui.transport import TransportBar

    t = TransportBar()
    qtbot.addWidget(t)
    assert not t.play_btn.isEnabled()
    t.set_source({"length": 90, "timestamps": [i / 30 for i in range(90)], "is_live": False, "fps": 30.0})
    assert t.play_btn.isEnabled() and t.slider.maximum() == 89
    t.set_position(29, 29 / 30)
    assert "30 / 90" in t.pos_label.text() and "0.97 / 2.97 s" in t.pos_label.text()
    with qtbot.waitSignal(t.seekRequested) as sig:
        t.slider.setValue(45)
    assert sig.args == [45]
    with qtbot.waitSignal(t.playRequested) as sig:
        t.play_btn.click()
    assert sig.args == [True]
    t.set_source({"length": None, "is_live": True, "fps": 30.0})
    assert not t.slider.isEnabled() and t.play_btn.isEnabled()


def test_controls_settings_presets_and_availability(qtbot, tmp_path):
    from app.gui.controls import ReconstructionControls

    c = ReconstructionControls()
    qtbot.addWidget(c)
    s = ReconSettings(tracker="none", voxel_size=0.005, depth_min=0.2, depth_max=1.5, node_coverage=0.03,
                      processing_size=(640, 480), sequence_after=5, mesh_trunc_voxels=0.0, features="sift", carve_px=1.5)
    c.set_settings(s)
    assert c.settings() == s
    assert not c.features.isEnabled()  # features are the classical tracker's
    c.tracker.setCurrentIndex(c.tracker.findData("classical"))
    assert c.features.isEnabled()
    c.set_settings(s)
    c.set_tracker_availability({"classical": (True, ""), "neural": (False, "no trained weights")})
    i = c.tracker.findData("neural")
    assert not c.tracker.model().item(i).isEnabled()
    assert "weights" in c.tracker.model().item(i).toolTip()
    p = c.save_preset_file(tmp_path / "p.toml")
    c.set_settings(ReconSettings())
    assert c.load_preset_file(p) == s and c.settings() == s
    with qtbot.waitSignal(c.startRequested) as sig:
        c.start_btn.click()
    assert sig.args[0] == s
    c.set_running(True, True)
    assert not c.voxel.isEnabled() and c.stop_btn.isEnabled() and not c.start_btn.isEnabled()
    c.set_running(False, True)
    assert c.start_btn.text() == "Resume" and not c.voxel.isEnabled()
    c.set_running(False, False)
    assert c.voxel.isEnabled()


def test_dialogs_without_a_camera_do_not_block(qtbot, monkeypatch):
    import fusion.sources.live as live

    from app.gui.dialogs import ExportDialog, OpenCameraDialog, RecordDialog

    monkeypatch.setattr(live, "list_devices", lambda context=None: [])
    rec = RecordDialog(default_path="x.db3")
    qtbot.addWidget(rec)
    qtbot.waitUntil(lambda: "no RealSense camera" in rec.form.note.text(), timeout=10000)
    assert not rec.record_btn.isEnabled()
    cam = OpenCameraDialog()
    qtbot.addWidget(cam)
    qtbot.waitUntil(lambda: cam.form.camera.isEnabled() is False and "no RealSense" in cam.form.note.text(), timeout=10000)
    assert not cam.open_btn.isEnabled()
    monkeypatch.setattr(live, "list_devices", lambda context=None: [{"name": "Intel RealSense D435", "serial": "123"}])
    cam.form.refresh()
    qtbot.waitUntil(lambda: cam.open_btn.isEnabled(), timeout=10000)
    spec, opts = cam.spec_and_options()
    assert spec == "camera:123" and opts["config"].serial == "123" and opts["config"].width == 640
    ex = ExportDialog(has_sequence=False)
    qtbot.addWidget(ex)
    assert not ex.kind["sequence"].isEnabled()
    ex.fmt.setCurrentIndex(ex.fmt.findData("glb"))
    assert ex.request()["path"].endswith("mesh.glb") and ex.request()["which"] == "canonical"


def test_depth_colors_match_the_preview_colormap(qtbot):
    from app.gui.views import DepthView, auto_depth_range, colorize_depth
    from fusion.preview import depth_to_rgb

    rng = np.random.default_rng(0)
    d = rng.uniform(0.4, 2.0, (60, 80)).astype(np.float32)
    d[:5] = 0
    ours = colorize_depth(d, 0.5, 1.5).astype(int)
    ref = depth_to_rgb(d, 0.5, 1.5).astype(int)
    assert np.abs(ours - ref).max() <= 12  # 256-entry table vs the continuous map
    assert (ours[:5] == 0).all()
    lo, hi = auto_depth_range(d)
    assert 0.4 < lo < hi < 2.0
    assert auto_depth_range(np.zeros((4, 4), np.float32)) is None
    v = DepthView()
    qtbot.addWidget(v)
    v.set_depth(d, "x")
    got = []
    v.rangeChanged.connect(got.append)
    v.auto_box.setChecked(False)
    v.bar.setLevels((0.6, 1.2))
    v._bar_changed()  # what dragging the bar ends with
    assert got[-1] == pytest.approx((0.6, 1.2)) and not v.auto_box.isChecked()
    v.auto_box.setChecked(True)
    assert got[-1] is None
