"""Writing `--report FILE.json` files (atomically, with numpy values converted)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fusion.atomic import write_text_atomic


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    return x


def to_json(report: dict) -> str:
    """The report as indented JSON text (NaN/inf become null)."""
    return json.dumps(_plain(report), indent=2, sort_keys=False)


def write_report(path: str | Path | None, report: dict) -> None:
    """Write `report` to `path` as JSON (no-op when path is None)."""
    if path is None:
        return
    write_text_atomic(path, to_json(report) + "\n")
