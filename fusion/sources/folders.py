"""Image-folder sources: the DeepDeform layout and a generic color/depth folder.

DeepDeform (`<split>/<seq>/`): color/NNNNNN.jpg, depth/NNNNNN.png (uint16 millimetres), intrinsics.txt
(a 4x4 matrix), optional mask/NNNNNN_<object>.png. Frames are ordered by their number NNNNNN; the frame
number is kept in `frame.meta["frame_id"]` and timestamps are (NNNNNN - first) / fps.

Generic folder: depth images in `depth/` (or files named `*depth*` in the folder itself, as in the
KillingFusion "snoopy" folder), color images in `color/` or `rgb/` (or `*color*` / `*rgb*` files),
optional masks in `mask/` (or `*mask*` files); images are matched by the last number in their names.
Intrinsics come from a file: JSON {fx, fy, cx, cy, width, height} (or Open3D's
{width, height, intrinsic_matrix}), a 3x3 or 4x4 text matrix, or an InfiniTAM calib.txt. Depth is raw
uint16 times `depth_scale` metres (default 0.001, i.e. millimetres).

A folder without color images gives a gray color image derived from depth, and says so in
`frame.meta["color_source"]`. Bad input (no depth images, unreadable or 8-bit depth, color and depth of
different sizes, missing color for some frames, an all-zero depth image) is an InputError naming the file.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.camera import Intrinsics
from fusion.errors import InputError
from fusion.frame import RGBDFrame
from fusion.sources.base import FrameSource
from fusion.sources.common import (
    check_empty_policy,
    depth_is_empty,
    depth_to_metres,
    gray_from_depth,
    trailing_number,
)

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DEPTH_EXT = (".png", ".tif", ".tiff")
INTRINSICS_NAMES = ("intrinsics.json", "camera.json", "camera_intrinsics.json", "intrinsics.txt", "calib.txt",
                    "camera.txt", "K.txt")


@dataclass
class FolderEntry:
    """One frame of a folder: its number and files."""

    frame_id: int
    depth: Path
    color: Path | None = None
    masks: list[Path] = field(default_factory=list)


def _numbers(text: str) -> list[float]:
    out = []
    for tok in text.replace(",", " ").split():
        try:
            out.append(float(tok))
        except ValueError:
            return []
    return out


def read_intrinsics_file(path: str | Path, width: int | None = None, height: int | None = None) -> Intrinsics:
    """Read camera intrinsics from a JSON, matrix text or InfiniTAM calib file.

    width / height: the image size, needed by formats that do not store it (3x3 / 4x4 matrices).
    Formats: JSON {fx, fy, cx, cy, width, height} or {width, height, intrinsic_matrix: 9 values,
    column-major (Open3D)}; text 3x3 or 4x4 matrix (DeepDeform intrinsics.txt); InfiniTAM calib.txt (first
    lines "W H", "fx fy", "cx cy" of the color camera).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: intrinsics file not found")
    text = p.read_text(errors="replace")
    try:
        if p.suffix.lower() == ".json":
            d = json.loads(text)
            if "intrinsic_matrix" in d:
                m = np.asarray(d["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T
                return Intrinsics.from_matrix(m, int(d["width"]), int(d["height"]))
            w = int(d.get("width", width or 0))
            h = int(d.get("height", height or 0))
            return Intrinsics(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]), w, h)
        rows = [r for r in (_numbers(line) for line in text.splitlines()) if r]
        if len(rows) >= 3 and [len(r) for r in rows[:3]] == [2, 2, 2]:  # InfiniTAM calib
            (w, h), (fx, fy), (cx, cy) = rows[0], rows[1], rows[2]
            return Intrinsics(fx, fy, cx, cy, int(w), int(h))
        if len(rows) in (3, 4) and all(len(r) == len(rows) for r in rows):
            if width is None or height is None:
                raise InputError(f"{p}: a matrix intrinsics file needs the image size")
            return Intrinsics.from_matrix(np.asarray(rows, dtype=np.float64), width, height)
    except InputError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{p}: cannot read intrinsics ({type(e).__name__}: {e})") from None
    raise InputError(f"{p}: unknown intrinsics format (expected JSON, a 3x3/4x4 matrix or an InfiniTAM calib.txt)")


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty image file (0 bytes)")
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError ...
        raise InputError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def load_depth_image(path: Path) -> np.ndarray:
    """Raw 16-bit depth of a PNG/TIFF as uint16 [H, W] (InputError if unreadable or not 16-bit)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            a = np.asarray(im)
    except Exception as e:
        raise InputError(f"{path}: unreadable depth image ({type(e).__name__}: {e})") from None
    if a.size == 0:
        raise InputError(f"{path}: zero-size depth image")
    if a.ndim != 2 or mode not in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        raise InputError(f"{path}: depth must be a single-channel 16-bit image, got mode {mode} {a.shape}")
    if a.dtype != np.uint16:
        if a.min() < 0 or a.max() > 65535:
            raise InputError(f"{path}: depth values outside the 16-bit range")
        a = a.astype(np.uint16)
    return a


def load_color_image(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a color image (InputError if unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise InputError(f"{path}: unreadable color image ({type(e).__name__}: {e})") from None


def load_mask_image(path: Path) -> np.ndarray:
    """bool [H, W]: pixels > 0 of a mask image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"))
    except Exception as e:
        raise InputError(f"{path}: unreadable mask image ({type(e).__name__}: {e})") from None
    return a > 0


def _by_number(files: list[Path]) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for f in files:
        n = trailing_number(f.name)
        if n is None:
            continue
        if n in out:
            raise InputError(f"{f}: two images for frame {n} ({out[n].name} and {f.name})")
        out[n] = f
    return out


def _images(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts and not p.name.startswith("."))


class _FolderSource(FrameSource):
    """Shared machinery of the folder sources: entries, intrinsics, loading, checks, seeking."""

    def __init__(self, folder: Path, entries: list[FolderEntry], k: Intrinsics, depth_scale: float, fps: float,
                 empty_depth: str) -> None:
        if not entries:
            raise InputError(f"{folder}: no depth images found")
        if not (depth_scale > 0 and np.isfinite(depth_scale)):
            raise ValueError(f"depth_scale must be positive, got {depth_scale}")
        self.folder = folder
        self.entries = entries
        self._k = k
        self.depth_scale = float(depth_scale)
        self._fps = float(fps)
        self.empty_depth = check_empty_policy(empty_depth)
        self.has_color = any(e.color is not None for e in entries)
        if self.has_color and not all(e.color is not None for e in entries):
            missing = next(e for e in entries if e.color is None)
            raise InputError(f"{missing.depth}: no color image for frame {missing.frame_id} (others have one)")
        for e in entries:
            dw, dh = _image_size(e.depth)
            if (dw, dh) != (k.width, k.height):
                raise InputError(
                    f"{e.depth}: depth is {dw}x{dh} but the intrinsics are for {k.width}x{k.height}"
                )
            if e.color is not None:
                cw, ch = _image_size(e.color)
                if (cw, ch) != (dw, dh):
                    raise InputError(f"{e.color}: color is {cw}x{ch} but depth {e.depth.name} is {dw}x{dh}")
            for m in e.masks:
                mw, mh = _image_size(m)
                if (mw, mh) != (dw, dh):
                    raise InputError(f"{m}: mask is {mw}x{mh} but depth {e.depth.name} is {dw}x{dh}")
        first = entries[0].frame_id
        self._times = [(e.frame_id - first) / self._fps for e in entries]
        self._next = 0

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the frames (depth and color share them)."""
        return self._k

    @property
    def length(self) -> int:
        """Number of frames (depth images)."""
        return len(self.entries)

    @property
    def fps(self) -> float:
        """Frame rate used to turn frame numbers into timestamps."""
        return self._fps

    def load(self, i: int) -> RGBDFrame:
        """Frame `i` (0-based position in the folder)."""
        e = self.entries[i]
        raw = load_depth_image(e.depth)
        depth = depth_to_metres(raw, self.depth_scale)
        meta: dict = {"source": str(self.folder), "frame_id": e.frame_id, "depth_file": str(e.depth),
                      "depth_scale": self.depth_scale}
        if e.color is not None:
            color = load_color_image(e.color)
            meta["color_file"] = str(e.color)
            meta["color_source"] = "image"
        else:
            color = gray_from_depth(depth)
            meta["color_source"] = "gray-from-depth (the folder has no color images)"
        mask = None
        if e.masks:
            mask = np.zeros(depth.shape, dtype=bool)
            for m in e.masks:
                mask |= load_mask_image(m)
            meta["mask_files"] = [str(m) for m in e.masks]
            meta["mask_objects"] = [_mask_object(m, e.frame_id) for m in e.masks]
        return RGBDFrame(i, self._times[i], color, depth, self._k, mask, meta)

    def next_frame(self) -> RGBDFrame | None:
        """The next frame in order, None at the end."""
        while self._next < len(self.entries):
            i = self._next
            self._next += 1
            f = self.load(i)
            if depth_is_empty(f.depth):
                if self.empty_depth == "error":
                    raise InputError(f"{self.entries[i].depth}: depth image is all zero (no valid depth)")
                if self.empty_depth == "skip":
                    continue
            return f
        return None

    def seek(self, index: int) -> None:
        """Position at frame `index` (0 <= index <= length)."""
        if not 0 <= index <= len(self.entries):
            raise IndexError(f"frame {index} is outside 0..{len(self.entries)}")
        self._next = int(index)

    def seek_time(self, t_s: float) -> None:
        """Position at the first frame with timestamp_s >= t_s."""
        self._next = bisect.bisect_left(self._times, float(t_s) - 1e-9)

    def describe(self) -> dict:
        """What the folder holds (for `nrstudio inspect`)."""
        return {
            "path": str(self.folder), "format": type(self).__name__, "frames": self.length,
            "frame_ids": [e.frame_id for e in self.entries][:20], "intrinsics": self._k.as_dict(),
            "depth_scale": self.depth_scale, "has_color": self.has_color,
            "frames_with_masks": sum(1 for e in self.entries if e.masks), "fps": self._fps,
        }


def _mask_object(path: Path, frame_id: int) -> str:
    stem = path.stem
    for sep in ("_",):
        parts = stem.split(sep)
        rest = [p for p in parts if not (p.isdigit() and int(p) == frame_id)]
        if rest:
            return sep.join(rest)
    return stem


def is_deepdeform_folder(path: Path) -> bool:
    """True for a folder in the DeepDeform layout (color/, depth/, intrinsics.txt)."""
    return (path / "color").is_dir() and (path / "depth").is_dir() and (path / "intrinsics.txt").is_file()


class DeepDeformSource(_FolderSource):
    """A DeepDeform sequence folder: color/NNNNNN.jpg, depth/NNNNNN.png (mm), intrinsics.txt, mask/.

    depth_scale: metres per raw depth unit (DeepDeform: 0.001). fps: for timestamps (DeepDeform: 30).
    mask_object: use only masks of this object name (e.g. "shirt"); None = union of all objects.
    """

    def __init__(self, folder: str | Path, depth_scale: float = 0.001, fps: float = 30.0,
                 empty_depth: str = "error", mask_object: str | None = None) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"{root}: folder not found")
        if not is_deepdeform_folder(root):
            raise InputError(f"{root}: not a DeepDeform folder (needs color/, depth/ and intrinsics.txt)")
        depth = _by_number(_images(root / "depth", DEPTH_EXT))
        color = _by_number(_images(root / "color", IMAGE_EXT))
        masks: dict[int, list[Path]] = {}
        if (root / "mask").is_dir():
            for m in _images(root / "mask", IMAGE_EXT):
                n = int(m.stem.split("_")[0]) if m.stem.split("_")[0].isdigit() else trailing_number(m.name)
                if n is None:
                    continue
                if mask_object is not None and _mask_object(m, n) != mask_object:
                    continue
                masks.setdefault(n, []).append(m)
        entries = []
        for n in sorted(depth):
            if n not in color:
                raise InputError(f"{depth[n]}: no color image for frame {n} in {root / 'color'}")
            entries.append(FolderEntry(n, depth[n], color[n], masks.get(n, [])))
        if not entries:
            raise InputError(f"{root / 'depth'}: no depth images found")
        w, h = _image_size(entries[0].depth)
        k = read_intrinsics_file(root / "intrinsics.txt", w, h)
        self.name = f"DeepDeform {root.name}"
        super().__init__(root, entries, k, depth_scale, fps, empty_depth)


def find_intrinsics_file(folder: Path) -> Path | None:
    """The intrinsics file of a generic folder (known names, then any *calib*.txt / *intrinsic*), or None."""
    for name in INTRINSICS_NAMES:
        if (folder / name).is_file():
            return folder / name
    for pat in ("*calib*.txt", "*intrinsic*.json", "*intrinsic*.txt", "*camera*.json"):
        hits = sorted(folder.glob(pat))
        if hits:
            return hits[0]
    return None


class ImageFolderSource(_FolderSource):
    """A generic RGB-D image folder (see the module docstring for the layouts it understands).

    intrinsics: an `Intrinsics`, a path to an intrinsics file, or None to look for one in the folder.
    depth_scale: metres per raw depth unit (default 0.001: millimetres). fps: for timestamps.
    """

    def __init__(self, folder: str | Path, intrinsics: Intrinsics | str | Path | None = None,
                 depth_scale: float = 0.001, fps: float = 30.0, empty_depth: str = "error") -> None:
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"{root}: folder not found")

        def pick(subdirs: tuple[str, ...], words: tuple[str, ...], exts: tuple[str, ...]) -> list[Path]:
            for s in subdirs:
                if (root / s).is_dir():
                    return _images(root / s, exts)
            return [p for p in _images(root, exts) if any(w in p.name.lower() for w in words)]

        depth_files = pick(("depth",), ("depth",), DEPTH_EXT)
        color_files = pick(("color", "rgb", "image"), ("color", "colour", "rgb"), IMAGE_EXT)
        mask_files = pick(("mask", "masks"), ("mask",), IMAGE_EXT)
        if not depth_files:
            raise InputError(f"{root}: no depth images found (expected depth/*.png or *depth*.png)")
        depth = _by_number(depth_files)
        if not depth:
            raise InputError(f"{root}: depth images need a frame number in their names")
        color = _by_number(color_files)
        masks: dict[int, list[Path]] = {}
        for m in mask_files:
            n = trailing_number(m.name)
            if n is not None:
                masks.setdefault(n, []).append(m)
        entries = [FolderEntry(n, depth[n], color.get(n), masks.get(n, [])) for n in sorted(depth)]
        w, h = _image_size(entries[0].depth)
        if isinstance(intrinsics, Intrinsics):
            k = intrinsics
        else:
            kp = Path(intrinsics) if intrinsics is not None else find_intrinsics_file(root)
            if kp is None:
                raise InputError(f"{root}: no intrinsics file found (intrinsics.json, intrinsics.txt or calib.txt)")
            k = read_intrinsics_file(kp, w, h)
        self.name = f"image folder {root.name}"
        super().__init__(root, entries, k, depth_scale, fps, empty_depth)
