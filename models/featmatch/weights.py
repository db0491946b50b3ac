"""Where the shipped feature-matching weights live."""
from __future__ import annotations

from pathlib import Path

from fusion.paths import ASSETS

SHIPPED = "featmatch_small.pt"


def default_weights_path() -> Path:
    """assets/featmatch/featmatch_small.pt (trained here; see assets/featmatch/README.md)."""
    return ASSETS / "featmatch" / SHIPPED
