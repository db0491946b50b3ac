"""CLI: `devices`, `record`, `inspect` and the "playback" bench section."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from fusion.paths import ASSETS

REAL_BAG = ASSETS / "realsense" / "single_depth_color_640x480.bag"


def _no_camera() -> None:
    pytest.importorskip("pyrealsense2")
    from fusion.sources.live import list_devices

    if list_devices():
        pytest.skip("a RealSense camera is connected")


def test_devices_without_camera_says_so_and_exits_0(tmp_path: Path, capsys) -> None:
    _no_camera()
    assert main(["devices", "--report", str(tmp_path / "d.json")]) == 0
    assert capsys.readouterr().out.strip() == "no RealSense camera connected"
    assert json.loads((tmp_path / "d.json").read_text()) == {"count": 0, "devices": []}


def test_record_without_camera_is_one_line_exit_2(tmp_path: Path) -> None:
    _no_camera()
    out = subprocess.run([sys.executable, "-m", "app.cli", "record", str(tmp_path / "r.db3"), "--duration", "1"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "nrstudio record: error: no RealSense camera connected (the RealSense SDK finds no device; check the "
        "USB 3 cable, or replay a recording instead)"
    ]
    assert not (tmp_path / "r.db3").exists()


def test_record_rejects_a_bag_output(tmp_path: Path, capsys) -> None:
    assert main(["record", str(tmp_path / "r.bag")]) == 2
    assert "r.bag: recordings are written as RealSense .db3 files" in capsys.readouterr().err


def test_inspect_real_bag(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyrealsense2")
    rep = tmp_path / "i.json"
    assert main(["inspect", str(REAL_BAG), "--report", str(rep)]) == 0
    out = capsys.readouterr().out
    assert "stream Depth  z16    640x480 @ 6 fps  fx=390.431" in out
    assert "stream Color  rgb8   640x480 @ 6 fps  fx=613.204" in out
    assert "frames: 2 depth, 1 color; duration 0.167 s" in out and "depth units: 0.001" in out
    info = json.loads(rep.read_text())
    assert info["depth_frames"] == 2 and info["device"]["serial_number"] == "728612070259"
    assert info["depth_units"] == pytest.approx(0.001)
    assert info["extrinsics_depth_to_color"]["translation_m"][0] == pytest.approx(0.01431, abs=1e-5)


def test_inspect_folder(shared_data: Path, capsys) -> None:
    snoopy = shared_data / "snoopy"
    if not snoopy.is_dir():
        pytest.skip("no snoopy folder")
    assert main(["inspect", str(snoopy)]) == 0
    out = capsys.readouterr().out
    assert "frames: 2 (640x480), color: no (gray from depth), masks on 2 frames" in out
    assert "fx=517.000" in out


@pytest.mark.parametrize("name,content,msg", [
    ("missing.db3", None, "missing.db3: recording not found"),
    ("noise.db3", b"\x13" * 3000, "noise.db3: not a readable RealSense recording"),
    ("clip.avi", b"RIFF", "clip.avi: unknown input type '.avi'"),
])
def test_inspect_bad_input_is_one_line_exit_2(tmp_path: Path, name: str, content: bytes | None, msg: str) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    out = subprocess.run([sys.executable, "-m", "app.cli", "inspect", str(p)], capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in out.stderr


def test_playback_bench_section_reports_both_loops(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyrealsense2")
    rep = tmp_path / "b.json"
    assert main(["bench", "--only", "playback", "--quick", "--report", str(rep)]) == 0
    fig = json.loads(rep.read_text())["playback"]
    assert fig["ours_frames"] >= 1 and fig["reference_sdk_frames"] >= 1
    assert fig["ours_fps"] > 0 and fig["reference_sdk_fps"] > 0
    assert fig["ratio_ours_over_reference"] == pytest.approx(fig["ours_fps"] / fig["reference_sdk_fps"])


def test_inspect_recording_without_depth_exit_2(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pyrealsense2")
    from fusion.bench import synthetic_like_frames
    from fusion.sources.recorder import write_recording

    p = tmp_path / "color_only.db3"
    write_recording(synthetic_like_frames(1, 32, 24), p, depth=False, pace=False)
    assert main(["inspect", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "color_only.db3: the recording has no depth stream" in err[0]
