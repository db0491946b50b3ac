"""The DiffuMatch panel (app/gui/panel_diffumatch.py): a real pair (two camel-gallop poses, meshes read as
files) matched in the panel's worker with progress, checked against the pair's reference map; Cancel
mid-run; bad inputs as one-line failures; the track-id evaluation; and the panel widget end to end (run,
3D view, summary table, export of the map and layers) on procedural meshes.

The widget test needs an X server for the OpenGL view (`xvfb-run -a .venv/bin/python -m pytest ...`); the
others run offscreen.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import app.gui  # noqa: F401  (Qt attributes before the QApplication exists)
from app.gui.captures import Capture
from tests.conftest import cancel_on_progress

pytestmark = pytest.mark.xdist_group("gui")

WAIT = 300_000  # ms; returns as soon as the signal arrives (cold numba / spectral caches on a loaded box)
FAST = {"max_points": 600, "steps": 15, "opt_vertices": 300, "k_final": 40, "use_faces": True, "device": "cpu",
        "threads": 1, "seed": 0}


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NRSTUDIO_CACHE", str(tmp_path_factory.mktemp("spectral_cache")))
    yield
    mp.undo()


def _camel(shared_data, i: int) -> Capture:
    from app.gui.panels import load_cloud_file
    from tests.conftest import require

    return load_cloud_file(require(shared_data / "shapes" / "camel_gallop" / f"camel-gallop-{i:02d}.off"))


def _job(source: Capture, target: Capture, params: dict):
    from app.gui.panel_diffumatch import run_diffumatch
    from app.gui.panels import PanelJob

    return PanelJob(lambda inputs, p, ctx: run_diffumatch(inputs["Source"], inputs["Target"], p, ctx),
                    {"Source": source, "Target": target}, params)


def test_real_pair_matches_in_the_worker(qtbot, shared_data):
    src, tgt = _camel(shared_data, 1), _camel(shared_data, 5)
    job = _job(src, tgt, FAST)
    seen: list[tuple[float, str]] = []
    job.progress.connect(lambda f, t: seen.append((f, t)))
    with qtbot.waitSignal(job.finished, timeout=WAIT) as sig:
        job.start()
    res = sig.args[0]
    job.thread.wait(5000)
    qtbot.waitUntil(lambda: bool(seen) and seen[-1][0] == 1.0, timeout=5000)
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and len(fr) >= 6
    assert any("optimising features" in t for _, t in seen) and any("spectral" in t for _, t in seen)

    s = res.summary
    assert s["source_shape"] == s["target_shape"] == "mesh (decimated)"  # the OFF files' faces were used
    assert 400 <= s["source_points"] <= 700 and 0 < s["source_coverage"] <= 1
    # the map covers every original target vertex and names original source vertices
    m = res.arrays["map_target_to_source"]
    assert m.dtype == np.int64 and m.shape == (tgt.num_points,)
    assert m.min() >= 0 and m.max() < src.num_points
    # against the pair's reference map (noisy, from pyFM): far better than chance
    gt = np.loadtxt(shared_data / "shapes" / "camel_gallop" / "maps" / "5_to_1", dtype=np.int64)
    diam = float(np.linalg.norm(np.ptp(src.points, axis=0)))
    err = np.linalg.norm(src.points[m] - src.points[gt], axis=1) / diam
    chance = np.linalg.norm(src.points[np.random.default_rng(0).integers(0, src.num_points, len(gt))] - src.points[gt], axis=1) / diam
    assert err.mean() < 0.08 and err.mean() < 0.3 * chance.mean()

    # layers: source colored by position; target beside it (+x) with the colors of its matches
    ls, lt = res.layers
    assert ls.faces is not None and lt.faces is not None
    assert lt.points[:, 0].min() > ls.points[:, 0].max()
    assert len(np.unique(ls.colors, axis=0)) > 100
    src_colors = {tuple(c) for c in ls.colors}
    assert all(tuple(c) in src_colors for c in lt.colors)
    # the recorded display shift takes the target layer back into the target's own box
    unshifted = lt.points - res.target_shift
    assert (unshifted.min(0) >= tgt.points.min(0) - 1e-4).all() and (unshifted.max(0) <= tgt.points.max(0) + 1e-4).all()
    assert np.ptp(unshifted, axis=0) == pytest.approx(np.ptp(tgt.points, axis=0), rel=0.05)


def _ellipsoid(n_sub: int = 2, bend: float = 0.0):
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=n_sub)
    v = np.asarray(s.vertices) * np.array([1.5, 1.0, 0.7])
    v = v * (1 + 0.2 * v[:, :1])
    v = v + bend * np.sin(2 * v[:, 1:2]) * np.array([[0.0, 0.0, 1.0]])
    return (0.1 * v).astype(np.float32), np.asarray(s.faces, np.int64)


def test_cancel_mid_run(qtbot):
    from PySide6 import QtCore

    v, _ = _ellipsoid(3)
    a, b = Capture(v, name="a"), Capture(_ellipsoid(3, 0.2)[0], name="b")
    job = _job(a, b, dict(FAST, steps=2000))  # far too many steps to finish before the cancel
    seen, done = cancel_on_progress(qtbot, job, "optimising features: step", WAIT)
    assert not done and any("optimising features: step" in t for t in seen)
    assert not any("ZoomOut" in t for t in seen)


@pytest.mark.parametrize("bad,match", [
    (Capture(np.zeros((5, 3), np.float32), name="tiny"), "target 'tiny'.*at least 10 points"),
    (Capture(np.full((50, 3), np.nan, np.float32), name="nan"), "target 'nan'.*NaN"),
    (Capture(np.zeros((50, 3), np.float32), name="spot"), "target 'spot'.*on a line or at one spot"),
    (Capture(np.outer(np.arange(50), [1, 2, 3]).astype(np.float32), name="line"), "target 'line'.*on a line"),
])
def test_bad_inputs_fail_with_a_message(qtbot, bad, match):
    import re

    v, _ = _ellipsoid(2)
    job = _job(Capture(v, name="ok"), bad, FAST)
    with qtbot.waitSignal(job.failed, timeout=WAIT) as sig:
        job.start()
    job.thread.wait(5000)
    msg = sig.args[0]
    assert re.search(match, msg) and "Traceback" not in msg


def test_track_id_errors():
    from app.gui.panel_diffumatch import track_id_errors

    rng = np.random.default_rng(0)
    p = rng.normal(size=(200, 3)).astype(np.float32)
    ids = rng.permutation(1000)[:200].astype(np.int64)
    src = Capture(p, track_ids=ids)
    perm = rng.permutation(200)
    tgt = Capture(p[perm] + 0.5, track_ids=ids[perm])
    tgt.track_ids[:10] = -1  # untracked points do not count
    t_idx = np.arange(200)
    exact = track_id_errors(src, tgt, t_idx, perm)  # target j is source perm[j]
    assert exact["track_id_pairs"] == 190 and exact["track_id_error_mean_mm"] == 0.0
    off = track_id_errors(src, tgt, t_idx, np.roll(perm, 1))
    d = np.linalg.norm(p[np.roll(perm, 1)] - p[perm], axis=1)[10:]
    assert off["track_id_error_mean_mm"] == pytest.approx(1e3 * d.mean(), rel=1e-5)
    assert track_id_errors(src, Capture(p), t_idx, perm) == {}


def test_reduce_shape_keeps_mesh_faces_and_subsamples_clouds(tmp_path):
    from app.gui.panel_diffumatch import reduce_shape
    from app.gui.panels import load_cloud_file
    from models.common.io import save_mesh

    v, f = _ellipsoid(3)  # 642 vertices
    save_mesh(tmp_path / "e.off", v, f)
    cap = load_cloud_file(tmp_path / "e.off")
    whole = reduce_shape(cap, 1000)
    assert whole.kind == "mesh" and np.array_equal(whole.faces, f)
    dec = reduce_shape(cap, 200)
    assert dec.kind == "mesh (decimated)" and len(dec.verts) <= 260 and len(dec.faces) > 100
    assert np.abs(cap.points[dec.orig_index] - dec.verts).max() < 0.05
    cloud = reduce_shape(cap, 200, use_faces=False)
    assert cloud.kind == "cloud (subsampled)" and len(cloud.verts) == 200 and len(cloud.faces) == 0
    np.testing.assert_array_equal(cloud.verts, cap.points[cloud.orig_index])


@pytest.mark.gl
@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="GL views need an X server (run under xvfb-run / make test)")
def test_panel_runs_shows_and_exports(qtbot, tmp_path):
    from app.gui.captures import CaptureStore
    from app.gui.panel_diffumatch import DiffuMatchPanel
    from app.gui.panels import PANEL_REGISTRY, discover_panels
    from models.common.io import load_mesh, save_mesh

    assert discover_panels() == [] and PANEL_REGISTRY["diffumatch"] is DiffuMatchPanel
    v1, f = _ellipsoid(2)
    v2, _ = _ellipsoid(2, 0.3)
    save_mesh(tmp_path / "a.ply", v1, f)
    save_mesh(tmp_path / "b.obj", v2 + 1.0, f)
    store = CaptureStore()
    store.add(Capture(v1, name="cap"))
    panel = DiffuMatchPanel(store)
    qtbot.addWidget(panel)
    panel.resize(700, 800)
    panel.show()
    panel.choosers["Source"].add_file(tmp_path / "a.ply")
    panel.choosers["Target"].add_file(tmp_path / "b.obj")
    for k, val in FAST.items():
        panel.set_param(k, val)
    with qtbot.waitSignal(panel.jobFinished, timeout=WAIT) as sig:
        assert panel.run() is not None
    res = sig.args[0]
    assert panel.bar.format() == "done" and panel.export_btn.isEnabled()
    assert [p for p, _ in panel.progress_log] == sorted(p for p, _ in panel.progress_log)
    assert len(panel.view.shown_layers()) == 2 and len(panel.view._items) == 2
    assert panel.table.rowCount() == len(res.summary) and res.summary["source_shape"] == "mesh"
    # identity connectivity: most target vertices land near their own index's source vertex
    m = res.arrays["map_target_to_source"]
    assert np.linalg.norm(v1[m] - v1, axis=1).mean() < 0.05 * np.linalg.norm(np.ptp(v1, axis=0))

    paths = panel.export(res, tmp_path / "out")
    names = {p.name for p in paths}
    assert "diffumatch_map_target_to_source.npy" in names and "diffumatch_summary.json" in names
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "diffumatch_map_target_to_source.npy"), m)
    plys = sorted(p for p in paths if p.suffix == ".ply")
    assert len(plys) == 2
    tgt_ply = next(p for p in plys if "Target" in p.name)
    back = load_mesh(tgt_ply)  # exported in the target's own coordinates (the display shift removed)
    np.testing.assert_allclose(back.vertices, v2 + 1.0, atol=1e-5)
    assert len(back.faces) == len(f)
    src_ply = next(p for p in plys if "Source" in p.name)
    src_back = load_mesh(src_ply)
    np.testing.assert_allclose(src_back.vertices, v1, atol=1e-5)
    np.testing.assert_array_equal(src_back.colors, res.layers[0].colors)
