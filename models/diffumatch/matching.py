"""Zero-shot per-pair matching (DiffuMatch) and the two baselines.

Conventions (fmaps.py): shape 1 = source, shape 2 = target; FM_12 [k2, k1]; the output is p2p_21 [n2]
(for each target vertex, its source vertex).

DiffuMatch (per pair, no training data of the pair): a DiffusionNet-style feature net is optimised on
decimated copies of both shapes so that the FMReg maps FM_12 and FM_21 (k = 30, FMReg mask derived from
the prior) follow the diffusion prior through the SDS gradient, with bijectivity (FM_12 FM_21 = I) and
the proper-map term ||FM - FM(p2p(FM))||^2; the net then runs once on the full shapes, FMReg gives the
30 x 30 map and ZoomOut refines it to `k_final`.
Baselines: `wks_zoomout` (WKS descriptors, closed-form regularised solve with the Laplacian mask,
ZoomOut; no learning) and `deep_fm` (the same per-pair optimisation without the prior: Laplacian mask
and the classical orthogonality + bijectivity + proper losses).

Panel-friendly: every entry point takes `progress(fraction, message)` and `cancel() -> bool`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fusion.device import torch_device
from fusion.errors import NRStudioError

from . import fmaps
from .network import DiffusionNet, ShapeOps, fmreg, fmreg_oriented, input_channels
from .orientation import normalise_pair, orientation_energy, orientation_ops, orientation_quadratic, solve_fm_oriented
from .prior import Denoiser, sds_loss
from .spectral import SpectralConfig, SpectralShape, prepare_shape

Progress = Callable[[float, str], None]
Cancel = Callable[[], bool]


class MatchCancelled(NRStudioError):
    """The caller's cancel() returned True during matching."""

    exit_code = 130


@dataclass(frozen=True)
class MatchConfig:
    """Options of the per-pair matching (all three methods share the spectral settings)."""

    k: int = 30
    """size of the FMReg / prior maps (the prior's k)."""
    k_diff: int = 64
    """eigenpairs used by the network's diffusion and by its WKS input."""
    k_final: int = 90
    """ZoomOut's final map size."""
    zoomout_step: int = 3
    zoomout_sub: int = 2000
    """vertices per shape used during ZoomOut iterations (final p2p on all)."""
    n_opt_vertices: int = 1500
    """decimated size of each shape during the network optimisation."""
    input: str = "wks+xyz"
    """network input: 'wks', 'xyz' or 'wks+xyz'."""
    width: int = 48
    n_blocks: int = 3
    c_out: int = 48
    steps: int = 150
    lr: float = 2e-3
    lam: float = 1.0
    """FMReg regularisation weight."""
    w_sds: float = 1.0
    sds_sigma_min: float = 0.02
    sds_sigma_max: float = 0.3
    sds_samples: int = 4
    sds_schedule: str = "uniform"
    """'uniform': ln sigma ~ U(ln sds_sigma_min, ln sds_sigma_max) at every step; 'anneal': the upper end
    decays log-linearly from sds_sigma_max to sds_sigma_min over the steps (coarse structure first)."""
    w_bij: float = 1.0
    w_orth: float = 0.0
    w_proper: float = 1.0
    w_orient: float = 1.0
    """weight of the orientation-preserving term (orientation.py; Ren et al. 2018) inside the FMReg solve
    of BOTH deep pipelines (optimisation and final map): + w_orient mean_c ||FM_12 D1_c - D2_c FM_12||^2
    in the solve's energy (a k^2 x k^2 system; 0 = the plain row-wise FMReg)."""
    w_orient_loss: float = 0.0
    """weight of the same orientation energy as a loss on FM_12 and FM_21 (instead of / besides the solve)."""
    orient_mode: str = "select"
    """how the deep pipelines use the orientation term: 'solve' = always in the FMReg solve (w_orient);
    'off' = never; 'fallback' = solve without it, and only when the output map is orientation-REVERSING
    (its orientation energy with the commuting sign exceeds the one with the anticommuting sign: a global
    left/right flip) solve again with it and return that map (measured: it never fires on the bench
    pairs, whose wrong basins are partial flips; see docs/dev/notes/issue9.md); 'select' = run the
    pipeline twice, without and with the term, and keep the map with the lower metric distortion
    (`DistortionProbe`: local metric distortion, no ground truth)."""
    n_distortion: int = 100
    """target vertices sampled (seeded) for the local metric distortion of orient_mode 'select'."""
    distortion_radius: float = 0.15
    """neighbourhood radius (geodesic, unit-area shape units) of that distortion (`DistortionProbe`)."""
    n_orient: int = 16
    """WKS descriptors whose orientation operators enter the orientation term (every other one of the
    network's 32 WKS energies)."""
    orient_ops: str = "wks"
    """descriptors whose orientation operators build the orientation term of the deep pipelines: 'wks' (fixed
    WKS, `orientation_pair`, built once per pair), 'learned' (the feature net's own output descriptors,
    detached, `learned_orientation_pair`; rebuilt every `orient_every` optimisation steps and once on the
    full shapes for the final map; cf. DUO-FMNet, Donati et al. 2022, which builds its orientation-aware
    maps from learned features), 'both' (WKS and learned operators together, each set weighted by its
    count in the mean)."""
    orient_every: int = 10
    """optimisation steps between two rebuilds of the learned-feature orientation term (orient_ops != 'wks')."""
    n_orient_learned: int = 16
    """learned descriptor channels whose operators enter the term (every c_out // n_orient_learned-th one)."""
    mask: str = "prior"
    """'prior' (derived from the denoiser) or 'laplacian' (resolvent mask)."""
    n_wks_baseline: int = 100
    lam_baseline: float = 1e-2
    w_orient_baseline: float = 0.0
    """orientation weight of the classical WKS solve (`wks_zoomout`): 0 = the plain baseline (pyFM's
    example pipeline leaves its orientation term off); `wks_orient_zoomout` uses `w_orient_classic`."""
    w_orient_classic: float = 1.0
    """chosen on the tuning pairs (assets/diffumatch/orient_tuning.jsonl; 100 hurts, 1 and 10 tie)."""
    seed: int = 0
    device: str = "auto"


def deep_baseline_config(cfg: MatchConfig) -> MatchConfig:
    """The deep functional map without the prior: no SDS, Laplacian mask, orthogonality loss on; every
    other term (bijectivity, proper map, orientation) as in DiffuMatch."""
    return replace(cfg, w_sds=0.0, mask="laplacian", w_orth=1.0)


@dataclass
class PreparedShape:
    """A shape ready for matching: the full SpectralShape and a decimated one used while optimising."""

    full: SpectralShape
    low: SpectralShape
    name: str = "shape"


@dataclass
class MatchResult:
    """p2p_21 int64 [n2] (target vertex -> source vertex), FM_12 [k_final, k_final], seconds, losses;
    p2p_21_init: the map of the k x k functional map before ZoomOut."""

    p2p_21: np.ndarray
    FM_12: np.ndarray
    seconds: float
    history: list[float] = field(default_factory=list)
    p2p_21_init: np.ndarray | None = None
    FM_12_init: np.ndarray | None = None
    """the k x k FMReg map before ZoomOut."""
    cpu_seconds: float = 0.0
    """process CPU time of the matching (all threads; `seconds` is wall-clock)."""
    sds_grad_ratio: list[float] = field(default_factory=list)
    """per step: ||d(SDS term)/dC|| / ||d(other terms)/dC|| over (FM_12, FM_21); empty without SDS."""
    orientation: tuple[float, float] | None = None
    """(preserving, reversing) orientation energies of the output map (`map_orientation`), when computed."""
    orientation_fallback: bool = False
    """True when orient_mode 'fallback' found the first map orientation-reversing and solved again."""
    candidates: list[dict] = field(default_factory=list)
    """orient_mode 'select': one dict per candidate map ("w_orient", "distortion", "orientation" (preserving,
    reversing), "chosen", "p2p_21" int64 [n2]); empty otherwise."""


def _decimate(verts: np.ndarray, faces: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if len(verts) <= n:
        return verts, faces
    if len(faces) == 0:
        idx = np.sort(np.random.default_rng(seed).choice(len(verts), n, replace=False))
        return verts[idx], faces
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(faces.astype(np.int32)))
    m = m.simplify_quadric_decimation(target_number_of_triangles=2 * n)
    m.remove_degenerate_triangles()
    m.remove_unreferenced_vertices()
    return np.asarray(m.vertices), np.asarray(m.triangles, dtype=np.int64)


def prepare(verts: np.ndarray, faces: np.ndarray | None, cfg: MatchConfig = MatchConfig(), name: str = "shape") -> PreparedShape:
    """Spectral pre-processing (disk-cached) of a mesh or cloud at full and decimated resolution.

    verts float [V, 3], faces int [F, 3] or None for a point cloud. InputError on bad geometry.
    """
    f = np.zeros((0, 3), np.int64) if faces is None else np.asarray(faces, np.int64).reshape(-1, 3)
    k_full = max(cfg.k_final, cfg.k_diff, cfg.k) + 1
    full = prepare_shape(verts, f, SpectralConfig(k=k_full), name=name)
    lv, lf = _decimate(np.asarray(verts, np.float64), f, cfg.n_opt_vertices, cfg.seed)
    low = prepare_shape(lv, lf, SpectralConfig(k=max(cfg.k_diff, cfg.k)), name=f"{name} (decimated)")
    return PreparedShape(full, low, name)


_device = torch_device  # str -> torch.device (fusion.device)


def _refine(FM_12: np.ndarray, s1: SpectralShape, s2: SpectralShape, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    sub = (np.sort(rng.choice(s1.n, min(cfg.zoomout_sub, s1.n), replace=False)),
           np.sort(rng.choice(s2.n, min(cfg.zoomout_sub, s2.n), replace=False)))
    return fmaps.zoomout(FM_12, s1.evecs, s2.evecs, cfg.k_final, cfg.zoomout_step, sub=sub)


def orientation_pair(s1: SpectralShape, s2: SpectralShape, cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray]:
    """Orientation operators (D1 [n_orient, k, k], D2 [n_orient, k, k]) of corresponding WKS descriptors
    on the two shapes (the same WKS as the network input: 32 energies from the first k_diff eigenpairs,
    unit L2(M) norm, every 32 // n_orient-th one), each pair scaled by `orientation.normalise_pair`."""
    from .spectral import unit_wks

    def ops(s: SpectralShape) -> np.ndarray:  # built once per shape and setting (SpectralShape.derived)
        key = ("wks_orientation_ops", cfg.k_diff, cfg.n_orient, cfg.k)
        if key not in s.derived:
            w = unit_wks(s, cfg.k_diff, 32)
            s.derived[key] = orientation_ops(s, w[:, :: max(1, 32 // cfg.n_orient)][:, : cfg.n_orient], cfg.k)
        return s.derived[key]

    return normalise_pair(ops(s1), ops(s2))


def learned_orientation_pair(s1: SpectralShape, s2: SpectralShape, F1: np.ndarray, F2: np.ndarray,
                             cfg: MatchConfig) -> tuple[np.ndarray, np.ndarray]:
    """Orientation operators (D1 [d, k, k], D2 [d, k, k]) of the feature net's descriptors F1 [n1, c_out],
    F2 [n2, c_out] (float, one row per vertex of s1 / s2; the same channel on both shapes corresponds):
    every c_out // n_orient_learned-th channel (d = min(n_orient_learned, c_out) of them), each pair scaled
    by `orientation.normalise_pair`. No gradient flows through them (numpy)."""
    c = F1.shape[1]
    idx = np.arange(0, c, max(1, c // max(1, cfg.n_orient_learned)))[: cfg.n_orient_learned]
    D1 = orientation_ops(s1, np.asarray(F1, np.float64)[:, idx], cfg.k)
    D2 = orientation_ops(s2, np.asarray(F2, np.float64)[:, idx], cfg.k)
    return normalise_pair(D1, D2)


def _orient_operators(s1: SpectralShape, s2: SpectralShape, cfg: MatchConfig, F1: torch.Tensor | None = None,
                      F2: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(D1, D2) of the orientation term as selected by cfg.orient_ops; the learned part needs the net's
    descriptors F1 [n1, c], F2 [n2, c] on s1 / s2."""
    parts = []
    if cfg.orient_ops in ("wks", "both"):
        parts.append(orientation_pair(s1, s2, cfg))
    if cfg.orient_ops in ("learned", "both"):
        if F1 is None or F2 is None:
            raise ValueError("learned orientation operators need the network's descriptors")
        parts.append(learned_orientation_pair(s1, s2, F1.detach().cpu().numpy(), F2.detach().cpu().numpy(), cfg))
    if not parts:
        raise ValueError(f"unknown orient_ops {cfg.orient_ops!r}")
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def wks_zoomout(P1: PreparedShape, P2: PreparedShape, cfg: MatchConfig = MatchConfig(),
                progress: Progress | None = None, cancel: Cancel | None = None) -> MatchResult:
    """Baseline without learning: WKS descriptors, regularised solve (Laplacian mask; with
    cfg.w_orient_baseline > 0 also the orientation term, solved exactly), ZoomOut."""
    from .spectral import unit_wks

    t0, c0 = time.perf_counter(), time.process_time()
    s1, s2 = P1.full, P2.full
    k = cfg.k
    d1 = unit_wks(s1, len(s1.evals), cfg.n_wks_baseline)  # all eigenpairs of the full shapes
    d2 = unit_wks(s2, len(s2.evals), cfg.n_wks_baseline)
    A = s1.evecs[:, :k].T @ (s1.mass[:, None] * d1)
    B = s2.evecs[:, :k].T @ (s2.mass[:, None] * d2)
    mask = fmaps.laplacian_mask(s1.evals[:k], s2.evals[:k])
    if cfg.w_orient_baseline > 0:
        D1, D2 = orientation_pair(s1, s2, cfg)
        C = solve_fm_oriented(A, B, mask, cfg.lam_baseline, D1, D2, cfg.w_orient_baseline)
    else:
        C = fmaps.solve_fm(A, B, mask, cfg.lam_baseline)
    if progress:
        progress(0.3, "WKS map solved; ZoomOut")
    if cancel and cancel():
        raise MatchCancelled("matching cancelled")
    FM, p2p = _refine(C, s1, s2, cfg)
    if progress:
        progress(1.0, "done")
    return MatchResult(p2p, FM, time.perf_counter() - t0, [], fmaps.fm_to_p2p(C, s1.evecs, s2.evecs), C,
                       time.process_time() - c0)


def _normalise(F: torch.Tensor, ops: ShapeOps) -> torch.Tensor:
    return F / torch.sqrt((ops.mass[:, None] * F**2).sum(0, keepdim=True) + 1e-12)


def _masks(cfg: MatchConfig, prior: Denoiser | None, o1: ShapeOps, o2: ShapeOps) -> tuple[torch.Tensor, torch.Tensor]:
    k = cfg.k
    if cfg.mask == "prior":
        if prior is None:
            raise ValueError("mask='prior' needs a prior")
        m = prior.mask.to(o1.evecs.device)
        if m.abs().sum() == 0:  # a checkpoint without a stored mask
            from .prior import prior_mask

            m = prior_mask(prior, generator=torch.Generator().manual_seed(cfg.seed)).to(o1.evecs.device)
        return m, m.T.contiguous()
    e1, e2 = o1.evals[:k].cpu().numpy(), o2.evals[:k].cpu().numpy()
    m12 = torch.as_tensor(fmaps.laplacian_mask(e1, e2), dtype=torch.float32, device=o1.evecs.device)
    m21 = torch.as_tensor(fmaps.laplacian_mask(e2, e1), dtype=torch.float32, device=o1.evecs.device)
    return m12 / m12.mean(), m21 / m21.mean()


def _proper(C: torch.Tensor, oa: ShapeOps, ob: ShapeOps, k: int) -> torch.Tensor:
    """FM(p2p(C)) for C = FM_ab [k, k] on the given shapes (no gradient): the nearest proper map."""
    Cn = C.detach().cpu().numpy()
    ea, eb = oa.evecs[:, :k].cpu().numpy(), ob.evecs[:, :k].cpu().numpy()
    p2p_ba = fmaps.fm_to_p2p(Cn, ea, eb)
    P = fmaps.p2p_to_fm(p2p_ba, ea, eb, ob.mass.cpu().numpy())
    return torch.as_tensor(P, dtype=C.dtype, device=C.device)


def _orient_quadratics(s1: SpectralShape, s2: SpectralShape, cfg: MatchConfig, dev: torch.device,
                       F1: torch.Tensor | None = None, F2: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(Q_12, Q_21) [k^2, k^2] of the orientation term in the FMReg solves (None, None when w_orient = 0);
    operators per cfg.orient_ops (`_orient_operators`; F1, F2 = the net's descriptors for 'learned' / 'both')."""
    if not cfg.w_orient:
        return None, None
    D1, D2 = _orient_operators(s1, s2, cfg, F1, F2)
    return (torch.as_tensor(orientation_quadratic(a, b, cfg.w_orient), dtype=torch.float32, device=dev)
            for a, b in ((D1, D2), (D2, D1)))


def _solve(F1: torch.Tensor, F2: torch.Tensor, o1: ShapeOps, o2: ShapeOps, k: int, mask: torch.Tensor, lam: float,
           Q: torch.Tensor | None) -> torch.Tensor:
    return fmreg(F1, F2, o1, o2, k, mask, lam) if Q is None else fmreg_oriented(F1, F2, o1, o2, k, mask, lam, Q)


def sds_sigma_range(cfg: MatchConfig, step: int) -> tuple[float, float]:
    """(sigma_min, sigma_max) of the SDS noise levels at optimisation step `step` (cfg.sds_schedule)."""
    if cfg.sds_schedule == "uniform":
        return cfg.sds_sigma_min, cfg.sds_sigma_max
    if cfg.sds_schedule == "anneal":
        f = step / max(1, cfg.steps - 1)
        hi = float(np.exp((1 - f) * np.log(cfg.sds_sigma_max) + f * np.log(cfg.sds_sigma_min)))
        return cfg.sds_sigma_min, max(hi, cfg.sds_sigma_min)
    raise ValueError(f"unknown sds_schedule {cfg.sds_schedule!r}")


def optimise_features(P1: PreparedShape, P2: PreparedShape, cfg: MatchConfig, prior: Denoiser | None,
                      progress: Progress | None = None, cancel: Cancel | None = None,
                      sds_grad_ratio: list[float] | None = None) -> tuple[DiffusionNet, list[float]]:
    """Per-pair optimisation of a fresh feature net on the decimated shapes; returns (net, loss history).

    Loss = w_sds (SDS(FM_12) + SDS(FM_21)) + w_bij ||FM_12 FM_21 - I||^2 + w_orth (||FM^T FM - I||^2 both
    ways) + w_proper (||FM_12 - FM(p2p(FM_12))||^2 + same for 21) + w_orient_loss (mean_c ||FM_12 D1_c -
    D2_c FM_12||^2 + same for 21; orientation operators of WKS, `orientation_pair`). With w_orient > 0
    the maps come from the oriented FMReg solve (`network.fmreg_oriented`). SDS needs `prior`.
    """
    dev = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    o1 = ShapeOps.from_shape(P1.low, cfg.k_diff, device=dev)
    o2 = ShapeOps.from_shape(P2.low, cfg.k_diff, device=dev)
    net = DiffusionNet(input_channels(cfg.input), cfg.c_out, cfg.width, cfg.n_blocks).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    m12, m21 = _masks(cfg, prior, o1, o2)
    x1, x2 = o1.inputs(cfg.input), o2.inputs(cfg.input)
    k = cfg.k
    eye = torch.eye(k, device=dev)
    if prior is not None:
        prior = prior.to(dev)
    if cfg.w_orient_loss:
        D1, D2 = (torch.as_tensor(D, dtype=torch.float32, device=dev) for D in orientation_pair(P1.low, P2.low, cfg))
    learned = cfg.orient_ops != "wks" and cfg.w_orient
    Q12, Q21 = (None, None) if learned else _orient_quadratics(P1.low, P2.low, cfg, dev)
    hist: list[float] = []
    for step in range(cfg.steps):
        if cancel and cancel():
            raise MatchCancelled("matching cancelled")
        F1 = _normalise(net(x1, o1), o1)
        F2 = _normalise(net(x2, o2), o2)
        if learned and step % max(1, cfg.orient_every) == 0:
            Q12, Q21 = _orient_quadratics(P1.low, P2.low, cfg, dev, F1, F2)
        C12 = _solve(F1, F2, o1, o2, k, m12, cfg.lam, Q12)
        C21 = _solve(F2, F1, o2, o1, k, m21, cfg.lam, Q21)
        loss = cfg.w_bij * (((C12 @ C21 - eye) ** 2).sum() + ((C21 @ C12 - eye) ** 2).sum())
        if cfg.w_orth:
            loss = loss + cfg.w_orth * (((C12.T @ C12 - eye) ** 2).sum() + ((C21.T @ C21 - eye) ** 2).sum())
        if cfg.w_proper:
            loss = loss + cfg.w_proper * (((C12 - _proper(C12, o1, o2, k)) ** 2).sum() + ((C21 - _proper(C21, o2, o1, k)) ** 2).sum())
        if cfg.w_orient_loss:
            l_or = ((C12 @ D1 - D2 @ C12) ** 2).sum() + ((C21 @ D2 - D1 @ C21) ** 2).sum()
            loss = loss + cfg.w_orient_loss * l_or / len(D1)
        if cfg.w_sds and prior is not None:
            lo, hi = sds_sigma_range(cfg, step)
            l_sds = cfg.w_sds * sds_loss(prior, torch.stack([C12, C21]), lo, hi, cfg.sds_samples, gen) * 2
            if sds_grad_ratio is not None:
                g_o = torch.autograd.grad(loss, [C12, C21], retain_graph=True, allow_unused=True)
                g_s = torch.autograd.grad(l_sds, [C12, C21], retain_graph=True)
                n_o = sum(float((g**2).sum()) for g in g_o if g is not None) ** 0.5
                n_s = sum(float((g**2).sum()) for g in g_s) ** 0.5
                sds_grad_ratio.append(n_s / max(n_o, 1e-12))
            loss = loss + l_sds
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist.append(float(loss.detach()))
        if progress and (step % 10 == 0 or step == cfg.steps - 1):
            progress(0.05 + 0.8 * (step + 1) / cfg.steps, f"optimising features: step {step + 1}/{cfg.steps}, loss {hist[-1]:.3f}")
    return net, hist


def map_orientation(p2p_21: np.ndarray, s1: SpectralShape, s2: SpectralShape, cfg: MatchConfig) -> tuple[float, float]:
    """(preserving, reversing) orientation energies (orientation.orientation_energy, WKS operators of
    `orientation_pair`) of the k x k functional map of a point-to-point map p2p_21 [n2] between the shapes.
    preserving < reversing for an orientation-preserving map, > for a left/right flip. No ground truth."""
    D1, D2 = orientation_pair(s1, s2, cfg)
    C = fmaps.p2p_to_fm(p2p_21, s1.evecs[:, : cfg.k], s2.evecs[:, : cfg.k], s2.mass)
    return orientation_energy(C, D1, D2), orientation_energy(C, D1, D2, reversing=True)


class DistortionProbe:
    """Local metric distortion of point-to-point maps between two shapes (needs no ground truth).

    For a seeded sample S of target vertices a and every target vertex b with d2(a, b) < radius:
        distortion = sum |d1(p(a), p(b)) - d2(a, b)| / sum d2(a, b)
    (d1 / d2 heat-method geodesics on the unit-area source / target, p = p2p_21; dimensionless, 0 for an
    isometry). Restricting the pairs to neighbourhoods keeps the global stretching of a non-isometric pair
    out of it, while a seam (a limb or side mapped to the wrong one, a partial left/right flip) still
    sends nearby target points far apart. The target distances are computed once and shared by every
    map scored; each map costs |S| distance solves on the source."""

    def __init__(self, s1: SpectralShape, s2: SpectralShape, n_samples: int = 100, radius: float = 0.15, seed: int = 0):
        from .spectral import GeodesicOracle

        rng = np.random.default_rng(seed)
        self.sample = np.sort(rng.choice(s2.n, min(n_samples, s2.n), replace=False))
        o2 = GeodesicOracle(s2.verts, s2.faces)
        d2 = np.stack([o2.from_vertex(int(a)) for a in self.sample])  # [S, n2]
        self.near = d2 < radius  # [S, n2], pairs (a, b) entering the sum
        self.d2 = d2[self.near]
        self._o1 = GeodesicOracle(s1.verts, s1.faces)

    def __call__(self, p2p_21: np.ndarray) -> float:
        """Distortion (float >= 0) of p2p_21 int [n2] (target vertex -> source vertex)."""
        p = np.asarray(p2p_21)
        d1 = np.stack([self._o1.from_vertex(int(p[a]))[p] for a in self.sample])  # [S, n2]
        return float(np.abs(d1[self.near] - self.d2).sum() / max(self.d2.sum(), 1e-12))


def map_distortion_reference(p2p_21: np.ndarray, dist1: np.ndarray, dist2: np.ndarray, sample: np.ndarray,
                             radius: float) -> float:
    """Slow plain definition of `DistortionProbe`: full geodesic matrices dist1 [n1, n1], dist2 [n2, n2]
    (unit-area units), the sampled target vertices sample int [S] and the neighbourhood radius; a double
    loop over (sample vertex, target vertex) pairs."""
    num = den = 0.0
    for a in sample:
        for b in range(len(p2p_21)):
            if dist2[a, b] < radius:
                num += abs(dist1[p2p_21[a], p2p_21[b]] - dist2[a, b])
                den += dist2[a, b]
    return float(num / den)


def match_pair(P1: PreparedShape, P2: PreparedShape, cfg: MatchConfig = MatchConfig(), prior: Denoiser | None = None,
               progress: Progress | None = None, cancel: Cancel | None = None) -> MatchResult:
    """Deep functional-map matching of a prepared pair: DiffuMatch when `prior` is given and cfg.w_sds > 0,
    the deep baseline with `deep_baseline_config(cfg)` and prior None. Returns p2p_21 on the full shapes.
    The orientation term follows cfg.orient_mode ('select', 'solve', 'off', 'fallback'; see MatchConfig)."""
    if cfg.orient_mode == "solve":
        return _match_once(P1, P2, cfg, prior, progress, cancel)
    if cfg.orient_mode not in ("off", "fallback", "select"):
        raise ValueError(f"unknown orient_mode {cfg.orient_mode!r}")
    if cfg.orient_mode == "select":
        return _match_select(P1, P2, cfg, prior, progress, cancel)
    first = _match_once(P1, P2, replace(cfg, w_orient=0.0), prior, progress, cancel)
    if cfg.orient_mode == "off":
        return first
    first.orientation = map_orientation(first.p2p_21, P1.full, P2.full, cfg)
    if first.orientation[0] <= first.orientation[1] or not cfg.w_orient:
        return first
    if progress:
        progress(0.0, "orientation-reversing map (left/right flip): solving again with the orientation term")
    second = _match_once(P1, P2, cfg, prior, progress, cancel)
    second.orientation = map_orientation(second.p2p_21, P1.full, P2.full, cfg)
    second.orientation_fallback = True
    second.seconds += first.seconds
    second.cpu_seconds += first.cpu_seconds
    return second


def _match_select(P1: PreparedShape, P2: PreparedShape, cfg: MatchConfig, prior: Denoiser | None,
                  progress: Progress | None, cancel: Cancel | None) -> MatchResult:
    """orient_mode 'select': the pipeline without and with the orientation term; the final map with the
    lower local metric distortion (`DistortionProbe`) is returned (the first on a tie)."""
    def sub(lo: float, hi: float) -> Progress | None:
        return None if progress is None else (lambda f, m: progress(lo + (hi - lo) * f, m))

    ws = [0.0, cfg.w_orient] if cfg.w_orient else [0.0]
    runs = [_match_once(P1, P2, replace(cfg, w_orient=w), prior, sub(i * 0.45, (i + 1) * 0.45), cancel)
            for i, w in enumerate(ws)]
    if progress:
        progress(0.92, "choosing the map with the lower metric distortion")
    c0, t0 = time.process_time(), time.perf_counter()
    probe = DistortionProbe(P1.full, P2.full, cfg.n_distortion, cfg.distortion_radius, cfg.seed)
    dist = [probe(r.p2p_21) for r in runs]
    orient = [map_orientation(r.p2p_21, P1.full, P2.full, cfg) for r in runs]
    best = int(np.argmin(dist))
    out = runs[best]
    out.orientation = orient[best]
    out.candidates = [{"w_orient": w, "distortion": d, "orientation": o, "chosen": i == best, "p2p_21": r.p2p_21}
                      for i, (w, d, o, r) in enumerate(zip(ws, dist, orient, runs))]
    out.seconds = sum(r.seconds for r in runs) + time.perf_counter() - t0
    out.cpu_seconds = sum(r.cpu_seconds for r in runs) + time.process_time() - c0
    if progress:
        progress(1.0, "done")
    return out


def _match_once(P1: PreparedShape, P2: PreparedShape, cfg: MatchConfig, prior: Denoiser | None,
                progress: Progress | None, cancel: Cancel | None) -> MatchResult:
    t0, c0 = time.perf_counter(), time.process_time()
    if progress:
        progress(0.02, "optimising features")
    ratio: list[float] = []
    net, hist = optimise_features(P1, P2, cfg, prior, progress, cancel, ratio)
    dev = _device(cfg.device)
    o1 = ShapeOps.from_shape(P1.full, cfg.k_diff, device=dev)
    o2 = ShapeOps.from_shape(P2.full, cfg.k_diff, device=dev)
    m12, _ = _masks(cfg, prior, o1, o2)
    with torch.no_grad():
        F1 = _normalise(net(o1.inputs(cfg.input), o1), o1)
        F2 = _normalise(net(o2.inputs(cfg.input), o2), o2)
        Q12, _ = _orient_quadratics(P1.full, P2.full, cfg, dev, F1, F2)
        C12 = _solve(F1, F2, o1, o2, cfg.k, m12, cfg.lam, Q12).cpu().numpy().astype(np.float64)
    if cancel and cancel():
        raise MatchCancelled("matching cancelled")
    if progress:
        progress(0.9, "ZoomOut refinement")
    FM, p2p = _refine(C12, P1.full, P2.full, cfg)
    if progress:
        progress(1.0, "done")
    init = fmaps.fm_to_p2p(C12, P1.full.evecs, P2.full.evecs)
    return MatchResult(p2p, FM, time.perf_counter() - t0, hist, init, C12, time.process_time() - c0, ratio)


def diffumatch(P1: PreparedShape, P2: PreparedShape, prior: Denoiser, cfg: MatchConfig = MatchConfig(),
               progress: Progress | None = None, cancel: Cancel | None = None) -> MatchResult:
    """DiffuMatch zero-shot matching of source P1 to target P2 (p2p_21: target vertex -> source vertex)."""
    return match_pair(P1, P2, cfg, prior, progress, cancel)


def deep_fm(P1: PreparedShape, P2: PreparedShape, cfg: MatchConfig = MatchConfig(),
            progress: Progress | None = None, cancel: Cancel | None = None) -> MatchResult:
    """Baseline: the same deep functional map optimisation without the prior (classical regularisers)."""
    return match_pair(P1, P2, deep_baseline_config(cfg), None, progress, cancel)


def match_files(src: str | Path, tgt: str | Path, cfg: MatchConfig, prior: Denoiser, gt_file: str | Path | None = None,
                gt_identity: bool = False, baselines: bool = True, n_eval: int | None = 2000,
                progress: Progress | None = None, cancel: Cancel | None = None, oracle: bool = False) -> dict:
    """Match two mesh / cloud files (source, target) with DiffuMatch and, with `baselines`, WKS + ZoomOut
    and the deep functional map without the prior; evaluate against a ground-truth p2p_21 file or the
    identity (same vertex count) when given.

    Returns {"p2p_21": int64 [n_target], "geodesic_error": float | None (mean geodesic distance on the
    source between predicted and true match / sqrt(source area)), "seconds": float (DiffuMatch matching
    wall time, preprocessing excluded), "cpu_seconds" (its process CPU time), "geodesic_error_median", "geodesic_error_before_zoomout" (of the
    k x k map's own p2p), "preprocess_seconds", "n_eval", "n_source", "n_target", "final_loss",
    "orientation_energy" / "orientation_energy_reversing" (`map_orientation` of the output p2p: small /
    large for an orientation-preserving map, the reverse for a left/right flip; needs no ground truth),
    "orientation_fallback" (True when the first deep map was a flip and was solved again, orient_mode),
    "select_candidates" (orient_mode 'select': per candidate map w_orient, distortion, orientation, chosen),
    "baselines": {"wks_zoomout": {...}, "deep_fm": {...}, "wks_orient_zoomout": {...}} with the same
    per-method keys (wks_orient_zoomout: the WKS solve with the orientation term, w_orient_classic, a
    diagnostic beside the plain baseline)}. With `oracle`
    and a ground truth, also "oracle_gt_zoomout": the error of ZoomOut started from the ground truth's own
    k x k functional map (the floor that a ZoomOut-refined map reaches against a noisy ground truth).
    InputError for unreadable files or a ground truth that does not fit the shapes.
    """
    from fusion.errors import InputError
    from models.common.io import load_mesh

    from .evaluation import geodesic_errors_on
    from .gtmaps import read_p2p

    def sub(lo: float, hi: float) -> Progress | None:
        return None if progress is None else (lambda f, m: progress(lo + (hi - lo) * f, m))

    t0 = time.perf_counter()
    m1, m2 = load_mesh(src), load_mesh(tgt)
    gt = None
    if gt_identity:
        if len(m1.vertices) != len(m2.vertices):
            raise InputError(f"--gt-identity: {src} has {len(m1.vertices)} vertices and {tgt} {len(m2.vertices)}")
        gt = np.arange(len(m2.vertices))
    elif gt_file is not None:
        gt = read_p2p(gt_file, len(m2.vertices), len(m1.vertices))
    if progress:
        progress(0.0, "spectral pre-processing")
    P1 = prepare(m1.vertices, m1.faces, cfg, name=str(src))
    P2 = prepare(m2.vertices, m2.faces, cfg, name=str(tgt))
    t_prep = time.perf_counter() - t0
    n_methods = 3 if baselines else 1
    res = {"diffumatch": diffumatch(P1, P2, prior, cfg, sub(0.05, 0.05 + 0.85 / n_methods), cancel)}
    if baselines:
        res["wks_zoomout"] = wks_zoomout(P1, P2, cfg, sub(0.05 + 0.85 / 3, 0.05 + 0.85 / 3 + 0.02), cancel)
        res["wks_orient_zoomout"] = wks_zoomout(P1, P2, replace(cfg, w_orient_baseline=cfg.w_orient_classic),
                                                sub(0.05 + 0.85 / 3 + 0.02, 0.05 + 0.85 / 3 + 0.05), cancel)
        res["deep_fm"] = deep_fm(P1, P2, cfg, sub(0.05 + 0.85 / 3 + 0.05, 0.9), cancel)
    orient = {k: r.orientation or map_orientation(r.p2p_21, P1.full, P2.full, cfg) for k, r in res.items()}
    errs: dict = {}
    if gt is not None:
        if progress:
            progress(0.92, "geodesic errors")
        # the prepared source has unit area: its distances are already divided by sqrt(area)
        preds = {k: r.p2p_21 for k, r in res.items()}
        preds.update({f"{k}/init": r.p2p_21_init for k, r in res.items() if r.p2p_21_init is not None})
        if oracle:
            s1, s2 = P1.full, P2.full
            C_gt = fmaps.p2p_to_fm(gt, s1.evecs[:, :cfg.k], s2.evecs[:, :cfg.k], s2.mass)
            preds["oracle"] = _refine(C_gt, s1, s2, cfg)[1]
        errs = geodesic_errors_on(P1.full.verts, P1.full.faces, 1.0, gt, preds, n_eval, cfg.seed)
    if progress:
        progress(1.0, "done")

    def fig(name: str) -> dict:
        return {"geodesic_error": errs[name]["mean"] if errs else None,
                "geodesic_error_median": errs[name]["median"] if errs else None,
                "geodesic_error_before_zoomout": errs[f"{name}/init"]["mean"] if f"{name}/init" in errs else None,
                "orientation_energy": orient[name][0],
                "orientation_energy_reversing": orient[name][1],
                "orientation_fallback": res[name].orientation_fallback,
                "select_candidates": [{k: v for k, v in c.items() if k != "p2p_21"} for c in res[name].candidates],
                "seconds": res[name].seconds, "cpu_seconds": res[name].cpu_seconds}

    out = {
        "p2p_21": res["diffumatch"].p2p_21,
        **fig("diffumatch"),
        "preprocess_seconds": t_prep,
        "n_eval": next(iter(errs.values()))["n_eval"] if errs else 0,
        "n_source": len(m1.vertices),
        "n_target": len(m2.vertices),
        "final_loss": res["diffumatch"].history[-1] if res["diffumatch"].history else None,
    }
    if baselines:
        out["baselines"] = {"wks_zoomout": fig("wks_zoomout"), "deep_fm": fig("deep_fm"),
                            "wks_orient_zoomout": fig("wks_orient_zoomout")}
    if oracle and errs:
        out["oracle_gt_zoomout"] = errs["oracle"]["mean"]
    return out
