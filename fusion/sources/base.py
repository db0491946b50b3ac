"""The one interface every RGB-D source implements.

A source is opened on construction or by `open()`, yields `RGBDFrame`s in order with `next_frame()`
(None at the end), can seek by index and by time, and is a context manager and an iterator.
"""
from __future__ import annotations

import abc
from typing import Iterator

from fusion.camera import Intrinsics
from fusion.frame import RGBDFrame


class FrameSource(abc.ABC):
    """Abstract RGB-D source: recordings, live cameras, image folders, synthetic scenes."""

    #: a short human-readable description ("D435 recording foo.bag", "synthetic cloth")
    name: str = "source"

    @property
    @abc.abstractmethod
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the delivered (aligned) frames."""

    @property
    def length(self) -> int | None:
        """Number of frames when known (recordings, folders), None for live streams."""
        return None

    @property
    def fps(self) -> float | None:
        """Nominal frame rate in frames/s when known."""
        return None

    @property
    def is_live(self) -> bool:
        """True for a live camera (no seeking, no length)."""
        return False

    def open(self) -> None:
        """Acquire resources; sources may open on construction, then this is a no-op."""

    @abc.abstractmethod
    def next_frame(self) -> RGBDFrame | None:
        """The next frame in order, or None at the end of the source."""

    def seek(self, index: int) -> None:
        """Position the source so that `next_frame()` returns frame `index` (0-based)."""
        raise NotImplementedError(f"{type(self).__name__} cannot seek")

    def seek_time(self, t_s: float) -> None:
        """Position the source at the first frame whose timestamp_s >= t_s."""
        raise NotImplementedError(f"{type(self).__name__} cannot seek")

    def close(self) -> None:
        """Release resources; safe to call twice."""

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[RGBDFrame]:
        while True:
            f = self.next_frame()
            if f is None:
                return
            yield f
