"""Playback controls for recordings, in the manner of the RealSense Viewer's: to start, step back,
play / pause, step forward, a seek slider with frame number and time, loop, speed, real time or as fast
as possible. Live streams show only play / pause.
"""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0)


class TransportBar(QtWidgets.QWidget):
    """The transport row. Emits requests; `set_source` / `set_position` / `set_playing` show the state.

    Signals: playRequested(bool) (True = play), stepRequested(int) (+1 / -1), seekRequested(int frame),
    loopChanged(bool), speedChanged(float), realtimeChanged(bool).
    """

    playRequested = QtCore.Signal(bool)
    stepRequested = QtCore.Signal(int)
    seekRequested = QtCore.Signal(int)
    loopChanged = QtCore.Signal(bool)
    speedChanged = QtCore.Signal(float)
    realtimeChanged = QtCore.Signal(bool)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        st = self.style()
        sp = QtWidgets.QStyle.StandardPixmap

        def tool(icon: QtWidgets.QStyle.StandardPixmap, tip: str) -> QtWidgets.QToolButton:
            b = QtWidgets.QToolButton()
            b.setIcon(st.standardIcon(icon))
            b.setToolTip(tip)
            b.setAutoRaise(True)
            b.setIconSize(QtCore.QSize(20, 20))
            return b

        self.start_btn = tool(sp.SP_MediaSkipBackward, "To the first frame")
        self.back_btn = tool(sp.SP_MediaSeekBackward, "Step one frame back")
        self.play_btn = tool(sp.SP_MediaPlay, "Play / pause (Space)")
        self.play_btn.setCheckable(True)
        self.fwd_btn = tool(sp.SP_MediaSeekForward, "Step one frame forward")
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setTracking(False)
        self.slider.setToolTip("Seek: drag and release")
        self.pos_label = QtWidgets.QLabel("no source")
        self.pos_label.setMinimumWidth(210)
        self.pos_label.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
        f = self.pos_label.font()
        f.setFamily("monospace")
        f.setStyleHint(f.StyleHint.TypeWriter)
        self.pos_label.setFont(f)
        self.loop_box = QtWidgets.QCheckBox("Loop")
        self.speed = QtWidgets.QComboBox()
        for s in SPEEDS:
            self.speed.addItem(f"{s:g}x", s)
        self.speed.setCurrentIndex(SPEEDS.index(1.0))
        self.speed.setToolTip("Playback speed (real time only)")
        self.realtime_box = QtWidgets.QCheckBox("Real time")
        self.realtime_box.setToolTip("Checked: play at the recording's pace; when fusion is slower, frames that "
                                     "fall behind are dropped while newer ones wait.\nUnchecked: as fast as "
                                     "possible, every frame.")
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(6, 2, 6, 2)
        for w in (self.start_btn, self.back_btn, self.play_btn, self.fwd_btn):
            lay.addWidget(w)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.pos_label)
        lay.addSpacing(8)
        lay.addWidget(self.loop_box)
        lay.addWidget(self.realtime_box)
        lay.addWidget(self.speed)

        self.play_btn.toggled.connect(self._play_toggled)
        self.fwd_btn.clicked.connect(lambda: self.stepRequested.emit(1))
        self.back_btn.clicked.connect(lambda: self.stepRequested.emit(-1))
        self.start_btn.clicked.connect(lambda: self.seekRequested.emit(0))
        self.slider.valueChanged.connect(self._slider_released)
        self.slider.sliderMoved.connect(self._slider_moved)
        self.loop_box.toggled.connect(self.loopChanged)
        self.realtime_box.toggled.connect(self._realtime_toggled)
        self.speed.currentIndexChanged.connect(lambda i: self.speedChanged.emit(float(self.speed.itemData(i))))
        self.speed.setEnabled(False)
        self._timestamps: list[float] | None = None
        self._length: int | None = None
        self._live = False
        self._fps: float | None = None
        self.set_source(None)

    # ---------------------------------------------------------------- state from the worker
    def set_source(self, info: dict | None) -> None:
        """A newly opened source (the worker's `sourceOpened` dict) or None."""
        self._length = info.get("length") if info else None
        self._timestamps = info.get("timestamps") if info else None
        self._live = bool(info and info.get("is_live"))
        self._fps = info.get("fps") if info else None
        seekable = bool(info) and not self._live and bool(self._length)
        for w in (self.start_btn, self.back_btn, self.slider, self.loop_box):
            w.setEnabled(seekable)
        for w in (self.play_btn, self.fwd_btn):
            w.setEnabled(bool(info))
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(0, (self._length or 1) - 1))
        self.slider.setValue(0)
        self.slider.blockSignals(False)
        self.pos_label.setText(self._label(0) if info else "no source")

    def _time_of(self, index: int) -> float | None:
        if self._timestamps and 0 <= index < len(self._timestamps):
            return self._timestamps[index]
        if self._fps:
            return index / self._fps
        return None

    def _label(self, index: int, t: float | None = None) -> str:
        t = self._time_of(index) if t is None else t
        if self._live:
            return f"frame {index:5d}  live" + (f"  {t:7.2f} s" if t is not None else "")
        n = self._length or 0
        total = self._time_of(n - 1) if n else None
        ts = f"  {t:6.2f} / {total:.2f} s" if t is not None and total is not None else ""
        return f"frame {index + 1:4d} / {n}{ts}"

    def set_position(self, index: int, timestamp_s: float | None = None) -> None:
        """The frame just shown (0-based)."""
        if not self.slider.isSliderDown():
            self.slider.blockSignals(True)
            self.slider.setValue(max(0, index))
            self.slider.blockSignals(False)
        self.pos_label.setText(self._label(max(0, index), timestamp_s))

    def set_playing(self, playing: bool) -> None:
        """Reflect the worker's play state on the play button."""
        self.play_btn.blockSignals(True)
        self.play_btn.setChecked(playing)
        self.play_btn.blockSignals(False)
        sp = QtWidgets.QStyle.StandardPixmap
        self.play_btn.setIcon(self.style().standardIcon(sp.SP_MediaPause if playing else sp.SP_MediaPlay))

    # ---------------------------------------------------------------- user
    def _play_toggled(self, on: bool) -> None:
        self.set_playing(on)
        self.playRequested.emit(on)

    def _slider_moved(self, v: int) -> None:
        self.pos_label.setText(self._label(v))

    def _slider_released(self, v: int) -> None:
        self.seekRequested.emit(int(v))

    def _realtime_toggled(self, on: bool) -> None:
        self.speed.setEnabled(on)
        self.realtimeChanged.emit(on)
