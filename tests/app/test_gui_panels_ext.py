"""The panel framework's sequence inputs and animated results (app/gui/panels.py): the sequence chooser
returns the ticked clouds in order (captures, then files / a folder in natural order), a panel with a
sequence input hands `compute` a list, a result with frames drives the view's time slider / play button
and changes the layers shown, and the export writes one file per frame layer.

The panels' 3D views are OpenGL widgets: run under Xvfb (`xvfb-run -a .venv/bin/python -m pytest ...`).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gl,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="GL views need an X server (run under xvfb-run / make test)"),
    pytest.mark.xdist_group("gui"),
]

import app.gui  # noqa: E402,F401  (sets Qt's shared-GL-context attribute before pytest-qt makes the QApplication)

WAIT = 60_000


def _cap(n: int, shift: float, name: str):
    from app.gui.captures import Capture

    rng = np.random.default_rng(n)
    return Capture(rng.normal(size=(n, 3)).astype(np.float32) * 0.1 + shift, name=name)


def _seq_panel_class():
    from app.gui.panels import Layer, PanelResult, Param, ShapePanel

    class SeqPanel(ShapePanel):
        """Not registered (keeps the app's dock unchanged): one sequence input, one single input."""

        key = "seqtest"
        title = "Sequence test"
        inputs = ("Sequence", "Reference")
        sequence_inputs = ("Sequence",)
        params = (Param("lift", "Lift", "float", 0.5, 0.0, 10.0),)

        def compute(self, inputs, params, ctx):
            seq, ref = inputs["Sequence"], inputs["Reference"]
            self.seen = (list(seq), ref)
            frames = []
            tri = np.array([[0, 1, 2]], np.int64)
            for t, cap in enumerate(seq):
                ctx.progress((t + 1) / len(seq), f"frame {t + 1}")
                pts = cap.points + np.float32([0, 0, params["lift"] * t])
                frames.append([Layer("cloud", pts, np.full((len(pts), 3), 10 * t, np.uint8)),
                               Layer("tri", pts[:3], None, faces=tri)])
            return PanelResult(layers=[Layer("reference", ref.points)], summary={"n": len(seq)},
                               arrays={"idx": np.arange(len(seq))}, frames=frames)

    return SeqPanel


def test_sequence_chooser_order_files_and_folder(qtbot, tmp_path):
    from PySide6 import QtCore

    from app.gui.captures import CaptureStore, write_capture_ply
    from app.gui.panels import SequenceChooser, sequence_files
    from fusion.errors import InputError

    store = CaptureStore()
    caps = [_cap(50 + i, i, f"c{i}") for i in range(4)]
    store.extend(caps)
    ch = SequenceChooser(store)
    qtbot.addWidget(ch)
    assert ch.current() == caps  # new captures arrive ticked, in list order
    ch.select_captures([3, 1])
    assert ch.current() == [caps[1], caps[3]]  # list order, not the order given
    # unticking an item in the list widget drops it
    ch.list.item(1).setCheckState(QtCore.Qt.CheckState.Unchecked)
    assert ch.current() == [caps[3]]
    # a folder: PLY / OBJ / OFF in natural order, other files ignored
    d = tmp_path / "seq"
    d.mkdir()
    for i in (10, 2, 1):
        write_capture_ply(d / f"f{i}.ply", _cap(20 + i, i, f"f{i}"))
    (d / "notes.txt").write_text("not a cloud")
    assert [f.name for f in sequence_files(d)] == ["f1.ply", "f2.ply", "f10.ply"]
    added = ch.add_folder(d)
    assert [c.name for c in added] == ["f1", "f2", "f10"]
    assert [c.name for c in ch.current()] == ["c3", "f1", "f2", "f10"]
    assert ch.list.count() == 7 and "4 of 7" in ch.count_label.text()
    # ticks survive a store change; a new capture arrives ticked
    store.add(_cap(30, 9, "c4"))
    assert [c.name for c in ch.current()] == ["c3", "c4", "f1", "f2", "f10"]
    ch.clear_files()
    assert [c.name for c in ch.current()] == ["c3", "c4"]
    store.remove([3])
    assert [c.name for c in ch.current()] == ["c4"]
    # bad folders name the problem
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no PLY"):
        ch.add_folder(empty)
    with pytest.raises(InputError, match="not a folder"):
        ch.add_folder(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n")
    with pytest.raises(InputError):
        ch.add_folder(bad)
    assert [c.name for c in ch.current()] == ["c4"]  # nothing added on failure


def test_sequence_panel_frames_drive_the_slider_and_export(qtbot, tmp_path):
    from app.gui.captures import CaptureStore, read_capture_ply
    from app.gui.panels import InputChooser, SequenceChooser

    store = CaptureStore()
    caps = [_cap(40 + i, i, f"c{i}") for i in range(3)]
    store.extend(caps)
    panel = _seq_panel_class()(store)
    qtbot.addWidget(panel)
    panel.resize(500, 500)
    panel.show()
    assert isinstance(panel.choosers["Sequence"], SequenceChooser)
    assert isinstance(panel.choosers["Reference"], InputChooser)
    assert not panel.view.time_bar.isVisible()
    panel.choosers["Sequence"].select_captures([2, 0, 1])
    panel.choosers["Reference"].select_capture(1)
    with qtbot.waitSignal(panel.jobFinished, timeout=WAIT) as sig:
        assert panel.run() is not None
    res = sig.args[0]
    seq, ref = panel.seen
    assert seq == caps and ref is caps[1]  # a list in order; the single input stays a Capture
    assert len(res.frames) == 3 and [f for f, _ in panel.progress_log][-1] == 1.0
    view = panel.view
    # the time bar appears, paused at frame 0
    assert view.time_bar.isVisible() and view.n_frames == 3 and view.slider.maximum() == 2
    assert view.frame_index == 0 and view.frame_label.text() == "frame 1 / 3"
    shown0 = view.shown_layers()
    assert [l.name for l in shown0] == ["reference", "cloud", "tri"]
    assert len(view.gl.items) == 3
    # moving the slider changes the shown layers (the static one stays)
    view.slider.setValue(2)
    shown2 = view.shown_layers()
    assert view.frame_index == 2 and view.frame_label.text() == "frame 3 / 3"
    assert shown2[0] is shown0[0] and shown2[1] is res.frames[2][0] and shown2[1] is not shown0[1]
    np.testing.assert_allclose(shown2[1].points[:, 2] - caps[2].points[:, 2], 1.0, atol=1e-6)
    assert len(view.gl.items) == 3  # the previous frame's items were removed
    # one checkbox per layer name; hiding a frame layer keeps it hidden on other frames
    names = [b.text() for b in view._checks]
    assert names == ["reference", "cloud", "tri"]
    view._checks[1].setChecked(False)
    view.set_frame(0)
    assert [it.visible() for it in view._frame_items] == [False, True]
    view._checks[1].setChecked(True)
    # play advances (and loops); pause stops
    view.play_btn.click()
    assert view.playing and view.play_btn.text() == "❚❚"
    qtbot.waitUntil(lambda: view.frame_index == 2, timeout=5000)
    qtbot.waitUntil(lambda: view.frame_index == 0, timeout=5000)
    view.play_btn.click()
    assert not view.playing and view.play_btn.text() == "▶"
    t = view.frame_index
    qtbot.wait(400)
    assert view.frame_index == t
    # export: static layers, one file per frame layer, arrays, summary
    out = panel.export(res, tmp_path / "exp")
    names = sorted(p.name for p in out)
    expect = (["seqtest_reference.ply", "seqtest_idx.npy", "seqtest_summary.json"]
              + [f"seqtest_cloud_{t:04d}.ply" for t in range(3)] + [f"seqtest_tri_{t:04d}.ply" for t in range(3)])
    assert names == sorted(expect)
    for t in range(3):
        back = read_capture_ply(tmp_path / "exp" / f"seqtest_cloud_{t:04d}.ply")
        np.testing.assert_allclose(back.points, res.frames[t][0].points)
        np.testing.assert_array_equal(back.colors, res.frames[t][0].colors)
        import trimesh

        m = trimesh.load(tmp_path / "exp" / f"seqtest_tri_{t:04d}.ply", process=False)
        assert len(m.faces) == 1
        np.testing.assert_allclose(m.vertices, res.frames[t][1].points, atol=1e-6)
    assert json.loads((tmp_path / "exp" / "seqtest_summary.json").read_text())["summary"] == {"n": 3}
    # a static result afterwards hides the time bar again
    from app.gui.panels import Layer, PanelResult

    panel.show_result(PanelResult(layers=[Layer("only", caps[0].points)], summary={"k": 1.5}))
    assert not view.time_bar.isVisible() and view.n_frames == 0 and len(view.gl.items) == 1
    assert panel.table.rowCount() == 1 and panel.export_btn.isEnabled()


def test_sequence_input_required_and_extra_buttons(qtbot):
    from app.gui.captures import CaptureStore

    store = CaptureStore()
    panel = _seq_panel_class()(store)
    qtbot.addWidget(panel)
    import app.gui.panels as panels

    shown = []
    orig = panels.notify
    panels.notify = lambda *a, **k: shown.append(a)
    try:
        assert panel.run() is None  # nothing to run on: a message, no job
    finally:
        panels.notify = orig
    assert shown and "Sequence" in shown[0][2]
    clicks = []
    btn = panel.add_button("Load…", lambda: clicks.append(1), "load a file")
    btn.click()
    assert clicks == [1] and btn.toolTip() == "load a file"
