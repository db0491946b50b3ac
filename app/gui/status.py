"""Status: frames/s, per-stage milliseconds, graph nodes, valid keyframes, skipped / dropped frames, the
volume; and the log pane (info, warnings, errors with time stamps)."""
from __future__ import annotations

import html
import time
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from fusion.pipeline import STAGES


class StatusPanel(QtWidgets.QWidget):
    """Numbers from the worker's `statsReady` dicts."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.values: dict[str, QtWidgets.QLabel] = {}
        form = QtWidgets.QFormLayout()
        form.setVerticalSpacing(2)
        for key, label in (("fps", "Rate"), ("frames", "Frames"), ("skipped", "Skipped"),
                           ("nodes", "Graph"), ("volume", "Volume"), ("mesh", "Mesh"), ("tracker", "Tracker")):
            v = QtWidgets.QLabel("–")
            v.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            v.setWordWrap(True)
            self.values[key] = v
            form.addRow(label, v)
        self.stages = QtWidgets.QTableWidget(len(STAGES) + 1, 3)
        self.stages.setHorizontalHeaderLabels(["stage", "last ms", "median ms"])
        self.stages.verticalHeader().hide()
        self.stages.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.stages.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.NoSelection)
        self.stages.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.stages.verticalHeader().setDefaultSectionSize(18)
        self.stages.horizontalHeader().setFixedHeight(20)
        for i, name in enumerate(list(STAGES) + ["total"]):
            self.stages.setItem(i, 0, QtWidgets.QTableWidgetItem(name))
            for c in (1, 2):
                it = QtWidgets.QTableWidgetItem("")
                it.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
                self.stages.setItem(i, c, it)
        self.stages.setFixedHeight(20 + 18 * (len(STAGES) + 1) + 4)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(6, 4, 6, 4)
        lay.setSpacing(4)
        lay.addLayout(form)
        lay.addWidget(self.stages)
        lay.addStretch(1)
        self.last: dict = {}
        self.mesh_info: dict = {}

    @staticmethod
    def _fmt(x: float | None, unit: str = "", digits: int = 1) -> str:
        return "–" if x is None else f"{x:.{digits}f}{unit}"

    def update_stats(self, st: dict) -> None:
        """Show a stats dict from the worker."""
        self.last = st
        v = self.values
        v["fps"].setText(f"{self._fmt(st.get('fused_fps'))} fused/s, {self._fmt(st.get('display_fps'))} shown/s"
                         + (f" ({st['frame_ms_median']:.0f} ms/frame)" if st.get("frame_ms_median") else ""))
        if "frames_in" in st:
            v["frames"].setText(f"{st['frames_fused']} fused of {st['frames_in']} in")
            sk = st.get("skipped") or {}
            parts = [f"{n} {k}" for k, n in sorted(sk.items())]
            if st.get("dropped"):
                parts.append(f"{st['dropped']} dropped (real time)")
            v["skipped"].setText(", ".join(parts) if parts else "none")
            kf = st.get("keyframes")
            v["nodes"].setText(f"{st.get('nodes', '–')} nodes, valid keyframes {'–' if kf is None else kf}")
            vol = st.get("volume") or {}
            if vol:
                mb = vol.get("bytes", vol.get("nbytes", 0)) / 2**20 if isinstance(vol, dict) else 0
                blocks = vol.get("blocks", vol.get("num_blocks"))
                v["volume"].setText(f"{blocks} blocks, {mb:.0f} MiB" if blocks is not None else f"{mb:.0f} MiB")
            kept = st.get("kept") or {}
            extra = ""
            if kept:
                n = kept.get("neural", 0) + kept.get("classical", 0)
                extra = f"; neural motion kept on {kept.get('neural', 0)} of {n} frames"
            v["tracker"].setText(f"{st.get('tracker', '–')} on {st.get('device') or '–'}{extra}")
        else:
            for key in ("frames", "skipped", "nodes", "volume", "tracker"):
                v[key].setText("–")
            if st.get("dropped"):
                v["skipped"].setText(f"{st['dropped']} dropped (real time)")
        last = (st.get("last") or {}).get("stage_ms", {})
        med = st.get("stage_ms_median") or {}
        for i, name in enumerate(STAGES):
            self.stages.item(i, 1).setText(self._fmt(last.get(name)))
            self.stages.item(i, 2).setText(self._fmt(med.get(name)))
        self.stages.item(len(STAGES), 1).setText(self._fmt(sum(last.values()) if last else None))
        self.stages.item(len(STAGES), 2).setText(self._fmt(st.get("frame_ms_median")))

    def update_mesh(self, payload: dict) -> None:
        """Mesh sizes and extraction time from a mesh payload."""
        if payload.get("empty"):
            self.values["mesh"].setText("–")
            return
        c, lv = payload.get("canonical") or {}, payload.get("live") or {}
        nv = len(c.get("vertices", ()))
        nf = len(c.get("faces", ()))
        self.values["mesh"].setText(f"{nv:,} vertices, {nf:,} faces ({payload.get('extract_ms', 0):.0f} ms)")
        self.mesh_info = {"vertices": nv, "faces": nf, "live_vertices": len(lv.get("vertices", ()))}


class LogPane(QtWidgets.QWidget):
    """Time-stamped messages; warnings orange, errors red. `append(level, text)`."""

    COLORS = {"info": "#c8ccd0", "warning": "#f0a040", "error": "#ff6060", "debug": "#808890"}

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.text = QtWidgets.QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(5000)
        f = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.FixedFont)
        f.setPointSize(max(8, f.pointSize() - 1))
        self.text.setFont(f)
        self.clear_btn = QtWidgets.QToolButton(text="Clear")
        self.save_btn = QtWidgets.QToolButton(text="Save…")
        self.clear_btn.clicked.connect(self.clear)
        self.save_btn.clicked.connect(self._save_dialog)
        bar = QtWidgets.QVBoxLayout()
        bar.addWidget(self.clear_btn)
        bar.addWidget(self.save_btn)
        bar.addStretch(1)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.text, 1)
        lay.addLayout(bar)
        self.entries: list[tuple[str, str]] = []

    def append(self, level: str, text: str) -> None:
        """Add one message (level: info | warning | error | debug)."""
        self.entries.append((level, text))
        stamp = time.strftime("%H:%M:%S")
        first, *rest = str(text).splitlines() or [""]
        color = self.COLORS.get(level, "#c8ccd0")
        tag = "" if level == "info" else f"{level.upper()}: "
        self.text.appendHtml(f'<span style="color:#707880">{stamp}</span> '
                             f'<span style="color:{color}">{html.escape(tag + first)}</span>')
        for line in rest:
            self.text.appendHtml(f'<span style="color:#808890">&nbsp;&nbsp;{html.escape(line)}</span>')

    def clear(self) -> None:
        """Remove every message."""
        self.entries.clear()
        self.text.clear()

    def _save_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save log", "nrstudio.log", "Text (*.log *.txt)")
        if path:
            from fusion.atomic import write_text_atomic

            write_text_atomic(Path(path), self.text.toPlainText() + "\n")
