"""Shared fixtures: the real data folder (skips with a reason when absent), temp dirs, seeding."""
from __future__ import annotations

from typing import Callable

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


# ---- shape panels (tests/app)
@pytest.fixture
def panel_factory(qtbot, monkeypatch) -> Callable:
    """make(cls) -> a shown ShapePanel of class `cls` (560 x 640, torch on 2 threads) over an empty capture
    store; message boxes are recorded in `panel.messages` instead of shown."""
    def make(cls):
        import torch

        import app.gui.panels as panels
        from app.gui.captures import CaptureStore

        torch.set_num_threads(2)
        shown: list = []
        monkeypatch.setattr(panels, "notify", lambda *a, **k: shown.append(a))
        p = cls(CaptureStore())
        p.messages = shown
        qtbot.addWidget(p)
        p.resize(560, 640)
        p.show()
        return p

    return make


def cancel_on_progress(qtbot, job, cue: str, timeout_ms: int) -> tuple[list[str], list[object]]:
    """Start a PanelJob and press Cancel from its own progress callback as soon as a progress text contains
    `cue`; waits for the cancelled signal. Returns (every progress text seen, results delivered: none
    expected)."""
    from PySide6 import QtCore

    seen: list[str] = []

    def on_progress(f: float, text: str) -> None:
        seen.append(text)
        if cue in text:
            job.cancel()

    job.progress.connect(on_progress, QtCore.Qt.ConnectionType.DirectConnection)
    done: list[object] = []
    job.finished.connect(done.append)
    with qtbot.waitSignal(job.cancelled, timeout=timeout_ms):
        job.start()
    job.thread.wait(5000)
    return seen, done


def cancel_panel_at_first_report(qtbot, panel, timeout_ms: int) -> None:
    """Run a ShapePanel and press Cancel at its job's first progress report (a direct connection: inside
    the job's thread); returns once the panel says the job was cancelled."""
    from PySide6 import QtCore

    job = None

    def cancel_now(f: float, text: str) -> None:
        job.cancel()

    with qtbot.waitSignal(panel.jobCancelled, timeout=timeout_ms):
        job = panel.run()
        job.progress.connect(cancel_now, QtCore.Qt.ConnectionType.DirectConnection)
