"""Compress a dataset of clouds into a .qaad file and decompress it again; the panel-friendly runner.

`compress_clouds(dataset, config, progress, cancel)` is what a GUI panel or the CLI calls: it sizes the
decoder for the requested compression ratio, trains it (progress(fraction, message) callbacks, a cancel
flag), packs it, decodes the packed file and measures EM-kD / Chamfer against the inputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from fusion.errors import InputError
from models.common.io import save_mesh
from models.common.metrics import chamfer_l1, emkd
from models.qaad.data import Dataset, Normalisation
from models.qaad.format import QAADFile, pack
from models.qaad.model import build_decoder, count_floats, sized_config
from models.qaad.training import Cancelled, FitResult, ProgressFn, TrainConfig, _cancelled, fit, resolve_device


@dataclass(frozen=True)
class CompressConfig:
    """What to build and how long to train.

    kind: decoder, "qaad" (NeuralQAAD) or "atlasnet" (the AtlasNetV2-style baseline).
    patches: K. latent: size of each cloud's code. ratio: target compression ratio (dataset floats :
        stored floats); the network widths are the largest that reach it.
    train: training settings (its mode: "qaad" assignment MSE or "chamfer" augmented Chamfer).
    fp16: store the weights as float16. eval_leaf: EM-kD leaf size. eval_clouds: evaluate on this many
        clouds (evenly spread; None = all). match_floats: size the network to this stored float count
        instead (closest possible; used to give the baseline the same parameter count).
    """

    kind: str = "qaad"
    patches: int = 16
    latent: int = 8
    ratio: float = 100.0
    train: TrainConfig = TrainConfig()
    fp16: bool = False
    eval_leaf: int = 1024
    eval_clouds: int | None = None
    match_floats: int | None = None


@dataclass
class CompressResult:
    """Outcome of `compress_clouds`: the packed file, the training record, the measured errors (input
    units: mean EM-kD and Chamfer-L1 of the decoded clouds to the inputs, and per cloud), the compression
    ratio (dataset floats : stored floats), seconds (all of it) and notes for the user."""

    file: QAADFile
    fit: FitResult
    emkd: float
    chamfer: float
    per_cloud_emkd: list[float]
    evaluated: list[int]
    compression_ratio: float
    seconds: float
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict:
        """The --report dictionary (keys emkd, chamfer, compression_ratio, seconds, and details)."""
        cfg = self.file.config
        return {
            "emkd": self.emkd,
            "chamfer": self.chamfer,
            "compression_ratio": self.compression_ratio,
            "seconds": self.seconds,
            "clouds": self.file.n_clouds,
            "points_per_cloud": cfg.n_points,
            "stored_floats": self.file.stored_floats,
            "dtype": self.file.dtype,
            "decoder": cfg.kind,
            "patches": cfg.patches,
            "latent": cfg.latent,
            "training_mode": self.file.extra.get("training_mode"),
            "train_steps": self.fit.steps,
            "train_seconds": self.fit.seconds,
            "loss_first": self.fit.first_loss,
            "loss_last": self.fit.last_loss,
            "per_cloud_emkd": self.per_cloud_emkd,
            "evaluated_clouds": self.evaluated,
            "notes": self.notes,
        }


def decode_file(f: QAADFile, device: str = "cpu", instances: list[int] | None = None, chunk: int = 4) -> np.ndarray:
    """Decoded clouds of a .qaad file in input units: float64 [len(instances) or I, N, 3].

    All requested clouds go through the decoder's `decode_clouds` (inference mode, fp32 contiguous weights,
    the template's share of the first layer computed once); `chunk` is the batch of the generic path."""
    dev = resolve_device(device)
    model = f.build_model(dev)
    idx = list(range(f.n_clouds)) if instances is None else list(instances)
    if not idx:
        return np.zeros((0, f.config.n_points, 3), np.float64)
    inst = torch.as_tensor(idx, dtype=torch.long, device=dev)
    y = model.decode_clouds(inst, chunk=chunk).cpu().numpy()
    return f.normalisation.invert(y)


def evaluate(decoded: np.ndarray, targets: np.ndarray, leaf: int = 1024, cancel=None,
             progress: ProgressFn | None = None) -> tuple[list[float], list[float]]:
    """Per-cloud EM-kD and Chamfer-L1 (input units) of decoded float [J, N, 3] to targets float [J, N, 3]."""
    e, c = [], []
    for j in range(len(decoded)):
        if _cancelled(cancel):
            raise Cancelled("cancelled")
        e.append(emkd(decoded[j], targets[j], leaf_size=leaf))
        c.append(chamfer_l1(decoded[j], targets[j]))
        if progress:
            progress((j + 1) / len(decoded), f"evaluating {j + 1}/{len(decoded)}")
    return e, c


def compress_clouds(dataset: Dataset, config: CompressConfig = CompressConfig(), progress: ProgressFn | None = None,
                    cancel=None) -> CompressResult:
    """Train a decoder on dataset.clouds float [I, N, 3] (input units) and pack it into a QAADFile.

    progress(fraction in [0, 1], message) is called during training and evaluation; `cancel` (callable
    returning True, or a threading.Event) stops the run with Cancelled. InputError when the dataset cannot
    be compressed at the requested ratio (too few clouds / points for even the smallest network)."""
    t0 = time.perf_counter()
    clouds = np.asarray(dataset.clouds, np.float64)
    n_inst, n = clouds.shape[:2]
    if n < config.patches:
        raise InputError(f"clouds of {n} points are too small for {config.patches} patches")
    norm = Normalisation.fit(list(clouds))
    targets = norm.apply(clouds).astype(np.float32)
    try:
        mcfg = sized_config(n_inst, n, config.ratio, config.patches, config.latent, kind=config.kind,
                            match_floats=config.match_floats)
    except ValueError as e:
        raise InputError(f"cannot reach a compression ratio of {config.ratio:g} with {n_inst} cloud(s) of {n} "
                         f"points ({e}); lower --ratio or add clouds") from e
    model = build_decoder(mcfg, n_inst)
    model.init_template(targets[0])

    def sub(lo: float, hi: float) -> ProgressFn | None:
        return (lambda f, msg: progress(lo + (hi - lo) * f, msg)) if progress else None

    res = fit(model, targets, config.train, progress=sub(0.0, 0.85), cancel=cancel)
    extra = {"training_mode": config.train.mode, "train_steps": res.steps, "train_seconds": res.seconds,
             "loss_last": res.last_loss}
    f = pack(model, norm, dataset.names, fp16=config.fp16, extra=extra)
    if config.eval_clouds is None or config.eval_clouds >= n_inst:
        ev = list(range(n_inst))
    else:
        ev = sorted({int(round(v)) for v in np.linspace(0, n_inst - 1, max(1, config.eval_clouds))})
    decoded = decode_file(f, config.train.device, ev)
    e, c = evaluate(decoded, clouds[ev], config.eval_leaf, cancel, sub(0.85, 1.0))
    ratio = n_inst * n * 3 / f.stored_floats
    return CompressResult(f, res, float(np.mean(e)), float(np.mean(c)), e, ev, ratio, time.perf_counter() - t0,
                          list(dataset.notes))


def output_names(f: QAADFile) -> list[str]:
    """File names of the decompressed clouds: NNNN_<input stem>.ply, one per cloud."""
    return [f"{i:04d}_{Path(name).stem or 'cloud'}.ply" for i, name in enumerate(f.names)]


def write_clouds(f: QAADFile, out_dir: str | Path, device: str = "cpu", clouds: np.ndarray | None = None) -> list[Path]:
    """Decode every cloud of `f` (or take `clouds`, float [I, N, 3] input units, already decoded by
    `decode_file`) and write one PLY each into out_dir (created; files written atomically, only after all
    clouds are decoded). Returns the written paths. InputError when out_dir is an existing file."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if clouds is None:
        clouds = decode_file(f, device)
    elif len(clouds) != f.n_clouds:
        raise ValueError(f"{len(clouds)} decoded clouds for a file of {f.n_clouds}")
    paths = []
    for name, pts in zip(output_names(f), clouds):
        p = out / name
        save_mesh(p, pts)
        paths.append(p)
    return paths


def config_for_baseline(config: CompressConfig, n_instances: int, n_points: int) -> tuple[CompressConfig, int]:
    """The AtlasNetV2-style baseline's CompressConfig matching a QAAD config's stored float count
    (augmented-Chamfer training, same patches/latent/training budget); returns it and the QAAD float count."""
    qcfg = sized_config(n_instances, n_points, config.ratio, config.patches, config.latent, kind="qaad")
    target = count_floats(qcfg, n_instances)
    return replace(config, kind="atlasnet", train=replace(config.train, mode="chamfer"), match_floats=target), target
