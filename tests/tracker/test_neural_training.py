"""End-to-end training of the neural tracker: a tiny run of each stage lowers each of its losses; the
`nrstudio train tracker` entry writes a checkpoint and a loss log; synthetic pairs carry consistent
ground truth."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from fusion.camera import backproject_depth
from tracker.data import SyntheticPairConfig, build_pool, load_pool, save_pool
from tracker.training import PRESETS, train


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = SyntheticPairConfig(width=64, height=48, n_frames=24, gap=(3, 6), speed=(1.0, 2.0), noise=False)


def test_synthetic_pair_ground_truth_is_consistent() -> None:
    s = build_pool(TINY, 1, seed=3)[0]
    k = s.intrinsics
    assert s.src_color.shape == (48, 64, 3) and s.src_depth.dtype == np.float32
    ok = s.src_mask & np.isfinite(s.flow).all(-1)
    assert ok.sum() > 50
    # optical flow = projection of p + scene flow
    p = backproject_depth(s.src_depth, k)[ok] + s.scene_flow[ok]
    u = k.fx * p[:, 0] / p[:, 2] + k.cx
    vv, uu = np.nonzero(ok)
    assert np.allclose(u - uu, s.flow[ok][:, 0], atol=0.05)
    # node ground truth = scene flow at the node's own pixel
    assert s.node_valid.any()
    assert np.isfinite(s.node_translations[s.node_valid]).all()
    assert (s.pixel_anchors[~s.src_mask] == -1).all()


def test_pool_round_trip(tmp_path) -> None:
    pool = build_pool(TINY, 2, seed=1)
    back = load_pool(save_pool(pool, tmp_path / "p.npz"))
    assert len(back) == 2
    for a, b in zip(pool, back):
        assert np.array_equal(a.src_color, b.src_color) and np.allclose(a.flow, b.flow, equal_nan=True)
        assert np.array_equal(a.graph.edges, b.graph.edges) and np.array_equal(a.node_valid, b.node_valid)


def test_tiny_training_lowers_each_loss() -> None:
    """Two fixed pairs; stage 1 lowers L_corr, stage 2 (Psi through the solver) lowers L_graph and L_warp,
    stage 3 (joint) lowers its total objective, and every loss ends lower than it started."""
    cfg = replace(PRESETS["tiny"], data=TINY, pool=2, batch=2, refresh_every=0, steps=(40, 12, 12),
                  max_points=5000, log_every=4, lr=(3e-3, 3e-2, 1e-3), corr_warmup=0.0)
    s = train(cfg, None, "cpu", seed=0, progress=False)
    st = s["stages"]
    assert st["1"]["corr_last"] < 0.9 * st["1"]["corr_first"]
    assert st["2"]["graph_last"] < st["2"]["graph_first"]
    assert st["2"]["warp_last"] < st["2"]["warp_first"]
    assert st["3"]["total_last"] < st["3"]["total_first"]
    assert st["3"]["corr_last"] < st["1"]["corr_first"]
    assert st["3"]["graph_last"] < st["2"]["graph_first"]
    assert st["3"]["warp_last"] < st["2"]["warp_first"]
    assert len(s["history"]) == 16 and all(np.isfinite(h["total"]) for h in s["history"])


def test_train_cli_writes_checkpoint_and_log(tmp_path) -> None:
    from app.cli import main
    from tracker.networks import load_checkpoint

    out = tmp_path / "t.pt"
    rep = tmp_path / "r.json"
    assert main(["train", "tracker", "--preset", "tiny", "--steps", "6", "--out", str(out), "--device", "cpu",
                 "--report", str(rep)]) == 0
    nets, meta = load_checkpoint(out)
    assert meta["steps"] == 6
    log = [json.loads(line) for line in open(str(out) + ".log.jsonl")]
    assert log and log[-1]["step"] == 6
    summary = json.loads(rep.read_text())
    assert summary["preset"] == "tiny" and summary["checkpoint"] == str(out)
