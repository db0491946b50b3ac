"""Issue #3: "no divergence over 300 frames" — the classical tracker in the fusion loop over 300 frames of each
synthetic scene at the bench's processing size (320x240). Divergence means the solution leaving the data: a frame
the loop has to skip, non-finite or exploding node transforms, the tracked surface drifting off the live depth,
or the canonical volume filling with phantom surface. Accuracy against ground truth is measured by
`nrstudio bench` (fusion section), not asserted here."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.bench_fusion import scene_and_truth
from fusion.pipeline import FusionConfig, FusionPipeline
from tracker.classical import ClassicalTracker, ClassicalTrackerConfig

FRAMES = 300


# The humanoid diverged here until an isolated-node bug was fixed (fusion.graph.extend_graph: a node with no
# geodesic path to the graph got no edges and flew off): at 160x120 its graph grew from 60 to 285 nodes over
# 300 frames. It now stays within these bounds (320x240: 66 -> 161 nodes, 98 % of the live depth covered), but
# it still loses an arm for a while (deformation error 38 mm over the 300 frames, `nrstudio bench`); at
# 160x120 it passes by a hair (60 -> 237 nodes against a bound of 240), so this test runs at 320x240.
@pytest.mark.parametrize("name", ["cloth", "cylinder", "humanoid"])
def test_no_divergence_over_300_frames(name):
    scene, _ = scene_and_truth(name, FRAMES, 320, 240)
    cfg = FusionConfig(device="cpu", backend="numba")
    rms: list[float] = []
    pipe = FusionPipeline(cfg, ClassicalTracker(ClassicalTrackerConfig()),
                          on_frame=lambda r: rms.append(r.tracker_stats.get("rms_mm", np.nan)) if r.tracker_stats else None)
    first_nodes = None
    for i in range(FRAMES):
        res = pipe.process(scene.render(i))
        assert res.ok, f"{name}: frame {i} skipped ({res.reason}: {res.message})"
        if first_nodes is None:
            first_nodes = pipe.graph.num_nodes
        m = pipe.motion
        assert np.isfinite(m.rotations).all() and np.isfinite(m.translations).all(), f"{name}: frame {i}"
        assert np.abs(m.translations).max() < 1.0, f"{name}: node translation {np.abs(m.translations).max():.2f} m at frame {i}"
    rms_a = np.asarray(rms, float)
    assert np.isfinite(rms_a).all()
    # the warped model stays on the observed surface: point-to-plane RMS of the last 100 frames
    assert np.median(rms_a[-100:]) < 8.0, f"{name}: median ICP RMS {np.median(rms_a[-100:]):.1f} mm over the last 100 frames"
    # no runaway growth of the canonical surface (phantom geometry from misaligned fusion adds nodes)
    assert pipe.graph.num_nodes < 4 * first_nodes, f"{name}: graph grew from {first_nodes} to {pipe.graph.num_nodes} nodes"
    # the live warped model still covers the live depth: most observed pixels near a warped model point
    from fusion.bench_fusion import live_depth_coverage

    cover = live_depth_coverage(pipe, scene.render(FRAMES - 1))
    assert cover is not None and cover > 0.8, f"{name}: only {cover:.0%} of the live depth is near the tracked model"
