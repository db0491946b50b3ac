"""Test shapes shared by the DiffuMatch tests."""
from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import cKDTree


def sym_blob(subdiv: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bumpy ellipsoid with exactly one reflective symmetry (x -> -x): vertices float [V, 3], faces int
    [F, 3] and the vertex permutation int [V] of the reflection."""
    s = trimesh.creation.icosphere(subdivisions=subdiv)
    v = np.asarray(s.vertices) * np.array([1.0, 1.6, 0.7])
    v = v * (1 + 0.25 * v[:, 1:2] + 0.15 * v[:, :1] ** 2 + 0.1 * v[:, 2:3] * v[:, 1:2])
    d, perm = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    assert d.max() < 1e-9
    return v, np.asarray(s.faces), perm
