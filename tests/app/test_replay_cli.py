"""`nrstudio replay` / `demo` end to end: the real D435 bag and the snoopy frames, the bundled synthetic
recording with its ground truth, exports read back, and bad input as one line with exit code 2."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from fusion.export import load_mesh
from fusion.paths import ASSETS

REPORT_KEYS = ("frames", "fps", "stage_ms", "device", "tracker", "nodes", "mesh")


def _replay(args: list[str], tmp_path: Path) -> dict:
    report = tmp_path / "report.json"
    assert main(["replay", *args, "--quiet", "--report", str(report)]) == 0
    rep = json.loads(report.read_text())
    for key in REPORT_KEYS:
        assert key in rep, key
    assert rep["frames_fused"] >= 1 and rep["nodes"] > 0
    assert rep["mesh"]["vertices"] > 0 and rep["mesh"]["faces"] > 0
    assert rep["tracker"] == "classical" and rep["device"] == "cpu"
    return rep


def _read_back(path: Path) -> tuple[int, int]:
    m = load_mesh(path)  # the project's exported-mesh reader (vertex order kept)
    return m.num_vertices, m.num_faces


def test_replay_real_d435_bag_exports_what_it_reports(shared_data: Path, tmp_path: Path) -> None:
    bag = shared_data / "realsense" / "single_depth_color_640x480.bag"
    mesh = tmp_path / "canonical.ply"
    rep = _replay([str(bag), "--max-frames", "3", "--processing-size", "320x240", "--export", str(mesh)], tmp_path)
    assert rep["frames_skipped"] == 0
    assert _read_back(mesh) == (rep["mesh"]["vertices"], rep["mesh"]["faces"])
    assert rep.get("geometry_error_mm") is None  # no ground truth for a real recording


def test_replay_snoopy_frames_with_live_mesh(shared_data: Path, tmp_path: Path) -> None:
    live = tmp_path / "live.glb"
    mesh = tmp_path / "canonical.obj"
    rep = _replay([str(shared_data / "snoopy"), "--export", str(mesh), "--export-live", str(live)], tmp_path)
    assert rep["frames"] == 2
    v, f = _read_back(mesh)
    assert (v, f) == (rep["mesh"]["vertices"], rep["mesh"]["faces"])
    assert _read_back(live)[1] == f  # the live mesh is the canonical one warped: same faces


def test_replay_bundled_sample_reports_errors_against_its_ground_truth(tmp_path: Path) -> None:
    rec = ASSETS / "sample.db3"
    rep = _replay([str(rec), "--max-frames", "6", "--processing-size", "160x120"], tmp_path)
    for key in ("geometry_error_mm", "deformation_error_mm", "deformation_error_visible_mm"):
        assert isinstance(rep[key], float) and math.isfinite(rep[key]), key
    # six frames of slow motion: tracked to within a few voxels, and the visible part no worse than all of it
    assert rep["deformation_error_mm"] < 30.0 and rep["geometry_error_mm"] < 15.0
    assert rep["deformation_error_visible_mm"] <= rep["deformation_error_mm"] + 1.0


def test_replay_truncation_options_reach_the_volume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec = str(ASSETS / "sample.db3")
    args = ["--max-frames", "3", "--processing-size", "160x120"]
    rep = _replay([rec, *args, "--trunc", "5", "--mesh-trunc", "1.5"], tmp_path)
    assert rep["volume"]["trunc_m"] == pytest.approx(0.05) and rep["volume"]["mesh_trunc_m"] == pytest.approx(0.015)
    assert rep["volume"]["carve_px"] == 2.0  # silhouette carving on by default
    off = _replay([rec, *args, "--mesh-trunc", "0"], tmp_path)
    assert off["volume"]["mesh_trunc_m"] == off["volume"]["trunc_m"] == pytest.approx(0.04)
    assert off["volume"]["carve_px"] == 0.0  # no mesh channel, nothing carved
    assert _replay([rec, *args, "--carve", "3.5"], tmp_path)["volume"]["carve_px"] == 3.5
    assert _replay([rec, *args, "--carve", "0"], tmp_path)["volume"]["carve_px"] == 0.0
    assert main(["replay", rec, *args, "--carve", "12", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "carve_px" in err and "Traceback" not in err
    assert main(["replay", rec, *args, "--mesh-trunc", "0.5", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "mesh truncation" in err and "Traceback" not in err


def test_replay_features_option_reaches_the_tracker(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rec = str(ASSETS / "sample.db3")
    args = ["--max-frames", "4", "--processing-size", "160x120"]
    rep = _replay([rec, *args, "--features", "sift"], tmp_path)
    assert rep["features"] == "sift" and rep["frames_skipped"] == 0
    assert _replay([rec, *args], tmp_path)["features"] == "none"
    assert main(["replay", rec, *args, "--tracker", "neural", "--features", "orb", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "classical tracker" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [None, b"", b"not a recording at all" * 10])
def test_replay_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 content: bytes | None) -> None:
    rec = tmp_path / "broken.db3"
    if content is not None:
        rec.write_bytes(content)
    assert main(["replay", str(rec), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "broken.db3" in err and "Traceback" not in err


def test_demo_writes_mesh_report_and_preview(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--max-frames", "4"]) == 0
    rep = json.loads((out / "demo_report.json").read_text())["fusion"]
    assert rep["frames_fused"] == 4 and rep["mesh"]["faces"] > 0
    meshes = sorted(p.name for p in out.iterdir() if p.suffix in (".ply", ".obj", ".glb"))
    assert meshes, list(out.iterdir())
    pngs = [p for p in out.iterdir() if p.suffix == ".png"]
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    from PIL import Image

    img = np.asarray(Image.open(out / "demo_preview.png").convert("L"), float)
    assert img.std() > 5.0  # a rendered mesh, not a blank image
