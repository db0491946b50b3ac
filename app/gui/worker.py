"""The app's background machinery: `FramePump` (the frame source on its own daemon thread) and
`PipelineWorker` (a QObject living in a QThread: playback clock, fusion loop, meshes, captures, exports).

Threads and who may block:
- UI thread: sends commands to the worker through a queued signal (`command(name, payload)`) and only
  receives plain-data signals back. It never waits on the worker (closing the window is the one bounded
  wait, `WorkerHost.shutdown`).
- Worker thread: runs a 10 ms timer; each tick handles at most one frame (display, fuse, mesh, capture)
  and is otherwise free to handle the next command. It never calls the source itself.
- Pump thread (daemon): opens the source (`fusion.sources.open_source`: the RealSense SDK), reads a few
  frames ahead and seeks. A stalled SDK call blocks only this thread: the worker notices the silence
  (`stall_s`), logs it and keeps the window responsive; StallError / DeviceError from the source arrive
  as an "error" item and stop playback with a message, with the fused model kept (exportable).
"""
from __future__ import annotations

import collections
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtCore

from app.gui.settings import ReconSettings, cuda_available, make_estimator, tracker_availability
from fusion.errors import InputError, NRStudioError


@dataclass
class PumpItem:
    """One message from the pump: kind is "opened" | "frame" | "end" | "error"; gen: the seek generation it
    belongs to; value: info dict, RGBDFrame, None or the exception."""

    kind: str
    gen: int
    value: Any


def describe_source(src: Any, spec: str) -> dict:
    """Plain-data facts about an opened source (name, length, fps, intrinsics, timestamps, sidecar)."""
    from fusion.synthetic.groundtruth import groundtruth_path

    k = src.intrinsics
    info: dict[str, Any] = {
        "spec": spec, "name": getattr(src, "name", spec), "length": src.length, "fps": src.fps,
        "is_live": bool(src.is_live), "width": int(k.width), "height": int(k.height),
        "intrinsics": k.as_dict(), "timestamps": None, "groundtruth": None,
    }
    ts = getattr(src, "timestamps", None)
    if ts is not None:
        info["timestamps"] = [float(t) for t in ts]
    p = Path(spec)
    if not src.is_live and p.suffix and p.exists():
        gt = groundtruth_path(p)
        if gt.is_file():
            info["groundtruth"] = str(gt)
    return info


class FramePump:
    """Owns a `FrameSource` on a daemon thread: opens it, reads up to `read_ahead` frames ahead, seeks.

    Every call from other threads returns at once. Items come out through `peek` / `pop` (worker thread);
    items of an older seek generation than `gen` are stale and dropped by `peek`.
    """

    def __init__(self, spec: str, options: dict | None = None, read_ahead: int = 3) -> None:
        self.spec = str(spec)
        self.options = dict(options or {})
        self.read_ahead = max(1, int(read_ahead))
        self.gen = 0
        self._items: collections.deque[PumpItem] = collections.deque()
        self._lock = threading.Lock()
        self._cmds: collections.deque[tuple] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.last_delivery = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="nrstudio-frame-pump", daemon=True)

    # ---------------------------------------------------------------- any thread
    def start(self) -> None:
        """Start the pump thread (opens the source there)."""
        self.thread.start()

    def seek(self, index: int) -> int:
        """Ask for frame `index` next; returns the new generation (items of older ones are dropped)."""
        with self._lock:
            self.gen += 1
            g = self.gen
            self._cmds.append(("seek", int(index), g))
        self._wake.set()
        return g

    def resume(self) -> None:
        """After an error: try reading again (a recording restarts its SDK session from the next frame)."""
        with self._lock:
            self._cmds.append(("resume", None, self.gen))
        self._wake.set()

    def stop(self) -> None:
        """Ask the pump to close the source and end; returns at once (the thread is a daemon)."""
        self._stop.set()
        self._wake.set()

    @property
    def stopped(self) -> bool:
        """True once `stop` was called."""
        return self._stop.is_set()

    # ---------------------------------------------------------------- consumer (worker thread)
    def peek(self) -> PumpItem | None:
        """The first current item without removing it (stale items are discarded), or None."""
        with self._lock:
            while self._items and self._stale(self._items[0]):
                self._items.popleft()
            return self._items[0] if self._items else None

    def pop(self) -> PumpItem | None:
        """Remove and return the first current item (None if there is none)."""
        with self._lock:
            while self._items and self._stale(self._items[0]):
                self._items.popleft()
            item = self._items.popleft() if self._items else None
        self._wake.set()
        return item

    def _stale(self, it: PumpItem) -> bool:
        return it.gen != self.gen and it.kind != "opened"

    def queued_frames(self) -> int:
        """Current-generation frames waiting."""
        with self._lock:
            return sum(1 for it in self._items if it.gen == self.gen and it.kind == "frame")

    # ---------------------------------------------------------------- pump thread
    def _emit(self, kind: str, gen: int, value: Any) -> None:
        with self._lock:
            self._items.append(PumpItem(kind, gen, value))
        self.last_delivery = time.monotonic()

    def _run(self) -> None:
        from fusion.sources import open_source

        gen = 0
        try:
            src = open_source(self.spec, **self.options)
            info = describe_source(src, self.spec)
        except BaseException as e:  # reported to the worker; the pump ends
            self._emit("error", gen, e)
            return
        self._emit("opened", gen, info)
        idle = False  # at the end or after an error: wait for a command
        try:
            while not self._stop.is_set():
                cmd = None
                with self._lock:
                    if self._cmds:
                        cmd = self._cmds.popleft()
                if cmd is not None:
                    kind, arg, g = cmd
                    gen = g
                    if kind == "seek":
                        try:
                            src.seek(arg)
                            idle = False
                        except Exception as e:
                            self._emit("error", gen, e)
                            idle = True
                    elif kind == "resume":
                        idle = False
                    continue
                with self._lock:
                    backlog = sum(1 for it in self._items if it.gen == gen)
                if idle or backlog >= self.read_ahead:
                    self._wake.wait(0.05)
                    self._wake.clear()
                    continue
                try:
                    f = src.next_frame()
                except Exception as e:  # StallError, DeviceError (unplugged), InputError (corrupt) ...
                    self._emit("error", gen, e)
                    idle = True
                    continue
                if f is None:
                    self._emit("end", gen, None)
                    idle = True
                else:
                    self._emit("frame", gen, f)
        finally:
            try:
                src.close()
            except Exception:
                pass


def _error_text(e: BaseException) -> str:
    """A one-line message for an exception (user errors as they are, bugs with their type)."""
    if isinstance(e, NRStudioError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def mesh_payload(mesh: Any) -> dict:
    """A fusion.meshing.TriMesh as plain arrays (vertices float32 [V,3], faces int32 [F,3], normals, colors)."""
    return {"vertices": mesh.vertices, "faces": mesh.faces, "normals": mesh.normals, "colors": mesh.colors}


class PipelineWorker(QtCore.QObject):
    """Playback clock + fusion loop + meshes / captures / exports, in a QThread (see the module docstring).

    Commands (slot `command(name, payload)`): open {spec, options}, play {frames: pause after this many},
    pause, step {delta}, seek {index},
    set_loop {on}, set_speed {speed}, set_realtime {on}, set_depth_range {range: (near, far) | None}, start {settings: ReconSettings}, stop, reset,
    capture {every, times}, cancel_series, export {which, path, cancel: threading.Event}, list_devices,
    set_mesh_period {seconds}.

    `overlayReady` carries the tracker's overlay of the last fused frame (trackers with a `last_overlay`
    attribute: the neural one), at most every `overlay_period_s` while playing (always after the last frame
    of a run): {"available": False} for trackers without overlays; {"available": True, "empty": True} when
    the frame had none; else tracker.neural.TrackerOverlay.as_dict() (a few hundred correspondences, the
    weight map at the network's resolution) plus "heatmap_rgba" uint8 [h', w', 4] colored here, off the UI
    thread.
    """

    sourceOpened = QtCore.Signal(dict)
    frameReady = QtCore.Signal(dict)
    meshReady = QtCore.Signal(dict)
    statsReady = QtCore.Signal(dict)
    stateChanged = QtCore.Signal(dict)
    logMessage = QtCore.Signal(str, str)
    errorRaised = QtCore.Signal(str, str)
    captureReady = QtCore.Signal(object)
    seriesFinished = QtCore.Signal()
    exportProgress = QtCore.Signal(int, int, str)
    exportFinished = QtCore.Signal(dict)
    capabilities = QtCore.Signal(dict)
    devicesListed = QtCore.Signal(list)
    overlayReady = QtCore.Signal(dict)

    def __init__(self, stall_s: float = 3.0, mesh_period_s: float = 0.4, overlay_period_s: float = 0.2) -> None:
        super().__init__()
        self.stall_s = float(stall_s)
        self.mesh_period_s = float(mesh_period_s)
        self.overlay_period_s = float(overlay_period_s)
        self._last_overlay_t = 0.0
        self._overlay_dirty = False
        self._stop = threading.Event()
        self.pump: FramePump | None = None
        self.retired_pumps: list[FramePump] = []  # stopped pumps whose threads may still be closing a source
        self.info: dict | None = None
        self.playing = False
        self.loop = False
        self.realtime = False
        self.speed = 1.0
        self.depth_range: tuple[float, float] | None = None  # depth colormap range (None: per-frame automatic)
        self.fusing = False
        self.pipeline = None
        self.settings: ReconSettings | None = None
        self._estimator_name = ""
        self._step = 0
        self._preview = False
        self._clock: tuple[float, float] | None = None  # (wall time, frame timestamp) of the clock origin
        self._waiting_since: float | None = None
        self._stall_logged = False
        self._last_mesh_t = 0.0
        self._mesh_dirty = False
        self._fused_walls: collections.deque[float] = collections.deque(maxlen=12)
        self._shown_walls: collections.deque[float] = collections.deque(maxlen=12)
        self._dropped = 0
        self._kept: collections.Counter[str] = collections.Counter()  # neural tracker: whose motion was kept
        self._last_result = None
        self._last_frame = None
        self._position = -1
        self._at_end = False
        self._series: list[int] | None = None  # [every, remaining, fused since start]
        self._timer: QtCore.QTimer | None = None
        self._first_fused_index: int | None = None
        self._budget = 0  # frames left to play before pausing (0 = no limit)
        self._pipeline_source: str | None = None

    # ---------------------------------------------------------------- lifecycle
    @QtCore.Slot()
    def setup(self) -> None:
        """Runs in the worker thread once it starts: the tick timer, then the capability probe."""
        self._timer = QtCore.QTimer(self)
        self._timer.setInterval(10)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        QtCore.QTimer.singleShot(0, self._probe)

    def _probe(self) -> None:
        if self._stop.is_set():
            return
        caps = {"trackers": tracker_availability(), "cuda": cuda_available()}
        self.capabilities.emit(caps)

    def request_stop(self) -> None:
        """Thread-safe, returns at once: end the tick loop and let the pump go (called by the UI thread)."""
        self._stop.set()
        if self.pump is not None:
            self.pump.stop()

    @QtCore.Slot()
    def finish(self) -> None:
        """Worker-thread cleanup before the thread quits: the timer dies in its own thread, and the worker
        moves back to the main thread so that it can be destroyed there."""
        if self._timer is not None:
            self._timer.stop()
            self._timer.setParent(None)
            self._timer = None
        if self.pump is not None:
            self.pump.stop()
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            self.moveToThread(app.thread())
        QtCore.QThread.currentThread().quit()

    # ---------------------------------------------------------------- commands
    @QtCore.Slot(str, object)
    def command(self, name: str, payload: Any = None) -> None:
        """Dispatch one command from the UI (see the class docstring). Errors become messages, never crashes."""
        if self._stop.is_set():
            return
        p = payload or {}
        try:
            handler = getattr(self, f"_cmd_{name}")
        except AttributeError:
            self.logMessage.emit("error", f"internal: unknown worker command {name!r}")
            return
        try:
            handler(p)
        except Exception as e:  # a bug in a handler: log it with its traceback, keep running
            self.logMessage.emit("error", f"{name} failed: {_error_text(e)}\n{traceback.format_exc(limit=4)}")
            self.errorRaised.emit(name.capitalize(), _error_text(e))

    def _retire_pump(self) -> None:
        if self.pump is not None:
            self.pump.stop()
            self.retired_pumps.append(self.pump)
        self.pump = None

    def _cmd_open(self, p: dict) -> None:
        self._retire_pump()
        self.info = None
        self.playing = False
        self._step = 0
        self._at_end = False
        self._position = -1
        self._clock = None
        spec = str(p["spec"])
        if self.fusing:
            self.fusing = False
            self.logMessage.emit("info", "reconstruction paused: a new source is being opened (the model is kept "
                                         "until Start or Reset)")
        self.logMessage.emit("info", f"opening {spec} …")
        self.pump = FramePump(spec, p.get("options"))
        self.pump.start()
        self._waiting_since = time.monotonic()
        self._stall_logged = False
        self._preview = True
        self._emit_state()

    def _cmd_close_source(self, p: dict) -> None:
        self._retire_pump()
        self.info = None
        self.playing = False
        self._emit_state()

    def _cmd_play(self, p: dict) -> None:
        if self.pump is None:
            return
        if self._at_end:
            self._seek(0)
        self.playing = True
        self._budget = max(0, int(p.get("frames") or 0))
        self._clock = None
        self._waiting_since = time.monotonic()
        self.pump.resume()
        self._emit_state()

    def _cmd_pause(self, p: dict) -> None:
        self.playing = False
        self._emit_state()
        self._maybe_mesh(force=True)
        self._maybe_overlay(force=True)

    def _cmd_step(self, p: dict) -> None:
        if self.pump is None:
            return
        delta = int(p.get("delta", 1))
        self.playing = False
        if delta < 0:
            if self.info and not self.info.get("is_live"):
                self._seek(max(0, self._position + delta))
        else:
            if self._at_end:
                return
            self._step += 1
            self.pump.resume()
        self._waiting_since = time.monotonic()
        self._emit_state()

    def _cmd_seek(self, p: dict) -> None:
        if self.pump is None or self.info is None or self.info.get("is_live"):
            return
        self._seek(int(p["index"]))
        if self.fusing and self.pipeline is not None:
            self.logMessage.emit("warning", f"seek to frame {p['index']} while fusing: tracking continues from there")

    def _seek(self, index: int) -> None:
        n = self.info.get("length") if self.info else None
        if n:
            index = int(np.clip(index, 0, n - 1))
        self.pump.seek(index)
        self._at_end = False
        self._clock = None
        self._step = 0
        self._preview = not self.playing
        self._waiting_since = time.monotonic()

    def _cmd_set_loop(self, p: dict) -> None:
        self.loop = bool(p.get("on", True))

    def _cmd_set_speed(self, p: dict) -> None:
        self.speed = max(0.01, float(p.get("speed", 1.0)))
        self._clock = None

    def _cmd_set_realtime(self, p: dict) -> None:
        self.realtime = bool(p.get("on", True))
        self._clock = None

    def _cmd_set_depth_range(self, p: dict) -> None:
        rng = p.get("range")
        self.depth_range = None if rng is None else (float(rng[0]), float(rng[1]))

    def _cmd_set_mesh_period(self, p: dict) -> None:
        self.mesh_period_s = max(0.0, float(p.get("seconds", 0.4)))

    def _cmd_start(self, p: dict) -> None:
        settings = p.get("settings") or ReconSettings()
        spec = self.info.get("spec") if self.info else None
        if self.pipeline is not None and self._pipeline_source != spec:
            self.logMessage.emit("info", "a new source: the previous model is replaced")
            self.pipeline = None
        if self.pipeline is not None and self.settings is not None and settings != self.settings:
            self.logMessage.emit("info", "resuming the existing model with its settings (Reset to apply new ones)")
            settings = self.settings
        if self.pipeline is None:
            try:
                self._make_pipeline(settings)
            except (InputError, NRStudioError) as e:
                self.logMessage.emit("error", f"cannot start the reconstruction: {e}")
                self.errorRaised.emit("Cannot start the reconstruction", str(e))
                return
        self.fusing = True
        if (self.pump is not None and self.info and not self.info.get("is_live") and self.pipeline.frames_in == 0
                and self._position >= 0 and not self.playing):
            self._seek(self._position)  # fuse from the frame on screen (it was only previewed)
            self._preview = False
        self.logMessage.emit("info", f"reconstruction started: tracker {self._estimator_name}, voxel "
                                     f"{1000 * self.settings.voxel_size:g} mm, processing "
                                     f"{'x'.join(map(str, self.settings.processing_size)) if self.settings.processing_size else 'as recorded'}")
        if self.pump is not None and not p.get("paused"):
            self._cmd_play({})
        self._emit_state()
        self._emit_stats()

    def _make_pipeline(self, settings: ReconSettings) -> None:
        from fusion.pipeline import FusionPipeline

        gt = self.info.get("groundtruth") if self.info else None
        est = make_estimator(settings, gt)
        self.pipeline = FusionPipeline(settings.fusion_config(), est)
        self._pipeline_source = self.info.get("spec") if self.info else None
        self.settings = settings
        self._estimator_name = getattr(est, "name", type(est).__name__)
        self._overlay_dirty = False
        self.overlayReady.emit({"available": hasattr(est, "last_overlay"), "empty": True})
        self._first_fused_index = None
        self._dropped = 0
        self._kept.clear()
        self._fused_walls.clear()

    def _cmd_stop(self, p: dict) -> None:
        was = self.fusing
        self.fusing = False
        self.playing = False
        self._series = None
        if was:
            self.logMessage.emit("info", "reconstruction stopped (the model is kept: export, capture or Start to resume)")
        self._emit_state()
        self._maybe_mesh(force=True)
        self._maybe_overlay(force=True)

    def _cmd_reset(self, p: dict) -> None:
        self.fusing = False
        self.pipeline = None
        self.settings = None
        self._series = None
        self._last_result = None
        self._dropped = 0
        self._kept.clear()
        self._overlay_dirty = False
        self.meshReady.emit({"empty": True})
        self.overlayReady.emit({"available": False})
        self.logMessage.emit("info", "reconstruction reset: the model was discarded")
        self._emit_state()
        self._emit_stats()

    def _cmd_capture(self, p: dict) -> None:
        every, times = int(p.get("every", 0)), int(p.get("times", 1))
        if every <= 0:
            self._capture_now()
            return
        if self.pipeline is None:
            self.errorRaised.emit("Capture", "start the reconstruction before capturing")
            self.seriesFinished.emit()
            return
        self._series = [every, max(1, times), 0]
        self.logMessage.emit("info", f"capture series: every {every} fused frames, {times} times")

    def _cmd_cancel_series(self, p: dict) -> None:
        if self._series is not None:
            self.logMessage.emit("info", "capture series cancelled")
        self._series = None
        self.seriesFinished.emit()

    def _capture_now(self) -> bool:
        from app.gui.captures import capture_from_pipeline

        f = self._last_frame
        try:
            if self.pipeline is None:
                raise InputError("nothing has been fused yet: start the reconstruction before capturing")
            k = None
            if self.pipeline.volume is not None and f is not None:
                size = self.settings.processing_size if self.settings else None
                k = f.intrinsics.scaled(*size) if size else f.intrinsics
            idx = self._last_result.index if self._last_result is not None else -1
            ts = f.timestamp_s if f is not None else 0.0
            cap = capture_from_pipeline(self.pipeline, idx, ts, name=f"frame {idx + 1}",
                                        source=self.info.get("spec", "") if self.info else "", intrinsics=k)
        except InputError as e:
            self.errorRaised.emit("Capture", str(e))
            self.logMessage.emit("warning", f"capture: {e}")
            return False
        self.captureReady.emit(cap)
        self.logMessage.emit("info", f"captured {cap.num_points:,} points at frame {cap.frame_index + 1}")
        return True

    def _cmd_export(self, p: dict) -> None:
        from fusion.export import save_mesh

        which = p.get("which", "canonical")
        path = Path(p["path"])
        cancel: threading.Event = p.get("cancel") or threading.Event()
        fmt = str(p.get("fmt", path.suffix.lstrip(".") or "ply")).lower()
        try:
            if self.pipeline is None or self.pipeline.volume is None:
                raise InputError("nothing has been fused yet: start the reconstruction first")
            if which in ("canonical", "live"):
                self.exportProgress.emit(0, 1, f"extracting the {which} mesh …")
                mesh = self.pipeline.export(path, which)
                self.exportProgress.emit(1, 1, "done")
                self.exportFinished.emit({"ok": True, "paths": [str(path)], "message":
                                          f"{which} mesh: {mesh.num_vertices:,} vertices, {mesh.num_faces:,} faces -> {path}"})
            elif which == "sequence":
                seq = self.pipeline.sequence
                if seq is None or len(seq) == 0:
                    raise InputError("no warped sequence was recorded: set 'Warped sequence after' (frames) in the "
                                     "reconstruction controls, Reset and fuse again")
                path.mkdir(parents=True, exist_ok=True)
                paths: list[str] = []
                n = len(seq)
                for i in range(n):
                    if cancel.is_set():
                        self.exportFinished.emit({"ok": False, "cancelled": True, "paths": paths,
                                                  "message": f"sequence export cancelled after {len(paths)} of {n} files"})
                        return
                    idx = seq.frames[i][0]
                    out = path / f"frame_{idx:06d}.{fmt}"
                    save_mesh(out, seq.mesh(i))
                    paths.append(str(out))
                    self.exportProgress.emit(i + 1, n, out.name)
                self.exportFinished.emit({"ok": True, "paths": paths,
                                          "message": f"warped sequence: {n} meshes ({seq.canonical.num_vertices:,} "
                                                     f"vertices each) -> {path}"})
            else:
                raise InputError(f"unknown export kind {which!r}")
        except (InputError, OSError) as e:
            self.exportFinished.emit({"ok": False, "paths": [], "message": str(e)})

    def _cmd_list_devices(self, p: dict) -> None:
        # the SDK can hang: ask it on a daemon thread, the answer comes back as a signal
        def probe() -> None:
            try:
                from fusion.sources.live import list_devices

                devs = list_devices()
            except Exception as e:
                devs = []
                self.logMessage.emit("warning", f"cannot list RealSense devices: {_error_text(e)}")
            self.devicesListed.emit(devs)

        threading.Thread(target=probe, name="nrstudio-list-devices", daemon=True).start()

    # ---------------------------------------------------------------- the tick
    def _tick(self) -> None:
        if self._stop.is_set() or self.pump is None:
            return
        item = self.pump.peek()
        now = time.monotonic()
        want = self.playing or self._step > 0 or self._preview
        if item is None:
            if want and self._waiting_since is not None and not self._stall_logged:
                if now - max(self._waiting_since, self.pump.last_delivery) > self.stall_s:
                    self._stall_logged = True
                    self.logMessage.emit("warning", f"no frame from {self.pump.spec} for {self.stall_s:g} s "
                                                    "(the SDK is slow or stalled; the window stays usable)")
            return
        self._stall_logged = False
        if item.kind == "opened":
            self.pump.pop()
            self._on_opened(item.value)
            return
        if item.kind == "error":
            self.pump.pop()
            self._on_source_error(item.value)
            return
        if item.kind == "end":
            if not want:
                return
            self.pump.pop()
            self._on_end()
            return
        if not want:
            return
        frame = item.value
        if self.playing and self.realtime and self._step == 0 and not self._preview:
            if self._clock is None:
                self._clock = (now, frame.timestamp_s)
            due = self._clock[0] + (frame.timestamp_s - self._clock[1]) / self.speed
            if now < due:
                return
            if now - due > 0.25 and self.pump.queued_frames() > 1:
                self.pump.pop()
                self._dropped += 1
                self._position = frame.index
                return
        self.pump.pop()
        self._handle_frame(frame)
        self._waiting_since = time.monotonic()

    def _on_opened(self, info: dict) -> None:
        self.info = info
        n = info.get("length")
        self.logMessage.emit("info", f"opened {info['name']}: {info['width']}x{info['height']}"
                                     + (f", {n} frames" if n else ", live") + (f" @ {info['fps']:g} fps" if info.get("fps") else "")
                                     + (" (ground truth available)" if info.get("groundtruth") else ""))
        self.sourceOpened.emit(info)
        self._emit_state()

    def _on_source_error(self, e: BaseException) -> None:
        self.playing = False
        self._step = 0
        self._preview = False
        opening = self.info is None
        what = "Cannot open the source" if opening else "The source stopped delivering frames"
        text = _error_text(e)
        if not opening and self.pipeline is not None and self.pipeline.volume is not None:
            text += "\n\nWhat was fused so far is kept: you can export it or capture it."
        self.logMessage.emit("error", f"{what}: {_error_text(e)}")
        self.errorRaised.emit(what, text)
        if opening:
            self._retire_pump()
        self._emit_state()
        self._maybe_mesh(force=True)

    def _on_end(self) -> None:
        if self.loop and self.info and self.info.get("length") and self.playing:
            self._seek(0)
            self._preview = False
            return
        was_playing = self.playing
        self.playing = False
        self._step = 0
        self._preview = False
        self._at_end = True
        if was_playing:
            self.logMessage.emit("info", "end of the recording")
        self._emit_state()
        self._maybe_mesh(force=True)
        self._maybe_overlay(force=True)

    def _handle_frame(self, frame: Any) -> None:
        self._preview = False
        if self._step > 0:
            self._step -= 1
        self._last_frame = frame
        self._position = int(frame.index)
        self._at_end = False
        self._shown_walls.append(time.monotonic())
        from app.gui.views import auto_depth_range, colorize_depth

        rng = self.depth_range or auto_depth_range(frame.depth) or (0.3, 1.5)
        self.frameReady.emit({"index": int(frame.index), "timestamp_s": float(frame.timestamp_s),
                              "color": frame.color, "depth": frame.depth, "intrinsics": frame.intrinsics.as_dict(),
                              "depth_rgb": colorize_depth(frame.depth, *rng), "depth_range": rng,
                              "valid_fraction": float((frame.depth > 0).mean()),
                              "length": self.info.get("length") if self.info else None})
        if self.fusing and self.pipeline is not None:
            self._fuse(frame)
        if self.playing and self._budget > 0:
            self._budget -= 1
            if self._budget == 0:
                self.playing = False
        self._emit_state()
        self._emit_stats()
        self._maybe_mesh(force=not self.playing)
        self._maybe_overlay(force=not self.playing)

    def _fuse(self, frame: Any) -> None:
        pipe = self.pipeline
        try:
            res = pipe.process(frame)
        except InputError as e:  # the volume would not fit in memory (or no valid depth to start from)
            self.fusing = False
            self.playing = False
            if pipe.volume is None:
                self.pipeline = None  # nothing fused: new settings may be tried
            self.logMessage.emit("error", f"reconstruction stopped: {e}")
            self.errorRaised.emit("Reconstruction stopped", str(e) + (
                "" if self.pipeline is None else "\n\nWhat was fused so far is kept and can be exported."))
            self._emit_state()
            return
        except Exception as e:  # a bug in fusion / tracker code: stop fusing, keep the app and the model
            self.fusing = False
            self.playing = False
            self.logMessage.emit("error", f"reconstruction failed at frame {frame.index}: {_error_text(e)}\n"
                                          f"{traceback.format_exc(limit=6)}")
            self.errorRaised.emit("Reconstruction failed", f"frame {frame.index}: {_error_text(e)}")
            self._emit_state()
            return
        self._last_result = res
        self._overlay_dirty = hasattr(pipe.estimator, "last_overlay")
        if res.ok and isinstance(res.tracker_stats, dict):
            self._kept[kept_motion(res.tracker_stats)] += 1
        if res.ok:
            self._fused_walls.append(time.monotonic())
            self._mesh_dirty = True
            if self._first_fused_index is None:
                self._first_fused_index = res.index
                est = pipe.estimator
                if hasattr(est, "canonical_index"):  # the ground-truth oracle: canonical = first fused frame
                    est.canonical_index = res.index
            if self._series is not None:
                self._series[2] += 1
                if self._series[2] % self._series[0] == 0:
                    if self._capture_now():
                        self._series[1] -= 1
                    if self._series[1] <= 0:
                        self._series = None
                        self.logMessage.emit("info", "capture series finished")
                        self.seriesFinished.emit()
        else:
            self.logMessage.emit("warning", f"frame {res.index} skipped ({res.reason}): {res.message}")

    # ---------------------------------------------------------------- outputs
    def _maybe_mesh(self, force: bool = False) -> None:
        pipe = self.pipeline
        if pipe is None or pipe.volume is None or not (self._mesh_dirty or force):
            return
        now = time.monotonic()
        if not force and now - self._last_mesh_t < self.mesh_period_s:
            return
        t0 = time.perf_counter()
        try:
            canon = pipe.canonical_mesh()
            live = pipe.live_mesh(canon)
        except Exception as e:
            self.logMessage.emit("error", f"mesh extraction failed: {_error_text(e)}")
            return
        g = pipe.graph
        n = g.num_nodes
        nodes = np.asarray(g.nodes, np.float32)
        mt = np.asarray(pipe.motion.translations, np.float32)
        live_nodes = nodes + mt[:n] if len(mt) >= n else nodes
        size = self.settings.processing_size if self.settings else None
        k = self._last_frame.intrinsics if self._last_frame is not None else None
        if k is not None and size:
            k = k.scaled(*size)
        self.meshReady.emit({
            "empty": False, "canonical": mesh_payload(canon), "live": mesh_payload(live),
            "nodes_canonical": nodes, "nodes_live": live_nodes, "edges": np.asarray(g.edges),
            "intrinsics": k.as_dict() if k is not None else None,
            "frame_index": self._last_result.index if self._last_result is not None else -1,
            "extract_ms": 1e3 * (time.perf_counter() - t0),
        })
        self._last_mesh_t = time.monotonic()
        self._mesh_dirty = False

    def _maybe_overlay(self, force: bool = False) -> None:
        """Emit the tracker overlay of the last processed frame (throttled to overlay_period_s unless forced)."""
        pipe = self.pipeline
        if pipe is None or not self._overlay_dirty:
            return
        now = time.monotonic()
        if not force and now - self._last_overlay_t < self.overlay_period_s:
            return
        from app.gui.views import heatmap_rgba

        ov = getattr(pipe.estimator, "last_overlay", None)
        r = self._last_result
        if ov is None or r is None or int(ov.frame_index) != int(r.index):
            payload: dict[str, Any] = {"available": True, "empty": True}
        else:
            payload = {"available": True, **ov.as_dict(), "heatmap_rgba": heatmap_rgba(ov.heatmap)}
        self.overlayReady.emit(payload)
        self._last_overlay_t = now
        self._overlay_dirty = False

    def _emit_state(self) -> None:
        self.stateChanged.emit({
            "has_source": self.pump is not None, "opened": self.info is not None, "playing": self.playing,
            "fusing": self.fusing, "has_model": self.pipeline is not None and self.pipeline.volume is not None,
            "position": self._position, "at_end": self._at_end,
            "has_sequence": bool(self.pipeline is not None and self.pipeline.sequence is not None
                                 and len(self.pipeline.sequence)),
            "series": self._series is not None,
        })

    def _emit_stats(self) -> None:
        pipe = self.pipeline
        st: dict[str, Any] = {"dropped": self._dropped, "position": self._position}
        w = self._shown_walls
        st["display_fps"] = (len(w) - 1) / (w[-1] - w[0]) if len(w) > 1 and w[-1] > w[0] else None
        if pipe is None:
            self.statsReady.emit(st)
            return
        fw = self._fused_walls
        st.update({
            "tracker": self._estimator_name,
            "frames_in": pipe.frames_in, "frames_fused": pipe.frames_fused,
            "skipped": dict(pipe.skipped), "nodes": pipe.graph.num_nodes,
            "fused_fps": (len(fw) - 1) / (fw[-1] - fw[0]) if len(fw) > 1 and fw[-1] > fw[0] else None,
            "stage_ms_median": {k: float(np.median(v[-20:])) for k, v in pipe.stage_ms.items() if v},
            "frame_ms_median": float(np.median(pipe.frame_ms[-20:])) if pipe.frame_ms else None,
            "device": pipe.volume.device if pipe.volume is not None else None,
            "volume": pipe.volume.stats() if pipe.volume is not None else None,
            "sequence_frames": len(pipe.sequence) if pipe.sequence is not None else 0,
        })
        r = self._last_result
        if r is not None:
            st["last"] = {"index": r.index, "ok": r.ok, "reason": r.reason, "stage_ms": dict(r.stage_ms)}
            ts = r.tracker_stats if isinstance(r.tracker_stats, dict) else {}
            per = ts.get("per_keyframe")
            if isinstance(per, list):  # the neural tracker: keyframes whose correspondences were used
                st["keyframes"] = f"{sum(1 for k in per if k.get('used'))} of {len(per)}"
            elif "keyframes" in ts:
                st["keyframes"] = str(ts["keyframes"])
        if self._kept and ("neural" in self._kept or "classical" in self._kept):
            st["kept"] = dict(self._kept)
        self.statsReady.emit(st)


def kept_motion(tracker_stats: dict) -> str:
    """Whose motion the neural tracker kept for a frame, from its stats: "neural", "classical" (selected by
    fit, a fallback, or the bootstrap before the first keyframe) or "-" (another tracker)."""
    if tracker_stats.get("selected") in ("neural", "classical"):
        return tracker_stats["selected"]
    if tracker_stats.get("fallback") or "bootstrap" in str(tracker_stats.get("neural", "")):
        return "classical"
    if "correspondence_ms" in tracker_stats:
        return "neural"
    return "-"


class WorkerHost(QtCore.QObject):
    """Owns the worker and its QThread for the UI: `send(name, payload)` never blocks; `shutdown` stops both
    (a bounded wait)."""

    commandRequested = QtCore.Signal(str, object)

    def __init__(self, parent: QtCore.QObject | None = None, **worker_kw: Any) -> None:
        super().__init__(parent)
        self.thread = QtCore.QThread()
        self.thread.setObjectName("nrstudio-pipeline")
        self.worker = PipelineWorker(**worker_kw)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.setup)
        self.commandRequested.connect(self.worker.command, QtCore.Qt.ConnectionType.QueuedConnection)
        self._down = False

    def start(self) -> None:
        """Start the worker thread."""
        self.thread.start()

    def send(self, name: str, payload: Any = None) -> None:
        """Queue a command for the worker (returns at once)."""
        if not self._down:
            self.commandRequested.emit(name, payload)

    def shutdown(self, timeout_ms: int = 30000) -> bool:
        """Stop the worker and its thread: the current frame (if any) finishes, the source is let go on its
        daemon thread. Returns False if the worker did not end within `timeout_ms`."""
        if self._down:
            return True
        self._down = True
        self.worker.request_stop()
        # `finish` runs in the worker thread after the current tick and quits the thread's event loop
        QtCore.QMetaObject.invokeMethod(self.worker, "finish", QtCore.Qt.ConnectionType.QueuedConnection)
        deadline = time.monotonic() + timeout_ms / 1000.0
        ok = bool(self.thread.wait(timeout_ms))
        # let the pumps close their sources (the SDK's threads must end before the process does)
        for pump in [self.worker.pump, *self.worker.retired_pumps]:
            if pump is not None:
                pump.stop()
                pump.thread.join(max(0.0, min(10.0, deadline - time.monotonic())))
                ok = ok and not pump.thread.is_alive()
        return ok
