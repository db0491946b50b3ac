"""The app's views: color and depth images (pyqtgraph) and the 3D scene (pyqtgraph.opengl).

Image views take uint8 RGB / float32 depth arrays as the sources deliver them. The 3D view takes the
worker's mesh payloads in the camera convention of fusion/ (OpenCV: x right, y down, z forward, metres)
and shows them z-up: display = (x, z, -y), a proper rotation, so winding and normals are kept.
Layers (each toggleable): canonical mesh, live warped mesh, graph nodes, graph edges, camera frustum,
ground grid. Meshes are vertex-colored and shaded by a two-sided head light.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from fusion.preview import colormap_turbo

BACKGROUND = (30, 32, 36)


def qimage_to_numpy(img: QtGui.QImage) -> np.ndarray:
    """A QImage as uint8 RGB [H, W, 3] (a copy)."""
    im = img.convertToFormat(QtGui.QImage.Format.Format_RGB888)
    w, h = im.width(), im.height()
    if w == 0 or h == 0:
        return np.zeros((0, 0, 3), np.uint8)
    ptr = im.constBits()
    arr = np.frombuffer(ptr, np.uint8, count=im.bytesPerLine() * h).reshape(h, im.bytesPerLine())
    return arr[:, : 3 * w].reshape(h, w, 3).copy()


def to_display(p: np.ndarray) -> np.ndarray:
    """OpenCV camera coordinates float [N, 3] -> display coordinates (x, z, -y), float32 [N, 3]."""
    p = np.asarray(p, np.float32).reshape(-1, 3)
    return np.ascontiguousarray(np.stack([p[:, 0], p[:, 2], -p[:, 1]], 1))


def turbo_colormap() -> pg.ColorMap:
    """The turbo colormap of fusion.preview as a pyqtgraph ColorMap."""
    pos = np.linspace(0.0, 1.0, 33)
    return pg.ColorMap(pos, colormap_turbo(pos))


class _Header(QtWidgets.QWidget):
    """A slim title row: a bold label, a dim info label, then optional widgets on the right."""

    def __init__(self, title: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QtWidgets.QLabel(f"<b>{title}</b>")
        self.info = QtWidgets.QLabel("")
        self.info.setStyleSheet("color: #9aa0a6")
        self.row = QtWidgets.QHBoxLayout(self)
        self.row.setContentsMargins(4, 2, 4, 2)
        self.row.addWidget(self.title)
        self.row.addWidget(self.info, 1)

    def add(self, w: QtWidgets.QWidget) -> None:
        """Append a widget at the right end."""
        self.row.addWidget(w)


def heatmap_rgba(heat: np.ndarray, alpha: int = 150) -> np.ndarray:
    """Turbo colors of a weight map float [H, W] in [0, 1] (NaN = no data) as uint8 RGBA [H, W, 4]: alpha
    `alpha` where there is data, 0 (transparent) where NaN. Cheap: meant to run off the UI thread."""
    h = np.asarray(heat, np.float32)
    ok = np.isfinite(h)
    idx = (np.clip(np.where(ok, h, 0.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    out = np.empty(h.shape + (4,), np.uint8)
    out[..., :3] = _TURBO_LUT[idx]
    out[..., 3] = np.where(ok, np.uint8(alpha), np.uint8(0))
    return out


def weight_colors(weights: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Turbo colors of weights float [C] in [0, 1] as uint8 RGBA [C, 4]; entries not `valid` (rejected by
    the tracker's filters) are drawn faint (alpha 70 instead of 230)."""
    w = np.clip(np.nan_to_num(np.asarray(weights, np.float32), nan=0.0), 0.0, 1.0)
    out = np.empty((len(w), 4), np.uint8)
    out[:, :3] = _TURBO_LUT[(w * 255.0 + 0.5).astype(np.uint8)]
    out[:, 3] = 230 if valid is None else np.where(np.asarray(valid, bool), 230, 70)
    return out


class CorrespondenceItem(pg.GraphicsObject):
    """Arrows from source to target pixels, one color each (image coordinates; cosmetic 1.5 px pens).
    Drawn into a QPicture once per `set_data`, so repaints while zooming cost little."""

    def __init__(self) -> None:
        super().__init__()
        self._picture = QtGui.QPicture()
        self.count = 0
        self._rect = QtCore.QRectF()

    def set_data(self, src: np.ndarray | None, tgt: np.ndarray | None, colors: np.ndarray | None,
                 head: float = 6.0) -> None:
        """src / tgt float [C, 2] display coordinates (x, y); colors uint8 [C, 4] RGBA; head: arrowhead
        length in display units (shortened for short arrows). None / empty clears."""
        self.prepareGeometryChange()
        self._picture = QtGui.QPicture()
        self.count = 0 if src is None else int(len(src))
        if self.count:
            p = QtGui.QPainter(self._picture)
            p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
            d = np.asarray(tgt, np.float64) - np.asarray(src, np.float64)
            length = np.maximum(np.linalg.norm(d, axis=1), 1e-9)
            hl = np.minimum(head, 0.4 * length)
            back = -d / length[:, None]
            c, s_ = np.cos(np.radians(25)), np.sin(np.radians(25))
            left = np.stack([back[:, 0] * c - back[:, 1] * s_, back[:, 0] * s_ + back[:, 1] * c], 1) * hl[:, None]
            right = np.stack([back[:, 0] * c + back[:, 1] * s_, -back[:, 0] * s_ + back[:, 1] * c], 1) * hl[:, None]
            for i in range(self.count):
                pen = QtGui.QPen(QtGui.QColor(*(int(x) for x in colors[i])))
                pen.setCosmetic(True)
                pen.setWidthF(1.5)
                p.setPen(pen)
                x0, y0 = float(src[i, 0]), float(src[i, 1])
                x1, y1 = float(tgt[i, 0]), float(tgt[i, 1])
                p.drawLine(QtCore.QPointF(x0, y0), QtCore.QPointF(x1, y1))
                if length[i] > 1e-6:
                    p.drawLine(QtCore.QPointF(x1, y1), QtCore.QPointF(x1 + left[i, 0], y1 + left[i, 1]))
                    p.drawLine(QtCore.QPointF(x1, y1), QtCore.QPointF(x1 + right[i, 0], y1 + right[i, 1]))
            p.end()
            lo = np.minimum(src.min(0), tgt.min(0)) - head
            hi = np.maximum(src.max(0), tgt.max(0)) + head
            self._rect = QtCore.QRectF(float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
        else:
            self._rect = QtCore.QRectF()
        self.update()

    def paint(self, painter: QtGui.QPainter, *args: Any) -> None:
        """Replay the recorded picture."""
        painter.drawPicture(0, 0, self._picture)

    def boundingRect(self) -> QtCore.QRectF:  # noqa: N802 (Qt name)
        """The arrows' extent (display coordinates)."""
        return QtCore.QRectF(self._rect)


class ImageView(QtWidgets.QWidget):
    """A color image with locked aspect ratio, plus optional overlays: graph nodes (points), and while the
    neural tracker runs, its correspondences (arrows keyframe pixel -> live pixel, turbo-colored by the Psi
    weight, faint where the tracker's filters rejected them) and its weight heatmap (a semi-transparent
    image over the color image). Each overlay has a check box in the header; the tracker ones are disabled
    while the tracker gives no overlay data (classical, none, ground truth)."""

    def __init__(self, title: str = "Color", parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = _Header(title)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground(BACKGROUND)
        self.glw.ci.layout.setContentsMargins(0, 0, 0, 0)
        self.vb = self.glw.addViewBox(row=0, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.image)
        self.overlay = pg.ScatterPlotItem(size=5, pen=pg.mkPen(0, 0, 0, 160), brush=pg.mkBrush(255, 220, 0, 200))
        self.vb.addItem(self.overlay)
        self.overlay_box = QtWidgets.QCheckBox("graph")
        self.overlay_box.setToolTip("Overlay the graph nodes projected into the live frame")
        self.overlay_box.setChecked(True)
        self.overlay_box.toggled.connect(self.overlay.setVisible)
        self.header.add(self.overlay_box)
        self.heat = pg.ImageItem(axisOrder="row-major")
        self.corr = CorrespondenceItem()
        self.image.setZValue(0)
        self.heat.setZValue(1)
        self.corr.setZValue(2)
        self.overlay.setZValue(3)
        self.vb.addItem(self.heat, ignoreBounds=True)  # arrows may leave the image: never rescale the view
        self.vb.addItem(self.corr, ignoreBounds=True)
        self.corr_box = QtWidgets.QCheckBox("matches")
        self.heat_box = QtWidgets.QCheckBox("weights")
        for b in (self.corr_box, self.heat_box):
            b.setChecked(True)
            b.toggled.connect(self._refresh_tracker_overlay)
            self.header.add(b)
        self._tracker_overlay: dict | None = None
        self._set_tracker_available(False)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.header)
        lay.addWidget(self.glw, 1)
        self._shape: tuple[int, int] | None = None

    def set_image(self, rgb: np.ndarray, info: str = "") -> None:
        """Show uint8 RGB [H, W, 3]; refits the view when the size changes."""
        self.image.setImage(np.asarray(rgb), autoLevels=False, levels=(0, 255))
        shape = rgb.shape[:2]
        if shape != self._shape:
            self._shape = shape
            self.vb.autoRange(padding=0)
            if self._tracker_overlay is not None:
                self._place_tracker_overlay()
        self.header.info.setText(info)

    def set_overlay(self, uv: np.ndarray | None) -> None:
        """Pixel positions float [M, 2] (u, v) to mark, or None to clear."""
        if uv is None or len(uv) == 0:
            self.overlay.setData([], [])
        else:
            self.overlay.setData(uv[:, 0] + 0.5, uv[:, 1] + 0.5)

    # ---------------------------------------------------------------- neural-tracker overlays
    def _set_tracker_available(self, on: bool) -> None:
        tip = ("Correspondences of the neural tracker: arrows from the keyframe pixel to the predicted live pixel, "
               "colored by the learned weight (turbo: blue low, red high); faint = rejected by its filters")
        htip = ("The neural tracker's learned weights (turbo: blue low, red high) at the network's resolution, "
                "over the live image")
        off = "Only while the neural tracker runs"
        self.corr_box.setEnabled(on)
        self.heat_box.setEnabled(on)
        self.corr_box.setToolTip(tip if on else off)
        self.heat_box.setToolTip(htip if on else off)

    def set_tracker_overlay(self, payload: dict | None) -> None:
        """Show the worker's tracker-overlay payload: None or {"available": False} (the tracker has no
        overlay: boxes disabled, nothing drawn), {"available": True, "empty": True} (nothing for this frame),
        or {"available": True, "size": (w, h) of the tracked frames, "src_uv" / "tgt_uv" float [C, 2] pixels
        in that frame, "weights" float [C], "valid" bool [C], "heatmap_rgba" uint8 [h', w', 4], ...}
        (tracker.neural.TrackerOverlay.as_dict plus the colored heatmap). Coordinates are scaled to the
        image on screen."""
        available = bool(payload and payload.get("available"))
        self._set_tracker_available(available)
        self._tracker_overlay = payload if available and not payload.get("empty") and "size" in payload else None
        self._place_tracker_overlay()

    def _place_tracker_overlay(self) -> None:
        ov = self._tracker_overlay
        if ov is None:
            self.corr.set_data(None, None, None)
            self.heat.clear()
            self._refresh_tracker_overlay()
            return
        w, h = ov["size"]
        ih, iw = self._shape if self._shape is not None else (h, w)
        sx, sy = iw / max(w, 1), ih / max(h, 1)
        scale = np.array([sx, sy], np.float64)
        src = (np.asarray(ov["src_uv"], np.float64).reshape(-1, 2) + 0.5) * scale
        tgt = (np.asarray(ov["tgt_uv"], np.float64).reshape(-1, 2) + 0.5) * scale
        colors = weight_colors(ov["weights"], ov.get("valid"))
        self.corr.set_data(src, tgt, colors, head=0.012 * iw)
        rgba = ov.get("heatmap_rgba")
        if rgba is None and ov.get("heatmap") is not None:
            rgba = heatmap_rgba(ov["heatmap"])
        if rgba is not None and rgba.size:
            self.heat.setImage(np.asarray(rgba), autoLevels=False, levels=(0, 255))
            self.heat.setRect(QtCore.QRectF(0.0, 0.0, float(iw), float(ih)))
        else:
            self.heat.clear()
        self._refresh_tracker_overlay()

    def _refresh_tracker_overlay(self, *_: Any) -> None:
        has = self._tracker_overlay is not None
        on = self.corr_box.isEnabled()
        self.corr.setVisible(on and has and self.corr_box.isChecked() and self.corr.count > 0)
        self.heat.setVisible(on and has and self.heat_box.isChecked() and self.heat.image is not None)

    @property
    def tracker_overlay_shown(self) -> dict[str, bool]:
        """Which tracker overlays are drawn now: {"matches": bool, "weights": bool}."""
        return {"matches": self.corr.isVisible(), "weights": self.heat.isVisible()}


_TURBO_LUT = colormap_turbo(np.linspace(0.0, 1.0, 256))


def auto_depth_range(depth: np.ndarray) -> tuple[float, float] | None:
    """(2nd, 98th) percentile of the valid depths (float32 [H, W] metres, 0 = invalid) from a subsample of
    at most ~20k pixels; None when nothing is valid."""
    v = depth[depth > 0]
    if v.size == 0:
        return None
    lo, hi = np.percentile(v[:: max(1, v.size // 20000)], [2, 98])
    return float(lo), float(max(hi, lo + 1e-3))


def colorize_depth(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """Turbo colors (256-entry table of fusion.preview.colormap_turbo) of depth float32 [H, W] metres over
    [near, far]; invalid pixels (0) black. uint8 [H, W, 3]. Cheap enough to run per frame off the UI thread."""
    d = np.asarray(depth, np.float32)
    scale = 255.0 / max(far - near, 1e-6)
    idx = np.clip((d - near) * scale, 0, 255).astype(np.uint8)
    rgb = _TURBO_LUT[idx]
    rgb[d <= 0] = 0
    return rgb


class DepthView(ImageView):
    """A depth image colorised with turbo over a range: automatic (2nd..98th percentile of each frame) or
    dragged on the color bar; invalid pixels black. The per-frame colors come precomputed from the worker
    (`set_depth(depth, rgb, range)`); `rangeChanged` tells the app when the user fixes or frees the range."""

    rangeChanged = QtCore.Signal(object)  # (near, far) metres, or None = automatic

    def __init__(self, title: str = "Depth", parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.overlay_box.hide()
        self.overlay.hide()
        for b in (self.corr_box, self.heat_box):  # the tracker overlays live in the color view
            b.hide()
        self.auto_box = QtWidgets.QCheckBox("auto range")
        self.auto_box.setChecked(True)
        self.auto_box.setToolTip("Colormap range from the 2nd..98th percentile of each frame; drag the bar to fix it")
        self.header.add(self.auto_box)
        self.bar = pg.ColorBarItem(values=(0.3, 1.5), colorMap=turbo_colormap(), interactive=True, width=14,
                                   label="m")
        self.glw.addItem(self.bar, row=0, col=1)
        self.bar.sigLevelsChangeFinished.connect(self._bar_changed)
        self.auto_box.toggled.connect(self._auto_toggled)
        self._depth: np.ndarray | None = None
        self._setting = False

    @property
    def depth_range(self) -> tuple[float, float]:
        """(near, far) metres of the colormap."""
        lo, hi = self.bar.levels()
        return float(lo), float(hi)

    def _set_levels(self, rng: tuple[float, float]) -> None:
        self._setting = True
        self.bar.setLevels(rng)
        self._setting = False

    def _bar_changed(self) -> None:
        if self._setting:
            return
        self.auto_box.blockSignals(True)
        self.auto_box.setChecked(False)
        self.auto_box.blockSignals(False)
        self.rangeChanged.emit(self.depth_range)
        self._recolor()

    def _auto_toggled(self, on: bool) -> None:
        self.rangeChanged.emit(None if on else self.depth_range)
        self._recolor()

    def _recolor(self) -> None:
        """Re-color the frame on screen after a range change (once, on the UI thread)."""
        if self._depth is None:
            return
        rng = auto_depth_range(self._depth) if self.auto_box.isChecked() else self.depth_range
        if rng is not None:
            self._set_levels(rng)
            self.set_image(colorize_depth(self._depth, *rng), self.header.info.text())

    def set_depth(self, depth: np.ndarray, info: str = "", rgb: np.ndarray | None = None,
                  rng: tuple[float, float] | None = None) -> None:
        """Show float32 depth [H, W] metres (0 = invalid); rgb / rng: its colors over range `rng` when already
        computed (the worker does it); otherwise they are computed here."""
        self._depth = depth
        if rgb is None or rng is None:
            rng = (auto_depth_range(depth) if self.auto_box.isChecked() else self.depth_range) or self.depth_range
            rgb = colorize_depth(depth, *rng)
        if self.auto_box.isChecked():
            self._set_levels(rng)
        self.set_image(rgb, info)


# ----------------------------------------------------------------------------------------------------------
# 3D

_HEADLIGHT = None


def headlight_shader():
    """A shader for vertex-colored meshes lit by a two-sided light at the viewer (ambient 0.3, diffuse 0.7)."""
    global _HEADLIGHT  # a compiled-on-demand program object shared by all views (not configuration)
    if _HEADLIGHT is None:
        from pyqtgraph.opengl import shaders

        _HEADLIGHT = shaders.ShaderProgram("nrstudio_headlight", [
            shaders.VertexShader("""
                uniform mat4 u_mvp;
                uniform mat3 u_normal;
                attribute vec4 a_position;
                attribute vec3 a_normal;
                attribute vec4 a_color;
                varying vec4 v_color;
                varying vec3 v_normal;
                void main() {
                    v_normal = normalize(u_normal * a_normal);
                    v_color = a_color;
                    gl_Position = u_mvp * a_position;
                }
            """),
            shaders.FragmentShader("""
                #ifdef GL_ES
                precision mediump float;
                #endif
                varying vec4 v_color;
                varying vec3 v_normal;
                void main() {
                    float p = abs(normalize(v_normal).z);
                    vec3 rgb = v_color.rgb * (0.3 + 0.7 * p) + vec3(0.08) * pow(p, 24.0);
                    gl_FragColor = vec4(rgb, v_color.a);
                }
            """),
        ])
    return _HEADLIGHT


def frustum_lines(k: dict, depth: float) -> np.ndarray:
    """Line segments (float32 [16, 3], OpenCV camera frame) of a camera frustum: apex at the origin, image
    corners at `depth` metres. k: Intrinsics.as_dict()."""
    w, h = k["width"], k["height"]
    corners = []
    for u, v in ((0, 0), (w, 0), (w, h), (0, h)):
        corners.append([(u - k["cx"]) / k["fx"] * depth, (v - k["cy"]) / k["fy"] * depth, depth])
    c = np.array(corners, np.float32)
    o = np.zeros(3, np.float32)
    segs = []
    for i in range(4):
        segs += [o, c[i], c[i], c[(i + 1) % 4]]
    return np.array(segs, np.float32)


def edge_segments(nodes: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Unique undirected graph edges as line segments float32 [2E, 3] (nodes float [N, 3], edges int [N, K])."""
    n = len(nodes)
    if n == 0 or edges.size == 0:
        return np.zeros((0, 3), np.float32)
    i = np.repeat(np.arange(n), edges.shape[1])
    j = edges.reshape(-1)
    ok = (j >= 0) & (j < n) & (i < j)
    pairs = np.stack([i[ok], j[ok]], 1)
    return np.asarray(nodes, np.float32)[pairs.reshape(-1)]


class SceneView(QtWidgets.QWidget):
    """The 3D view (see the module docstring). `set_meshes(payload)` takes the worker's mesh payload."""

    LAYERS = (("canonical", "Canonical"), ("live", "Live"), ("nodes", "Nodes"), ("edges", "Edges"),
              ("camera", "Camera"), ("grid", "Grid"))

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        import pyqtgraph.opengl as gl

        super().__init__(parent)
        self.header = _Header("3D")
        self.gl = gl.GLViewWidget()
        self.gl.setBackgroundColor(BACKGROUND)
        self.gl.setMinimumSize(320, 240)
        shader = headlight_shader()
        self.items: dict[str, Any] = {
            "canonical": gl.GLMeshItem(smooth=True, shader=shader, glOptions="opaque", color=(0.75, 0.75, 0.78, 1)),
            "live": gl.GLMeshItem(smooth=True, shader=shader, glOptions="opaque", color=(0.75, 0.75, 0.78, 1)),
            "nodes": gl.GLScatterPlotItem(size=5, color=(1.0, 0.85, 0.1, 1.0), pxMode=True),
            "edges": gl.GLLinePlotItem(mode="lines", color=(0.35, 0.85, 1.0, 0.55), width=1, antialias=True),
            "camera": gl.GLLinePlotItem(mode="lines", color=(1.0, 0.45, 0.3, 1.0), width=2, antialias=True),
            "grid": gl.GLGridItem(color=(255, 255, 255, 40)),
        }
        self.items["nodes"].setGLOptions("translucent")
        self.items["edges"].setGLOptions("translucent")
        for key in ("canonical", "live", "nodes", "edges"):
            self.items[key].setVisible(False)
        for key in ("grid", "camera", "canonical", "live", "edges", "nodes"):
            self.gl.addItem(self.items[key])
        self.labels = {"canonical": gl.GLTextItem(text="canonical", color=(200, 200, 200, 255)),
                       "live": gl.GLTextItem(text="live", color=(200, 200, 200, 255))}
        for t in self.labels.values():
            t.setVisible(False)
            self.gl.addItem(t)
        self.boxes: dict[str, QtWidgets.QCheckBox] = {}
        for key, label in self.LAYERS:
            b = QtWidgets.QCheckBox(label)
            b.setChecked(key != "edges")
            self.boxes[key] = b
            self.header.add(b)
        self.side_box = QtWidgets.QCheckBox("side by side")
        self.side_box.setToolTip("Draw the canonical model beside the live one instead of on top of it")
        self.side_box.setChecked(True)
        self.header.add(self.side_box)
        self.fit_btn = QtWidgets.QToolButton(text="Fit")
        self.fit_btn.setToolTip("Frame the model")
        self.fit_btn.clicked.connect(self.fit_view)
        self.header.add(self.fit_btn)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.header)
        lay.addWidget(self.gl, 1)
        self._has = {k: False for k in self.items}
        self._has["grid"] = True
        self._bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._fitted = False
        self._intrinsics: dict | None = None
        self._canon_dx = 0.0
        self.set_camera(None)
        self.gl.setCameraPosition(pos=QtGui.QVector3D(0, 1.0, 0), distance=2.0, elevation=18, azimuth=-90)
        for b in self.boxes.values():
            b.toggled.connect(self._refresh_visibility)
        self.side_box.toggled.connect(self._refresh_visibility)
        self._refresh_visibility()

    # ---------------------------------------------------------------- data
    def set_camera(self, k: dict | None, depth: float = 0.15) -> None:
        """Draw the live camera frustum for intrinsics `k` (Intrinsics.as_dict()); None: a default 4:3 one."""
        self._intrinsics = k
        kk = k or {"width": 640, "height": 480, "fx": 600.0, "fy": 600.0, "cx": 320.0, "cy": 240.0}
        self.items["camera"].setData(pos=to_display(frustum_lines(kk, depth)))
        self._has["camera"] = True

    def clear(self) -> None:
        """Remove the meshes and the graph (after a reset)."""
        for key in ("canonical", "live", "nodes", "edges"):
            self._has[key] = False
        self._bounds.clear()
        self._fitted = False
        self._refresh_visibility()

    def _set_mesh(self, key: str, m: dict | None) -> None:
        import pyqtgraph.opengl as gl

        if m is None or len(m["faces"]) == 0:
            self._has[key] = False
            return
        v = to_display(m["vertices"])
        md = gl.MeshData(vertexes=v, faces=np.ascontiguousarray(m["faces"], np.uint32))
        if m.get("normals") is not None and len(m["normals"]) == len(v):
            md._vertexNormals = to_display(m["normals"])  # precomputed: MeshData's own loop is per vertex
        if m.get("colors") is not None and len(m["colors"]) == len(v):
            c = np.empty((len(v), 4), np.uint8)
            c[:, :3] = m["colors"]
            c[:, 3] = 255
            md.setVertexColors(c)
        self.items[key].setMeshData(meshdata=md)
        self._has[key] = True
        self._bounds[key] = (v.min(0), v.max(0))

    def set_meshes(self, payload: dict) -> None:
        """Show a mesh payload from the worker (or clear on {"empty": True})."""
        if payload.get("empty"):
            self.clear()
            return
        self._set_mesh("canonical", payload.get("canonical"))
        self._set_mesh("live", payload.get("live"))
        nodes = payload.get("nodes_live")
        if nodes is not None and len(nodes):
            pos = to_display(nodes)
            self.items["nodes"].setData(pos=pos)
            seg = edge_segments(pos, np.asarray(payload.get("edges", np.zeros((0, 0), int))))
            if len(seg):
                self.items["edges"].setData(pos=seg)
            self._has["nodes"] = True
            self._has["edges"] = len(seg) > 0
        else:
            self._has["nodes"] = self._has["edges"] = False
        if payload.get("intrinsics"):
            depth = 0.15
            if "live" in self._bounds:
                lo, hi = self._bounds["live"]
                depth = float(np.clip(0.12 * lo[1], 0.05, 0.3))
            self.set_camera(payload["intrinsics"], depth)
        self._apply_offsets()
        if not self._fitted and (self._has["live"] or self._has["canonical"]):
            self.fit_view()
        self._refresh_visibility()

    def _apply_offsets(self) -> None:
        """Shift the canonical mesh beside the live one (display x) when "side by side" is on."""
        dx = 0.0
        both = self.boxes["canonical"].isChecked() and self.boxes["live"].isChecked()
        if self.side_box.isChecked() and both and "live" in self._bounds and "canonical" in self._bounds:
            lo_l, hi_l = self._bounds["live"]
            lo_c, hi_c = self._bounds["canonical"]
            gap = 0.15 * max(hi_l[0] - lo_l[0], 0.05)
            dx = float(lo_l[0] - gap - hi_c[0])
        tr = QtGui.QMatrix4x4()
        tr.translate(dx, 0, 0)
        self.items["canonical"].setTransform(tr)
        self._canon_dx = dx
        for key, t in self.labels.items():
            if key in self._bounds:
                lo, hi = self._bounds[key]
                x = (lo[0] + hi[0]) / 2 + (dx if key == "canonical" else 0.0)
                t.setData(pos=(float(x), float((lo[1] + hi[1]) / 2), float(hi[2] + 0.04)))
        lo_z = min((b[0][2] for b in self._bounds.values()), default=-0.3)
        g = QtGui.QMatrix4x4()
        cy = float(np.mean([(b[0][1] + b[1][1]) / 2 for b in self._bounds.values()])) if self._bounds else 1.0
        g.translate(0, cy, lo_z - 0.02)
        self.items["grid"].setTransform(g)
        self.items["grid"].setSize(4, 4)
        self.items["grid"].setSpacing(0.1, 0.1)

    def _refresh_visibility(self) -> None:
        for key, _ in self.LAYERS:
            self.items[key].setVisible(self.boxes[key].isChecked() and self._has.get(key, False))
        both = self.boxes["canonical"].isChecked() and self.boxes["live"].isChecked() and self.side_box.isChecked()
        for key, t in self.labels.items():
            t.setVisible(both and self._has.get(key, False))
        self._apply_offsets()

    def fit_view(self) -> None:
        """Aim the camera at the visible model, from behind the live camera and a little above."""
        boxes = [b for k, b in self._bounds.items() if self.boxes[k].isChecked()] or list(self._bounds.values())
        if not boxes:
            self.gl.setCameraPosition(pos=QtGui.QVector3D(0, 1.0, 0), distance=2.0, elevation=18, azimuth=-90)
            return
        lo = np.min([b[0] for b in boxes], axis=0)
        hi = np.max([b[1] for b in boxes], axis=0)
        if "canonical" in self._bounds and self.boxes["canonical"].isChecked():
            lo[0] = min(lo[0], self._bounds["canonical"][0][0] + self._canon_dx)
        c = (lo + hi) / 2
        ext = float(np.max(hi - lo))
        self.gl.setCameraPosition(pos=QtGui.QVector3D(float(c[0]), float(c[1]), float(c[2])),
                                  distance=max(0.3, 1.6 * ext / np.tan(np.radians(self.gl.opts["fov"] / 2)) / 2),
                                  elevation=18, azimuth=-90)
        self._fitted = True

    def grab(self) -> QtGui.QImage:  # type: ignore[override]
        """The rendered 3D view as a QImage (the GL framebuffer)."""
        return self.gl.grabFramebuffer()

    def grab_array(self) -> np.ndarray:
        """The rendered 3D view as uint8 RGB [H, W, 3]."""
        return qimage_to_numpy(self.gl.grabFramebuffer())
