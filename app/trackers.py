"""Wiring: build a motion estimator (fusion.motion.MotionEstimator) by name for the CLI and the GUI."""
from __future__ import annotations

import importlib.util

from fusion.errors import InputError, NotAvailableError

TRACKERS = ("classical", "neural")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without a GPU is an InputError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device '{device}' (auto, cpu or cuda)")
    return device


def neural_available() -> bool:
    """True when the neural tracker (issue #4) is installed in this checkout."""
    return importlib.util.find_spec("tracker.neural") is not None


def make_tracker(name: str, device: str = "cpu"):
    """A fresh estimator: 'classical' (depth ICP + ARAP) or 'neural' (NNRT keyframe tracker)."""
    if name == "classical":
        from tracker.classical import ClassicalTracker, ClassicalTrackerConfig

        return ClassicalTracker(ClassicalTrackerConfig())
    if name == "neural":
        if not neural_available():
            raise NotAvailableError("the neural tracker is not available yet: it lands with issue #4")
        from tracker import neural

        if hasattr(neural, "make_neural_tracker"):
            return neural.make_neural_tracker(device=device)
        return neural.NeuralTracker(neural.NeuralTrackerConfig(device=device))
    raise InputError(f"unknown tracker '{name}' (choose from {', '.join(TRACKERS)})")
