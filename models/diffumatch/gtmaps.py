"""Reading and writing point-to-point map files: one integer per line, line j = the source vertex of
target vertex j (p2p_21 in the convention of fmaps.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fusion.atomic import write_text_atomic
from fusion.errors import InputError


def read_p2p(path: str | Path, n_target: int, n_source: int) -> np.ndarray:
    """Read a p2p_21 file -> int64 [n_target]; InputError if missing, unreadable, of the wrong length or
    with indices outside [0, n_source)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        m = np.loadtxt(p, dtype=np.float64, ndmin=1)
    except Exception as e:
        raise InputError(f"{p}: cannot read a map of integers ({type(e).__name__})") from e
    if m.ndim != 1:
        raise InputError(f"{p}: expected one integer per line")
    if len(m) != n_target:
        raise InputError(f"{p}: {len(m)} entries, but the target has {n_target} vertices (one line per target vertex)")
    if not np.isfinite(m).all() or (m != np.round(m)).any():
        raise InputError(f"{p}: entries must be integer vertex indices")
    m = m.astype(np.int64)
    if len(m) and (m.min() < 0 or m.max() >= n_source):
        raise InputError(f"{p}: indices outside [0, {n_source}) (the source has {n_source} vertices)")
    return m


def write_p2p(path: str | Path, p2p_21: np.ndarray) -> None:
    """Write p2p_21 [n2] atomically, one source index per line."""
    write_text_atomic(path, "".join(f"{int(i)}\n" for i in p2p_21))
