"""bench/scene_sweep.py: the five-draw harness of the tracker experiments (a short run, and bad input)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "scene_sweep.py"


@pytest.fixture(scope="module")
def sweep_mod():
    spec = importlib.util.spec_from_file_location("scene_sweep", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_short_sweep_prints_per_seed_figures_and_means(sweep_mod, capsys):
    assert sweep_mod.main(["--config", '{"iterations": 2, "feature_match": {"gate_px": 8}}', "--scenes", "cloth",
                           "--seeds", "0,1", "--frames", "4"]) == 0
    out = capsys.readouterr().out
    assert "cloth" in out and out.count("(mean ") == 3
    row = next(line for line in out.splitlines() if "deformation_error_mm " in line)
    assert len(row.split("(mean")[0].split(" / ")) == 2  # one figure per seed


def test_bad_config_is_one_line_and_exit_2(sweep_mod, capsys):
    assert sweep_mod.main(["--config", '{"lambda_icpp": 1}']) == 2
    assert sweep_mod.main(["--config", "[1, 2]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "lambda_icpp" in err[0] and "Traceback" not in "".join(err)
    cfg = sweep_mod.tracker_config({"features": "sift", "feature_match": {"gate_px": 5.0}})
    assert cfg.features == "sift" and cfg.feature_match.gate_px == 5.0
