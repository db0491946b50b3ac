"""RGB-D sources behind one interface (`FrameSource`) and `open_source`, which picks one by path."""
from fusion.sources.base import FrameSource

__all__ = ["FrameSource"]
