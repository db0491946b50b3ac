"""RGB-D sources behind one interface (`FrameSource`) and `open_source`, which picks one by its spec.

Specs understood by `open_source`:

* `path/to/file.bag`, `path/to/file.db3`: RealSense recording playback (`RecordingSource`)
* a folder: DeepDeform layout (`DeepDeformSource`) when it has color/, depth/ and intrinsics.txt,
  otherwise a generic color/depth image folder (`ImageFolderSource`)
* `camera` or `camera:SERIAL`: a live RealSense camera (`LiveSource`)
* `synthetic:NAME`: a synthetic deforming scene (`SyntheticSource(SceneConfig(name=NAME, **options))`)

Heavy modules (pyrealsense2, rosbags, PIL) are imported only when a source of that kind is opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fusion.errors import InputError, NotAvailableError
from fusion.sources.base import FrameSource

__all__ = ["FrameSource", "open_source", "RECORDING_EXTENSIONS"]

RECORDING_EXTENSIONS = (".bag", ".db3")


def open_source(spec: str | Path, **options: Any) -> FrameSource:
    """Open the frame source named by `spec` (see the module docstring); `options` go to its constructor.

    Raises InputError for a missing path or an unknown extension (one line naming the path and problem),
    DeviceError when "camera" is asked for and none is connected, NotAvailableError for "synthetic:" when
    fusion.synthetic provides no SyntheticSource yet.
    """
    text = str(spec)
    if not isinstance(spec, Path):
        if text == "camera" or text.startswith("camera:"):
            from dataclasses import replace

            from fusion.sources.live import LiveConfig, LiveSource

            serial = text.split(":", 1)[1] or None if ":" in text else None
            cfg = options.pop("config", None) or LiveConfig()
            cfg = replace(cfg, serial=serial or cfg.serial, **options)
            return LiveSource(cfg)
        if text.startswith("synthetic:"):
            name = text.split(":", 1)[1]
            try:
                from fusion.synthetic import SceneConfig
                from fusion.synthetic.source import SyntheticSource
            except ImportError:
                raise NotAvailableError(
                    f"{text}: synthetic scenes are not available yet (fusion.synthetic has no SyntheticSource)"
                ) from None
            cfg = options.pop("config", None) or SceneConfig(name=name, **options)
            return SyntheticSource(cfg)
    path = Path(text)
    if path.is_dir():
        from fusion.sources.folders import DeepDeformSource, ImageFolderSource, is_deepdeform_folder

        if is_deepdeform_folder(path):
            return DeepDeformSource(path, **options)
        return ImageFolderSource(path, **options)
    ext = path.suffix.lower()
    if ext in RECORDING_EXTENSIONS:
        if not path.exists():
            raise InputError(f"{path}: recording not found")
        from fusion.sources.recording import RecordingSource

        return RecordingSource(path, **options)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    raise InputError(
        f"{path}: unknown input type {path.suffix or '(no extension)'!r} "
        "(expected a .bag/.db3 recording, an image folder, 'camera[:SERIAL]' or 'synthetic:NAME')"
    )
