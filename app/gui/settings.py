"""Reconstruction settings of the desktop app: one frozen dataclass, built-in presets, preset files
(TOML or JSON) and the wiring from settings to the fusion loop and a motion estimator.

Qt-free, so the worker, the controls widget, the `gui` command and tests share it. Units: metres and
frames, as in `fusion.pipeline.FusionConfig`; the widgets show millimetres / centimetres.
"""
from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from fusion.errors import InputError

#: tracker choices: (key, label)
TRACKERS = (
    ("classical", "Classical (depth ICP + ARAP)"),
    ("neural", "Neural (NNRT keyframes)"),
    ("none", "None (static scene)"),
    ("groundtruth", "Ground truth (synthetic oracle)"),
)
#: processing resolutions offered: (label, (width, height) or None = as delivered)
PROCESSING_SIZES = (("320 x 240", (320, 240)), ("640 x 480", (640, 480)), ("as recorded", None))


@dataclass(frozen=True)
class ReconSettings:
    """Everything the reconstruction controls set (one preset)."""

    tracker: str = "classical"
    """classical | neural | none | groundtruth"""
    device: str = "cpu"
    """cpu | cuda (the volume and the neural tracker)"""
    voxel_size: float = 0.01
    """TSDF voxel edge, metres"""
    trunc_voxels: float = 4.0
    """truncation band the tracker sees, voxels"""
    mesh_trunc_voxels: float = 2.0
    """truncation band meshes are extracted from, voxels (0 = the tracker's; see fusion.tsdf.volume)"""
    carve_px: float = 2.0
    """silhouette carving of the mesh channel, pixels (0 = off; see fusion.tsdf.VolumeConfig.carve_px)"""
    depth_min: float = 0.1
    """nearer depth is ignored, metres"""
    depth_max: float = 3.0
    """farther depth is ignored, metres"""
    node_coverage: float = 0.05
    """deformation-graph node coverage radius, metres"""
    keyframe_interval: int = 50
    """neural tracker: a new keyframe every this many tracked frames"""
    features: str = "none"
    """classical tracker: sparse keyframe features none | sift | orb (tracker/features.py)"""
    processing_size: tuple[int, int] | None = (320, 240)
    """(width, height) frames are resized to before fusion; None = as delivered"""
    sequence_after: int = 20
    """freeze the canonical mesh after this many fused frames and record its warp per frame (the warped
    sequence export); 0 = off"""
    memory_budget_gb: float = 2.0
    """the TSDF volume may use at most this much memory, GiB"""

    def __post_init__(self) -> None:
        keys = [k for k, _ in TRACKERS]
        if self.tracker not in keys:
            raise InputError(f"tracker must be one of {', '.join(keys)}, got {self.tracker!r}")
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"device must be cpu or cuda, got {self.device!r}")
        for name in ("voxel_size", "trunc_voxels", "node_coverage", "memory_budget_gb"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{name} must be a positive number, got {v!r}")
        m = self.mesh_trunc_voxels
        if not (isinstance(m, (int, float)) and math.isfinite(m) and (m == 0 or m >= 1)):
            raise InputError(f"mesh_trunc_voxels must be 0 (off) or at least 1 voxel, got {m!r}")
        from fusion.tsdf.volume import DEPTH_TILE  # the carving radius limit (VolumeConfig.carve_px)

        c = self.carve_px
        if not (isinstance(c, (int, float)) and 0 <= c <= DEPTH_TILE):
            raise InputError(f"carve_px must be a number of pixels in [0, {DEPTH_TILE}], got {c!r}")
        if not 0 <= self.depth_min < self.depth_max:
            raise InputError(f"depth range [{self.depth_min}, {self.depth_max}] m is empty")
        from app.trackers import FEATURES

        if self.features not in FEATURES:
            raise InputError(f"features must be one of {', '.join(FEATURES)}, got {self.features!r}")
        if self.keyframe_interval < 1 or self.sequence_after < 0:
            raise InputError("keyframe_interval must be >= 1 and sequence_after >= 0")
        if self.processing_size is not None:
            w, h = self.processing_size
            if w < 16 or h < 16:
                raise InputError(f"processing size {w}x{h} is too small")

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        """Plain dict (processing_size as a [w, h] list, or "native")."""
        d = asdict(self)
        d["processing_size"] = list(self.processing_size) if self.processing_size else "native"
        return d

    @staticmethod
    def from_dict(d: dict[str, Any], base: "ReconSettings | None" = None) -> "ReconSettings":
        """Settings from a plain dict; keys not given keep `base`'s values (defaults). Unknown keys and wrong
        types raise InputError."""
        base = base or ReconSettings()
        known = {f.name: f for f in fields(ReconSettings)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k not in known:
                raise InputError(f"unknown setting {k!r} (known: {', '.join(known)})")
            if k == "processing_size":
                if v in (None, "native", "as recorded"):
                    kw[k] = None
                elif isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
                    kw[k] = (int(v[0]), int(v[1]))
                else:
                    raise InputError(f"processing_size must be [width, height] or \"native\", got {v!r}")
            elif k in ("tracker", "device", "features"):
                if not isinstance(v, str):
                    raise InputError(f"{k} must be a string, got {v!r}")
                kw[k] = v
            elif k in ("keyframe_interval", "sequence_after"):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise InputError(f"{k} must be an integer, got {v!r}")
                kw[k] = int(v)
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InputError(f"{k} must be a number, got {v!r}")
                kw[k] = float(v)
        return replace(base, **kw)

    # ------------------------------------------------------------------ wiring
    def fusion_config(self) -> "Any":
        """The `fusion.pipeline.FusionConfig` these settings imply."""
        from fusion.pipeline import FusionConfig

        return FusionConfig(
            voxel_size=self.voxel_size, trunc_voxels=self.trunc_voxels, mesh_trunc_voxels=self.mesh_trunc_voxels,
            carve_px=self.carve_px, depth_min=self.depth_min, depth_max=self.depth_max,
            node_coverage=self.node_coverage,
            processing_size=self.processing_size, memory_budget_gb=self.memory_budget_gb, device=self.device,
            freeze_sequence_after=self.sequence_after or None,
        )


PRESETS: dict[str, ReconSettings] = {
    "Default (320x240, 1 cm)": ReconSettings(),
    "Fast preview (none, 2 cm)": ReconSettings(tracker="none", voxel_size=0.02, node_coverage=0.08),
    "Fine (640x480, 5 mm)": ReconSettings(voxel_size=0.005, processing_size=(640, 480), depth_max=1.5),
}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def save_preset(path: str | Path, settings: ReconSettings) -> Path:
    """Write `settings` to `path` as TOML (`.toml`, one [reconstruction] table) or JSON (`.json`), atomically."""
    from fusion.atomic import write_text_atomic

    p = Path(path)
    d = settings.to_dict()
    if p.suffix.lower() == ".json":
        text = json.dumps({"reconstruction": d}, indent=2) + "\n"
    elif p.suffix.lower() == ".toml":
        text = "# nrstudio reconstruction preset\n[reconstruction]\n" + "".join(
            f"{k} = {_toml_value(v)}\n" for k, v in d.items())
    else:
        raise InputError(f"{p}: presets are .toml or .json files")
    write_text_atomic(p, text)
    return p


def load_preset(path: str | Path) -> ReconSettings:
    """Read a preset written by `save_preset` (or by hand: any subset of the keys, in a [reconstruction] table
    or at the top level). InputError names the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: preset file not found")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"{p}: not a readable preset ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: a preset is a table of settings")
    table = data.get("reconstruction", data)
    if not isinstance(table, dict):
        raise InputError(f"{p}: [reconstruction] must be a table")
    try:
        return ReconSettings.from_dict(table)
    except InputError as e:
        raise InputError(f"{p}: {e}") from None


def tracker_availability() -> dict[str, tuple[bool, str]]:
    """Which trackers can run here: {key: (available, reason when not)}. Imports torch (call it off the UI
    thread). "groundtruth" is decided per recording (its .gt.npz sidecar), not here."""
    out: dict[str, tuple[bool, str]] = {"none": (True, ""), "groundtruth": (True, "")}
    try:
        import tracker.classical  # noqa: F401

        out["classical"] = (True, "")
    except Exception as e:  # an import error in the tracker package must not stop the app
        out["classical"] = (False, f"tracker.classical cannot be imported ({type(e).__name__}: {e})")
    try:
        from tracker.training import default_weights_path

        import tracker.neural  # noqa: F401

        w = default_weights_path()
        out["neural"] = (True, "") if w.is_file() else (False, f"no trained weights at {w} (nrstudio train tracker)")
    except Exception as e:
        out["neural"] = (False, f"tracker.neural is not available ({type(e).__name__}: {e})")
    return out


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU (imports torch: call it off the UI thread)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def make_estimator(settings: ReconSettings, groundtruth_file: str | Path | None = None):
    """The motion estimator for `settings.tracker` (a fusion.motion.MotionEstimator).

    groundtruth_file: the recording's .gt.npz sidecar, needed by the "groundtruth" oracle.
    Raises InputError when the tracker cannot be made (missing weights, no ground truth ...).
    """
    from fusion.pipeline import GroundTruthMotion, IdentityMotion

    if settings.tracker == "none":
        return IdentityMotion()
    if settings.tracker == "classical":
        from app.trackers import make_tracker  # the CLI's wiring: replay and the app track alike

        return make_tracker("classical", features=settings.features)
    if settings.tracker == "neural":
        try:
            from tracker.neural import NeuralTracker, NeuralTrackerConfig
        except ImportError as e:
            raise InputError(f"the neural tracker is not available ({e})") from None
        try:
            return NeuralTracker(NeuralTrackerConfig(device=settings.device, keyframe_interval=settings.keyframe_interval))
        except FileNotFoundError as e:
            raise InputError(f"the neural tracker has no weights ({e})") from None
    if settings.tracker == "groundtruth":
        if groundtruth_file is None or not Path(groundtruth_file).is_file():
            raise InputError("the ground-truth oracle needs a synthetic recording with a .gt.npz sidecar")
        from fusion.synthetic.groundtruth import load_groundtruth

        gt = load_groundtruth(groundtruth_file)
        return GroundTruthMotion(gt)
    raise InputError(f"unknown tracker {settings.tracker!r}")
