"""Embedded deformation graph over the canonical surface (DynamicFusion / NNRT) and its motion.

Data contracts (../shared/ARCHITECTURE.md):
- DeformationGraph(nodes [N,3] float32 m, edges [N,K] int32 (-1 = none), radius m)
- GraphMotion(rotations [N,3,3] float32, translations [N,3] float32)
The warp of a canonical point p with anchors a_k and skinning weights w_k (sum 1) is
    W(p) = sum_k w_k (R_{a_k} (p - g_{a_k}) + g_{a_k} + t_{a_k})        (NNRT eq. 2)
Node sampling, neighbours, skinning and node insertion are implemented below this header.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DeformationGraph:
    """Graph nodes in the canonical frame.

    nodes: float32 [N, 3] metres; edges: int32 [N, K] neighbour ids, -1 = none;
    radius: node coverage radius in metres (skinning sigma follows from it).
    """

    nodes: np.ndarray
    edges: np.ndarray
    radius: float
    edge_weights: np.ndarray | None = None  # float32 [N, K], optional

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.nodes.shape[0])


@dataclass
class GraphMotion:
    """Per-node rigid transforms: rotations float32 [N, 3, 3], translations float32 [N, 3] metres."""

    rotations: np.ndarray
    translations: np.ndarray
    meta: dict = field(default_factory=dict)

    @staticmethod
    def identity(n: int) -> "GraphMotion":
        """The motion that leaves every node in place."""
        return GraphMotion(np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)), np.zeros((n, 3), np.float32))

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.translations.shape[0])
