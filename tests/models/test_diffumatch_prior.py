"""DiffuMatch prior: denoiser training lowers its loss; an SDS step moves a noisy map toward the data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.diffumatch.prior import Denoiser, PriorConfig, load_prior, random_signs, save_prior, sds_loss
from models.diffumatch.training import TrainConfig, train_prior

K = 10


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models: one torch thread avoids thread contention on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _signed_diagonals(n: int, rng: np.random.Generator) -> np.ndarray:
    """A toy 'functional map' distribution: diag(+-1) with small off-diagonal noise, [n, K, K]."""
    d = rng.choice([-1.0, 1.0], size=(n, K))
    d[:, 0] = 1.0
    return (np.eye(K)[None] * d[:, None, :] + 0.02 * rng.normal(size=(n, K, K))).astype(np.float32)


def _dist_to_data(C: torch.Tensor) -> float:
    """Distance of C [K, K] to the nearest signed diagonal matrix."""
    off = C - torch.diag(torch.diagonal(C))
    return float(torch.sqrt((off**2).sum() + ((torch.diagonal(C).abs() - 1) ** 2).sum()))


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    maps = _signed_diagonals(400, np.random.default_rng(0))
    cfg = TrainConfig(steps=300, batch=32, lr=3e-3, dim=32, depth=2, val_fraction=0.1)
    model, summary = train_prior(cfg, "cpu", maps=maps)
    return model, summary


def test_denoiser_training_lowers_loss(trained):
    _, s = trained
    assert s["train_loss_last"] < 0.7 * s["train_loss_first"]
    assert s["val_loss_final_ema"] < 0.7 * s["val_loss_init"]


def test_sds_step_moves_noisy_map_toward_training_distribution(trained):
    model, _ = trained
    rng = np.random.default_rng(5)
    clean = torch.tensor(_signed_diagonals(1, rng)[0])
    C = (clean + 0.25 * torch.randn(K, K, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    before = _dist_to_data(C.detach())
    opt = torch.optim.SGD([C], lr=0.1)
    gen = torch.Generator().manual_seed(2)
    for _ in range(30):
        opt.zero_grad()
        sds_loss(model, C, sigma_min=0.05, sigma_max=0.4, n_samples=8, generator=gen).backward()
        opt.step()
    after = _dist_to_data(C.detach())
    assert after < 0.6 * before


def test_sds_gradient_is_c_minus_denoised():
    model = Denoiser(PriorConfig(k=K, dim=16, depth=1)).eval()
    C = torch.randn(K, K, requires_grad=True)
    sds_loss(model, C, 0.1, 0.1, n_samples=1, generator=torch.Generator().manual_seed(0)).backward()
    g = torch.Generator().manual_seed(0)
    torch.rand(1, generator=g)
    noise = torch.randn(1, K, K, generator=g)
    with torch.no_grad():
        D = model(C.detach()[None] + 0.1 * noise, torch.tensor([0.1]))[0]
    assert torch.allclose(C.grad, C.detach() - D, atol=1e-5)


def test_prior_mask_and_checkpoint_roundtrip(trained, tmp_path):
    model, _ = trained
    m = model.mask
    assert m.shape == (K, K) and torch.isfinite(m).all()
    # the toy prior keeps off-diagonal entries small: they get the larger penalty
    assert m[~torch.eye(K, dtype=bool)].mean() > 5 * torch.diagonal(m).mean()
    save_prior(tmp_path / "p.pt", model, {"note": "test"})
    again = load_prior(tmp_path / "p.pt")
    x = torch.randn(3, K, K)
    s = torch.full((3,), 0.3)
    with torch.no_grad():
        assert torch.allclose(again(x, s), model(x, s), atol=1e-6)


def test_random_signs_preserve_magnitudes():
    x = torch.randn(4, K, K)
    y = random_signs(x, torch.Generator().manual_seed(0))
    assert torch.allclose(y.abs(), x.abs()) and torch.allclose(y[:, 0, 0], x[:, 0, 0])


def test_load_prior_missing_file_is_input_error(tmp_path):
    from fusion.errors import InputError

    with pytest.raises(InputError):
        load_prior(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError):
        load_prior(tmp_path / "bad.pt")
