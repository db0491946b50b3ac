"""Configuration of LPDC-Net and its Occupancy-Flow-style ODE baseline: frozen dataclasses, presets.

Units: every length here is in *unit scale*, i.e. after the whole input window of a sequence has been
normalised so that its bounding box fits the cube [-0.5, 0.5]^3 (largest side = 1, see
`data.normalisation`). Times are in [0, 1] (first frame 0, last frame 1).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes. The reference widths of the paper are hidden 128, code 128, 5 ResNet blocks."""

    c_dim: int = 128
    """Size of the per-frame codes (spatial code s_k and fused spatio-temporal code z_k)."""
    enc_hidden: int = 128
    """Hidden width of both encoder branches (spatial PointNet-ResNet and space-time PointNet-ResNet)."""
    enc_blocks: int = 5
    """ResNet blocks per encoder branch (max-pooling between blocks)."""
    dec_hidden: int = 128
    """Hidden width of the conditional-batch-norm occupancy decoder."""
    dec_blocks: int = 5
    """Conditional ResNet blocks of the occupancy decoder."""
    motion_hidden: int = 128
    """Hidden width of the displacement MLP g (LPDC) and of the velocity field v (ODE baseline)."""
    motion_blocks: int = 5
    """ResNet blocks of g / v."""
    n_frames: int = 17
    """Number of frames the model is trained on (the paper's 17)."""


@dataclass(frozen=True)
class ODEConfig:
    """The fixed-step solver of the Occupancy-Flow-style baseline (used in training and inference)."""

    method: str = "rk4"
    """"rk4" (classic 4th-order Runge-Kutta, 4 field evaluations a step) or "euler" (1 evaluation)."""
    substeps: int = 2
    """Solver steps per interval between consecutive frames (so 16 intervals x 2 = 32 steps for 17 frames)."""


@dataclass(frozen=True)
class RealSource:
    """A constant-connectivity mesh sequence used as training data (frames [first, last) of the sorted folder)."""

    path: str
    first: int = 0
    last: int = -1
    """Exclusive end index; -1 = to the end."""
    cyclic: bool = False
    """The motion loops (e.g. a gallop cycle): windows may wrap around."""
    weight: float = 1.0
    """Relative sampling weight of this source among the real sources."""


@dataclass(frozen=True)
class DataConfig:
    """What one training example holds and how it is drawn."""

    n_frames: int = 17
    n_points: int = 300
    """Input points per frame."""
    noise_std: float = 0.001
    """Gaussian noise on the input points (unit scale)."""
    n_occ_t0: int = 1024
    """Occupancy query points at t0 (half uniform in the padded cube, half near the surface)."""
    n_occ_t: int = 64
    """Occupancy query points at every other frame (for the backward-displacement loss)."""
    n_corr: int = 128
    """Tracked surface points (for the correspondence loss)."""
    uneven_prob: float = 0.5
    """Probability that a procedural example has unevenly sampled times."""
    padding: float = 0.1
    """Query points and the marching-cubes box cover [-0.5 - padding/2, 0.5 + padding/2]^3."""
    near_surface_std: tuple[float, float] = (0.01, 0.04)
    """Standard deviations (unit scale) of the two near-surface query-point shells."""
    procedural_kinds: tuple[str, ...] = ("humanoid", "quadruped", "tubes")
    """Procedural shape families drawn (uniformly)."""
    real_sources: tuple[RealSource, ...] = ()
    """Real mesh sequences mixed into training."""
    real_fraction: float = 0.0
    """Fraction of examples drawn from `real_sources` (the rest are procedural)."""
    augment_real: bool = True
    """Random rotation about the vertical (y) axis, mirroring and time reversal of real sequences."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings."""

    steps: int = 2000
    batch_size: int = 4
    lr: float = 5e-4
    lr_final: float = 5e-5
    """Cosine decay from `lr` to `lr_final`."""
    grad_clip: float = 5.0
    w_occ_t0: float = 1.0
    w_occ_bwd: float = 1.0
    w_occ_fwd: float = 1.0
    w_corr: float = 1.0
    max_minutes: float = 0.0
    """Stop early after this many minutes of wall time (0 = no limit); the steps done are recorded."""
    log_every: int = 25
    bf16: bool = False
    """CPU/GPU autocast to bfloat16 for the matrix products (master weights stay float32)."""


@dataclass(frozen=True)
class GenerationConfig:
    """Mesh extraction at t0 (Occupancy Networks' multi-resolution iso-surface extraction, MISE)."""

    resolution0: int = 32
    """Cells per axis of the coarsest grid."""
    upsampling_steps: int = 2
    """Refinement levels (each doubles the resolution near the surface); 0 = a plain grid."""
    threshold: float = 0.3
    """Occupancy probability of the iso-surface."""
    padding: float = 0.1
    points_batch: int = 16_384
    """Query points per decoder call during extraction (the folded decoder walks them in cache-sized blocks)."""
    coarsest: int = 16
    """MISE starts from a grid this coarse (cells per axis): while resolution0 is an even multiple of at
    least 2 x coarsest, it is halved and one refinement level added, so that the final grid
    resolution0 * 2^upsampling_steps is unchanged and only the cells near the surface are refined
    (0 = start at resolution0). A plain grid (upsampling_steps 0) is left as it is."""
    mise_dilation: int = 0
    """Rings of neighbour cells also subdivided around each straddling cell (0 = Occupancy Networks' MISE)."""
    mise_follow: bool = True
    """Follow the surface across cell borders at every MISE level (see `generation.extract_mise`)."""


@dataclass(frozen=True)
class LPDCConfig:
    """Everything a run needs, for one model kind ("lpdc" or "ode")."""

    kind: str = "lpdc"
    model: ModelConfig = field(default_factory=ModelConfig)
    ode: ODEConfig = field(default_factory=ODEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def to_dict(cfg: Any) -> dict:
    """A dataclass config as plain JSON-able dict (tuples become lists)."""
    return asdict(cfg)


def _from_dict(cls: type, d: dict) -> Any:
    kwargs = {}
    names = {f.name: f for f in fields(cls)}
    for k, v in d.items():
        if k not in names:
            continue
        if cls is DataConfig and k == "real_sources":
            v = tuple(RealSource(**s) for s in v)
        elif isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)


def config_from_dict(d: dict) -> LPDCConfig:
    """Inverse of `to_dict(LPDCConfig)` (unknown keys are ignored, missing keys take defaults)."""
    return LPDCConfig(
        kind=d.get("kind", "lpdc"),
        model=_from_dict(ModelConfig, d.get("model", {})),
        ode=_from_dict(ODEConfig, d.get("ode", {})),
        data=_from_dict(DataConfig, d.get("data", {})),
        train=_from_dict(TrainConfig, d.get("train", {})),
        generation=_from_dict(GenerationConfig, d.get("generation", {})),
    )


def shared_real_sources(data_root: str) -> tuple[RealSource, ...]:
    """The real training sequences of the shipped weights, relative to the shared data folder.

    samba: sorted frames 17..34 (mesh_0085 .. mesh_0170) only. Frames 0..16 (mesh_0000 .. mesh_0080)
    are the evaluation window of the bench and are never trained on. horse-gallop: all 24 frames (a
    gallop cycle, so windows wrap around); it is not used for evaluation.
    """
    return (
        RealSource(f"{data_root}/sequences/samba", first=17, last=35, cyclic=False, weight=1.0),
        RealSource(f"{data_root}/sequences/horse-gallop", first=0, last=24, cyclic=True, weight=0.35),
    )


def preset(name: str, kind: str = "lpdc", data_root: str | None = None) -> LPDCConfig:
    """The named preset: "tiny" (tests, seconds), "small" (the shipped weights: 10 minutes of wall time
    per model on one CPU thread after a 4.5-minute occupancy warm-up, as many steps as fit), "full"
    (reference sizes, a long schedule, for a GPU or `torchrun`).

    `data_root` is the shared real-data folder; when given (and the preset uses real data) the samba
    training frames and horse-gallop are mixed in (see `shared_real_sources`).
    """
    if name == "tiny":
        model = ModelConfig(c_dim=32, enc_hidden=32, enc_blocks=2, dec_hidden=32, dec_blocks=2,
                            motion_hidden=32, motion_blocks=2, n_frames=5)
        data = DataConfig(n_frames=5, n_points=64, n_occ_t0=256, n_occ_t=32, n_corr=32)
        train = TrainConfig(steps=30, batch_size=2, lr=2e-3, lr_final=1e-3, log_every=5)
        gen = GenerationConfig(resolution0=16, upsampling_steps=1)
        cfg = LPDCConfig(kind=kind, model=model, data=data, train=train, generation=gen,
                         ode=ODEConfig(method="rk4", substeps=1))
    elif name == "small":
        # reference widths for the decoder and g / v (hidden 128, code 128); a narrower encoder (64) so
        # that training fits ~15 min on one CPU thread
        model = ModelConfig(enc_hidden=64, enc_blocks=3, dec_blocks=3, motion_blocks=3)
        data = DataConfig(n_occ_t0=1024, n_occ_t=64, n_corr=256, uneven_prob=0.3)
        train = TrainConfig(steps=100_000, batch_size=4, lr=1.5e-3, lr_final=1e-4, max_minutes=10.0, bf16=True)
        cfg = LPDCConfig(kind=kind, model=model, data=data, train=train)
    elif name == "full":
        data = DataConfig(n_occ_t0=2048, n_occ_t=128, n_corr=512)
        train = TrainConfig(steps=200_000, batch_size=16, lr=1e-4, lr_final=1e-5, log_every=100)
        cfg = LPDCConfig(kind=kind, data=data, train=train)
    else:
        raise ValueError(f"unknown preset {name!r} (tiny|small|full)")
    if data_root is not None and name in ("small", "full"):
        cfg = replace(cfg, data=replace(cfg.data, real_sources=shared_real_sources(data_root), real_fraction=0.6))
    return cfg
