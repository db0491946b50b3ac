"""`SyntheticSource`: a synthetic scene behind the FrameSource interface (length, fps, seek, seek_time)."""
from __future__ import annotations

import math

from fusion.camera import Intrinsics
from fusion.errors import InputError
from fusion.frame import RGBDFrame
from fusion.sources.base import FrameSource
from fusion.synthetic.scene import SceneConfig, SyntheticScene, make_scene


class SyntheticSource(FrameSource):
    """Frames 0 .. n_frames-1 of a synthetic scene, rendered on demand (RGBDFrame with mask set).

    `scene` gives access to the ground truth of the frames delivered.
    """

    def __init__(self, cfg: SceneConfig) -> None:
        self.cfg = cfg
        self.scene: SyntheticScene = make_scene(cfg)
        self.name = f"synthetic {cfg.name}"
        self._pos = 0

    @property
    def intrinsics(self) -> Intrinsics:
        """Intrinsics of the rendered frames."""
        return self.scene.intrinsics

    @property
    def length(self) -> int:
        """Number of frames."""
        return self.scene.n_frames

    @property
    def fps(self) -> float:
        """Frame rate in frames/s."""
        return self.scene.fps

    def next_frame(self) -> RGBDFrame | None:
        """The next frame, or None after the last one."""
        if self._pos >= self.length:
            return None
        f = self.scene.render(self._pos)
        self._pos += 1
        return f

    def seek(self, index: int) -> None:
        """Make `next_frame()` return frame `index`; index == length positions at the end."""
        if not 0 <= int(index) <= self.length:
            raise InputError(f"{self.name}: cannot seek to frame {index}, the scene has {self.length} frames")
        self._pos = int(index)

    def seek_time(self, t_s: float) -> None:
        """Position at the first frame whose timestamp (index / fps) is >= t_s (the end when none is)."""
        if not math.isfinite(t_s):
            raise InputError(f"{self.name}: cannot seek to time {t_s}")
        idx = max(0, math.ceil(t_s * self.fps - 1e-9))
        while idx > 0 and self.scene.timestamp(idx - 1) >= t_s:
            idx -= 1
        while idx < self.length and self.scene.timestamp(idx) < t_s:
            idx += 1
        self._pos = min(idx, self.length)
