"""The "fusion" bench section as the CLI runs it: fusion's own figures (integration vs open3d, memory, oracle
replay) plus the replay with the classical tracker, which only app/ may wire in (fusion never imports tracker)."""
from __future__ import annotations

from typing import Any

#: the scene motions of the `scenes_320` figures: the bundled sample's (seed 0) and four more draws
SCENE_SEEDS = (0, 1, 2, 3, 4)


def run_bench(quick: bool) -> dict[str, Any]:
    """fusion.bench_fusion.run_bench + fps_320 / fps_640 / geometry_error_mm / deformation_error_mm with the
    classical tracker over the bundled synthetic recording's 90 frames, and (not quick) `scenes_320`: each
    synthetic scene's errors with the classical tracker and the oracle motion over 90 frames (and over the
    scene's random motion drawn with seeds 0-4: `*_scene_seeds` and their mean `*_scene_mean`; one draw
    of the motion is one sample of a chaotic figure), and a
    300-frame run of each (`long_300`, with `diverged`: skipped frames, non-finite motion, the tracked model
    covering < 80 % of the last frame's depth, or the graph growing over 4x from phantom surface)."""
    from fusion.bench_fusion import replay_figures
    from fusion.bench_fusion import run_bench as fusion_bench
    from tracker.classical import ClassicalTracker, ClassicalTrackerConfig

    from fusion.bench_fusion import scene_run
    from fusion.pipeline import GroundTruthMotion

    out = fusion_bench(quick)
    classical = lambda gt: ClassicalTracker(ClassicalTrackerConfig())  # noqa: E731
    # the whole bundled recording (90 frames); quick: 8
    out.update(replay_figures(classical, 8 if quick else 90))
    if quick:
        return out
    # issue #3 "on the synthetic scenes": every scene at 320x240, 90 frames, beside the oracle motion, and
    # 300 frames of each for divergence (graph growth, coverage of the live depth, skipped frames)
    scenes: dict[str, Any] = {}
    for name in ("cloth", "cylinder", "humanoid"):
        r = scene_run(name, 90, classical)
        others = [scene_run(name, 90, classical, seed=s) for s in SCENE_SEEDS[1:]]
        for key in ("geometry_error_mm", "deformation_error_mm", "deformation_error_visible_mm"):
            vals = [r[key]] + [o_[key] for o_ in others]
            r[f"{key}_scene_seeds"] = vals
            r[f"{key}_scene_mean"] = None if None in vals else float(sum(vals) / len(vals))
        o = scene_run(name, 90, lambda gt: GroundTruthMotion(gt))
        r["geometry_error_mm_oracle"] = o["geometry_error_mm"]
        r["deformation_error_mm_oracle"] = o["deformation_error_mm"]
        r["deformation_error_visible_mm_oracle"] = o["deformation_error_visible_mm"]
        long = scene_run(name, 300, classical)
        r["long_300"] = {k: long[k] for k in ("skipped", "geometry_error_mm", "deformation_error_mm",
                                              "deformation_error_visible_mm", "nodes_first",
                                              "nodes", "live_coverage", "finite")}
        r["long_300"]["diverged"] = bool(not long["finite"] or long["skipped"] > 0 or (long["live_coverage"] or 0) < 0.8
                                         or long["nodes"] > 4 * (long["nodes_first"] or 1))
        scenes[name] = r
    out["scenes_320"] = scenes
    return out
