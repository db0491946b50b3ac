"""open_source: picks the source by spec; unknown and missing inputs are one-line InputErrors."""
from __future__ import annotations

from pathlib import Path

import pytest

from fusion.errors import DeviceError, InputError, NotAvailableError
from fusion.paths import ASSETS
from fusion.sources import open_source

REAL_BAG = ASSETS / "realsense" / "single_depth_color_640x480.bag"


def test_recordings_and_folders(shared_data: Path) -> None:
    from fusion.sources.folders import DeepDeformSource, ImageFolderSource
    from fusion.sources.recording import RecordingSource

    with open_source(REAL_BAG, align="depth") as src:
        assert isinstance(src, RecordingSource) and src.align == "depth" and src.length == 2
    with open_source(str(REAL_BAG)) as src:
        assert isinstance(src, RecordingSource)
    seq = shared_data / "deepdeform" / "test" / "seq017"
    if seq.is_dir():
        with open_source(seq) as src:
            assert isinstance(src, DeepDeformSource)
    snoopy = shared_data / "snoopy"
    if snoopy.is_dir():
        with open_source(str(snoopy), depth_scale=0.001) as src:
            assert isinstance(src, ImageFolderSource)


def test_camera_without_camera() -> None:
    pytest.importorskip("pyrealsense2")
    from fusion.sources.live import list_devices

    if list_devices():
        pytest.skip("a RealSense camera is connected")
    with pytest.raises(DeviceError, match="no RealSense camera connected"):
        open_source("camera")
    with pytest.raises(DeviceError):
        open_source("camera:123456")


def test_synthetic() -> None:
    try:
        src = open_source("synthetic:cloth", n_frames=2, width=32, height=24)
    except NotAvailableError as e:
        assert "synthetic:cloth" in str(e)
        return
    with src:  # (rendering is tested with fusion.synthetic)
        assert src.length == 2 and (src.intrinsics.width, src.intrinsics.height) == (32, 24)


def test_unknown_and_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nothing.db3: recording not found"):
        open_source(tmp_path / "nothing.db3")
    with pytest.raises(InputError, match=r"ghost: no such file or folder"):
        open_source(tmp_path / "ghost")
    p = tmp_path / "movie.mp4"
    p.write_bytes(b"0000")
    with pytest.raises(InputError, match=r"movie.mp4: unknown input type '.mp4'"):
        open_source(p)
