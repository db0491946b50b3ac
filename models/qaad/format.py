"""The `.qaad` file: one decoder (weights, optionally fp16), the latent codes, and metadata, checksummed.

Layout (little endian):
    magic      8 bytes  b"\\x89QAAD\\r\\n\\x1a"
    version    uint32   FORMAT_VERSION
    meta_len   uint32   bytes of the JSON metadata
    data_len   uint64   bytes of the payload
    sha256     32 bytes of (metadata + payload)
    metadata   UTF-8 JSON: format version, model config, point count, normalisation, cloud names,
               dtype, stored float count, training summary
    payload    zlib-compressed .npz of the state arrays (parameters and latents; fp16 or fp32)

Reading checks every field and raises InputError naming the file (bad magic, unsupported version,
truncated, checksum mismatch, unreadable payload, missing or mis-shaped arrays). Writing is atomic.
"""
from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fusion.atomic import write_bytes_atomic
from fusion.errors import InputError
from models.qaad.data import Normalisation
from models.qaad.model import ModelConfig, build_decoder

MAGIC = b"\x89QAAD\r\n\x1a"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQ32s")


@dataclass
class QAADFile:
    """Contents of a .qaad file: config (ModelConfig), n_clouds, normalisation, names (one per cloud),
    state (parameter name -> float array, as stored), dtype ("float16" | "float32"), extra (free-form
    metadata, e.g. the training summary)."""

    config: ModelConfig
    n_clouds: int
    normalisation: Normalisation
    names: list[str]
    state: dict[str, np.ndarray]
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)

    @property
    def stored_floats(self) -> int:
        """Number of stored scalars (all arrays of the payload)."""
        return int(sum(a.size for a in self.state.values()))

    def build_model(self, device: str | torch.device = "cpu"):
        """The decoder with the stored weights (float32), in eval mode, on `device`."""
        model = build_decoder(self.config, self.n_clouds)
        model.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in self.state.items()})
        return model.to(device).eval()


def pack(model, normalisation: Normalisation, names: list[str], fp16: bool = False, extra: dict | None = None) -> QAADFile:
    """A QAADFile from a trained decoder (its parameters, moved to CPU; fp16 when asked)."""
    dt = np.float16 if fp16 else np.float32
    state = {k: v.detach().cpu().numpy().astype(dt) for k, v in model.state_dict().items()}
    return QAADFile(model.cfg, int(model.latents.shape[0]), normalisation, list(names), state,
                    "float16" if fp16 else "float32", dict(extra or {}))


def to_bytes(f: QAADFile) -> bytes:
    """Serialise a QAADFile (see the module docstring for the layout)."""
    buf = io.BytesIO()
    np.savez(buf, **f.state)
    payload = zlib.compress(buf.getvalue(), 9)
    meta = {
        "format": "nrstudio-qaad",
        "format_version": FORMAT_VERSION,
        "config": asdict(f.config),
        "n_clouds": f.n_clouds,
        "n_points": f.config.n_points,
        "normalisation": {"centre": list(f.normalisation.centre), "scale": f.normalisation.scale},
        "names": f.names,
        "dtype": f.dtype,
        "stored_floats": f.stored_floats,
        "extra": f.extra,
    }
    mb = json.dumps(meta).encode("utf-8")
    digest = hashlib.sha256(mb + payload).digest()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(mb), len(payload), digest) + mb + payload


def save_qaad(path: str | Path, f: QAADFile) -> int:
    """Write `f` to `path` atomically; returns the file size in bytes."""
    data = to_bytes(f)
    write_bytes_atomic(path, data)
    return len(data)


def from_bytes(data: bytes, name: str = "<bytes>") -> QAADFile:
    """Parse and verify a .qaad file's bytes; InputError (naming `name`) for anything wrong."""
    if len(data) < _HEADER.size:
        raise InputError(f"{name}: not a .qaad file (only {len(data)} bytes, truncated?)")
    magic, version, mlen, dlen, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InputError(f"{name}: not a .qaad file (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise InputError(f"{name}: unsupported .qaad format version {version} (this build reads {FORMAT_VERSION})")
    body = data[_HEADER.size :]
    if len(body) != mlen + dlen:
        raise InputError(f"{name}: truncated or padded .qaad file ({len(body)} bytes of body, header says {mlen + dlen})")
    if hashlib.sha256(body).digest() != digest:
        raise InputError(f"{name}: checksum mismatch, the .qaad file is corrupt")
    try:
        meta = json.loads(body[:mlen].decode("utf-8"))
        raw = zlib.decompress(body[mlen:])
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
        cfgd = meta["config"]
        cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfgd.items()})
        norm = Normalisation(tuple(float(v) for v in meta["normalisation"]["centre"]), float(meta["normalisation"]["scale"]))
        f = QAADFile(cfg, int(meta["n_clouds"]), norm, list(meta["names"]), state, str(meta["dtype"]), dict(meta.get("extra", {})))
    except InputError:
        raise
    except Exception as e:  # checksum was right but the content is not what we wrote
        raise InputError(f"{name}: unreadable .qaad content ({type(e).__name__}: {e})") from e
    # shapes must match the declared model
    try:
        expected = build_decoder(f.config, f.n_clouds).state_dict()
    except Exception as e:
        raise InputError(f"{name}: invalid model configuration in .qaad file ({e})") from e
    if set(expected) != set(state):
        raise InputError(f"{name}: .qaad weights do not match the model (missing/extra: "
                         f"{sorted(set(expected) ^ set(state))[:4]})")
    for k, v in expected.items():
        if tuple(v.shape) != state[k].shape:
            raise InputError(f"{name}: .qaad weight {k} has shape {state[k].shape}, expected {tuple(v.shape)}")
        if not np.isfinite(state[k]).all():
            raise InputError(f"{name}: .qaad weight {k} has NaN or infinite values")
    if len(f.names) != f.n_clouds:
        raise InputError(f"{name}: .qaad metadata lists {len(f.names)} names for {f.n_clouds} clouds")
    return f


def load_qaad(path: str | Path) -> QAADFile:
    """Read and verify a .qaad file; InputError for a missing, truncated or corrupt file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    return from_bytes(p.read_bytes(), str(p))
