"""Synthetic scenes: sensor noise statistics, the FrameSource, the ground-truth sidecar and the
DeepDeform-layout writer (read back with the documented binary layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion.errors import InputError
from fusion.sources.base import FrameSource
from fusion.synthetic import (
    NoiseConfig,
    SceneConfig,
    SyntheticSource,
    groundtruth_path,
    load_groundtruth,
    make_scene,
    read_flow,
    save_groundtruth,
    write_deepdeform_folder,
)
from fusion.synthetic.noise import apply_noise, depth_edges

SMALL = {"width": 160, "height": 120}


# ---------------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("z", [0.8, 1.5, 2.5])
def test_depth_noise_statistics_match_the_configuration(z: float) -> None:
    cfg = NoiseConfig(edge_dropout=0.0, dropout=0.0, quantization=0.0, color_sigma=0.0)
    depth = np.full((250, 250), z, np.float32)
    color = np.full((250, 250, 3), 100, np.uint8)
    noisy, col = apply_noise(depth, color, cfg, np.random.default_rng(0))
    err = noisy.astype(np.float64) - z
    sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
    assert float(cfg.sigma(z)) == pytest.approx(sigma)
    assert err.std() == pytest.approx(sigma, rel=0.03)
    assert abs(err.mean()) < 4 * sigma / 250
    assert np.array_equal(col, color)
    # quantisation to 1 mm: values on the millimetre grid, std grows by q^2 / 12 in variance
    q = NoiseConfig(edge_dropout=0.0, dropout=0.0, quantization=0.001, color_sigma=0.0)
    nq, _ = apply_noise(depth, color, q, np.random.default_rng(1))
    mm = nq.astype(np.float64) * 1000
    assert np.abs(mm - np.rint(mm)).max() < 1e-3
    # bit-identical to what a uint16 millimetre depth image decodes to (float32 raw * float32 unit)
    np.testing.assert_array_equal(nq, np.rint(mm).astype(np.float32) * np.float32(0.001))
    assert (nq.astype(np.float64) - z).std() == pytest.approx(np.sqrt(sigma**2 + 1e-6 / 12), rel=0.03)


def test_dropouts_and_edge_holes_follow_the_configuration() -> None:
    depth = np.zeros((200, 200), np.float32)
    depth[:, :100] = 1.0
    depth[:, 100:150] = 1.3  # a step of 30 cm, then a border to invalid pixels
    color = np.zeros((200, 200, 3), np.uint8)
    cfg = NoiseConfig(edge_dropout=0.5, edge_width=2, dropout=0.01, color_sigma=3.0)
    noisy, col = apply_noise(depth, color, cfg, np.random.default_rng(5))
    edges = depth_edges(depth, cfg.edge_jump)
    assert set(np.nonzero(edges.any(0))[0]) == {99, 100, 149}
    band = np.zeros_like(edges)
    band[:, [98, 99, 100, 101, 148, 149]] = True
    holes = (noisy == 0) & (depth > 0)
    assert np.all(noisy[depth == 0] == 0)  # no depth is invented
    assert holes[band].mean() == pytest.approx(0.5 + 0.5 * 0.01, abs=0.05)
    off = (depth > 0) & ~band
    assert holes[off].mean() == pytest.approx(0.01, abs=0.004)
    assert col.max() > 0 and np.all(col[noisy == 0] >= 0)
    grey = np.full((300, 300, 3), 100, np.uint8)
    _, g = apply_noise(np.zeros((300, 300), np.float32), grey, cfg, np.random.default_rng(6))
    assert abs(g.mean() - 100) < 0.05
    assert g.astype(float).std() == pytest.approx(3.0, rel=0.06)


def test_noisy_scene_frames_stay_close_to_the_clean_render() -> None:
    sc = make_scene(SceneConfig("cloth", noise=True, n_frames=5, **SMALL))
    clean = sc.layers(1)
    f = sc.render(1)
    assert np.array_equal(f.mask, clean.mask)
    ok = f.depth > 0
    assert np.all(clean.depth[ok] > 0)
    hole = clean.mask & ~ok
    assert 0.002 < hole.mean() / clean.mask.mean() < 0.2
    dev = np.abs(f.depth[ok] - clean.depth[ok])
    assert np.all(dev < 5 * NoiseConfig().sigma(clean.depth[ok]) + 0.0006)
    assert dev.mean() > 0.0005
    assert not np.array_equal(f.color, clean.color)
    assert np.abs(f.color.astype(int) - clean.color).mean() < 3


# ---------------------------------------------------------------------------------------------- source


def test_synthetic_source_iterates_and_seeks() -> None:
    cfg = SceneConfig("cylinder", n_frames=8, fps=20.0, noise=True, **SMALL)
    with SyntheticSource(cfg) as src:
        assert isinstance(src, FrameSource)
        assert src.length == 8 and src.fps == 20.0 and src.intrinsics.width == 160
        frames = list(src)
        assert [f.index for f in frames] == list(range(8))
        assert all(f.mask is not None for f in frames)
        assert src.next_frame() is None
        src.seek(3)
        f3 = src.next_frame()
        assert f3.index == 3 and np.array_equal(f3.depth, frames[3].depth) and np.array_equal(f3.color, frames[3].color)
        src.seek_time(0.15)  # frame 3 is at exactly 0.15 s
        assert src.next_frame().index == 3
        src.seek_time(0.1501)
        assert src.next_frame().index == 4
        src.seek_time(-1.0)
        assert src.next_frame().index == 0
        src.seek_time(100.0)
        assert src.next_frame() is None
        src.seek(8)
        assert src.next_frame() is None
        with pytest.raises(InputError):
            src.seek(9)
        with pytest.raises(InputError):
            src.seek(-1)


# ---------------------------------------------------------------------------------------------- sidecar


def test_groundtruth_sidecar_round_trip(tmp_path: Path) -> None:
    sc = make_scene(SceneConfig("humanoid", n_frames=6, **SMALL))
    rec = tmp_path / "take.db3"
    gt_path = groundtruth_path(rec)
    assert gt_path == tmp_path / "take.gt.npz"
    save_groundtruth(sc, gt_path)
    assert [p.name for p in tmp_path.iterdir()] == ["take.gt.npz"]  # atomic: no temporary left behind
    gt = load_groundtruth(gt_path)
    assert gt.n_frames == 6 and gt.fps == 30.0 and gt.intrinsics == sc.intrinsics
    for i in range(6):
        v, f = sc.mesh_at(i)
        np.testing.assert_array_equal(gt.vertices[i], v)
        np.testing.assert_array_equal(gt.faces, f)
    np.testing.assert_allclose(gt.timestamps, np.arange(6) / 30.0)
    assert gt.config["name"] == "humanoid"
    fid, bary = sc.surface_samples(50, seed=2)
    np.testing.assert_allclose(gt.positions(fid, bary, 4), sc.sample_positions(fid, bary, 4), atol=1e-6)
    # re-saving a loaded GroundTruth gives the same content
    save_groundtruth(gt, tmp_path / "copy.gt.npz")
    np.testing.assert_array_equal(load_groundtruth(tmp_path / "copy.gt.npz").vertices, gt.vertices)


def test_groundtruth_bad_files_raise_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_groundtruth(tmp_path / "missing.gt.npz")
    junk = tmp_path / "junk.gt.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(InputError, match="junk.gt.npz"):
        load_groundtruth(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(InputError, match="not an nrstudio"):
        load_groundtruth(other)
    sc = make_scene(SceneConfig("cloth", n_frames=2, width=32, height=24))
    good = save_groundtruth(sc, tmp_path / "good.gt.npz")
    cut = tmp_path / "cut.gt.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="cut.gt.npz"):
        load_groundtruth(cut)


# ---------------------------------------------------------------------------------------------- DeepDeform


def _read_flow_raw(path: Path) -> np.ndarray:
    """The documented layout, parsed independently: uint32 width, height, channels; float32 [C, H, W]."""
    raw = path.read_bytes()
    w, h, c = np.frombuffer(raw[:12], dtype="<u4")
    assert len(raw) == 12 + 4 * int(w) * int(h) * int(c)
    return np.frombuffer(raw[12:], dtype="<f4").reshape(int(c), int(h), int(w))


def test_deepdeform_writer_output_is_readable(tmp_path: Path) -> None:
    sc = make_scene(SceneConfig("humanoid", n_frames=12, noise=True, width=96, height=72))
    out = write_deepdeform_folder(sc, tmp_path / "seq", pairs=[(0, 10), (10, 3)], color_format="png")
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted([
        "color/000000.png", "color/000003.png", "color/000010.png",
        "depth/000000.png", "depth/000003.png", "depth/000010.png",
        "mask/000000_object.png", "mask/000003_object.png", "mask/000010_object.png",
        "intrinsics.txt", "SYNTHETIC.txt",
        "scene_flow/object_000000_000010.sflow", "optical_flow/object_000000_000010.oflow",
        "scene_flow/object_000010_000003.sflow", "optical_flow/object_000010_000003.oflow",
    ])
    k = sc.intrinsics
    kk = np.loadtxt(out / "intrinsics.txt")
    assert kk.shape == (4, 4)
    np.testing.assert_allclose(kk[:3, :3], k.matrix)
    f10 = sc.render(10)
    depth = np.asarray(Image.open(out / "depth" / "000010.png"))
    assert depth.dtype == np.uint16
    np.testing.assert_array_equal(depth, np.rint(f10.depth * 1000).astype(np.uint16))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "color" / "000010.png")), f10.color)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "mask" / "000010_object.png")) > 0, f10.mask)
    sflow = _read_flow_raw(out / "scene_flow" / "object_000010_000003.sflow")
    oflow = _read_flow_raw(out / "optical_flow" / "object_000010_000003.oflow")
    assert sflow.shape == (3, 72, 96) and oflow.shape == (2, 72, 96)
    np.testing.assert_array_equal(np.isfinite(sflow[0]), f10.mask)
    np.testing.assert_array_equal(sflow.transpose(1, 2, 0)[f10.mask], sc.scene_flow(10, 3)[f10.mask])
    np.testing.assert_array_equal(oflow.transpose(1, 2, 0)[f10.mask], sc.optical_flow(10, 3)[f10.mask])
    np.testing.assert_array_equal(read_flow(out / "optical_flow" / "object_000010_000003.oflow"), oflow)
    # jpg colour (DeepDeform's own format) is written too, close to the png
    out2 = write_deepdeform_folder(sc, tmp_path / "jpg", pairs=[(0, 10)])
    jpg = np.asarray(Image.open(out2 / "color" / "000000.jpg")).astype(int)
    assert np.abs(jpg - sc.render(0).color).mean() < 6
    bad = tmp_path / "bad.oflow"
    bad.write_bytes(np.array([96, 72, 2], "<u4").tobytes() + b"\0" * 100)
    with pytest.raises(InputError, match="bad.oflow"):
        read_flow(bad)
    with pytest.raises(InputError):
        write_deepdeform_folder(sc, tmp_path / "x", pairs=[(0, 12)])
