"""Synthetic scenes: the numba rasteriser against its numpy reference and against analytic geometry,
determinism, and the ground truth (scene flow, optical flow, surface samples) against re-projection."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.camera import Intrinsics, backproject_depth, project
from fusion.errors import InputError
from fusion.synthetic import SceneConfig, list_scenes, make_scene
from fusion.synthetic.raster import (
    CHECKER,
    NOISE,
    STRIPES,
    VERTEX,
    make_material,
    noise_table,
    rasterize,
    rasterize_reference,
    shade,
    shade_reference,
    vertex_normals,
)

SMALL = {"width": 160, "height": 120}


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of img [H, W] or [H, W, C] at float pixels; ok = all four neighbours inside and,
    for a depth image, all four valid (> 0)."""
    h, w = img.shape[:2]
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    ok = (u0 >= 0) & (v0 >= 0) & (u0 + 1 < w) & (v0 + 1 < h)
    u0, v0 = np.where(ok, u0, 0), np.where(ok, v0, 0)
    a, b = (u - u0), (v - v0)
    if img.ndim == 3:
        a, b = a[:, None], b[:, None]
    f = img.astype(np.float64)
    val = (f[v0, u0] * (1 - a) * (1 - b) + f[v0, u0 + 1] * a * (1 - b) + f[v0 + 1, u0] * (1 - a) * b
           + f[v0 + 1, u0 + 1] * a * b)
    if img.ndim == 2:
        ok &= (f[v0, u0] > 0) & (f[v0, u0 + 1] > 0) & (f[v0 + 1, u0] > 0) & (f[v0 + 1, u0 + 1] > 0)
    return val, ok


# ---------------------------------------------------------------------------------------------- rasteriser


def test_rasterizer_matches_reference_random_triangles(rng: np.random.Generator) -> None:
    k = Intrinsics(40.0, 42.0, 23.5, 17.5, 48, 36)
    n = 25
    centres = np.c_[rng.uniform(-0.4, 0.4, (n, 2)), rng.uniform(0.8, 1.6, n)]
    verts = (centres[:, None, :] + rng.normal(0, 0.25, (n, 3, 3))).reshape(-1, 3)
    verts[:, 2] = np.abs(verts[:, 2]) + 0.3
    faces = np.arange(3 * n, dtype=np.int32).reshape(n, 3)
    d1, t1, b1 = rasterize(verts, faces, k)
    d2, t2, b2 = rasterize_reference(verts, faces, k)
    assert (t1 >= 0).sum() > 0.3 * t1.size  # the test covers a good part of the image, with overlaps
    assert np.mean(t1 == t2) > 0.999
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    same = t1 == t2
    np.testing.assert_allclose(b1[same], b2[same], atol=1e-5)
    assert np.all((t1 < 0) == (d1 == 0))


@pytest.mark.parametrize("name", ["cloth", "humanoid"])
def test_rasterizer_and_shading_match_reference_on_scene(name: str) -> None:
    sc = make_scene(SceneConfig(name, width=64, height=48, background=True, texture=None))
    v = sc.vertices_at(4)
    k = sc.intrinsics
    d1, t1, b1 = rasterize(v, sc.faces, k)
    d2, t2, b2 = rasterize_reference(v, sc.faces, k)
    assert np.mean(t1 == t2) > 0.999
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    normals = vertex_normals(v, sc.faces)
    args = (t1, b1, sc.faces, sc.uv, normals, sc.face_mat, sc.mats, sc.texture_table, k, np.asarray(sc.cfg.light))
    c1, c2 = shade(*args), shade_reference(*args)
    assert np.abs(c1.astype(int) - c2).max() <= 1
    assert np.mean(c1 == c2) > 0.999


def test_shading_every_texture_matches_reference(rng: np.random.Generator) -> None:
    k = Intrinsics(30.0, 30.0, 15.5, 11.5, 32, 24)
    verts = np.array([[-0.6, -0.5, 1.0], [0.6, -0.5, 1.2], [-0.6, 0.5, 1.0], [0.6, 0.5, 1.3]])
    faces = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    uv = rng.uniform(0, 3, (4, 2))
    mats = np.stack([make_material(CHECKER, (3.0, 2.0), (1, 0, 0), (0, 0, 1), 0.3),
                     make_material(STRIPES, (2.0, 1.0), (0, 1, 0), (1, 1, 1), 0.1)])
    vcol = rng.random((4, 3))
    for m2 in (CHECKER, STRIPES, NOISE, VERTEX):
        mats[1, 0] = m2
        depth, tri, bary = rasterize(verts, faces, k)
        args = (tri, bary, faces, uv, vertex_normals(verts, faces), np.array([0, 1], np.int32), mats,
                noise_table(3), k, np.array([0.0, 0.0, -1.0]))
        c1, c2 = shade(*args, vertex_colors=vcol), shade_reference(*args, vertex_colors=vcol)
        assert np.abs(c1.astype(int) - c2).max() <= 1
        assert len(np.unique(c1[tri == 1].reshape(-1, 3), axis=0)) > 10  # textured, not flat
    # unlit, no detail, one colour at every vertex: the pixels take exactly that colour
    flat = np.stack([make_material(VERTEX, (1.0, 1.0), (0, 0, 0), (0, 0, 0), 0.0)] * 2)
    c = shade(tri, bary, faces, uv, vertex_normals(verts, faces), np.array([0, 1], np.int32), flat, noise_table(3),
              k, np.array([0.0, 0.0, -1.0]), ambient=1.0, vertex_colors=np.tile([0.2, 0.6, 1.0], (4, 1)))
    assert np.all(c[tri >= 0] == [51, 153, 255]) and np.all(c[tri < 0] == 40)


def test_rasterizer_depth_and_barycentrics_are_perspective_correct() -> None:
    """A tilted triangle: every covered pixel's depth is the ray-plane intersection, and the barycentric
    combination of the vertices is the 3D point on that ray (exact perspective correction)."""
    k = Intrinsics(50.0, 50.0, 31.5, 23.5, 64, 48)
    verts = np.array([[-0.5, -0.4, 0.8], [0.6, -0.3, 1.6], [0.0, 0.5, 1.2]])
    faces = np.array([[0, 1, 2]], np.int32)
    depth, tri, bary = rasterize(verts, faces, k)
    rows, cols = np.nonzero(tri == 0)
    assert len(rows) > 200
    n = np.cross(verts[1] - verts[0], verts[2] - verts[0])
    rays = np.stack([(cols - k.cx) / k.fx, (rows - k.cy) / k.fy, np.ones(len(rows))], 1)
    t = (n @ verts[0]) / (rays @ n)
    np.testing.assert_allclose(depth[rows, cols], t, rtol=1e-6)
    p = bary[rows, cols].astype(np.float64) @ verts
    np.testing.assert_allclose(p, rays * t[:, None], atol=2e-6)
    np.testing.assert_allclose(bary[rows, cols].sum(1), 1.0, atol=1e-6)
    assert (bary[rows, cols] >= 0).all()
    # the nearer of two overlapping triangles wins, whatever the drawing order
    front = verts * [1, 1, 0.5]
    both = np.concatenate([verts, front])
    for order in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        fo = np.array(order, np.int32)
        d2, t2, _ = rasterize(both, fo, k)
        covered = t2 >= 0
        assert covered.sum() > len(rows)
        assert np.all(fo[t2[covered], 0] == 3)  # always the front triangle (vertices 3, 4, 5)


# ---------------------------------------------------------------------------------------------- scenes


def test_scene_config_validation() -> None:
    assert set(list_scenes()) == {"cloth", "cylinder", "humanoid"}
    with pytest.raises(InputError, match="unknown synthetic scene"):
        SceneConfig("teapot")
    with pytest.raises(InputError):
        SceneConfig("cloth", n_frames=0)
    with pytest.raises(InputError, match="texture"):
        SceneConfig("cloth", texture="plaid")


@pytest.mark.parametrize("name", ["cloth", "cylinder", "humanoid"])
def test_objects_are_placed_and_sized_as_documented(name: str) -> None:
    sc = make_scene(SceneConfig(name, n_frames=90, **SMALL))
    faces0 = None
    for i in (0, 30, 60, 89):
        v, f = sc.mesh_at(i)
        assert v.dtype == np.float32 and f.dtype == np.int32 and np.isfinite(v).all()
        if faces0 is None:
            faces0 = f
        np.testing.assert_array_equal(f, faces0)  # constant connectivity
        centre = (v.min(0) + v.max(0)) / 2
        assert 0.8 <= centre[2] <= 1.5
        assert 0.3 <= np.max(v.max(0) - v.min(0)) <= 0.85
        frame = sc.render(i)
        assert frame.mask.sum() > 0.03 * frame.mask.size
        assert np.all(frame.depth[frame.mask] > 0) and np.all(frame.depth[~frame.mask] == 0)
        assert frame.index == i and frame.timestamp_s == pytest.approx(i / 30.0)


def test_same_config_gives_identical_frames_and_seed_changes_them() -> None:
    cfg = SceneConfig("humanoid", seed=3, noise=True, n_frames=10, **SMALL)
    a, b = make_scene(cfg), make_scene(cfg)
    b.render(7)  # rendering order must not matter
    for i in (2, 7):
        fa, fb = a.render(i), b.render(i)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        np.testing.assert_array_equal(fa.color, fb.color)
        np.testing.assert_array_equal(fa.mask, fb.mask)
    np.testing.assert_array_equal(a.scene_flow(2, 7), b.scene_flow(2, 7))
    c = make_scene(SceneConfig("humanoid", seed=4, noise=True, n_frames=10, **SMALL))
    assert not np.array_equal(a.render(2).color, c.render(2).color)
    assert not np.allclose(a.mesh_at(5)[0], c.mesh_at(5)[0])


def test_amplitude_zero_is_static_and_speed_scales_time() -> None:
    still = make_scene(SceneConfig("cylinder", amplitude=0.0, n_frames=10, **SMALL))
    sf = still.scene_flow(0, 9)
    valid = ~np.isnan(sf[..., 0])
    assert valid.sum() > 100
    assert np.abs(sf[valid]).max() < 1e-6
    slow = make_scene(SceneConfig("cloth", n_frames=20, **SMALL))
    fast = make_scene(SceneConfig("cloth", n_frames=20, speed=2.0, **SMALL))
    np.testing.assert_allclose(fast.mesh_at(5)[0], slow.mesh_at(10)[0], atol=1e-6)


@pytest.mark.parametrize("name,i,j", [("cloth", 0, 8), ("cylinder", 3, 12), ("humanoid", 0, 6)])
def test_scene_flow_lands_on_the_surface_of_frame_j(name: str, i: int, j: int) -> None:
    """Back-project frame i's depth image, add the ground-truth scene flow, project into frame j: where the
    point is visible it lies on frame j's rendered surface (its depth matches frame j's depth image)."""
    sc = make_scene(SceneConfig(name, n_frames=20, amplitude=1.5, **SMALL))
    k = sc.intrinsics
    di, dj = sc.render(i).depth, sc.render(j).depth
    mask = sc.render(i).mask
    sf = sc.scene_flow(i, j)
    assert np.all(np.isfinite(sf[mask])) and np.all(np.isnan(sf[~mask]))
    x = backproject_depth(di, k)[mask].astype(np.float64)

    def landed(flow: np.ndarray) -> tuple[float, float, float, float]:
        uv, z = project(x + flow, k)
        d, ok = _bilinear(dj, uv[:, 0], uv[:, 1])
        err = d[ok] - z[ok]  # > 0: the point floats in front of the surface seen in frame j
        return (float(np.mean(np.abs(err) < 0.004)), float(np.mean(err > 0.004)), float(np.median(np.abs(err))),
                float(np.abs(flow[ok]).max()))

    on, front, med, biggest = landed(sf[mask].astype(np.float64))
    assert biggest > 0.03  # the pair really moves
    # visible points lie on frame j's surface; the others are hidden behind it (self-occlusion), never in front
    assert on > 0.85, (on, front, med)
    assert front < 0.02
    assert med < 0.001
    # negative controls: no motion, or the motion to another frame, misses the surface
    for wrong in (np.zeros_like(x), sc.scene_flow(i, j - 2)[mask].astype(np.float64)):
        on_w, front_w, _, _ = landed(wrong)
        assert on_w < 0.5 and front_w > 0.05


@pytest.mark.parametrize("name", ["cloth", "humanoid"])
def test_optical_flow_is_the_projection_of_scene_flow_and_carries_the_texture(name: str) -> None:
    # unlit (ambient 1): brightness constancy holds exactly, so colour differences measure flow errors
    sc = make_scene(SceneConfig(name, n_frames=20, width=320, height=240, ambient=1.0))
    k = sc.intrinsics
    i, j = 2, 9
    fi = sc.render(i)
    of, sf = sc.optical_flow(i, j), sc.scene_flow(i, j)
    valid = ~np.isnan(of[..., 0])
    np.testing.assert_array_equal(valid, fi.mask)
    rows, cols = np.nonzero(valid)
    x = backproject_depth(fi.depth, k)[valid].astype(np.float64)
    uv, _ = project(x + sf[valid], k)
    np.testing.assert_allclose(of[valid], uv - np.c_[cols, rows], atol=2e-3)
    # photometric consistency: the colour of frame j at x + flow is the colour of frame i at x
    vis = sc.visibility(i, j)[valid]
    assert vis.mean() > 0.6
    cj = sc.render(j).color
    ci = fi.color[valid].astype(np.float64)
    target = np.c_[cols, rows] + of[valid]
    warped, ok = _bilinear(cj, target[:, 0], target[:, 1])
    sel = ok & vis
    err = np.abs(warped[sel] - ci[sel]).mean(1)
    still, _ = _bilinear(cj, cols.astype(float), rows.astype(float))
    err0 = np.abs(still[sel] - ci[sel]).mean(1)
    assert np.median(err) < 4.0
    assert np.median(err) < 0.25 * np.median(err0)


def test_surface_samples_follow_the_rendered_surface() -> None:
    sc = make_scene(SceneConfig("cylinder", n_frames=20, amplitude=1.5, **SMALL))
    k = sc.intrinsics
    fid, bary = sc.surface_samples(3000, seed=1)
    assert fid.dtype == np.int32 and bary.shape == (3000, 3)
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-6)
    assert fid.max() < sc.n_object_faces
    assert np.array_equal(sc.surface_samples(3000, seed=1)[0], fid)
    i, j = 4, 15
    pi, pj = sc.sample_positions(fid, bary, i), sc.sample_positions(fid, bary, j)
    uv, z = project(pi.astype(np.float64), k)
    u, v = np.rint(uv[:, 0]).astype(int), np.rint(uv[:, 1]).astype(int)
    inside = (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
    depth = sc.render(i).depth
    seen = np.zeros(len(u), bool)
    seen[inside] = np.abs(depth[v[inside], u[inside]] - z[inside]) < 0.003
    assert 0.2 < seen.mean() < 0.8  # about half of a closed surface faces the camera
    sf = sc.scene_flow(i, j)[v[seen], u[seen]]
    # the pixel's surface point is within a pixel footprint of the sample, so its motion is nearly the same
    err = np.linalg.norm(sf - (pj - pi)[seen], axis=1)
    assert np.median(err) < 0.002 and np.percentile(err, 95) < 0.01
    assert np.median(np.linalg.norm((pj - pi)[seen], axis=1)) > 0.01


def test_large_motion_pairs_exceed_100_pixels() -> None:
    sc = make_scene(SceneConfig("humanoid", n_frames=60, speed=2.0))
    flow = sc.optical_flow(0, 30)
    assert np.nanmax(np.linalg.norm(flow, axis=-1)) > 100.0
    small = make_scene(SceneConfig("humanoid", n_frames=60, speed=0.25, amplitude=0.5))
    assert np.nanmax(np.linalg.norm(small.optical_flow(0, 1), axis=-1)) < 3.0
