"""LPDC networks: shapes, one batched displacement call for all frames, the ODE solver, MISE vs a plain grid."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.lpdc.config import GenerationConfig, ModelConfig, ODEConfig
from models.lpdc.generation import extract_dense, extract_mise, mesh_from_values, reconstruct
from models.lpdc.model import (DisplacementField, LPDCNet, OFlowNet, SpatioTemporalEncoder, integrate_backward,
                               integrate_forward)

SMALL = ModelConfig(c_dim=16, enc_hidden=16, enc_blocks=2, dec_hidden=16, dec_blocks=2, motion_hidden=16,
                    motion_blocks=2, n_frames=5)


def _inputs(B=2, T=5, N=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, N, 3, generator=g) - 0.5, torch.linspace(0, 1, T).expand(B, T).contiguous()


def test_encoder_shapes_and_per_frame_codes():
    enc = SpatioTemporalEncoder(c_dim=16, hidden=8, n_blocks=3)
    x, t = _inputs()
    s, z = enc(x, t)
    assert s.shape == (2, 5, 16) and z.shape == (2, 5, 16)
    # a frame's spatial code depends only on that frame's points; the fused code sees the whole sequence
    x2 = x.clone()
    x2[:, 3] += 0.1
    s2, z2 = enc(x2, t)
    assert torch.allclose(s[:, :3], s2[:, :3]) and not torch.allclose(s[:, 3], s2[:, 3])
    assert not torch.allclose(z[:, 0], z2[:, 0])


@pytest.mark.parametrize("cls", ["lpdc", "ode"])
def test_model_shapes(cls):
    torch.manual_seed(0)
    m = LPDCNet(SMALL) if cls == "lpdc" else OFlowNet(SMALL, ODEConfig(substeps=1))
    x, t = _inputs()
    s, z = m.encode(x, t)
    assert m.occupancy_logits(torch.rand(2, 33, 3), s[:, 0]).shape == (2, 33)
    fwd = m.to_frames(torch.rand(2, 7, 3), z, t)
    assert fwd.shape == (2, 5, 7, 3)
    back = m.to_t0(torch.rand(2, 4, 9, 3), z, t)
    assert back.shape == (2, 4, 9, 3)


def test_displacement_is_zero_at_init_and_batched_equals_per_frame():
    torch.manual_seed(0)
    g = DisplacementField(c_dim=8, hidden=16, n_blocks=2)
    p = torch.rand(2, 11, 3)
    z0, zk = torch.randn(2, 8), torch.randn(2, 6, 8)
    assert torch.count_nonzero(g(p, z0, zk)) == 0  # zero-initialised output layer: identity motion at start
    torch.nn.init.normal_(g.fc_out.weight)
    batched = g(p, z0, zk)
    g.block_rows = 12  # inference walks the points in cache-sized blocks: same result
    with torch.no_grad():
        assert torch.allclose(g(p, z0, zk), batched, atol=1e-6)
    # slow reference: the concatenated input p ⊕ z0 ⊕ zk through an explicit first linear layer, frame by frame
    for k in range(6):
        pair = torch.cat([z0, zk[:, k]], dim=-1)
        w_in = torch.cat([g.fc_p.weight, g.fc_z.weight], dim=1)  # [H, 3 + 2C]
        x = torch.cat([p, pair[:, None].expand(2, 11, 16)], dim=-1)
        net = x @ w_in.T + g.fc_p.bias
        for fc_c, blk in zip(g.fc_c, g.blocks):
            net = blk(net + fc_c(pair)[:, None])
        ref = g.fc_out(torch.relu(net))
        assert torch.allclose(batched[:, k], ref, atol=1e-5)


def test_all_frames_displaced_in_one_batched_call():
    torch.manual_seed(0)
    m = LPDCNet(SMALL).eval()
    calls = []
    m.displacement.register_forward_hook(lambda mod, inp, out: calls.append(out.shape))
    x, t = _inputs(B=1, T=5, N=64)
    gen = GenerationConfig(resolution0=8, upsampling_steps=0, threshold=0.5)
    # a decoder bias that makes a sphere-like field so that a mesh exists
    with torch.no_grad():
        m.decoder.fc_out.bias.fill_(1.0)
    verts = np.array([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.3], [0.1, 0.1, 0.1]])
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    rec = reconstruct(m, x[0].numpy(), t[0].numpy(), gen, "cpu", t0_mesh=(verts, faces))
    assert len(calls) == 1 and calls[0] == (1, 5, 4, 3)
    assert rec.vertices.shape == (5, 4, 3)
    np.testing.assert_allclose(rec.vertices[0], verts, atol=1e-6)  # zero-init g: frame 0 is the t0 mesh


class _Rotation(torch.nn.Module):
    """dp/dt = w x p (rotation about z with angular speed w); exact solution known."""

    def __init__(self, w: float):
        super().__init__()
        self.w = w

    def forward(self, p, t, c):
        return torch.stack([-self.w * p[..., 1], self.w * p[..., 0], torch.zeros_like(p[..., 2])], dim=-1)


def _rotate(p, a):
    c, s = np.cos(a), np.sin(a)
    return np.stack([c * p[..., 0] - s * p[..., 1], s * p[..., 0] + c * p[..., 1], p[..., 2]], axis=-1)


def test_velocity_field_blocked_inference_equals_dense():
    from models.lpdc.model import VelocityField

    torch.manual_seed(0)
    v = VelocityField(c_dim=8, hidden=16, n_blocks=2)
    torch.nn.init.normal_(v.fc_out.weight)
    p, t, c = torch.rand(2, 3, 50, 3), torch.rand(2), torch.randn(2, 8)
    dense = v(p, t, c)
    v.block_rows = 20
    with torch.no_grad():
        assert torch.allclose(v(p, t, c), dense, atol=1e-6)


def test_rk4_matches_exact_rotation_and_backward_inverts_forward():
    p0 = torch.tensor([[[0.3, 0.0, 0.1], [0.0, -0.2, 0.0]]], dtype=torch.float64)
    times = torch.tensor([[0.0, 0.2, 0.7, 1.0]], dtype=torch.float64)  # uneven
    field = _Rotation(2.0)
    fwd = integrate_forward(field, p0, times, torch.zeros(1, 1), ODEConfig("rk4", 4))
    exact = np.stack([_rotate(p0[0].numpy(), 2.0 * float(t)) for t in times[0]])
    np.testing.assert_allclose(fwd[0].numpy(), exact, atol=5e-5)  # RK4: error ~ (w h)^5 / 120 a step
    euler = integrate_forward(field, p0, times, torch.zeros(1, 1), ODEConfig("euler", 4))
    assert np.abs(euler[0].numpy() - exact).max() > 5e-3  # Euler is visibly less accurate
    back = integrate_backward(field, fwd[:, 1:], times, torch.zeros(1, 1), ODEConfig("rk4", 4))
    np.testing.assert_allclose(back[0].numpy(), np.repeat(p0.numpy(), 3, axis=0), atol=5e-5)


def _sphere_logits(p: np.ndarray) -> np.ndarray:
    return 20.0 * (0.3 - np.linalg.norm(p - np.array([0.05, -0.02, 0.01]), axis=1))


def test_mise_matches_plain_grid_on_a_sphere():
    thr = float(np.log(0.3 / 0.7))
    dense = extract_dense(_sphere_logits, 32, 0.55)
    mise, n_eval = extract_mise(_sphere_logits, 8, 2, thr, 0.55)
    assert n_eval < dense.size / 2  # evaluations only near the surface
    v1, f1 = mesh_from_values(dense, thr, 0.55)
    v2, f2 = mesh_from_values(mise, thr, 0.55)
    assert len(f1) == len(f2) and np.allclose(np.sort(v1, axis=0), np.sort(v2, axis=0), atol=1e-9)
    r = np.linalg.norm(v2 - np.array([0.05, -0.02, 0.01]), axis=1)
    iso = 0.3 - thr / 20.0
    assert np.abs(r - iso).max() < 0.01
    # outward orientation: positive enclosed volume
    tri = v2[f2]
    assert np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() > 0


def test_cbn_eval_folding_matches_batch_norm():
    from models.lpdc.model import CBatchNorm

    torch.manual_seed(0)
    cbn = CBatchNorm(6, 10)
    torch.nn.init.normal_(cbn.gamma.weight)
    torch.nn.init.normal_(cbn.beta.weight)
    for _ in range(3):  # some running statistics
        cbn(torch.randn(2, 30, 10) * 3 + 1, torch.randn(2, 6))
    cbn.eval()
    x, c = torch.randn(3, 20, 10), torch.randn(3, 6)
    ref = cbn.gamma(c)[:, None] * cbn.bn(x.reshape(-1, 10)).reshape(3, 20, 10) + cbn.beta(c)[:, None]
    assert torch.allclose(cbn(x, c), ref, atol=1e-5)


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Random weights and biases everywhere (the zero-initialised layers too), so that every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_folded_decoder_matches_the_module_in_eval_mode():
    from models.lpdc.model import OccupancyDecoder

    dec = OccupancyDecoder(c_dim=8, hidden=16, n_blocks=3)
    _randomise(dec)
    for _ in range(3):  # non-trivial running statistics
        dec(torch.randn(2, 40, 3), torch.randn(2, 8))
    assert dec.folded(torch.randn(1, 8)) is None  # training mode: batch statistics, nothing to fold
    dec.eval()
    c, p = torch.randn(1, 8), torch.rand(1, 300, 3) - 0.5
    folded = dec.folded(c)
    folded.block_rows = 64  # several blocks, the last one partial
    with torch.no_grad():
        ref = dec(p, c)[0]
        assert torch.allclose(folded(p[0]), ref, atol=1e-5)
        assert folded(p[0, :0]).shape == (0,)


def test_motion_fields_inference_path_matches_autograd_path():
    """Without autograd g and v take a rearranged, cache-blocked path: same values as the module path."""
    from models.lpdc.model import VelocityField

    g = DisplacementField(c_dim=8, hidden=16, n_blocks=3)
    v = VelocityField(c_dim=8, hidden=16, n_blocks=3)
    _randomise(g, 1)
    _randomise(v, 2)
    g.block_rows = v.block_rows = 50
    p, z0, zk = torch.rand(2, 120, 3), torch.randn(2, 8), torch.randn(2, 6, 8)
    pk, t, c = torch.rand(2, 6, 40, 3), torch.rand(2), torch.randn(2, 8)
    ref = (g(p, z0, zk), g(pk, zk, zk.flip(1)), v(pk, t, c), v(p, t, c))  # autograd on: the module path
    assert ref[0].abs().max() > 0.1  # not a trivial field
    with torch.no_grad():
        out = (g(p, z0, zk), g(pk, zk, zk.flip(1)), v(pk, t, c), v(p, t, c))
    for a, b in zip(out, ref):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_straddling_cells_matches_reference():
    from models.lpdc.generation import _straddling_cells, _straddling_cells_reference

    vals = np.random.default_rng(0).normal(size=(7, 6, 5))
    fast = _straddling_cells(vals, 0.3)
    assert fast.shape == (6, 5, 4) and fast.any() and not fast.all()
    assert np.array_equal(fast, _straddling_cells_reference(vals, 0.3))


def _ball_and_thin_tube(p: np.ndarray) -> np.ndarray:
    """Logits of a ball with a thin wavy tube (radius 0.03, thinner than the coarse cells) attached."""
    ball = 0.2 - np.linalg.norm(p, axis=1)
    y0 = 0.06 * np.sin(p[:, 0] * 20)
    tube = 0.03 - np.sqrt((p[:, 1] - y0) ** 2 + (p[:, 2] - 0.013) ** 2)
    tube = np.where((p[:, 0] > 0) & (p[:, 0] < 0.5), tube, -1.0)
    return 30.0 * np.maximum(ball, tube)


def test_mise_surface_following_recovers_thin_parts_plain_mise_misses():
    dense = extract_dense(_ball_and_thin_tube, 64, 0.55)
    plain, n_plain = extract_mise(_ball_and_thin_tube, 8, 3, 0.0, 0.55, follow=False)
    follow, n_follow = extract_mise(_ball_and_thin_tube, 8, 3, 0.0, 0.55, follow=True)
    dilated, n_dilated = extract_mise(_ball_and_thin_tube, 8, 3, 0.0, 0.55, follow=False, dilation=1)
    assert ((plain > 0) != (dense > 0)).sum() > 20  # Occupancy Networks' rule alone loses pieces of the tube
    assert np.array_equal(follow > 0, dense > 0) and np.array_equal(dilated > 0, dense > 0)
    assert n_follow < n_dilated < dense.size / 4  # following costs far fewer evaluations than dilating
    v1, f1 = mesh_from_values(dense, 0.0, 0.55)
    v2, f2 = mesh_from_values(follow, 0.0, 0.55)
    assert len(f1) == len(f2) and np.allclose(np.sort(v1, axis=0), np.sort(v2, axis=0), atol=1e-9)


def test_reconstruct_with_folded_decoder_equals_module_path(monkeypatch):
    from models.lpdc.model import OccupancyDecoder

    torch.manual_seed(0)
    m = LPDCNet(SMALL)
    _randomise(m, 3)
    x, t = _inputs(B=2, T=5, N=64)
    m.train()
    with torch.no_grad():
        m.occupancy_logits(torch.rand(2, 200, 3) - 0.5, torch.randn(2, 16))  # running statistics
        m.decoder.fc_out.bias.fill_(0.0)
    m.eval()
    gen = GenerationConfig(resolution0=8, upsampling_steps=1, threshold=0.5)
    # a field with a surface inside the box: shift the output so that about half the grid is inside
    with torch.no_grad():
        s, _ = m.encode(x[:1], t[:1])
        q = torch.rand(1, 2000, 3) * 1.1 - 0.55
        m.decoder.fc_out.bias.sub_(m.occupancy_logits(q, s[:, 0]).median())
    fast = reconstruct(m, x[0].numpy(), t[0].numpy(), gen, "cpu")
    monkeypatch.setattr(OccupancyDecoder, "folded", lambda self, c: None)
    slow = reconstruct(m, x[0].numpy(), t[0].numpy(), gen, "cpu")
    assert fast.vertices.shape[1] > 0 and fast.n_decoder_evals == slow.n_decoder_evals
    assert fast.faces.shape == slow.faces.shape
    np.testing.assert_allclose(fast.vertices, slow.vertices, atol=1e-4)


def test_mise_levels_keep_the_final_resolution():
    from models.lpdc.generation import mise_levels

    assert mise_levels(GenerationConfig(resolution0=32, upsampling_steps=2, coarsest=16)) == (16, 3)
    assert mise_levels(GenerationConfig(resolution0=32, upsampling_steps=2, coarsest=0)) == (32, 2)
    assert mise_levels(GenerationConfig(resolution0=64, upsampling_steps=1, coarsest=16)) == (16, 3)
    assert mise_levels(GenerationConfig(resolution0=24, upsampling_steps=1, coarsest=16)) == (24, 1)
    assert mise_levels(GenerationConfig(resolution0=32, upsampling_steps=0, coarsest=16)) == (32, 0)  # plain grid
