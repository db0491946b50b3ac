"""RealSense recording playback: the real D435 bag, record -> playback round trips, pairing, stalls, bad input."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fusion.bench import synthetic_like_frames
from fusion.camera import backproject_depth, project
from fusion.errors import InputError, StallError
from fusion.paths import ASSETS
from fusion.sources.common import metres_to_raw
from fusion.sources.recorder import write_recording
from fusion.sources.recording import RecordingSource, _Session, index_recording

pytest.importorskip("pyrealsense2")

REAL_BAG = ASSETS / "realsense" / "single_depth_color_640x480.bag"


def _raw(frame, units: float) -> np.ndarray:
    return np.rint(frame.depth / np.float32(units)).astype(np.uint16)


@pytest.fixture(scope="module")
def real_frames() -> dict:
    """The real bag played with both alignments (each played once for the module)."""
    out = {}
    for align in ("color", "depth"):
        with RecordingSource(REAL_BAG, align=align) as src:
            out[align] = (src.info, src.length, src.depth_units, src.intrinsics, list(src))
    return out


def test_real_bag_plays_every_depth_frame_with_its_own_intrinsics(real_frames: dict) -> None:
    info, length, units, k, frames = real_frames["color"]
    assert length == 2 and len(frames) == 2  # the SDK pipeline would deliver only one of them
    assert [f.meta["frame_number"] for f in frames] == [169, 170]
    assert [f.index for f in frames] == [0, 1]
    assert units == pytest.approx(0.001, rel=1e-6)
    assert info["_depth_intrinsics"]["fx"] == pytest.approx(390.43, abs=0.01)
    assert info["_color_intrinsics"]["fx"] == pytest.approx(613.20, abs=0.01)
    # depth aligned to color: the frames carry the color camera
    assert k.fx == pytest.approx(613.20, abs=0.01) and k.fy == pytest.approx(613.42, abs=0.01)
    for f in frames:
        assert f.intrinsics == k and f.depth.shape == (480, 640) and f.depth.dtype == np.float32
        assert f.meta["color_frame_number"] == 162 and f.meta["color_source"] == "sensor"
        assert f.meta["aligned_to"] == "color"
        valid = f.depth[f.depth > 0]
        assert 0.85 < valid.size / f.depth.size and 1.2 < np.median(valid) < 1.8
    assert frames[0].timestamp_s == 0.0 and frames[1].timestamp_s == pytest.approx(0.16668, abs=1e-4)


def test_real_bag_depth_alignment_keeps_the_depth_camera(real_frames: dict) -> None:
    _, _, _, k, frames = real_frames["depth"]
    assert len(frames) == 2
    assert k.fx == pytest.approx(390.43, abs=0.01) and k.cx == pytest.approx(331.39, abs=0.01)
    assert all(f.meta["aligned_to"] == "depth" for f in frames)


def test_depth_aligned_to_color_agrees_with_a_numpy_reprojection(real_frames: dict) -> None:
    """rs.align's depth->color matches back-projection, the recorded extrinsic and projection (z-buffer)."""
    info, _, _, kd, fd = real_frames["depth"]
    _, _, _, kc, fc = real_frames["color"]
    ext = info["extrinsics_depth_to_color"]
    r, t = np.asarray(ext["rotation"]), np.asarray(ext["translation_m"])
    pts = backproject_depth(fd[0].depth, kd).reshape(-1, 3)
    pts = pts[pts[:, 2] > 0]
    z = pts[:, 2]  # rs.align keeps each pixel's depth-camera z (librealsense align_z_to_other)
    uv, _ = project(pts @ r.T + t, kc)
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    ok = (u >= 0) & (u < kc.width) & (v >= 0) & (v < kc.height)
    ref = np.full((kc.height, kc.width), np.inf)
    np.minimum.at(ref, (v[ok], u[ok]), z[ok])
    got = fc[0].depth
    both = np.isfinite(ref) & (got > 0)
    assert both.mean() > 0.3  # the depth camera has fewer pixels: one sample per depth pixel leaves gaps
    err = np.abs(got[both] - ref[both])
    print("reprojection: overlap", both.mean(), "median error", np.median(err), "within 1 cm", np.mean(err < 0.01))
    assert np.median(err) < 0.002 and np.mean(err < 0.01) > 0.95
    # the alignment really moved pixels: the raw depth image is not the aligned one
    assert np.mean(np.abs(fd[0].depth - got) > 0.01) > 0.05


def test_color_aligned_to_depth_samples_the_color_image(real_frames: dict) -> None:
    info, _, _, kd, fd = real_frames["depth"]
    _, _, _, kc, fc = real_frames["color"]
    ext = info["extrinsics_depth_to_color"]
    r, t = np.asarray(ext["rotation"]), np.asarray(ext["translation_m"])
    d = fd[0].depth
    pts = backproject_depth(d, kd) @ r.T + t
    uv, _ = project(pts, kc)
    u, v = np.rint(uv[..., 0]), np.rint(uv[..., 1])
    ok = (d > 0) & (u >= 0) & (u < kc.width) & (v >= 0) & (v < kc.height)
    sampled = fc[0].color[v[ok].astype(int), u[ok].astype(int)].astype(int)
    got = fd[0].color[ok].astype(int)
    assert np.mean(np.abs(sampled - got).max(axis=1) <= 12) > 0.9


def _same_recorded_images(a, b) -> None:
    """Two plays of the real bag deliver the same frames: identical raw depth (align="depth") or color
    (align="color"); rs.align's reprojection may differ in a few dozen of 307200 pixels between a .bag and
    its .db3 conversion (measured: 15-28 pixels, ties of the z-buffer)."""
    assert [f.meta["frame_number"] for f in a] == [f.meta["frame_number"] for f in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.color, y.color)
        assert np.mean(x.depth != y.depth) < 1e-3


def test_bag_converted_to_db3_plays_the_same_frames(real_frames: dict) -> None:
    with RecordingSource(REAL_BAG, bag_mode="convert") as src:
        conv = list(src)
        tmpdir = src._tmpdir
        assert tmpdir is not None and tmpdir.is_dir()
    assert not tmpdir.exists()  # close() removes the converted copy
    assert [f.meta["frame_number"] for f in conv] == [169, 170]
    _same_recorded_images(real_frames["color"][4], conv)
    with RecordingSource(REAL_BAG, bag_mode="convert", align="depth") as src:
        conv_d = list(src)
    for x, y in zip(real_frames["depth"][4], conv_d):
        np.testing.assert_array_equal(x.depth, y.depth)  # the raw depth images are bit-identical


def test_a_depth_frame_lost_by_the_sdk_is_recovered_through_conversion(monkeypatch, real_frames: dict) -> None:
    """Simulate 2.59 dropping the first depth frame of a .bag: playback converts to .db3 and resumes."""
    import pyrealsense2 as rs

    orig = _Session._on_frame

    def lossy(self, frame):
        if (self.play_path.suffix == ".bag" and frame.get_profile().stream_type() == rs.stream.depth
                and frame.get_frame_number() == 169):
            return
        orig(self, frame)

    monkeypatch.setattr(_Session, "_on_frame", lossy)
    with RecordingSource(REAL_BAG) as src:
        frames = list(src)
        assert src._play_path.suffix == ".db3"
    _same_recorded_images(real_frames["color"][4], frames)
    with RecordingSource(REAL_BAG, bag_mode="direct") as src:
        with pytest.raises(InputError, match="lost frames"):
            list(src)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, list]:
    frames = synthetic_like_frames(6, 64, 48, seed=3)
    path = tmp_path_factory.mktemp("rec") / "rt.db3"
    info = write_recording(frames, path, fps=30, depth_units=0.001, pace=False)
    assert info.frames == 6 and info.size_bytes == path.stat().st_size
    return path, frames


@pytest.mark.parametrize("align", ["color", "depth"])
def test_record_playback_round_trip_is_pixel_identical_with_seek(written, align: str) -> None:
    path, frames = written
    with RecordingSource(path, align=align) as src:
        assert src.length == 6 and src.fps == 30.0
        k, k0 = src.intrinsics.as_dict(), frames[0].intrinsics.as_dict()
        assert k == pytest.approx(k0, rel=1e-6)  # the SDK stores intrinsics as float32
        assert src.depth_units == pytest.approx(0.001, rel=1e-6)
        got = list(src)
        assert [f.index for f in got] == list(range(6))
        for g, f in zip(got, frames):
            np.testing.assert_array_equal(_raw(g, src.depth_units), metres_to_raw(f.depth, 0.001))
            np.testing.assert_array_equal(g.color, f.color)
            assert g.timestamp_s == pytest.approx(f.timestamp_s, abs=1e-6)
            assert g.meta["color_frame_number"] == g.meta["frame_number"] == g.index
        src.seek(4)
        g = src.next_frame()
        assert g.index == 4
        np.testing.assert_array_equal(g.color, frames[4].color)
        src.seek(1)
        assert [f.index for f in src] == [1, 2, 3, 4, 5]
        src.seek_time(0.05)  # frame 2 is the first at or after 50 ms (t = 66.7 ms)
        g = src.next_frame()
        assert g.index == 2
        np.testing.assert_array_equal(_raw(g, src.depth_units), metres_to_raw(frames[2].depth, 0.001))
        src.seek_time(10.0)
        assert src.next_frame() is None
        src.seek(6)
        assert src.next_frame() is None
        with pytest.raises(IndexError):
            src.seek(7)


def test_slow_consumer_with_a_one_frame_buffer_still_gets_every_frame(tmp_path: Path) -> None:
    frames = synthetic_like_frames(20, 32, 24, seed=1)
    path = tmp_path / "slow.db3"
    write_recording(frames, path, pace=False)
    with RecordingSource(path, buffer_size=1) as src:
        got = []
        for f in src:
            got.append(f.index)
            time.sleep(0.005)
    assert got == list(range(20))


def test_each_depth_frame_gets_the_color_frame_nearest_in_time(tmp_path: Path) -> None:
    """Color only at frames 2 and 5: depth 0 and 1 (before any color) take frame 2's color."""
    frames = synthetic_like_frames(8, 32, 24, seed=2)
    path = tmp_path / "sparse_color.db3"
    write_recording(frames, path, color_indices=[2, 5], pace=False)
    assert len(index_recording(path).color) == 2
    with RecordingSource(path) as src:
        got = list(src)
    expect = [2, 2, 2, 2, 5, 5, 5, 5]  # frame 3 is nearer 2 (1 frame) than 5 (2 frames); frame 4 nearer 5
    assert [g.meta["color_frame_number"] for g in got] == expect
    for g, e in zip(got, expect):
        np.testing.assert_array_equal(g.color, frames[e].color)
        np.testing.assert_array_equal(_raw(g, 0.001), metres_to_raw(frames[g.index].depth, 0.001))


def test_color_that_starts_late(tmp_path: Path) -> None:
    """Color from frame 6 on: depth 0..5 wait for it; from frame 14 on: the first frames are too far."""
    frames = synthetic_like_frames(16, 32, 24, seed=4)
    path = tmp_path / "late.db3"
    write_recording(frames, path, color_indices=range(6, 16), pace=False)
    with RecordingSource(path) as src:
        got = [g.meta["color_frame_number"] for g in src]
    assert got == [6] * 7 + list(range(7, 16))
    write_recording(frames, path, color_indices=[15], pace=False)
    with RecordingSource(path) as src:
        got = list(src)
    far = [g.index for g in got if g.meta["color_frame_number"] is None]
    assert far == [0, 1, 2, 3, 4]  # 11+ depth frames are read before the color frame: too many to hold
    assert all(got[i].meta["color_source"].startswith("gray-from-depth (the nearest") for i in far)
    assert all(g.meta["color_frame_number"] == 15 for g in got[len(far):])
    np.testing.assert_array_equal(got[-1].color, frames[15].color)


def test_depth_only_recording_gives_gray_color_from_depth(tmp_path: Path) -> None:
    frames = synthetic_like_frames(2, 32, 24)
    path = tmp_path / "depth_only.db3"
    write_recording(frames, path, color=False, pace=False)
    with RecordingSource(path) as src:
        got = list(src)
    assert len(got) == 2
    for g in got:
        assert g.meta["color_source"].startswith("gray-from-depth")
        assert g.color.shape == (24, 32, 3) and np.all(g.color[..., 0] == g.color[..., 1])
        assert np.all(g.color[g.depth == 0] == 0) and g.color[g.depth > 0].max() > 0


def test_a_stalled_sdk_becomes_a_stall_error_and_close_joins(monkeypatch, written) -> None:
    path, _ = written
    # the SDK "hangs": its dispatcher thread is stuck in our callback until we give up, no frame arrives
    monkeypatch.setattr(_Session, "_on_frame", lambda self, frame: self.stop_event.wait(30))
    src = RecordingSource(path, timeout_s=0.5)
    t0 = time.perf_counter()
    with pytest.raises(StallError, match="no frame for 0.5 s"):
        src.next_frame()
    assert time.perf_counter() - t0 < 5.0
    src.close()
    src.close()  # idempotent
    assert src._session is None
    assert not any(t.name.startswith("nrstudio-playback") and t.is_alive() for t in threading.enumerate())


def test_close_mid_stream_stops_the_reader_thread(written) -> None:
    path, _ = written
    src = RecordingSource(path, buffer_size=1)
    assert src.next_frame().index == 0
    session = src._session
    src.close()
    assert session is not None and not session.is_alive()
    with pytest.raises(RuntimeError):
        src.next_frame()


# ------------------------------------------------------------------------------------------ bad input


def test_missing_recording(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.db3: recording not found"):
        RecordingSource(tmp_path / "nope.db3")


def test_unknown_extension(tmp_path: Path) -> None:
    p = tmp_path / "clip.mp4"
    p.write_bytes(b"x" * 10)
    with pytest.raises(InputError, match=r"clip.mp4: unknown recording extension"):
        RecordingSource(p)


@pytest.mark.parametrize("ext", [".db3", ".bag"])
def test_random_bytes_are_a_corrupt_recording(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"noise{ext}"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=f"noise{ext}: not a readable RealSense recording"):
        RecordingSource(p)


def test_zero_byte_recording(tmp_path: Path) -> None:
    p = tmp_path / "empty.db3"
    p.touch()
    with pytest.raises(InputError, match="empty.db3: recording is empty"):
        RecordingSource(p)


@pytest.mark.parametrize("which", ["bag", "db3"])
def test_truncated_recordings(tmp_path: Path, written, which: str) -> None:
    src = REAL_BAG if which == "bag" else written[0]
    data = src.read_bytes()
    p = tmp_path / f"cut.{which}"
    p.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(InputError, match=f"cut.{which}: not a readable RealSense recording"):
        with RecordingSource(p) as s:
            list(s)


def test_damaged_image_data_is_reported_not_skipped(tmp_path: Path) -> None:
    """Bytes overwritten inside a recorded image: the SDK drops that frame, and playback says so."""
    frames = synthetic_like_frames(10, 64, 48, seed=5)
    good = tmp_path / "good.db3"
    write_recording(frames, good, pace=False)
    data = bytearray(good.read_bytes())
    o = int(len(data) * 0.8)
    data[o : o + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    bad = tmp_path / "damaged.db3"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged.db3: (playback lost frames|not a readable)"):
        with RecordingSource(bad) as s:
            list(s)


def test_recording_without_depth_stream(tmp_path: Path) -> None:
    p = tmp_path / "color_only.db3"
    write_recording(synthetic_like_frames(2, 32, 24), p, depth=False, pace=False)
    with pytest.raises(InputError, match=r"color_only.db3: the recording has no depth stream \(streams: Color_0\)"):
        RecordingSource(p)


def test_all_zero_depth(tmp_path: Path) -> None:
    frames = synthetic_like_frames(2, 32, 24)
    for f in frames:
        f.depth[:] = 0
    p = tmp_path / "zeros.db3"
    write_recording(frames, p, pace=False)
    with RecordingSource(p) as src:
        with pytest.raises(InputError, match=r"zeros.db3: depth frame 0 .* is all zero"):
            src.next_frame()
    with RecordingSource(p, empty_depth="keep") as src:
        assert len(list(src)) == 2
    with RecordingSource(p, empty_depth="skip") as src:
        assert list(src) == []


def test_errors_are_one_line_and_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "noise.db3"
    p.write_bytes(os.urandom(4096))
    with pytest.raises(InputError) as e:
        RecordingSource(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
