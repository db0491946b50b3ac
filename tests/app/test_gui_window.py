"""The main window end to end (needs an X server for the OpenGL views: `make test` runs under Xvfb).

One window is shared by the tests of this module (each test brings it to the state it needs, so the order
does not matter): play the bundled recording and watch the 3D view change, export, capture / save / load,
run and cancel the Compare panel, bad input (corrupt file, no camera, a volume too large for memory) with
the app going on, the scripted `nrstudio gui` run, and closing. Frames are fused at 320x240 with the
static tracker to keep the module fast.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gl,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="GL views need an X server (run under xvfb-run / make test)"),
    pytest.mark.xdist_group("gui"),
]

import app.gui  # noqa: E402,F401  (sets Qt's shared-GL-context attribute before pytest-qt makes the QApplication)
from tests.conftest import cancel_panel_at_first_report  # noqa: E402
from fusion.paths import ASSETS  # noqa: E402

SAMPLE = ASSETS / "sample.db3"
WAIT = 300_000  # ms; generous for a cold numba cache on a loaded machine (returns as soon as satisfied)


def _settings():
    from app.gui.settings import ReconSettings

    return ReconSettings(tracker="none", processing_size=(320, 240), sequence_after=2)


def _new_window():
    from app.gui.main_window import MainWindow

    if not SAMPLE.exists():
        pytest.skip(f"{SAMPLE} not found")
    win = MainWindow(_settings(), stall_s=30)
    win.resize(1400, 900)
    win.show()
    return win


@pytest.fixture(scope="module")
def window(qapp):
    win = _new_window()
    yield win
    win.close()


def _open_sample(win, qtbot) -> None:
    shown = win.frames_shown
    win.open_source(str(SAMPLE))
    qtbot.waitUntil(lambda: win.source_info is not None and win.frames_shown > shown, timeout=WAIT)


def _fresh_model(win, qtbot, frames: int) -> None:
    """Reset, open the sample, fuse `frames` frames and wait for their mesh."""
    win.close_message_boxes()
    win.reset_reconstruction()
    qtbot.waitUntil(lambda: not win.state.get("has_model") and not win.state.get("fusing"), timeout=WAIT)
    _open_sample(win, qtbot)
    win.start_reconstruction(_settings(), paused=True)
    qtbot.waitUntil(lambda: bool(win.state.get("fusing")), timeout=WAIT)
    m0 = win.mesh_updates
    win.play(frames=frames)
    qtbot.waitUntil(lambda: win.last_stats.get("frames_in", 0) >= frames and not win.state.get("playing")
                    and win.mesh_updates > m0, timeout=WAIT)


def _ensure_model(win, qtbot, frames: int = 4) -> None:
    if not (win.state.get("has_model") and win.state.get("has_sequence")
            and win.last_stats.get("frames_fused", 0) >= frames and win.source_info is not None):
        _fresh_model(win, qtbot, frames)


def _fb(win) -> np.ndarray:
    return win.scene.grab_array().astype(np.int16)


def _nonbackground(img: np.ndarray) -> float:
    from app.gui.views import BACKGROUND

    return float((np.abs(img - np.array(BACKGROUND)).sum(-1) > 40).mean())


def test_play_bundled_recording_and_3d_view_changes(window, qtbot):
    win = window
    win.close_message_boxes()
    win.reset_reconstruction()
    qtbot.waitUntil(lambda: not win.state.get("has_model") and not win.state.get("fusing"), timeout=WAIT)
    _open_sample(win, qtbot)  # the first frame is previewed
    assert win.source_info["length"] == 90
    assert (win.source_info["width"], win.source_info["height"]) == (640, 480)
    qtbot.wait(200)
    empty = _fb(win)
    win.start_reconstruction(_settings(), paused=True)
    qtbot.waitUntil(lambda: win.state.get("fusing"), timeout=WAIT)
    m0 = win.mesh_updates
    win.play(frames=2)
    qtbot.waitUntil(lambda: win.last_stats.get("frames_in", 0) >= 2 and not win.state.get("playing")
                    and win.mesh_updates > m0, timeout=WAIT)
    qtbot.wait(200)
    a = _fb(win)
    assert a.shape[0] > 100 and a.shape[1] > 100
    assert _nonbackground(a) > 0.02, "the 3D view shows no mesh"
    assert _nonbackground(a) > _nonbackground(empty) + 0.01
    m1 = win.mesh_updates
    win.play(frames=3)
    qtbot.waitUntil(lambda: win.last_stats.get("frames_in", 0) >= 5 and not win.state.get("playing")
                    and win.mesh_updates > m1, timeout=WAIT)
    qtbot.wait(200)
    b = _fb(win)
    assert np.abs(a - b).mean() > 0.05, "the 3D view did not change between frames"
    st = win.last_stats
    assert st["frames_fused"] == st["frames_in"] == 5
    assert st["nodes"] > 0
    assert win.transport.slider.value() == 4
    assert "5 / 90" in win.transport.pos_label.text()
    assert win.last_mesh["canonical"]["faces"].shape[0] > 100
    assert win.frames_shown >= 5


def test_export_writes_readable_files(window, qtbot, tmp_path):
    from fusion.export import load_mesh

    win = window
    _ensure_model(win, qtbot)
    for which, name in (("canonical", "canon.ply"), ("live", "live.obj")):
        win.export_mesh(which, tmp_path / name)
        qtbot.waitUntil(lambda: win.last_export is not None, timeout=WAIT)
        assert win.last_export["ok"], win.last_export
        m = load_mesh(tmp_path / name)
        assert m.num_vertices > 100 and m.num_faces > 100
    win.export_mesh("sequence", tmp_path / "seq", "glb")
    qtbot.waitUntil(lambda: win.last_export is not None, timeout=WAIT)
    assert win.last_export["ok"], win.last_export
    files = sorted((tmp_path / "seq").glob("frame_*.glb"))
    assert len(files) >= 3  # frozen after 2 fused frames, one mesh per later frame
    seq = [load_mesh(f) for f in files]
    assert len({m.num_vertices for m in seq}) == 1  # constant connectivity
    # Cancel pressed while the files are being written (at the first progress report, in the worker thread)
    from PySide6 import QtCore

    cancel = threading.Event()

    def cancel_now(done: int, total: int, text: str) -> None:
        cancel.set()

    win.worker.exportProgress.connect(cancel_now, QtCore.Qt.ConnectionType.DirectConnection)
    try:
        win.export_mesh("sequence", tmp_path / "seq2", "ply", cancel=cancel)
        qtbot.waitUntil(lambda: win.last_export is not None, timeout=WAIT)
    finally:
        win.worker.exportProgress.disconnect(cancel_now)
    assert win.last_export.get("cancelled") and not win.last_export["ok"]
    assert len(list((tmp_path / "seq2").glob("*.ply"))) == 1  # cancelled after the first file


def _capture_two_frames(win, qtbot) -> None:
    """Capture the current fused surface, play one frame, capture again (two new captures)."""
    n0 = len(win.captures)
    win.host.send("capture", {"every": 0})
    qtbot.waitUntil(lambda: len(win.captures) == n0 + 1, timeout=WAIT)
    m1 = win.mesh_updates
    win.play(frames=1)
    qtbot.waitUntil(lambda: not win.state.get("playing") and win.mesh_updates > m1, timeout=WAIT)
    win.host.send("capture", {"every": 0})
    qtbot.waitUntil(lambda: len(win.captures) == n0 + 2, timeout=WAIT)


def test_captures_save_and_load(window, qtbot, tmp_path):
    from app.gui.captures import load_captures

    win = window
    _ensure_model(win, qtbot)
    _capture_two_frames(win, qtbot)
    a, b = win.captures.items[-2:]
    assert a.num_points > 500 and a.normals is not None and a.colors is not None
    assert a.track_ids is not None and len(np.unique(a.track_ids)) > 0.9 * a.num_points
    # samples sharing an id are the same point (crossings at a voxel centre), never distinct points
    order = np.argsort(a.track_ids, kind="stable")
    ids, pts = a.track_ids[order], a.points[order]
    same = ids[1:] == ids[:-1]
    assert np.all(np.linalg.norm(pts[1:][same] - pts[:-1][same], axis=1) < 1e-4)
    assert len(np.intersect1d(a.track_ids, b.track_ids)) > 0.5 * a.num_points  # the same canonical points
    assert win.capture_dock.list.count() == len(win.captures)
    assert not win.capture_dock.list.item(0).icon().isNull()
    win.capture_dock.save_to(tmp_path / "caps")
    assert (tmp_path / "caps" / "captures.json").is_file()
    assert len(list((tmp_path / "caps").glob("*.ply"))) == len(win.captures)
    back = load_captures(tmp_path / "caps")
    for orig, got in zip(win.captures.items, back):
        np.testing.assert_array_equal(orig.points, got.points)
        np.testing.assert_array_equal(orig.colors, got.colors)
        np.testing.assert_array_equal(orig.track_ids, got.track_ids)
        assert got.name == orig.name and got.frame_index == orig.frame_index
    k = len(win.captures)
    assert win.capture_dock.load_from(tmp_path / "caps") == k
    assert len(win.captures) == 2 * k


def test_compare_panel_runs_and_cancels(window, qtbot):
    from models.common.metrics import chamfer_l1

    win = window
    if len(win.captures) < 2:
        _ensure_model(win, qtbot)
        _capture_two_frames(win, qtbot)
    panel = win.panels.panels["compare"]
    a, b = win.captures.items[-2], win.captures.items[-1]
    panel.choosers["A"].select_capture(len(win.captures) - 2)
    panel.choosers["B"].select_capture(len(win.captures) - 1)
    with qtbot.waitSignal(panel.jobFinished, timeout=WAIT) as sig:
        job = panel.run()
        assert job is not None and panel.running
    res = sig.args[0]
    assert len(panel.progress_log) >= 3 and panel.progress_log[-1][0] == 1.0
    fr = [f for f, _ in panel.progress_log]
    assert fr == sorted(fr)
    expect = 1e3 * chamfer_l1(a.points.astype(np.float64), b.points.astype(np.float64))
    assert res.summary["chamfer_l1_mm"] == pytest.approx(expect, rel=1e-6)
    assert res.summary["shared_track_ids"] > 0
    assert panel.table.rowCount() == len(res.summary)
    assert panel.export_btn.isEnabled()
    # cancel: pressed at the first progress report (direct connection: inside the job's thread)
    cancel_panel_at_first_report(qtbot, panel, WAIT)
    assert panel.bar.format() == "cancelled" and panel.run_btn.isEnabled()
    assert panel.result is res  # the previous result stays


def test_corrupt_file_shows_error_and_app_goes_on(window, qtbot, tmp_path):
    win = window
    _ensure_model(win, qtbot)
    bad = tmp_path / "corrupt.db3"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    n_err = len(win.errors)
    win.open_source(str(bad))
    qtbot.waitUntil(lambda: len(win.errors) > n_err, timeout=WAIT)
    title, text = win.errors[-1]
    assert "corrupt.db3" in text
    assert any(lvl == "error" and "corrupt.db3" in t for lvl, t in win.log_pane.entries)
    assert win.message_boxes and win.message_boxes[-1].isVisible()
    win.close_message_boxes()
    # what was fused so far is still exportable
    out = tmp_path / "after_error.ply"
    win.export_mesh("canonical", out)
    qtbot.waitUntil(lambda: win.last_export is not None, timeout=WAIT)
    assert win.last_export["ok"] and out.is_file()
    # no camera here: a clear message, still running
    n_err = len(win.errors)
    win.open_source("camera")
    qtbot.waitUntil(lambda: len(win.errors) > n_err, timeout=WAIT)
    assert "camera" in win.errors[-1][1].lower()
    win.close_message_boxes()
    # and a good recording plays again
    _open_sample(win, qtbot)


def test_volume_too_large_for_memory_is_a_message(window, qtbot):
    from app.gui.settings import ReconSettings

    win = window
    win.close_message_boxes()
    win.reset_reconstruction()
    qtbot.waitUntil(lambda: not win.state.get("has_model"), timeout=WAIT)
    if win.source_info is None:
        _open_sample(win, qtbot)
    n_err = len(win.errors)
    win.start_reconstruction(ReconSettings(tracker="none", voxel_size=0.001, memory_budget_gb=0.01,
                                           processing_size=(320, 240)))
    qtbot.waitUntil(lambda: len(win.errors) > n_err, timeout=WAIT)
    assert "GiB" in win.errors[-1][1] or "memory" in win.errors[-1][1].lower()
    assert not win.state.get("fusing")
    win.close_message_boxes()
    # a sensible voxel size works afterwards
    win.start_reconstruction(ReconSettings(tracker="none", processing_size=(320, 240)), paused=True)
    qtbot.waitUntil(lambda: win.state.get("fusing"), timeout=WAIT)
    win.play(frames=1)
    qtbot.waitUntil(lambda: win.state.get("has_model") and not win.state.get("playing"), timeout=WAIT)


def test_gui_command_scripted_screenshot(qapp, tmp_path, capsys):
    import argparse

    from app.commands import gui
    from PySide6 import QtGui

    p = argparse.ArgumentParser()
    gui.add_arguments(p)
    shot = tmp_path / "window.png"
    args = p.parse_args([str(SAMPLE), "--frames", "2", "--tracker", "none", "--screenshot", str(shot),
                         "--size", "1200x800", "--capture-every", "1", "--report", str(tmp_path / "r.json")])
    assert gui.run(args) == 0
    img = QtGui.QImage(str(shot))
    assert img.width() >= 1200 and img.height() >= 800
    import json

    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["frames_in"] == 2 and rep["captures"] == 2
    assert "replayed 2 frames" in capsys.readouterr().out


def test_gui_command_bad_recording_exits_2(qapp, tmp_path, capsys):
    from app.cli import main

    bad = tmp_path / "bad.db3"
    bad.write_bytes(b"not a recording")
    assert main(["gui", str(bad), "--frames", "1", "--screenshot", str(tmp_path / "x.png")]) == 2
    assert "bad.db3" in capsys.readouterr().err


def test_close_stops_the_worker(qapp, qtbot):
    win = _new_window()
    _open_sample(win, qtbot)
    win.play()  # closing while playing
    pumps = [win.worker.pump, *win.worker.retired_pumps]
    win.close()
    assert win.host.thread.isFinished()
    assert all(p is None or not p.thread.is_alive() for p in pumps)
