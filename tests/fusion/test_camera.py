"""Camera maths: numpy reference vs torch, projection round trips, scaling."""
import numpy as np
import pytest
import torch

from fusion.camera import Intrinsics, backproject, backproject_depth, backproject_depth_t, project, project_t
from fusion.frame import RGBDFrame, clean_depth


K = Intrinsics(525.0, 520.0, 319.5, 239.5, 640, 480)


def test_project_backproject_round_trip(rng):
    uv = rng.uniform([0, 0], [640, 480], size=(100, 2))
    z = rng.uniform(0.3, 4.0, size=100)
    p = backproject(uv, z, K)
    uv2, z2 = project(p, K)
    np.testing.assert_allclose(uv2, uv, atol=1e-9)
    np.testing.assert_allclose(z2, z)


def test_depth_backprojection_numpy_matches_torch(rng):
    d = rng.uniform(0.5, 3.0, size=(480, 640)).astype(np.float32)
    d[::7, ::5] = 0
    d[3, 3] = np.nan
    pn = backproject_depth(d, K)
    pt = backproject_depth_t(torch.from_numpy(d), K).numpy()
    np.testing.assert_allclose(pn, pt, rtol=1e-6, atol=1e-6)
    assert (pn[3, 3] == 0).all()
    uvn, zn = project(pn[d > 0], K)
    uvt, zt = project_t(torch.from_numpy(pn[d > 0]).double(), K)
    np.testing.assert_allclose(uvn, uvt.numpy(), atol=1e-9)


def test_project_behind_camera_is_nan():
    uv, z = project(np.array([[0.0, 0.0, -1.0]]), K)
    assert np.isnan(uv).all() and z[0] == -1


def test_scaled_intrinsics_maps_pixel_centres():
    k2 = K.scaled(320, 240)
    p = np.array([[0.1, -0.2, 1.5]])
    uv, _ = project(p, K)
    uv2, _ = project(p, k2)
    np.testing.assert_allclose((uv + 0.5) / 2 - 0.5, uv2, atol=1e-9)


def test_bad_intrinsics_rejected():
    with pytest.raises(ValueError):
        Intrinsics(0.0, 1.0, 0, 0, 10, 10)
    with pytest.raises(ValueError):
        Intrinsics(1.0, 1.0, 0, 0, 0, 10)


def test_frame_checks_and_resize():
    d = np.full((480, 640), 1.0, np.float32)
    c = np.zeros((480, 640, 3), np.uint8)
    f = RGBDFrame(0, 0.0, c, d, K)
    r = f.resized(320, 240)
    assert r.depth.shape == (240, 320) and r.color.shape == (240, 320, 3)
    assert r.intrinsics.width == 320
    with pytest.raises(ValueError):
        RGBDFrame(0, 0.0, c, d.astype(np.float64), K)
    with pytest.raises(ValueError):
        RGBDFrame(0, 0.0, c[:10], d, K)
    assert clean_depth(np.array([np.nan, -1, 2.0]))[2] == 2.0


def test_resized_depth_is_registered_with_color_and_keeps_edges():
    """A plane z = a + b*u seen at 640x480: after a 2x reduction the depth at each output pixel equals the plane
    at that pixel's centre (no quarter-pixel shift against the color); a step edge stays a step."""
    from fusion.frame import resample_depth

    u = np.arange(640, dtype=np.float32)
    plane = np.tile(1.0 + 0.001 * u, (480, 1)).astype(np.float32)
    r = resample_depth(plane, 320, 240)
    uc = (np.arange(320) + 0.5) * 2 - 0.5  # input coordinate of the output centres
    assert np.allclose(r[5], 1.0 + 0.001 * uc, atol=1e-5)
    # color resized the same way samples the same point: a ramp image
    ramp = np.tile(np.minimum(u, 255).astype(np.uint8)[:, None].repeat(3, 1)[None], (480, 1, 1))
    f = RGBDFrame(0, 0.0, ramp, plane, K).resized(320, 240)
    assert np.allclose(f.color[5, 10:120, 0], uc[10:120], atol=0.51)
    step = np.where(u < 301, 1.0, 2.0).astype(np.float32)[None].repeat(480, 0)
    rs = resample_depth(step, 320, 240)
    assert set(np.unique(rs).tolist()) == {1.0, 2.0}  # no depth between the two surfaces
    holes = plane.copy()
    holes[:, 1::2] = 0
    rh = resample_depth(holes, 320, 240)
    assert (rh > 0).all() and np.allclose(rh[5], plane[5, 0::2], atol=1e-6)  # the valid neighbour, never 0


def test_resample_depth_kernel_matches_numpy():
    from fusion.frame import resample_depth, resample_depth_np

    rng = np.random.default_rng(3)
    d = (0.5 + 2.0 * rng.random((48, 64))).astype(np.float32)
    d[rng.random(d.shape) < 0.2] = 0
    d[:, 30:] += 0.3  # an edge
    for w, h in ((32, 24), (40, 30), (64, 48), (100, 75)):
        np.testing.assert_allclose(resample_depth(d, w, h), resample_depth_np(d, w, h), atol=1e-6)
