"""Implicit feature matching: Gauss-Newton maths, feature Jacobians, continuity, identity, training, data."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import jacfwd, vmap

from fusion.errors import InputError
from models.common.io import Mesh
from models.featmatch.baselines import nearest_projection, nearest_projection_reference
from models.featmatch.config import PRESETS, FitConfig, MatchConfig, ModelConfig
from models.featmatch.data import (CATEGORIES, PART_NAMES, inside_watertight, is_watertight, make_chair, make_shape,
                                   occupancy_samples, voxel_occupancy, winding_numbers, winding_numbers_reference)
from models.featmatch.matching import (DeformationCancelled, JacfwdFeatures, constrain_step, feature_match,
                                       gauss_newton_update, gauss_newton_update_reference, gauss_newton_update_t,
                                       match_step, path_crossings, path_crossings_reference)
from models.featmatch.model import ImplicitDecoder, features_reference_np, load_checkpoint, save_checkpoint
from models.featmatch.pipeline import (DeformConfig, count_self_intersections, deform, edge_length_distortion,
                                       flipped_faces, introduced_self_intersections, new_pairs, self_intersecting_pairs,
                                       self_intersecting_pairs_reference)
from models.featmatch.fitting import best_code
from models.featmatch.training import train


def _decoder(seed: int = 0, latent: int = 8, hidden: tuple[int, ...] = (24, 24, 24, 24, 24, 24)) -> ImplicitDecoder:
    torch.manual_seed(seed)
    return ImplicitDecoder(ModelConfig(latent_dim=latent, hidden=hidden)).eval()


def test_gauss_newton_step_matches_closed_form_on_linear_features():
    rng = np.random.default_rng(0)
    V, D, lam = 7, 5, 0.01
    A = torch.as_tensor(rng.normal(size=(D, 3)))
    c0 = torch.as_tensor(rng.normal(size=D))
    c1 = torch.as_tensor(rng.normal(size=D))
    x = torch.as_tensor(rng.uniform(-0.5, 0.5, size=(V, 3)))

    def feat(p, c):  # Φ(x, z) = A x + c(z): linear in x
        return F.linear(p, A, c)

    # closed form of argmin_δ ‖A(x+δ) + c1 - (A x + c0)‖² + λ‖δ‖²
    closed = -np.linalg.solve(A.numpy().T @ A.numpy() + lam * np.eye(3), A.numpy().T @ (c1 - c0).numpy())
    fj = JacfwdFeatures(feat)
    for iters in (1, 3):
        cfg = MatchConfig(gn_iters=iters, reg=lam, search_radius=None)
        delta, f_new, res = match_step(fj, x, fj.features(x, c0), c1, cfg)
        np.testing.assert_allclose(delta.numpy(), np.broadcast_to(closed, (V, 3)), atol=1e-9)
        np.testing.assert_allclose(f_new.numpy(), F.linear(x + delta, A, c1).numpy(), atol=1e-12)
        np.testing.assert_allclose(res.numpy(), (f_new - F.linear(x, A, c0)).norm(dim=-1).numpy(), atol=1e-12)
    # the update from a non-zero iterate still lands on the minimiser (exact GN on the quadratic)
    d0 = torch.as_tensor(rng.normal(size=(V, 3)))
    jac = A.expand(V, D, 3)
    r = F.linear(x + d0, A, c1) - F.linear(x, A, c0)
    upd = gauss_newton_update(jac, r, d0, lam)
    np.testing.assert_allclose(upd.numpy(), np.broadcast_to(closed, (V, 3)), atol=1e-9)
    np.testing.assert_allclose(upd.numpy(), gauss_newton_update_reference(jac.numpy(), r.numpy(), d0.numpy(), lam), atol=1e-9)
    upd_t = gauss_newton_update_t(jac.permute(2, 0, 1), r, d0, lam)  # direction-major Jacobians
    np.testing.assert_allclose(upd_t.numpy(), upd.numpy(), atol=1e-9)


def test_gauss_newton_update_matches_numpy_reference_on_random_jacobians():
    rng = np.random.default_rng(1)
    jac = rng.normal(size=(20, 9, 3))
    res = rng.normal(size=(20, 9))
    d = rng.normal(size=(20, 3))
    got = gauss_newton_update(torch.as_tensor(jac), torch.as_tensor(res), torch.as_tensor(d), 0.05).numpy()
    np.testing.assert_allclose(got, gauss_newton_update_reference(jac, res, d, 0.05), rtol=1e-6, atol=1e-8)


def test_features_and_jacobians_match_numpy_reference():
    dec = _decoder(1).double()
    layers, weights = (3, 6), (1.0, 0.1)
    feat = dec.feature_fn(layers, weights)
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.5, 0.5, size=(6, 3))
    z = rng.normal(size=8) * 0.3
    c = dec.latent_bias(torch.as_tensor(z))
    got = vmap(feat, in_dims=(0, None))(torch.as_tensor(x), c).detach().numpy()
    params = [(l.weight.detach().numpy(), l.bias.detach().numpy()) for l in dec.layers]
    ref = features_reference_np(params, dec.cfg.leaky_slope, x, z, layers, weights)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    jac = vmap(jacfwd(feat, argnums=0), in_dims=(0, None))(torch.as_tensor(x), c).detach().numpy()
    h = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        fd = (features_reference_np(params, dec.cfg.leaky_slope, x + e, z, layers, weights)
              - features_reference_np(params, dec.cfg.leaky_slope, x - e, z, layers, weights)) / (2 * h)
        np.testing.assert_allclose(jac[:, :, k], fd, rtol=1e-4, atol=1e-6)
    # the batched forward-mode kernel equals jacfwd (and so the finite differences above)
    fj = dec.feature_jacobian_fn(layers, weights)
    c = c.detach()
    f2, jt = fj.features_and_jacobian(torch.as_tensor(x), c)
    np.testing.assert_allclose(f2.numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fj.features(torch.as_tensor(x), c).numpy(), ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jt.permute(1, 2, 0).numpy(), jac, rtol=1e-10, atol=1e-12)
    for lay in ((1,), (2, 7), (7,)):  # first layer, the logit layer (no activation)
        f3, jt3 = dec.feature_jacobian_fn(lay, (1.0,) * len(lay)).features_and_jacobian(torch.as_tensor(x), c)
        ff = dec.feature_fn(lay, (1.0,) * len(lay))
        np.testing.assert_allclose(jt3.permute(1, 2, 0).numpy(),
                                   vmap(jacfwd(ff, argnums=0), in_dims=(0, None))(torch.as_tensor(x), c).numpy(), atol=1e-12)
        np.testing.assert_allclose(f3.numpy(), features_reference_np(params, dec.cfg.leaky_slope, x, z, lay, (1.0,) * len(lay)),
                                   atol=1e-12)
    # the decoder's logits equal the reference's last layer
    logit = dec(torch.as_tensor(x), torch.as_tensor(z)).detach().numpy()
    ref_logit = features_reference_np(params, dec.cfg.leaky_slope, x, z, (7,), (1.0,))[:, 0]
    np.testing.assert_allclose(logit, ref_logit, rtol=1e-10, atol=1e-12)


def test_trajectories_are_continuous_within_the_search_radius():
    dec = _decoder(3)
    rng = np.random.default_rng(3)
    v = rng.uniform(-0.4, 0.4, size=(200, 3))
    z0, z1 = torch.randn(8) * 2, torch.randn(8) * 2
    radius = 0.004
    res = feature_match(dec, v, z0, z1, MatchConfig(steps=8, gn_iters=2, reg=1e-4, search_radius=radius), keep_trajectory=True)
    traj = res.trajectory
    assert traj.shape == (9, 200, 3)
    np.testing.assert_allclose(traj[0], v, atol=1e-6)
    steps = np.linalg.norm(np.diff(traj, axis=0), axis=-1)
    assert np.isfinite(traj).all()
    assert steps.max() <= radius * (1 + 1e-4)
    assert steps.max() > 0.5 * radius  # the vertices do move
    np.testing.assert_allclose(res.vertices, traj[-1])
    assert res.max_step == pytest.approx(steps.max(), rel=1e-4)


def test_analytic_and_jacfwd_jacobians_give_the_same_deformation():
    dec = _decoder(5)
    v = np.random.default_rng(5).uniform(-0.4, 0.4, size=(30, 3))
    z0, z1 = torch.randn(8), torch.randn(8)
    cfg = MatchConfig(steps=2, gn_iters=2, chunk=12)  # several chunks
    a = feature_match(dec, v, z0, z1, cfg)
    b = feature_match(dec, v, z0, z1, replace(cfg, jacobian="jacfwd"))
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-5)
    assert np.abs(a.vertices - v).max() > 1e-3


def _translating_decoder(seed: int) -> ImplicitDecoder:
    """Φ(x, z) = g(x − z) for a random MLP g: a known implicit family whose shapes are translates."""
    dec = _decoder(seed, latent=3, hidden=(32,) * 6).double()
    with torch.no_grad():
        dec.layers[0].weight[:, 3:] = -dec.layers[0].weight[:, :3]
    return dec


def test_known_translation_family_moves_every_vertex_by_the_translation():
    # every feature of x at z equals that of x + (z' − z) at z', so the exact matches are x + Δz
    dec = _translating_decoder(6)
    v = np.random.default_rng(6).uniform(-0.3, 0.3, size=(60, 3))
    z0 = torch.zeros(3, dtype=torch.float64)
    z1 = torch.tensor([0.12, -0.05, 0.08], dtype=torch.float64)
    res = feature_match(dec, v, z0, z1, MatchConfig(steps=20, gn_iters=3, reg=1e-4))
    err = np.linalg.norm(res.vertices - (v + z1.numpy()), axis=1)
    # Gauss-Newton on a piecewise-linear (LeakyReLU) feature map: nearly every vertex lands exactly
    assert np.median(err) < 1e-4 and (err < 1e-3).mean() >= 0.95
    assert res.residual < 1e-2


def test_identical_codes_leave_vertices_in_place_and_cancel_works():
    dec = _decoder(4)
    v = np.random.default_rng(4).uniform(-0.4, 0.4, size=(100, 3))
    z = torch.randn(8)
    seen: list[float] = []
    res = feature_match(dec, v, z, z.clone(), MatchConfig(steps=5), progress=lambda f, m: seen.append(f))
    np.testing.assert_allclose(res.vertices, v, atol=1e-6)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    with pytest.raises(DeformationCancelled):
        feature_match(dec, v, z, -z, MatchConfig(steps=5), cancel=lambda: len(seen) > 6 or seen.append(0.0) is not None)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.set_num_threads(2)
    cfg = PRESETS["tiny"]
    dec, codes, hist = train(cfg, "cpu")
    path = tmp_path_factory.mktemp("fm") / "tiny.pt"
    save_checkpoint(path, dec, codes, {"loss_final": hist["loss_final"]})
    return path, hist


def test_tiny_training_lowers_the_loss_and_checkpoint_roundtrips(tiny_model):
    path, hist = tiny_model
    assert hist["loss_final"] < 0.9 * hist["loss_first"]
    dec, codes, meta = load_checkpoint(path)
    assert codes.shape == (PRESETS["tiny"].n_shapes, PRESETS["tiny"].model.latent_dim)
    assert meta["loss_final"] == pytest.approx(hist["loss_final"])
    assert not any(p.requires_grad for p in dec.parameters())


def test_bad_checkpoint_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError):
        load_checkpoint(bad)
    with pytest.raises(InputError):
        load_checkpoint(tmp_path / "missing.pt")


def test_identical_source_and_target_leave_the_mesh_unchanged(tiny_model):
    dec, codes, _ = load_checkpoint(tiny_model[0])
    mesh, _ = make_shape("humanoid", np.random.default_rng(5)).mesh(20)
    mesh = Mesh(mesh.vertices * 3.0 + 1.0, mesh.faces)  # arbitrary units: normalised inside
    cfg = DeformConfig(match=MatchConfig(steps=4, gn_iters=2), fit=FitConfig(iters=15, points=512))
    out = deform(mesh, Mesh(mesh.vertices.copy(), mesh.faces.copy()), dec, codes, cfg)
    np.testing.assert_allclose(out.vertices, mesh.vertices, atol=1e-5)
    assert out.report["edge_length_distortion"] < 1e-5
    assert out.report["self_intersections_introduced"] == 0


def test_procedural_shapes_have_parts_and_exact_occupancy():
    rng = np.random.default_rng(6)
    for cat in CATEGORIES:
        s = make_shape(cat, rng)
        mesh, labels = s.mesh(28)
        assert is_watertight(mesh)
        assert mesh.vertices.min() >= -0.5 and mesh.vertices.max() <= 0.5
        assert labels.min() >= 0 and labels.max() < len(PART_NAMES[cat])
        q = rng.uniform(-0.5, 0.5, size=(2000, 3))
        occ = s.occupancy(q)
        inside_any = np.zeros(len(q), bool)
        for prim, _ in s.prims:  # occupancy = union of the primitives' inside tests
            inside_any |= prim.sdf(q / s.scale + s.center) < 0
        np.testing.assert_array_equal(occ > 0.5, inside_any)
    arm = make_chair(rng, arms=True)
    plain = make_chair(rng, arms=False)
    assert 3 in {lab for _, lab in arm.prims} and 3 not in {lab for _, lab in plain.prims}


def test_winding_numbers_match_reference_and_occupancy():
    s = make_shape("animal", np.random.default_rng(7))
    mesh, _ = s.mesh(24)
    q = np.random.default_rng(8).uniform(-0.5, 0.5, size=(150, 3))
    w = winding_numbers(q, mesh.vertices, mesh.faces)
    np.testing.assert_allclose(w, winding_numbers_reference(q, mesh.vertices, mesh.faces), atol=1e-9)
    # the fast ray-parity inside test used for fitting agrees with the winding numbers on a closed mesh
    q2 = np.random.default_rng(9).uniform(-0.5, 0.5, size=(3000, 3))
    inside = inside_watertight(q2, mesh.vertices, mesh.faces)
    w2 = winding_numbers(q2, mesh.vertices, mesh.faces)
    clear = np.abs(w2 - 0.5) > 0.1
    assert (inside[clear] == (w2[clear] > 0.5)).mean() > 0.999 and inside.any()
    sd = s.sdf(q)
    far = np.abs(sd) > 0.03  # away from the marching-cubes error
    np.testing.assert_array_equal((w > 0.5)[far], (sd < 0)[far])


def test_cloud_occupancy_by_voxel_flood_fill():
    rng = np.random.default_rng(9)
    d = rng.normal(size=(20000, 3))
    sphere = 0.35 * d / np.linalg.norm(d, axis=1, keepdims=True)
    lab, _ = voxel_occupancy(sphere, 32)
    assert lab[16, 16, 16] == 1 and lab[0, 0, 0] == 0
    pts, occ = occupancy_samples(Mesh(sphere, np.zeros((0, 3), np.int64)), replace(PRESETS["tiny"].samples, voxel_res=32), rng)
    r = np.linalg.norm(pts, axis=1)
    assert (occ[r < 0.25] == 1).all() and (occ[r > 0.45] == 0).all()
    assert (occ == 0.5).any()


def test_nearest_projection_matches_reference():
    mesh, _ = make_shape("chair", np.random.default_rng(10)).mesh(16)
    q = np.random.default_rng(11).uniform(-0.5, 0.5, size=(25, 3))
    np.testing.assert_allclose(nearest_projection(q, mesh), nearest_projection_reference(q, mesh), atol=1e-5)


def test_edge_distortion_and_self_intersection_counts():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    f = np.array([[0, 1, 2]])
    assert edge_length_distortion(v, 2 * v, f) == pytest.approx(1.0)
    # two triangles piercing each other, sharing no vertex
    v2 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -0.5], [0.3, 0.2, 0.5], [0.2, 0.3, 0.5]], float)
    f2 = np.array([[0, 1, 2], [3, 4, 5]])
    assert count_self_intersections(v2, f2) == 1
    assert count_self_intersections(v2 + np.array([[0, 0, 0]] * 3 + [[5, 0, 0]] * 3), f2) == 0


def test_self_intersection_pairs_match_reference_and_introduced_counts_new_pairs_only():
    # a sphere-like closed mesh with a band of vertices pushed through the opposite side
    mesh, _ = make_shape("animal", np.random.default_rng(12)).mesh(14)
    v0 = mesh.vertices
    rng = np.random.default_rng(13)
    v1 = v0 + rng.normal(scale=0.03, size=v0.shape)  # a rough jitter makes faces cross
    fast = self_intersecting_pairs(v1, mesh.faces)
    ref = self_intersecting_pairs_reference(v1, mesh.faces)
    assert len(fast) > 0
    np.testing.assert_array_equal(fast, ref)
    assert count_self_intersections(v1, mesh.faces) == len(fast)
    assert introduced_self_intersections(v0, v1, mesh.faces) == len(fast) - len(self_intersecting_pairs(v0, mesh.faces))
    # same count before and after but different pairs: all the "after" pairs are new
    v2 = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -0.5], [0.3, 0.2, 0.5], [0.2, 0.3, 0.5],
                   [5, 0, 0], [6, 0, 0], [5, 1, 0]], float)
    f2 = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    moved = v2.copy()
    moved[6:] = v2[3:6]  # face 2 now pierces face 0 ...
    moved[3:6] += np.array([10.0, 0, 0])  # ... and face 1 left it
    assert count_self_intersections(v2, f2) == count_self_intersections(moved, f2) == 1
    assert introduced_self_intersections(v2, moved, f2) == 1
    assert introduced_self_intersections(v2, v2, f2) == 0


def test_flipped_faces_counts_reversed_normals():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    f = np.array([[0, 1, 2], [1, 3, 2]])
    folded = v.copy()
    folded[3] = [-0.5, -0.5, 0.1]  # the second face folds over the first
    assert flipped_faces(v, v, f) == 0
    assert flipped_faces(v, folded, f) == 1


def test_best_code_picks_the_code_that_explains_the_samples():
    dec = _decoder(14)
    codes = torch.randn(6, 8, generator=torch.Generator().manual_seed(14))
    x = np.random.default_rng(14).uniform(-0.5, 0.5, size=(400, 3)).astype(np.float32)
    with torch.no_grad():
        dec.layers[-1].bias -= dec(torch.as_tensor(x), codes[4]).median()  # put the surface inside the box
        occ = (dec(torch.as_tensor(x), codes[4]) > 0).float().numpy()  # samples of the shape of code 4
    assert 0 < occ.mean() < 1
    np.testing.assert_array_equal(best_code(dec, x, occ, codes).numpy(), codes[4].numpy())


def _grid_sheet(n: int, lo: float, hi: float, height) -> tuple[np.ndarray, np.ndarray]:
    """An n × n vertex grid over [lo, hi]² at z = height(x, y), triangulated: (float [n², 3], int [2(n-1)², 3])."""
    u = np.linspace(lo, hi, n)
    gx, gy = np.meshgrid(u, u, indexing="ij")
    v = np.stack([gx.ravel(), gy.ravel(), height(gx.ravel(), gy.ravel())], 1)
    i = np.arange(n - 1)
    gi, gj = np.meshgrid(i, i, indexing="ij")
    a = (gi * n + gj).ravel()
    f = np.concatenate([np.stack([a, a + n, a + 1], 1), np.stack([a + 1, a + n, a + n + 1], 1)])
    return v, f


def test_constrained_steps_keep_a_falling_sheet_from_passing_through_another():
    # sheet A: z = 0 over [-0.5, 0.5]²; sheet B, tilted, above it inside A's footprint, falls 0.2 in 10 steps:
    # unconstrained, B cuts through A on the way and ends entirely below it
    va, fa = _grid_sheet(9, -0.5, 0.5, lambda x, y: 0.0 * x)
    vb, fb = _grid_sheet(7, -0.3, 0.3, lambda x, y: 0.07 + 0.05 * (x + 0.3) + 0.01 * y)
    vb[:, :2] += (0.0123, 0.0371)  # B's vertices off A's edges (no grazing hits)
    v0 = np.concatenate([va, vb])
    f = np.concatenate([fa, fb + len(va)])
    b = np.arange(len(va), len(v0))
    step = np.zeros_like(v0)
    step[b, 2] = -0.02
    p0 = self_intersecting_pairs(v0, f)
    assert len(p0) == 0
    x, crossed = v0.copy(), 0
    for _ in range(10):  # unconstrained
        x = x + step
        crossed = max(crossed, len(self_intersecting_pairs(x, f)))
    assert crossed > 0 and (x[b, 2] < 0).all()  # it cut through A and swapped sides
    # a whole step from just above A to just below it: no end point intersects, the paths do
    lo, hi = v0.copy(), v0.copy()
    lo[b, 2] = vb[:, 2] - 0.06  # B in [0.007, 0.043]
    hi[b, 2] = vb[:, 2] - 0.11  # B in [-0.043, -0.007]
    assert len(self_intersecting_pairs(lo, f)) == 0 and len(self_intersecting_pairs(hi, f)) == 0
    cr = path_crossings(lo, hi, f)
    assert len(cr) > 0 and set(cr[:, 0]) <= set(b) and (cr[:, 1] < len(fa)).all()
    np.testing.assert_array_equal(cr, path_crossings_reference(lo, hi, f))
    x, prev = v0.copy(), p0
    for _ in range(10):  # end points only: B tunnels through A in one step
        sc = constrain_step(x, step, f, prev, shrink_tries=3, paths=False)
        x, prev = sc.vertices, sc.pairs
    assert len(self_intersecting_pairs(x, f)) == 0 and (x[b, 2] < 0).all()
    x, prev, held = v0.copy(), p0, 0
    for _ in range(10):  # constrained
        sc = constrain_step(x, step, f, prev, shrink_tries=3)
        assert new_pairs(sc.pairs, prev) == 0
        np.testing.assert_array_equal(sc.pairs, self_intersecting_pairs(sc.vertices, f))  # incremental = full
        np.testing.assert_allclose(sc.vertices, x + sc.scale[:, None] * step)
        assert ((sc.scale >= 0) & (sc.scale <= 1)).all()
        x, prev, held = sc.vertices, sc.pairs, held + int((sc.scale == 0).sum())
    assert held > 0
    # nothing introduced, by Open3D and by the independent numpy check; B stayed above A but did come down
    assert len(self_intersecting_pairs(x, f)) == 0
    assert len(self_intersecting_pairs_reference(x, f)) == 0
    assert (x[b, 2] > 0).all()
    assert x[b, 2].max() < 0.02  # from 0.067-0.103 down onto A
    np.testing.assert_array_equal(x[: len(va)], va)  # A never moved


def test_feature_matching_with_faces_introduces_no_intersections():
    # two parallel sheets 0.04 apart pushed through each other by a random implicit family: the free
    # deformation introduces intersecting pairs, the constrained one none (Open3D and numpy check)
    torch.manual_seed(0)
    dec = ImplicitDecoder(ModelConfig(latent_dim=8, hidden=(24,) * 6)).eval()
    va, fa = _grid_sheet(8, -0.3, 0.3, lambda x, y: 0.0 * x - 0.02)
    vb, fb = _grid_sheet(8, -0.3, 0.3, lambda x, y: 0.0 * x + 0.02)
    v = np.concatenate([va, vb])
    f = np.concatenate([fa, fb + len(va)])
    z0, z1 = torch.randn(8), torch.randn(8)
    cfg = MatchConfig(steps=10, gn_iters=2, reg=1e-3)
    free = feature_match(dec, v, z0, z1, cfg)
    assert introduced_self_intersections(v, free.vertices, f) > 0
    assert free.shrunk_vertex_steps == 0 and free.constraint_checks == 0
    same = feature_match(dec, v, z0, z1, replace(cfg, no_new_intersections=False), faces=f)
    np.testing.assert_array_equal(same.vertices, free.vertices)  # the option off = the free deformation
    for ref in ("intended", "actual"):
        con = feature_match(dec, v, z0, z1, replace(cfg, blocked_reference=ref), faces=f, keep_trajectory=True)
        assert introduced_self_intersections(v, con.vertices, f) == 0
        assert len(self_intersecting_pairs_reference(con.vertices, f)) == 0
        assert con.shrunk_vertex_steps > 0 and con.constraint_checks > cfg.steps
        steps = np.linalg.norm(np.diff(con.trajectory, axis=0), axis=-1)
        assert steps.max() <= cfg.search_radius * (1 + 1e-4)  # still continuous
        # the unblocked vertices still follow the features: most of the motion is kept
        assert np.linalg.norm(con.vertices - v, axis=1).mean() > 0.5 * np.linalg.norm(free.vertices - v, axis=1).mean()
