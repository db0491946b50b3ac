"""Dialogs: open a recording or folder, open a camera (with its stream settings), record from a camera
to .db3, export meshes (canonical, live warped, sequence; PLY / OBJ / GLB) with a progress dialog.

Nothing here calls the RealSense SDK on the UI thread: device lists and recording run on daemon threads
and report back through signals.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from PySide6 import QtCore, QtWidgets

from app.gui.messages import notify
from fusion.errors import InputError, NRStudioError

RESOLUTIONS = ((640, 480), (848, 480), (1280, 720), (424, 240), (480, 270))
FRAME_RATES = (30, 15, 6, 60, 90)


def open_recording_dialog(parent: QtWidgets.QWidget) -> str | None:
    """Ask for a RealSense recording (.bag / .db3); None when cancelled."""
    path, _ = QtWidgets.QFileDialog.getOpenFileName(parent, "Open recording", "",
                                                    "RealSense recordings (*.bag *.db3);;All files (*)")
    return path or None


def open_folder_dialog(parent: QtWidgets.QWidget) -> str | None:
    """Ask for an image folder (DeepDeform layout or color/depth images); None when cancelled."""
    path = QtWidgets.QFileDialog.getExistingDirectory(parent, "Open image folder (color/ + depth/)")
    return path or None


class _Bridge(QtCore.QObject):
    """Carries results of daemon threads back to the UI thread."""

    done = QtCore.Signal(object)
    failed = QtCore.Signal(str)
    progress = QtCore.Signal(int, float)


def run_in_thread(fn: Callable[[], Any], on_done: Callable[[Any], None], on_error: Callable[[str], None],
                  parent: QtCore.QObject | None = None) -> _Bridge:
    """Run `fn()` on a daemon thread; `on_done(result)` / `on_error(message)` run on the UI thread. Returns the
    bridge (keep a reference while it runs)."""
    bridge = _Bridge(parent)
    bridge.done.connect(on_done)
    bridge.failed.connect(on_error)

    def body() -> None:
        try:
            bridge.done.emit(fn())
        except (NRStudioError, InputError) as e:
            bridge.failed.emit(str(e))
        except Exception as e:  # SDK RuntimeError etc.
            bridge.failed.emit(f"{type(e).__name__}: {e}")

    threading.Thread(target=body, name="nrstudio-ui-helper", daemon=True).start()
    return bridge


def _list_devices() -> list[dict]:
    from fusion.sources.live import list_devices

    return list_devices()


class _CameraForm(QtWidgets.QWidget):
    """Camera choice (listed off the UI thread), resolution, fps, visual preset."""

    listed = QtCore.Signal(list)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        from fusion.sources.live import NO_CAMERA, VISUAL_PRESETS

        super().__init__(parent)
        self.no_camera_text = NO_CAMERA
        self.camera = QtWidgets.QComboBox()
        self.camera.addItem("looking for cameras …", None)
        self.camera.setEnabled(False)
        self.refresh_btn = QtWidgets.QToolButton(text="Refresh")
        self.note = QtWidgets.QLabel("")
        self.note.setWordWrap(True)
        self.note.setStyleSheet("color: #f0a040")
        self.resolution = QtWidgets.QComboBox()
        for w, h in RESOLUTIONS:
            self.resolution.addItem(f"{w} x {h}", (w, h))
        self.fps = QtWidgets.QComboBox()
        for f in FRAME_RATES:
            self.fps.addItem(f"{f} fps", f)
        self.preset = QtWidgets.QComboBox()
        self.preset.addItem("(camera default)", None)
        for p in VISUAL_PRESETS:
            self.preset.addItem(p, p)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.camera, 1)
        row.addWidget(self.refresh_btn)
        self.form = QtWidgets.QFormLayout(self)
        self.form.addRow("Camera", row)
        self.form.addRow("", self.note)
        self.form.addRow("Resolution", self.resolution)
        self.form.addRow("Frame rate", self.fps)
        self.form.addRow("Visual preset", self.preset)
        self.refresh_btn.clicked.connect(self.refresh)
        self.devices: list[dict] = []
        self._bridge = None
        self.refresh()

    def refresh(self) -> None:
        """List connected cameras on a daemon thread."""
        self.camera.clear()
        self.camera.addItem("looking for cameras …", None)
        self.camera.setEnabled(False)
        self._bridge = run_in_thread(_list_devices, self._listed, self._list_failed, self)

    def _listed(self, devs: list) -> None:
        self.devices = list(devs)
        self.camera.clear()
        for d in devs:
            self.camera.addItem(f"{d.get('name') or 'RealSense'}  (serial {d.get('serial')})", d.get("serial"))
        self.camera.setEnabled(bool(devs))
        if not devs:
            self.camera.addItem("no camera", None)
            self.note.setText(self.no_camera_text)
        else:
            self.note.setText("")
        self.listed.emit(self.devices)

    def _list_failed(self, msg: str) -> None:
        self._listed([])
        self.note.setText(f"cannot list cameras: {msg}")

    def live_config(self) -> Any:
        """A fusion.sources.live.LiveConfig from the form."""
        from fusion.sources.live import LiveConfig

        w, h = self.resolution.currentData()
        return LiveConfig(serial=self.camera.currentData(), width=w, height=h, fps=int(self.fps.currentData()),
                          visual_preset=self.preset.currentData())


class OpenCameraDialog(QtWidgets.QDialog):
    """Choose a camera and its stream settings (resolution, fps, preset, depth filters)."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open camera")
        self.form = _CameraForm()
        self.spatial = QtWidgets.QCheckBox("spatial")
        self.temporal = QtWidgets.QCheckBox("temporal")
        self.holes = QtWidgets.QCheckBox("hole filling")
        self.decimation = QtWidgets.QSpinBox()
        self.decimation.setRange(1, 8)
        self.decimation.setPrefix("decimation ")
        filt = QtWidgets.QHBoxLayout()
        for w in (self.spatial, self.temporal, self.holes, self.decimation):
            filt.addWidget(w)
        self.form.form.addRow("Depth filters", filt)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Open
                                             | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        self.open_btn = buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Open)
        self.open_btn.setEnabled(False)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.form.listed.connect(lambda devs: self.open_btn.setEnabled(bool(devs)))
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.form)
        lay.addWidget(buttons)

    def spec_and_options(self) -> tuple[str, dict]:
        """("camera[:SERIAL]", {"config": LiveConfig}) for `open_source`."""
        from dataclasses import replace

        from fusion.sources.realsense import FilterConfig

        cfg = self.form.live_config()
        filters = FilterConfig(decimation=self.decimation.value(), spatial=self.spatial.isChecked(),
                               temporal=self.temporal.isChecked(), hole_filling=1 if self.holes.isChecked() else None)
        cfg = replace(cfg, filters=filters)
        spec = f"camera:{cfg.serial}" if cfg.serial else "camera"
        return spec, {"config": cfg}


class RecordDialog(QtWidgets.QDialog):
    """Record depth + color from a connected camera to a .db3 file (on a daemon thread, with progress).
    Without a camera it says so and the Record button stays disabled."""

    recorded = QtCore.Signal(dict)
    log = QtCore.Signal(str, str)

    def __init__(self, parent: QtWidgets.QWidget | None = None, default_path: str = "recording.db3") -> None:
        super().__init__(parent)
        self.setWindowTitle("Record from camera")
        self.form = _CameraForm()
        self.path = QtWidgets.QLineEdit(str(Path(default_path).resolve()))
        browse = QtWidgets.QToolButton(text="…")
        browse.clicked.connect(self._browse)
        prow = QtWidgets.QHBoxLayout()
        prow.addWidget(self.path, 1)
        prow.addWidget(browse)
        self.duration = QtWidgets.QDoubleSpinBox()
        self.duration.setRange(0.5, 3600)
        self.duration.setValue(10)
        self.duration.setSuffix(" s")
        self.form.form.insertRow(0, "Output (.db3)", prow)
        self.form.form.addRow("Duration", self.duration)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setRange(0, 1000)
        self.status = QtWidgets.QLabel("")
        self.status.setWordWrap(True)
        self.record_btn = QtWidgets.QPushButton("Record")
        self.record_btn.setEnabled(False)
        self.close_btn = QtWidgets.QPushButton("Close")
        row = QtWidgets.QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.record_btn)
        row.addWidget(self.close_btn)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.form)
        lay.addWidget(self.bar)
        lay.addWidget(self.status)
        lay.addLayout(row)
        self.form.listed.connect(self._listed)
        self.record_btn.clicked.connect(self.start_recording)
        self.close_btn.clicked.connect(self.reject)
        self._bridge = None

    def _listed(self, devs: list) -> None:
        self.record_btn.setEnabled(bool(devs))
        if not devs:
            self.status.setText("Connect a RealSense camera (USB 3) and press Refresh.")
            self.log.emit("warning", f"record: {self.form.no_camera_text}")

    def _browse(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Record to", self.path.text(), "RealSense (*.db3)")
        if path:
            self.path.setText(path if path.endswith(".db3") else path + ".db3")

    def start_recording(self) -> None:
        """Record on a daemon thread; progress and the result come back as signals."""
        from fusion.sources.recorder import record_camera

        cfg = self.form.live_config()
        out = Path(self.path.text())
        dur = float(self.duration.value())
        self.record_btn.setEnabled(False)
        self.status.setText(f"recording {dur:g} s to {out} …")
        self._duration = dur
        bridge = _Bridge(self)
        bridge.progress.connect(self._progress)  # a bound method: runs on the UI thread

        def body() -> Any:
            return record_camera(out, dur, cfg, progress=lambda n, t: bridge.progress.emit(n, t)).as_dict()

        self._bridge = bridge
        bridge.done.connect(self._done)
        bridge.failed.connect(self._failed)

        def runner() -> None:
            try:
                bridge.done.emit(body())
            except Exception as e:
                bridge.failed.emit(str(e) if isinstance(e, NRStudioError) else f"{type(e).__name__}: {e}")

        threading.Thread(target=runner, name="nrstudio-record", daemon=True).start()

    def _progress(self, n: int, t: float) -> None:
        self.bar.setValue(int(1000 * min(1.0, t / max(self._duration, 1e-9))))
        self.status.setText(f"{n} framesets, {t:.1f} s")

    def _done(self, info: dict) -> None:
        self.bar.setValue(1000)
        self.status.setText(f"recorded {info['frames']} frames -> {info['path']}")
        self.record_btn.setEnabled(True)
        self.log.emit("info", f"recorded {info['frames']} frames ({info['size_bytes'] / 1e6:.1f} MB) -> {info['path']}")
        self.recorded.emit(info)

    def _failed(self, msg: str) -> None:
        self.status.setText(msg)
        self.record_btn.setEnabled(bool(self.form.devices))
        self.log.emit("error", f"recording failed: {msg}")
        notify(self, "Recording failed", msg)


class ExportDialog(QtWidgets.QDialog):
    """What to export (canonical, live warped, sequence), the format and where."""

    FORMATS = (("PLY", "ply"), ("OBJ", "obj"), ("GLB (glTF binary)", "glb"))

    def __init__(self, parent: QtWidgets.QWidget | None = None, has_sequence: bool = False,
                 default_dir: str = ".") -> None:
        super().__init__(parent)
        self.setWindowTitle("Export mesh")
        self.kind = {k: QtWidgets.QRadioButton(t) for k, t in (
            ("canonical", "Canonical mesh (canonical frame)"), ("live", "Live warped mesh (current camera frame)"),
            ("sequence", "Warped sequence (one file per frame, constant connectivity)"))}
        self.kind["canonical"].setChecked(True)
        if not has_sequence:
            self.kind["sequence"].setEnabled(False)
            self.kind["sequence"].setToolTip("No sequence was recorded: set 'Warped sequence after' in the "
                                             "reconstruction controls, Reset and fuse again")
        self.fmt = QtWidgets.QComboBox()
        for label, ext in self.FORMATS:
            self.fmt.addItem(label, ext)
        self.path = QtWidgets.QLineEdit(str(Path(default_dir).resolve() / "mesh.ply"))
        browse = QtWidgets.QToolButton(text="…")
        browse.clicked.connect(self._browse)
        prow = QtWidgets.QHBoxLayout()
        prow.addWidget(self.path, 1)
        prow.addWidget(browse)
        form = QtWidgets.QFormLayout()
        box = QtWidgets.QVBoxLayout()
        for b in self.kind.values():
            box.addWidget(b)
        form.addRow("What", box)
        form.addRow("Format", self.fmt)
        form.addRow("Path", prow)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Save
                                             | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(buttons)
        self.fmt.currentIndexChanged.connect(self._sync_path)
        for b in self.kind.values():
            b.toggled.connect(self._sync_path)

    def which(self) -> str:
        """canonical | live | sequence."""
        return next(k for k, b in self.kind.items() if b.isChecked())

    def _sync_path(self) -> None:
        p = Path(self.path.text())
        ext = self.fmt.currentData()
        if self.which() == "sequence":
            self.path.setText(str(p.with_suffix("")) if p.suffix else str(p))
        else:
            stem = p.with_suffix("") if p.suffix else p
            self.path.setText(f"{stem}.{ext}")

    def _browse(self) -> None:
        if self.which() == "sequence":
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "Export sequence to folder")
        else:
            ext = self.fmt.currentData()
            path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export mesh", self.path.text(), f"*.{ext}")
        if path:
            self.path.setText(path)
            self._sync_path()

    def request(self) -> dict:
        """{which, path, fmt} for the worker's export command."""
        return {"which": self.which(), "path": self.path.text(), "fmt": self.fmt.currentData()}
