"""The small Protocol through which the fusion loop asks any tracker for the motion of the graph.

fusion never imports tracker/: app/ wires a concrete estimator (classical ICP + ARAP, neural) into the loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from fusion.frame import RGBDFrame
from fusion.graph import DeformationGraph, GraphMotion


@dataclass
class TrackingInput:
    """What the fusion loop hands a tracker for one live frame.

    frame: the live RGB-D frame.
    graph: the deformation graph (canonical frame).
    prev_motion: the graph motion of the previous frame (the initial guess).
    model_points: float32 [M, 3] canonical surface samples (metres, canonical frame).
    model_normals: float32 [M, 3] unit normals of those samples (canonical frame).
    model_anchors: int32 [M, 4] graph nodes each sample is skinned to (-1 = none).
    model_weights: float32 [M, 4] skinning weights (rows sum to 1 where any anchor is valid).
    model_colors: optional uint8 [M, 3].
    canonical_frame: optional, the (preprocessed) frame the canonical volume was initialised from: it sees
      the canonical surface at the identity motion, so a tracker can use its image as an exactly anchored
      photometric reference (the fused model colours are blurred to the voxel size).
    """

    frame: RGBDFrame
    graph: DeformationGraph
    prev_motion: GraphMotion
    model_points: np.ndarray
    model_normals: np.ndarray
    model_anchors: np.ndarray
    model_weights: np.ndarray
    model_colors: np.ndarray | None = None
    canonical_frame: RGBDFrame | None = None


@dataclass
class TrackingResult:
    """The estimated motion for the live frame; ok=False means the frame should be skipped."""

    motion: GraphMotion
    ok: bool = True
    message: str = ""
    stats: dict = field(default_factory=dict)


@runtime_checkable
class MotionEstimator(Protocol):
    """Anything that estimates the graph motion of a live frame."""

    name: str

    def estimate(self, inp: TrackingInput) -> TrackingResult:
        """Estimate the motion canonical -> live frame for `inp.frame`."""
        ...

    def reset(self) -> None:
        """Forget any state (keyframes, history)."""
        ...
