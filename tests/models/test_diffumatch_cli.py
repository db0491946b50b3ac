"""`nrstudio match` on tiny meshes: map file, report, exit code 2 on bad input; and real-data smoke."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from app.cli import main
from models.common.io import save_mesh
from models.diffumatch.prior import default_weights_path

FAST = ["--steps", "4", "--k-final", "24", "--opt-vertices", "120", "--n-eval", "0", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("NRSTUDIO_CACHE", str(tmp_path_factory.mktemp("cache")))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
    mp.undo()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("shapes")
    s = trimesh.creation.icosphere(subdivisions=2)
    v = np.asarray(s.vertices) * np.array([1.5, 1.0, 0.7])
    v1 = v * (1 + 0.2 * v[:, :1])
    v2 = v1 + 0.15 * np.sin(2 * v1[:, 1:2]) * np.array([[0.0, 0.0, 1.0]])  # a bend: same connectivity
    save_mesh(d / "a.ply", v1, np.asarray(s.faces))
    save_mesh(d / "b.obj", v2, np.asarray(s.faces))
    return d


def test_match_cli_writes_map_and_report(pair, tmp_path):
    out, rep = tmp_path / "map.txt", tmp_path / "r.json"
    rc = main(["match", str(pair / "a.ply"), str(pair / "b.obj"), "--out", str(out), "--gt-identity", "--report", str(rep), *FAST])
    assert rc == 0
    m = np.loadtxt(out, dtype=np.int64)
    assert m.shape == (162,) and m.min() >= 0 and m.max() < 162
    r = json.loads(rep.read_text())
    assert r["n_target"] == 162 and 0 <= r["geodesic_error"] < 1.0 and r["seconds"] > 0
    assert set(r["baselines"]) == {"wks_zoomout", "deep_fm", "wks_orient_zoomout"}
    for b in r["baselines"].values():
        assert 0 <= b["geodesic_error"] < 1.0 and b["seconds"] > 0
        assert b["orientation_energy"] >= 0 and b["orientation_energy_reversing"] >= 0
    # a self-match (identity ground truth, same shape) preserves orientation: no second solve
    assert r["orientation_energy"] < r["orientation_energy_reversing"] and r["orientation_fallback"] is False
    # default orient_mode 'select': both deep pipelines report their two candidates (without / with the
    # orientation term), exactly one chosen, the one with the lower distortion
    for c in (r["select_candidates"], r["baselines"]["deep_fm"]["select_candidates"]):
        assert [x["w_orient"] for x in c] == [0.0, 1.0] and sum(x["chosen"] for x in c) == 1
        assert min(c, key=lambda x: x["distortion"])["chosen"]
    # --gt-map with the same identity map gives the same figure
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(f"{i}\n" for i in range(162)))
    rep2 = tmp_path / "r2.json"
    assert main(["match", str(pair / "a.ply"), str(pair / "b.obj"), "--out", str(out), "--gt-map", str(gt),
                 "--report", str(rep2), "--no-baselines", *FAST]) == 0
    r2 = json.loads(rep2.read_text())
    assert r2["geodesic_error"] == pytest.approx(r["geodesic_error"]) and "baselines" not in r2


def test_match_cli_point_clouds(pair, tmp_path):
    a = trimesh.load(pair / "a.ply", process=False)
    np.save(tmp_path / "a.npy", np.asarray(a.vertices))
    np.save(tmp_path / "b.npy", np.asarray(a.vertices) * 1.1)
    out = tmp_path / "m.txt"
    assert main(["match", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--out", str(out), "--no-baselines", *FAST]) == 0
    assert len(np.loadtxt(out)) == 162


def test_match_cli_bad_input_exit_2(pair, tmp_path, capsys):
    a, b = str(pair / "a.ply"), str(pair / "b.obj")
    out = str(tmp_path / "m.txt")
    assert main(["match", str(tmp_path / "missing.ply"), b, "--out", out]) == 2
    bad = tmp_path / "bad.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\nnan 0 0\n0 1 0\n3 0 1 2\n")
    assert main(["match", str(bad), b, "--out", out, *FAST]) == 2
    short = tmp_path / "short.txt"
    short.write_text("0\n1\n2\n")
    assert main(["match", a, b, "--out", out, "--gt-map", str(short), *FAST]) == 2
    other = tmp_path / "other.ply"
    save_mesh(other, np.asarray(trimesh.creation.icosphere(subdivisions=1).vertices), np.asarray(trimesh.creation.icosphere(subdivisions=1).faces))
    assert main(["match", a, str(other), "--out", out, "--gt-identity", *FAST]) == 2
    assert main(["match", a, b, "--out", out, "--weights", str(tmp_path / "none.pt"), *FAST]) == 2
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert main(["match", a, b, "--out", out, "--weights", str(corrupt), *FAST]) == 2
    assert main(["match", a, b, "--out", out, *FAST, "--n-eval", "-1"]) == 2
    assert main(["match", a, b, "--out", out, *FAST, "--steps", "0"]) == 2
    neg = tmp_path / "neg.txt"
    neg.write_text("".join(f"{i - 1}\n" for i in range(162)))
    assert main(["match", a, b, "--out", out, "--gt-map", str(neg), *FAST]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err
    assert not (tmp_path / "m.txt").exists()  # nothing written on failure


def test_shipped_weights_exist_and_are_small():
    p = default_weights_path()
    assert p.exists() and p.stat().st_size < 5 * 1024 * 1024
