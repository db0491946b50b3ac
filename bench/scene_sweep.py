"""Accuracy of a classical-tracker configuration on the synthetic scenes over several draws of their motion.

The harness behind the five-draw figures of docs/dev/tracker_experiments.md: each scene ("cloth", "cylinder",
"humanoid": the bundled sample's settings with the object swapped in) is rendered at 640x480, fused at 320x240
with 1 cm voxels (`fusion.bench_fusion.scene_run`, as `nrstudio bench` does), tracked by
`ClassicalTracker(ClassicalTrackerConfig(**CONFIG))`, once per motion seed. Prints deformation / geometry /
visible-deformation errors (mm) per seed and their means, beside the defaults' when --compare is given.

--motion sets what moves the model instead of the plain tracker, to see how far each part of the problem
is from the targets: "oracle" (`fusion.pipeline.GroundTruthMotion`: the graph fit to the true surface, no
tracker at all), "perfect-visible" / "perfect-all" (`tracker.oracle.PerfectCorrespondenceTracker`: the
configured tracker given the exact live position of every model sample the frame sees / of every sample).

    .venv/bin/python bench/scene_sweep.py --config '{"features": "sift"}' --compare
    .venv/bin/python bench/scene_sweep.py --config '{"arap_huber": 0.01}' --scenes humanoid --seeds 0-4
    .venv/bin/python bench/scene_sweep.py --motion perfect-visible --scenes humanoid --compare
    .venv/bin/python bench/scene_sweep.py --motion perfect-visible --scenes humanoid --seeds 0 --oracle '{"frames": [48, 89]}'
    .venv/bin/python bench/scene_sweep.py --motion perfect-visible --scenes humanoid --oracle '{"frames": [[48, 51], [78, 81]], "live_depth": true}'
    .venv/bin/python bench/scene_sweep.py --fusion '{"model_channel": "mesh"}' --compare

Nested settings (`feature_match`, `flow_match`) are given as JSON objects.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KEYS = ("deformation_error_mm", "geometry_error_mm", "deformation_error_visible_mm")
MOTIONS = ("tracker", "oracle", "perfect-visible", "perfect-all")


def json_object(text: str, flag: str) -> dict[str, Any]:
    """The JSON object given to `flag` (ValueError when it is not valid JSON or not an object)."""
    value = json.loads(text)  # json.JSONDecodeError is a ValueError
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


def _check_names(cls: type, spec: dict[str, Any], what: str) -> None:
    """ValueError naming the keys of `spec` that are not fields of the dataclass `cls`."""
    import dataclasses

    unknown = sorted(set(spec) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what}: {', '.join(unknown)}")


def tracker_config(spec: dict[str, Any]):
    """ClassicalTrackerConfig from a JSON-like dict (nested dataclass settings as dicts); ValueError on unknown
    keys."""
    from tracker.classical import ClassicalTrackerConfig
    from tracker.features import FeatureConfig
    from tracker.flow import FlowMatchConfig

    _check_names(ClassicalTrackerConfig, spec, "tracker settings")
    kw = dict(spec)
    for key, cls in (("feature_match", FeatureConfig), ("flow_match", FlowMatchConfig)):
        if isinstance(kw.get(key), dict):
            kw[key] = cls(**kw[key])
    return ClassicalTrackerConfig(**kw)


def oracle_degradation(spec: dict[str, Any]):
    """`tracker.oracle.OracleDegradation` from its settings as a JSON object (`frames` as [first, last] or
    [[first, last], ...]); None for {}. ValueError on unknown or bad settings."""
    from tracker.oracle import OracleDegradation

    if not spec:
        return None
    _check_names(OracleDegradation, spec, "--oracle settings")
    return OracleDegradation(**spec)  # it takes `frames` as any pair or sequence of pairs


def estimator_factory(spec: dict[str, Any], motion: str = "tracker", degrade: Any = None):
    """make_estimator(gt) for `fusion.bench_fusion.scene_run`: the classical tracker configured by `spec`, the
    ground-truth motion ("oracle") or the tracker with perfect correspondences ("perfect-visible" /
    "perfect-all", spoiled by `degrade`, a `tracker.oracle.OracleDegradation`, when given); ValueError on an
    unknown motion."""
    from fusion.pipeline import GroundTruthMotion
    from tracker.classical import ClassicalTracker
    from tracker.oracle import PerfectCorrespondenceTracker

    cfg = tracker_config(spec)
    if motion == "tracker":
        return lambda gt: ClassicalTracker(cfg)
    if motion == "oracle":
        return lambda gt: GroundTruthMotion(gt)
    if motion in ("perfect-visible", "perfect-all"):
        mode = motion.split("-", 1)[1]
        return lambda gt: PerfectCorrespondenceTracker(gt, cfg, mode=mode, degrade=degrade)
    raise ValueError(f"--motion must be one of {', '.join(MOTIONS)}, got {motion!r}")


def sweep(spec: dict[str, Any], scenes: list[str], seeds: list[int], frames: int = 90,
          motion: str = "tracker", fusion: dict[str, Any] | None = None, degrade: Any = None) -> dict[str, list[dict]]:
    """{scene: [scene_run result per seed]} for the tracker configuration `spec` (and `motion` / `degrade`, see
    `estimator_factory`; `fusion`: FusionConfig settings)."""
    from fusion.bench_fusion import scene_run

    make = estimator_factory(spec, motion, degrade)
    return {name: [scene_run(name, frames, make, seed=s, fusion=fusion) for s in seeds] for name in scenes}


def _seeds(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def _row(label: str, runs: list[dict], key: str) -> str:
    vals = [r[key] for r in runs]
    cells = " / ".join("-" if v is None else f"{v:.2f}" for v in vals)
    ok = [v for v in vals if v is not None]
    mean = f"{sum(ok) / len(ok):.2f}" if ok else "-"
    return f"  {label:<15} {key:<30} {cells}  (mean {mean})"


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and print the table; returns the exit code (2 on a bad configuration)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="{}", help="ClassicalTrackerConfig settings as a JSON object")
    ap.add_argument("--scenes", default="cloth,cylinder,humanoid")
    ap.add_argument("--seeds", default="0-4", help="motion seeds: 0-4 or 0,2,3")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--motion", default="tracker", choices=MOTIONS,
                    help="what moves the model: the tracker, the ground truth, or the tracker given perfect "
                         "correspondences for the samples the frame sees / for all samples")
    ap.add_argument("--fusion", default="{}", help='FusionConfig settings as a JSON object, e.g. {"carve_px": 0}')
    ap.add_argument("--oracle", default="{}",
                    help='with --motion perfect-*: tracker.oracle.OracleDegradation settings as a JSON object, e.g. '
                         '{"frames": [48, 89]}, {"frames": [[48, 51], [78, 81]]} or {"noise_px": 1, "live_depth": true}')
    ap.add_argument("--compare", action="store_true", help="also run the plain tracker with default settings")
    args = ap.parse_args(argv)
    from fusion.errors import InputError
    from fusion.pipeline import FusionConfig

    try:
        spec = json_object(args.config, "--config")
        tracker_config(spec)
        fusion_spec = json_object(args.fusion, "--fusion")
        FusionConfig(**fusion_spec)  # unknown or bad settings fail here, before any run
        oracle_spec = json_object(args.oracle, "--oracle")
        degrade = oracle_degradation(oracle_spec)
        if degrade is not None and not args.motion.startswith("perfect"):
            raise ValueError("--oracle needs --motion perfect-visible or perfect-all")
        seeds = _seeds(args.seeds)
    except (ValueError, TypeError, InputError) as e:
        print(f"scene_sweep: {e}", file=sys.stderr)
        return 2
    scenes = [s for s in args.scenes.split(",") if s]
    runs = sweep(spec, scenes, seeds, args.frames, args.motion, fusion_spec, degrade)
    base = sweep({}, scenes, seeds, args.frames) if args.compare else None
    print(f"config {json.dumps(spec)}, fusion {json.dumps(fusion_spec)}, motion {args.motion}"
          f"{', oracle ' + json.dumps(oracle_spec) if degrade is not None else ''}, seeds {seeds}, "
          f"{args.frames} frames at 320x240")
    for name in scenes:
        print(name)
        for key in KEYS:
            print(_row("config" if args.motion == "tracker" else args.motion, runs[name], key))
            if base is not None:
                print(_row("defaults", base[name], key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
