"""`nrstudio lpdc` on a tiny procedural sequence: meshes out, figures for LPDC and both baselines, bad input."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from app.cli import main
from models.common.io import load_mesh, save_mesh
from models.lpdc.config import DataConfig, preset
from models.lpdc.data import ExampleSampler, procedural_mesh_sequence
from models.lpdc.training import ode_weights_for, train


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Tiny LPDC + ODE checkpoints (5 frames) trained for a few steps on one batch of tube sequences."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("w")
    cfg = preset("tiny", "lpdc")
    data = replace(cfg.data, procedural_kinds=("tubes",))
    batch = ExampleSampler(data, seed=2).batch(cfg.train.batch_size)
    for kind in ("lpdc", "ode"):
        c = replace(preset("tiny", kind), data=data)
        c = replace(c, train=replace(c.train, steps=25))
        train(c, d / "lpdc.pt" if kind == "lpdc" else ode_weights_for(d / "lpdc.pt"), "cpu", 0, fixed_batch=batch)
    return d / "lpdc.pt"


@pytest.fixture(scope="module")
def mesh_dir(tmp_path_factory):
    seq, _ = procedural_mesh_sequence("tubes", 5, seed=11, resolution=20)
    d = tmp_path_factory.mktemp("seq")
    for k in range(seq.n_frames):
        save_mesh(d / f"{k:03d}.obj", seq.vertices[k] * 2.0 + 5.0, seq.faces)  # not unit scale on purpose
    return d, seq


FAST = ["--frames", "5", "--resolution", "12", "--upsampling-steps", "1", "--device", "cpu", "--eval-points", "2000"]


def test_cli_reconstructs_and_evaluates(tmp_path, weights, mesh_dir, capsys):
    d, seq = mesh_dir
    out, rep = tmp_path / "out", tmp_path / "r.json"
    rc = main(["lpdc", str(d), "--out", str(out), "--report", str(rep), "--weights", str(weights)] + FAST)
    assert rc == 0, capsys.readouterr().err
    files = sorted(out.glob("*.obj"))
    assert [f.stem for f in files] == [f"{k:03d}" for k in range(5)]
    meshes = [load_mesh(f) for f in files]
    assert all(np.array_equal(m.faces, meshes[0].faces) for m in meshes) and len(meshes[0].faces) > 0
    # written in the input's coordinates (normalisation undone): inside the input's (padded) bounding box
    lo, hi = seq.vertices.min((0, 1)) * 2 + 5, seq.vertices.max((0, 1)) * 2 + 5
    pad = 0.2 * (hi - lo).max()
    assert (meshes[0].vertices.min(0) > lo - pad).all() and (meshes[0].vertices.max(0) < hi + pad).all()
    r = json.loads(rep.read_text())
    assert r["input"]["ground_truth"] and r["input"]["watertight"] and r["input"]["kind"] == "mesh"
    for fig in (r, r["baselines"]["ode"], r["baselines"]["nearest_neighbour"]):
        assert fig["correspondence_l2"] >= 0 and fig["chamfer"] >= 0 and 0 <= fig["iou"] <= 1 and fig["inference_s"] > 0
    assert "speedup_vs_ode" in r
    out = capsys.readouterr().out
    assert "corr_l2" in out and "(CPU time)" in out


def test_cli_point_cloud_folder_has_no_evaluation(tmp_path, weights, mesh_dir):
    d, seq = mesh_dir
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        np.save(clouds / f"{k}.npy", seq.vertices[k][rng.choice(len(seq.vertices[k]), 200)])
    rep = tmp_path / "r.json"
    assert main(["lpdc", str(clouds), "--out", str(tmp_path / "o"), "--report", str(rep), "--weights", str(weights),
                 "--no-baselines"] + FAST) == 0
    r = json.loads(rep.read_text())
    assert r["input"]["kind"] == "cloud" and "correspondence_l2" not in r and len(r["outputs"]) == 5


def test_cli_fewer_frames_refuses_or_pads(tmp_path, weights, mesh_dir, capsys):
    d, seq = mesh_dir
    short = tmp_path / "short"
    short.mkdir()
    for k in range(3):
        save_mesh(short / f"{k}.obj", seq.vertices[k], seq.faces)
    assert main(["lpdc", str(short), "--out", str(tmp_path / "o"), "--weights", str(weights)] + FAST) == 2
    err = capsys.readouterr().err
    assert "3 frames" in err and "--pad" in err and "\n" == err[-1] and err.count("\n") == 1
    rep = tmp_path / "r.json"
    assert main(["lpdc", str(short), "--out", str(tmp_path / "o"), "--report", str(rep), "--pad", "--no-baselines",
                 "--weights", str(weights)] + FAST) == 0
    r = json.loads(rep.read_text())
    assert len(r["outputs"]) == 3 and r["input"]["real_frames"] == 3 and any("padded" in n for n in r["notes"])


def test_cli_bad_inputs_exit_2(tmp_path, weights, capsys):
    nan = tmp_path / "nan"
    nan.mkdir()
    for k in range(5):
        p = np.random.default_rng(k).normal(size=(50, 3))
        p[3] = np.nan if k == 2 else p[3]
        np.savetxt(nan / f"{k}.xyz", p)
    assert main(["lpdc", str(nan), "--out", str(tmp_path / "o"), "--weights", str(weights)] + FAST) == 2
    assert "2.xyz" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.savetxt(mixed / "0.xyz", np.zeros((4, 3)))
    np.save(mixed / "1.npy", np.zeros((4, 3)))
    assert main(["lpdc", str(mixed), "--out", str(tmp_path / "o"), "--weights", str(weights)] + FAST) == 2
    assert "mixed" in capsys.readouterr().err
    assert main(["lpdc", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--weights", str(weights)] + FAST) == 2
    flat = tmp_path / "flat"
    flat.mkdir()
    for k in range(5):
        np.savetxt(flat / f"{k}.xyz", np.ones((30, 3)))
    capsys.readouterr()
    assert main(["lpdc", str(flat), "--out", str(tmp_path / "o"), "--weights", str(weights)] + FAST) == 2
    err = capsys.readouterr().err
    assert str(flat) in err and "zero extent" in err and err.count("\n") == 1
    assert main(["lpdc", str(nan), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "no.pt")] + FAST) == 2


def test_run_function_reports_progress_and_cancels(tmp_path, weights, mesh_dir):
    """The panel-facing entry point: progress(fraction, message) callbacks and a cancel callable."""
    from models.lpdc.generation import Cancelled
    from models.lpdc.pipeline import RunOptions, run

    d, _ = mesh_dir
    opts = RunOptions(frames=5, weights=str(weights), device="cpu", resolution0=12, upsampling_steps=1,
                      n_chamfer=1000, n_tracks=2000, n_iou=1000)
    seen = []
    report = run(d, tmp_path / "o", opts, progress=lambda f, m: seen.append((f, m)))
    fr = [f for f, _ in seen]
    assert fr[0] == 0.0 and fr[-1] == 1.0 and all(0 <= f <= 1 for f in fr) and fr == sorted(fr)
    assert all(isinstance(m, str) and m for _, m in seen) and len(report["outputs"]) == 5
    calls = []
    with pytest.raises(Cancelled):
        run(d, tmp_path / "o2", opts, progress=lambda f, m: calls.append(f), cancel=lambda: len(calls) > 2)
    assert not (tmp_path / "o2").exists()
