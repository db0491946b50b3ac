"""The NeuralQAAD panel (app/gui/panel_qaad.py) on three real horse-gallop frames: it trains in its worker
with progress, shows each original beside its reconstruction colored by patch, reports EM-kD (checked
against models.common.metrics.emkd) and the compression ratio, exports / saves a `.qaad` file that loads
back (also through "Load .qaad"), Cancel stops training mid-run, bad input is a clear message.

GL views: run under Xvfb (`xvfb-run -a .venv/bin/python -m pytest -q tests/app/test_gui_panel_qaad.py`).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = [
    pytest.mark.gl,
    pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="GL views need an X server (run under xvfb-run / make test)"),
    pytest.mark.xdist_group("gui"),
]

import app.gui  # noqa: E402,F401  (sets Qt's shared-GL-context attribute before pytest-qt makes the QApplication)

WAIT = 120_000
FRAMES = ("0001.obj", "0009.obj", "0017.obj")


@pytest.fixture(scope="module")
def horse_files(shared_data):
    from tests.conftest import require

    d = shared_data / "sequences" / "horse-gallop"
    return [require(d / f) for f in FRAMES]


@pytest.fixture
def panel(panel_factory):
    from app.gui.panel_qaad import QAADPanel

    p = panel_factory(QAADPanel)
    p.set_param("points", 512)
    p.set_param("iterations", 40)
    p.set_param("device", "cpu")
    return p


def test_qaad_panel_compresses_shows_saves_and_loads(panel, horse_files, qtbot, tmp_path):
    from models.common.metrics import emkd
    from models.qaad.format import load_qaad
    from models.qaad.inference import decode_file

    p = panel
    p.choosers["Clouds"].add_files(horse_files)
    assert not p.save_btn.isEnabled()
    with qtbot.waitSignal(p.jobFinished, timeout=WAIT) as sig:
        assert p.run() is not None
    res = sig.args[0]
    fr = [f for f, _ in p.progress_log]
    assert fr == sorted(fr) and fr[-1] == 1.0 and any("step" in t for _, t in p.progress_log)
    s = res.summary
    for k in ("emkd", "chamfer", "compression_ratio", "stored_floats", "file_bytes", "clouds", "points_per_cloud",
              "patches", "latent", "iterations", "loss_first", "loss_last"):
        assert k in s
    assert s["clouds"] == 3 and s["points_per_cloud"] == 512 and s["patches"] == 8 and s["iterations"] == 40
    assert s["compression_ratio"] >= 10.0 and s["compression_ratio"] == pytest.approx(3 * 512 * 3 / s["stored_floats"])
    assert s["loss_last"] < s["loss_first"]  # training did something
    # frames: original beside reconstruction, shifted along +x
    assert res.layers == [] and len(res.frames) == 3
    assert all([l.name for l in f] == ["original", "reconstruction"] for f in res.frames)
    orig = np.stack([f[0].points for f in res.frames]).astype(np.float64)
    rec = np.stack([f[1].points for f in res.frames]).astype(np.float64)
    shift = rec[..., 0].mean() - orig[..., 0].mean()
    assert shift > np.ptp(orig[..., 0])  # side by side, not overlapping on average
    back = rec - np.array([1.25 * np.ptp(np.concatenate([orig[..., 0].ravel(), res.arrays["decoded"][..., 0].ravel()])), 0, 0])
    np.testing.assert_allclose(back, res.arrays["decoded"], atol=1e-4)
    # EM-kD as the table says it (input units), and a reconstruction that resembles the input
    ext = float(np.ptp(orig.reshape(-1, 3), axis=0).max())
    ours = np.mean([emkd(back[i], orig[i], leaf_size=512) for i in range(3)])
    assert s["emkd"] == pytest.approx(ours, rel=0.02)
    assert s["emkd"] < 0.15 * ext  # measured ~0.05 ext at 40 steps
    # colored by patch: 8 colors; the assignment is a bijection, so each patch has as many original points
    for f in res.frames:
        oc, rc = f[0].colors, f[1].colors
        cols_r, n_r = np.unique(rc, axis=0, return_counts=True)
        cols_o, n_o = np.unique(oc, axis=0, return_counts=True)
        assert len(cols_r) == 8
        np.testing.assert_array_equal(cols_r, cols_o)
        np.testing.assert_array_equal(n_r, n_o)
    assert p.save_btn.isEnabled() and p.view.n_frames == 3
    # export: the .qaad file, per-frame clouds, arrays, summary
    out = p.export(res, tmp_path / "exp")
    names = {q.name for q in out}
    assert "qaad_compressed.qaad" in names and "qaad_original_0002.ply" in names and "qaad_reconstruction_0000.ply" in names
    from app.gui.captures import read_capture_ply

    np.testing.assert_allclose(read_capture_ply(tmp_path / "exp" / "qaad_reconstruction_0001.ply").points,
                               res.arrays["decoded"][1], atol=1e-5)  # written unshifted
    np.testing.assert_allclose(read_capture_ply(tmp_path / "exp" / "qaad_original_0001.ply").points, orig[1], atol=1e-5)
    assert res.frames[1][1].points[0, 0] != res.arrays["decoded"][1][0, 0]  # the shown result is left as it was
    f = load_qaad(tmp_path / "exp" / "qaad_compressed.qaad")
    assert f.n_clouds == 3 and f.config.patches == 8
    np.testing.assert_allclose(decode_file(f), res.arrays["decoded"], atol=1e-4)
    saved = p.save_file(tmp_path / "x.qaad")
    assert saved.read_bytes() == (tmp_path / "exp" / "qaad_compressed.qaad").read_bytes()
    # load: decodes and shows the reconstructions (one frame per cloud, not shifted)
    loaded = p.load_file(saved)
    assert p.result is loaded and p.view.n_frames == 3 and len(loaded.frames) == 3
    assert [l.name for l in loaded.frames[0]] == ["reconstruction"]
    np.testing.assert_allclose(loaded.frames[1][0].points, res.arrays["decoded"][1], atol=1e-4)
    assert loaded.summary["file_bytes"] == saved.stat().st_size == s["file_bytes"]
    assert loaded.summary["compression_ratio"] == pytest.approx(s["compression_ratio"])
    assert p.table.rowCount() == len(loaded.summary)
    # a screenshot of the panel is not blank in its 3D view
    from app.gui.views import BACKGROUND, qimage_to_numpy

    assert p.grab_image().save(str(tmp_path / "shot.png"))
    a = qimage_to_numpy(p.view.gl.grabFramebuffer()).astype(np.int16)
    assert float((np.abs(a - np.array(BACKGROUND)).sum(-1) > 40).mean()) > 0.005


def test_qaad_panel_cancel_bad_input_and_corrupt_file(panel, horse_files, qtbot, tmp_path):
    from PySide6 import QtCore

    from fusion.errors import InputError

    p = panel
    p.choosers["Clouds"].add_files(horse_files)
    # Cancel during training: many iterations, cancelled at the first training-step report
    p.set_param("iterations", 100_000)
    job = None
    seen = []

    def cancel_at_step(f: float, text: str) -> None:
        seen.append(text)
        if text.startswith("step"):
            job.cancel()

    with qtbot.waitSignal(p.jobCancelled, timeout=WAIT):
        job = p.run()
        job.progress.connect(cancel_at_step, QtCore.Qt.ConnectionType.DirectConnection)
    assert any(t.startswith("step") for t in seen) and p.bar.format() == "cancelled" and p.result is None
    # a ratio no network can reach: a clear message
    p.set_param("iterations", 5)
    p.set_param("ratio", 5000.0)
    with qtbot.waitSignal(p.jobFailed, timeout=WAIT) as sig:
        p.run()
    assert "compression ratio" in sig.args[0] and "Traceback" not in sig.args[0]
    assert p.messages and "compression ratio" in p.messages[-1][2]
    # nothing to save yet; a corrupt .qaad file is refused with its name
    with pytest.raises(InputError, match="nothing to save"):
        p.save_file(tmp_path / "none.qaad")
    bad = tmp_path / "broken.qaad"
    bad.write_bytes(b"\x89QAAD\r\n\x1a" + os.urandom(100))
    with pytest.raises(InputError, match="broken.qaad"):
        p.load_file(bad)
    assert p.result is None
