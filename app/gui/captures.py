"""Captures: point clouds taken from the live model, the list the side panels consume, and their files.

A capture is the current fused surface in the live camera frame: the canonical TSDF zero crossings warped
by the current graph motion, with colors, normals and a per-point *track id*. The track id names the
canonical-lattice edge the sample lies on (voxel index of its lower end and the edge axis), so the same
canonical surface point carries the same id in every capture of a sequence: a capture series brings its
own correspondence.

A capture read from a mesh file keeps the mesh's triangles (`Capture.faces`, indices into its points), so
the panels that work on meshes (DiffuMatch, feature matching) get them without re-reading the file.

On disk (`save_captures` / `load_captures`): a folder with one binary little-endian PLY per cloud
(x y z nx ny nz float32, red green blue uint8, track_id int64; plus a face element, `list uchar int
vertex_indices`, when the capture has faces) and `captures.json`, a small index
{"format": "nrstudio-captures", "version": 1, "captures": [{"file", "name", "frame_index",
"timestamp_s", "points", "source"}, ...]}. Both written atomically.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app.gui.messages import notify
from fusion.errors import InputError

FORMAT = "nrstudio-captures"
VERSION = 1
INDEX_NAME = "captures.json"

#: PLY vertex layout of a capture file
_PLY_FIELDS = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4"),
               ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("track_id", "<i8")]
_PLY_TYPES = {"<f4": "float", "u1": "uchar", "<i8": "int64"}
_PLY_IN = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
           "char": "i1", "int8": "i1", "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
           "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4", "int64": "<i8", "uint64": "<u8"}


@dataclass
class Capture:
    """One captured point cloud.

    points float32 [N, 3] metres (live camera frame, OpenCV axes); normals float32 [N, 3] unit; colors uint8
    [N, 3] RGB; track_ids int64 [N] (-1 = none) shared across captures of one model; frame_index /
    timestamp_s: the source frame it was taken at; name: shown in the list; thumbnail: optional uint8
    [h, w, 3] picture for the list (not saved; re-rendered on load); faces: optional int64 [F, 3] triangles
    (indices into points) when the cloud is a mesh's vertices (a mesh file), else None. ValueError when an
    array's row count does not match the points or a face index is out of range.
    """

    points: np.ndarray
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    frame_index: int = -1
    timestamp_s: float = 0.0
    name: str = "capture"
    source: str = ""
    thumbnail: np.ndarray | None = field(default=None, repr=False)
    faces: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.points = np.ascontiguousarray(self.points, np.float32).reshape(-1, 3)
        n = len(self.points)
        if self.normals is not None:
            self.normals = np.ascontiguousarray(self.normals, np.float32).reshape(-1, 3)
        if self.colors is not None:
            self.colors = np.ascontiguousarray(self.colors, np.uint8).reshape(-1, 3)
        if self.track_ids is not None:
            self.track_ids = np.ascontiguousarray(self.track_ids, np.int64).reshape(-1)
        for name in ("normals", "colors", "track_ids"):
            a = getattr(self, name)
            if a is not None and len(a) != n:
                raise ValueError(f"capture {name} has {len(a)} rows, points have {n}")
        if self.faces is not None:
            f = np.asarray(self.faces)
            if f.size and not np.issubdtype(f.dtype, np.integer):
                raise ValueError(f"capture faces must be integer indices, got {f.dtype}")
            self.faces = np.ascontiguousarray(f, np.int64).reshape(-1, 3)
            if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= n):
                raise ValueError(f"capture faces index points outside 0..{n - 1}")

    @property
    def num_points(self) -> int:
        """N."""
        return int(len(self.points))

    @property
    def is_mesh(self) -> bool:
        """True when the capture carries at least one face."""
        return self.faces is not None and len(self.faces) > 0


# ----------------------------------------------------------------------------------------------------------
# from the fusion pipeline


def lattice_track_ids(points: np.ndarray, origin: np.ndarray, voxel_size: float) -> np.ndarray:
    """Track ids of canonical surface samples lying on voxel edges (TSDF zero crossings).

    points float [N, 3] canonical metres; origin float [3] the volume origin; voxel centres sit at
    origin + (i + 0.5) * voxel_size. A sample on the edge between voxel i and i + e_axis gets
    id = ((ix * 2^20 + iy) * 2^20 + iz) * 4 + axis (int64 [N]). Points off the lattice get the id of the
    voxel they are nearest to (axis 3); so do crossings within 5e-5 voxel of a voxel centre (a TSDF value of
    ~0 there: the edges meeting at that voxel give the same point, which then carries one id)."""
    q = (np.asarray(points, np.float64) - np.asarray(origin, np.float64)) / float(voxel_size) - 0.5
    r = np.round(q)
    off = np.abs(q - r)
    axis = np.argmax(off, axis=1)
    on_edge = off[np.arange(len(q)), axis] > 5e-5  # float32 metres resolve ~1e-5 voxel at 1 m
    lower = r.astype(np.int64)
    rows = np.nonzero(on_edge)[0]
    lower[rows, axis[rows]] = np.floor(q[rows, axis[rows]]).astype(np.int64)
    axis = np.where(on_edge, axis, 3).astype(np.int64)
    lower = np.clip(lower, 0, (1 << 20) - 1)
    return ((lower[:, 0] << 40) | (lower[:, 1] << 20) | lower[:, 2]) * 4 + axis


def capture_from_pipeline(pipeline: Any, frame_index: int = -1, timestamp_s: float = 0.0, name: str = "",
                          source: str = "", intrinsics: Any = None) -> Capture:
    """The current fused surface of a `fusion.pipeline.FusionPipeline` as a Capture (see the module docstring).

    Raises InputError when nothing has been fused yet. intrinsics: the processing camera, for the thumbnail.
    """
    from fusion.meshing import TriMesh, warp_mesh

    vol = getattr(pipeline, "volume", None)
    if vol is None:
        raise InputError("nothing has been fused yet: start the reconstruction before capturing")
    pts, nrm, col = vol.surface_points(pipeline.config.min_weight, channel="mesh")
    if len(pts) == 0:
        raise InputError("the fused surface is still empty: fuse a few more frames before capturing")
    ids = lattice_track_ids(pts, vol.origin, vol.voxel_size)
    cloud = TriMesh(np.asarray(pts, np.float32), np.zeros((0, 3), np.int32), np.asarray(nrm, np.float32),
                    np.asarray(col, np.uint8))
    live = warp_mesh(cloud, pipeline.graph, pipeline.motion)
    cap = Capture(live.vertices, live.normals, live.colors, ids, int(frame_index), float(timestamp_s),
                  name or f"frame {frame_index}", source)
    cap.thumbnail = render_thumbnail(cap, intrinsics)
    return cap


def render_thumbnail(cap: Capture, intrinsics: Any = None, size: tuple[int, int] = (128, 96)) -> np.ndarray:
    """A small picture of a cloud: points splatted with a z-buffer, seen from the camera (intrinsics given
    and points in front of it) or orthographically along +z; shaded by the normal's facing. uint8 [h, w, 3]."""
    w, h = size
    img = np.full((h, w, 3), 40, np.uint8)
    p = np.asarray(cap.points, np.float64)
    ok = np.isfinite(p).all(axis=1)
    if intrinsics is not None:
        ok &= p[:, 2] > 1e-3
    if not ok.any():
        return img
    p = p[ok]
    col = cap.colors[ok].astype(np.float32) if cap.colors is not None else np.full((len(p), 3), 200, np.float32)
    if cap.normals is not None:
        col = col * (0.35 + 0.65 * np.abs(cap.normals[ok][:, 2:3]))
    if intrinsics is not None:
        u = intrinsics.fx * p[:, 0] / p[:, 2] + intrinsics.cx
        v = intrinsics.fy * p[:, 1] / p[:, 2] + intrinsics.cy
    else:
        u, v = p[:, 0], p[:, 1]
    lo_u, hi_u = np.percentile(u, [1, 99])
    lo_v, hi_v = np.percentile(v, [1, 99])
    span = max(hi_u - lo_u, (hi_v - lo_v) * w / h, 1e-9) * 1.15
    cu, cv = (lo_u + hi_u) / 2, (lo_v + hi_v) / 2
    x = ((u - cu) / span * w + w / 2).astype(np.int64)
    y = ((v - cv) / span * w + h / 2).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    x, y, z, col = x[inside], y[inside], p[inside, 2], col[inside]
    order = np.argsort(-z)  # far first, near points overwrite
    img[y[order], x[order]] = np.clip(col[order], 0, 255).astype(np.uint8)
    return img


# ----------------------------------------------------------------------------------------------------------
# files


def write_capture_ply(path: str | Path, cap: Capture) -> Path:
    """Write one capture as a binary little-endian PLY (see the module docstring), atomically."""
    from fusion.atomic import atomic_path

    n = cap.num_points
    arr = np.zeros(n, dtype=_PLY_FIELDS)
    arr["x"], arr["y"], arr["z"] = cap.points.T
    if cap.normals is not None:
        arr["nx"], arr["ny"], arr["nz"] = cap.normals.T
    if cap.colors is not None:
        arr["red"], arr["green"], arr["blue"] = cap.colors.T
    arr["track_id"] = cap.track_ids if cap.track_ids is not None else -1
    header = ["ply", "format binary_little_endian 1.0", "comment nrstudio capture",
              f"comment name {cap.name}", f"element vertex {n}"]
    header += [f"property {_PLY_TYPES[t]} {k}" for k, t in _PLY_FIELDS]
    body = arr.tobytes()
    if cap.is_mesh:
        tri = np.zeros(len(cap.faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
        tri["n"] = 3
        tri["v"] = cap.faces
        header += [f"element face {len(tri)}", "property list uchar int vertex_indices"]
        body += tri.tobytes()
    header.append("end_header")
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_bytes(("\n".join(header) + "\n").encode("ascii") + body)
    return p


def read_capture_ply(path: str | Path) -> Capture:
    """Read a capture PLY (ours, or any binary little-endian / ASCII PLY with vertex x y z and optional
    normals, colors and track_id; a face element after the vertices becomes `Capture.faces`, polygons split
    into triangles). Other formats go through `models.common.io.load_points`. InputError names the file and
    the problem."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.suffix.lower() != ".ply":
        from models.common.io import load_points

        return Capture(load_points(p).astype(np.float32), name=p.stem, source=str(p))
    data = p.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise InputError(f"{p}: not a PLY file")
    nl = data.find(b"\n", end)
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[nl + 1:]
    fmt, n, props, in_vertex, before = None, 0, [], False, 0
    elements: list[list] = []  # [name, count, [(name, type) or (name, ("list", count type, item type))]]
    for line in header:
        t = line.split()
        if not t:
            continue
        if t[0] == "format":
            fmt = t[1]
        elif t[0] == "element":
            if len(t) < 3 or not t[2].isdigit():
                raise InputError(f"{p}: malformed PLY element line {line!r}")
            in_vertex = t[1] == "vertex"
            elements.append([t[1], int(t[2]), []])
            if in_vertex:
                n = int(t[2])
            elif not props:
                before += 1
        elif t[0] == "property" and elements:
            if t[1] == "list":
                if in_vertex:
                    raise InputError(f"{p}: list properties on vertices are not supported")
                if len(t) < 5 or t[2] not in _PLY_IN or t[3] not in _PLY_IN:
                    raise InputError(f"{p}: malformed PLY list property {line!r}")
                elements[-1][2].append((t[4], ("list", _PLY_IN[t[2]], _PLY_IN[t[3]])))
                continue
            if t[1] not in _PLY_IN:
                raise InputError(f"{p}: unknown PLY property type {t[1]!r}")
            elements[-1][2].append((t[2], _PLY_IN[t[1]]))
            if in_vertex:
                props.append((t[2], _PLY_IN[t[1]]))
    names = [k for k, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise InputError(f"{p}: the PLY has no x y z vertex properties")
    if before:
        raise InputError(f"{p}: elements before the vertex element are not supported")
    after = [e for e in elements if e[0] != "vertex"]
    face_el = after[0] if after and after[0][0] == "face" and after[0][1] > 0 else None
    try:
        if fmt == "binary_little_endian":
            arr = np.frombuffer(body, dtype=props, count=n)
            rest = body[arr.nbytes:]
        elif fmt == "ascii":
            lines = body.decode("ascii").splitlines()
            rows = np.loadtxt(lines[:n], ndmin=2)
            arr = np.zeros(n, dtype=props)
            for i, k in enumerate(names):
                arr[k] = rows[:, i]
            rest = lines[n:]
        else:
            raise InputError(f"{p}: PLY format {fmt!r} is not supported (binary_little_endian or ascii)")
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: truncated or corrupt PLY ({e})") from None
    pts = np.stack([arr["x"], arr["y"], arr["z"]], 1).astype(np.float32)
    if not np.isfinite(pts).all():
        raise InputError(f"{p}: the cloud has NaN or infinite coordinates")
    nrm = np.stack([arr["nx"], arr["ny"], arr["nz"]], 1).astype(np.float32) if {"nx", "ny", "nz"} <= set(names) else None
    col = np.stack([arr["red"], arr["green"], arr["blue"]], 1).astype(np.uint8) if {"red", "green", "blue"} <= set(names) else None
    ids = arr["track_id"].astype(np.int64) if "track_id" in names else None
    faces = _read_ply_faces(p, face_el, fmt, rest, n) if face_el is not None else None
    name = p.stem
    for line in header:
        if line.startswith("comment name "):
            name = line[len("comment name "):]
    return Capture(pts, nrm, col, ids, name=name, source=str(p), faces=faces)


def _fan(polys: list[list[int]]) -> np.ndarray:
    """Polygons (vertex index lists) as triangles int64 [F, 3] (fans; polygons under 3 vertices dropped)."""
    tris = [(poly[0], poly[i], poly[i + 1]) for poly in polys for i in range(1, len(poly) - 1)]
    return np.asarray(tris, np.int64).reshape(-1, 3)


def _read_ply_faces(p: Path, element: list, fmt: str, rest: Any, n_vertices: int) -> np.ndarray:
    """The face element of a PLY (the one right after the vertices) as triangles int64 [F, 3]. Fast path:
    one `list` property of triangles; other layouts (polygons, extra face properties) go through a slower
    general reader. InputError for truncated data or indices outside the vertices."""
    _, count, fprops = element
    lists = [k for k, (_, t) in enumerate(fprops) if isinstance(t, tuple)]
    if len(lists) != 1 or fprops[lists[0]][0] not in ("vertex_indices", "vertex_index"):
        raise InputError(f"{p}: the face element needs one vertex_indices list property")
    try:
        if fmt == "ascii":
            rows = [ln.split() for ln in rest[:count]]
            if len(rows) < count:
                raise ValueError(f"{len(rows)} of {count} face lines")
            polys = []
            for r in rows:
                pos = 0
                for k, (_, t) in enumerate(fprops):
                    if k == lists[0]:
                        c = int(r[pos])
                        polys.append([int(v) for v in r[pos + 1: pos + 1 + c]])
                        if len(polys[-1]) != c:
                            raise ValueError("short face line")
                        pos += 1 + c
                    else:
                        pos += 1
            faces = _fan(polys)
        else:
            _, (_, ct, it) = fprops[lists[0]]
            fields: list[tuple] = []
            for k, (_, t) in enumerate(fprops):  # the record layout if every face is a triangle
                fields += [("n", ct), ("v", it, (3,))] if k == lists[0] else [(f"p{k}", t)]
            tri = np.dtype(fields)
            head = np.frombuffer(rest, dtype=tri, count=min(count, len(rest) // tri.itemsize)) if count else None
            if head is not None and len(head) == count and (head["n"] == 3).all():
                faces = head["v"].astype(np.int64)
            else:  # polygons or mixed sizes: walk the records
                polys, pos = [], 0
                for _ in range(count):
                    for k, (_, t) in enumerate(fprops):
                        if k == lists[0]:
                            c = int(np.frombuffer(rest, ct, 1, pos)[0])
                            pos += np.dtype(ct).itemsize
                            polys.append(np.frombuffer(rest, it, c, pos).tolist())
                            pos += c * np.dtype(it).itemsize
                        else:
                            pos += np.dtype(t).itemsize
                faces = _fan(polys)
    except (ValueError, IndexError) as e:
        raise InputError(f"{p}: truncated or corrupt PLY faces ({e})") from None
    if len(faces) and (faces.min() < 0 or faces.max() >= n_vertices):
        raise InputError(f"{p}: PLY faces index vertices outside 0..{n_vertices - 1}")
    return faces


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return keep or "capture"


def save_captures(folder: str | Path, captures: list[Capture]) -> Path:
    """Write `captures` into `folder` (created): one PLY per cloud plus captures.json. Returns the index path."""
    from fusion.atomic import write_text_atomic

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, cap in enumerate(captures):
        fname = f"{i:04d}_{_safe_name(cap.name)}.ply"
        write_capture_ply(out / fname, cap)
        entries.append({"file": fname, "name": cap.name, "frame_index": int(cap.frame_index),
                        "timestamp_s": float(cap.timestamp_s), "points": cap.num_points, "source": cap.source})
    index = out / INDEX_NAME
    write_text_atomic(index, json.dumps({"format": FORMAT, "version": VERSION, "captures": entries}, indent=2) + "\n")
    return index


def load_captures(path: str | Path) -> list[Capture]:
    """Read captures saved by `save_captures` (the folder or its captures.json). InputError on a missing or
    corrupt index or cloud."""
    p = Path(path)
    index = p / INDEX_NAME if p.is_dir() else p
    if not index.is_file():
        raise InputError(f"{p}: no {INDEX_NAME} here (not a captures folder)")
    try:
        meta = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{index}: not a readable captures index ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("captures"), list):
        raise InputError(f"{index}: not an nrstudio captures index")
    caps = []
    for e in meta["captures"]:
        if not isinstance(e, dict) or "file" not in e:
            raise InputError(f"{index}: malformed capture entry {e!r}")
        cap = read_capture_ply(index.parent / str(e["file"]))
        cap.name = str(e.get("name", cap.name))
        cap.frame_index = int(e.get("frame_index", -1))
        cap.timestamp_s = float(e.get("timestamp_s", 0.0))
        cap.source = str(e.get("source", cap.source))
        if int(e.get("points", cap.num_points)) != cap.num_points:
            raise InputError(f"{index.parent / e['file']}: holds {cap.num_points} points, the index says {e['points']}")
        cap.thumbnail = render_thumbnail(cap)
        caps.append(cap)
    return caps


# ----------------------------------------------------------------------------------------------------------
# widgets

def numpy_to_qimage(img: np.ndarray) -> QtGui.QImage:
    """uint8 [H, W, 3] RGB -> a QImage owning a copy of the pixels."""
    a = np.ascontiguousarray(img, np.uint8)
    h, w = a.shape[:2]
    return QtGui.QImage(a.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class CaptureStore(QtCore.QObject):
    """The app's list of captures (UI thread). Emits `changed` after every edit."""

    changed = QtCore.Signal()

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.items: list[Capture] = []

    def add(self, cap: Capture) -> None:
        """Append a capture."""
        self.items.append(cap)
        self.changed.emit()

    def extend(self, caps: list[Capture]) -> None:
        """Append several captures."""
        self.items.extend(caps)
        self.changed.emit()

    def remove(self, rows: list[int]) -> None:
        """Remove captures by position."""
        for r in sorted(set(rows), reverse=True):
            if 0 <= r < len(self.items):
                del self.items[r]
        self.changed.emit()

    def clear(self) -> None:
        """Remove every capture."""
        self.items.clear()
        self.changed.emit()

    def __len__(self) -> int:
        return len(self.items)


class CaptureDock(QtWidgets.QWidget):
    """Capture buttons ("Capture", "every N frames, M times"), the capture list with thumbnails, save / load.

    Signals: captureRequested(every: int, times: int) (every = 0: now), cancelSeriesRequested(), and
    log(level, text) for the log pane.
    """

    captureRequested = QtCore.Signal(int, int)
    cancelSeriesRequested = QtCore.Signal()
    log = QtCore.Signal(str, str)

    def __init__(self, store: CaptureStore, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.capture_btn = QtWidgets.QPushButton("Capture")
        self.capture_btn.setToolTip("Store the current fused surface as a point cloud (colors, normals, track ids)")
        self.every = QtWidgets.QSpinBox(minimum=1, maximum=1000, value=10)
        self.every.setPrefix("every ")
        self.every.setSuffix(" frames")
        self.times = QtWidgets.QSpinBox(minimum=1, maximum=1000, value=5)
        self.times.setSuffix(" times")
        self.series_btn = QtWidgets.QPushButton("Start series")
        self.series_btn.setCheckable(True)
        self.series_btn.setToolTip("Capture every N fused frames, M times")
        self.save_btn = QtWidgets.QPushButton("Save…")
        self.load_btn = QtWidgets.QPushButton("Load…")
        self.remove_btn = QtWidgets.QPushButton("Remove")
        self.list = QtWidgets.QListWidget()
        self.list.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.list.setFlow(QtWidgets.QListView.Flow.LeftToRight)
        self.list.setWrapping(False)
        self.list.setIconSize(QtCore.QSize(128, 96))
        self.list.setResizeMode(QtWidgets.QListView.ResizeMode.Adjust)
        self.list.setMovement(QtWidgets.QListView.Movement.Static)
        self.list.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMinimumHeight(140)
        self.list.setSpacing(4)
        self.count_label = QtWidgets.QLabel("no captures")
        self.count_label.setStyleSheet("color: gray")

        bar = QtWidgets.QHBoxLayout()
        for w in (self.capture_btn, self.every, self.times, self.series_btn):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(self.count_label)
        for w in (self.remove_btn, self.save_btn, self.load_btn):
            bar.addWidget(w)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(bar)
        lay.addWidget(self.list, 1)

        self.capture_btn.clicked.connect(lambda: self.captureRequested.emit(0, 1))
        self.series_btn.toggled.connect(self._series_toggled)
        self.save_btn.clicked.connect(self._save_dialog)
        self.load_btn.clicked.connect(self._load_dialog)
        self.remove_btn.clicked.connect(self._remove_selected)
        store.changed.connect(self.refresh)
        self.refresh()

    def _series_toggled(self, on: bool) -> None:
        if on:
            self.series_btn.setText("Stop series")
            self.captureRequested.emit(int(self.every.value()), int(self.times.value()))
        else:
            self.series_btn.setText("Start series")
            self.cancelSeriesRequested.emit()

    def series_finished(self) -> None:
        """The worker finished (or cancelled) a capture series."""
        self.series_btn.blockSignals(True)
        self.series_btn.setChecked(False)
        self.series_btn.setText("Start series")
        self.series_btn.blockSignals(False)

    def refresh(self) -> None:
        """Rebuild the list from the store."""
        self.list.clear()
        for cap in self.store.items:
            thumb = cap.thumbnail if cap.thumbnail is not None else render_thumbnail(cap)
            item = QtWidgets.QListWidgetItem(QtGui.QIcon(QtGui.QPixmap.fromImage(numpy_to_qimage(thumb))),
                                             f"{cap.name}\n{cap.num_points:,} pts")
            item.setToolTip(f"{cap.name}: {cap.num_points:,} points, source frame index {cap.frame_index}, "
                            f"t = {cap.timestamp_s:.2f} s\n{cap.source}")
            self.list.addItem(item)
        n = len(self.store)
        self.count_label.setText(f"{n} capture{'s' if n != 1 else ''}" if n else "no captures")
        self.save_btn.setEnabled(n > 0)
        self.remove_btn.setEnabled(n > 0)

    def _remove_selected(self) -> None:
        self.store.remove([self.list.row(i) for i in self.list.selectedItems()])

    def save_to(self, folder: str | Path) -> Path:
        """Save every capture to `folder`; logs and returns the index path."""
        index = save_captures(folder, self.store.items)
        self.log.emit("info", f"saved {len(self.store)} captures to {Path(folder)}")
        return index

    def load_from(self, path: str | Path) -> int:
        """Load captures from a folder (appended to the list); returns how many."""
        caps = load_captures(path)
        self.store.extend(caps)
        self.log.emit("info", f"loaded {len(caps)} captures from {path}")
        return len(caps)

    def _save_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Save captures to folder")
        if folder:
            try:
                self.save_to(folder)
            except (InputError, OSError) as e:
                self.log.emit("error", f"saving captures failed: {e}")
                notify(self, "Save captures", str(e))

    def _load_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Load captures from folder")
        if folder:
            try:
                self.load_from(folder)
            except (InputError, OSError) as e:
                self.log.emit("error", f"loading captures failed: {e}")
                notify(self, "Load captures", str(e))
