"""DiffuMatch spectral machinery: FM <-> p2p conversions, ZoomOut, FMReg, geodesic error."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from models.diffumatch import fmaps, spectral
from models.diffumatch.evaluation import geodesic_error_reference, geodesic_errors, geodesic_errors_on
from models.diffumatch.network import ShapeOps, fmreg, fmreg_reference


def _blob(subdiv: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric bumpy ellipsoid (no intrinsic symmetry to confuse the maps)."""
    s = trimesh.creation.icosphere(subdivisions=subdiv)
    v = np.asarray(s.vertices) * np.array([1.6, 1.0, 0.7])
    v = v * (1 + 0.25 * v[:, :1] + 0.15 * v[:, 1:2] ** 2 + 0.1 * v[:, 2:3] * v[:, :1])
    return v, np.asarray(s.faces)


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> spectral.SpectralShape:
    mp = pytest.MonkeyPatch()
    mp.setenv("NRSTUDIO_CACHE", str(tmp_path_factory.mktemp("cache")))
    v, f = _blob()
    yield spectral.prepare_shape(v, f, spectral.SpectralConfig(k=45))
    mp.undo()


def test_spectral_shape_is_unit_area_and_orthonormal(blob):
    assert blob.mass.sum() == pytest.approx(1.0, rel=1e-6)
    gram = blob.evecs.T @ (blob.mass[:, None] * blob.evecs)
    assert np.abs(gram - np.eye(gram.shape[0])).max() < 1e-6
    assert blob.evals[0] == pytest.approx(0.0, abs=1e-6) and np.all(np.diff(blob.evals) >= -1e-9)


def test_cache_roundtrip(blob, tmp_path):
    v, f = _blob()
    again = spectral.prepare_shape(v, f, spectral.SpectralConfig(k=45))  # from the module cache
    assert np.allclose(again.evecs, blob.evecs) and np.allclose(again.grad_x.toarray(), blob.grad_x.toarray())


def test_self_conversions_give_identity(blob):
    k = 30
    ident = np.arange(blob.n)
    C = fmaps.p2p_to_fm(ident, blob.evecs[:, :k], blob.evecs[:, :k], blob.mass)
    assert np.abs(C - np.eye(k)).max() < 1e-8
    C2 = fmaps.p2p_to_fm(ident, blob.evecs[:, :k], blob.evecs[:, :k])  # pseudo-inverse form
    assert np.abs(C2 - np.eye(k)).max() < 1e-8
    assert np.array_equal(fmaps.fm_to_p2p(np.eye(k), blob.evecs, blob.evecs), ident)


def test_fm_to_p2p_matches_reference(blob, rng):
    C = np.eye(20) + 0.3 * rng.normal(size=(20, 20))
    fast = fmaps.fm_to_p2p(C, blob.evecs, blob.evecs)
    ref = fmaps.fm_to_p2p_reference(C, blob.evecs, blob.evecs)
    assert np.mean(fast == ref) > 0.999  # ties aside, identical


def test_zoomout_does_not_increase_error_on_isometry(blob, rng):
    # shape 2 = shape 1 rigidly moved with its vertices shuffled: an exact isometry
    perm = rng.permutation(blob.n)
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    v2 = blob.verts[perm] @ R.T
    inv_faces = np.argsort(perm)[blob.faces]
    s2 = spectral.prepare_shape(v2, inv_faces, spectral.SpectralConfig(k=45, use_cache=False))
    gt_21 = perm  # vertex j of shape 2 is vertex perm[j] of shape 1
    noisy = gt_21.copy()
    bad = rng.random(blob.n) < 0.3
    noisy[bad] = rng.integers(0, blob.n, bad.sum())
    C0 = fmaps.p2p_to_fm(noisy, blob.evecs[:, :10], s2.evecs[:, :10], s2.mass)
    p0 = fmaps.fm_to_p2p(C0, blob.evecs, s2.evecs)
    C, p1 = fmaps.zoomout(C0, blob.evecs, s2.evecs, k_final=40, step=2, mass2=s2.mass)
    assert C.shape == (40, 40)
    oracle = spectral.GeodesicOracle(blob.verts, blob.faces)
    e = geodesic_errors(oracle.from_vertex, 1.0, gt_21, {"before": p0, "after": p1}, n_eval=None)
    assert e["after"]["mean"] <= e["before"]["mean"] + 1e-9
    assert e["after"]["mean"] < 0.05  # and it gets close to the true isometry


def test_geodesic_error_of_known_permutation_is_hand_value():
    # 3 x 3 planar grid, spacing 1: area 4, geodesics = Euclidean distances
    xs, ys = np.meshgrid(np.arange(3.0), np.arange(3.0), indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(9)], 1)
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=2)
    gt = np.arange(9)
    pred = gt.copy()
    pred[[0, 8]] = [8, 0]  # two opposite corners swapped: each 2*sqrt(2) away
    pred[[1, 2]] = [2, 1]  # two neighbours swapped: each 1 away
    hand = (2 * 2 * np.sqrt(2) + 2 * 1.0) / 9 / np.sqrt(4.0)
    assert geodesic_error_reference(dist, pred, gt, 4.0) == pytest.approx(hand)
    e = geodesic_errors(lambda i: dist[i], 4.0, gt, {"p": pred}, n_eval=None)
    assert e["p"]["mean"] == pytest.approx(hand)


def test_heat_method_geodesic_error_close_to_exact_on_a_plane():
    n = 21
    xs, ys = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    rng = np.random.default_rng(0)
    gt = np.arange(n * n)
    pred = rng.permutation(n * n)
    exact = np.linalg.norm(pts[pred] - pts[gt], axis=1).mean() / 1.0
    heat = geodesic_errors_on(pts, faces, 1.0, gt, {"p": pred}, n_eval=None)["p"]["mean"]
    assert heat == pytest.approx(exact, rel=0.05)


def test_fmreg_matches_numpy_reference(blob, rng):
    ops = ShapeOps.from_shape(blob, k=30)
    F1 = rng.normal(size=(blob.n, 12))
    F2 = F1 + 0.1 * rng.normal(size=F1.shape)
    mask = fmaps.laplacian_mask(blob.evals[:10], blob.evals[:10])
    C = fmreg(torch.tensor(F1, dtype=torch.float32), torch.tensor(F2, dtype=torch.float32), ops, ops, 10,
              torch.tensor(mask, dtype=torch.float32), 0.5).numpy()
    ref = fmreg_reference(F1, F2, blob.evecs[:, :10], blob.evecs[:, :10], blob.mass, blob.mass, mask, 0.5)
    assert np.abs(C - ref).max() < 1e-3 * max(1.0, np.abs(ref).max())
    # numpy closed form of fmaps agrees too
    A = blob.evecs[:, :10].T @ (blob.mass[:, None] * F1)
    B = blob.evecs[:, :10].T @ (blob.mass[:, None] * F2)
    assert np.allclose(fmaps.solve_fm(A, B, mask, 0.5), ref, atol=1e-8)


def test_laplacian_mask_is_zero_for_equal_frequencies(blob):
    m = fmaps.laplacian_mask(blob.evals[:20], blob.evals[:20])
    assert np.allclose(np.diag(m), 0.0) and (m[np.triu_indices(20, 3)] > 0).all()


def test_wks_hks_shapes_and_positivity(blob):
    w = spectral.wks(blob.evals, blob.evecs, 16)
    h = spectral.hks(blob.evals, blob.evecs, 8)
    assert w.shape == (blob.n, 16) and h.shape == (blob.n, 8)
    assert (w > 0).all() and (h > 0).all()


def test_bad_shape_raises_input_error():
    from fusion.errors import InputError

    with pytest.raises(InputError):
        spectral.prepare_shape(np.full((20, 3), np.nan), None)
    with pytest.raises(InputError):
        spectral.prepare_shape(np.zeros((5, 3)), None)
