"""`nrstudio deform` and `nrstudio train featmatch` on tiny inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from models.common.io import load_mesh, save_mesh
from models.featmatch.data import make_shape


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmcli")
    ckpt = d / "tiny.pt"
    rep = d / "train.json"
    assert main(["train", "featmatch", "--preset", "tiny", "--out", str(ckpt), "--device", "cpu", "--report", str(rep)]) == 0
    summary = json.loads(rep.read_text())
    assert summary["loss_final"] < summary["loss_first"]
    return ckpt


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmmesh")
    rng = np.random.default_rng(0)
    a, _ = make_shape("humanoid", rng).mesh(18)
    b, _ = make_shape("humanoid", rng).mesh(18)
    save_mesh(d / "a.ply", a.vertices * 2.0, a.faces)   # different units / places: normalised inside
    save_mesh(d / "b.obj", b.vertices + 3.0, b.faces)
    save_mesh(d / "b_cloud.ply", b.vertices + 3.0)       # a point cloud target
    return d


def test_deform_cli_writes_mesh_report_and_trajectory(tiny_ckpt, meshes, tmp_path):
    out, rep, traj = tmp_path / "out.ply", tmp_path / "r.json", tmp_path / "traj"
    rc = main(["deform", str(meshes / "a.ply"), str(meshes / "b.obj"), "--out", str(out), "--report", str(rep),
               "--steps", "3", "--gn-iters", "1", "--fit-iters", "10", "--trajectory", str(traj),
               "--weights", str(tiny_ckpt), "--device", "cpu"])
    assert rc == 0
    src = load_mesh(meshes / "a.ply")
    res = load_mesh(out)
    assert res.vertices.shape == src.vertices.shape
    np.testing.assert_array_equal(res.faces, src.faces)
    r = json.loads(rep.read_text())
    for k in ("chamfer_to_target", "edge_length_distortion", "self_intersections", "seconds"):
        assert k in r and r[k] is not None
    assert r["chamfer_to_target"] > 0
    # the result is in the target's frame (target was shifted by +3)
    assert abs(res.vertices.mean(0) - 3.0).max() < 0.6
    steps = sorted(traj.glob("step_*.ply"))
    assert len(steps) == 4
    np.testing.assert_allclose(load_mesh(steps[-1]).vertices, res.vertices, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_deform_cli_accepts_a_point_cloud_target(tiny_ckpt, meshes, tmp_path):
    out = tmp_path / "o.ply"
    rc = main(["deform", str(meshes / "a.ply"), str(meshes / "b_cloud.ply"), "--out", str(out), "--steps", "2",
               "--gn-iters", "1", "--fit-iters", "5", "--weights", str(tiny_ckpt), "--device", "cpu"])
    assert rc == 0 and out.exists()


def test_deform_cli_bad_input_exits_2(tiny_ckpt, meshes, tmp_path, capsys):
    out = tmp_path / "o.ply"
    assert main(["deform", str(tmp_path / "missing.ply"), str(meshes / "b.obj"), "--out", str(out), "--weights", str(tiny_ckpt)]) == 2
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"ply\nformat nonsense\n")
    assert main(["deform", str(bad), str(meshes / "b.obj"), "--out", str(out), "--weights", str(tiny_ckpt)]) == 2
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((10, 3), np.nan))
    assert main(["deform", str(nan), str(meshes / "b.obj"), "--out", str(out), "--weights", str(tiny_ckpt)]) == 2
    assert main(["deform", str(meshes / "a.ply"), str(meshes / "b.obj"), "--out", str(out), "--weights", str(tmp_path / "none.pt")]) == 2
    assert main(["deform", str(meshes / "a.ply"), str(meshes / "b.obj"), "--out", str(out), "--weights", str(tiny_ckpt),
                 "--layers", "3:1,99:1"]) == 2
    err = capsys.readouterr().err
    assert "missing.ply" in err and "error" in err
    assert not out.exists()
