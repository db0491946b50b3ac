"""Side-panel framework polish: uniform layer colors, panels that fit their dock, mesh faces kept on
captures, and the view's up-axis choice (app/gui/panels.py, app/gui/captures.py).

GL views: run under Xvfb (`xvfb-run -a .venv/bin/python -m pytest -q tests/app/test_gui_panels_fit.py`).
The file / Capture tests need no display.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import app.gui  # noqa: F401  (sets Qt's shared-GL-context attribute before pytest-qt makes the QApplication)
from fusion.errors import InputError

def needs_x(fn):
    """GL tests: skipped without an X server; grouped with the other GUI tests under xdist."""
    for mark in (pytest.mark.gl, pytest.mark.xdist_group("gui"),
                 pytest.mark.skipif(not os.environ.get("DISPLAY"),
                                    reason="GL views need an X server (run under xvfb-run / make test)")):
        fn = mark(fn)
    return fn


def _icosphere(level: int = 2) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    m = trimesh.creation.icosphere(level)
    return np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int64)


# ---------------------------------------------------------------------------------------- c: mesh faces


@pytest.mark.parametrize("ext", ["ply", "obj", "off"])
def test_mesh_files_keep_their_faces(tmp_path, ext):
    from app.gui.panels import load_cloud_file
    from models.common.io import save_mesh

    v, f = _icosphere()
    save_mesh(tmp_path / f"s.{ext}", v, f)
    cap = load_cloud_file(tmp_path / f"s.{ext}")
    assert cap.is_mesh and cap.faces.dtype == np.int64
    np.testing.assert_array_equal(cap.faces, f)
    np.testing.assert_allclose(cap.points, v, atol=1e-6)


def test_point_cloud_files_have_no_faces(tmp_path):
    from app.gui.captures import Capture, write_capture_ply
    from app.gui.panels import load_cloud_file

    pts = np.random.default_rng(0).normal(size=(50, 3))
    np.save(tmp_path / "c.npy", pts)
    write_capture_ply(tmp_path / "c.ply", Capture(pts))
    for name in ("c.npy", "c.ply"):
        cap = load_cloud_file(tmp_path / name)
        assert cap.faces is None and not cap.is_mesh and cap.num_points == 50


def test_capture_faces_survive_ply_and_capture_folders(tmp_path):
    from app.gui.captures import Capture, load_captures, read_capture_ply, save_captures, write_capture_ply

    v, f = _icosphere(1)
    cols = np.random.default_rng(1).integers(0, 255, size=(len(v), 3))
    cap = Capture(v, colors=cols, track_ids=np.arange(len(v)), name="sphere", faces=f)
    back = read_capture_ply(write_capture_ply(tmp_path / "one.ply", cap))
    np.testing.assert_array_equal(back.faces, f)
    np.testing.assert_array_equal(back.colors, cols)
    np.testing.assert_array_equal(back.track_ids, np.arange(len(v)))
    # trimesh reads our mesh PLY as the same mesh
    from models.common.io import load_mesh

    np.testing.assert_array_equal(load_mesh(tmp_path / "one.ply").faces, f)
    save_captures(tmp_path / "caps", [cap, Capture(v[:7], name="cloud")])
    caps = load_captures(tmp_path / "caps")
    np.testing.assert_array_equal(caps[0].faces, f)
    assert caps[1].faces is None


def test_ply_polygons_are_triangulated_ascii_and_binary(tmp_path):
    import struct

    from app.gui.captures import read_capture_ply

    head = ("ply\nformat {fmt} 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
            "element face 2\nproperty list uchar int vertex_indices\nproperty uchar flag\nend_header\n")
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    (tmp_path / "a.ply").write_text(head.format(fmt="ascii") + "".join(f"{x} {y} {z}\n" for x, y, z in verts)
                                    + "4 0 1 2 3 7\n3 0 1 4 9\n")
    body = verts.astype("<f4").tobytes() + struct.pack("<B4iB", 4, 0, 1, 2, 3, 7) + struct.pack("<B3iB", 3, 0, 1, 4, 9)
    (tmp_path / "b.ply").write_bytes(head.format(fmt="binary_little_endian").encode() + body)
    want = [[0, 1, 2], [0, 2, 3], [0, 1, 4]]
    assert read_capture_ply(tmp_path / "a.ply").faces.tolist() == want
    assert read_capture_ply(tmp_path / "b.ply").faces.tolist() == want
    (tmp_path / "c.ply").write_bytes(head.format(fmt="binary_little_endian").encode() + body[:-8])
    with pytest.raises(InputError, match="c.ply"):
        read_capture_ply(tmp_path / "c.ply")
    (tmp_path / "d.ply").write_text(head.format(fmt="ascii") + "".join(f"{x} {y} {z}\n" for x, y, z in verts)
                                    + "3 0 1 2 7\n3 0 1 9 9\n")
    with pytest.raises(InputError, match="outside"):
        read_capture_ply(tmp_path / "d.ply")


def test_capture_rejects_bad_faces():
    from app.gui.captures import Capture

    v = np.zeros((4, 3))
    with pytest.raises(ValueError, match="outside"):
        Capture(v, faces=[[0, 1, 4]])
    with pytest.raises(ValueError, match="outside"):
        Capture(v, faces=[[0, -1, 2]])
    with pytest.raises(ValueError, match="integer"):
        Capture(v, faces=[[0.0, 1.5, 2.0]])
    assert Capture(v, faces=np.zeros((0, 3), np.int64)).is_mesh is False


def test_match_panels_take_faces_from_the_capture_not_the_file(tmp_path):
    from app.gui.captures import Capture
    from app.gui.panel_diffumatch import mesh_faces_of, reduce_shape
    from app.gui.panels import load_cloud_file
    from models.common.io import save_mesh

    v, f = _icosphere()
    save_mesh(tmp_path / "s.off", v, f)
    cap = load_cloud_file(tmp_path / "s.off")
    (tmp_path / "s.off").unlink()  # no re-reading: the faces travel with the capture
    np.testing.assert_array_equal(mesh_faces_of(cap), f)
    shape = reduce_shape(cap, 1000)
    assert shape.kind == "mesh" and np.array_equal(shape.faces, f)
    assert mesh_faces_of(Capture(v, source=str(tmp_path / "s.off"))) is None


def test_qaad_panel_samples_meshes_by_area():
    from app.gui.captures import Capture
    from app.gui.panel_qaad import dataset_from_captures

    v, f = _icosphere(1)  # 42 vertices; 500 surface samples lie on the triangles, inside the unit sphere
    ds = dataset_from_captures([Capture(v, faces=f, name="m"), Capture(v[:30], name="c")], 500, 0)
    assert ds.clouds.shape == (2, 500, 3)
    r = np.linalg.norm(ds.clouds[0], axis=1)
    assert r.max() <= 1.0 + 1e-6 and r.min() < 0.99  # points between vertices, not only the 42 vertices
    assert len(np.unique(ds.clouds[0].round(6), axis=0)) > 400
    assert any("sampled 1 mesh" in n for n in ds.notes) and any("resampled 1 cloud" in n for n in ds.notes)


# ---------------------------------------------------------------------------------------- a: colors


@needs_x
@pytest.mark.parametrize("alpha", [1.0, 0.35])
def test_uniform_layer_color_reaches_every_point(qtbot, alpha):
    from app.gui.panels import CloudView, Layer
    from app.gui.views import BACKGROUND, qimage_to_numpy

    view = CloudView()
    qtbot.addWidget(view)
    view.resize(400, 360)
    view.show()
    qtbot.waitExposed(view)
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-1, 1, 3000), rng.uniform(-1, 1, 3000), np.zeros(3000)].astype(np.float32)
    view.set_layers([Layer("gray", pts, None, size=4.0, alpha=alpha)])
    item = view._items[0]
    # a uniform color must be a plain tuple: pyqtgraph takes any numpy array as per-point colors
    assert not isinstance(item.color, np.ndarray)
    assert tuple(item.color) == pytest.approx((*CloudView.UNIFORM_GRAY, alpha))
    view.gl.update()
    qtbot.wait(50)
    img = qimage_to_numpy(view.gl.grabFramebuffer()).astype(np.int16)
    drawn = np.abs(img - np.array(BACKGROUND)).sum(-1) > 30
    assert drawn.mean() > 0.02
    dark = img[drawn].max(-1) < 20  # black points (the bug: all but the first point black)
    assert dark.mean() < 0.01
    # per-point colors stay per point
    cols = rng.integers(0, 255, size=(3000, 3))
    view.set_layers([Layer("colored", pts, cols)])
    assert isinstance(view._items[0].color, np.ndarray) and view._items[0].color.shape == (3000, 4)


# ---------------------------------------------------------------------------------------- d: up axis


@pytest.mark.parametrize("up, data_up", [("-y", (0, -1, 0)), ("+y", (0, 1, 0)), ("+z", (0, 0, 1)), ("-z", (0, 0, -1))])
def test_up_axis_points_the_chosen_axis_up_in_display(up, data_up):
    from app.gui.panels import VIEW_UP
    from app.gui.views import to_display

    R = VIEW_UP[up]
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)  # a rotation, no mirror
    d = to_display((R @ np.asarray(data_up, float))[None])[0]
    np.testing.assert_allclose(d, [0, 0, 1], atol=1e-6)  # drawn upward (display z)


@needs_x
def test_up_axis_choice_is_display_only_and_keeps_the_view_state(qtbot):
    from app.gui.panels import CloudView, Layer

    view = CloudView()
    qtbot.addWidget(view)
    view.resize(400, 300)
    view.show()
    head = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)  # y-up data: the head above the feet
    v, f = _icosphere(1)
    static = Layer("static", head.copy(), None)
    frames = [[Layer("moving", head + t, None), Layer("mesh", v + t, None, f)] for t in range(3)]
    view.set_layers([static], frames)
    view.set_frame(2)
    view._checks[0].setChecked(False)  # hide the static layer
    view._frame_checks["mesh"].setChecked(False)
    assert view.up_axis == "-y" and view.up_combo.currentData() == "-y"  # default: the camera frame
    z_default = view._items[0].pos[:, 2]
    assert z_default[0] < z_default[1]  # y-up data drawn upside down in the camera convention
    view.up_combo.setCurrentIndex(view.up_combo.findData("+y"))  # what the user does
    assert view.up_axis == "+y"
    z_up = view._items[0].pos[:, 2]
    assert z_up[0] > z_up[1]  # upright
    np.testing.assert_array_equal(static.points, head)  # the data is untouched
    assert view.frame_index == 2 and view.slider.value() == 2
    assert not view._checks[0].isChecked() and not view._items[0].visible()
    assert not view._frame_checks["mesh"].isChecked() and [it.visible() for it in view._frame_items] == [True, False]
    mesh_item = view._frame_items[1]
    np.testing.assert_allclose(mesh_item.opts["meshdata"].vertexes(), view.display_points(v + 2), atol=1e-6)
    # a new result keeps the choice
    view.set_layers([Layer("again", head, None)])
    assert view.up_axis == "+y" and view._items[0].pos[0, 2] > view._items[0].pos[1, 2]
    view.set_up_axis("-y")
    assert view.up_combo.currentData() == "-y" and view._items[0].pos[0, 2] < view._items[0].pos[1, 2]
    with pytest.raises(ValueError):
        view.set_up_axis("up")


# ---------------------------------------------------------------------------------------- b: dock fit


@needs_x
def test_every_panel_fits_the_dock_of_the_default_window(qtbot, tmp_path):
    from PySide6 import QtWidgets

    from app.gui.main_window import MainWindow

    win = MainWindow()  # its default size
    try:
        win.show()
        qtbot.waitExposed(win)
        qtbot.wait(200)
        win.panels_dock.raise_()
        qtbot.wait(200)
        assert win.panels_dock.isVisible()
        for key, panel in win.panels.panels.items():
            win.panels.tabs.setCurrentWidget(panel)
            qtbot.wait(50)
            fully = [panel.run_btn, panel.cancel_btn, panel.export_btn, panel.bar]
            fully += panel.findChildren(QtWidgets.QPushButton)
            for w in fully:
                vis = w.visibleRegion().boundingRect()
                assert vis.width() == w.width() and vis.height() == w.height(), (key, getattr(w, "text", str)())
            gl = panel.view.gl
            vis = gl.visibleRegion().boundingRect()
            assert vis.height() == gl.height() >= 150 and vis.width() == gl.width() >= 300, key
            assert panel.width() <= win.panels_dock.width() and panel.height() <= win.panels_dock.height()
            # the form scrolls inside the panel instead of pushing the view out
            assert panel.form_area.height() <= panel.FORM_MAX_SHARE * panel.height() + 1
            assert panel.form_area.widget().height() >= panel.form_area.viewport().height()
    finally:
        win.close()
