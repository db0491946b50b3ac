"""`eval-tracking` on DeepDeform-layout folders with known flow: the identity tracker scores the mean
ground-truth motion, the oracle ~0, a > 100 px pair runs through every tracker; graph files are read; the
CLI writes the report and rejects bad input with exit code 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from fusion.camera import Intrinsics, backproject_depth
from fusion.synthetic import write_flow
from tracker.data import find_pairs, load_pair, read_graph_bins
from tracker.evaluation import evaluate_folder, evaluate_pairs, make_pair_tracker


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _png(path: Path, a: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def write_translation_folder(root: Path, k: Intrinsics, shift: np.ndarray, patch: tuple[int, int, int, int],
                             z: float = 1.0, obj: str = "thing") -> np.ndarray:
    """A textured fronto-parallel patch (u0, u1, v0, v1) at depth z in frame 0 moved rigidly by `shift`
    (metres) in frame 1; scene flow = shift on the patch, NaN elsewhere. Returns the scene flow [H,W,3]."""
    rng = np.random.default_rng(0)
    h, w = k.height, k.width
    u0, u1, v0, v1 = patch
    d0 = np.zeros((h, w), np.float32)
    d0[v0:v1, u0:u1] = z
    tex = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    c0 = np.where(d0[..., None] > 0, tex, 30).astype(np.uint8)
    # frame 1: the patch moved by `shift` (x, y in the image plane at depth z + shift_z)
    z1 = z + shift[2]
    du = k.fx * shift[0] / z1
    dv = k.fy * shift[1] / z1
    uu, vv = np.meshgrid(np.arange(w), np.arange(h))
    # pixel (u, v) of frame 1 sees the patch point whose frame-0 pixel is ((u - cx) z1/z - du z1/z ...)
    x1 = (uu - k.cx) / k.fx * z1 - shift[0]
    y1 = (vv - k.cy) / k.fy * z1 - shift[1]
    us = np.rint(x1 / z * k.fx + k.cx).astype(int)
    vs = np.rint(y1 / z * k.fy + k.cy).astype(int)
    inside = (us >= u0) & (us < u1) & (vs >= v0) & (vs < v1)
    d1 = np.where(inside, z1, 0).astype(np.float32)
    c1 = np.full((h, w, 3), 30, np.uint8)
    c1[inside] = tex[vs[inside], us[inside]]
    for i, (c, d) in enumerate(((c0, d0), (c1, d1))):
        _png(root / "color" / f"{i:06d}.png", c)
        _png(root / "depth" / f"{i:06d}.png", np.rint(d * 1000).astype(np.uint16))
    m = np.eye(4)
    m[:3, :3] = k.matrix
    np.savetxt(root / "intrinsics.txt", m)
    sf = np.full((h, w, 3), np.nan, np.float32)
    sf[d0 > 0] = shift
    write_flow(root / "scene_flow" / f"{obj}_000000_000001.sflow", sf)
    assert abs(du) > 0 or abs(dv) > 0
    return sf


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> tuple[Path, float]:
    root = tmp_path_factory.mktemp("dd") / "val" / "seq000"
    k = Intrinsics(80.0, 80.0, 39.5, 29.5, 80, 60)
    shift = np.array([0.05, -0.02, 0.03], np.float32)
    write_translation_folder(root, k, shift, (20, 50, 15, 45))
    return root.parent.parent, float(np.linalg.norm(shift))


def test_identity_scores_mean_flow_and_oracle_zero(small_folder) -> None:
    root, motion = small_folder
    pairs = find_pairs(root)
    assert len(pairs) == 1 and pairs[0].src == 0 and pairs[0].tgt == 1 and pairs[0].obj == "thing"
    ident = evaluate_folder(root, "identity")
    assert ident["pairs"] == 1
    assert ident["epe3d_mm"] == pytest.approx(1e3 * motion, rel=1e-4)
    assert ident["graph_error_mm"] == pytest.approx(1e3 * motion, rel=1e-4)
    oracle = evaluate_folder(root, "oracle")
    assert oracle["epe3d_mm"] < 0.5 and oracle["graph_error_mm"] < 0.5
    assert set(("pairs", "epe3d_mm", "graph_error_mm", "seconds")) <= set(oracle)


def test_epe_is_recomputed_from_the_file(small_folder) -> None:
    """EPE of the identity = mean |sf| of the file's valid pixels (independent read of the flow file)."""
    root, _ = small_folder
    p = find_pairs(root)[0]
    raw = np.fromfile(p.scene_flow, dtype="<f4", offset=12).reshape(3, 60, 80)
    ok = np.isfinite(raw).all(0)
    expected = 1e3 * float(np.linalg.norm(raw[:, ok], axis=0).mean())
    rep = evaluate_pairs([load_pair(p)], make_pair_tracker("identity"))
    assert rep["epe3d_mm"] == pytest.approx(expected, rel=1e-5)


def test_large_motion_pair_runs_every_tracker(tmp_path) -> None:
    """A pair with > 100 px of flow: every tracker returns a finite score (identity scored on failure)."""
    from tracker.networks import NNRTNets, phi_config, psi_config, save_checkpoint

    k = Intrinsics(160.0, 160.0, 119.5, 59.5, 240, 120)
    shift = np.array([0.75, 0.0, 0.0], np.float32)  # 120 px at 1 m
    root = tmp_path / "seq"
    write_translation_folder(root, k, shift, (10, 90, 20, 100))
    s = load_pair(find_pairs(root)[0])
    assert np.nanmean(np.linalg.norm(s.flow[s.src_mask], axis=-1)) > 100
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(NNRTNets(phi_config("tiny"), psi_config("tiny")), ckpt)
    for name in ("classical", "neural", "oracle"):
        rep = evaluate_folder(root, name, device="cpu", weights=str(ckpt))
        assert rep["pairs"] == 1 and np.isfinite(rep["epe3d_mm"]), name
    assert evaluate_folder(root, "oracle")["epe3d_mm"] < 1.0


def test_cli_report_and_bad_input(small_folder, tmp_path, capsys) -> None:
    root, motion = small_folder
    rep_path = tmp_path / "r.json"
    assert main(["eval-tracking", str(root), "--tracker", "identity", "--report", str(rep_path)]) == 0
    rep = json.loads(rep_path.read_text())
    assert rep["pairs"] == 1 and rep["epe3d_mm"] == pytest.approx(1e3 * motion, rel=1e-4)
    assert "seconds" in rep and "graph_error_mm" in rep
    assert main(["eval-tracking", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["eval-tracking", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "DeepDeform" in err


def test_corrupt_flow_file_is_input_error(small_folder, tmp_path) -> None:
    import shutil

    root, _ = small_folder
    seq = tmp_path / "copy"
    shutil.copytree(root / "val" / "seq000", seq)
    f = next((seq / "scene_flow").iterdir())
    f.write_bytes(f.read_bytes()[:100])
    assert main(["eval-tracking", str(seq), "--tracker", "identity"]) == 2


def test_real_deepdeform_graph_files(shared_data) -> None:
    seq = shared_data / "deepdeform" / "test" / "seq017"
    if not seq.is_dir():
        pytest.skip("seq017 not in the shared data")
    pairs = find_pairs(seq, with_flow_only=False)
    assert [(p.src, p.tgt) for p in pairs] == [(300, 600)] and pairs[0].scene_flow is None
    g = read_graph_bins(seq, pairs[0].obj, 300, 600)
    assert g is not None and g.num_nodes == 109 and g.edges.shape == (109, 8)
    assert g.radius == pytest.approx(0.05) and np.isfinite(g.nodes).all()
    assert 1.5 < float(np.median(g.nodes[:, 2])) < 2.5
    # eval-tracking on it: no ground truth, nothing to score, no error
    assert evaluate_folder(seq, "identity")["pairs"] == 0
    s = load_pair(pairs[0])
    assert s.graph.num_nodes == 109 and s.src_mask.sum() > 1000
    pts = backproject_depth(s.src_depth, s.intrinsics)[s.src_mask]
    assert np.isfinite(pts).all()


def test_depth_residual_and_overlay(small_folder, tmp_path) -> None:
    from tracker.evaluation import depth_residual, oracle_tracker, overlay_image, pair_model

    root, _ = small_folder
    s = load_pair(find_pairs(root)[0])
    model = pair_model(s)
    before = depth_residual(s, make_pair_tracker("identity")(s, model), model)
    m = oracle_tracker(s, model)
    after = depth_residual(s, m, model, max_residual=0.01)
    # identity: the patch is 3 cm farther in the target wherever it still overlaps
    assert before["depth_residual_mm"] == pytest.approx(30.0, abs=2.0)
    assert after["depth_residual_mm"] < 1.5 and after["inlier_fraction"] > 0.95
    png = overlay_image(s, {"before": make_pair_tracker("identity")(s, model), "after": m}, tmp_path / "o.png", model)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (2 * s.intrinsics.width, s.intrinsics.height)


def test_synthetic_scene_written_by_fusion_writer(tmp_path) -> None:
    """A fusion.synthetic scene in the DeepDeform layout (write_deepdeform_folder): the identity scores the
    scene's own mean scene-flow norm; the oracle (best graph fit) is far below it."""
    from fusion.synthetic import SceneConfig, make_scene, write_deepdeform_folder

    scene = make_scene(SceneConfig("cloth", width=96, height=72, n_frames=12, seed=5, speed=3.0, amplitude=1.5))
    root = write_deepdeform_folder(scene, tmp_path / "train" / "seq001", pairs=[(0, 10)], color_format="png")
    sf = scene.scene_flow(0, 10)[scene.layers(0).mask]
    expected = 1e3 * float(np.linalg.norm(sf[np.isfinite(sf).all(1)], axis=1).mean())
    ident = evaluate_folder(tmp_path, "identity")
    assert ident["pairs"] == 1
    assert ident["epe3d_mm"] == pytest.approx(expected, rel=0.02)  # depth is stored in whole millimetres
    oracle = evaluate_folder(tmp_path, "oracle")
    assert oracle["epe3d_mm"] < 0.1 * ident["epe3d_mm"]
