"""Wiring: build a motion estimator (fusion.motion.MotionEstimator) by name for the CLI and the GUI."""
from __future__ import annotations

import importlib.util

from fusion.device import resolve_device  # noqa: F401  (the CLI's device check; app.commands.replay uses it)
from fusion.errors import InputError, NotAvailableError
from tracker.features import DETECTORS

TRACKERS = ("classical", "neural")


def neural_available() -> bool:
    """True when the neural tracker (issue #4) is installed in this checkout."""
    return importlib.util.find_spec("tracker.neural") is not None


#: the classical tracker's keyframe-feature choices (`ClassicalTrackerConfig.features`)
FEATURES = ("none", *DETECTORS)


def make_tracker(name: str, device: str = "cpu", features: str = "none"):
    """A fresh estimator: 'classical' (depth ICP + ARAP) or 'neural' (NNRT keyframe tracker). features: the
    classical tracker's sparse keyframe features ("none", "sift" or "orb"; tracker/features.py)."""
    if features not in FEATURES:
        raise InputError(f"unknown features '{features}' (choose from {', '.join(FEATURES)})")
    if name == "classical":
        from tracker.classical import ClassicalTracker, ClassicalTrackerConfig

        return ClassicalTracker(ClassicalTrackerConfig(features=features))
    if features != "none":
        raise InputError(f"--features {features} applies to the classical tracker, not to '{name}'")
    if name == "neural":
        if not neural_available():
            raise NotAvailableError("the neural tracker is not available yet: it lands with issue #4")
        from tracker import neural

        if hasattr(neural, "make_neural_tracker"):
            return neural.make_neural_tracker(device=device)
        return neural.NeuralTracker(neural.NeuralTrackerConfig(device=device))
    raise InputError(f"unknown tracker '{name}' (choose from {', '.join(TRACKERS)})")
