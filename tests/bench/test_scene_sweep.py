"""bench/scene_sweep.py (the five-draw harness of the tracker experiments) and bench/per_frame_error.py: short
runs, and bad input."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def sweep_mod():
    return _load("scene_sweep")


def test_short_sweep_prints_per_seed_figures_and_means(sweep_mod, capsys):
    assert sweep_mod.main(["--config", '{"iterations": 2, "feature_match": {"gate_px": 8}}', "--scenes", "cloth",
                           "--seeds", "0,1", "--frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "cloth" in out and out.count("(mean ") == 3
    row = next(line for line in out.splitlines() if "deformation_error_mm " in line)
    assert len(row.split("(mean")[0].split(" / ")) == 2  # one figure per seed
    # FusionConfig settings reach the runs: without the mesh channel the geometry figure changes
    assert sweep_mod.main(["--fusion", '{"mesh_trunc_voxels": 0}', "--scenes", "cloth", "--seeds", "0",
                           "--frames", "4"]) == 0
    out2 = capsys.readouterr().out
    geo = [next(x for x in o.splitlines() if "geometry_error_mm " in x).split()[2] for o in (out, out2)]
    assert '"mesh_trunc_voxels": 0' in out2 and geo[0] != geo[1]


def test_ground_truth_and_perfect_correspondence_runs(sweep_mod, capsys):
    """--motion oracle / perfect-visible run the same scenes with the ground-truth motion or the tracker given
    exact correspondences; both track a short run closer than the plain tracker's worst case allows."""
    for motion in ("oracle", "perfect-visible"):
        assert sweep_mod.main(["--motion", motion, "--scenes", "cylinder", "--seeds", "0", "--frames", "4"]) == 0
        out = capsys.readouterr().out
        assert f"motion {motion}" in out
        row = next(line for line in out.splitlines() if "deformation_error_mm " in line)
        assert row.split()[0] == motion and float(row.split("(mean ")[1].rstrip(")")) < 5.0
    with pytest.raises(ValueError, match="motion"):
        sweep_mod.estimator_factory({}, "psychic")
    # spoiled correspondences in windows of frames: the settings reach the run
    assert sweep_mod.main(["--motion", "perfect-visible", "--scenes", "cylinder", "--seeds", "0", "--frames", "4",
                           "--oracle", '{"frames": [[1, 1], [3, 3]], "noise_px": 1.5, "live_depth": true}']) == 0
    out = capsys.readouterr().out
    assert '"noise_px": 1.5' in out and "[[1, 1], [3, 3]]" in out and "perfect-visible" in out


def test_bad_config_is_one_line_and_exit_2(sweep_mod, capsys):
    assert sweep_mod.main(["--config", '{"lambda_icpp": 1}']) == 2
    assert sweep_mod.main(["--config", "[1, 2]"]) == 2
    assert sweep_mod.main(["--fusion", '{"carve": 1}']) == 2
    assert sweep_mod.main(["--fusion", '{"model_channel": "both"}']) == 2
    assert sweep_mod.main(["--motion", "perfect-visible", "--oracle", '{"noise": 1}']) == 2
    assert sweep_mod.main(["--motion", "perfect-visible", "--oracle", '{"frames": [9, 3]}']) == 2
    assert sweep_mod.main(["--motion", "perfect-visible", "--oracle", '{"frames": [[1, 2], [5]]}']) == 2
    assert sweep_mod.main(["--oracle", '{"fraction": 0.5}']) == 2  # only with perfect correspondences
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 8 and "lambda_icpp" in err[0] and "model_channel" in err[3] and "noise" in err[4]
    assert "frames" in err[5] and "frames" in err[6] and "perfect" in err[7]
    assert "Traceback" not in "".join(err)
    cfg = sweep_mod.tracker_config({"features": "sift", "feature_match": {"gate_px": 5.0}})
    assert cfg.features == "sift" and cfg.feature_match.gate_px == 5.0


@pytest.fixture(scope="module")
def per_frame_mod():
    return _load("per_frame_error")


def test_per_frame_error_table_json_and_plot(per_frame_mod, tmp_path, capsys):
    """bench/per_frame_error.py: one row per fused frame and motion; the mean of the per-frame terms is the
    replay report's deformation error; the plot is a PNG."""
    import json

    out_json, png = tmp_path / "f.json", tmp_path / "f.png"
    assert per_frame_mod.main(["--scene", "cylinder", "--frames", "5", "--motions", "tracker,oracle", "--every", "1",
                               "--json", str(out_json), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    curves = json.loads(out_json.read_text())
    assert set(curves) == {"tracker", "oracle"} and [r["frame"] for r in curves["oracle"]] == [1, 2, 3, 4]
    assert all(r["p95_mm"] >= r["mean_mm"] >= 0 for rows in curves.values() for r in rows)
    assert len([line for line in text.splitlines() if line.strip()[:1].isdigit()]) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_frame_error_bad_arguments(per_frame_mod, capsys):
    assert per_frame_mod.main(["--motions", "tracker,psychic"]) == 2
    assert per_frame_mod.main(["--frames", "1"]) == 2
    assert per_frame_mod.main(["--oracle", '{"frames": [1]}']) == 2
    err = capsys.readouterr().err
    assert "psychic" in err and "frames" in err and "Traceback" not in err


def test_per_frame_error_with_a_window_of_perfect_correspondences(per_frame_mod, capsys):
    """--oracle spoils the perfect-visible motion only: with correspondences in frame 1 only, the curve
    differs from the exact one from frame 2 on, not before."""
    curves = []
    for oracle in ("{}", '{"frames": [0, 1]}'):
        assert per_frame_mod.main(["--scene", "cylinder", "--frames", "5", "--motions", "perfect-visible",
                                   "--oracle", oracle, "--every", "1"]) == 0
        rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
        curves.append({int(r[0]): float(r[1]) for r in rows})
    assert curves[0][1] == curves[1][1] and curves[0][4] != curves[1][4]
