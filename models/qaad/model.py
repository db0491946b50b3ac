"""The NeuralQAAD autodecoder and the AtlasNetV2-style baseline decoder.

Shapes: I clouds (instances), K patches, M template points per patch, N = output points per cloud
(N <= K * M; the first N template points in patch-major order are used), d = latent size. Points are in the
normalised frame of the dataset (see data.Normalisation), float32.

The template ("input cloud Q", paper §3.3) is K patches of M points. To keep the file small enough for
100:1 compression of a few dozen clouds, Q is not stored point by point: point m of patch k is
q = c_k + A_k u_{k,m}, where u_{k,m} in [-1, 1]^3 is a fixed low-discrepancy (R3 / Kronecker) sequence that
the decoder regenerates bit-exactly, and the patch centre c_k [3] and frame A_k [3, 3] are trainable and
initialised from a dataset sample (balanced k-d leaves of the first cloud: mean and scaled covariance root).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a NeuralQAAD or AtlasNetV2-style decoder.

    kind: "qaad" (shared layers + patch heads) or "atlasnet" (independent per-patch MLPs, no sharing).
    n_points: N, points per decoded cloud. patches: K. latent: d, size of each cloud's latent code.
    shared: widths of the shared layers (paper: 256-128-128-64; scaled down here to fit a compression
        ratio). head: widths of the patch-specific layers, the last must be 3 (paper: two layers).
    atlas_hidden: hidden widths of each per-patch MLP of the baseline (kind "atlasnet").
    """

    kind: str = "qaad"
    n_points: int = 16384
    patches: int = 16
    latent: int = 8
    shared: tuple[int, ...] = (64, 32, 32, 16)
    head: tuple[int, ...] = (16, 3)
    atlas_hidden: tuple[int, ...] = (24, 24, 24)

    @property
    def per_patch(self) -> int:
        """M: template points per patch (ceil(N / K))."""
        return math.ceil(self.n_points / self.patches)


def kronecker_unit_points(n: int, offset: int = 0) -> np.ndarray:
    """Low-discrepancy points in [-1, 1]^3: the R3 sequence frac(0.5 + i * alpha), alpha = (1/g, 1/g^2, 1/g^3)
    with g the plastic-like root of x^4 = x + 1. Deterministic on every platform. Returns float64 [n, 3]."""
    g = 1.2207440846057596  # root of x^4 = x + 1
    alpha = np.array([1 / g, 1 / g**2, 1 / g**3])
    i = np.arange(offset, offset + n, dtype=np.float64)[:, None]
    return 2.0 * np.mod(0.5 + i * alpha, 1.0) - 1.0


def template_unit(cfg: ModelConfig) -> np.ndarray:
    """The fixed unit coordinates u of all template points, float32 [K, M, 3] in [-1, 1]^3.

    Each patch gets a different window of the sequence (so patches are not copies of each other)."""
    k, m = cfg.patches, cfg.per_patch
    return np.stack([kronecker_unit_points(m, offset=j * m) for j in range(k)]).astype(np.float32)


def balanced_kd_partition(points: np.ndarray, k: int) -> list[np.ndarray]:
    """Split a cloud float [P, 3] into k index sets of (almost) equal size by recursive median splits on the
    longest axis (k need not be a power of two: a node for j leaves is split j//2 : j - j//2)."""
    out: list[np.ndarray] = []
    stack = [(np.arange(len(points)), k)]
    while stack:
        idx, j = stack.pop()
        if j == 1:
            out.append(idx)
            continue
        p = points[idx]
        ax = int(np.argmax(p.max(0) - p.min(0)))
        s = idx[np.argsort(p[:, ax], kind="stable")]
        cut = int(round(len(s) * (j // 2) / j))
        stack.append((s[cut:], j - j // 2))
        stack.append((s[:cut], j // 2))
    return out


def init_patch_frames(sample: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Patch centres float32 [K, 3] and frames float32 [K, 3, 3] from a dataset sample float [P, 3] (P >= K):
    balanced k-d leaves, centre = leaf mean, frame = sqrt(3) * covariance^(1/2) (a uniform cube mapped by
    the frame has the leaf's covariance)."""
    sample = np.asarray(sample, dtype=np.float64)
    if len(sample) < k:
        raise ValueError(f"need at least {k} sample points to initialise {k} patches, got {len(sample)}")
    centres, frames = [], []
    for idx in balanced_kd_partition(sample, k):
        p = sample[idx]
        c = p.mean(0)
        cov = np.cov((p - c).T) if len(p) > 1 else np.zeros((3, 3))
        w, v = np.linalg.eigh(cov + 1e-10 * np.eye(3))
        frames.append(math.sqrt(3.0) * (v * np.sqrt(np.maximum(w, 0))) @ v.T)
        centres.append(c)
    return np.asarray(centres, np.float32), np.asarray(frames, np.float32)


class _Decoder(nn.Module):
    """Common part: latent table, trainable patch frames, fixed unit template, index bookkeeping."""

    def __init__(self, cfg: ModelConfig, n_instances: int):
        super().__init__()
        self.cfg = cfg
        k = cfg.patches
        self.latents = nn.Parameter(torch.randn(n_instances, cfg.latent) * 0.01)
        self.centres = nn.Parameter(torch.zeros(k, 3))
        self.frames = nn.Parameter(torch.eye(3).repeat(k, 1, 1) * 0.1)
        self.register_buffer("unit", torch.from_numpy(template_unit(cfg)), persistent=False)

    def init_template(self, sample: np.ndarray) -> None:
        """Initialise the patch centres / frames from a dataset sample float [P, 3] (normalised frame)."""
        c, a = init_patch_frames(sample, self.cfg.patches)
        with torch.no_grad():
            self.centres.copy_(torch.from_numpy(c))
            self.frames.copy_(torch.from_numpy(a))

    def template(self, local_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Template points q float [K, m, 3]: all M per patch, or the per-patch indices local_idx long [m]."""
        u = self.unit if local_idx is None else self.unit[:, local_idx]
        return self.centres[:, None, :] + torch.einsum("kij,kmj->kmi", self.frames, u)

    def n_stored_floats(self) -> int:
        """Scalars the .qaad file stores for this model (all parameters; the unit template is regenerated)."""
        return int(sum(p.numel() for p in self.parameters()))

    def forward(self, inst: torch.Tensor, local_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Decode clouds `inst` long [B] at per-patch template indices local_idx long [m] (default: all M).

        Returns float [B, K, m, 3] (patch-major); flatten to [B, K*m, 3] and take the first N when m = M."""
        q = self.template(local_idx)  # [K, m, 3]
        z = self.latents[inst]  # [B, d]
        return q[None] + self.offsets(z, q)

    def offsets(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode_all(self, inst: torch.Tensor) -> torch.Tensor:
        """Full clouds float [B, N, 3] for instances inst long [B] (the plain forward pass; with autograd it
        is what training differentiates; also the reference of `decode_clouds`)."""
        out = self.forward(inst)
        return out.reshape(out.shape[0], -1, 3)[:, : self.cfg.n_points]

    def decode_clouds(self, inst: torch.Tensor, chunk: int = 4) -> torch.Tensor:
        """Full clouds float32 [B, N, 3] for instances inst long [B], no autograd (decompression). The base
        class runs `decode_all` on chunks of `chunk` clouds; QAADDecoder overrides it with a faster path."""
        with torch.inference_mode():
            parts = [self.decode_all(inst[s : s + chunk]) for s in range(0, len(inst), max(1, int(chunk)))]
            return torch.cat(parts) if parts else torch.zeros(0, self.cfg.n_points, 3, device=inst.device)


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_LOG2E = 1.4426950408889634


def selu_unscaled_(x: torch.Tensor) -> torch.Tensor:
    """In place: x <- relu(x) + ALPHA * exp(min(x, 0)), i.e. (SELU(x) / SCALE) + ALPHA; float tensor, any
    shape. `decode_clouds` folds SCALE and the constant into the next layer's weights and bias. The
    exponential is taken as exp2(x * log2 e): torch's exp2 kernel is vectorised on CPU builds whose exp is
    not (about 3x faster here); the result equals F.selu to float32 rounding (tested)."""
    neg = torch.clamp(x, max=0.0).mul_(_LOG2E).exp2_()
    return x.clamp_(min=0.0).add_(neg, alpha=SELU_ALPHA)


def _grouped(in_ch: int, out_ch: int, groups: int) -> nn.Conv1d:
    conv = nn.Conv1d(in_ch * groups, out_ch * groups, kernel_size=1, groups=groups)
    nn.init.normal_(conv.weight, std=1.0 / math.sqrt(in_ch))  # LeCun normal (SELU)
    nn.init.zeros_(conv.bias)
    return conv


class QAADDecoder(_Decoder):
    """NeuralQAAD autodecoder (paper §3.3): per point, shared layers on latent ⊕ q, SELU, then a
    patch-specific head; all K heads run in one grouped 1x1 convolution (groups = K). The output is the
    template point plus the predicted offset (heads start at zero, so training starts from the template)."""

    def __init__(self, cfg: ModelConfig, n_instances: int):
        super().__init__(cfg, n_instances)
        if cfg.head[-1] != 3:
            raise ValueError("the last head width must be 3")
        widths = [cfg.latent + 3, *cfg.shared]
        self.shared = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        for lin in self.shared:
            nn.init.normal_(lin.weight, std=1.0 / math.sqrt(lin.in_features))
            nn.init.zeros_(lin.bias)
        hw = [cfg.shared[-1], *cfg.head]
        self.heads = nn.ModuleList(_grouped(a, b, cfg.patches) for a, b in zip(hw[:-1], hw[1:]))
        nn.init.zeros_(self.heads[-1].weight)

    def offsets(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """z float [B, d], q float [K, m, 3] -> offsets float [B, K, m, 3]."""
        b, (k, m, _) = z.shape[0], q.shape
        first = self.shared[0]
        d = z.shape[1]
        # latent ⊕ q through the first layer without materialising the concatenation
        h = F.linear(q, first.weight[:, d:], first.bias)[None] + F.linear(z, first.weight[:, :d])[:, None, None, :]
        h = F.selu(h, inplace=True)  # [B, K, m, C]; in place: each h is a fresh layer output
        for lin in self.shared[1:]:
            h = F.selu(lin(h), inplace=True)
        h = h.permute(0, 1, 3, 2).reshape(b, k * h.shape[-1], m)  # [B, K*C, m]
        for i, conv in enumerate(self.heads):
            h = conv(h)
            if i < len(self.heads) - 1:
                h = F.selu(h, inplace=True)
        return h.reshape(b, k, 3, m).permute(0, 1, 3, 2)

    def decode_clouds(self, inst: torch.Tensor, chunk: int = 4, tile: int = 512) -> torch.Tensor:
        """Full clouds float32 [B, N, 3] for instances inst long [B] (decompression; equals `decode_all` to
        float32 rounding). Faster than the forward pass on CPU:

        - the template and its share of the first layer (q W_q^T + b) are computed once for all clouds, each
          cloud adds only its latent's share (W_z z);
        - the patch heads run as batched matmuls on contiguous [K, in, out] weights (no grouped-conv
          reshapes), the shared layers as addmm on contiguous transposed weights;
        - SELU as `selu_unscaled_` with its scale and constant folded into the next layer;
        - points are processed in tiles of `tile` per patch (a tile's activations stay in cache), written
          straight into the preallocated output. `chunk` is accepted for the base-class signature.
        """
        cfg = self.cfg
        k, m, d = cfg.patches, cfg.per_patch, cfg.latent
        with torch.inference_mode():
            q = self.template().float().contiguous()  # [K, M, 3]
            first = self.shared[0]
            w0 = first.weight.float()
            hq = F.linear(q, w0[:, d:].contiguous(), first.bias.float())  # [K, M, C0], shared by all clouds
            hz = F.linear(self.latents[inst].float(), w0[:, :d].contiguous())  # [B, C0]
            shared = []
            for lin in self.shared[1:]:  # y = W (S * (a - ALPHA)) + b = (S W) a + (b - S * ALPHA * W 1)
                w = lin.weight.float() * SELU_SCALE
                shared.append((w.t().contiguous(), (lin.bias.float() - SELU_ALPHA * w.sum(1)).contiguous()))
            heads = []
            for i, conv in enumerate(self.heads):
                co, ci = conv.out_channels // k, conv.in_channels // k
                w = conv.weight.float().reshape(k, co, ci) * SELU_SCALE  # every head input is a SELU output
                b = conv.bias.float().reshape(k, co) - SELU_ALPHA * w.sum(2)
                heads.append((w.transpose(1, 2).contiguous(), b.reshape(k, 1, co).contiguous()))
            out = torch.empty(len(inst), k, m, 3, device=q.device)
            tile = max(1, int(tile))
            for j in range(len(inst)):
                for s in range(0, m, tile):
                    h = selu_unscaled_(hq[:, s : s + tile] + hz[j])  # [K, t, C0]
                    t = h.shape[1]
                    for w, b in shared:
                        h = selu_unscaled_(torch.addmm(b, h.reshape(k * t, -1), w).reshape(k, t, -1))
                    for i, (w, b) in enumerate(heads):
                        h = torch.baddbmm(b, h, w)  # [K, t, out]
                        if i < len(heads) - 1:
                            selu_unscaled_(h)
                    torch.add(h, q[:, s : s + tile], out=out[j, :, s : s + tile])
            return out.reshape(len(inst), -1, 3)[:, : cfg.n_points]


class AtlasNetV2Decoder(_Decoder):
    """AtlasNetV2-style baseline: K independent per-patch MLPs on latent ⊕ q (no weight sharing), run as
    grouped 1x1 convolutions; same template, latent table and output convention as QAADDecoder."""

    def __init__(self, cfg: ModelConfig, n_instances: int):
        super().__init__(cfg, n_instances)
        widths = [cfg.latent + 3, *cfg.atlas_hidden, 3]
        self.mlp = nn.ModuleList(_grouped(a, b, cfg.patches) for a, b in zip(widths[:-1], widths[1:]))
        nn.init.zeros_(self.mlp[-1].weight)

    def offsets(self, z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """z float [B, d], q float [K, m, 3] -> offsets float [B, K, m, 3]."""
        b, (k, m, _) = z.shape[0], q.shape
        d = z.shape[1]
        x = torch.cat([z[:, None, None, :].expand(b, k, m, d), q[None].expand(b, k, m, 3)], dim=-1)
        h = x.permute(0, 1, 3, 2).reshape(b, k * (d + 3), m)
        for i, conv in enumerate(self.mlp):
            h = conv(h)
            if i < len(self.mlp) - 1:
                h = F.selu(h, inplace=True)
        return h.reshape(b, k, 3, m).permute(0, 1, 3, 2)


def build_decoder(cfg: ModelConfig, n_instances: int) -> _Decoder:
    """The decoder named by cfg.kind ("qaad" | "atlasnet") for n_instances clouds."""
    if cfg.kind == "qaad":
        return QAADDecoder(cfg, n_instances)
    if cfg.kind == "atlasnet":
        return AtlasNetV2Decoder(cfg, n_instances)
    raise ValueError(f"unknown decoder kind {cfg.kind!r} (qaad|atlasnet)")


def count_floats(cfg: ModelConfig, n_instances: int) -> int:
    """Stored scalars of a decoder with this config (without building it)."""
    k, d = cfg.patches, cfg.latent
    n = n_instances * d + k * 12
    if cfg.kind == "qaad":
        w = [d + 3, *cfg.shared]
        n += sum(a * b + b for a, b in zip(w[:-1], w[1:]))
        h = [cfg.shared[-1], *cfg.head]
        n += k * sum(a * b + b for a, b in zip(h[:-1], h[1:]))
    else:
        w = [d + 3, *cfg.atlas_hidden, 3]
        n += k * sum(a * b + b for a, b in zip(w[:-1], w[1:]))
    return n


def sized_config(n_instances: int, n_points: int, target_ratio: float, patches: int = 16, latent: int = 8,
                 kind: str = "qaad", match_floats: int | None = None) -> ModelConfig:
    """A config whose stored float count gives at least `target_ratio` (= I * N * 3 / stored floats).

    qaad: shared widths (4w, 2w, 2w, w), head (w, 3) with the largest w that fits. atlasnet: per-patch hidden
    widths (a, a, a), (a+1, a, a) or (a+1, a+1, a), the largest that fits. With `match_floats`, the
    candidate whose count is closest to it instead (the same-parameter-count baseline).
    Raises ValueError when even the smallest width does not fit."""
    budget = n_instances * n_points * 3 / target_ratio
    cands: list[ModelConfig] = []
    for w in range(2, 513):
        if kind == "qaad":
            cands.append(ModelConfig("qaad", n_points, patches, latent, (4 * w, 2 * w, 2 * w, w), (w, 3)))
        elif kind == "atlasnet":
            for hid in ((w, w, w), (w + 1, w, w), (w + 1, w + 1, w)):
                cands.append(ModelConfig("atlasnet", n_points, patches, latent, atlas_hidden=hid))
        else:
            raise ValueError(f"unknown decoder kind {kind!r} (qaad|atlasnet)")
    counts = [count_floats(c, n_instances) for c in cands]
    if match_floats is not None:
        return cands[int(np.argmin([abs(c - match_floats) for c in counts]))]
    fits = [i for i, c in enumerate(counts) if c <= budget]
    if not fits:
        raise ValueError(f"no {kind} config fits {budget:.0f} stored floats (ratio {target_ratio})")
    return cands[max(fits, key=lambda i: counts[i])]
