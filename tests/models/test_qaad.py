"""NeuralQAAD: assignments, decoders (grouped convolutions vs a per-patch reference), training, .qaad files."""
import numpy as np
import pytest
import torch

from fusion.errors import InputError
from models.common.metrics import emkd
from models.qaad.assignment import (
    ReassignConfig,
    assignment_loss,
    greedy_assignment,
    is_permutation,
    reassignment_step,
    swap_delta,
)
from models.qaad.data import Dataset, Normalisation, load_dataset, resample
from models.qaad.format import FORMAT_VERSION, from_bytes, load_qaad, pack, save_qaad, to_bytes
from models.qaad.inference import CompressConfig, compress_clouds, config_for_baseline, decode_file
from models.qaad.model import ModelConfig, build_decoder, count_floats, sized_config
from models.qaad.training import Cancelled, TrainConfig, decode_numpy, fit


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def deforming_clouds(n_clouds: int, n_points: int, seed: int = 0) -> np.ndarray:
    """A small consistent dataset: an ellipsoid surface that stretches and bends over time, float [I, N, 3]."""
    rng = np.random.default_rng(seed)
    out = []
    for t in np.linspace(0, 1, n_clouds):
        v = rng.normal(size=(n_points, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        p = v * [1.0 + 0.5 * t, 0.5, 0.3]
        p[:, 1] += 0.4 * t * p[:, 0] ** 2  # bend
        out.append(p)
    return np.stack(out)


# ------------------------------------------------------------------------------------------ assignments


@pytest.mark.parametrize("split", ["median", "plane"])
def test_greedy_assignment_is_a_permutation_and_beats_random(rng, split):
    y = rng.normal(size=(900, 3))
    x = rng.normal(size=(900, 3)) * [1.5, 1.0, 0.5] + 0.3
    perm = greedy_assignment(y, x, leaf_size=64, split=split)
    assert is_permutation(perm, 900)
    assert assignment_loss(y, x, perm) < 0.5 * assignment_loss(y, x, rng.permutation(900))


def test_greedy_assignment_is_optimal_for_one_leaf(rng):
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    y, x = rng.random((80, 3)), rng.random((80, 3))
    perm = greedy_assignment(y, x, leaf_size=100)
    r, c = linear_sum_assignment(cdist(y, x, "sqeuclidean"))
    assert assignment_loss(y, x, perm) == pytest.approx(cdist(y, x, "sqeuclidean")[r, c].sum())


def test_swap_delta_matches_recomputed_loss(rng):
    y, x = rng.random((50, 3)), rng.random((50, 3))
    perm = rng.permutation(50)
    inv = np.argsort(perm)
    i, j = np.array([3, 7, 20]), np.array([11, 2, 40])
    d = swap_delta(y, x, perm, inv, i, j)
    for t in range(3):
        p2 = perm.copy()
        a, b = inv[j[t]], perm[i[t]]
        p2[i[t]], p2[a] = j[t], b
        assert d[t] == pytest.approx(assignment_loss(y, x, p2) - assignment_loss(y, x, perm))


def test_reassignment_step_never_increases_the_loss(rng):
    y = rng.normal(size=(2000, 3))
    x = y[rng.permutation(2000)] + rng.normal(scale=0.05, size=(2000, 3))
    perm = rng.permutation(2000)
    loss = assignment_loss(y, x, perm)
    start = loss
    for _ in range(15):
        perm, swaps = reassignment_step(y, x, perm, rng, ReassignConfig(subset=500, knn=4))
        new = assignment_loss(y, x, perm)
        assert new <= loss + 1e-9
        assert is_permutation(perm, 2000)
        loss = new
    assert loss < 0.5 * start


def test_reassignment_step_keeps_an_optimal_assignment(rng):
    y = rng.random((300, 3))
    x = y.copy()
    perm, swaps = reassignment_step(y, x, np.arange(300), rng)
    assert swaps == 0 and np.array_equal(perm, np.arange(300))


# --------------------------------------------------------------------------------------------- decoders


def test_grouped_heads_match_a_per_patch_reference(rng):
    cfg = ModelConfig("qaad", n_points=100, patches=5, latent=4, shared=(16, 8, 8, 6), head=(6, 3))
    model = build_decoder(cfg, 3)
    model.init_template(rng.normal(size=(200, 3)))
    with torch.no_grad():
        for conv in model.heads:
            conv.weight.normal_()
        out = model(torch.tensor([0, 2]))  # [2, K, M, 3]
        q = model.template()
        for b, inst in enumerate([0, 2]):
            z = model.latents[inst]
            for k in range(cfg.patches):
                h = torch.cat([z.expand(q.shape[1], -1), q[k]], 1)
                for lin in model.shared:
                    h = torch.nn.functional.selu(lin(h))
                for li, conv in enumerate(model.heads):
                    c_out = conv.out_channels // cfg.patches
                    w = conv.weight[k * c_out : (k + 1) * c_out, :, 0]
                    h = h @ w.T + conv.bias[k * c_out : (k + 1) * c_out]
                    if li < len(model.heads) - 1:
                        h = torch.nn.functional.selu(h)
                torch.testing.assert_close(out[b, k], q[k] + h, rtol=1e-5, atol=1e-5)


def test_selu_unscaled_matches_selu(rng):
    from models.qaad.model import SELU_ALPHA, SELU_SCALE, selu_unscaled_

    x = torch.from_numpy(rng.normal(scale=4.0, size=(7, 333)).astype(np.float32))
    x[0, :5] = torch.tensor([0.0, -0.0, -80.0, 80.0, 1e-30])
    got = selu_unscaled_(x.clone())
    torch.testing.assert_close(SELU_SCALE * (got - SELU_ALPHA), torch.nn.functional.selu(x), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("n_points, tile", [(100, 512), (130, 7), (64, 16)])
def test_fast_decode_matches_the_forward_pass(rng, n_points, tile):
    # N not a multiple of K (template tail cut), tiles smaller than a patch and not dividing it
    cfg = ModelConfig("qaad", n_points=n_points, patches=5, latent=4, shared=(16, 8, 8, 6), head=(6, 5, 3))
    model = build_decoder(cfg, 4)
    model.init_template(rng.normal(size=(200, 3)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        inst = torch.tensor([3, 0, 2])
        ref = model.decode_all(inst)
    fast = model.decode_clouds(inst, tile=tile)
    assert fast.shape == (3, n_points, 3) and fast.dtype == torch.float32
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_decode_file_uses_every_cloud_in_order(small_result):
    from models.qaad.inference import decode_file

    f = small_result[1].file
    model = f.build_model("cpu")
    with torch.no_grad():
        ref = f.normalisation.invert(model.decode_all(torch.arange(f.n_clouds)).numpy())
    np.testing.assert_allclose(decode_file(f), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(decode_file(f, instances=[2, 0]), ref[[2, 0]], rtol=1e-5, atol=1e-5)
    assert decode_file(f, instances=[]).shape == (0, f.config.n_points, 3)


def test_atlasnet_patches_are_independent(rng):
    cfg = ModelConfig("atlasnet", n_points=64, patches=4, latent=3, atlas_hidden=(5, 5, 5))
    model = build_decoder(cfg, 2)
    with torch.no_grad():
        model.mlp[-1].weight.normal_()
        before = model(torch.tensor([0, 1])).clone()
        model.mlp[0].weight[:5].add_(1.0)  # change patch 0's first layer only
        after = model(torch.tensor([0, 1]))
    assert not torch.allclose(before[:, 0], after[:, 0])
    torch.testing.assert_close(before[:, 1:], after[:, 1:])


@pytest.mark.parametrize("kind", ["qaad", "atlasnet"])
def test_float_count_and_sizing(kind):
    cfg = sized_config(24, 16384, 100.0, patches=16, latent=8, kind=kind)
    model = build_decoder(cfg, 24)
    assert model.n_stored_floats() == count_floats(cfg, 24)
    assert 24 * 16384 * 3 / count_floats(cfg, 24) >= 100.0
    out = model.decode_all(torch.tensor([0]))
    assert out.shape == (1, 16384, 3)


def test_baseline_gets_the_same_parameter_count():
    base, target = config_for_baseline(CompressConfig(ratio=100.0), 35, 16384)
    acfg = sized_config(35, 16384, 100.0, 16, 8, kind="atlasnet", match_floats=base.match_floats)
    assert abs(count_floats(acfg, 35) - target) / target < 0.03
    assert base.train.mode == "chamfer"


def test_sized_config_refuses_an_impossible_ratio():
    with pytest.raises(ValueError):
        sized_config(1, 50, 100.0)


# --------------------------------------------------------------------------------------------- training


def test_short_qaad_training_lowers_emkd():
    clouds = deforming_clouds(4, 512)
    norm = Normalisation.fit(list(clouds))
    x = norm.apply(clouds).astype(np.float32)
    cfg = ModelConfig("qaad", n_points=512, patches=8, latent=4, shared=(32, 16, 16, 8), head=(8, 3))
    model = build_decoder(cfg, 4)
    model.init_template(x[0])
    before = np.mean([emkd(y, t, leaf_size=128) for y, t in zip(decode_numpy(model, range(4)), x)])
    res = fit(model, x, TrainConfig(steps=150, batch=2, samples=256, lr=3e-3, device="cpu"))
    after = np.mean([emkd(y, t, leaf_size=128) for y, t in zip(decode_numpy(model, range(4)), x)])
    assert res.steps == 150 and res.swaps > 0
    assert res.last_loss < res.first_loss
    assert after < 0.8 * before
    assert all(is_permutation(p, 512) for p in res.perms)


def test_short_chamfer_training_lowers_its_loss():
    clouds = deforming_clouds(3, 256, seed=1)
    x = Normalisation.fit(list(clouds)).apply(clouds).astype(np.float32)
    cfg = ModelConfig("atlasnet", n_points=256, patches=4, latent=4, atlas_hidden=(12, 12, 12))
    model = build_decoder(cfg, 3)
    model.init_template(x[0])
    res = fit(model, x, TrainConfig(mode="chamfer", steps=100, batch=2, samples=128, lr=3e-3, device="cpu"))
    assert res.last_loss < res.first_loss and res.perms is None


def test_progress_and_cancel():
    ds = Dataset(deforming_clouds(3, 128), ["a", "b", "c"])
    seen = []
    cfg = CompressConfig(patches=4, latent=2, ratio=2.0, train=TrainConfig(steps=60, batch=2, samples=64, device="cpu"))
    res = compress_clouds(ds, cfg, progress=lambda f, m: seen.append(f))
    assert seen and all(0.0 <= f <= 1.0 for f in seen) and seen == sorted(seen) and seen[-1] == 1.0
    assert res.compression_ratio >= 2.0
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(Cancelled):
        compress_clouds(ds, cfg, cancel=cancel)
    import threading

    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        compress_clouds(ds, cfg, cancel=ev)


# --------------------------------------------------------------------------------------------- file format


@pytest.fixture(scope="module")
def small_result():
    torch.set_num_threads(1)
    ds = Dataset(deforming_clouds(3, 256, seed=2), ["c0.ply", "c1.ply", "c2.ply"])
    cfg = CompressConfig(patches=4, latent=4, ratio=2.0, train=TrainConfig(steps=80, batch=2, samples=128, device="cpu"))
    return ds, compress_clouds(ds, cfg)


def test_file_round_trip_decodes_the_same_clouds(small_result, tmp_path):
    ds, res = small_result
    path = tmp_path / "x.qaad"
    size = save_qaad(path, res.file)
    assert size == path.stat().st_size
    f = load_qaad(path)
    assert f.config == res.file.config and f.names == res.file.names and f.normalisation == res.file.normalisation
    a, b = decode_file(res.file), decode_file(f)
    np.testing.assert_array_equal(a, b)
    per = [emkd(a[i], ds.clouds[i]) for i in range(3)]
    np.testing.assert_allclose(per, res.per_cloud_emkd, rtol=1e-9)
    assert res.compression_ratio == pytest.approx(3 * 256 * 3 / f.stored_floats)


def test_fp16_file_is_smaller_and_close(small_result):
    ds, res = small_result
    model = res.file.build_model()
    f16 = pack(model, res.file.normalisation, res.file.names, fp16=True)
    assert len(to_bytes(f16)) < len(to_bytes(res.file))
    g = from_bytes(to_bytes(f16))
    assert g.dtype == "float16"
    a, b = decode_file(res.file), decode_file(g)
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_corrupt_or_truncated_files_are_refused(small_result, tmp_path):
    _, res = small_result
    data = to_bytes(res.file)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    with pytest.raises(InputError, match="checksum"):
        from_bytes(bytes(flipped), "f.qaad")
    with pytest.raises(InputError, match="truncated"):
        from_bytes(data[:-10], "f.qaad")
    with pytest.raises(InputError, match="truncated"):
        from_bytes(data[:20], "f.qaad")
    with pytest.raises(InputError, match="magic"):
        from_bytes(b"PK" + data[2:], "f.qaad")
    bad_version = bytearray(data)
    bad_version[8] = FORMAT_VERSION + 1
    with pytest.raises(InputError, match="version"):
        from_bytes(bytes(bad_version), "f.qaad")
    with pytest.raises(InputError, match="no such file"):
        load_qaad(tmp_path / "missing.qaad")


# ------------------------------------------------------------------------------------------------ data


def test_load_dataset_resamples_and_says_so(tmp_path, rng):
    np.save(tmp_path / "a.npy", rng.random((300, 3)))
    np.save(tmp_path / "b.npy", rng.random((200, 3)))
    ds = load_dataset([tmp_path / "a.npy", tmp_path / "b.npy"], n_points=None)
    assert ds.clouds.shape == (2, 16384, 3)
    assert any("resampled" in n for n in ds.notes)
    ds = load_dataset([tmp_path], n_points=250)
    assert ds.clouds.shape == (2, 250, 3) and "b.npy (200)" in ds.notes[0] and "a.npy (300)" in ds.notes[0]


def test_load_dataset_rejects_bad_clouds(tmp_path):
    bad = np.zeros((10, 3))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(InputError, match="NaN"):
        load_dataset([tmp_path / "nan.npy"])
    with pytest.raises(InputError, match="nan.npy|empty.npy"):
        load_dataset([tmp_path / "empty.npy"])
    with pytest.raises(InputError, match="no such file"):
        load_dataset([tmp_path / "nope.ply"])


def test_resample_up_and_down(rng):
    p = rng.random((10, 3))
    assert resample(p, 4, rng).shape == (4, 3)
    up = resample(p, 25, rng)
    assert up.shape == (25, 3) and np.array_equal(up[:10], p)
