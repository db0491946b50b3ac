"""The .db3 writer: options, atomicity, size and compression, bad output paths."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fusion.bench import synthetic_like_frames
from fusion.errors import InputError
from fusion.sources.common import metres_to_raw
from fusion.sources.recorder import write_recording
from fusion.sources.recording import RecordingSource, index_recording, probe_recording

pytest.importorskip("pyrealsense2")


def test_info_sizes_and_lossless_compression(tmp_path: Path) -> None:
    frames = synthetic_like_frames(3, 64, 48)
    a = write_recording(frames, tmp_path / "c.db3", pace=False)
    b = write_recording(frames, tmp_path / "raw.db3", pace=False, compression=False)
    assert a.frames == b.frames == 3 and (a.width, a.height) == (64, 48) and a.streams == ("depth", "color")
    assert a.size_bytes == (tmp_path / "c.db3").stat().st_size and a.bytes_per_frame == a.size_bytes / 3
    raw_bytes = 64 * 48 * (2 + 3)
    assert b.bytes_per_frame > raw_bytes > a.bytes_per_frame - 8000  # PNG shrinks the images
    for p in ("c.db3", "raw.db3"):
        with RecordingSource(tmp_path / p) as src:
            for g, f in zip(src, frames):
                np.testing.assert_array_equal(g.color, f.color)
                np.testing.assert_array_equal(np.rint(g.depth / np.float32(0.001)), metres_to_raw(f.depth, 0.001))


def test_depth_units_and_out_of_range_depth(tmp_path: Path) -> None:
    f = synthetic_like_frames(1, 32, 24)[0]
    f.depth[0, :4] = [70.0, np.nan, -1.0, 0.0001]  # beyond 65535 units, NaN, negative, sub-unit
    info = write_recording([f], tmp_path / "u.db3", depth_units=0.0001, pace=False)
    assert info.depth_units == 0.0001
    with RecordingSource(tmp_path / "u.db3") as src:
        assert src.depth_units == pytest.approx(0.0001, rel=1e-6)
        g = src.next_frame()
    assert list(g.depth[0, :4]) == [0.0, 0.0, 0.0, pytest.approx(0.0001, rel=1e-6)]
    np.testing.assert_allclose(g.depth[1:], f.depth[1:], atol=0.00005 + 1e-7)


def test_paced_writing_stores_real_time(tmp_path: Path) -> None:
    frames = synthetic_like_frames(3, 32, 24)
    info = write_recording(frames, tmp_path / "p.db3", fps=30, pace=True)
    idx = index_recording(tmp_path / "p.db3")
    span_s = (idx.depth[-1].file_time_ns - idx.depth[0].file_time_ns) / 1e9
    assert span_s >= 2 / 30 - 0.005  # the file's own clock spans the sequence (the Viewer plays by it)
    assert info.duration_s == pytest.approx(2 / 30)
    assert probe_recording(tmp_path / "p.db3")["duration_sdk_s"] >= 2 / 30 - 0.005


def test_writing_is_atomic(tmp_path: Path) -> None:
    frames = synthetic_like_frames(3, 32, 24)
    frames[2] = replace(frames[2], intrinsics=replace(frames[2].intrinsics, fx=10.0))
    target = tmp_path / "bad.db3"
    with pytest.raises(ValueError, match="frame 2 has intrinsics"):
        write_recording(frames, target, pace=False)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file is left


def test_bad_output_and_empty_input(tmp_path: Path) -> None:
    frames = synthetic_like_frames(1, 32, 24)
    with pytest.raises(InputError, match=r"out.bag: recordings are written as RealSense .db3 files"):
        write_recording(frames, tmp_path / "out.bag", pace=False)
    with pytest.raises(ValueError, match="no frames"):
        write_recording([], tmp_path / "e.db3", pace=False)
    with pytest.raises(ValueError, match="at least one"):
        write_recording(frames, tmp_path / "n.db3", color=False, depth=False, pace=False)
