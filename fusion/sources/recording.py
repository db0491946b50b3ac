"""Playback of RealSense recordings (ROS2 `.db3` and ROS1 `.bag`) with pyrealsense2, every frame exactly once.

How it works (the shape of Open3D's RSBagReader: a reader thread filling a small buffer):

* An index of the file is read first without the SDK (sqlite for `.db3`, the pure-Python `rosbags`
  reader for `.bag`): the depth and color frame numbers and sensor timestamps. It gives `length`, the
  frame times for `seek_time`, and the list every playback is checked against. A file the index cannot
  read is reported as corrupt (InputError) before the SDK ever sees it.
* A reader thread plays the file through the SDK's low-level playback device in non-real-time mode
  (`playback.set_real_time(False)`), with sensor callbacks rather than rs.pipeline (which, measured,
  delivers only the second of the two depth frames of the bundled D435 bag: its frame aggregation waits
  for a frame of every stream). The playback is paused while every sensor is opened and then started (opening one
  sensor and starting it before opening the next loses the first frames of the later stream about one
  time in four, measured). Callbacks block on a small queue, which in non-real-time mode holds the SDK's
  reader back instead of dropping frames.
* Every frame number the SDK delivers is checked against the index. If it skipped a recorded depth or
  color frame, playback is replayed from the first frame not yet delivered (a `.bag` file is first
  converted losslessly to `.db3` with `rs.context().convert_bag_to_db3` in a temporary folder, which
  plays every frame); a loss that repeats is an InputError (truncated or corrupt file).
* Repeated frames are dropped by frame number. Each depth frame is paired with the color frame nearest
  in time, decided from the index (so never by the order in which the SDK's threads deliver frames): a
  depth frame recorded before the first color frame waits for, and gets, that first color frame. Only a
  depth frame whose nearest color frame comes more than ~10 depth frames later in the file (more than
  playback can hold without the SDK dropping frames) gets a gray color image derived from depth instead,
  as does every frame of a recording without color; `frame.meta["color_source"]` says which.
* Depth is aligned to color with rs.align (`align="color"`, the default, frames then share the color
  intrinsics) or color to depth (`align="depth"`: the depth camera and resolution are kept). Depth units
  and intrinsics come from the recording.
* Delivered frames wait in a ring buffer of `buffer_size` frames. `next_frame` waits at most
  `timeout_s`; if the SDK delivers nothing in that time it raises `StallError` instead of hanging.
* Seeking restarts playback from the file's start and skips (without aligning) the frames before the
  target: the SDK's own `playback.seek` loses frames after the seek point in 2.59 (measured), so it is
  not used. A seek therefore costs one decode pass up to the target.
"""
from __future__ import annotations

import bisect
import collections
import queue
import re
import shutil
import sqlite3
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fusion.camera import Intrinsics
from fusion.errors import InputError, StallError
from fusion.frame import RGBDFrame
from fusion.sources.base import FrameSource
from fusion.sources.common import check_empty_policy, depth_is_empty, require_file
from fusion.sources.realsense import ALIGN_MODES, FilterConfig

RECORDING_EXTENSIONS = (".bag", ".db3")

_DEPTH_TOPIC = re.compile(r"^/device_(\d+)/sensor_(\d+)/Depth_(\d+)/image/data(/compressedDepth|/compressed)?$")
_COLOR_TOPIC = re.compile(r"^/device_(\d+)/sensor_(\d+)/Color_(\d+)/image/data(/compressed|/compressedDepth)?$")
_META_NUMBER = re.compile(r"Frame number=(\d+)")
_META_TIME = re.compile(r"(?:^|;)timestamp=([-+0-9.eE]+)")


@dataclass(frozen=True)
class FrameEntry:
    """One recorded image: its SDK frame number, sensor timestamp (ms) and position in the file (ns)."""

    frame_number: int
    timestamp_ms: float
    file_time_ns: int


@dataclass
class RecordingIndex:
    """What a recording holds, read from the file without the SDK.

    depth / color: the recorded frames of the first depth and color stream, in file order.
    """

    path: Path
    format: str
    depth_topic: str | None
    color_topic: str | None
    depth: list[FrameEntry] = field(default_factory=list)
    color: list[FrameEntry] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Seconds between the first and last depth frame (sensor clock)."""
        if len(self.depth) < 2:
            return 0.0
        return (self.depth[-1].timestamp_ms - self.depth[0].timestamp_ms) / 1000.0


def _corrupt(path: Path, why: object) -> InputError:
    return InputError(f"{path}: not a readable RealSense recording (corrupt or truncated: {why})")


def _parse_metadata(text: str) -> tuple[int | None, float | None]:
    n = _META_NUMBER.search(text)
    t = _META_TIME.search(text)
    return (int(n.group(1)) if n else None, float(t.group(1)) if t else None)


def _cdr_string(blob: bytes) -> str:
    """The value of a CDR-serialised std_msgs/String (4-byte encapsulation, uint32 length, chars)."""
    if len(blob) < 8:
        return ""
    (n,) = struct.unpack_from("<I", blob, 4)
    return blob[8 : 8 + n].rstrip(b"\x00").decode("utf-8", "replace")


def _index_db3(path: Path) -> RecordingIndex:
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True)
        try:
            topics = {int(i): str(n) for i, n in con.execute("SELECT id, name FROM topics")}
            idx = RecordingIndex(path, "db3", None, None, topics=sorted(topics.values()))
            for kind, rx in (("depth", _DEPTH_TOPIC), ("color", _COLOR_TOPIC)):
                cands = sorted((n, i) for i, n in topics.items() if rx.match(n))
                if not cands:
                    continue
                name, tid = cands[0]
                base = name.split("/image/")[0]
                meta_ids = [i for i, n in topics.items() if n == base + "/image/metadata"]
                data = [int(r[0]) for r in con.execute(
                    "SELECT timestamp FROM messages WHERE topic_id=? ORDER BY timestamp, id", (tid,))]
                metas: list[tuple[int | None, float | None]] = []
                if meta_ids:
                    metas = [_parse_metadata(_cdr_string(bytes(r[0]))) for r in con.execute(
                        "SELECT data FROM messages WHERE topic_id=? ORDER BY timestamp, id", (meta_ids[0],))]
                entries = []
                for k, ft in enumerate(data):
                    num, ts = metas[k] if k < len(metas) else (None, None)
                    entries.append(FrameEntry(k if num is None else num, ft / 1e6 if ts is None else ts, ft))
                setattr(idx, kind, entries)
                setattr(idx, f"{kind}_topic", name)
        finally:
            con.close()
    except sqlite3.Error as e:
        raise _corrupt(path, e) from None
    if not idx.topics:
        raise _corrupt(path, "no topics")
    return idx


def _index_bag(path: Path) -> RecordingIndex:
    from rosbags.rosbag1 import Reader

    try:
        with Reader(path) as reader:
            conns = list(reader.connections)
            names = sorted({c.topic for c in conns})
            idx = RecordingIndex(path, "bag", None, None, topics=names)
            for kind, rx in (("depth", _DEPTH_TOPIC), ("color", _COLOR_TOPIC)):
                cands = sorted({c.topic for c in conns if rx.match(c.topic)})
                if not cands:
                    continue
                sel = [c for c in conns if c.topic == cands[0]]
                entries = []
                for _, t_ns, raw in reader.messages(connections=sel):
                    # sensor_msgs/Image (ROS1): header.seq = frame number, header.stamp = sensor timestamp
                    seq, sec, nsec = struct.unpack_from("<III", raw, 0)
                    entries.append(FrameEntry(int(seq), sec * 1e3 + nsec * 1e-6, int(t_ns)))
                setattr(idx, kind, entries)
                setattr(idx, f"{kind}_topic", cands[0])
    except InputError:
        raise
    except Exception as e:  # rosbags raises ReaderError, struct.error, KeyError ... on damaged files
        raise _corrupt(path, f"{type(e).__name__}: {e}") from None
    return idx


def index_recording(path: str | Path) -> RecordingIndex:
    """Read the frame index of a `.db3` or `.bag` recording (InputError when missing, unknown or corrupt)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in RECORDING_EXTENSIONS:
        raise InputError(f"{p}: unknown recording extension {p.suffix!r} (expected .bag or .db3)")
    require_file(p, "recording")
    idx = _index_db3(p) if ext == ".db3" else _index_bag(p)
    if idx.depth_topic is None:
        streams = sorted({t.split("/")[3] for t in idx.topics if t.count("/") >= 4 and "/image/" in t})
        raise InputError(f"{p}: the recording has no depth stream (streams: {', '.join(streams) or 'none'})")
    if not idx.depth:
        raise InputError(f"{p}: the recording's depth stream holds no frames")
    return idx


def nearest_color_positions(index: RecordingIndex, max_wait: int | None = None) -> list[int | None]:
    """For each depth frame, the position (in index.color) of the color frame nearest in time, or None.

    Ties go to the earlier color frame; a depth frame recorded before the first color frame gets that
    first color frame. None when the recording has no color frame, or when the nearest color frame comes
    more than `max_wait` depth frames later in the file (playback cannot hold that many depth frames; such
    a frame gets a gray color image). Decided from the index alone, so the pairing never depends on the
    order in which the SDK's threads deliver frames.
    """
    ct = [e.timestamp_ms for e in index.color]
    if not ct:
        return [None] * len(index.depth)
    depth_file = sorted(e.file_time_ns for e in index.depth)
    out: list[int | None] = []
    for i, e in enumerate(index.depth):
        j = bisect.bisect_left(ct, e.timestamp_ms)
        cands = [k for k in (j - 1, j) if 0 <= k < len(ct)]
        best = min(cands, key=lambda k: (abs(ct[k] - e.timestamp_ms), k))
        if max_wait is not None:
            read_before = bisect.bisect_left(depth_file, index.color[best].file_time_ns)  # depth frames read first
            if read_before - i > max_wait:
                best = None
        out.append(best)
    return out


# ----------------------------------------------------------------------------------------------- SDK


def _run_with_timeout(fn: Any, timeout_s: float, what: str) -> Any:
    """Run `fn()` in a daemon thread; raise StallError if it does not return within `timeout_s`."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=target, name="nrstudio-rs-call", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise StallError(f"{what}: the RealSense SDK did not answer within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _stream_profiles(sensor: Any) -> list[Any]:
    """The depth and color video profiles of a playback sensor."""
    import pyrealsense2 as rs

    return [p for p in sensor.get_stream_profiles() if p.stream_type() in (rs.stream.depth, rs.stream.color)
            and p.is_video_stream_profile()]


def probe_recording(path: str | Path) -> dict:
    """Ask the SDK what a recording holds: device info, streams with intrinsics, depth units, extrinsics.

    Returns a plain dict (see `describe_recording`); raises InputError when the SDK cannot open the file.
    """
    import pyrealsense2 as rs

    from fusion.sources.realsense import extrinsics_of, intrinsics_dict

    p = Path(path)
    ctx = rs.context()
    try:
        dev = ctx.load_device(str(p))
    except RuntimeError as e:
        raise _corrupt(p, e) from None
    info: dict = {"device": {}, "streams": [], "depth_units": None, "extrinsics_depth_to_color": None}
    for key in ("name", "serial_number", "firmware_version", "product_line", "usb_type_descriptor"):
        ci = getattr(rs.camera_info, key)
        if dev.supports(ci):
            info["device"][key] = dev.get_info(ci)
    depth_prof = color_prof = None
    for s in dev.query_sensors():
        for prof in _stream_profiles(s):
            v = prof.as_video_stream_profile()
            st = prof.stream_type()
            info["streams"].append({
                "stream": prof.stream_name(), "format": str(prof.format()).split(".")[-1], "fps": prof.fps(),
                "width": v.width(), "height": v.height(), "intrinsics": intrinsics_dict(prof),
            })
            if st == rs.stream.depth and depth_prof is None:
                depth_prof = prof
                if s.supports(rs.option.depth_units):
                    info["depth_units"] = float(s.get_option(rs.option.depth_units))
            elif st == rs.stream.color and color_prof is None:
                color_prof = prof
    if depth_prof is not None and color_prof is not None:
        ext = extrinsics_of(depth_prof, color_prof)
        if ext is not None:
            info["extrinsics_depth_to_color"] = {"rotation": ext[0].tolist(), "translation_m": ext[1].tolist()}
    info["fps"] = depth_prof.fps() if depth_prof is not None else None
    info["_depth_intrinsics"] = intrinsics_dict(depth_prof) if depth_prof is not None else None
    info["_color_intrinsics"] = intrinsics_dict(color_prof) if color_prof is not None else None
    try:
        info["duration_sdk_s"] = dev.as_playback().get_duration().total_seconds()
    except RuntimeError:
        info["duration_sdk_s"] = None
    del dev
    ctx = None  # noqa: F841  (release the playback device before returning)
    return info


class _Session(threading.Thread):
    """One playback of the file from its start; emits frames from index `start` on into `out`.

    Messages put in `out`: ("frame", RGBDFrame), ("end", None), ("error", exc), ("lost", first_lost_index).
    """

    #: depth frames held while waiting for their (later) color frame; with the raw queue this stays below
    #: the ~32 frames per stream that the SDK's frame pool holds (more and it drops frames, measured)
    MAX_PENDING_DEPTH = 12
    MAX_COLORS = 8  # color frames kept for depth frames still to come
    QUIET_S = 0.3  # after the SDK reports "stopped", how long no frame must arrive to call it the end

    def __init__(self, source: "RecordingSource", play_path: Path, start: int) -> None:
        super().__init__(name=f"nrstudio-playback-{source.path.name}", daemon=True)
        self.src = source
        self.play_path = play_path
        self.start_index = start
        self.index = source.index
        self.out: queue.Queue = queue.Queue(maxsize=source.buffer_size)
        self.stop_event = threading.Event()  # the consumer asked the session to stop
        self._callbacks_off = threading.Event()  # our SDK callbacks must return at once (teardown)
        self._resumed = threading.Event()  # pb.resume() has returned: "stopped" now means end of file
        self.raw: queue.Queue = queue.Queue(maxsize=8)
        self._pos_of = {e.frame_number: i for i, e in enumerate(self.index.depth)}
        self._cpos_of = {e.frame_number: i for i, e in enumerate(self.index.color)}
        self._t0_ms = self.index.depth[0].timestamp_ms

    # -- called on SDK threads ------------------------------------------------------------------
    def _on_frame(self, frame: Any) -> None:
        while not (self._callbacks_off.is_set() or self.stop_event.is_set()):
            try:
                self.raw.put(frame, timeout=0.05)
                return
            except queue.Full:
                continue

    # -- helpers ------------------------------------------------------------------------------------
    def _put(self, msg: tuple) -> bool:
        while not self.stop_event.is_set():
            try:
                self.out.put(msg, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # handed to the consumer thread
            if not self.stop_event.is_set():
                if isinstance(e, RuntimeError):
                    e = _corrupt(self.src.path, e)
                self._put(("error", e))

    def _run(self) -> None:
        import pyrealsense2 as rs

        from fusion.sources.realsense import FrameProcessor, FramesetComposer

        proc = FrameProcessor(self.src.align, self.src.filters)
        composer = FramesetComposer()
        ctx = rs.context()
        dev = ctx.load_device(str(self.play_path))
        pb = dev.as_playback()
        pb.set_real_time(False)
        pb.pause()
        opened: list = []
        started: list = []
        # The assembler drains our callbacks' queue from the start: the SDK may deliver frames before
        # resume() returns, and resume() waits for the SDK's reader, which waits for our callbacks.
        failure: dict = {}

        def assemble() -> None:
            try:
                self._assemble(pb, proc, composer)
            except BaseException as e:  # re-raised on the session thread
                failure["error"] = e

        asm = threading.Thread(target=assemble, name=self.name + "-assemble", daemon=True)
        asm.start()
        try:
            # Open every sensor before starting any: opening enables the stream in the SDK's file reader
            # asynchronously, and a stream enabled after reading began loses its first frames (measured:
            # the color frame of the D435 bag in ~1 of 4 plays when each sensor was opened and started in turn).
            sensors = [(s, _stream_profiles(s)) for s in dev.query_sensors()]
            sensors = [(s, p) for s, p in sensors if p]
            for s, profs in sensors:
                s.open(profs)
                opened.append(s)
            for s, _ in sensors:
                s.start(self._on_frame)
                started.append(s)
            pb.resume()
            self._resumed.set()
            while asm.is_alive():
                asm.join(0.1)
        finally:
            self._callbacks_off.set()  # unblocks our callbacks so that sensor.stop() can return
            for s in started:
                try:
                    s.stop()
                except RuntimeError:
                    pass
            for s in opened:
                try:
                    s.close()
                except RuntimeError:
                    pass
            del pb, dev
        if "error" in failure:
            raise failure["error"]

    def _assemble(self, pb: Any, proc: Any, composer: Any) -> None:
        """Pair, dedupe, check and emit the SDK's frames (runs on its own thread).

        Ends with ("end", None), or ("lost", k) when the SDK skipped a recorded depth or color frame, k
        being the first frame not yet delivered (the source then replays from there).
        """
        import pyrealsense2 as rs

        n_depth, n_color = len(self.index.depth), len(self.index.color)
        nearest = self.src.nearest_color  # position of the color frame nearest in time to each depth frame
        pos = 0  # position (in index.depth) of the next depth frame expected from the SDK
        cpos = 0  # position (in index.color) of the next color frame expected
        pending: collections.deque = collections.deque()  # (position, depth frame) waiting for a color
        colors: dict[int, Any] = {}  # color position -> color frame, kept while a depth frame may need it
        seen_depth: set[int] = set()
        seen_color: set[int] = set()
        stopped_since: float | None = None

        def undelivered() -> int:
            return pending[0][0] if pending else max(pos, self.start_index)

        def resolve() -> bool:
            while pending:
                i, d = pending[0]
                need = nearest[i]
                note = None
                if need is None and n_color:
                    note = "gray-from-depth (the nearest color frame comes too many depth frames later)"
                if need is not None and need not in colors:
                    if need >= cpos and len(pending) <= self.MAX_PENDING_DEPTH:
                        return True  # its color frame is still to come
                    note = f"gray-from-depth (color frame #{need}, the nearest, could not be held)"
                c = colors.get(need) if need is not None else None
                if not self._emit(i, d, c, proc, composer, note):
                    return False
                pending.popleft()
                if pending or pos < n_depth:  # colors no later depth frame needs (nearest is monotone)
                    keep_from = nearest[pending[0][0]] if pending else nearest[min(pos, n_depth - 1)]
                    for k in [k for k in colors if keep_from is None or k < keep_from]:
                        del colors[k]
            return True

        while not (self.stop_event.is_set() or self._callbacks_off.is_set()):
            if pos >= n_depth and not pending:
                self._put(("end", None))
                return
            try:
                f = self.raw.get(timeout=0.05)
            except queue.Empty:
                if pb.current_status() == rs.playback_status.stopped and self._resumed.is_set():
                    stopped_since = stopped_since or time.monotonic()
                    if time.monotonic() - stopped_since > self.QUIET_S:
                        # the SDK has reached the end of the file with frames still missing
                        self._put(("lost", undelivered()))
                        return
                else:
                    stopped_since = None
                continue
            stopped_since = None
            st = f.get_profile().stream_type()
            num = f.get_frame_number()
            if st == rs.stream.color:
                if num in seen_color:
                    continue
                seen_color.add(num)
                j = self._cpos_of.get(num, cpos)
                if j < cpos:
                    continue
                if j > cpos:  # the SDK skipped a recorded color frame
                    self._put(("lost", undelivered()))
                    return
                cpos = j + 1
                colors[j] = f
                while len(colors) > self.MAX_COLORS:
                    del colors[min(colors)]
            elif st == rs.stream.depth:
                if num in seen_depth:
                    continue  # the SDK repeats frames: each recorded frame is delivered once
                seen_depth.add(num)
                i = self._pos_of.get(num, pos)
                if i < pos:
                    continue
                if i > pos and i > self.start_index:  # the SDK skipped recorded depth frames we need
                    self._put(("lost", undelivered()))
                    return
                pos = i + 1
                if i >= self.start_index:
                    pending.append((i, f))
            else:
                continue
            if not resolve():
                return

    def _emit(self, i: int, depth: Any, color: Any | None, proc: Any, composer: Any, note: str | None = None) -> bool:
        entry = self.index.depth[i]
        meta = {
            "source": str(self.src.path),
            "frame_number": int(depth.get_frame_number()),
            "sensor_timestamp_ms": float(depth.get_timestamp()),
            "color_frame_number": int(color.get_frame_number()) if color is not None else None,
            "color_timestamp_ms": float(color.get_timestamp()) if color is not None else None,
        }
        fs = composer.compose(depth, color) if color is not None else depth
        frame = proc.process(fs, index=i, timestamp_s=(entry.timestamp_ms - self._t0_ms) / 1000.0, meta=meta)
        if color is None and self.index.color_topic is not None:
            frame.meta["color_source"] = note or "gray-from-depth (the color stream has no frame)"
        return self._put(("frame", frame))

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Stop the session and wait for it; False if the SDK did not let go within `timeout_s`."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        while self.is_alive() and time.monotonic() < deadline:
            try:
                while True:
                    self.out.get_nowait()
            except queue.Empty:
                pass
            self.join(0.05)
        return not self.is_alive()


class RecordingSource(FrameSource):
    """Frames of a RealSense `.db3` / `.bag` recording, each recorded depth frame exactly once, in order.

    path: the recording. align: "color" (default: depth reprojected into the color camera) or "depth"
    (color sampled at each depth pixel, depth resolution kept). filters: optional RealSense depth
    post-processing (off by default). timeout_s: longest wait for the SDK before StallError.
    buffer_size: frames decoded ahead by the reader thread. empty_depth: what to do with a depth frame
    without a single valid pixel: "error" (InputError, default), "keep" or "skip".
    bag_mode: "auto" (play .bag directly; convert to .db3 and resume if the SDK loses frames), "convert"
    (always convert first) or "direct" (never convert; a lost frame is an InputError).
    """

    MAX_RETRIES = 2  # replays from one position before a loss is reported as a corrupt file

    def __init__(
        self,
        path: str | Path,
        align: str = "color",
        filters: FilterConfig | None = None,
        timeout_s: float = 10.0,
        buffer_size: int = 4,
        empty_depth: str = "error",
        bag_mode: str = "auto",
    ) -> None:
        if align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {ALIGN_MODES}, got {align!r}")
        if bag_mode not in ("auto", "convert", "direct"):
            raise ValueError(f"bag_mode must be 'auto', 'convert' or 'direct', got {bag_mode!r}")
        self.path = Path(path)
        self.align = align
        self.filters = filters or FilterConfig()
        self.timeout_s = float(timeout_s)
        self.buffer_size = max(1, int(buffer_size))
        self.empty_depth = check_empty_policy(empty_depth)
        self.bag_mode = bag_mode
        self.name = f"RealSense recording {self.path.name}"
        self.index = index_recording(self.path)
        self.info = _run_with_timeout(lambda: probe_recording(self.path), self.timeout_s, str(self.path))
        if self.info["_depth_intrinsics"] is None:
            raise InputError(f"{self.path}: the SDK finds no depth stream in the recording")
        self._times = [(e.timestamp_ms - self.index.depth[0].timestamp_ms) / 1000.0 for e in self.index.depth]
        self.nearest_color = nearest_color_positions(self.index, _Session.MAX_PENDING_DEPTH - 2)
        self._tmpdir: Path | None = None
        self._play_path = self.path
        if self.path.suffix.lower() == ".bag" and bag_mode == "convert":
            self._convert_bag()
        self._session: _Session | None = None
        self._next = 0
        self._peeked: RGBDFrame | None = None
        self._closed = False
        self.abandoned_threads = 0  # sessions whose SDK calls did not return (a hung SDK), left as daemons
        self._retries: dict[int, int] = {}  # replays started at each frame position after a loss

    # -- FrameSource ------------------------------------------------------------------------------
    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the delivered frames (the color camera for align="color" when there is color)."""
        if self.filters.decimation > 1:
            if self._peeked is None:
                self._peeked = self._read()
            if self._peeked is not None:
                return self._peeked.intrinsics
        with_color = self.align == "color" and self.info["_color_intrinsics"] and self.index.color
        k = self.info["_color_intrinsics"] if with_color else self.info["_depth_intrinsics"]
        return Intrinsics(k["fx"], k["fy"], k["cx"], k["cy"], k["width"], k["height"])

    @property
    def length(self) -> int:
        """Number of recorded depth frames (= frames delivered)."""
        return len(self.index.depth)

    @property
    def fps(self) -> float | None:
        """Nominal frame rate of the depth stream."""
        return float(self.info["fps"]) if self.info.get("fps") else None

    @property
    def depth_units(self) -> float | None:
        """Metres per raw depth unit, as recorded."""
        return self.info.get("depth_units")

    @property
    def timestamps(self) -> list[float]:
        """timestamp_s of every frame (seconds since the first depth frame, sensor clock)."""
        return list(self._times)

    def next_frame(self) -> RGBDFrame | None:
        """The next frame, None at the end; StallError if the SDK delivers nothing for `timeout_s`."""
        if self._peeked is not None:
            f, self._peeked = self._peeked, None
            return f
        return self._read()

    def seek(self, index: int) -> None:
        """Position at frame `index` (0 <= index <= length; length means the end)."""
        if self._closed:
            raise RuntimeError("the source is closed")
        if not 0 <= index <= self.length:
            raise IndexError(f"frame {index} is outside 0..{self.length}")
        self._stop_session()
        self._peeked = None
        self._next = int(index)

    def seek_time(self, t_s: float) -> None:
        """Position at the first frame with timestamp_s >= t_s (the end when there is none)."""
        self.seek(bisect.bisect_left(self._times, float(t_s) - 1e-9))

    def close(self) -> None:
        """Stop the reader thread (joined with a timeout), remove temporary files. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop_session()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def describe(self) -> dict:
        """Streams, intrinsics, depth units, frame counts and duration (for `nrstudio inspect`)."""
        info = {k: v for k, v in self.info.items() if not k.startswith("_")}
        return {
            "path": str(self.path), "format": self.index.format, **info,
            "depth_frames": len(self.index.depth), "color_frames": len(self.index.color),
            "duration_s": self.index.duration_s,
            "first_depth_frame_number": self.index.depth[0].frame_number,
            "delivered_intrinsics": self.intrinsics.as_dict(), "align": self.align,
        }

    # -- internals ----------------------------------------------------------------------------------
    def _convert_bag(self) -> None:
        import pyrealsense2 as rs

        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="nrstudio-bag-"))
        out = self._tmpdir / (self.path.stem + ".db3")
        _run_with_timeout(lambda: rs.context().convert_bag_to_db3(str(self.path), str(out)),
                          max(self.timeout_s, 60.0), f"{self.path} (conversion to .db3)")
        self._play_path = out

    def _stop_session(self, timeout_s: float = 5.0) -> None:
        if self._session is not None:
            if not self._session.shutdown(timeout_s):
                self.abandoned_threads += 1
            self._session = None

    def _read(self) -> RGBDFrame | None:
        if self._closed:
            raise RuntimeError(f"{self.path}: the source is closed")
        while True:
            if self._next >= self.length:
                return None
            if self._session is None:
                self._session = _Session(self, self._play_path, self._next)
                self._session.start()
            try:
                kind, val = self._session.out.get(timeout=self.timeout_s)
            except queue.Empty:
                at = self._next
                self._stop_session(timeout_s=1.0)  # a hung SDK thread is left behind as a daemon
                raise StallError(
                    f"{self.path}: the RealSense SDK delivered no frame for {self.timeout_s:g} s "
                    f"(playback stalled before frame {at} of {self.length})"
                ) from None
            if kind == "frame":
                self._next = val.index + 1
                if depth_is_empty(val.depth):
                    if self.empty_depth == "error":
                        raise InputError(
                            f"{self.path}: depth frame {val.index} (frame number {val.meta.get('frame_number')}) "
                            "is all zero (no valid depth)"
                        )
                    if self.empty_depth == "skip":
                        continue
                return val
            self._stop_session()
            if kind == "end":
                self._next = self.length
                return None
            if kind == "error":
                raise val
            if kind == "lost":
                first = int(val)
                self._next = first
                if self.path.suffix.lower() == ".bag" and self._play_path == self.path and self.bag_mode == "auto":
                    self._convert_bag()  # lossless; the converted file plays every frame
                    continue
                tries = self._retries.get(first, 0) + 1
                self._retries[first] = tries
                if tries <= self.MAX_RETRIES:
                    continue  # the SDK occasionally drops a frame: replay from the first undelivered one
                missing = self.index.depth[first].frame_number if first < self.length else "end"
                raise InputError(
                    f"{self.path}: playback lost frames at depth frame {first} (frame number {missing}) of "
                    f"{self.length} in {tries} attempts: the recording is truncated or corrupt"
                )


def describe_recording(path: str | Path) -> dict:
    """What a recording holds (streams, intrinsics, depth units, frames, duration) as a plain dict."""
    with RecordingSource(path) as src:
        return src.describe()
