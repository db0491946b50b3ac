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
from models.featmatch.data import (CATEGORIES, PART_NAMES, is_watertight, make_chair, make_shape, occupancy_samples,
                                   voxel_occupancy, winding_numbers, winding_numbers_reference)
from models.featmatch.matching import (DeformationCancelled, feature_match, gauss_newton_update,
                                       gauss_newton_update_reference, match_step)
from models.featmatch.model import ImplicitDecoder, features_reference_np, load_checkpoint, save_checkpoint
from models.featmatch.pipeline import DeformConfig, count_self_intersections, deform, edge_length_distortion
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
    for iters in (1, 3):
        cfg = MatchConfig(gn_iters=iters, reg=lam, search_radius=None)
        delta, res = match_step(feat, x, c0, c1, cfg)
        np.testing.assert_allclose(delta.numpy(), np.broadcast_to(closed, (V, 3)), atol=1e-9)
    # the update from a non-zero iterate still lands on the minimiser (exact GN on the quadratic)
    d0 = torch.as_tensor(rng.normal(size=(V, 3)))
    jac = A.expand(V, D, 3)
    r = F.linear(x + d0, A, c1) - F.linear(x, A, c0)
    upd = gauss_newton_update(jac, r, d0, lam)
    np.testing.assert_allclose(upd.numpy(), np.broadcast_to(closed, (V, 3)), atol=1e-9)
    np.testing.assert_allclose(upd.numpy(), gauss_newton_update_reference(jac.numpy(), r.numpy(), d0.numpy(), lam), atol=1e-9)


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
