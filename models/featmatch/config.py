"""Configuration of implicit feature matching (frozen dataclasses, one place for every option).

Units: every length is in the model's unit box [-0.5, 0.5]^3, into which each shape is normalised
(bounding-box centre at the origin, longest bounding-box side = `NormalizeConfig.extent`).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelConfig:
    """The latent-coded implicit occupancy network (IM-Net style MLP on x ⊕ z with LeakyReLU)."""

    latent_dim: int = 256
    """Size of the shape code z (the paper uses 256)."""
    hidden: tuple[int, ...] = (512, 512, 512, 256, 256, 128)
    """Widths of the hidden layers; with the final 1-d output layer there are len(hidden)+1 layers
    (the paper: 7 layers). Layer k (1-based) is the LeakyReLU output of the k-th linear layer."""
    leaky_slope: float = 0.02
    """Negative slope of the LeakyReLU (IM-Net uses 0.02)."""

    @property
    def num_layers(self) -> int:
        """Number of linear layers (hidden layers + the occupancy logit layer)."""
        return len(self.hidden) + 1


@dataclass(frozen=True)
class MatchConfig:
    """Feature matching along the latent interpolation (paper §2.2, eqs. 7–8)."""

    steps: int = 50
    """T: number of steps of the linear latent interpolation z_src -> z_tgt."""
    gn_iters: int = 3
    """N: Gauss-Newton iterations per interpolation step."""
    reg: float = 0.01
    """λ: weight of the displacement regulariser λ‖δ‖² (eq. 7)."""
    layers: tuple[int, ...] = (3, 6)
    """Which layers' features are matched (1-based, see ModelConfig.hidden)."""
    layer_weights: tuple[float, ...] = (1.0, 0.1)
    """Weight of each layer's squared feature residual in the energy (default layer 3 + 0.1 × layer 6)."""
    search_radius: float | None = 0.05
    """Largest displacement of a vertex in one interpolation step (unit-box units); None = no limit."""
    chunk: int = 16384
    """Vertices per batched Jacobian evaluation (bounds the memory use)."""
    jacobian: str = "analytic"
    """'analytic': model.FeatureJacobian (batched forward mode written out, fast); 'jacfwd':
    torch.func.jacfwd under vmap (the reference, slower on CPU)."""
    no_new_intersections: bool = True
    """Discrete-time "trajectories cannot cross": when feature_match is given the faces, after every
    step the face pairs that intersect and did not at the previous step are found (Open3D, the same
    count as pipeline.self_intersecting_pairs) and the steps of their vertices are shrunk (halved up to
    `shrink_tries` times, then the vertex keeps its previous position) until the step introduces no
    intersecting pair. Without faces (point clouds) nothing changes."""
    block_path_crossings: bool = True
    """With no_new_intersections: also shrink the steps of vertices whose straight path passes through a
    face during the step (matching.path_crossings), so a sheet cannot tunnel through another between two
    end-point tests."""
    shrink_tries: int = 3
    """Halvings of a blocked vertex's step before it keeps its previous position."""
    blocked_reference: str = "intended"
    """Features a blocked vertex tracks at the next step: 'intended' = those of the position the
    unconstrained step would have reached (it can catch up once the way is free), 'actual' = those of
    the position it was held at (it follows the flow from there)."""

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.layer_weights) or not self.layers:
            raise ValueError("MatchConfig.layers and layer_weights must be non-empty and of equal length")
        if self.steps < 1 or self.gn_iters < 1:
            raise ValueError("MatchConfig.steps and gn_iters must be >= 1")
        if self.reg < 0 or any(w < 0 for w in self.layer_weights):
            raise ValueError("MatchConfig.reg and layer_weights must be >= 0")
        if self.shrink_tries < 0:
            raise ValueError("MatchConfig.shrink_tries must be >= 0")
        if self.blocked_reference not in ("intended", "actual"):
            raise ValueError(f"MatchConfig.blocked_reference must be 'intended' or 'actual', got {self.blocked_reference!r}")
        if self.jacobian not in ("analytic", "jacfwd"):
            raise ValueError(f"MatchConfig.jacobian must be 'analytic' or 'jacfwd', got {self.jacobian!r}")


@dataclass(frozen=True)
class FitConfig:
    """Latent-code fitting for a new shape with the network fixed (autodecoder inference)."""

    iters: int = 150
    """Adam iterations."""
    points: int = 2048
    """Occupancy samples per iteration."""
    lr: float = 1e-2
    """Adam learning rate of the code."""
    code_reg: float = 1e-4
    """Weight of the code prior ‖z‖² (as in training; keeps the code near the training codes)."""
    seed: int = 0
    """Seed of the sample subsets (identical inputs give identical codes)."""
    init: str = "best"
    """Start code: 'best' = the training code with the lowest BCE on the shape's samples (a far better
    start than the mean for a well-trained autodecoder: bench shapes' IoU 0.68 -> 0.83), 'mean' = the
    mean training code."""

    def __post_init__(self) -> None:
        if self.init not in ("best", "mean"):
            raise ValueError(f"FitConfig.init must be 'best' or 'mean', got {self.init!r}")


@dataclass(frozen=True)
class SampleConfig:
    """How occupancy samples are drawn for a shape (training pools and latent fitting)."""

    n_uniform: int = 4096
    """Points uniform in the unit box."""
    n_surface: int = 8192
    """Points near the surface (surface samples + Gaussian noise, half with each sigma)."""
    sigmas: tuple[float, float] = (0.01, 0.04)
    """Noise standard deviations of the near-surface points (unit-box units)."""
    voxel_res: int = 64
    """Resolution of the voxel grid used for non-watertight meshes and point clouds."""


@dataclass(frozen=True)
class NormalizeConfig:
    """Normalisation of a shape into the model's unit box."""

    extent: float = 0.9
    """Longest bounding-box side after normalisation (the box is [-0.5, 0.5]^3)."""


@dataclass(frozen=True)
class TrainConfig:
    """Autodecoder training on a shape collection."""

    model: ModelConfig = field(default_factory=ModelConfig)
    n_shapes: int = 240
    """Procedural shapes in the collection (split evenly over humanoids, animals, chairs)."""
    mesh_dir: str | None = None
    """A folder of meshes to train on instead of the procedural collection."""
    samples: SampleConfig = field(default_factory=SampleConfig)
    mc_res: int = 48
    """Marching-cubes resolution of the procedural surfaces used for near-surface sampling."""
    steps: int = 3000
    batch_shapes: int = 16
    points_per_shape: int = 1024
    lr_net: float = 5e-4
    lr_code: float = 2e-3
    code_reg: float = 1e-4
    """Weight of the code prior ‖z‖² (mean over the batch's shapes) in the loss (DeepSDF style)."""
    code_init_std: float = 0.01
    lr_decay_every: int = 1000
    """Halve both learning rates every this many steps."""
    seed: int = 0
    threads: int = 2
    """torch CPU threads (the shared machine: at most 2)."""


PRESETS: dict[str, TrainConfig] = {
    "tiny": TrainConfig(
        model=ModelConfig(latent_dim=16, hidden=(32, 32, 32, 32, 32, 32)),
        n_shapes=6, samples=SampleConfig(n_uniform=512, n_surface=1024, voxel_res=32), mc_res=24,
        steps=40, batch_shapes=4, points_per_shape=256, lr_net=2e-3, lr_code=5e-3, lr_decay_every=10_000,
    ),
    # the shipped weights: sized for a shared 2-core CPU (≈ 13 min of niced training, a 5k-vertex mesh
    # in well under a minute); every shape's code is updated at every step (all shapes in each batch).
    # 240 shapes × 128 points × 1600 steps = 49 M occupancy samples (the first shipped weights saw 1.7 M
    # and stopped at 87 % accuracy with the loss still falling)
    "small": TrainConfig(
        model=ModelConfig(latent_dim=32, hidden=(128, 128, 128, 128, 128, 128)),
        n_shapes=240, steps=1600, batch_shapes=240, points_per_shape=128, lr_net=1e-3, lr_code=1e-2,
        lr_decay_every=500, threads=1,  # 1 thread: on the oversubscribed shared CPU 2 threads ran 3-5x slower
    ),
    "full": TrainConfig(
        model=ModelConfig(latent_dim=256, hidden=(1024, 1024, 512, 512, 256, 128)),
        n_shapes=1200, steps=60_000, batch_shapes=32, points_per_shape=4096, lr_decay_every=15_000,
    ),
}
