"""`nrstudio compress` / `decompress` on tiny inputs: exit codes, round trip within the reported error."""
import json

import numpy as np
import pytest
import torch

from app.cli import main
from models.common.io import load_points
from models.common.metrics import chamfer_l1, emkd

TINY = ["--patches", "4", "--latent", "2", "--ratio", "2", "--steps", "40", "--batch", "2", "--samples", "64",
        "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def clouds(tmp_path, rng):
    paths = []
    for i in range(3):
        v = rng.normal(size=(200, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        p = tmp_path / f"c{i}.npy"
        np.save(p, v * [1.0 + 0.2 * i, 0.5, 0.3] + [0.0, 0.0, 2.0])
        paths.append(p)
    return paths


def test_compress_decompress_round_trip_within_reported_error(clouds, tmp_path, capsys):
    out = tmp_path / "set.qaad"
    rep = tmp_path / "rep.json"
    assert main(["compress", *map(str, clouds), "--out", str(out), "--report", str(rep), *TINY]) == 0
    r = json.loads(rep.read_text())
    for key in ("emkd", "chamfer", "compression_ratio", "seconds"):
        assert isinstance(r[key], float) and r[key] > 0
    assert r["compression_ratio"] >= 2.0
    assert "compression ratio" in capsys.readouterr().out
    dec = tmp_path / "dec"
    drep = tmp_path / "drep.json"
    capsys.readouterr()
    assert main(["decompress", str(out), "--out", str(dec), "--report", str(drep)]) == 0
    d = json.loads(drep.read_text())
    assert d["clouds"] == 3 and d["decoded_clouds_per_s"] == pytest.approx(3 / d["decode_seconds"])
    assert "clouds/s" in capsys.readouterr().out
    files = sorted(dec.glob("*.ply"))
    assert [f.name for f in files] == ["0000_c0.ply", "0001_c1.ply", "0002_c2.ply"]
    e = [emkd(load_points(f), np.load(c)) for f, c in zip(files, clouds)]
    ch = [chamfer_l1(load_points(f), np.load(c)) for f, c in zip(files, clouds)]
    np.testing.assert_allclose(e, r["per_cloud_emkd"], rtol=1e-4)
    assert np.mean(e) == pytest.approx(r["emkd"], rel=1e-4)
    assert np.mean(ch) == pytest.approx(r["chamfer"], rel=1e-4)
    # the clouds are restored up to that error: well below the shapes' size
    assert r["emkd"] < 0.25


def test_different_sizes_are_resampled_with_a_note(clouds, tmp_path, capsys, rng):
    odd = tmp_path / "odd.npy"
    np.save(odd, rng.normal(size=(150, 3)))
    out = tmp_path / "x.qaad"
    assert main(["compress", *map(str, clouds), str(odd), "--out", str(out), "--points", "128", *TINY]) == 0
    err = capsys.readouterr().err
    assert "resampled 4 cloud(s) to 128 points" in err


@pytest.mark.parametrize("kind", ["nan", "empty", "missing", "text"])
def test_bad_inputs_exit_2(clouds, tmp_path, capsys, kind):
    bad = tmp_path / ("bad.npy" if kind != "text" else "bad.ply")
    if kind == "nan":
        a = np.ones((50, 3))
        a[5, 0] = np.nan
        np.save(bad, a)
    elif kind == "empty":
        np.save(bad, np.zeros((0, 3)))
    elif kind == "text":
        bad.write_text("this is not a ply file\n")
    out = tmp_path / "x.qaad"
    assert main(["compress", str(clouds[0]), str(bad), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "bad." in err and "Traceback" not in err
    assert not out.exists()


def test_corrupt_and_truncated_files_exit_2_and_write_nothing(clouds, tmp_path, capsys):
    out = tmp_path / "set.qaad"
    assert main(["compress", *map(str, clouds), "--out", str(out), *TINY]) == 0
    data = out.read_bytes()
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    cases = {"corrupt.qaad": bytes(flipped), "short.qaad": data[: len(data) // 2], "zero.qaad": b""}
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        dec = tmp_path / f"dec_{name}"
        capsys.readouterr()
        assert main(["decompress", str(p), "--out", str(dec)]) == 2
        err = capsys.readouterr().err
        assert name in err and ("checksum" in err or "truncated" in err)
        assert not dec.exists()
    assert main(["decompress", str(tmp_path / "none.qaad"), "--out", str(tmp_path / "d")]) == 2
    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    assert main(["decompress", str(out), "--out", str(blocker)]) == 2
    assert blocker.read_text() == "keep"


def test_bad_options_exit_2(clouds, tmp_path):
    assert main(["compress", str(clouds[0]), "--out", str(tmp_path / "x.qaad"), "--patches", "0", "--quiet"]) == 2
    for opt in ("--eval-clouds", "--points"):
        assert main(["compress", *map(str, clouds), "--out", str(tmp_path / "x.qaad"), opt, "0", "--quiet"]) == 2
    assert not (tmp_path / "x.qaad").exists()
    # one cloud of 200 points cannot reach 100:1
    assert main(["compress", str(clouds[0]), "--out", str(tmp_path / "x.qaad"), "--steps", "5", "--quiet"]) == 2
