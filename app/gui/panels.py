"""The side-panel framework: a dock where each shape method registers a panel.

A panel is a `ShapePanel` subclass declaring its inputs (point clouds: captures from the capture list or
files), its parameters (`Param`) and one method, `compute(inputs, params, ctx) -> PanelResult`, which runs
in a worker thread (`PanelJob` in a QThread) and reports progress through `ctx.progress(fraction, text)`;
Cancel makes the next `ctx.progress` / `ctx.check` raise `Cancelled`. The framework builds the widgets
(input choosers, parameter form, Run / Cancel, progress bar, the panel's own 3D view of the result
layers, a summary table, Export). `compute` must not touch widgets: inputs are plain `Capture`s.

Adding a panel (what the shape-method issues do): create `app/gui/panel_<name>.py` with

    from app.gui.panels import Param, PanelResult, ShapePanel, register_panel

    @register_panel
    class MyPanel(ShapePanel):
        key = "mine"; title = "My method"; description = "..."; inputs = ("Source", "Target")
        params = (Param("steps", "Steps", "int", 100, 1, 10000),)
        def compute(self, inputs, params, ctx): ...; return PanelResult(layers=[...], summary={...})

`discover_panels()` imports every `app.gui.panel_*` module, so nothing else needs editing.

Sequence inputs: labels listed in `sequence_inputs` (a subset of `inputs`) take an ordered list of clouds
(`SequenceChooser`: ticked captures of the capture list in list order, then files added with "Files…" or
"Folder…" — PLY / OBJ / OFF in natural name order); `compute` then gets `inputs[label]` as
`list[Capture]`, other labels a single `Capture`.

Animated results: `PanelResult.frames` (a list over time of lists of `Layer`) turns the panel's view into
an animation: a time slider, a play / pause button and a frame label appear under the view, which shows
`layers` (static) plus `frames[t]`. The export writes each frame layer as `<key>_<layername>_<t:04d>.ply`
(besides the static layers, arrays and summary).

Layout: the description and the form (inputs, parameters) sit in a scroll area that takes at most
`ShapePanel.FORM_SHARE` of the panel's height; the buttons, the progress bar and the result view below it
always stay in view, so a panel fits its dock at the main window's default size.

Also for panels: `ShapePanel.add_button(text, slot, tip)` adds a button to a row under the Run / Cancel /
Export row (e.g. "Load …" for a file format of the method), and `ShapePanel.show_result(result)` shows a result
that did not come from a job (a loaded file) exactly like a finished run's; `ShapePanel.grab_image()` is
the panel as a QImage with its 3D view pasted in (screenshots).
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import re
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from PySide6 import QtCore, QtWidgets

from app.gui.captures import Capture, CaptureStore, read_capture_ply, write_capture_ply
from app.gui.messages import notify
from fusion.errors import InputError, NRStudioError

PANEL_REGISTRY: dict[str, type["ShapePanel"]] = {}
"""key -> panel class, filled by `register_panel` (a plug-in registry, like app.cli.COMMANDS)"""


def register_panel(cls: type["ShapePanel"]) -> type["ShapePanel"]:
    """Class decorator: make a ShapePanel subclass available in the panel dock (by its `key`)."""
    if not cls.key or cls.key in PANEL_REGISTRY and PANEL_REGISTRY[cls.key] is not cls:
        raise ValueError(f"panel key {cls.key!r} is empty or already registered")
    PANEL_REGISTRY[cls.key] = cls
    return cls


def discover_panels() -> list[str]:
    """Import every `app.gui.panel_*` module (each registers its panel). Returns one message per module that
    failed to import (the others still load)."""
    import app.gui as pkg

    errors = []
    for m in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if m.name.startswith("panel_"):
            try:
                importlib.import_module(f"app.gui.{m.name}")
            except Exception as e:  # a broken panel must not take the app down
                errors.append(f"panel module app.gui.{m.name} failed to load: {type(e).__name__}: {e}")
    return errors


# ----------------------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Param:
    """One panel parameter: kind "int" | "float" | "bool" | "choice"; minimum / maximum / decimals for
    numbers, choices for "choice"."""

    name: str
    label: str
    kind: str
    default: Any
    minimum: float = 0.0
    maximum: float = 1e9
    decimals: int = 3
    choices: tuple[str, ...] = ()
    tip: str = ""


@dataclass
class Layer:
    """One thing a result shows: points float [N, 3] (OpenCV camera frame, metres), colors uint8 [N, 3] or
    None (gray), optional faces int [F, 3] (a mesh; else a cloud), point size in pixels, alpha."""

    name: str
    points: np.ndarray
    colors: np.ndarray | None = None
    faces: np.ndarray | None = None
    size: float = 3.0
    alpha: float = 1.0
    visible: bool = True


@dataclass
class PanelResult:
    """What `compute` returns: layers for the panel's 3D view, a summary (name -> number or text) for the
    table and the export, optional extra arrays to export (name -> numpy array, written as .npy), and
    optional animation frames: frames[t] the layers shown at time step t on top of `layers` (the view gets
    a time slider; layers of one name across frames share one visibility checkbox)."""

    layers: list[Layer] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    frames: list[list[Layer]] = field(default_factory=list)


class Cancelled(Exception):
    """Raised inside `compute` (by ctx.progress / ctx.check) once Cancel was pressed."""


class JobContext:
    """Handed to `compute`: progress reporting and cancellation (thread-safe)."""

    def __init__(self, report: Callable[[float, str], None], cancel: threading.Event) -> None:
        self._report = report
        self._cancel = cancel

    @property
    def cancelled(self) -> bool:
        """True once Cancel was pressed."""
        return self._cancel.is_set()

    def check(self) -> None:
        """Raise Cancelled if Cancel was pressed."""
        if self._cancel.is_set():
            raise Cancelled()

    def progress(self, fraction: float, text: str = "") -> None:
        """Report progress in [0, 1] with a short text, then honour a pending Cancel (raises Cancelled)."""
        self._report(float(np.clip(fraction, 0.0, 1.0)), str(text))
        self.check()


class PanelJob(QtCore.QObject):
    """Runs `compute(inputs, params, ctx)` in its own QThread (inputs: label -> Capture, or list[Capture]
    for sequence inputs). Signals: progress(float, str), finished(PanelResult), cancelled(), failed(str)."""

    progress = QtCore.Signal(float, str)
    finished = QtCore.Signal(object)
    cancelled = QtCore.Signal()
    failed = QtCore.Signal(str)

    def __init__(self, fn: Callable[..., PanelResult], inputs: dict[str, Capture | list[Capture]],
                 params: dict[str, Any]) -> None:
        super().__init__()
        self.fn = fn
        self.inputs = inputs
        self.params = params
        self.cancel_event = threading.Event()
        self.thread = QtCore.QThread()
        self.moveToThread(self.thread)
        self.thread.started.connect(self.run)
        self.done = False

    def start(self) -> None:
        """Start the job's thread."""
        self.thread.start()

    def cancel(self) -> None:
        """Ask the job to stop at its next progress report (returns at once)."""
        self.cancel_event.set()

    @QtCore.Slot()
    def run(self) -> None:
        """Thread body: compute and emit exactly one of finished / cancelled / failed."""
        ctx = JobContext(lambda f, t: self.progress.emit(f, t), self.cancel_event)
        try:
            ctx.check()
            res = self.fn(self.inputs, self.params, ctx)
            if not isinstance(res, PanelResult):
                raise TypeError(f"compute returned {type(res).__name__}, not PanelResult")
            self.done = True
            self.finished.emit(res)
        except Cancelled:
            self.done = True
            self.cancelled.emit()
        except (InputError, NRStudioError) as e:
            self.done = True
            self.failed.emit(str(e))
        except Exception as e:  # a bug in the panel: report it with the traceback, keep the app
            self.done = True
            self.failed.emit(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=5)}")
        finally:
            self.thread.quit()


# ----------------------------------------------------------------------------------------------------------
# the panel's own 3D view


VIEW_UP: dict[str, np.ndarray] = {
    "-y": np.eye(3),
    "+y": np.diag([1.0, -1.0, -1.0]),
    "+z": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),
    "-z": np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]]),
}
"""the panel views' "up" choices: rotation (proper, about x) taking that axis of the data to the camera
frame's -y, which the views draw upward (`app.gui.views.to_display`); "-y" = the camera frame itself"""

VIEW_UP_LABELS = {"-y": "−y (camera)", "+y": "+y", "+z": "+z", "-z": "−z"}
"""the up-axis combo's texts"""


class CloudView(QtWidgets.QWidget):
    """A small 3D view of result layers (clouds as points, meshes shaded), z-up like the main view.

    The header row holds one check box per layer (names elided, full name in the tooltip; the row scrolls
    sideways when they do not fit) and an "Up" choice (`VIEW_UP`): which data axis is drawn upward. The
    default, −y, is the camera frame of captures; files in the y-up convention (most mesh files) show
    upright with +y. It only changes the display (layers, exports and results keep their coordinates) and
    persists across results.

    With animation frames (`set_layers(layers, frames)`) a row under the view holds a time slider, a
    play / pause button and a frame label; the view shows the static layers plus frames[t]."""

    FPS = 8.0
    """playback speed (frames per second)"""
    NAME_CHARS = 28
    """layer names longer than this are elided in the check boxes"""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        import pyqtgraph.opengl as gl

        from app.gui.views import BACKGROUND

        super().__init__(parent)
        self.gl = gl.GLViewWidget()
        self.gl.setBackgroundColor(BACKGROUND)
        self.gl.setMinimumHeight(120)
        self.up_axis = "-y"
        self.up_combo = QtWidgets.QComboBox()
        for key, text in VIEW_UP_LABELS.items():
            self.up_combo.addItem(text, key)
        self.up_combo.setToolTip("Which axis of the data points up in this view (display only). −y: the camera "
                                 "frame of captures; +y: most mesh files (y-up)")
        self.up_combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToContents)
        box_host = QtWidgets.QWidget()
        self.boxes = QtWidgets.QHBoxLayout(box_host)
        self.boxes.setContentsMargins(0, 0, 0, 0)
        self.boxes.addStretch(1)
        self.box_scroll = QtWidgets.QScrollArea()
        self.box_scroll.setWidget(box_host)
        self.box_scroll.setWidgetResizable(True)
        self.box_scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.box_scroll.setVerticalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.box_scroll.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.box_scroll.setFixedHeight(QtWidgets.QCheckBox("Ag").sizeHint().height()
                                       + self.box_scroll.horizontalScrollBar().sizeHint().height() + 2)
        header = QtWidgets.QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.box_scroll, 1)
        header.addWidget(QtWidgets.QLabel("Up"))
        header.addWidget(self.up_combo)
        self.play_btn = QtWidgets.QToolButton(text="▶")
        self.play_btn.setCheckable(True)
        self.play_btn.setToolTip("Play / pause the animation")
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("Time step")
        self.frame_label = QtWidgets.QLabel("")
        self.frame_label.setMinimumWidth(70)
        self.time_bar = QtWidgets.QWidget()
        tl = QtWidgets.QHBoxLayout(self.time_bar)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.play_btn)
        tl.addWidget(self.slider, 1)
        tl.addWidget(self.frame_label)
        self.time_bar.hide()
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addLayout(header)
        lay.addWidget(self.gl, 1)
        lay.addWidget(self.time_bar)
        self._items: list[Any] = []
        self._frame_items: list[Any] = []
        self._checks: list[QtWidgets.QCheckBox] = []
        self._layers: list[Layer] = []
        self._frames: list[list[Layer]] = []
        self._visible: dict[str, bool] = {}
        self._frame_checks: dict[str, QtWidgets.QCheckBox] = {}
        self.frame_index = 0
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(int(1000 / self.FPS))
        self.timer.timeout.connect(self._advance)
        self.slider.valueChanged.connect(self.set_frame)
        self.play_btn.toggled.connect(self.play)
        self.up_combo.currentIndexChanged.connect(lambda _i: self.set_up_axis(self.up_combo.currentData()))

    def display_points(self, points: np.ndarray) -> np.ndarray:
        """Data points (or normals) float [N, 3] -> GL display coordinates float32 [N, 3] under the chosen up
        axis (`VIEW_UP[self.up_axis]`, then the camera-frame mapping of `app.gui.views.to_display`)."""
        from app.gui.views import to_display

        p = np.asarray(points, np.float32).reshape(-1, 3)
        if self.up_axis != "-y":
            p = p @ VIEW_UP[self.up_axis].T.astype(np.float32)
        return to_display(p)

    def set_up_axis(self, up: str) -> None:
        """Draw data axis `up` ("-y" | "+y" | "+z" | "-z") upward: the shown result is redrawn (layer
        visibility and the animation frame kept) and re-framed. Display only. ValueError for other names."""
        if up not in VIEW_UP:
            raise ValueError(f"unknown up axis {up!r} ({', '.join(VIEW_UP)})")
        if self.up_combo.currentData() != up:
            self.up_combo.blockSignals(True)
            self.up_combo.setCurrentIndex(self.up_combo.findData(up))
            self.up_combo.blockSignals(False)
        if up == self.up_axis:
            return
        self.up_axis = up
        if not self._layers and not self._frames:
            return
        checked = [b.isChecked() for b in self._checks]
        t, playing = self.frame_index, self.playing
        self.set_layers(self._layers, self._frames)  # same layers -> the same check boxes in the same order
        for box, on in zip(self._checks, checked):
            box.setChecked(on)
        if self._frames:
            self.set_frame(t)
            self.play(playing)

    @property
    def n_frames(self) -> int:
        """Number of animation frames (0 = a static result)."""
        return len(self._frames)

    @property
    def playing(self) -> bool:
        """True while the animation plays."""
        return self.timer.isActive()

    def shown_layers(self) -> list[Layer]:
        """The layers drawn now: the static ones plus those of the current frame (visible or not)."""
        return list(self._layers) + (list(self._frames[self.frame_index]) if self._frames else [])

    def clear(self) -> None:
        """Remove every layer (and the animation)."""
        self.timer.stop()
        for it in self._items + self._frame_items:
            self.gl.removeItem(it)
        for b in self._checks:
            self.boxes.removeWidget(b)
            b.deleteLater()
        self._items, self._frame_items, self._checks = [], [], []
        self._layers, self._frames, self._frame_checks = [], [], {}
        self.frame_index = 0
        self.play_btn.blockSignals(True)
        self.play_btn.setChecked(False)
        self.play_btn.setText("▶")
        self.play_btn.blockSignals(False)
        self.time_bar.hide()

    UNIFORM_GRAY = (0.75, 0.75, 0.78)
    """RGB of layers without colors"""

    def _make_item(self, layer: Layer) -> Any:
        """A GL item for one layer (None when it has no points). Per-point colors go to the item as an
        array float32 [N, 4]; a layer without colors gets one uniform color as a tuple (pyqtgraph treats
        any numpy array as per-point colors: a 4-element array would color only the first point)."""
        import pyqtgraph.opengl as gl

        from app.gui.views import headlight_shader
        from fusion.meshing import vertex_normals

        p = self.display_points(layer.points)
        if len(p) == 0:
            return None
        color: tuple[float, ...] | np.ndarray
        if layer.colors is not None:
            color = np.concatenate([np.asarray(layer.colors, np.float32).reshape(-1, 3) / 255.0,
                                    np.full((len(p), 1), layer.alpha, np.float32)], 1)
        else:
            color = (*self.UNIFORM_GRAY, float(layer.alpha))
        if layer.faces is not None and len(layer.faces):
            md = gl.MeshData(vertexes=p, faces=np.asarray(layer.faces, np.uint32))
            md._vertexNormals = self.display_points(vertex_normals(np.asarray(layer.points, np.float32),
                                                                   np.asarray(layer.faces, np.int64)))
            if isinstance(color, np.ndarray):
                md.setVertexColors(color)
            item = gl.GLMeshItem(meshdata=md, smooth=True, shader=headlight_shader(),
                                 color=color if isinstance(color, tuple) else (1, 1, 1, 1))
        else:
            item = gl.GLScatterPlotItem(pos=p, color=color, size=layer.size, pxMode=True)
            item.setGLOptions("translucent" if layer.alpha < 1 else "opaque")
        return item

    def _add_check(self, name: str, checked: bool) -> QtWidgets.QCheckBox:
        short = name if len(name) <= self.NAME_CHARS else name[: self.NAME_CHARS - 1] + "…"
        box = QtWidgets.QCheckBox(short)
        box.setToolTip(name)
        box.setChecked(checked)
        self.boxes.insertWidget(self.boxes.count() - 1, box)
        self._checks.append(box)
        return box

    def set_layers(self, layers: list[Layer], frames: list[list[Layer]] | None = None) -> None:
        """Show `layers` (replacing the previous ones) and, when given, the animation `frames` (frames[t]
        drawn on top of `layers` at time step t; starts at t = 0, paused); frame the whole lot."""
        from PySide6 import QtGui

        self.clear()
        self._layers = list(layers)
        self._frames = [list(f) for f in (frames or [])]
        allp = []
        for layer in self._layers:
            item = self._make_item(layer)
            if item is None:
                continue
            allp.append(self.display_points(layer.points))
            item.setVisible(layer.visible)
            self.gl.addItem(item)
            self._items.append(item)
            self._add_check(layer.name, layer.visible).toggled.connect(item.setVisible)
        if self._frames:
            self._visible = {}
            for fr in self._frames:
                for layer in fr:
                    if layer.name not in self._visible:
                        self._visible[layer.name] = layer.visible
                        box = self._add_check(layer.name, layer.visible)
                        box.toggled.connect(lambda on, n=layer.name: self._set_frame_layer_visible(n, on))
                        self._frame_checks[layer.name] = box
                    if len(layer.points):
                        allp.append(self.display_points(layer.points))
            self.slider.blockSignals(True)
            self.slider.setRange(0, len(self._frames) - 1)
            self.slider.setValue(0)
            self.slider.blockSignals(False)
            self.time_bar.show()
            self._show_frame(0)
        if allp:
            pts = np.concatenate(allp)
            lo, hi = np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)
            c = (lo + hi) / 2
            ext = float(np.max(hi - lo)) or 1.0
            # pyqtgraph's field of view is horizontal: back off further in a wide, low view
            aspect = self.gl.width() / max(self.gl.height(), 1)
            self.gl.setCameraPosition(pos=QtGui.QVector3D(*map(float, c)), distance=ext * max(1.8, 1.1 * aspect),
                                      elevation=18, azimuth=-90)

    def _set_frame_layer_visible(self, name: str, on: bool) -> None:
        self._visible[name] = bool(on)
        self._show_frame(self.frame_index)

    def _show_frame(self, t: int) -> None:
        for it in self._frame_items:
            self.gl.removeItem(it)
        self._frame_items = []
        self.frame_index = int(t)
        for layer in self._frames[self.frame_index]:
            item = self._make_item(layer)
            if item is None:
                continue
            item.setVisible(self._visible.get(layer.name, layer.visible))
            self.gl.addItem(item)
            self._frame_items.append(item)
        self.frame_label.setText(f"frame {self.frame_index + 1} / {len(self._frames)}")

    def set_frame(self, t: int) -> None:
        """Show time step t (clamped to the frames; moves the slider)."""
        if not self._frames:
            return
        t = int(np.clip(t, 0, len(self._frames) - 1))
        if self.slider.value() != t:
            self.slider.blockSignals(True)
            self.slider.setValue(t)
            self.slider.blockSignals(False)
        self._show_frame(t)

    def play(self, on: bool = True) -> None:
        """Start (on) or pause the animation; it loops."""
        on = bool(on) and len(self._frames) > 1
        if self.play_btn.isChecked() != on:
            self.play_btn.blockSignals(True)
            self.play_btn.setChecked(on)
            self.play_btn.blockSignals(False)
        self.play_btn.setText("❚❚" if on else "▶")
        if on:
            self.timer.start()
        else:
            self.timer.stop()

    def _advance(self) -> None:
        if self._frames:
            self.set_frame((self.frame_index + 1) % len(self._frames))


# ----------------------------------------------------------------------------------------------------------
# the panel base class


def load_cloud_file(path: str | Path) -> Capture:
    """A point cloud or mesh file as a Capture (PLY via the capture reader, other formats through
    models.common.io); a mesh keeps its triangles in `Capture.faces` (its vertices are the points, in file
    order). InputError for unreadable files."""
    p = Path(path)
    if p.suffix.lower() == ".ply":
        try:
            return read_capture_ply(p)
        except InputError:
            pass  # e.g. a big-endian PLY or an unusual face layout: let trimesh read it
    from models.common.io import load_mesh

    m = load_mesh(p)
    faces = np.asarray(m.faces, np.int64) if len(m.faces) else None
    return Capture(m.vertices.astype(np.float32), colors=m.colors, name=p.stem, source=str(p), faces=faces)


class InputChooser(QtWidgets.QWidget):
    """Choose one input cloud: a capture from the list or a file."""

    def __init__(self, store: CaptureStore, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.combo = QtWidgets.QComboBox()
        self.combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(14)
        self.file_btn = QtWidgets.QToolButton(text="File…")
        self.file_btn.setToolTip("Use a point cloud or mesh file (PLY, OBJ, OFF, XYZ, NPY …)")
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.combo, 1)
        lay.addWidget(self.file_btn)
        self.files: list[Capture] = []
        self.file_btn.clicked.connect(self._file_dialog)
        store.changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the choices (captures first, then files), keeping the selection where possible."""
        cur = self.combo.currentData()
        self.combo.blockSignals(True)
        self.combo.clear()
        for i, cap in enumerate(self.store.items):
            self.combo.addItem(f"capture {i + 1}: {cap.name} ({cap.num_points:,} pts)", f"capture:{id(cap)}")
        for cap in self.files:
            self.combo.addItem(f"file: {Path(cap.source).name} ({cap.num_points:,} pts)", f"file:{id(cap)}")
        if self.combo.count() == 0:
            self.combo.addItem("(capture something or choose a file)", None)
        j = self.combo.findData(cur)
        self.combo.setCurrentIndex(j if j >= 0 else 0)
        self.combo.blockSignals(False)

    def add_file(self, path: str | Path) -> Capture:
        """Load a file and select it (InputError when unreadable)."""
        cap = load_cloud_file(path)
        self.files.append(cap)
        self.refresh()
        self.combo.setCurrentIndex(self.combo.findData(f"file:{id(cap)}"))
        return cap

    def select_capture(self, row: int) -> None:
        """Select the row-th capture of the store."""
        self.combo.setCurrentIndex(self.combo.findData(f"capture:{id(self.store.items[row])}"))

    def current(self) -> Capture | None:
        """The chosen cloud, or None."""
        d = self.combo.currentData()
        if not d:
            return None
        kind, oid = d.split(":")
        oid = int(oid)
        pool = self.store.items if kind == "capture" else self.files
        for cap in pool:
            if id(cap) == oid:
                return cap
        return None

    def _file_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Choose a point cloud or mesh", "",
                                                        "Clouds and meshes (*.ply *.obj *.off *.stl *.glb *.xyz *.pts *.npy *.npz);;All files (*)")
        if path:
            try:
                self.add_file(path)
            except InputError as e:
                notify(self, "Cannot read the file", str(e))


SEQUENCE_SUFFIXES = (".ply", ".obj", ".off")
"""file types a sequence folder is read from"""


def natural_key(name: str) -> list[Any]:
    """Sort key for file names with numbers compared as numbers ("f2" < "f10")."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def sequence_files(folder: str | Path) -> list[Path]:
    """The PLY / OBJ / OFF files of a folder in natural name order; InputError when there are none."""
    d = Path(folder)
    if not d.is_dir():
        raise InputError(f"{d}: not a folder")
    files = sorted((f for f in d.iterdir() if f.is_file() and f.suffix.lower() in SEQUENCE_SUFFIXES),
                   key=lambda f: natural_key(f.name))
    if not files:
        raise InputError(f"{d}: no PLY / OBJ / OFF files in this folder")
    return files


class SequenceChooser(QtWidgets.QWidget):
    """Choose an ordered list of clouds: captures ticked in a list (in capture-list order), then files added
    with "Files…" / "Folder…" (in the order added; a folder's files in natural name order).

    New captures and files arrive ticked; `current()` returns the ticked clouds in list order."""

    def __init__(self, store: CaptureStore, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.list = QtWidgets.QListWidget()
        self.list.setMaximumHeight(96)
        self.list.setToolTip("Tick the clouds of the sequence (order: captures as listed, then files)")
        self.files_btn = QtWidgets.QToolButton(text="Files…")
        self.files_btn.setToolTip("Add point cloud or mesh files (PLY, OBJ, OFF, …)")
        self.folder_btn = QtWidgets.QToolButton(text="Folder…")
        self.folder_btn.setToolTip("Add every PLY / OBJ / OFF file of a folder, in natural name order")
        self.clear_btn = QtWidgets.QToolButton(text="Clear files")
        self.count_label = QtWidgets.QLabel("")
        self.count_label.setStyleSheet("color: #9aa0a6")
        buttons = QtWidgets.QHBoxLayout()
        for w in (self.files_btn, self.folder_btn, self.clear_btn):
            buttons.addWidget(w)
        buttons.addStretch(1)
        buttons.addWidget(self.count_label)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.list)
        lay.addLayout(buttons)
        self.files: list[Capture] = []
        self._checked: dict[int, bool] = {}  # id(capture) -> ticked
        self.files_btn.clicked.connect(self._files_dialog)
        self.folder_btn.clicked.connect(self._folder_dialog)
        self.clear_btn.clicked.connect(self.clear_files)
        self.list.itemChanged.connect(self._item_changed)
        store.changed.connect(self.refresh)
        self.refresh()

    def _pool(self) -> list[tuple[str, Capture]]:
        return [("capture", c) for c in self.store.items] + [("file", c) for c in self.files]

    def refresh(self) -> None:
        """Rebuild the list (captures, then files), keeping the ticks; new entries arrive ticked."""
        self.list.blockSignals(True)
        self.list.clear()
        alive = set()
        for i, (kind, cap) in enumerate(self._pool()):
            alive.add(id(cap))
            text = (f"capture {i + 1}: {cap.name}" if kind == "capture" else f"file: {Path(cap.source).name}")
            item = QtWidgets.QListWidgetItem(f"{text} ({cap.num_points:,} pts)")
            item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
            on = self._checked.setdefault(id(cap), True)
            item.setCheckState(QtCore.Qt.CheckState.Checked if on else QtCore.Qt.CheckState.Unchecked)
            item.setData(QtCore.Qt.ItemDataRole.UserRole, id(cap))
            self.list.addItem(item)
        self._checked = {k: v for k, v in self._checked.items() if k in alive}
        self.list.blockSignals(False)
        self._update_count()

    def _item_changed(self, item: QtWidgets.QListWidgetItem) -> None:
        self._checked[int(item.data(QtCore.Qt.ItemDataRole.UserRole))] = (
            item.checkState() == QtCore.Qt.CheckState.Checked)
        self._update_count()

    def _update_count(self) -> None:
        n = len(self.current())
        self.count_label.setText(f"{n} of {self.list.count()} chosen")

    def current(self) -> list[Capture]:
        """The ticked clouds in list order (captures, then files); empty when none."""
        return [cap for _, cap in self._pool() if self._checked.get(id(cap), False)]

    def set_checked(self, caps: list[Capture]) -> None:
        """Tick exactly these clouds (by identity), untick the others."""
        want = {id(c) for c in caps}
        for _, cap in self._pool():
            self._checked[id(cap)] = id(cap) in want
        self.refresh()

    def select_captures(self, rows: list[int]) -> None:
        """Tick exactly the captures at these rows of the store (files and other captures unticked)."""
        self.set_checked([self.store.items[r] for r in rows])

    def add_files(self, paths: list[str | Path]) -> list[Capture]:
        """Load files (in the given order) and append them ticked; InputError names the first unreadable
        one (nothing is added then)."""
        caps = [load_cloud_file(p) for p in paths]
        self.files.extend(caps)
        self.refresh()
        return caps

    def add_folder(self, folder: str | Path) -> list[Capture]:
        """Append every PLY / OBJ / OFF file of a folder in natural name order (see `sequence_files`)."""
        return self.add_files(sequence_files(folder))

    def clear_files(self) -> None:
        """Forget the files (captures stay)."""
        self.files = []
        self.refresh()

    def _files_dialog(self) -> None:
        paths, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Choose point clouds or meshes", "",
                                                          "Clouds and meshes (*.ply *.obj *.off *.stl *.glb *.xyz *.pts *.npy *.npz);;All files (*)")
        if paths:
            try:
                self.add_files(paths)
            except InputError as e:
                notify(self, "Cannot read the file", str(e))

    def _folder_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Choose a folder of PLY / OBJ / OFF files")
        if folder:
            try:
                self.add_folder(folder)
            except InputError as e:
                notify(self, "Cannot read the folder", str(e))


class ShapePanel(QtWidgets.QWidget):
    """Base class of side panels (see the module docstring). Subclasses set the class attributes and
    implement `compute`; they may override `export`.

    Signals: log(level, text); jobFinished(PanelResult); jobCancelled(); jobFailed(str).
    """

    key: ClassVar[str] = ""
    title: ClassVar[str] = "Panel"
    description: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("Input",)
    sequence_inputs: ClassVar[tuple[str, ...]] = ()
    """labels of `inputs` that take an ordered list of clouds (compute gets list[Capture] for them)"""
    params: ClassVar[tuple[Param, ...]] = ()
    order: ClassVar[int] = 100

    log = QtCore.Signal(str, str)
    jobFinished = QtCore.Signal(object)
    jobCancelled = QtCore.Signal()
    jobFailed = QtCore.Signal(str)

    def compute(self, inputs: dict[str, Any], params: dict[str, Any], ctx: JobContext) -> PanelResult:
        """The method itself, run in a worker thread: inputs by label (a Capture, or list[Capture] for the
        labels in `sequence_inputs`), params by name. Must call ctx.progress now and then (it also raises
        Cancelled on Cancel). Override."""
        raise NotImplementedError

    def export(self, result: PanelResult, folder: Path) -> list[Path]:
        """Write a result into `folder`: each layer as PLY (`<key>_<layer>.ply`), each frame layer as
        `<key>_<layer>_<t:04d>.ply`, each array as .npy, the summary as JSON."""
        from fusion.atomic import write_text_atomic

        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for i, layer in enumerate(result.layers):
            out.append(self._write_layer(folder / f"{self.key}_{self._file_name(layer, i)}.ply", layer))
        for t, frame in enumerate(result.frames):
            for i, layer in enumerate(frame):
                out.append(self._write_layer(folder / f"{self.key}_{self._file_name(layer, i)}_{t:04d}.ply", layer))
        for name, arr in result.arrays.items():
            p = folder / f"{self.key}_{name}.npy"
            np.save(p, np.asarray(arr))
            out.append(p)
        p = folder / f"{self.key}_summary.json"
        write_text_atomic(p, json.dumps({"panel": self.key, "summary": result.summary}, indent=2, default=str) + "\n")
        out.append(p)
        return out

    @staticmethod
    def _file_name(layer: Layer, i: int) -> str:
        return "".join(c if c.isalnum() else "_" for c in layer.name) or f"layer{i}"

    @staticmethod
    def _write_layer(path: Path, layer: Layer) -> Path:
        """One layer as PLY: a mesh (vertices, faces, colors) or a capture cloud."""
        if layer.faces is not None and len(layer.faces):
            from fusion.export import save_mesh
            from fusion.meshing import TriMesh

            return save_mesh(path, TriMesh(np.asarray(layer.points, np.float32), np.asarray(layer.faces, np.int32),
                                           None, layer.colors))
        return write_capture_ply(path, Capture(layer.points, colors=layer.colors, name=layer.name))

    # ---------------------------------------------------------------- widgets
    def __init__(self, store: CaptureStore, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.job: PanelJob | None = None
        self.result: PanelResult | None = None
        self.progress_log: list[tuple[float, str]] = []
        desc = QtWidgets.QLabel(self.description)
        desc.setWordWrap(True)
        desc.setStyleSheet("color: #9aa0a6")
        form_host = QtWidgets.QWidget()
        form_lay = QtWidgets.QVBoxLayout(form_host)
        form_lay.setContentsMargins(0, 0, 4, 0)
        form = QtWidgets.QFormLayout()
        form.setRowWrapPolicy(QtWidgets.QFormLayout.RowWrapPolicy.WrapLongRows)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setVerticalSpacing(4)
        form_lay.addWidget(desc)
        form_lay.addLayout(form)
        form_lay.addStretch(1)
        self.choosers: dict[str, InputChooser | SequenceChooser] = {}
        for label in self.inputs:
            ch = SequenceChooser(store) if label in self.sequence_inputs else InputChooser(store)
            self.choosers[label] = ch
            form.addRow(label, ch)
        self.param_widgets: dict[str, QtWidgets.QWidget] = {}
        for prm in self.params:
            w = self._param_widget(prm)
            w.setToolTip(prm.tip)
            self.param_widgets[prm.name] = w
            form.addRow(prm.label, w)
        self.run_btn = QtWidgets.QPushButton("Run")
        self.cancel_btn = QtWidgets.QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.export_btn = QtWidgets.QPushButton("Export…")
        self.export_btn.setEnabled(False)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        self.bar.setFormat("idle")
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.run_btn)
        row.addWidget(self.cancel_btn)
        row.addWidget(self.export_btn)
        self.button_row = row
        self.extra_row = QtWidgets.QHBoxLayout()  # buttons of `add_button`: a second row keeps the panel narrow
        self.view = CloudView()
        self.table = QtWidgets.QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["result", "value"])
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.setMinimumHeight(60)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        split.addWidget(self.view)
        split.addWidget(self.table)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        split.setSizes([500, 80])
        self.splitter = split
        # the form (description, inputs, parameters) scrolls inside at most FORM_SHARE of the panel's
        # height, so the buttons, the progress bar and the result view always fit the dock
        self.form_area = QtWidgets.QScrollArea()
        self.form_area.setWidget(form_host)
        self.form_area.setWidgetResizable(True)
        self.form_area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.form_area.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.form_area.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred, QtWidgets.QSizePolicy.Policy.Fixed)
        self.form_area.setMinimumWidth(0)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.setSpacing(4)
        lay.addWidget(self.form_area)
        lay.addLayout(row)
        lay.addLayout(self.extra_row)
        lay.addWidget(self.bar)
        lay.addWidget(split, 1)
        self.run_btn.clicked.connect(self.run)
        self.cancel_btn.clicked.connect(self.cancel)
        self.export_btn.clicked.connect(self._export_dialog)

    FORM_SHARE = 0.3
    """the form's scroll area may always take this share of the panel's height"""
    FORM_MAX_SHARE = 0.45
    """... and up to this share while the result view keeps VIEW_MIN pixels"""
    VIEW_MIN = 170
    """result view height (pixels) the form leaves when it grows beyond FORM_SHARE"""

    def _fit_form(self) -> None:
        """Height of the form area: its content's height, capped at FORM_SHARE of the panel, or more (up to
        FORM_MAX_SHARE) where the view still gets VIEW_MIN pixels; at least one row. The rest of the panel
        (buttons, progress bar, result view, table) stays visible in the dock."""
        host = self.form_area.widget()
        content = host.heightForWidth(self.form_area.viewport().width()) if host.hasHeightForWidth() else -1
        if content <= 0:
            content = host.sizeHint().height()
        h = self.height()
        fixed = h - self.form_area.height() - self.splitter.height()  # button rows, bar, margins, spacing
        room = h - fixed - (self.VIEW_MIN + self.view.box_scroll.height() + self.table.minimumHeight() + 8)
        cap = max(60, int(self.FORM_SHARE * h), min(room, int(self.FORM_MAX_SHARE * h)))
        self.form_area.setFixedHeight(min(content + 2, cap))

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """Refit the form area to the new size."""
        super().resizeEvent(event)
        self._fit_form()

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt name)
        """Fit the form area when shown."""
        super().showEvent(event)
        self._fit_form()

    def minimumSizeHint(self) -> QtCore.QSize:  # noqa: N802 (Qt name)
        """Small: the form scrolls, so the panel fits narrow and low docks."""
        return QtCore.QSize(240, 320)

    @staticmethod
    def _param_widget(prm: Param) -> QtWidgets.QWidget:
        if prm.kind == "int":
            w = QtWidgets.QSpinBox()
            w.setRange(int(prm.minimum), int(min(prm.maximum, 2**31 - 1)))
            w.setValue(int(prm.default))
        elif prm.kind == "float":
            w = QtWidgets.QDoubleSpinBox()
            w.setDecimals(prm.decimals)
            w.setRange(prm.minimum, prm.maximum)
            w.setValue(float(prm.default))
        elif prm.kind == "bool":
            w = QtWidgets.QCheckBox()
            w.setChecked(bool(prm.default))
        elif prm.kind == "choice":
            w = QtWidgets.QComboBox()
            w.addItems(list(prm.choices))
            w.setCurrentText(str(prm.default))
        else:
            raise ValueError(f"unknown parameter kind {prm.kind!r}")
        return w

    def param_values(self) -> dict[str, Any]:
        """The parameters as shown, by name."""
        out: dict[str, Any] = {}
        for prm in self.params:
            w = self.param_widgets[prm.name]
            if prm.kind in ("int", "float"):
                out[prm.name] = w.value()
            elif prm.kind == "bool":
                out[prm.name] = w.isChecked()
            else:
                out[prm.name] = w.currentText()
        return out

    def set_param(self, name: str, value: Any) -> None:
        """Set one parameter widget (tests, presets)."""
        w = self.param_widgets[name]
        if isinstance(w, QtWidgets.QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, QtWidgets.QComboBox):
            w.setCurrentText(str(value))
        else:
            w.setValue(value)

    @property
    def running(self) -> bool:
        """True while a job runs."""
        return self.job is not None and not self.job.done

    def run(self) -> PanelJob | None:
        """Start `compute` in a worker thread with the chosen inputs; returns the job (None if inputs are
        missing, with a message)."""
        if self.running:
            return None
        inputs: dict[str, Capture | list[Capture]] = {}
        for label, ch in self.choosers.items():
            cap = ch.current()
            if not cap:
                what = "captures or files" if label in self.sequence_inputs else "a capture or a file"
                self.log.emit("warning", f"{self.title}: choose input {label!r} first")
                notify(self, self.title, f"Choose input “{label}” first ({what}).", "info")
                return None
            inputs[label] = cap
        self.progress_log = []
        self.job = PanelJob(self.compute, inputs, self.param_values())
        self.job.progress.connect(self._on_progress)
        self.job.finished.connect(self._on_finished)
        self.job.cancelled.connect(self._on_cancelled)
        self.job.failed.connect(self._on_failed)
        self.run_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.bar.setValue(0)
        self.bar.setFormat("starting …")
        names = [f"{len(c)} clouds" if isinstance(c, list) else c.name for c in inputs.values()]
        self.log.emit("info", f"{self.title}: running on {', '.join(names)}")
        self.job.start()
        return self.job

    def cancel(self) -> None:
        """Cancel the running job (it stops at its next progress report)."""
        if self.running:
            self.job.cancel()
            self.bar.setFormat("cancelling …")

    def shutdown(self, timeout_ms: int = 5000) -> None:
        """Cancel and wait for the job's thread (window closing)."""
        if self.job is not None:
            self.job.cancel()
            self.job.thread.quit()
            self.job.thread.wait(timeout_ms)

    def _idle(self, text: str) -> None:
        self.run_btn.setEnabled(True)
        self.cancel_btn.setEnabled(False)
        self.bar.setFormat(text)

    def _on_progress(self, f: float, text: str) -> None:
        self.progress_log.append((f, text))
        self.bar.setValue(int(1000 * f))
        self.bar.setFormat(f"{text} %p%" if text else "%p%")

    def add_button(self, text: str, slot: Callable[[], Any], tip: str = "") -> QtWidgets.QPushButton:
        """Add a button under the Run / Cancel / Export row (e.g. "Load …" of a method's file format)."""
        btn = QtWidgets.QPushButton(text)
        btn.setToolTip(tip)
        btn.clicked.connect(lambda _=False: slot())
        self.extra_row.addWidget(btn)
        return btn

    def show_result(self, res: PanelResult) -> None:
        """Show a result (view, summary table, Export enabled) that did not come from a job, e.g. a loaded
        file; does not emit jobFinished."""
        self.result = res
        self.view.set_layers(res.layers, res.frames)
        self.table.setRowCount(len(res.summary))
        for i, (k, v) in enumerate(res.summary.items()):
            self.table.setItem(i, 0, QtWidgets.QTableWidgetItem(str(k)))
            txt = f"{v:.4g}" if isinstance(v, float) else str(v)
            self.table.setItem(i, 1, QtWidgets.QTableWidgetItem(txt))
        self.export_btn.setEnabled(True)

    def grab_image(self) -> Any:
        """The panel as a QImage with its 3D view pasted in from the GL framebuffer (a plain widget grab
        leaves OpenGL surfaces blank on some platforms); for screenshots in docs and tests."""
        from PySide6 import QtGui

        pix = self.grab()
        img = pix.toImage()
        dpr = pix.devicePixelRatio()
        glw = self.view.gl
        if glw.isVisible() and glw.width() > 0 and glw.height() > 0:
            fb = glw.grabFramebuffer()
            top_left = glw.mapTo(self, QtCore.QPoint(0, 0))
            painter = QtGui.QPainter(img)
            painter.drawImage(QtCore.QRectF(top_left.x() * dpr, top_left.y() * dpr, glw.width() * dpr,
                                            glw.height() * dpr), fb, QtCore.QRectF(fb.rect()))
            painter.end()
        return img

    def _on_finished(self, res: PanelResult) -> None:
        self.bar.setValue(1000)
        self._idle("done")
        self.show_result(res)
        self.log.emit("info", f"{self.title}: done — " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(res.summary.items())[:3]))
        self.jobFinished.emit(res)

    def _on_cancelled(self) -> None:
        self._idle("cancelled")
        self.log.emit("info", f"{self.title}: cancelled")
        self.jobCancelled.emit()

    def _on_failed(self, msg: str) -> None:
        self._idle("failed")
        self.log.emit("error", f"{self.title}: {msg}")
        notify(self, self.title, msg.splitlines()[0] if msg else "failed")
        self.jobFailed.emit(msg)

    def _export_dialog(self) -> None:
        if self.result is None:
            return
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, f"Export {self.title} result to folder")
        if folder:
            try:
                paths = self.export(self.result, Path(folder))
                self.log.emit("info", f"{self.title}: exported {len(paths)} files to {folder}")
            except (InputError, OSError) as e:
                self.log.emit("error", f"{self.title}: export failed: {e}")
                notify(self, self.title, str(e))


class PanelDock(QtWidgets.QWidget):
    """Every registered panel, one tab each (sorted by `order`, then title)."""

    log = QtCore.Signal(str, str)

    def __init__(self, store: CaptureStore, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.tabs = QtWidgets.QTabWidget()
        self.tabs.setDocumentMode(True)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tabs)
        self.panels: dict[str, ShapePanel] = {}
        self.load_errors = discover_panels()
        for cls in sorted(PANEL_REGISTRY.values(), key=lambda c: (c.order, c.title)):
            self.add_panel(cls)
        if not self.panels:
            self.tabs.addTab(QtWidgets.QLabel("no panels registered"), "–")

    def add_panel(self, cls: type[ShapePanel]) -> ShapePanel:
        """Instantiate a panel class and add its tab."""
        panel = cls(self.store)
        panel.log.connect(self.log)
        self.panels[cls.key] = panel
        self.tabs.addTab(panel, cls.title)
        return panel

    def shutdown(self) -> None:
        """Cancel running panel jobs and wait for them."""
        for p in self.panels.values():
            p.shutdown()
