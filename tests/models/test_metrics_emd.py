"""Augmented Chamfer, exact EMD, the torch auction and EM-kD (models/common/metrics.py)."""
import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from models.common.metrics import (
    AuctionConfig,
    augmented_chamfer,
    augmented_chamfer_torch,
    auction_assignment,
    auction_assignment_reference,
    chamfer_directional_sq,
    emd_auction,
    emd_exact,
    emd_exact_assignment,
    emkd,
    emkd_assignment,
    kd_leaf_pairs,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair(rng, n, shift=0.1):
    a = rng.normal(size=(n, 3)) * [1.0, 0.6, 0.3]
    b = rng.normal(size=(n, 3)) * [0.9, 0.7, 0.3] + shift
    return a, b


def test_exact_emd_of_a_translated_cloud_is_the_translation(rng):
    a = rng.random((50, 3)) * 0.1
    t = np.array([3.0, 0.0, 4.0])  # far larger than the cloud: the identity matching is optimal
    val, perm = emd_exact_assignment(a, a + t)
    assert val == pytest.approx(5.0)
    assert np.array_equal(perm, np.arange(50))


def test_emkd_is_an_upper_bound_of_exact_emd_on_random_pairs(rng):
    for trial in range(6):
        a, b = _pair(rng, 257 + 40 * trial, shift=0.05 * trial)
        exact = emd_exact(a, b)
        for leaf in (16, 64, 128):
            assert emkd(a, b, leaf_size=leaf) >= exact - 1e-12
        # one leaf: EM-kD is the exact EMD
        assert emkd(a, b, leaf_size=len(a)) == pytest.approx(exact, rel=1e-12)


def test_emkd_zero_for_identical_clouds_in_any_order(rng):
    a = rng.random((1000, 3))
    assert emkd(a, a, leaf_size=64) == 0.0
    assert emkd(a, a[rng.permutation(1000)], leaf_size=64) == 0.0


def test_emkd_assignment_is_a_bijection_with_that_cost(rng):
    a, b = _pair(rng, 700)
    val, perm = emkd_assignment(a, b, leaf_size=100)
    assert np.array_equal(np.sort(perm), np.arange(700))
    assert val == pytest.approx(np.linalg.norm(a - b[perm], axis=1).mean())


def test_kd_leaf_pairs_partition_both_clouds_into_equal_leaves(rng):
    a, b = _pair(rng, 1000)
    leaves = kd_leaf_pairs(a, b, leaf_size=100)
    assert all(len(ia) == len(ib) <= 100 for ia, ib in leaves)
    assert np.array_equal(np.sort(np.concatenate([ia for ia, _ in leaves])), np.arange(1000))
    assert np.array_equal(np.sort(np.concatenate([ib for _, ib in leaves])), np.arange(1000))


def test_unequal_sizes_are_rejected(rng):
    with pytest.raises(ValueError):
        emkd(rng.random((10, 3)), rng.random((11, 3)))
    with pytest.raises(ValueError):
        emd_exact(rng.random((10, 3)), rng.random((9, 3)))


def test_auction_agrees_with_scipy_within_its_eps_bound(rng):
    for n, eps_rel in ((40, 1e-2), (120, 1e-3), (150, 3e-3)):
        a, b = _pair(rng, n)
        exact = emd_exact(a, b)
        res = emd_auction(a, b, AuctionConfig(eps_rel=eps_rel), device="cpu")
        assert res.converged
        assert np.array_equal(np.sort(res.perm), np.arange(n))
        assert res.eps == pytest.approx(eps_rel * (cdist(a, b).max() - cdist(a, b).min()))
        assert exact - 1e-9 <= res.mean_cost <= exact + res.eps + 1e-9
        assert res.mean_cost == pytest.approx(np.linalg.norm(a - b[res.perm], axis=1).mean())


def test_auction_on_float32_and_integer_costs(rng):
    c = rng.integers(0, 50, size=(30, 30))
    res = auction_assignment(c, AuctionConfig(eps_rel=1e-3), device="cpu")
    from scipy.optimize import linear_sum_assignment

    r, k = linear_sum_assignment(c)
    assert res.mean_cost <= c[r, k].mean() + res.eps + 1e-9
    c32 = torch.as_tensor(rng.random((64, 64)), dtype=torch.float32)
    res32 = auction_assignment(c32, device="cpu")
    r, k = linear_sum_assignment(c32.double().numpy())
    assert res32.mean_cost <= c32.double().numpy()[r, k].mean() + res32.eps + 1e-5


def test_auction_is_always_complete_even_when_stopped_early(rng):
    a, b = _pair(rng, 80)
    res = auction_assignment(cdist(a, b), AuctionConfig(max_rounds=1), device="cpu")
    assert not res.converged
    assert np.array_equal(np.sort(res.perm), np.arange(80))


def test_numpy_reference_auction_within_n_eps_of_optimum(rng):
    a, b = _pair(rng, 60)
    c = cdist(a, b)
    eps = 1e-3
    perm = auction_assignment_reference(c, eps)
    assert np.array_equal(np.sort(perm), np.arange(60))
    assert emd_exact(a, b) - 1e-12 <= c[np.arange(60), perm].mean() <= emd_exact(a, b) + eps + 1e-12
    torch_res = auction_assignment(c, AuctionConfig(eps_rel=eps / (c.max() - c.min())), device="cpu")
    assert abs(torch_res.mean_cost - c[np.arange(60), perm].mean()) <= eps + 1e-9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_auction_on_cuda_matches_scipy(rng):
    a, b = _pair(rng, 500)
    res = emd_auction(a, b, device="cuda")
    assert emd_exact(a, b) - 1e-5 <= res.mean_cost <= emd_exact(a, b) + res.eps + 1e-5


def test_emkd_with_auction_leaves_is_close_to_scipy_leaves(rng):
    a, b = _pair(rng, 300)
    v_scipy = emkd(a, b, leaf_size=100)
    v_auc = emkd(a, b, leaf_size=100, solver="auction", device="cpu")
    assert v_scipy - 1e-9 <= v_auc <= v_scipy + 1e-2 * (cdist(a, b).max())


def test_augmented_chamfer_is_the_larger_direction(rng):
    a = rng.random((200, 3))
    b = np.concatenate([a[:100], rng.random((5, 3)) + 5.0])  # b misses half of a and has far outliers
    d_ab, d_ba = chamfer_directional_sq(a, b), chamfer_directional_sq(b, a)
    assert d_ba > d_ab > 0
    assert augmented_chamfer(a, b) == pytest.approx(d_ba)
    assert augmented_chamfer(a, a) == 0.0


def test_augmented_chamfer_torch_matches_numpy_and_has_gradients(rng):
    a = rng.random((2, 150, 3))
    b = rng.random((2, 120, 3))
    ta = torch.tensor(a, requires_grad=True)
    val = augmented_chamfer_torch(ta, torch.tensor(b))
    for i in range(2):
        assert float(val[i].detach()) == pytest.approx(augmented_chamfer(a[i], b[i]), rel=1e-10)
    val.sum().backward()
    assert ta.grad is not None and torch.isfinite(ta.grad).all() and ta.grad.abs().sum() > 0
    # numeric gradient check on one coordinate
    h = 1e-6
    a2 = a.copy()
    a2[0, 3, 1] += h
    num = (augmented_chamfer(a2[0], b[0]) - augmented_chamfer(a[0], b[0])) / h
    assert float(ta.grad[0, 3, 1]) == pytest.approx(num, rel=1e-3, abs=1e-6)
