"""The main window: 3D view and images in the centre, transport under them, reconstruction controls,
status and the shape panels docked right, captures and the log docked at the bottom.

The window only draws and forwards: every command goes to the `PipelineWorker` (app.gui.worker) through
`WorkerHost.send`, which never blocks; results come back as plain-data signals. Bad input (a corrupt
recording, no camera, an unplugged camera, a volume too large for memory) ends as a log entry and a
non-modal message box, and the app keeps running with what was fused so far.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app.gui.captures import CaptureDock, CaptureStore
from app.gui.controls import ReconstructionControls
from app.gui.messages import notify
from app.gui.panels import PanelDock
from app.gui.settings import ReconSettings
from app.gui.status import LogPane, StatusPanel
from app.gui.transport import TransportBar
from app.gui.views import DepthView, ImageView, SceneView
from app.gui.worker import WorkerHost
from fusion.errors import InputError
from fusion.paths import ASSETS

SAMPLE = ASSETS / "sample.db3"

STYLE = """
QMainWindow, QWidget { background: #25272b; color: #d8dadd; }
QDockWidget::title { background: #2e3136; padding: 4px; font-weight: bold; }
QGroupBox { border: 1px solid #3a3d42; margin-top: 8px; }
QPushButton { background: #34373c; border: 1px solid #474b51; padding: 4px 10px; border-radius: 3px; }
QPushButton:hover { background: #3d4147; }
QPushButton:disabled { color: #70757c; }
QCheckBox:disabled, QRadioButton:disabled, QLabel:disabled { color: #6a6f76; }
QComboBox, QSpinBox, QDoubleSpinBox, QLineEdit { background: #1e2023; border: 1px solid #43474d; padding: 2px; }
QComboBox QAbstractItemView { background: #1e2023; }
QTableWidget, QPlainTextEdit, QListWidget { background: #1c1e21; border: 1px solid #3a3d42; }
QHeaderView::section { background: #2e3136; border: none; padding: 2px; }
QTabBar::tab { background: #2e3136; padding: 4px 10px; }
QTabBar::tab:selected { background: #3b3f45; }
QProgressBar { border: 1px solid #43474d; text-align: center; background: #1e2023; }
QProgressBar::chunk { background: #3d7bd9; }
QSlider::groove:horizontal { height: 6px; background: #1c1e21; border: 1px solid #43474d; }
QSlider::handle:horizontal { background: #3d7bd9; width: 12px; margin: -5px 0; border-radius: 3px; }
QSlider::sub-page:horizontal { background: #2f5fa8; }
QMenuBar, QMenu { background: #2a2c30; }
QMenu::item:selected { background: #3d7bd9; }
QStatusBar { background: #1e2023; }
QToolBar { background: #2a2c30; border: none; spacing: 2px; }
QToolBar QToolButton { padding: 3px 8px; }
QToolBar QToolButton:hover { background: #3d4147; }
QToolTip { background: #f5f5f5; color: #111; }
"""


class MainWindow(QtWidgets.QMainWindow):
    """The nrstudio main window (see the module docstring)."""

    def __init__(self, settings: ReconSettings | None = None, stall_s: float = 3.0) -> None:
        super().__init__()
        self.setWindowTitle("nrstudio — non-rigid reconstruction")
        self.setStyleSheet(STYLE)
        self.resize(1560, 960)
        self.setDockNestingEnabled(True)
        self.host = WorkerHost(self, stall_s=stall_s)
        self.worker = self.host.worker
        self.source_info: dict | None = None
        self.state: dict = {}
        self.last_stats: dict = {}
        self.last_mesh: dict | None = None
        self.last_tracker_overlay: dict | None = None
        self.frames_shown = 0
        self.mesh_updates = 0
        self.errors: list[tuple[str, str]] = []
        self.message_boxes: list[QtWidgets.QMessageBox] = []
        self.last_export: dict | None = None
        self._export_dialog: QtWidgets.QProgressDialog | None = None
        self._export_cancel: threading.Event | None = None
        self._build_views()
        self._build_docks()
        self._build_menus()
        self._connect()
        if settings is not None:
            self.controls.set_settings(settings)
        self.host.start()
        self.log("info", "nrstudio ready: File > Open recording, Open bundled sample or Open camera; then Start")
        for err in self.panels.load_errors:
            self.log("error", err)

    # ---------------------------------------------------------------- layout
    def _build_views(self) -> None:
        self.scene = SceneView()
        self.color_view = ImageView("Color")
        self.depth_view = DepthView("Depth")
        images = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        images.addWidget(self.color_view)
        images.addWidget(self.depth_view)
        self.views_split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        self.views_split.addWidget(self.scene)
        self.views_split.addWidget(images)
        self.views_split.setStretchFactor(0, 3)
        self.views_split.setStretchFactor(1, 2)
        self.views_split.setSizes([620, 400])
        self.transport = TransportBar()
        central = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(central)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        lay.addWidget(self.views_split, 1)
        lay.addWidget(self.transport)
        self.setCentralWidget(central)
        self.status_label = QtWidgets.QLabel("no source")
        self.statusBar().addWidget(self.status_label, 1)

    def _dock(self, title: str, widget: QtWidgets.QWidget, area: QtCore.Qt.DockWidgetArea,
              scroll: bool = False) -> QtWidgets.QDockWidget:
        d = QtWidgets.QDockWidget(title, self)
        d.setObjectName(title.lower().replace(" ", "_"))
        if scroll:  # forms scroll rather than force the window taller than the screen
            area_w = QtWidgets.QScrollArea()
            area_w.setWidget(widget)
            area_w.setWidgetResizable(True)
            area_w.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
            d.setWidget(area_w)
        else:
            d.setWidget(widget)
        d.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
                      | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
                      | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, d)
        return d

    def _build_docks(self) -> None:
        right = QtCore.Qt.DockWidgetArea.RightDockWidgetArea
        bottom = QtCore.Qt.DockWidgetArea.BottomDockWidgetArea
        self.controls = ReconstructionControls()
        self.status_panel = StatusPanel()
        self.captures = CaptureStore(self)
        self.capture_dock = CaptureDock(self.captures)
        self.panels = PanelDock(self.captures)
        self.log_pane = LogPane()
        self.controls_dock = self._dock("Reconstruction", self.controls, right, scroll=True)
        self.status_dock = self._dock("Status", self.status_panel, right, scroll=True)
        self.splitDockWidget(self.controls_dock, self.status_dock, QtCore.Qt.Orientation.Vertical)
        # no outer scroll area: each panel scrolls its own form and keeps buttons and result view in the dock
        self.panels_dock = self._dock("Shape panels", self.panels, right)
        self.tabifyDockWidget(self.controls_dock, self.panels_dock)
        self.captures_dock = self._dock("Captures", self.capture_dock, bottom)
        self.log_dock = self._dock("Log", self.log_pane, bottom)
        self.splitDockWidget(self.captures_dock, self.log_dock, QtCore.Qt.Orientation.Horizontal)
        self.controls_dock.raise_()
        self._sized = False
        self.panels_dock.visibilityChanged.connect(self._panels_shown)

    def _panels_shown(self, visible: bool) -> None:
        """The Shape panels tab came to the front: give it most of the right column (its result view sits
        below the form and was squeezed to nothing under the Status dock)."""
        if visible and self._sized and not self.panels_dock.isFloating():
            if self.status_dock.isVisible():  # the status dock keeps a few rows, the panels get the rest
                rows = max(110, self.status_dock.minimumSizeHint().height())
                self.resizeDocks([self.panels_dock, self.status_dock], [self.height(), rows],
                                 QtCore.Qt.Orientation.Vertical)
            if self.panels_dock.width() < 440:  # room for the form's labels and fields and a useful 3D view
                self.resizeDocks([self.panels_dock], [440], QtCore.Qt.Orientation.Horizontal)

    def _initial_dock_sizes(self) -> None:
        """Dock sizes once the window has its geometry: controls sized to their content, status below."""
        h = self.height()
        self.resizeDocks([self.controls_dock], [380], QtCore.Qt.Orientation.Horizontal)
        self.resizeDocks([self.captures_dock], [165], QtCore.Qt.Orientation.Vertical)
        ctrl = self.controls.sizeHint().height() + 30
        self.resizeDocks([self.controls_dock, self.status_dock], [ctrl, max(200, h - ctrl - 300)],
                         QtCore.Qt.Orientation.Vertical)
        half = max(300, (self.width() - 10) // 2)
        self.resizeDocks([self.captures_dock, self.log_dock], [half, half], QtCore.Qt.Orientation.Horizontal)

    def showEvent(self, event: QtGui.QShowEvent) -> None:  # noqa: N802 (Qt name)
        """First show: size the docks."""
        super().showEvent(event)
        if not self._sized:
            self._sized = True
            QtCore.QTimer.singleShot(0, self._initial_dock_sizes)

    def _action(self, menu: QtWidgets.QMenu, text: str, fn: Callable[[], Any], shortcut: str | None = None,
                tip: str = "") -> QtGui.QAction:
        a = QtGui.QAction(text, self)
        if shortcut:
            a.setShortcut(QtGui.QKeySequence(shortcut))
        a.setStatusTip(tip)
        a.triggered.connect(lambda checked=False: fn())
        menu.addAction(a)
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        open_rec = self._action(f, "Open recording…", self._open_recording_dialog, "Ctrl+O", "A RealSense .bag or .db3 file")
        self._action(f, "Open image folder…", self._open_folder_dialog, None, "DeepDeform layout or color/ + depth/")
        sample = self._action(f, "Open bundled sample", lambda: self.open_source(str(SAMPLE)), "Ctrl+Shift+O")
        camera = self._action(f, "Open camera…", self._open_camera_dialog, None, "A connected RealSense camera")
        f.addSeparator()
        record = self._action(f, "Record…", self._record_dialog, "Ctrl+R", "Record from a camera to .db3")
        self.export_action = self._action(f, "Export mesh…", self._export_dialog_open, "Ctrl+E")
        shot = self._action(f, "Save 3D view screenshot…", self._screenshot_3d_dialog, "Ctrl+Shift+S")
        self._action(f, "Save window screenshot…", self._screenshot_window_dialog)
        f.addSeparator()
        self._action(f, "Load captures…", self.capture_dock._load_dialog)
        self._action(f, "Save captures…", self.capture_dock._save_dialog)
        f.addSeparator()
        self._action(f, "Quit", self.close, "Ctrl+Q")
        pb = mb.addMenu("&Playback")
        self._action(pb, "Play / pause", self.toggle_play, "Space")
        self._action(pb, "Step forward", lambda: self.host.send("step", {"delta": 1}), "Right")
        self._action(pb, "Step back", lambda: self.host.send("step", {"delta": -1}), "Left")
        self._action(pb, "Capture", lambda: self.host.send("capture", {"every": 0}), "C")
        v = mb.addMenu("&View")
        for d in (self.controls_dock, self.status_dock, self.panels_dock, self.captures_dock, self.log_dock):
            v.addAction(d.toggleViewAction())
        v.addSeparator()
        self._action(v, "Fit 3D view", self.scene.fit_view, "F")
        h = mb.addMenu("&Help")
        self._action(h, "About nrstudio", self._about)
        tb = self.addToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a, text in ((open_rec, "Open…"), (sample, "Sample"), (camera, "Camera…"), (record, "Record…"),
                        (self.export_action, "Export mesh…"), (shot, "3D screenshot…")):
            b = QtGui.QAction(text, self)
            b.setToolTip(a.text().rstrip("…") + (f" ({a.shortcut().toString()})" if not a.shortcut().isEmpty() else ""))
            b.triggered.connect(a.trigger)
            a.changed.connect(lambda a=a, b=b: b.setEnabled(a.isEnabled()))
            tb.addAction(b)

    def _connect(self) -> None:
        w = self.worker
        w.sourceOpened.connect(self._on_source_opened)
        w.frameReady.connect(self._on_frame)
        w.meshReady.connect(self._on_mesh)
        w.statsReady.connect(self._on_stats)
        w.stateChanged.connect(self._on_state)
        w.logMessage.connect(self.log)
        w.errorRaised.connect(self.show_error)
        w.captureReady.connect(self.captures.add)
        w.seriesFinished.connect(self.capture_dock.series_finished)
        w.exportProgress.connect(self._on_export_progress)
        w.exportFinished.connect(self._on_export_finished)
        w.capabilities.connect(self._on_capabilities)
        w.overlayReady.connect(self._on_tracker_overlay)
        t = self.transport
        t.playRequested.connect(lambda on: self.host.send("play" if on else "pause"))
        t.stepRequested.connect(lambda d: self.host.send("step", {"delta": d}))
        t.seekRequested.connect(lambda i: self.host.send("seek", {"index": i}))
        t.loopChanged.connect(lambda on: self.host.send("set_loop", {"on": on}))
        t.speedChanged.connect(lambda s: self.host.send("set_speed", {"speed": s}))
        t.realtimeChanged.connect(lambda on: self.host.send("set_realtime", {"on": on}))
        c = self.controls
        c.startRequested.connect(self.start_reconstruction)
        c.stopRequested.connect(lambda: self.host.send("stop"))
        c.resetRequested.connect(self.reset_reconstruction)
        c.log.connect(self.log)
        self.depth_view.rangeChanged.connect(lambda rng: self.host.send("set_depth_range", {"range": rng}))
        self.capture_dock.captureRequested.connect(lambda every, times: self.host.send("capture", {"every": every, "times": times}))
        self.capture_dock.cancelSeriesRequested.connect(lambda: self.host.send("cancel_series"))
        self.capture_dock.log.connect(self.log)
        self.panels.log.connect(self.log)

    # ---------------------------------------------------------------- public API (menus, tests, the gui command)
    def log(self, level: str, text: str) -> None:
        """Add a log entry (warnings and errors also go to the status bar)."""
        self.log_pane.append(level, text)
        if level in ("warning", "error"):
            self.statusBar().showMessage(text.splitlines()[0], 8000)

    def show_error(self, title: str, text: str) -> None:
        """A log entry and a non-modal message box; the app keeps running."""
        self.errors.append((title, text))
        if not any(text.splitlines()[0] in e for _, e in self.log_pane.entries[-3:]):
            self.log("error", f"{title}: {text.splitlines()[0]}")
        box = notify(self, title, text)
        box.finished.connect(lambda _=0, b=box: self.message_boxes.remove(b) if b in self.message_boxes else None)
        self.message_boxes.append(box)

    def close_message_boxes(self) -> None:
        """Close every open message box."""
        for b in list(self.message_boxes):
            b.close()
        self.message_boxes.clear()

    def open_source(self, spec: str, options: dict | None = None) -> None:
        """Open a recording / folder / "camera[:SERIAL]" / "synthetic:NAME" (on the worker's pump thread)."""
        self.source_info = None
        self.transport.set_source(None)
        self.status_label.setText(f"opening {spec} …")
        self.host.send("open", {"spec": str(spec), "options": options or {}})

    def start_reconstruction(self, settings: ReconSettings | None = None, paused: bool = False) -> None:
        """Start (or resume) fusing with `settings` (default: the controls'); plays unless `paused`."""
        if settings is None:
            try:
                settings = self.controls.settings()
            except InputError as e:
                self.show_error("Invalid settings", str(e))
                return
        self.host.send("start", {"settings": settings, "paused": paused})

    def reset_reconstruction(self) -> None:
        """Discard the model."""
        self.host.send("reset")
        self.scene.clear()

    def play(self, frames: int | None = None) -> None:
        """Play (at most `frames` frames, then pause)."""
        self.host.send("play", {"frames": frames} if frames else {})

    def pause(self) -> None:
        """Pause playback."""
        self.host.send("pause")

    def toggle_play(self) -> None:
        """Play / pause."""
        self.host.send("pause" if self.state.get("playing") else "play")

    def export_mesh(self, which: str, path: str | Path, fmt: str | None = None,
                    cancel: threading.Event | None = None) -> threading.Event:
        """Ask the worker to export; progress in a progress dialog (its Cancel sets `cancel`, made here when
        not given). Returns the cancel event."""
        cancel = cancel or threading.Event()
        p = Path(path)
        fmt = fmt or (p.suffix.lstrip(".") or "ply")
        self._export_cancel = cancel
        dlg = QtWidgets.QProgressDialog(f"Exporting the {which} mesh …", "Cancel", 0, 0, self)
        dlg.setWindowTitle("Export mesh")
        dlg.setWindowModality(QtCore.Qt.WindowModality.WindowModal)
        dlg.setMinimumDuration(300)
        dlg.canceled.connect(cancel.set)
        self._export_dialog = dlg
        self.last_export = None
        self.host.send("export", {"which": which, "path": str(p), "fmt": fmt, "cancel": cancel})
        return cancel

    def save_3d_screenshot(self, path: str | Path) -> Path:
        """Save the rendered 3D view (GL framebuffer) as PNG."""
        p = Path(path)
        img = self.scene.grab()
        if img.isNull() or not img.save(str(p)):
            raise InputError(f"{p}: cannot save the 3D view screenshot")
        return p

    def save_window_screenshot(self, path: str | Path) -> Path:
        """Save the whole window (3D view included) as PNG."""
        p = Path(path)
        img = self.grab_window_image()
        if img.isNull() or not img.save(str(p)):
            raise InputError(f"{p}: cannot save the window screenshot")
        return p

    def grab_window_image(self) -> QtGui.QImage:
        """The window as an image; the GL views are grabbed from their framebuffers and pasted in (a plain
        widget grab leaves OpenGL surfaces blank on some platforms)."""
        pix = self.grab()
        img = pix.toImage()
        painter = QtGui.QPainter(img)
        dpr = pix.devicePixelRatio()
        from pyqtgraph.opengl import GLViewWidget

        for glw in self.findChildren(GLViewWidget):
            vis = glw.visibleRegion().boundingRect()  # widget coordinates; clipped by scroll areas, docks
            if not glw.isVisible() or vis.isEmpty():
                continue
            fb = glw.grabFramebuffer()
            sx = fb.width() / max(glw.width(), 1)
            sy = fb.height() / max(glw.height(), 1)
            source = QtCore.QRectF(vis.x() * sx, vis.y() * sy, vis.width() * sx, vis.height() * sy)
            top_left = glw.mapTo(self, vis.topLeft())
            target = QtCore.QRectF(top_left.x() * dpr, top_left.y() * dpr, vis.width() * dpr, vis.height() * dpr)
            painter.drawImage(target, fb, source)
        painter.end()
        return img

    # ---------------------------------------------------------------- worker signals
    def _on_source_opened(self, info: dict) -> None:
        self.source_info = info
        self.transport.set_source(info)
        self.controls.set_has_groundtruth(bool(info.get("groundtruth")))
        n = info.get("length")
        self.status_label.setText(f"{info['name']} — {info['width']}x{info['height']}"
                                  + (f", {n} frames" if n else ", live"))
        self.scene.set_camera(info.get("intrinsics"))

    def _on_frame(self, fr: dict) -> None:
        self.frames_shown += 1
        k = fr["intrinsics"]
        n = fr.get("length")
        self.color_view.set_image(fr["color"], f"{k['width']}x{k['height']}  frame {fr['index'] + 1}"
                                  + (f"/{n}" if n else ""))
        self.depth_view.set_depth(fr["depth"], f"{100 * fr['valid_fraction']:.0f}% valid", fr.get("depth_rgb"),
                                  fr.get("depth_range"))
        self.transport.set_position(fr["index"], fr["timestamp_s"])
        self._update_overlay()

    def _update_overlay(self) -> None:
        m = self.last_mesh
        k = self.source_info.get("intrinsics") if self.source_info else None
        if not m or m.get("empty") or k is None or m.get("nodes_live") is None:
            self.color_view.set_overlay(None)
            return
        p = np.asarray(m["nodes_live"], np.float64)
        ok = p[:, 2] > 1e-3
        p = p[ok]
        uv = np.stack([k["fx"] * p[:, 0] / p[:, 2] + k["cx"], k["fy"] * p[:, 1] / p[:, 2] + k["cy"]], 1)
        self.color_view.set_overlay(uv)

    def _on_mesh(self, payload: dict) -> None:
        self.last_mesh = payload
        self.mesh_updates += 1
        self.scene.set_meshes(payload)
        self.status_panel.update_mesh(payload)
        self._update_overlay()

    def _on_tracker_overlay(self, payload: dict) -> None:
        self.last_tracker_overlay = payload
        self.color_view.set_tracker_overlay(payload)

    def _on_stats(self, st: dict) -> None:
        self.last_stats = st
        self.status_panel.update_stats(st)

    def _on_state(self, st: dict) -> None:
        self.state = st
        if not st.get("has_source"):
            self.status_label.setText("no source: File > Open recording, Open bundled sample or Open camera")
        self.transport.set_playing(bool(st.get("playing")))
        self.controls.set_running(bool(st.get("fusing")), bool(st.get("has_model")))
        self.export_action.setEnabled(bool(st.get("has_model")))
        if not st.get("series"):
            self.capture_dock.series_finished()
        if self.source_info:
            mode = "fusing" if st.get("fusing") else "viewing"
            play = "playing" if st.get("playing") else ("end" if st.get("at_end") else "paused")
            self.status_label.setText(f"{self.source_info['name']} — {play}, {mode}")

    def _on_capabilities(self, caps: dict) -> None:
        self.controls.set_tracker_availability(caps.get("trackers", {}))
        self.controls.set_cuda(bool(caps.get("cuda")))
        for key, (ok, why) in caps.get("trackers", {}).items():
            if not ok:
                self.log("info", f"tracker {key} unavailable: {why}")

    def _on_export_progress(self, done: int, total: int, text: str) -> None:
        d = self._export_dialog
        if d is not None:
            d.setMaximum(max(total, 1))
            d.setValue(done)
            d.setLabelText(text)

    def _on_export_finished(self, res: dict) -> None:
        self.last_export = res
        if self._export_dialog is not None:
            self._export_dialog.reset()
            self._export_dialog.deleteLater()
            self._export_dialog = None
        if res.get("ok"):
            self.log("info", f"exported {res['message']}")
        elif res.get("cancelled"):
            self.log("warning", res["message"])
        else:
            self.show_error("Export failed", res.get("message", "export failed"))

    # ---------------------------------------------------------------- dialogs
    def _open_recording_dialog(self) -> None:
        from app.gui.dialogs import open_recording_dialog

        path = open_recording_dialog(self)
        if path:
            self.open_source(path)

    def _open_folder_dialog(self) -> None:
        from app.gui.dialogs import open_folder_dialog

        path = open_folder_dialog(self)
        if path:
            self.open_source(path)

    def _open_camera_dialog(self) -> None:
        from app.gui.dialogs import OpenCameraDialog

        dlg = OpenCameraDialog(self)
        if dlg.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            spec, opts = dlg.spec_and_options()
            self.open_source(spec, opts)

    def _record_dialog(self) -> None:
        from app.gui.dialogs import RecordDialog

        dlg = RecordDialog(self, default_path=time.strftime("recording_%Y%m%d_%H%M%S.db3"))
        dlg.log.connect(self.log)
        dlg.recorded.connect(lambda info: self.log("info", f"open it with File > Open recording: {info['path']}"))
        dlg.exec()

    def _export_dialog_open(self) -> None:
        from app.gui.dialogs import ExportDialog

        dlg = ExportDialog(self, has_sequence=bool(self.state.get("has_sequence")))
        if dlg.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            r = dlg.request()
            self.export_mesh(r["which"], r["path"], r["fmt"])

    def _screenshot_3d_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save 3D view", "view3d.png", "PNG (*.png)")
        if path:
            try:
                self.log("info", f"3D view saved to {self.save_3d_screenshot(path)}")
            except InputError as e:
                self.show_error("Screenshot", str(e))

    def _screenshot_window_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save window", "nrstudio.png", "PNG (*.png)")
        if path:
            try:
                self.log("info", f"window saved to {self.save_window_screenshot(path)}")
            except InputError as e:
                self.show_error("Screenshot", str(e))

    def _about(self) -> None:
        QtWidgets.QMessageBox.about(self, "About nrstudio", "<b>nrstudio</b> 0.1.0<br>Non-rigid 3D reconstruction "
                                    "from a single RGB-D camera (DynamicFusion-style fusion, classical and neural "
                                    "tracking).<br>Apache-2.0.")

    # ---------------------------------------------------------------- closing
    def shutdown(self) -> bool:
        """Stop the worker and panel jobs (bounded waits); safe to call twice."""
        self.close_message_boxes()
        self.panels.shutdown()
        return self.host.shutdown()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt name)
        """Closing the window stops the worker cleanly."""
        self.hide()
        self.shutdown()
        event.accept()

    # ---------------------------------------------------------------- scripted runs (`nrstudio gui --frames`)
    def wait_until(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        """Run the event loop until `cond()` holds or `timeout_s` passes; True if it holds."""
        if cond():
            return True
        deadline = time.monotonic() + timeout_s
        loop = QtCore.QEventLoop()
        result = {"ok": False}

        def check() -> None:
            if cond():
                result["ok"] = True
                loop.quit()
            elif time.monotonic() > deadline:
                loop.quit()

        timer = QtCore.QTimer()
        timer.timeout.connect(check)
        timer.start(10)
        loop.exec()  # a real event loop: timers, paints and queued signals run as in app.exec()
        timer.stop()
        return result["ok"]

    def replay_frames(self, spec: str, frames: int, settings: ReconSettings | None = None,
                      timeout_s: float = 600.0, capture_every: int = 0) -> dict:
        """Open `spec`, fuse `frames` frames (or to the end), wait for the final mesh; with capture_every > 0
        capture the surface every that many fused frames. Returns a summary dict
        {ok, error, frames_in, frames_fused, mesh_updates, captures, stats}."""
        n_err = len(self.errors)
        shown = self.frames_shown
        self.open_source(spec)
        # opened and its first frame on screen (Start then fuses from that frame)
        if not self.wait_until(lambda: (self.source_info is not None and self.frames_shown > shown)
                               or len(self.errors) > n_err, min(timeout_s, 120)):
            return {"ok": False, "error": f"{spec}: the source did not open in time"}
        if len(self.errors) > n_err:
            return {"ok": False, "error": self.errors[-1][1]}
        self.start_reconstruction(settings, paused=True)
        if not self.wait_until(lambda: self.state.get("fusing") or len(self.errors) > n_err, 120):
            return {"ok": False, "error": "the reconstruction did not start"}
        if len(self.errors) > n_err:
            return {"ok": False, "error": self.errors[-1][1]}
        before = self.mesh_updates
        gaps: list[float] = []  # UI-thread responsiveness: gaps between ticks of a 10 ms timer
        t_start = time.perf_counter()
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        probe = QtCore.QTimer(self)
        probe.timeout.connect(tick)
        probe.start(10)
        if capture_every > 0:
            self.host.send("capture", {"every": capture_every, "times": max(1, frames // capture_every)})
        self.play(frames)

        def finished() -> bool:
            done = not self.state.get("playing") and (self.last_stats.get("frames_in", 0) >= frames
                                                      or self.state.get("at_end"))
            return (done and self.mesh_updates > before) or len(self.errors) > n_err

        ok = self.wait_until(finished, timeout_s)
        probe.stop()
        self.wait_until(lambda: False, 0.3)  # let the last paint happen
        out = {"ok": ok and len(self.errors) == n_err, "frames_in": self.last_stats.get("frames_in", 0),
               "frames_fused": self.last_stats.get("frames_fused", 0), "mesh_updates": self.mesh_updates,
               "captures": len(self.captures), "stats": self.last_stats,
               "ui_max_gap_ms": 1e3 * max(gaps) if gaps else None,
               "ui_median_gap_ms": 1e3 * float(np.median(gaps)) if gaps else None,
               "ui_blocked_share": (sum(g for g in gaps if g > 0.1) / max(time.perf_counter() - t_start, 1e-9))
               if gaps else None}
        if len(self.errors) > n_err:
            out["error"] = self.errors[-1][1]
        elif not ok:
            out["error"] = f"{frames} frames were not fused within {timeout_s:g} s"
        return out
