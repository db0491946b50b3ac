"""Live RealSense path without a camera: device listing, the no-camera error, and the live frame handling
(pipeline -> filters -> alignment -> RGBDFrame) driven by a recording standing in for the camera."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.errors import DeviceError
from fusion.paths import ASSETS
from fusion.sources.live import LiveConfig, LiveSource, list_devices
from fusion.sources.realsense import FilterConfig, make_filters

pytest.importorskip("pyrealsense2")

REAL_BAG = ASSETS / "realsense" / "single_depth_color_640x480.bag"
ALL_FILTERS = FilterConfig(decimation=2, spatial=True, temporal=True, hole_filling=1)


def test_list_devices_returns_plain_dicts() -> None:
    devs = list_devices()
    assert isinstance(devs, list)
    for d in devs:
        assert set(d) == {"name", "serial", "firmware", "usb_type", "product_line"}


def test_no_camera_is_a_clear_device_error() -> None:
    if list_devices():
        pytest.skip("a RealSense camera is connected")
    with pytest.raises(DeviceError, match="^no RealSense camera connected"):
        LiveSource(LiveConfig())


def test_filters_run_in_the_recommended_order() -> None:
    names = [n for n, _ in make_filters(ALL_FILTERS)]
    assert names == ["decimation", "depth_to_disparity", "spatial", "temporal", "disparity_to_depth", "hole_filling"]
    assert [n for n, _ in make_filters(FilterConfig(hole_filling=2))] == ["hole_filling"]
    assert make_filters(FilterConfig()) == []


def _play(cfg: LiveConfig) -> list:
    with LiveSource(cfg, playback_file=REAL_BAG) as src:
        assert src.is_live and src.length is None
        k = src.intrinsics
        frames = list(src)
    assert frames and all(f.intrinsics == k for f in frames)
    return frames


def test_live_path_from_a_playback_device_aligns_and_filters() -> None:
    plain = _play(LiveConfig())
    filt = _play(LiveConfig(filters=ALL_FILTERS))
    f0, f1 = plain[0], filt[0]
    assert f0.meta["frame_number"] == f1.meta["frame_number"]
    # aligned to color: color intrinsics and resolution, even with decimated depth
    for f in (f0, f1):
        assert f.intrinsics.fx == pytest.approx(613.20, abs=0.01) and f.depth.shape == (480, 640)
        assert f.meta["aligned_to"] == "color" and f.meta["color_source"] == "sensor"
    assert f1.meta["filters"][0] == "decimation" and f1.meta["filters"][-1] == "hole_filling"
    assert "filters" not in f0.meta
    # hole filling leaves fewer invalid pixels; the filtered depth stays close to the raw one
    assert (f1.depth > 0).mean() > (f0.depth > 0).mean()
    both = (f0.depth > 0) & (f1.depth > 0)
    assert np.median(np.abs(f0.depth[both] - f1.depth[both])) < 0.02


def test_live_path_depth_alignment_keeps_the_decimated_depth_camera() -> None:
    f = _play(LiveConfig(align="depth", filters=FilterConfig(decimation=2)))[0]
    assert f.depth.shape == (240, 320) and f.color.shape == (240, 320, 3)
    assert f.intrinsics.fx == pytest.approx(390.43 / 2, abs=0.01)
    assert f.meta["aligned_to"] == "depth"


def test_live_config_validation() -> None:
    with pytest.raises(ValueError):
        LiveConfig(align="ir")
    with pytest.raises(ValueError):
        LiveConfig(visual_preset="sparkly")
    with pytest.raises(ValueError):
        FilterConfig(decimation=9)
    with pytest.raises(ValueError):
        FilterConfig(hole_filling=5)
