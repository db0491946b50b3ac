"""The "fusion" bench section as the CLI runs it: fusion's own figures (integration vs open3d, memory, oracle
replay) plus the replay with the classical tracker, which only app/ may wire in (fusion never imports tracker)."""
from __future__ import annotations

from typing import Any


def run_bench(quick: bool) -> dict[str, Any]:
    """fusion.bench_fusion.run_bench + fps_320 / fps_640 / geometry_error_mm / deformation_error_mm with the
    classical tracker on the bundled synthetic recording's scene."""
    from fusion.bench_fusion import replay_figures
    from fusion.bench_fusion import run_bench as fusion_bench
    from tracker.classical import ClassicalTracker, ClassicalTrackerConfig

    out = fusion_bench(quick)
    n = 8 if quick else 30
    out.update(replay_figures(lambda gt: ClassicalTracker(ClassicalTrackerConfig()), n))
    return out
