"""LPDC training: a tiny run lowers every loss (LPDC and ODE baseline), checkpoints round-trip, DDP code path."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from models.lpdc.config import preset
from models.lpdc.data import ExampleSampler
from models.lpdc.training import LOSS_NAMES, load_checkpoint, train


@pytest.fixture(scope="module")
def tiny_batch():
    cfg = preset("tiny", "lpdc")
    return ExampleSampler(cfg.data, seed=5).batch(cfg.train.batch_size)


@pytest.mark.parametrize("kind", ["lpdc", "ode"])
def test_tiny_training_lowers_each_loss(kind, tiny_batch, tmp_path):
    torch.set_num_threads(1)
    cfg = preset("tiny", kind)
    model, summary = train(cfg, tmp_path / f"{kind}.pt", device="cpu", seed=0, fixed_batch=tiny_batch)
    assert summary["steps"] == cfg.train.steps
    first, last = summary["first_losses"], summary["final_losses"]
    for name in LOSS_NAMES[kind]:
        assert last[name] < first[name], (name, first[name], last[name])
    assert last["total"] < 0.8 * first["total"]
    # the checkpoint (float16 weights) reproduces the trained model
    loaded, lcfg, lsum = load_checkpoint(tmp_path / f"{kind}.pt", "cpu")
    assert lcfg.kind == kind and lsum["steps"] == cfg.train.steps
    x = torch.from_numpy(tiny_batch["inputs"][:1])
    t = torch.from_numpy(tiny_batch["times"][:1])
    p = torch.from_numpy(tiny_batch["corr"][:1, 0])
    with torch.no_grad():
        a = model.eval().to_frames(p, model.encode(x, t)[1], t)
        b = loaded.to_frames(p, loaded.encode(x, t)[1], t)
    assert torch.allclose(a, b, atol=2e-2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_under_distributed_data_parallel(monkeypatch, tiny_batch):
    """The torchrun code path (process group + DistributedDataParallel) with a world of one process."""
    for k, v in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    cfg = preset("tiny", "lpdc")
    from dataclasses import replace

    cfg = replace(cfg, train=replace(cfg.train, steps=3))
    _, summary = train(cfg, None, device="cpu", seed=0, fixed_batch=tiny_batch)
    assert summary["ddp"] and summary["world_size"] == 1 and summary["steps"] == 3
    assert np.isfinite(summary["final_losses"]["total"])
    assert not torch.distributed.is_initialized()


def test_missing_or_wrong_checkpoint_is_an_input_error(tmp_path):
    from fusion.errors import InputError

    with pytest.raises(InputError, match="no such weights"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not an LPDC checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_train_cli_runs_warmup_lpdc_and_ode(tmp_path):
    """The registered trainer (`nrstudio train lpdc`): warm-up, then LPDC and the ODE baseline from it."""
    from models.lpdc.training import train_cli

    torch.set_num_threads(1)
    out = tmp_path / "lpdc.pt"
    result = train_cli(preset="tiny", out=out, device="cpu", steps=4, seed=0)
    assert set(result) == {"warmup", "lpdc", "ode"}
    assert result["lpdc"]["steps"] == 4 and result["lpdc"]["init_tensors"] > 0 and result["ode"]["init_tensors"] > 0
    assert out.is_file() and (tmp_path / "lpdc_ode.pt").is_file() and (tmp_path / "lpdc_warmup.pt").is_file()
    assert load_checkpoint(tmp_path / "lpdc_ode.pt")[0].kind == "ode"
