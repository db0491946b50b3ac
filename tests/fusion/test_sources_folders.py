"""Image-folder sources: DeepDeform seq017, the snoopy folder, generic layouts, and bad folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fusion.camera import Intrinsics
from fusion.errors import InputError
from fusion.sources.folders import DeepDeformSource, ImageFolderSource, read_intrinsics_file


def _dir(shared_data: Path, rel: str) -> Path:
    p = shared_data / rel
    if not p.is_dir():
        pytest.skip(f"{p} not found")
    return p


def _png16(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint16)).save(path)


def _rgb(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


def _depth(h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    d = np.random.default_rng(seed).integers(500, 3000, (h, w)).astype(np.uint16)
    d[0, 0] = 0
    return d


# ------------------------------------------------------------------------------------------- real data


def test_deepdeform_seq017(shared_data: Path) -> None:
    root = _dir(shared_data, "deepdeform/test/seq017")
    with DeepDeformSource(root) as src:
        k = src.intrinsics
        assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == pytest.approx((575.548, 577.46, 323.172, 236.417, 640, 480))
        assert src.length == 2
        frames = list(src)
    assert [f.meta["frame_id"] for f in frames] == [300, 600]
    assert [f.timestamp_s for f in frames] == pytest.approx([0.0, 10.0])  # (600 - 300) / 30 fps
    raw = np.asarray(Image.open(root / "depth" / "000300.png")).astype(np.float32)
    np.testing.assert_allclose(frames[0].depth, raw * np.float32(0.001))  # millimetres -> metres
    assert 1.0 < np.median(frames[0].depth[frames[0].depth > 0]) < 4.0
    assert frames[0].color.shape == (480, 640, 3) and frames[0].meta["color_source"] == "image"
    assert frames[0].mask is None  # seq017 ships no masks


def test_snoopy_folder_with_calib_masks_and_no_color(shared_data: Path) -> None:
    root = _dir(shared_data, "snoopy")
    with ImageFolderSource(root) as src:
        assert src.intrinsics == Intrinsics(517.0, 517.0, 320.0, 240.0, 640, 480)
        frames = list(src)
    assert [f.meta["frame_id"] for f in frames] == [50, 51]
    for f in frames:
        assert f.mask is not None and 0.03 < f.mask.mean() < 0.15  # ~7 % object pixels
        assert f.meta["color_source"].startswith("gray-from-depth")
        assert np.all(f.color[..., 0] == f.color[..., 2]) and np.all(f.color[f.depth == 0] == 0)
        assert 1.5 < np.median(f.depth[f.depth > 0]) < 3.0
        obj = np.median(f.depth[f.mask & (f.depth > 0)])
        assert 0.5 < obj < 1.0 and obj < np.median(f.depth[f.depth > 0])  # the toy is in front, ~0.75 m
    with ImageFolderSource(root, depth_scale=0.002) as src:
        np.testing.assert_allclose(src.next_frame().depth, 2 * frames[0].depth, rtol=1e-6)


# ------------------------------------------------------------------------------------ written folders


def test_deepdeform_layout_with_masks_and_seek(tmp_path: Path) -> None:
    root = tmp_path / "seq"
    root.mkdir()
    np.savetxt(root / "intrinsics.txt", np.array([[20.0, 0, 7.5, 0], [0, 21.0, 5.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    for n in (10, 11, 13):
        _png16(root / "depth" / f"{n:06d}.png", _depth(seed=n))
        _rgb(root / "color" / f"{n:06d}.jpg", np.full((12, 16, 3), n * 10))
    m1 = np.zeros((12, 16), np.uint8)
    m1[2:5, 3:6] = 255
    m2 = np.zeros((12, 16), np.uint8)
    m2[8:10, 10:12] = 1
    _rgb(root / "mask" / "000011_shirt.png", m1)
    _rgb(root / "mask" / "000011_hand.png", m2)
    with DeepDeformSource(root) as src:
        assert src.intrinsics == Intrinsics(20.0, 21.0, 7.5, 5.5, 16, 12)
        frames = list(src)
        assert [f.meta["frame_id"] for f in frames] == [10, 11, 13]
        assert frames[0].mask is None
        assert frames[1].mask.sum() == 9 + 4 and sorted(frames[1].meta["mask_objects"]) == ["hand", "shirt"]
        np.testing.assert_array_equal(np.rint(frames[2].depth * 1000).astype(np.uint16), _depth(seed=13))
        src.seek_time(0.05)  # frame 13 is at 0.1 s, frame 11 at 0.0333 s
        assert src.next_frame().meta["frame_id"] == 13
        src.seek(1)
        assert src.next_frame().meta["frame_id"] == 11
    with DeepDeformSource(root, mask_object="hand") as src:
        src.seek(1)
        assert src.next_frame().mask.sum() == 4


@pytest.mark.parametrize("kind", ["json", "open3d", "matrix3", "calib"])
def test_generic_folder_intrinsics_formats(tmp_path: Path, kind: str) -> None:
    root = tmp_path / kind
    for n in (0, 1):
        _png16(root / "depth" / f"d{n:04d}.png", _depth(seed=n))
        _rgb(root / "color" / f"c{n:04d}.png", np.full((12, 16, 3), 100))
    if kind == "json":
        (root / "intrinsics.json").write_text(json.dumps({"fx": 20, "fy": 21, "cx": 7.5, "cy": 5.5, "width": 16, "height": 12}))
    elif kind == "open3d":
        (root / "camera_intrinsic.json").write_text(
            json.dumps({"width": 16, "height": 12, "intrinsic_matrix": [20, 0, 0, 0, 21, 0, 7.5, 5.5, 1]}))
    elif kind == "matrix3":
        (root / "K.txt").write_text("20 0 7.5\n0 21 5.5\n0 0 1\n")
    else:
        (root / "calib.txt").write_text("16 12\n20 21\n7.5 5.5\n\n16 12\n20 21\n7.5 5.5\n\n1 0 0 0\n0 1 0 0\n0 0 1 0\n\n0 0\n")
    with ImageFolderSource(root, depth_scale=0.0005) as src:
        assert src.intrinsics == Intrinsics(20.0, 21.0, 7.5, 5.5, 16, 12)
        f = src.next_frame()
    np.testing.assert_allclose(f.depth, _depth(seed=0) * np.float32(0.0005))
    assert f.meta["color_source"] == "image" and f.color[0, 0, 0] == 100


def test_read_intrinsics_file_rejects_garbage(tmp_path: Path) -> None:
    p = tmp_path / "intrinsics.txt"
    p.write_text("hello world\n")
    with pytest.raises(InputError, match="intrinsics.txt: unknown intrinsics format"):
        read_intrinsics_file(p, 16, 12)
    q = tmp_path / "k.json"
    q.write_text("{\"fx\": 1}")
    with pytest.raises(InputError, match="k.json: cannot read intrinsics"):
        read_intrinsics_file(q)


# ------------------------------------------------------------------------------------------ bad input


def _generic(root: Path, n: int = 2, color: bool = True) -> Path:
    for i in range(n):
        _png16(root / "depth" / f"{i:06d}.png", _depth(seed=i))
        if color:
            _rgb(root / "color" / f"{i:06d}.png", np.full((12, 16, 3), 50))
    (root / "intrinsics.json").write_text(json.dumps({"fx": 20, "fy": 20, "cx": 7.5, "cy": 5.5, "width": 16, "height": 12}))
    return root


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothere: folder not found"):
        ImageFolderSource(tmp_path / "nothere")


def test_folder_without_depth_images(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no depth images found"):
        ImageFolderSource(tmp_path / "empty")


def test_mismatched_color_and_depth_sizes(tmp_path: Path) -> None:
    root = _generic(tmp_path / "f")
    _rgb(root / "color" / "000001.png", np.zeros((24, 32, 3)))
    with pytest.raises(InputError, match=r"000001.png: color is 32x24 but depth 000001.png is 16x12"):
        ImageFolderSource(root)


def test_intrinsics_for_another_image_size(tmp_path: Path) -> None:
    root = _generic(tmp_path / "f")
    (root / "intrinsics.json").write_text(json.dumps({"fx": 20, "fy": 20, "cx": 7.5, "cy": 5.5, "width": 640, "height": 480}))
    with pytest.raises(InputError, match="depth is 16x12 but the intrinsics are for 640x480"):
        ImageFolderSource(root)


def test_all_zero_depth_image(tmp_path: Path) -> None:
    root = _generic(tmp_path / "f")
    _png16(root / "depth" / "000001.png", np.zeros((12, 16)))
    with ImageFolderSource(root) as src:
        src.next_frame()
        with pytest.raises(InputError, match=r"000001.png: depth image is all zero"):
            src.next_frame()
    with ImageFolderSource(root, empty_depth="skip") as src:
        assert [f.meta["frame_id"] for f in src] == [0]


def test_zero_size_and_corrupt_depth_files(tmp_path: Path) -> None:
    root = _generic(tmp_path / "a")
    (root / "depth" / "000001.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"000001.png: empty image file \(0 bytes\)"):
        ImageFolderSource(root)
    root = _generic(tmp_path / "b")
    (root / "depth" / "000001.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match=r"000001.png: unreadable image"):
        ImageFolderSource(root)


def test_eight_bit_depth_is_rejected(tmp_path: Path) -> None:
    root = _generic(tmp_path / "f")
    _rgb(root / "depth" / "000000.png", np.full((12, 16), 7))
    with ImageFolderSource(root) as src:
        with pytest.raises(InputError, match=r"000000.png: depth must be a single-channel 16-bit image"):
            src.next_frame()


def test_color_missing_for_one_frame(tmp_path: Path) -> None:
    root = _generic(tmp_path / "f")
    (root / "color" / "000001.png").unlink()
    with pytest.raises(InputError, match=r"000001.png: no color image for frame 1"):
        ImageFolderSource(root)


def test_missing_intrinsics_file(tmp_path: Path) -> None:
    root = _generic(tmp_path / "f")
    (root / "intrinsics.json").unlink()
    with pytest.raises(InputError, match="f: no intrinsics file found"):
        ImageFolderSource(root)


def test_deepdeform_folder_missing_color(tmp_path: Path) -> None:
    root = tmp_path / "seq"
    _png16(root / "depth" / "000001.png", _depth())
    (root / "color").mkdir()
    np.savetxt(root / "intrinsics.txt", np.eye(4) * 10)
    with pytest.raises(InputError, match=r"000001.png: no color image for frame 1"):
        DeepDeformSource(root)
