"""fusion.device: the one resolution of device strings ("auto" | "cpu" | "cuda" | "cuda:N"), with and without
CUDA (simulated by patching torch.cuda), and the old names elsewhere are that same function."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.device import resolve_device, torch_device
from fusion.errors import InputError


def _gpus(monkeypatch, n: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_without_cuda(monkeypatch):
    _gpus(monkeypatch, 0)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    assert torch_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(InputError, match=rf"'{name}'.*no CUDA device"):
            resolve_device(name)
        with pytest.raises(InputError, match="no CUDA device"):
            torch_device(name)


def test_with_cuda(monkeypatch):
    _gpus(monkeypatch, 2)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    assert torch_device("cuda:1") == torch.device("cuda", 1)
    assert torch_device("auto").type == "cuda"
    with pytest.raises(InputError, match=r"'cuda:2'.*only 2 CUDA"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu", "mps", "CUDA", "cuda:", "cuda:x", "cuda:-1", "", " cpu", "cpu:0"])
def test_unknown_names_are_input_errors(monkeypatch, bad):
    _gpus(monkeypatch, 1)
    with pytest.raises(InputError, match="unknown device"):
        resolve_device(bad)
    with pytest.raises(InputError, match="unknown device"):
        torch_device(bad)


def test_not_a_string():
    with pytest.raises(InputError, match="must be a string"):
        resolve_device(None)  # type: ignore[arg-type]


def test_the_old_names_are_this_resolution(monkeypatch):
    import app.trackers
    import fusion.tsdf
    import models.common.metrics
    import models.diffumatch.matching
    import models.diffumatch.training
    import models.featmatch.model
    import models.lpdc.model
    import models.qaad.training
    import tracker.neural

    # string results, as before: the CLI's check and the volume's
    assert app.trackers.resolve_device is resolve_device
    assert fusion.tsdf.resolve_device is resolve_device
    # torch.device results, as before
    for f in (tracker.neural.resolve_device, models.lpdc.model.resolve_device, models.qaad.training.resolve_device,
              models.featmatch.model.resolve_device, models.diffumatch.training.resolve_device,
              models.diffumatch.matching._device, models.common.metrics._resolve_device):
        assert f is torch_device
    _gpus(monkeypatch, 0)
    with pytest.raises(InputError, match="no CUDA device"):  # as before for the ones that checked it ...
        tracker.neural.NeuralTracker(tracker.neural.NeuralTrackerConfig(device="cuda"))
    with pytest.raises(InputError, match="no CUDA device"):  # ... and now for those that left it to torch
        models.common.metrics.auction_assignment(np.ones((3, 3)), device="cuda")


def test_volume_on_cuda_is_refused_without_cuda(monkeypatch):
    from fusion.tsdf import TSDFVolume, VolumeConfig

    _gpus(monkeypatch, 0)
    cfg = VolumeConfig(voxel_size=0.05)
    lo, hi = np.zeros(3), np.ones(3) * 0.5
    with pytest.raises(InputError, match="no CUDA device"):
        TSDFVolume(cfg, lo, hi, device="cuda")
    vol = TSDFVolume(cfg, lo, hi, device="auto")
    assert vol.device == "cpu" and vol.backend == "numba"
