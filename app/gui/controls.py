"""Reconstruction controls: start / stop / reset, tracker, device, voxel size, truncation (tracking and
mesh), depth range, node coverage, keyframe interval, keyframe features, processing resolution,
warped-sequence recording; presets (built-in, or saved to / loaded from TOML or JSON files). The values live in `app.gui.settings.ReconSettings`.
"""
from __future__ import annotations

from pathlib import Path

from PySide6 import QtCore, QtWidgets

from app.gui.messages import notify
from app.gui.settings import PRESETS, PROCESSING_SIZES, TRACKERS, ReconSettings, load_preset, save_preset
from app.trackers import FEATURES
from fusion.errors import InputError
from fusion.tsdf.volume import DEPTH_TILE


def _dspin(lo: float, hi: float, step: float, decimals: int, suffix: str, tip: str) -> QtWidgets.QDoubleSpinBox:
    s = QtWidgets.QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setDecimals(decimals)
    s.setSuffix(suffix)
    s.setToolTip(tip)
    s.setKeyboardTracking(False)
    return s


class ReconstructionControls(QtWidgets.QWidget):
    """The reconstruction panel. Signals: startRequested(ReconSettings), stopRequested(), resetRequested(),
    log(level, text)."""

    startRequested = QtCore.Signal(object)
    stopRequested = QtCore.Signal()
    resetRequested = QtCore.Signal()
    log = QtCore.Signal(str, str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.start_btn = QtWidgets.QPushButton("Start")
        self.start_btn.setToolTip("Fuse the frames being played (starts playback)")
        self.stop_btn = QtWidgets.QPushButton("Stop")
        self.stop_btn.setToolTip("Stop fusing and pause; the model is kept (export, capture, Start resumes)")
        self.reset_btn = QtWidgets.QPushButton("Reset")
        self.reset_btn.setToolTip("Discard the model (new settings apply from the next Start)")
        self.start_btn.setStyleSheet("QPushButton { font-weight: bold; }")

        self.tracker = QtWidgets.QComboBox()
        for key, label in TRACKERS:
            self.tracker.addItem(label, key)
        self.device = QtWidgets.QComboBox()
        self.device.addItem("CPU", "cpu")
        self.device.addItem("GPU (CUDA)", "cuda")
        self._set_item_enabled(self.device, "cuda", False, "torch sees no CUDA GPU on this machine")
        self.processing = QtWidgets.QComboBox()
        for label, _ in PROCESSING_SIZES:
            self.processing.addItem(label, label)
        self.processing.setToolTip("Frames are resized to this before fusion (smaller = faster)")
        self.voxel = _dspin(1.0, 100.0, 1.0, 1, " mm", "TSDF voxel edge")
        self.trunc = _dspin(1.0, 20.0, 0.5, 1, " voxels", "Truncation band of the signed distance the tracker sees")
        self.mesh_trunc = _dspin(0.0, 20.0, 0.5, 1, " voxels", "Truncation band the mesh is extracted from: "
                                 "narrower keeps close surfaces apart (off: the tracker's band)")
        self.mesh_trunc.setSpecialValueText("off")
        self.carve = _dspin(0.0, float(DEPTH_TILE), 0.5, 1, " px", "Silhouette carving of the mesh: pixels without depth this "
                            "close to the object mark free space beside it, closing surface seen edge-on")
        self.carve.setSpecialValueText("off")
        self.depth_min = _dspin(0.0, 10.0, 0.05, 2, " m", "Nearer depth is ignored")
        self.depth_max = _dspin(0.1, 20.0, 0.1, 2, " m", "Farther depth is ignored")
        self.coverage = _dspin(0.5, 50.0, 0.5, 1, " cm", "Deformation-graph node coverage radius (NNRT: 5 cm)")
        self.keyframe = QtWidgets.QSpinBox()
        self.keyframe.setRange(1, 10000)
        self.keyframe.setSuffix(" frames")
        self.keyframe.setToolTip("Neural tracker: a new keyframe every this many tracked frames (NNRT: 50)")
        self.features = QtWidgets.QComboBox()
        for key in FEATURES:
            self.features.addItem(key if key == "none" else key.upper(), key)
        self.features.setToolTip("Classical tracker: match keypoints of the keyframe every frame, against "
                                 "drift along the surface (helps well-textured subjects; SIFT costs 5-50 ms a frame)")
        self.sequence = QtWidgets.QSpinBox()
        self.sequence.setRange(0, 100000)
        self.sequence.setSpecialValueText("off")
        self.sequence.setSuffix(" frames")
        self.sequence.setToolTip("Freeze the canonical mesh after this many fused frames and record its warp "
                                 "every frame (File > Export mesh > sequence); 0 = off")
        self.memory = _dspin(0.1, 256.0, 0.5, 1, " GiB", "The TSDF volume may use at most this much memory")

        self.preset = QtWidgets.QComboBox()
        self.preset.addItem("Presets…", None)
        for name in PRESETS:
            self.preset.addItem(name, name)
        self.load_btn = QtWidgets.QPushButton("Load…")
        self.save_btn = QtWidgets.QPushButton("Save…")
        self.lock_note = QtWidgets.QLabel("")
        self.lock_note.setWordWrap(True)
        self.lock_note.setStyleSheet("color: #9aa0a6")

        buttons = QtWidgets.QHBoxLayout()
        for b in (self.start_btn, self.stop_btn, self.reset_btn):
            buttons.addWidget(b)
        form = QtWidgets.QFormLayout()
        form.setVerticalSpacing(3)
        form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Tracker", self.tracker)
        form.addRow("Device", self.device)
        form.addRow("Processing", self.processing)
        form.addRow("Voxel size", self.voxel)
        form.addRow("Truncation", self.trunc)
        form.addRow("Mesh truncation", self.mesh_trunc)
        form.addRow("Carving", self.carve)
        rng = QtWidgets.QHBoxLayout()
        rng.addWidget(self.depth_min)
        rng.addWidget(QtWidgets.QLabel("–"))
        rng.addWidget(self.depth_max)
        form.addRow("Depth range", rng)
        form.addRow("Node coverage", self.coverage)
        form.addRow("Keyframe every", self.keyframe)
        form.addRow("Features", self.features)
        form.addRow("Warped sequence after", self.sequence)
        form.addRow("Memory budget", self.memory)
        presets = QtWidgets.QHBoxLayout()
        presets.addWidget(self.preset, 1)
        presets.addWidget(self.load_btn)
        presets.addWidget(self.save_btn)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.setSpacing(4)
        lay.addLayout(buttons)
        lay.addLayout(form)
        lay.addLayout(presets)
        lay.addWidget(self.lock_note)
        lay.addStretch(1)

        self._geometry_widgets = (self.tracker, self.device, self.processing, self.voxel, self.trunc, self.mesh_trunc,
                                  self.carve,
                                  self.depth_min, self.depth_max, self.coverage, self.keyframe, self.features,
                                  self.sequence, self.memory, self.preset, self.load_btn)
        self.start_btn.clicked.connect(self._start)
        self.stop_btn.clicked.connect(self.stopRequested)
        self.reset_btn.clicked.connect(self.resetRequested)
        self.preset.activated.connect(self._preset_chosen)
        self.load_btn.clicked.connect(self._load_dialog)
        self.save_btn.clicked.connect(self._save_dialog)
        self.tracker.currentIndexChanged.connect(self._tracker_changed)
        self._has_groundtruth = False
        self._custom_sizes: dict[str, tuple[int, int]] = {}  # processing sizes met in preset files
        self._tracker_ok: dict[str, tuple[bool, str]] = {}
        self.set_settings(ReconSettings())
        self.set_has_groundtruth(False)
        self.set_running(False, False)

    # ---------------------------------------------------------------- values
    def settings(self) -> ReconSettings:
        """The settings shown (InputError when they are inconsistent, e.g. an empty depth range)."""
        return ReconSettings(
            tracker=self.tracker.currentData(), device=self.device.currentData(),
            voxel_size=self.voxel.value() / 1000.0, trunc_voxels=self.trunc.value(),
            mesh_trunc_voxels=self.mesh_trunc.value(), carve_px=self.carve.value(),
            depth_min=self.depth_min.value(), depth_max=self.depth_max.value(),
            node_coverage=self.coverage.value() / 100.0, keyframe_interval=self.keyframe.value(),
            features=self.features.currentData(),
            processing_size=self._processing_size(), sequence_after=self.sequence.value(),
            memory_budget_gb=self.memory.value(),
        )

    def _processing_size(self) -> tuple[int, int] | None:
        label = self.processing.currentData()
        return dict(PROCESSING_SIZES).get(label, self._custom_sizes.get(label))

    def set_settings(self, s: ReconSettings) -> None:
        """Show `s` (an unavailable tracker or device stays selected but greyed: Start reports it)."""
        self.tracker.setCurrentIndex(max(0, self.tracker.findData(s.tracker)))
        self.device.setCurrentIndex(max(0, self.device.findData(s.device)))
        size = tuple(s.processing_size) if s.processing_size else None
        labels = [label for label, sz in PROCESSING_SIZES if sz == size]
        if not labels:  # a size from a preset file that is not offered: add it
            label = f"{size[0]} x {size[1]}"
            self.processing.addItem(label, label)
            self._custom_sizes[label] = size
            labels = [label]
        self.processing.setCurrentIndex(self.processing.findData(labels[0]))
        self.voxel.setValue(1000.0 * s.voxel_size)
        self.trunc.setValue(s.trunc_voxels)
        self.mesh_trunc.setValue(s.mesh_trunc_voxels)
        self.carve.setValue(s.carve_px)
        self.depth_min.setValue(s.depth_min)
        self.depth_max.setValue(s.depth_max)
        self.coverage.setValue(100.0 * s.node_coverage)
        self.keyframe.setValue(s.keyframe_interval)
        self.features.setCurrentIndex(max(0, self.features.findData(s.features)))
        self.sequence.setValue(s.sequence_after)
        self.memory.setValue(s.memory_budget_gb)
        self._tracker_changed()

    # ---------------------------------------------------------------- availability
    @staticmethod
    def _set_item_enabled(combo: QtWidgets.QComboBox, key: str, enabled: bool, reason: str) -> None:
        i = combo.findData(key)
        if i < 0:
            return
        item = combo.model().item(i)
        item.setEnabled(enabled)
        item.setToolTip("" if enabled else reason)

    def set_tracker_availability(self, avail: dict[str, tuple[bool, str]]) -> None:
        """Grey out trackers that cannot run here, with the reason as tooltip ({key: (ok, reason)})."""
        self._tracker_ok = dict(avail)
        for key, _ in TRACKERS:
            if key == "groundtruth":
                continue
            ok, why = avail.get(key, (True, ""))
            self._set_item_enabled(self.tracker, key, ok, why)
        if not self._tracker_ok.get(self.tracker.currentData(), (True, ""))[0]:
            self.tracker.setCurrentIndex(self.tracker.findData("classical"))

    def set_cuda(self, available: bool) -> None:
        """Enable the GPU choice when torch sees CUDA."""
        self._set_item_enabled(self.device, "cuda", available, "torch sees no CUDA GPU on this machine")

    def set_has_groundtruth(self, has: bool) -> None:
        """The opened recording has a ground-truth sidecar (enables the oracle tracker)."""
        self._has_groundtruth = has
        self._set_item_enabled(self.tracker, "groundtruth", has,
                               "only for synthetic recordings with a .gt.npz ground-truth sidecar")
        if not has and self.tracker.currentData() == "groundtruth":
            self.tracker.setCurrentIndex(self.tracker.findData("classical"))

    def _tracker_changed(self) -> None:
        self.keyframe.setEnabled(self.tracker.currentData() == "neural" and not self._locked())
        self.features.setEnabled(self.tracker.currentData() == "classical" and not self._locked())

    def _locked(self) -> bool:
        return self.lock_note.text() != ""

    def set_running(self, fusing: bool, has_model: bool) -> None:
        """Reflect the worker's state: settings are locked while a model exists (Reset unlocks them)."""
        self.start_btn.setText("Resume" if has_model and not fusing else "Start")
        self.start_btn.setEnabled(not fusing)
        self.stop_btn.setEnabled(fusing)
        self.reset_btn.setEnabled(has_model or fusing)
        locked = has_model or fusing
        self.lock_note.setText("Locked while a model exists: Reset to change." if locked else "")
        for w in self._geometry_widgets:
            w.setEnabled(not locked)
        self._tracker_changed()

    # ---------------------------------------------------------------- actions
    def _start(self) -> None:
        try:
            s = self.settings()
        except InputError as e:
            self.log.emit("error", f"invalid settings: {e}")
            notify(self, "Invalid settings", str(e))
            return
        ok, why = self._tracker_ok.get(s.tracker, (True, ""))
        if not ok:
            self.log.emit("error", f"tracker {s.tracker} is not available: {why}")
            notify(self, "Tracker not available", why)
            return
        self.startRequested.emit(s)

    def _preset_chosen(self, i: int) -> None:
        name = self.preset.itemData(i)
        if name in PRESETS:
            self.set_settings(PRESETS[name])
            self.log.emit("info", f"preset: {name}")
        self.preset.setCurrentIndex(0)

    def load_preset_file(self, path: str | Path) -> ReconSettings:
        """Load a preset file into the controls (InputError when unreadable)."""
        s = load_preset(path)
        self.set_settings(s)
        self.log.emit("info", f"loaded preset {path}")
        return s

    def save_preset_file(self, path: str | Path) -> Path:
        """Save the shown settings as a preset (.toml or .json)."""
        p = save_preset(path, self.settings())
        self.log.emit("info", f"saved preset {p}")
        return p

    def _load_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load preset", "", "Presets (*.toml *.json)")
        if path:
            try:
                self.load_preset_file(path)
            except InputError as e:
                self.log.emit("error", str(e))
                notify(self, "Load preset", str(e))

    def _save_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save preset", "preset.toml", "Presets (*.toml *.json)")
        if path:
            try:
                self.save_preset_file(path)
            except (InputError, OSError) as e:
                self.log.emit("error", str(e))
                notify(self, "Save preset", str(e))
