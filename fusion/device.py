"""The one place where a `--device` / `device=` string becomes a device: "auto" | "cpu" | "cuda" | "cuda:N".

Every layer takes device strings (fusion's volume, the trackers, the shape methods, the CLI); they all resolve
them here, so "auto", the error for a missing GPU and the accepted spellings are the same everywhere. torch is
imported only when a function is called (the CPU-only paths of fusion do not need it at import time).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from fusion.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["resolve_device", "torch_device"]

_CUDA = re.compile(r"cuda(?::(\d+))?")


def _cuda_count() -> int:
    """Number of CUDA devices torch sees (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(device: str) -> str:
    """A device string checked against this machine.

    "auto" -> "cuda" when torch sees a CUDA device, else "cpu"; "cpu" -> "cpu"; "cuda" / "cuda:N" -> itself
    when that device exists. Raises InputError (one line, naming the value) when CUDA is asked for but absent,
    when cuda:N is beyond the devices present, and for anything else (not a string, "gpu", "mps", "cuda:x").
    """
    if not isinstance(device, str):
        raise InputError(f"device must be a string (auto, cpu, cuda or cuda:N), got {device!r}")
    name = device
    if name == "auto":
        return "cuda" if _cuda_count() > 0 else "cpu"
    if name == "cpu":
        return "cpu"
    m = _CUDA.fullmatch(name)
    if m is None:
        raise InputError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N)")
    n = _cuda_count()
    if n == 0:
        raise InputError(f"device {device!r} was asked for, but torch sees no CUDA device "
                         "(use --device cpu or auto)")
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise InputError(f"device {device!r} was asked for, but torch sees only {n} CUDA device(s) "
                         f"(cuda:0 .. cuda:{n - 1})")
    return name


def torch_device(device: str) -> "torch.device":
    """`resolve_device(device)` as a torch.device (same checks, same InputError)."""
    import torch

    return torch.device(resolve_device(device))
