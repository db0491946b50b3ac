"""Shared fixtures: the real data folder (skips with a reason when absent), temp dirs, seeding."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fusion.paths import shared_data_dir

# Plain widgets run offscreen; under Xvfb (make test) DISPLAY is set and GL views get a real X server.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $NRSTUDIO_DATA); skips the test when it is absent."""
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data folder {d} not found (set NRSTUDIO_DATA)")
    return d


def require(path: Path) -> Path:
    """Skip the calling test when `path` does not exist."""
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator."""
    return np.random.default_rng(1234)
