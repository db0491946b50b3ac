"""The learned parts of the Neural Non-Rigid Tracker (Bozic et al., NeurIPS 2020, "NNRT").

- Phi (`CorrespondenceNet`): a PWC-Net-style dense correspondence network: a shared feature pyramid of
  both images, and coarse-to-fine flow estimation where at every flow level the target features are
  warped by the upsampled flow of the coarser level, a local cost volume (correlation over a
  (2 d + 1)^2 window) is built and a small CNN predicts the flow refinement; a dilated context network
  refines the finest flow. One code base, two sizes (`phi_config("small" | "full")`): "full" is the NNRT /
  PWC-Net layout (6 pyramid levels, flow at 5 levels 1/64 .. 1/4, dense estimators, 640x448 input on a
  GPU), "small" the same structure with narrow layers for the CPU and tests.
- Psi (`WeightNet`): the correspondence weighting network: from the source RGB-D image, the target RGB-D
  image sampled at the predicted correspondences and the last features of Phi, a weight in (0, 1) for
  every source pixel.

Conventions (stated once): images are float [B, 3, H, W] RGB in [0, 1]; flow [B, 2, H, W] is in pixels of
the network input, (du, dv) = (column, row) motion from the source pixel to its target pixel: the target
of source pixel (u, v) is (u + du, v + dv). Points are float [B, 3, H, W] metres in the camera frame
(OpenCV axes), zero where depth is invalid. Any input size works: inputs are padded (replicate) to a
multiple of 2^pyramid_levels and outputs cropped back.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PhiConfig",
    "PsiConfig",
    "phi_config",
    "psi_config",
    "CorrespondenceNet",
    "WeightNet",
    "PhiOutput",
    "warp_by_flow",
    "correlation",
    "correlation_np",
    "pixel_grid_t",
    "sample_at",
]


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhiConfig:
    """Architecture of Phi.

    size: name of the preset ("small" | "full" | custom).
    pyramid_channels: feature channels of pyramid levels 1 .. P (level l is at 1/2^l resolution).
    flow_levels: number of levels that estimate flow, coarsest first (the finest is P - flow_levels + 1).
    max_displacement: cost-volume radius d in pixels of each level ((2d+1)^2 correlation channels).
    estimator_channels: conv widths of each level's flow estimator.
    dense: DenseNet connections in the estimator (PWC-Net / NNRT) instead of a plain stack.
    context_channels / context_dilations: the dilated context network on the finest flow level (empty: none).
    pyramid_convs: convolutions per pyramid level (the first has stride 2; PWC-Net: 3).
    soft_argmax: the cost volume is built from L2-normalised features (cosine similarity) and each level's
      flow starts from the soft-argmax displacement of its cost volume (learned temperature), to which the
      estimator adds a refinement; the soft-argmax is also an input of the estimator. Without it (PWC-Net
      as published) the estimator regresses the flow from the raw cost volume alone. The soft-argmax lets
      a network trained from scratch on little data (CPU) match from the first steps; NNRT instead starts
      from a PWC-Net pre-trained on FlyingChairs / FlyingThings.
    depth_input: Phi also sees the depth of both images (2 more input channels: depth relative to the
      source's median depth, and depth validity); NNRT's Phi is RGB only.
    """

    size: str = "small"
    pyramid_channels: tuple[int, ...] = (8, 12, 16, 24, 32, 48)
    flow_levels: int = 5
    max_displacement: int = 3
    estimator_channels: tuple[int, ...] = (32, 24, 16)
    dense: bool = False
    context_channels: tuple[int, ...] = (24, 24, 16)
    context_dilations: tuple[int, ...] = (1, 2, 4)
    pyramid_convs: int = 2
    soft_argmax: bool = True
    depth_input: bool = False

    @property
    def pyramid_levels(self) -> int:
        """P: number of pyramid levels."""
        return len(self.pyramid_channels)

    @property
    def finest_level(self) -> int:
        """Pyramid level of the finest flow estimate (output stride 2^finest_level)."""
        return self.pyramid_levels - self.flow_levels + 1

    @property
    def feature_channels(self) -> int:
        """Channels of the 'last features' handed to Psi (the finest estimator's / context net's)."""
        return self.context_channels[-1] if self.context_channels else self.estimator_channels[-1]

    def __post_init__(self) -> None:
        if not 1 <= self.flow_levels <= self.pyramid_levels:
            raise ValueError(f"flow_levels must be in 1..{self.pyramid_levels}, got {self.flow_levels}")
        if self.max_displacement < 1:
            raise ValueError("max_displacement must be >= 1")
        if len(self.context_channels) != len(self.context_dilations):
            raise ValueError("context_channels and context_dilations must have the same length")


@dataclass(frozen=True)
class PsiConfig:
    """Architecture of Psi: encoder widths at 1/2 and 1/4 resolution, and the decoder width."""

    size: str = "small"
    channels: tuple[int, int] = (16, 24)
    decoder: int = 16


def phi_config(size: str = "small") -> PhiConfig:
    """The Phi preset: "small" (CPU, tests; ~0.1 M parameters) or "full" (PWC-Net / NNRT widths, GPU)."""
    if size == "small":
        return PhiConfig(depth_input=True)
    if size == "full":
        return PhiConfig(size="full", pyramid_channels=(16, 32, 64, 96, 128, 196), flow_levels=5, max_displacement=4,
                         estimator_channels=(128, 128, 96, 64, 32), dense=True,
                         context_channels=(128, 128, 128, 96, 64, 32), context_dilations=(1, 2, 4, 8, 16, 1),
                         pyramid_convs=3, depth_input=True)
    if size == "tiny":  # for unit tests only
        return PhiConfig(size="tiny", pyramid_channels=(6, 8, 10, 12), flow_levels=3, max_displacement=2,
                         estimator_channels=(12, 8), dense=False, context_channels=(8,), context_dilations=(2,))
    raise ValueError(f"unknown Phi size {size!r} (small | full | tiny)")


def psi_config(size: str = "small") -> PsiConfig:
    """The Psi preset matching `phi_config(size)`."""
    if size == "small":
        return PsiConfig()
    if size == "full":
        return PsiConfig(size="full", channels=(32, 64), decoder=32)
    if size == "tiny":
        return PsiConfig(size="tiny", channels=(8, 8), decoder=8)
    raise ValueError(f"unknown Psi size {size!r} (small | full | tiny)")


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------
def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1, act: bool = True) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation)]
    if act:
        layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


def pixel_grid_t(b: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel coordinates [b, 2, h, w] (u = column, v = row), pixel centres at integers."""
    v, u = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                          indexing="ij")
    return torch.stack([u, v])[None].expand(b, 2, h, w)


def sample_at(img: torch.Tensor, uv: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample img [B, C, H, W] at pixel positions uv [B, 2, h, w] (u, v in img's pixels; zeros outside).

    Returns [B, C, h, w]. Differentiable with respect to img and uv (bilinear mode).
    """
    _, _, h, w = img.shape
    gx = (2.0 * uv[:, 0] + 1.0) / w - 1.0
    gy = (2.0 * uv[:, 1] + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=False)


def warp_by_flow(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp img [B, C, H, W] by flow [B, 2, H, W] (pixels of this resolution): out(p) = img(p + flow(p))."""
    b, _, h, w = flow.shape
    return sample_at(img, pixel_grid_t(b, h, w, flow.device, flow.dtype) + flow)


def correlation(f1: torch.Tensor, f2: torch.Tensor, d: int) -> torch.Tensor:
    """Local cost volume: c[b, k, y, x] = mean_c f1[b, c, y, x] * f2[b, c, y + dy, x + dx] for the (2d+1)^2
    displacements k = (dy + d) * (2d + 1) + (dx + d); f2 is zero outside the image. [B, (2d+1)^2, H, W]."""
    b, c, h, w = f1.shape
    f2p = F.pad(f2, (d, d, d, d))
    out = []
    for dy in range(2 * d + 1):
        rows = f2p[:, :, dy:dy + h]
        for dx in range(2 * d + 1):
            out.append((f1 * rows[:, :, :, dx:dx + w]).mean(1))
    return torch.stack(out, 1)


def correlation_np(f1, f2, d: int):
    """Slow reference of `correlation` with numpy loops over displacements and pixels (tests only).

    f1, f2: numpy float [C, H, W]. Returns float64 [(2d+1)^2, H, W].
    """
    import numpy as np

    c, h, w = f1.shape
    out = np.zeros(((2 * d + 1) ** 2, h, w))
    for k, (dy, dx) in enumerate((a, b) for a in range(-d, d + 1) for b in range(-d, d + 1)):
        for y in range(h):
            for x in range(w):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w:
                    out[k, y, x] = float(np.dot(f1[:, y, x].astype(np.float64), f2[:, yy, xx].astype(np.float64))) / c
    return out


class _Pyramid(nn.Module):
    def __init__(self, channels: tuple[int, ...], convs: int, cin: int = 3) -> None:
        super().__init__()
        layers = []
        for c in channels:
            layers.append(nn.Sequential(_conv(cin, c, 2), *[_conv(c, c) for _ in range(convs - 1)]))
            cin = c
        self.levels = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.levels:
            x = layer(x)
            out.append(x)
        return out


class _Estimator(nn.Module):
    """Flow estimator of one level: input features -> (flow refinement [B,2], last features)."""

    def __init__(self, cin: int, widths: tuple[int, ...], dense: bool) -> None:
        super().__init__()
        self.dense = dense
        convs = []
        c = cin
        for wdt in widths:
            convs.append(_conv(c, wdt))
            c = c + wdt if dense else wdt
        self.convs = nn.ModuleList(convs)
        self.out_channels = c
        self.head = nn.Conv2d(c, 2, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # the flow starts as the soft-argmax / the coarser level's flow
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.convs:
            y = conv(x)
            x = torch.cat([x, y], 1) if self.dense else y
        return self.head(x), x


class _Context(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, ...], dilations: tuple[int, ...]) -> None:
        super().__init__()
        layers = []
        c = cin
        for wdt, dil in zip(widths, dilations):
            layers.append(_conv(c, wdt, dilation=dil))
            c = wdt
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x)
        return self.head(f), f


@dataclass
class PhiOutput:
    """What Phi returns.

    flow: [B, 2, H, W] final flow at the input resolution (pixels of the input).
    flows: per flow level, coarsest first, [B, 2, H/2^l, W/2^l] flow in pixels of the input (the last one is
      the finest estimate before upsampling), for the multi-level loss.
    levels: the pyramid level l of each entry of `flows` (its stride is 2^l).
    features: [B, Cf, H/2^f, W/2^f] the last features (finest level f), input of Psi.
    """

    flow: torch.Tensor
    flows: list[torch.Tensor]
    levels: list[int]
    features: torch.Tensor
    meta: dict = field(default_factory=dict)


def _pad_to(x: torch.Tensor, mult: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % mult, (-w) % mult
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def _up2(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class CorrespondenceNet(nn.Module):
    """Phi: PWC-Net-style dense correspondences source -> target (see the module docstring)."""

    def __init__(self, cfg: PhiConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or phi_config("small")
        c = self.cfg
        self.pyramid = _Pyramid(c.pyramid_channels, c.pyramid_convs, 5 if c.depth_input else 3)
        nd = (2 * c.max_displacement + 1) ** 2
        est = []
        prev_feat = 0
        for i, lvl in enumerate(range(c.pyramid_levels, c.finest_level - 1, -1)):
            cin = nd + c.pyramid_channels[lvl - 1] + (0 if i == 0 else 2 + prev_feat) + (2 if c.soft_argmax else 0)
            e = _Estimator(cin, c.estimator_channels, c.dense)
            est.append(e)
            prev_feat = min(e.out_channels, 16)
        self.estimators = nn.ModuleList(est)
        # the coarser level's last features, squeezed to at most 16 channels before upsampling (PWC "upfeat")
        self.squeeze = nn.ModuleList([nn.Conv2d(e.out_channels, min(e.out_channels, 16), 1) for e in est[:-1]])
        last = est[-1].out_channels
        self.context = _Context(last + 2, c.context_channels, c.context_dilations) if c.context_channels else None
        self.register_buffer("mean", torch.tensor([0.45, 0.43, 0.40]).view(1, 3, 1, 1), persistent=False)
        d = c.max_displacement
        disp = torch.tensor([(dx, dy) for dy in range(-d, d + 1) for dx in range(-d, d + 1)], dtype=torch.float32)
        self.register_buffer("disp", disp.T.reshape(1, 2, -1, 1, 1), persistent=False)
        #: log of the soft-argmax inverse temperature per flow level (coarsest first)
        self.log_beta = nn.Parameter(torch.full((c.flow_levels,), math.log(20.0))) if c.soft_argmax else None

    @property
    def stride(self) -> int:
        """Inputs are padded to a multiple of this."""
        return 2 ** self.cfg.pyramid_levels

    @staticmethod
    def depth_channels(source_depth: torch.Tensor, target_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two depth input channels of each image [B, 2, H, W]: 4 (d / m - 1) where valid (m: the median
        valid depth of the source, so the depth change between the images is kept) and the validity."""
        out = []
        b = source_depth.shape[0]
        vals = []
        for i in range(b):
            v = source_depth[i][source_depth[i] > 0]
            one = torch.ones((), dtype=source_depth.dtype, device=source_depth.device)
            vals.append(v.median() if v.numel() else one)
        m = torch.stack(vals).view(b, 1, 1, 1)
        for d in (source_depth, target_depth):
            valid = (d > 0).to(d.dtype)
            out.append(torch.cat([4.0 * (d / m - 1.0) * valid, valid], 1))
        return out[0], out[1]

    def forward(self, source: torch.Tensor, target: torch.Tensor, source_depth: torch.Tensor | None = None,
                target_depth: torch.Tensor | None = None) -> PhiOutput:
        """source, target: float [B, 3, H, W] RGB in [0, 1]; source_depth / target_depth [B, 1, H, W] metres
        (0 invalid), required when cfg.depth_input (ignored otherwise). Returns PhiOutput (flow source ->
        target)."""
        if source.shape != target.shape or source.dim() != 4 or source.shape[1] != 3:
            raise ValueError(f"source / target must both be [B, 3, H, W], got {tuple(source.shape)} / "
                             f"{tuple(target.shape)}")
        c = self.cfg
        src_in, tgt_in = source - self.mean, target - self.mean
        if c.depth_input:
            if source_depth is None or target_depth is None:
                raise ValueError("this Phi takes depth: pass source_depth and target_depth")
            ds, dt = self.depth_channels(source_depth, target_depth)
            src_in, tgt_in = torch.cat([src_in, ds], 1), torch.cat([tgt_in, dt], 1)
        s, (h, w) = _pad_to(src_in, self.stride)
        t, _ = _pad_to(tgt_in, self.stride)
        both = self.pyramid(torch.cat([s, t], 0))
        b = source.shape[0]
        f1s = [f[:b] for f in both]
        f2s = [f[b:] for f in both]
        flows, levels = [], []
        flow = None
        feat = None
        for i, lvl in enumerate(range(c.pyramid_levels, c.finest_level - 1, -1)):
            f1, f2 = f1s[lvl - 1], f2s[lvl - 1]
            scale = float(2 ** lvl)
            if flow is None:
                base = None
                f2w = f2
            else:
                size = f1.shape[-2:]
                base = _up2(flow, size)
                f2w = warp_by_flow(f2, base / scale)
            if c.soft_argmax:
                raw = correlation(F.normalize(f1, dim=1, eps=1e-6), F.normalize(f2w, dim=1, eps=1e-6),
                                  c.max_displacement) * f1.shape[1]
                prob = torch.softmax(raw * self.log_beta[i].exp(), 1)
                soft = (prob[:, None] * self.disp).sum(2)  # [B, 2, h, w] displacement in level pixels
                extra = [soft]
            else:
                raw = correlation(f1, f2w, c.max_displacement)
                soft = None
                extra = []
            corr = F.leaky_relu(raw, 0.1)
            if base is None:
                x = torch.cat([corr, f1] + extra, 1)
            else:
                upfeat = _up2(self.squeeze[i - 1](feat), f1.shape[-2:])
                x = torch.cat([corr, f1, base / scale, upfeat] + extra, 1)
            delta, feat = self.estimators[i](x)
            if soft is not None:
                delta = delta + soft
            flow = delta * scale if base is None else base + delta * scale
            if lvl == c.finest_level and self.context is not None:
                dctx, feat = self.context(torch.cat([feat, flow / scale], 1))
                flow = flow + dctx * scale
            flows.append(flow)
            levels.append(lvl)
        hp, wp = s.shape[-2:]
        full = _up2(flow, (hp, wp))[:, :, :h, :w]
        fh, fw = -(-h // 2 ** c.finest_level), -(-w // 2 ** c.finest_level)
        feat = feat[:, :, :fh, :fw]
        crop = []
        for lvl, fl in zip(levels, flows):
            crop.append(fl[:, :, : -(-h // 2 ** lvl), : -(-w // 2 ** lvl)])
        return PhiOutput(full.contiguous(), crop, levels, feat, {"padded": (hp, wp)})


class WeightNet(nn.Module):
    """Psi: correspondence weights in (0, 1) for every source pixel (see the module docstring)."""

    #: input channels at full resolution: source rgb 3, target rgb at the match 3, source points (centred) 3,
    #: target point at the match minus source point 3, source depth valid 1, target valid at the match 1,
    #: |colour difference| 1
    IN_CHANNELS = 15

    def __init__(self, cfg: PsiConfig | None = None, feature_channels: int = 16) -> None:
        super().__init__()
        self.cfg = cfg or psi_config("small")
        c1, c2 = self.cfg.channels
        self.enc1 = nn.Sequential(_conv(self.IN_CHANNELS, c1), _conv(c1, c1))
        self.down2 = _conv(c1, c2, 2)
        self.enc2 = _conv(c2 + feature_channels, c2)
        self.dec1 = _conv(c2 + c1, self.cfg.decoder)
        self.head = nn.Conv2d(self.cfg.decoder, 1, 3, padding=1)
        self.feature_channels = feature_channels

    @staticmethod
    def inputs(src_rgb: torch.Tensor, src_points: torch.Tensor, tgt_rgb: torch.Tensor, tgt_points: torch.Tensor,
               flow: torch.Tensor) -> torch.Tensor:
        """The network input [B, 15, H, W] from the source image, the target image and the flow.

        src_rgb / tgt_rgb [B,3,H,W] in [0,1]; src_points / tgt_points [B,3,H,W] metres (0 = invalid);
        flow [B,2,H,W] source -> target pixels. The target is sampled bilinearly at the matches; a match is
        valid when all four neighbouring target pixels have depth.
        """
        b, _, h, w = src_rgb.shape
        uv = pixel_grid_t(b, h, w, flow.device, flow.dtype) + flow
        tv = (tgt_points[:, 2:3] > 0).to(flow.dtype)
        t_rgb = sample_at(tgt_rgb, uv)
        t_valid = (sample_at(tv, uv) > 0.999).to(flow.dtype)
        t_pts = sample_at(tgt_points, uv) * t_valid
        s_valid = (src_points[:, 2:3] > 0).to(flow.dtype)
        cnt = s_valid.sum((2, 3), keepdim=True).clamp_min(1.0)
        centre = (src_points * s_valid).sum((2, 3), keepdim=True) / cnt
        s_c = (src_points - centre) * s_valid
        diff = (t_pts - src_points) * t_valid * s_valid
        cdiff = (t_rgb - src_rgb).abs().mean(1, keepdim=True) * t_valid
        return torch.cat([src_rgb - 0.5, t_rgb - 0.5, s_c, diff, s_valid, t_valid, cdiff], 1)

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """x: `inputs(...)` [B, 15, H, W]; features: Phi's last features [B, Cf, h, w] (any size; resized to
        1/4 resolution). Returns weights [B, 1, H, W] in (0, 1).

        The network works at 1/2 and 1/4 resolution (the input is average-pooled) and its logits are
        upsampled bilinearly to the input size: no convolution runs at full resolution.
        """
        h, w = x.shape[-2:]
        e1 = self.enc1(F.avg_pool2d(x, 2, ceil_mode=True))
        d2 = self.down2(e1)
        f = F.interpolate(features, size=d2.shape[-2:], mode="bilinear", align_corners=False)
        e2 = self.enc2(torch.cat([d2, f], 1))
        d1 = self.dec1(torch.cat([_up2(e2, e1.shape[-2:]), e1], 1))
        return torch.sigmoid(_up2(self.head(d1), (h, w)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def config_dict(cfg: PhiConfig | PsiConfig) -> dict:
    """A JSON-friendly dict of a config (for checkpoints)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


# --------------------------------------------------------------------------------------------------
# Phi + Psi together, checkpoints
# --------------------------------------------------------------------------------------------------
class NNRTNets(nn.Module):
    """Phi and Psi of one size, run together (`forward`)."""

    def __init__(self, phi_cfg: PhiConfig | None = None, psi_cfg: PsiConfig | None = None) -> None:
        super().__init__()
        self.phi = CorrespondenceNet(phi_cfg or phi_config("small"))
        self.psi = WeightNet(psi_cfg or psi_config(self.phi.cfg.size if self.phi.cfg.size in ("small", "full", "tiny")
                                                   else "small"), self.phi.cfg.feature_channels)

    def forward(self, src_rgb: torch.Tensor, tgt_rgb: torch.Tensor, src_points: torch.Tensor,
                tgt_points: torch.Tensor, with_weights: bool = True) -> tuple[PhiOutput, torch.Tensor | None]:
        """Flow source -> target (PhiOutput) and weights [B,1,H,W] in (0,1) (None unless with_weights).

        src_rgb / tgt_rgb float [B,3,H,W] in [0,1]; src_points / tgt_points float [B,3,H,W] metres (0 invalid).
        """
        out = self.phi(src_rgb, tgt_rgb, src_points[:, 2:3], tgt_points[:, 2:3])
        if not with_weights:
            return out, None
        x = WeightNet.inputs(src_rgb, src_points, tgt_rgb, tgt_points, out.flow)
        return out, self.psi(x, out.features)


def save_checkpoint(nets: NNRTNets, path, extra: dict | None = None) -> None:
    """Write Phi + Psi weights and their configs (torch.save, atomic) to `path`; `extra` goes to "meta"."""
    from fusion.atomic import atomic_path

    blob = {"format": "nrstudio-nnrt", "version": 1, "phi_config": config_dict(nets.phi.cfg),
            "psi_config": config_dict(nets.psi.cfg), "phi": nets.phi.state_dict(), "psi": nets.psi.state_dict(),
            "meta": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _cfg_from(d: dict, cls):
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[NNRTNets, dict]:
    """Read a checkpoint written by `save_checkpoint`: (NNRTNets in eval mode on `device`, meta dict).
    Raises fusion.errors.InputError when the file is missing or not such a checkpoint."""
    from pathlib import Path

    from fusion.errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: tracker weights not found (train them with `nrstudio train tracker`)")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != "nrstudio-nnrt":
            raise InputError(f"{p}: not an nrstudio neural-tracker checkpoint")
        nets = NNRTNets(_cfg_from(blob["phi_config"], PhiConfig), _cfg_from(blob["psi_config"], PsiConfig))
        nets.phi.load_state_dict(blob["phi"])
        nets.psi.load_state_dict(blob["psi"])
    except InputError:
        raise
    except Exception as e:  # torch raises many kinds for a corrupt file
        raise InputError(f"{p}: corrupt tracker checkpoint ({type(e).__name__}: {e})") from None
    return nets.to(device).eval(), dict(blob.get("meta", {}))
