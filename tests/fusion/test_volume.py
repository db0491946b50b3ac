"""The block-sparse TSDF volume against the dense numpy reference, torch == numba, warps, memory guard."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from fusion.errors import InputError
from fusion.graph import GraphMotion, build_graph, skinning
from fusion.tsdf import TSDFVolume, VolumeConfig, estimate_bytes
from fusion.tsdf.reference import DenseTSDF, carve_depth_np, integrate_dense
from fusion.tsdf.scenes import default_intrinsics, make_frame, render_mesh, sphere_depth, sphere_mesh
from fusion.tsdf.volume import default_skinning
from fusion.warp import warp_points_np

K = default_intrinsics(160, 120)
CENTER = np.array([0.02, -0.01, 0.6])
RADIUS = 0.15


def _sphere_frame(i: int = 0, pose: np.ndarray | None = None):
    v, f, c = sphere_mesh(CENTER, RADIUS, 4)
    if pose is not None:
        v = v @ pose[:3, :3].T + pose[:3, 3]
    d, col = render_mesh(v, f, K, c)
    return make_frame(i, d, K, col)


def _dense_like(vol: TSDFVolume) -> DenseTSDF:
    return DenseTSDF.empty(vol.origin, tuple(int(x) * vol.bs for x in vol.dims), vol.voxel_size)


def _blocks_of_dense(vol: TSDFVolume, dense: DenseTSDF, coords: np.ndarray):
    bs = vol.bs
    nx, ny, nz = (int(x) for x in vol.dims)

    def cut(a):
        a6 = a.reshape((nx, bs, ny, bs, nz, bs) + a.shape[3:])
        perm = (0, 2, 4, 1, 3, 5) + tuple(range(6, a6.ndim))
        return a6.transpose(perm)[coords[:, 0], coords[:, 1], coords[:, 2]]

    return cut(dense.tsdf), cut(dense.weight), cut(dense.color)


def _allocated_mask(vol: TSDFVolume) -> np.ndarray:
    """bool [X, Y, Z] over the dense grid: voxels in allocated blocks."""
    bs = vol.bs
    blk = np.zeros(tuple(int(x) for x in vol.dims), bool)
    c = vol.blocks()["coords"]
    blk[c[:, 0], c[:, 1], c[:, 2]] = True
    return np.repeat(np.repeat(np.repeat(blk, bs, 0), bs, 1), bs, 2)


def _compare(vol: TSDFVolume, dense: DenseTSDF, full: DenseTSDF) -> None:
    """`dense` was integrated on the voxels allocated at each frame (same values expected); `full` on all
    voxels (its near-surface voxels must all be allocated)."""
    dense, ref_full = dense, full
    b = vol.blocks()
    rt, rw, rc = _blocks_of_dense(vol, dense, b["coords"])
    np.testing.assert_allclose(b["tsdf"], rt, atol=2e-5)
    np.testing.assert_array_equal(b["weight"], rw)
    assert np.abs(b["color"].astype(int) - rc).max() <= 1
    # every voxel the reference saw near the surface lies in an allocated block
    nx, ny, nz = (int(x) for x in vol.dims)
    near = (ref_full.weight > 0) & (np.abs(ref_full.tsdf) < 0.99)
    near_blocks = near.reshape(nx, vol.bs, ny, vol.bs, nz, vol.bs).any(axis=(1, 3, 5))
    alloc = np.zeros_like(near_blocks)
    alloc[b["coords"][:, 0], b["coords"][:, 1], b["coords"][:, 2]] = True
    assert near_blocks.sum() > 10
    assert not (near_blocks & ~alloc).any()
    # and far fewer blocks than the dense grid
    assert len(b["coords"]) < 0.5 * near_blocks.size


def _compare_mesh_channel(vol: TSDFVolume, dense_mesh: DenseTSDF) -> None:
    """The mesh channel holds `dense_mesh` (integrated with the mesh truncation on the allocated voxels), and
    differs from the tracking channel."""
    b, t = vol.blocks("mesh"), vol.blocks("track")
    rt, rw, _ = _blocks_of_dense(vol, dense_mesh, b["coords"])
    np.testing.assert_allclose(b["tsdf"], rt, atol=2e-5)
    np.testing.assert_array_equal(b["weight"], rw)
    assert b["trunc"] == vol.config.mesh_trunc < t["trunc"]
    # the narrow band leaves voxels well behind the surface alone, the wide one fuses them
    assert ((t["weight"] > 0) & (b["weight"] == 0)).sum() > 1000


def _carve(f, cfg: VolumeConfig) -> tuple[np.ndarray, float]:
    """The reference's silhouette-carving argument for frame f (the mesh channel's)."""
    return carve_depth_np(f.depth, cfg.carve_px, cfg.depth_min, cfg.depth_max), cfg.carve_weight


def test_static_scene_matches_dense_reference():
    cfg = VolumeConfig(voxel_size=0.01, trunc_voxels=4, mesh_trunc_voxels=2)
    f0 = _sphere_frame(0)
    vol = TSDFVolume.from_frame(f0, cfg, backend="numba")
    dense, full, dmesh = _dense_like(vol), _dense_like(vol), _dense_like(vol)
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_rotvec([0.0, 0.08, 0.03]).as_matrix()
    pose[:3, 3] = [0.01, -0.005, 0.02]
    frames = [(f0, None), (_sphere_frame(1), None), (_sphere_frame(2, pose), pose)]
    for f, p in frames:
        vol.allocate(f, p)
        alloc = _allocated_mask(vol)
        vol.integrate(f, p)
        to_live = None if p is None else (lambda x, p=p: x @ p[:3, :3].T + p[:3, 3])
        integrate_dense(dense, f, cfg.trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, to_live, alloc)
        integrate_dense(full, f, cfg.trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, to_live)
        integrate_dense(dmesh, f, cfg.mesh_trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, to_live, alloc,
                        carve=_carve(f, cfg))
    _compare(vol, dense, full)
    _compare_mesh_channel(vol, dmesh)
    pts, nrm, _ = vol.surface_points()
    r = np.linalg.norm(pts - CENTER, axis=1)
    assert np.abs(r - RADIUS).mean() < 0.1 * cfg.voxel_size
    assert ((pts - CENTER) / r[:, None] * nrm).sum(1).mean() > 0.95


def _graph_scene():
    """Canonical sphere, a graph over it and a non-rigid graph motion per frame index."""
    v, f, c = sphere_mesh(CENTER, RADIUS, 4)
    g = build_graph(v.astype(np.float32), None, radius=0.05)
    rng = np.random.default_rng(3)
    rv = rng.normal(size=(g.num_nodes, 3))
    tv = rng.normal(size=(g.num_nodes, 3))

    def motion(i: int) -> GraphMotion:
        r = Rotation.from_rotvec(0.04 * i * rv).as_matrix().astype(np.float32)
        t = (np.array([0.01, -0.004, 0.006]) * i + 0.002 * i * tv).astype(np.float32)
        return GraphMotion(r, t)

    a, w = skinning(v.astype(np.float32), g, k=4, reach=0.3)

    def frame(i: int):
        m = motion(i)
        vl = warp_points_np(v, a, w, g.nodes, m.rotations, m.translations)
        d, col = render_mesh(vl, f, K, c)
        return make_frame(i, d, K, col)

    return g, motion, frame


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_warped_integration_matches_dense_reference(backend):
    cfg = VolumeConfig(voxel_size=0.01, trunc_voxels=4, mesh_trunc_voxels=2)
    g, motion, frame = _graph_scene()
    f0 = frame(0)
    vol = TSDFVolume.from_frame(f0, cfg, backend=backend, device="cpu")
    dense, full, dmesh = _dense_like(vol), _dense_like(vol), _dense_like(vol)
    vol.allocate(f0)
    integrate_dense(dense, f0, cfg.trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, None, _allocated_mask(vol))
    integrate_dense(dmesh, f0, cfg.mesh_trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, None, _allocated_mask(vol),
                    carve=_carve(f0, cfg))
    integrate_dense(full, f0, cfg.trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max)
    vol.integrate(f0)
    centers = dense.centers().reshape(-1, 3).astype(np.float32)
    a, w = default_skinning(centers, g, reach=vol.skin_reach(g))
    has = (a >= 0).any(1).reshape(dense.tsdf.shape)
    for i in (1, 2, 3):
        m = motion(i)
        f = frame(i)
        vol.allocate_warped(f, g, m)
        alloc = _allocated_mask(vol)
        check = (*vol.check_data, cfg.warp_check * cfg.trunc)
        vol.integrate_warped(f, g, m)
        warp = lambda x, m=m: warp_points_np(x, a, w, g.nodes, m.rotations, m.translations)  # noqa: E731
        integrate_dense(dense, f, cfg.trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, warp, has & alloc,
                        check=check)
        integrate_dense(full, f, cfg.trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, warp, has)
        # the mesh channel: its own band and the check scaled to it, within the tracking channel's check
        mcheck = (*check[:3], cfg.warp_check * cfg.mesh_trunc)
        integrate_dense(dmesh, f, cfg.mesh_trunc, cfg.max_weight, cfg.depth_min, cfg.depth_max, warp, has & alloc,
                        integrate_color=False, check=mcheck, check_wide=(cfg.trunc, check[3]), carve=_carve(f, cfg))
    _compare(vol, dense, full)
    _compare_mesh_channel(vol, dmesh)


def test_torch_path_equals_numba_path():
    cfg = VolumeConfig(voxel_size=0.01)
    g, motion, frame = _graph_scene()
    f0 = frame(0)
    vols = [TSDFVolume.from_frame(f0, cfg, backend=b, device="cpu") for b in ("numba", "torch")]
    for v in vols:
        v.integrate(f0)
    for i in (1, 2):
        for v in vols:
            v.integrate_warped(frame(i), g, motion(i))
    a, b = (v.blocks() for v in vols)
    ka = {tuple(x): i for i, x in enumerate(a["coords"])}
    kb = {tuple(x): i for i, x in enumerate(b["coords"])}
    assert set(ka) == set(kb)
    ia = [ka[x] for x in sorted(ka)]
    ib = [kb[x] for x in sorted(ka)]
    np.testing.assert_allclose(a["tsdf"][ia], b["tsdf"][ib], atol=1e-5)
    np.testing.assert_array_equal(a["weight"][ia], b["weight"][ib])
    ma, mb = (v.blocks("mesh") for v in vols)
    np.testing.assert_allclose(ma["tsdf"][ia], mb["tsdf"][ib], atol=1e-5)
    np.testing.assert_array_equal(ma["weight"][ia], mb["weight"][ib])
    assert (ma["weight"] != a["weight"]).any()
    assert np.abs(a["color"][ia].astype(int) - b["color"][ib]).max() <= 1
    pa, na, _ = vols[0].surface_points()
    pb, nb_, _ = vols[1].surface_points()
    assert len(pa) == len(pb) > 100
    oa, ob = np.lexsort(np.round(pa, 5).T), np.lexsort(np.round(pb, 5).T)
    np.testing.assert_allclose(pa[oa], pb[ob], atol=1e-5)
    np.testing.assert_allclose(na[oa], nb_[ob], atol=1e-4)


@pytest.mark.parametrize("warp_check", [0.0, 0.5])
def test_identity_warp_equals_rigid_integration(warp_check):
    cfg = VolumeConfig(voxel_size=0.01, warp_check=warp_check)
    f0 = _sphere_frame(0)
    rigid = TSDFVolume.from_frame(f0, cfg)
    warped = TSDFVolume.from_frame(f0, cfg)
    for v in (rigid, warped):
        v.integrate(f0)
    pts, nrm, _ = rigid.surface_points()
    g = build_graph(pts, nrm, radius=0.05)
    ident = GraphMotion.identity(g.num_nodes)
    for i in (1, 2):
        f = _sphere_frame(i)
        rigid.integrate(f)
        warped.integrate_warped(f, g, ident)
    a, b = rigid.blocks(), warped.blocks()
    np.testing.assert_array_equal(a["coords"], b["coords"])
    # voxels beyond the skinning reach of every node are not fused non-rigidly (they track no surface)
    skinned = (warped.anchors[: warped.num_blocks] >= 0).any(-1).reshape(a["tsdf"].shape)
    near = (a["weight"] > 0) & (np.abs(a["tsdf"]) < 0.99)
    assert near.sum() > 1000 and skinned[near].all()
    assert (b["weight"][~skinned] == a["weight"][~skinned].clip(max=1)).all()  # only the rigid first frame
    same = np.isclose(a["tsdf"], b["tsdf"], atol=1e-5) & (a["weight"] == b["weight"])
    if warp_check == 0:
        assert same[skinned].all()
    else:  # the consistency check may only drop a few observations at depth discontinuities (silhouette)
        assert (~same[skinned]).sum() < 0.002 * skinned.sum()


def test_known_graph_motion_is_integrated_back_consistently():
    """Frames of a sphere deformed by a known graph motion, fused through that motion, leave the canonical
    sphere in place (within one voxel)."""
    from fusion.meshing import extract_mesh

    cfg = VolumeConfig(voxel_size=0.01)
    g, motion, frame = _graph_scene()
    f0 = frame(0)
    vol = TSDFVolume.from_frame(f0, cfg)
    vol.integrate(f0)
    for i in range(1, 6):
        s = vol.integrate_warped(frame(i), g, motion(i))
        assert s["updated_voxels"] > 1000
    mesh = extract_mesh(vol)
    r = np.linalg.norm(mesh.vertices - CENTER, axis=1)
    assert mesh.num_faces > 500
    assert np.abs(r - RADIUS).max() < cfg.voxel_size
    assert np.abs(r - RADIUS).mean() < 0.2 * cfg.voxel_size


def test_incremental_reskin_equals_full_skinning():
    cfg = VolumeConfig(voxel_size=0.01)
    f0 = _sphere_frame(0)
    vol = TSDFVolume.from_frame(f0, cfg)
    vol.integrate(f0)
    pts, nrm, _ = vol.surface_points()
    full = build_graph(pts, nrm, radius=0.04)
    n0 = full.num_nodes // 2
    part = type(full)(full.nodes[:n0].copy(), full.edges[:n0], full.radius)
    vol.set_graph(part)
    n_re = vol.set_graph(full)
    assert 0 < n_re < vol.num_blocks * vol.nv
    c = vol.voxel_centers(np.arange(vol.num_blocks)).reshape(-1, 3)
    a, w = default_skinning(c, full, reach=vol.skin_reach(full))
    np.testing.assert_array_equal(vol.anchors[: vol.num_blocks].reshape(-1, 4), a)
    np.testing.assert_allclose(vol.skin_w[: vol.num_blocks].reshape(-1, 4), w, atol=1e-6)


def test_memory_guard_and_full_pool():
    cfg = VolumeConfig(voxel_size=0.001, memory_budget_gb=1.0)
    with pytest.raises(InputError, match="block index"):
        TSDFVolume(cfg, np.zeros(3), np.full(3, 10.0))  # 1000 m^3 at 1 mm
    with pytest.raises(InputError, match="max_blocks"):
        TSDFVolume(VolumeConfig(voxel_size=0.005, max_blocks=10**6), np.zeros(3), np.full(3, 2.0))
    f0 = _sphere_frame(0)
    with pytest.raises(InputError, match="GiB"):
        TSDFVolume.from_frame(f0, VolumeConfig(voxel_size=0.002, memory_budget_gb=0.01))
    # a full pool drops new blocks (counted) instead of failing
    vol = TSDFVolume(VolumeConfig(voxel_size=0.01, max_blocks=10), np.array([-0.3, -0.3, 0.3]), np.array([0.3, 0.3, 0.9]))
    vol.integrate(f0)
    assert vol.num_blocks == 10 and vol.dropped_blocks > 0
    # the target: a fully allocated 2 m^3 region at 5 mm fits in 2 GiB
    side = 2.0 ** (1 / 3)
    big = TSDFVolume(VolumeConfig(voxel_size=0.005), np.zeros(3), np.full(3, side))
    assert big.capacity * estimate_bytes(1) + big.index.nbytes < 2 * 2**30
    assert big.capacity >= np.prod(big.dims)


def test_no_valid_depth_is_an_input_error():
    f = make_frame(0, np.zeros((K.height, K.width), np.float32), K)
    with pytest.raises(InputError, match="no valid depth"):
        TSDFVolume.from_frame(f, VolumeConfig())
    f = make_frame(0, sphere_depth(K, CENTER, RADIUS), K)
    with pytest.raises(InputError, match="no valid depth"):
        TSDFVolume.from_frame(f, VolumeConfig(depth_min=1.0, depth_max=2.0))


@pytest.mark.parametrize("radius", [1.0, 1.5, 2.0, 3.0])
def test_carve_depth_matches_reference(radius):
    """The silhouette-carving map: nearest valid depth within `radius` pixels of every invalid pixel (the
    numba kernel against the brute-force reference), on a sphere's silhouette plus random holes and depth
    outside the valid range."""
    from fusion.tsdf.kernels_nb import carve_depth

    rng = np.random.default_rng(int(radius * 10))
    d = _sphere_frame(0).depth.copy()
    d[rng.random(d.shape) < 0.05] = 0.0
    d[rng.random(d.shape) < 0.01] = 5.0  # beyond depth_max: invalid
    got = carve_depth(np.ascontiguousarray(d, np.float32), radius, 0.1, 3.0)
    ref = carve_depth_np(d, radius, 0.1, 3.0)
    np.testing.assert_array_equal(got, ref)
    valid = (d > 0) & (d <= 3.0)
    assert not got[valid].any()  # valid pixels are never carved
    carved = got > 0
    assert carved.sum() > 100
    # a carved pixel is at most `radius` from valid depth, and takes one of the valid depths around it
    r = int(np.floor(radius))
    for y, x in zip(*np.nonzero(carved)):
        win = d[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1]
        assert got[y, x] in win[(win > 0) & (win <= 3.0)]


def test_carving_changes_only_the_mesh_channel():
    """Silhouette carving writes free space into the mesh channel beside the silhouette and nowhere else: the
    tracking channel is the same bit for bit with and without it, and every voxel carving changed is free
    space (+1) in front of the sphere, outside it."""
    frames = [_sphere_frame(0), _sphere_frame(1)]
    vols = {}
    for cp in (0.0, 2.0):
        cfg = VolumeConfig(voxel_size=0.01, trunc_voxels=4, mesh_trunc_voxels=2, carve_px=cp)
        vol = TSDFVolume.from_frame(frames[0], cfg, backend="numba")
        for f in frames:
            vol.integrate(f)
        vols[cp] = vol
    off, on = vols[0.0], vols[2.0]
    assert not off.config.carving and on.config.carving
    to, tn = off.blocks("track"), on.blocks("track")
    np.testing.assert_array_equal(to["coords"], tn["coords"])
    np.testing.assert_array_equal(to["tsdf"], tn["tsdf"])
    np.testing.assert_array_equal(to["weight"], tn["weight"])
    mo, mn = off.blocks("mesh"), on.blocks("mesh")
    changed = mo["weight"] != mn["weight"]
    assert changed.sum() > 50
    assert (mn["tsdf"][changed & (mo["weight"] == 0)] == 1.0).all()  # never-seen voxels become free space
    centers = on.voxel_centers(np.arange(on.num_blocks))  # [B, bs^3, 3], the blocks' voxel order
    r = np.linalg.norm(centers[changed.reshape(len(centers), -1)] - CENTER, axis=1)
    assert r.min() > RADIUS - 0.5 * on.voxel_size  # outside the sphere (up to half a voxel)
    with pytest.raises(InputError, match="carve_px"):
        VolumeConfig(carve_px=-1)


def _inverse_warp_np(live: np.ndarray, wn: np.ndarray, inv: np.ndarray, sigma: float, cell: float,
                     group: int) -> np.ndarray:
    """`kernels_nb.inverse_warp_points` spelled out: per group, the 4 nearest warped nodes among the grid
    cells around its middle point (the nearest node overall when none), blended inverse transforms."""
    lo = wn.min(0)
    dims = np.maximum(1, np.floor((wn.max(0) - lo) / cell).astype(int) + 1)
    ncell = np.minimum(dims - 1, ((wn - lo) / cell).astype(int))
    out = np.empty_like(live)
    for g in range(len(live) // group):
        q = live[g * group + group // 2].astype(np.float64)
        qc = np.floor((q - lo) / cell).astype(int)
        near = np.all(np.abs(ncell - qc) <= 1, axis=1)
        d2 = ((wn.astype(np.float64) - q) ** 2).sum(1)
        cand = np.flatnonzero(near)
        if len(cand) == 0:
            cand = np.array([np.argmin(d2)])
        cand = cand[np.argsort(d2[cand], kind="stable")][:4]
        w = np.exp(-(d2[cand] - d2[cand[0]]) / (2 * sigma * sigma))
        t = (w[:, None, None] * inv[cand].astype(np.float64)).sum(0) / w.sum()
        pts = live[g * group:(g + 1) * group].astype(np.float64)
        out[g * group:(g + 1) * group] = pts @ t[:, :3].T + t[:, 3]
    return out


def test_inverse_warp_points_matches_reference():
    """The live -> canonical inverse warp used by allocation (candidate lists per cell of the node grid and of
    a one-cell margin around it, the nearest node farther out) equals the plain search over the same grid
    cells."""
    from fusion.tsdf import kernels_nb as nb

    rng = np.random.default_rng(3)
    wn = rng.uniform([-0.3, -0.4, 0.8], [0.3, 0.4, 1.2], (90, 3)).astype(np.float32)
    rot = Rotation.from_rotvec(rng.normal(0, 0.2, (90, 3))).as_matrix()
    inv = np.concatenate([rot, rng.normal(0, 0.05, (90, 3, 1))], 2).astype(np.float32)
    # groups of 3 points along rays; some beyond the node grid (its margin, and the nearest node farther out)
    mid = rng.uniform([-0.5, -0.6, 0.6], [0.5, 0.6, 1.4], (400, 3))
    live = (mid[:, None, :] * np.array([0.97, 1.0, 1.03])[None, :, None]).reshape(-1, 3).astype(np.float32)
    got = nb.inverse_warp_points(live, wn, inv, 0.05, 0.1, 3)
    ref = _inverse_warp_np(live, wn, inv, 0.05, 0.1, 3)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    outside = np.any((mid < wn.min(0)) | (mid > wn.max(0)), axis=1)
    assert 20 < outside.sum() < 380  # both paths are exercised
