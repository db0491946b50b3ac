"""Inputs of the compressor: load point clouds or meshes, bring them to one size, normalise the dataset."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.errors import InputError
from models.common.io import CLOUD_EXTS, MESH_EXTS, load_mesh, load_points, sample_surface


@dataclass(frozen=True)
class Normalisation:
    """Dataset-wide similarity normalisation: normalised = (p - centre) / scale (one for all clouds, so
    relative motion is kept). centre float [3] (input units), scale float (input units per unit)."""

    centre: tuple[float, float, float]
    scale: float

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Input units -> normalised frame; p float [..., 3]."""
        return (np.asarray(p, np.float64) - np.asarray(self.centre)) / self.scale

    def invert(self, p: np.ndarray) -> np.ndarray:
        """Normalised frame -> input units; p float [..., 3]."""
        return np.asarray(p, np.float64) * self.scale + np.asarray(self.centre)

    @staticmethod
    def fit(clouds: list[np.ndarray]) -> "Normalisation":
        """Centre of the joint bounding box, scale = half its longest side (normalised clouds lie in [-1, 1])."""
        lo = np.min([c.min(0) for c in clouds], axis=0)
        hi = np.max([c.max(0) for c in clouds], axis=0)
        scale = float(max((hi - lo).max() / 2.0, 1e-12))
        return Normalisation(tuple(float(v) for v in (lo + hi) / 2.0), scale)


@dataclass
class Dataset:
    """Clouds of equal size: clouds float64 [I, N, 3] in input units, names (one per cloud), notes (what
    was resampled, for the caller to show)."""

    clouds: np.ndarray
    names: list[str]
    notes: list[str] = field(default_factory=list)


def check_cloud(points: np.ndarray, name: str) -> np.ndarray:
    """Validate one cloud float [N, 3]: non-empty and finite, else InputError naming it."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"{name}: expected a point cloud of shape [N, 3], got {p.shape}")
    if len(p) == 0:
        raise InputError(f"{name}: the cloud is empty")
    if not np.isfinite(p).all():
        raise InputError(f"{name}: the cloud has NaN or infinite coordinates")
    return p


def resample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random subset of n points (without replacement), or all points plus random repeats when fewer.
    points float [P, 3] -> float [n, 3]."""
    p = len(points)
    if p == n:
        return points
    if p > n:
        return points[np.sort(rng.choice(p, size=n, replace=False))]
    return np.concatenate([points, points[rng.choice(p, size=n - p, replace=True)]])


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files named, with folders expanded to their mesh / cloud files (sorted by name)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in MESH_EXTS | CLOUD_EXTS)
            if not files:
                raise InputError(f"{p}: the folder holds no point cloud or mesh files")
            out.extend(files)
        elif not p.exists():
            raise InputError(f"{p}: no such file")
        else:
            out.append(p)
    if not out:
        raise InputError("no input files")
    return out


def load_dataset(paths: list[str | Path], n_points: int | None = None, seed: int = 0) -> Dataset:
    """Load clouds (PLY/XYZ/NPY/...) and meshes (sampled by area) as one equal-size dataset.

    n_points: the size of every cloud; None = the common size of the point clouds when they agree, else
    16384 (meshes are always sampled to it). Clouds of another size are resampled, with a note saying so.
    Raises InputError for missing, unreadable, empty or non-finite inputs."""
    files = expand_inputs(paths)
    rng = np.random.default_rng(seed)
    raw: list[tuple[str, np.ndarray | None, object]] = []
    for f in files:
        if f.suffix.lower() in {".npy", ".npz", ".xyz", ".pts"}:
            raw.append((str(f), check_cloud(load_points(f), str(f)), None))
            continue
        mesh = load_mesh(f)
        if mesh.is_cloud:
            raw.append((str(f), check_cloud(mesh.vertices, str(f)), None))
        else:
            raw.append((str(f), None, mesh))
    sizes = {len(p) for _, p, _ in raw if p is not None}
    notes: list[str] = []
    if n_points is None:
        n_points = sizes.pop() if len(sizes) == 1 else 16384
    if n_points < 1:
        raise InputError(f"--points must be positive, got {n_points}")
    clouds = []
    resampled = []
    for name, pts, mesh in raw:
        if pts is None:
            pts, _ = sample_surface(mesh, n_points, rng=rng)
        elif len(pts) != n_points:
            resampled.append(f"{Path(name).name} ({len(pts)})")
            pts = resample(pts, n_points, rng)
        clouds.append(check_cloud(pts, name))
    if resampled:
        notes.append(f"resampled {len(resampled)} cloud(s) to {n_points} points: " + ", ".join(resampled[:8])
                     + (" ..." if len(resampled) > 8 else ""))
    n_mesh = sum(1 for _, p, _ in raw if p is None)
    if n_mesh:
        notes.append(f"sampled {n_mesh} mesh(es) with {n_points} points each")
    return Dataset(np.stack(clouds), [name for name, _, _ in raw], notes)
