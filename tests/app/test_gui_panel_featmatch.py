"""The feature-matching panel (app/gui/panel_featmatch.py): a real pair (two camel-gallop poses, meshes read
as files) deformed in the panel's worker with progress, giving an animation whose frames start at the
source normalised into the target's box and move continuously; a shape deformed toward itself stays put;
Cancel mid-run; bad inputs as one-line failures; and the panel widget end to end (run, time slider / play,
summary table, export of the target, every frame and the trajectory) on procedural meshes.

The widget test needs an X server for the OpenGL view (`xvfb-run -a .venv/bin/python -m pytest ...`); the
others run offscreen.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import app.gui  # noqa: F401  (Qt attributes before the QApplication exists)
from app.gui.captures import Capture
from tests.conftest import cancel_on_progress

pytestmark = pytest.mark.xdist_group("gui")

WAIT = 300_000  # ms; returns as soon as the signal arrives (cold numba cache on a loaded box)


def _params(**over) -> dict:
    from app.gui.panel_featmatch import FeatMatchPanel

    p = {prm.name: prm.default for prm in FeatMatchPanel.params}
    p.update(steps=6, gn_iters=2, fit_iters=25, max_points=400, device="cpu", threads=1)
    p.update(over)
    return p


def _job(source: Capture, target: Capture, params: dict):
    from app.gui.panel_featmatch import run_featmatch
    from app.gui.panels import PanelJob

    return PanelJob(lambda inputs, p, ctx: run_featmatch(inputs["Source"], inputs["Target"], p, ctx),
                    {"Source": source, "Target": target}, params)


def _run(qtbot, source: Capture, target: Capture, params: dict):
    job = _job(source, target, params)
    seen: list[tuple[float, str]] = []
    job.progress.connect(lambda f, t: seen.append((f, t)))
    with qtbot.waitSignal(job.finished, timeout=WAIT) as sig:
        job.start()
    job.thread.wait(5000)
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == 1.0, timeout=5000)
    return sig.args[0], seen


def test_real_pair_animates_in_the_worker(qtbot, shared_data):
    from app.gui.panels import load_cloud_file
    from tests.conftest import require

    d = shared_data / "shapes" / "camel_gallop"
    src = load_cloud_file(require(d / "camel-gallop-01.off"))
    tgt = load_cloud_file(require(d / "camel-gallop-05.off"))
    steps = 6
    res, seen = _run(qtbot, src, tgt, _params(steps=steps))
    fr = [f for f, _ in seen]
    assert fr == sorted(fr)
    for k in range(1, steps + 1):  # one report per interpolation step (Cancel is honoured there)
        assert any(f"feature matching step {k}/{steps}" in t for _, t in seen)
    assert any("fitting the latent code" in t for _, t in seen)

    s = res.summary
    assert s["source_shape"] == s["target_shape"] == "mesh (decimated)" and s["frames"] == steps + 1
    assert s["layers"] == "3:1, 6:0.1"
    assert np.isfinite(s["chamfer_before"]) and np.isfinite(s["chamfer_to_target"]) and s["chamfer_to_target"] > 0
    assert s["self_intersections"] >= 0 and 0 <= s["fit_bce_source"] < 1.0

    # static target (light gray points), one moving source mesh per frame
    assert [l.name for l in res.layers] == ["Target: camel-gallop-05"] and res.layers[0].faces is None
    assert len(res.frames) == steps + 1
    traj = res.arrays["trajectory"]
    assert traj.shape == (steps + 1, s["source_points"], 3) and traj.dtype == np.float32
    for t, frame in enumerate(res.frames):
        assert [l.name for l in frame] == ["Source (deforming)"]
        np.testing.assert_array_equal(frame[0].points, traj[t])
        assert frame[0].faces is not None and frame[0].faces.max() < s["source_points"]
        np.testing.assert_array_equal(frame[0].colors, res.frames[0][0].colors)  # colors follow the points
    # frame 0: the source normalised into the target's bounding box (centre and longest side)
    tv = res.layers[0].points
    lo, hi = traj[0].min(0), traj[0].max(0)
    tlo, thi = tv.min(0), tv.max(0)
    np.testing.assert_allclose((lo + hi) / 2, (tlo + thi) / 2, atol=1e-4 * np.ptp(tv, axis=0).max())
    assert np.ptp(traj[0], axis=0).max() == pytest.approx(np.ptp(tv, axis=0).max(), rel=1e-4)
    # the points move, continuously: no step longer than the search radius (0.05 of the unit box)
    scale = np.ptp(tv, axis=0).max() / 0.9
    steps_len = np.linalg.norm(np.diff(traj, axis=0), axis=-1)
    assert steps_len.max() <= 0.05 * scale * (1 + 1e-4)
    assert np.linalg.norm(traj[-1] - traj[0], axis=-1).max() > 1e-3 * scale


def test_a_shape_deformed_toward_itself_stays_put(qtbot):
    rng = np.random.default_rng(0)
    p = rng.normal(size=(300, 3)) * np.array([0.3, 0.2, 0.1])
    cap = Capture(p.astype(np.float32), name="blob")
    res, _ = _run(qtbot, cap, cap, _params(steps=3, fit_iters=10, voxel_res=24))
    traj = res.arrays["trajectory"]
    np.testing.assert_allclose(traj[0], cap.points, atol=1e-5)  # normalising into its own box: itself
    np.testing.assert_allclose(traj[-1], traj[0], atol=1e-5)  # identical codes: nothing moves
    assert res.summary["source_shape"] == "cloud"


def test_cancel_mid_run(qtbot):
    from PySide6 import QtCore

    rng = np.random.default_rng(1)
    a = Capture((rng.normal(size=(300, 3)) * [0.3, 0.2, 0.1]).astype(np.float32), name="a")
    b = Capture((rng.normal(size=(300, 3)) * [0.1, 0.3, 0.2]).astype(np.float32), name="b")
    job = _job(a, b, _params(steps=500, fit_iters=10, voxel_res=24))
    seen, done = cancel_on_progress(qtbot, job, "feature matching step 2/", WAIT)
    assert not done and not any("measuring" in t for t in seen)
    assert not any("feature matching step 4/" in t for t in seen)


@pytest.mark.parametrize("src,over,match", [
    (None, {f"layer_{k}": 0.0 for k in range(1, 8)}, "at least one layer"),
    (Capture(np.zeros((3, 3), np.float32), name="few"), {}, "source 'few'.*at least 4 points"),
    (Capture(np.full((40, 3), np.nan, np.float32), name="nan"), {}, "source 'nan'.*NaN"),
    (None, {"reg": -1.0}, "regulariser"),
])
def test_bad_inputs_fail_with_a_message(qtbot, src, over, match):
    rng = np.random.default_rng(2)
    ok = Capture(rng.normal(size=(100, 3)).astype(np.float32), name="ok")
    job = _job(src if src is not None else ok, ok, _params(**over))
    with qtbot.waitSignal(job.failed, timeout=WAIT) as sig:
        job.start()
    job.thread.wait(5000)
    assert re.search(match, sig.args[0]) and "Traceback" not in sig.args[0]


def test_layer_selection():
    from app.gui.panel_featmatch import layer_selection
    from fusion.errors import InputError

    assert layer_selection({"layer_3": 1.0, "layer_6": 0.1, "layer_1": 0.0}, 7) == ((3, 6), (1.0, 0.1))
    with pytest.raises(InputError, match="has 5 layers; layer 6"):
        layer_selection({"layer_6": 1.0}, 5)


@pytest.mark.gl
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="GL views need an X server (run under xvfb-run / make test)")
def test_panel_runs_animates_and_exports(qtbot, tmp_path):
    from app.gui.captures import CaptureStore
    from app.gui.panel_featmatch import FeatMatchPanel
    from app.gui.panels import PANEL_REGISTRY, discover_panels
    from models.common.io import load_mesh, save_mesh
    from models.featmatch.data import make_shape

    assert discover_panels() == [] and PANEL_REGISTRY["featmatch"] is FeatMatchPanel
    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        mesh, _ = make_shape("animal", rng).mesh(20)
        save_mesh(tmp_path / f"{name}.ply", mesh.vertices, mesh.faces)
    panel = FeatMatchPanel(CaptureStore())
    qtbot.addWidget(panel)
    panel.resize(700, 900)
    panel.show()
    panel.choosers["Source"].add_file(tmp_path / "a.ply")
    panel.choosers["Target"].add_file(tmp_path / "b.ply")
    steps = 4
    for k, v in _params(steps=steps, fit_iters=20).items():
        panel.set_param(k, v)
    with qtbot.waitSignal(panel.jobFinished, timeout=WAIT) as sig:
        assert panel.run() is not None
    res = sig.args[0]
    traj = res.arrays["trajectory"]
    assert panel.bar.format() == "done" and panel.export_btn.isEnabled()
    assert panel.table.rowCount() == len(res.summary) and res.summary["source_shape"].startswith("mesh")

    # the view: a time slider over the steps, starting at frame 0; stepping and playing change the source shown
    view = panel.view
    assert view.n_frames == steps + 1 and view.time_bar.isVisibleTo(panel) and view.slider.maximum() == steps
    shown = {l.name: l for l in view.shown_layers()}
    np.testing.assert_array_equal(shown["Source (deforming)"].points, traj[0])
    view.set_frame(steps)
    assert view.slider.value() == steps
    np.testing.assert_array_equal({l.name: l for l in view.shown_layers()}["Source (deforming)"].points, traj[-1])
    view.play(True)
    assert view.playing
    qtbot.waitUntil(lambda: view.frame_index != steps, timeout=5000)  # loops on to frame 0, 1, ...
    view.play(False)
    assert not view.playing

    paths = panel.export(res, tmp_path / "out")
    frame_files = sorted(p for p in paths if re.search(r"_\d{4}\.ply$", p.name))
    assert len(frame_files) == steps + 1
    for t, p in enumerate(frame_files):
        m = load_mesh(p)
        np.testing.assert_allclose(m.vertices, traj[t], atol=1e-5)
        assert len(m.faces) == len(res.frames[t][0].faces)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "featmatch_trajectory.npy"), traj)
    assert any(p.name.startswith("featmatch_Target") for p in paths)
    assert (tmp_path / "out" / "featmatch_summary.json").is_file()
