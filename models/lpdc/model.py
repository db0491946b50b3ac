"""LPDC-Net (Tang et al., CVPR 2021) and an Occupancy-Flow-style ODE baseline (Niemeyer et al., ICCV 2019).

Shapes and units (unit scale, see config.py): B = batch, T = frames, N = input points per frame,
P = query points, C = code size, H = hidden width. Points are float32 [.., 3]; times float32 in [0, 1].

* `SpatioTemporalEncoder`: a spatial PointNet-ResNet per frame on (x, y, z) and a space-time
  PointNet-ResNet on (x, y, z, t) points (max-pooled per frame and over the whole sequence between
  ResNet blocks), fused into one code per frame: spatial codes s [B, T, C] and fused codes z [B, T, C].
* `OccupancyDecoder`: Occupancy Networks' conditional-batch-norm decoder, logits of occupancy at t0
  given s_0.
* `DisplacementField`: the shared MLP g(p ⊕ z_src ⊕ z_dst) = p_dst - p_src. All target frames go
  through ONE batched call (points broadcast against the [B, K] grid of frame pairs). The input
  concatenation feeds a linear layer, written as W_p p + W_z [z_src, z_dst] (identical maths, the
  code half computed once per frame pair instead of once per point); as in the reference code the
  pair code is also added before every ResNet block.
* `VelocityField` + `integrate`: the baseline's v(p, t; c) integrated by a fixed-step solver.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fusion.device import torch_device
from models.lpdc.config import ModelConfig, ODEConfig


def _plain_inference(x: torch.Tensor) -> bool:
    """True when no autograd and no autocast is active and x is float32: the folded inference paths apply."""
    return (not torch.is_grad_enabled() and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.is_autocast_enabled("cuda"))


def _resnet_stack_inference(x: torch.Tensor, offset: torch.Tensor, fc_c: nn.ModuleList, cond: torch.Tensor,
                            blocks: nn.ModuleList, fc_out: nn.Linear) -> torch.Tensor:
    """Inference of the motion fields' block stack, fewer memory passes than the module calls.

    Computes fc_out(relu(net_n)) with net_0 = x + offset and net_{i+1} = blk_i(net_i + fc_c_i(cond)),
    blk(u) = u + fc_1(relu(fc_0(relu(u)))), where x [..., R, H] holds the per-point part and offset
    and fc_c_i(cond) (shaped to broadcast against x, e.g. [..., 1, H]) the per-item constants. Each
    block's fc_1 bias is carried into the next block's constant and fc_1 accumulates into the residual
    stream in place: 4 elementwise passes per block instead of 6. Returns [..., R, out].
    """
    shape = torch.broadcast_shapes(x.shape, offset.shape)
    H = shape[-1]
    e = offset
    u = None
    for i, (fc, blk) in enumerate(zip(fc_c, blocks)):
        e = e + fc(cond)
        u = (x + e) if u is None else u.add_(e)  # u: [..., R, H], a fresh contiguous tensor at the first block
        u = u.expand(shape).contiguous() if u.shape != shape else u
        u2 = u.view(-1, H)
        h = torch.relu(u2)
        u2.addmm_(torch.addmm(blk.fc_0.bias, h, blk.fc_0.weight.T).relu_(), blk.fc_1.weight.T)
        e = blk.fc_1.bias.expand_as(e)
    x = x if u is None else u
    return fc_out(torch.relu(x + e))


class ResnetBlockFC(nn.Module):
    """Fully connected ResNet block: x + fc_1(relu(fc_0(relu(x)))), linear shortcut when sizes differ."""

    def __init__(self, size_in: int, size_out: int | None = None, size_h: int | None = None) -> None:
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = min(size_in, size_out) if size_h is None else size_h
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = None if size_in == size_out else nn.Linear(size_in, size_out, bias=False)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., size_in] -> [..., size_out]."""
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        xs = x if self.shortcut is None else self.shortcut(x)
        return xs + dx


class SpatioTemporalEncoder(nn.Module):
    """Spatio-temporal PointNet-ResNet encoder (LPDC's `SpatioTemporalResnetPointnet`)."""

    def __init__(self, c_dim: int = 128, hidden: int = 128, n_blocks: int = 5) -> None:
        super().__init__()
        if n_blocks < 1:
            raise ValueError("n_blocks must be >= 1")
        h = hidden
        self.spatial_fc_pos = nn.Linear(3, 2 * h)
        self.spatial_blocks = nn.ModuleList([ResnetBlockFC(2 * h, h) for _ in range(n_blocks)])
        self.spatial_fc_c = nn.Linear(h, c_dim)
        self.temporal_fc_pos = nn.Linear(4, 3 * h)
        self.temporal_blocks = nn.ModuleList([ResnetBlockFC(3 * h, h) for _ in range(n_blocks)])
        self.temporal_fc_c = nn.Linear(h, c_dim)
        self.fc_fuse = nn.Linear(2 * c_dim, c_dim)

    def spatial(self, points: torch.Tensor) -> torch.Tensor:
        """The spatial branch alone: points [B, T, N, 3] -> spatial codes s [B, T, C] (frame by frame)."""
        net = self.spatial_fc_pos(points)
        for i, blk in enumerate(self.spatial_blocks):
            net = blk(net)
            if i < len(self.spatial_blocks) - 1:
                net = torch.cat([net, net.max(dim=2, keepdim=True).values.expand_as(net)], dim=-1)
        return self.spatial_fc_c(F.relu(net.max(dim=2).values))

    def forward(self, points: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [B, T, N, 3], times [B, T] -> (spatial codes s [B, T, C], fused codes z [B, T, C])."""
        B, T, N, _ = points.shape
        # spatial branch: per frame, max-pool over the frame's points between blocks
        s = self.spatial(points)
        # space-time branch on (x, y, z, t): pool per frame and over the whole sequence
        xt = torch.cat([points, times[:, :, None, None].expand(B, T, N, 1).to(points.dtype)], dim=-1)
        net = self.temporal_fc_pos(xt)
        for i, blk in enumerate(self.temporal_blocks):
            net = blk(net)
            if i < len(self.temporal_blocks) - 1:
                pf = net.max(dim=2, keepdim=True).values
                ps = pf.max(dim=1, keepdim=True).values
                net = torch.cat([net, pf.expand_as(net), ps.expand_as(net)], dim=-1)
        zt = self.temporal_fc_c(F.relu(net.max(dim=2).values))
        z = self.fc_fuse(torch.cat([s, zt], dim=-1))
        return s, z


class CBatchNorm(nn.Module):
    """Conditional batch norm: BN without affine over all points of the batch, then gamma(c), beta(c)."""

    def __init__(self, c_dim: int, f_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(f_dim, affine=False)
        self.gamma = nn.Linear(c_dim, f_dim)
        self.beta = nn.Linear(c_dim, f_dim)
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)

    def folded(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Eval-mode scale and shift for codes c [M, C]: (a [M, F], b [M, F]) with cbn(x, c) = x * a + b;
        None in training mode or without running statistics."""
        if self.training or not self.bn.track_running_stats or self.bn.running_var is None:
            return None
        a = self.gamma(c) * torch.rsqrt(self.bn.running_var + self.bn.eps)
        return a, self.beta(c) - a * self.bn.running_mean

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [M, P, F], c [M, C] -> [M, P, F].

        In eval mode the running statistics and gamma(c), beta(c) fold into one per-item scale and
        shift (x * g + b, the same result as normalise-then-modulate, in one fused pass).
        """
        M, P, Fd = x.shape
        g, b = self.gamma(c)[:, None, :], self.beta(c)[:, None, :]
        if not self.training and self.bn.track_running_stats and self.bn.running_var is not None:
            inv = torch.rsqrt(self.bn.running_var + self.bn.eps)
            scale = g * inv
            return torch.addcmul(b - scale * self.bn.running_mean, x, scale)
        xn = self.bn(x.reshape(M * P, Fd)).reshape(M, P, Fd)
        return g * xn + b


class CResnetBlock(nn.Module):
    """ResNet block with conditional batch norm (Occupancy Networks' CResnetBlockConv1d)."""

    def __init__(self, c_dim: int, size: int) -> None:
        super().__init__()
        self.bn_0 = CBatchNorm(c_dim, size)
        self.bn_1 = CBatchNorm(c_dim, size)
        self.fc_0 = nn.Linear(size, size)
        self.fc_1 = nn.Linear(size, size)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x [M, P, H], c [M, C] -> [M, P, H]."""
        net = self.fc_0(F.relu(self.bn_0(x, c)))
        dx = self.fc_1(F.relu(self.bn_1(net, c)))
        return x + dx


class OccupancyDecoder(nn.Module):
    """Occupancy logits o(p | c) (Occupancy Networks' DecoderCBatchNorm)."""

    def __init__(self, c_dim: int = 128, hidden: int = 128, n_blocks: int = 5) -> None:
        super().__init__()
        self.fc_p = nn.Linear(3, hidden)
        self.blocks = nn.ModuleList([CResnetBlock(c_dim, hidden) for _ in range(n_blocks)])
        self.bn = CBatchNorm(c_dim, hidden)
        self.fc_out = nn.Linear(hidden, 1)

    def forward(self, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """p [M, P, 3], c [M, C] -> logits [M, P] (occupancy probability = sigmoid(logits))."""
        net = self.fc_p(p)
        for blk in self.blocks:
            net = blk(net, c)
        return self.fc_out(F.relu(self.bn(net, c))).squeeze(-1)

    def folded(self, c: torch.Tensor) -> "FoldedOccupancy | None":
        """The decoder for one code c [1, C] folded into plain matrices (eval mode, inference only), or
        None in training mode / without running statistics. See `FoldedOccupancy`."""
        if self.training or c.shape[0] != 1:
            return None
        with torch.no_grad():
            return FoldedOccupancy.build(self, c)


class FoldedOccupancy:
    """Inference-only `OccupancyDecoder` for one fixed code (the t0 code during mesh extraction).

    The same function as the decoder in eval mode, rearranged: every conditional batch norm becomes a
    per-channel scale and shift for the code; the one after fc_0 is folded into fc_0's weights; the
    biases added to the residual stream (fc_p, every fc_1) are carried as one running offset and folded
    into the next scale-and-shift; fc_1 accumulates into the residual stream in place. Per block that is
    4 elementwise passes and 2 matrix products instead of 7 passes; points go through in blocks of
    `block_rows` so that activations stay in the CPU cache.
    """

    block_rows = 4096

    def __init__(self, wp: torch.Tensor, blocks: list[tuple[torch.Tensor, ...]], a: torch.Tensor, b: torch.Tensor,
                 w_out: torch.Tensor, b_out: torch.Tensor) -> None:
        self.wp, self.blocks, self.a, self.b, self.w_out, self.b_out = wp, blocks, a, b, w_out, b_out

    @staticmethod
    def build(dec: "OccupancyDecoder", c: torch.Tensor) -> "FoldedOccupancy | None":
        """Fold decoder `dec` (eval mode) with code c [1, C]; None when its batch norms are not foldable."""
        d = dec.fc_p.bias  # the constant part of the residual stream, [H]
        blocks = []
        for blk in dec.blocks:
            f0, f1 = blk.bn_0.folded(c), blk.bn_1.folded(c)
            if f0 is None or f1 is None:
                return None
            (a0, b0), (a1, b1) = (f0[0][0], f0[1][0]), (f1[0][0], f1[1][0])
            w0 = (blk.fc_0.weight.T * a1).contiguous()  # [H, H], bn_1 folded in
            c0 = blk.fc_0.bias * a1 + b1
            blocks.append((a0, b0 + d * a0, w0, c0, blk.fc_1.weight.T.contiguous()))
            d = d + blk.fc_1.bias
        fo = dec.bn.folded(c)
        if fo is None:
            return None
        a, b = fo[0][0], fo[1][0]
        return FoldedOccupancy(dec.fc_p.weight.T.contiguous(), blocks, a, b + d * a,
                               dec.fc_out.weight[0].contiguous(), dec.fc_out.bias)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """p [P, 3] float32 -> logits [P] (no autograd)."""
        with torch.no_grad():
            n = self.block_rows
            return torch.cat([self._block(p[i:i + n]) for i in range(0, len(p), n)]) if len(p) else p.new_zeros(0)

    def _block(self, p: torch.Tensor) -> torch.Tensor:
        x = p @ self.wp
        for a0, s0, w0, c0, w1 in self.blocks:
            h = torch.addcmul(s0, x, a0).relu_()
            x.addmm_(torch.addmm(c0, h, w0).relu_(), w1)
        return torch.addmv(self.b_out, torch.addcmul(self.b, x, self.a).relu_(), self.w_out)


class DisplacementField(nn.Module):
    """g(p ⊕ z_src ⊕ z_dst) = p_dst - p_src, evaluated for every (batch, target frame) pair at once.

    Without autograd (inference) the one call walks the points in blocks of about `block_rows`
    (point, frame) rows, all frames of a block together, so that activations stay in the CPU cache;
    the result is the same as one dense pass (`VelocityField` is blocked the same way).
    """

    block_rows = 1024

    def __init__(self, c_dim: int = 128, hidden: int = 128, n_blocks: int = 5) -> None:
        super().__init__()
        self.fc_p = nn.Linear(3, hidden)
        self.fc_z = nn.Linear(2 * c_dim, hidden, bias=False)
        self.fc_c = nn.ModuleList([nn.Linear(2 * c_dim, hidden) for _ in range(n_blocks)])
        self.blocks = nn.ModuleList([ResnetBlockFC(hidden) for _ in range(n_blocks)])
        self.fc_out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, p: torch.Tensor, z_src: torch.Tensor, z_dst: torch.Tensor) -> torch.Tensor:
        """Displacements of points p from the source frame to every target frame.

        p: [B, P, 3] (the same points for all targets) or [B, K, P, 3] (own points per target);
        z_src: [B, C] or [B, K, C]; z_dst: [B, K, C]. Returns [B, K, P, 3] = p_dst - p_src.
        """
        B, K, C = z_dst.shape
        if z_src.dim() == 2:
            z_src = z_src[:, None, :].expand(B, K, C)
        pair = torch.cat([z_src, z_dst], dim=-1)  # [B, K, 2C]
        if p.dim() == 3:
            p = p[:, None]  # [B, 1, P, 3], broadcast over K
        P = p.shape[2]
        n = max(1, self.block_rows // K)
        if torch.is_grad_enabled() or P <= n:
            return self._dense(p, pair)
        return torch.cat([self._dense(p[:, :, i:i + n], pair) for i in range(0, P, n)], dim=2)

    def _dense(self, p: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        """p [B, 1 or K, P, 3], pair codes [B, K, 2C] -> [B, K, P, 3]."""
        if _plain_inference(p):
            return _resnet_stack_inference(p @ self.fc_p.weight.T, (self.fc_p.bias + self.fc_z(pair))[:, :, None, :],
                                           self.fc_c, pair[:, :, None, :], self.blocks, self.fc_out)
        net = self.fc_p(p) + self.fc_z(pair)[:, :, None, :]  # [B, K, P, H]
        for fc_c, blk in zip(self.fc_c, self.blocks):
            net = blk(net + fc_c(pair)[:, :, None, :])
        return self.fc_out(F.relu(net))


class VelocityField(nn.Module):
    """v(p, t; c): the baseline's velocity field, same block structure and widths as `DisplacementField`
    (and the same inference-time blocking over `block_rows` points)."""

    block_rows = 1024

    def __init__(self, c_dim: int = 128, hidden: int = 128, n_blocks: int = 5) -> None:
        super().__init__()
        self.fc_p = nn.Linear(4, hidden)
        self.fc_z = nn.Linear(c_dim, hidden, bias=False)
        self.fc_c = nn.ModuleList([nn.Linear(c_dim, hidden) for _ in range(n_blocks)])
        self.blocks = nn.ModuleList([ResnetBlockFC(hidden) for _ in range(n_blocks)])
        self.fc_out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.fc_out.weight)
        nn.init.zeros_(self.fc_out.bias)

    def forward(self, p: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """p [B, ..., P, 3], t [B] (one time per batch item, units of the [0, 1] clip), c [B, C] -> [B, ..., P, 3]."""
        rows = p[..., 0].numel() // p.shape[0]
        P = p.shape[-2]
        n = max(1, self.block_rows * P // max(rows, 1))
        if torch.is_grad_enabled() or P <= n:
            return self._dense(p, t, c)
        return torch.cat([self._dense(p[..., i:i + n, :], t, c) for i in range(0, P, n)], dim=-2)

    def _dense(self, p: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shape = (p.shape[0],) + (1,) * (p.dim() - 2)
        if _plain_inference(p):
            w = self.fc_p.weight  # [H, 4]: the (x, y, z) columns and the t column
            off = self.fc_p.bias + t.to(p.dtype)[:, None] * w[:, 3] + self.fc_z(c)  # [B, H]
            return _resnet_stack_inference(p @ w[:, :3].T, off.reshape(shape + (-1,)), self.fc_c,
                                           c.reshape(shape + (-1,)), self.blocks, self.fc_out)
        tt = t.reshape(shape + (1,)).to(p.dtype).expand(*p.shape[:-1], 1)
        net = self.fc_p(torch.cat([p, tt], dim=-1)) + self.fc_z(c).reshape(shape + (-1,))
        for fc_c, blk in zip(self.fc_c, self.blocks):
            net = blk(net + fc_c(c).reshape(shape + (-1,)))
        return self.fc_out(F.relu(net))


def _solver_step(field, p: torch.Tensor, t: torch.Tensor, h: torch.Tensor, c: torch.Tensor, method: str) -> torch.Tensor:
    """One fixed step of size h [B] from time t [B]; p [B, ..., 3]."""
    hs = h.reshape((h.shape[0],) + (1,) * (p.dim() - 1)).to(p.dtype)
    if method == "euler":
        return p + hs * field(p, t, c)
    if method != "rk4":
        raise ValueError(f"unknown ODE method {method!r} (rk4|euler)")
    k1 = field(p, t, c)
    k2 = field(p + 0.5 * hs * k1, t + 0.5 * h, c)
    k3 = field(p + 0.5 * hs * k2, t + 0.5 * h, c)
    k4 = field(p + hs * k3, t + h, c)
    return p + hs / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate_forward(field, p0: torch.Tensor, times: torch.Tensor, c: torch.Tensor, ode: ODEConfig) -> torch.Tensor:
    """Integrate dp/dt = v(p, t; c) from t_0 through every frame time.

    p0 [B, P, 3], times [B, T] increasing -> positions [B, T, P, 3] (index 0 = p0). Each interval
    [t_k, t_k+1] takes `ode.substeps` fixed steps of `ode.method`.
    """
    out = [p0]
    p = p0
    T = times.shape[1]
    for k in range(T - 1):
        h = (times[:, k + 1] - times[:, k]) / ode.substeps
        for s in range(ode.substeps):
            p = _solver_step(field, p, times[:, k] + s * h, h, c, ode.method)
        out.append(p)
    return torch.stack(out, dim=1)


def integrate_backward(field, pk: torch.Tensor, times: torch.Tensor, c: torch.Tensor, ode: ODEConfig) -> torch.Tensor:
    """Carry points observed at frames 1..T-1 back to t_0.

    pk [B, T-1, P, 3] (row j holds points at frame j+1), times [B, T] -> positions at t_0 [B, T-1, P, 3].
    Sweeps the intervals from the last to the first; at interval k only the frames after it move.
    """
    T = times.shape[1]
    x = pk
    for k in range(T - 2, -1, -1):
        h = (times[:, k] - times[:, k + 1]) / ode.substeps  # negative
        part = x[:, k:]
        for s in range(ode.substeps):
            part = _solver_step(field, part, times[:, k + 1] + s * h, h, c, ode.method)
        x = torch.cat([x[:, :k], part], dim=1)
    return x


class LPDCNet(nn.Module):
    """LPDC-Net: encoder, occupancy decoder at t0, shared displacement field g."""

    kind = "lpdc"

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SpatioTemporalEncoder(cfg.c_dim, cfg.enc_hidden, cfg.enc_blocks)
        self.decoder = OccupancyDecoder(cfg.c_dim, cfg.dec_hidden, cfg.dec_blocks)
        self.displacement = DisplacementField(cfg.c_dim, cfg.motion_hidden, cfg.motion_blocks)

    def encode(self, points: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [B, T, N, 3], times [B, T] -> (s [B, T, C], z [B, T, C])."""
        return self.encoder(points, times)

    def occupancy_logits(self, p: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
        """p [B, P, 3] at t0, s0 [B, C] -> logits [B, P]."""
        return self.decoder(p, s0)

    def to_frames(self, p0: torch.Tensor, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Points p0 [B, P, 3] at t0 to every frame in one batched call of g -> [B, T, P, 3]."""
        return p0[:, None] + self.displacement(p0, z[:, 0], z)

    def to_t0(self, pk: torch.Tensor, z: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """Points pk [B, T-1, P, 3] seen at frames 1..T-1 back to t0 (backward displacement) -> [B, T-1, P, 3]."""
        B, T, C = z.shape
        return pk + self.displacement(pk, z[:, 1:], z[:, :1].expand(B, T - 1, C))

    def frame_to_frame(self, p0: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Alias of `to_frames` (t0 -> all frames)."""
        return self.to_frames(p0, z)


class OFlowNet(nn.Module):
    """Occupancy-Flow-style baseline: same encoder and decoder, a velocity field integrated in time.

    The velocity field is conditioned on one sequence code c = fc(max_k z_k) (Occupancy Flow conditions
    its velocity field on a single temporal code).
    """

    kind = "ode"

    def __init__(self, cfg: ModelConfig, ode: ODEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ode = ode
        self.encoder = SpatioTemporalEncoder(cfg.c_dim, cfg.enc_hidden, cfg.enc_blocks)
        self.decoder = OccupancyDecoder(cfg.c_dim, cfg.dec_hidden, cfg.dec_blocks)
        self.fc_seq = nn.Linear(cfg.c_dim, cfg.c_dim)
        self.velocity = VelocityField(cfg.c_dim, cfg.motion_hidden, cfg.motion_blocks)

    def encode(self, points: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [B, T, N, 3], times [B, T] -> (s [B, T, C], z [B, T, C])."""
        return self.encoder(points, times)

    def occupancy_logits(self, p: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
        """p [B, P, 3] at t0, s0 [B, C] -> logits [B, P]."""
        return self.decoder(p, s0)

    def sequence_code(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, T, C] -> c [B, C]."""
        return self.fc_seq(F.relu(z.max(dim=1).values))

    def to_frames(self, p0: torch.Tensor, z: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Points p0 [B, P, 3] at t0 integrated through every frame -> [B, T, P, 3]."""
        return integrate_forward(self.velocity, p0, times, self.sequence_code(z), self.ode)

    def to_t0(self, pk: torch.Tensor, z: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Points pk [B, T-1, P, 3] seen at frames 1..T-1 integrated back to t0 -> [B, T-1, P, 3]."""
        return integrate_backward(self.velocity, pk, times, self.sequence_code(z), self.ode)


def build_model(kind: str, cfg: ModelConfig, ode: ODEConfig | None = None) -> nn.Module:
    """"lpdc" -> LPDCNet, "ode" -> OFlowNet."""
    if kind == "lpdc":
        return LPDCNet(cfg)
    if kind == "ode":
        return OFlowNet(cfg, ode or ODEConfig())
    raise ValueError(f"unknown model kind {kind!r} (lpdc|ode)")


resolve_device = torch_device  # the old name (models.lpdc.training / pipeline import it): str -> torch.device
