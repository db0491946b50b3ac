"""Ground-truth sidecar of a synthetic recording: the deforming surface at every frame, in one compressed
.npz written atomically, so that a recording `<name>.db3` can carry `<name>.gt.npz` for evaluating
geometry and deformation error later.

File layout (numpy .npz, compressed): `format` (str, "nrstudio-synthetic-gt"), `version` (int, 1),
`faces` int32 [F, 3], `vertices` float32 [N, V, 3] metres in the camera frame of each frame (vertex k
corresponds over time), `timestamps` float64 [N] seconds, `intrinsics` float64 [6]
(fx, fy, cx, cy, width, height), `fps` float64 scalar, `config` str (the SceneConfig as JSON).
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fusion.atomic import atomic_path
from fusion.camera import Intrinsics
from fusion.errors import InputError

FORMAT = "nrstudio-synthetic-gt"
VERSION = 1


def groundtruth_path(recording: str | os.PathLike) -> Path:
    """The sidecar path of a recording: `foo.db3` -> `foo.gt.npz` (same folder, extension replaced)."""
    p = Path(recording)
    return p.with_name(p.name[: -len(p.suffix)] + ".gt.npz" if p.suffix else p.name + ".gt.npz")


@dataclass
class GroundTruth:
    """The surface of a synthetic scene at every frame.

    faces int32 [F, 3]; vertices float32 [N, V, 3] metres (camera frame of each frame); timestamps float64
    [N] seconds; intrinsics of the frames; fps; config: the scene configuration as a plain dict.
    """

    faces: np.ndarray
    vertices: np.ndarray
    timestamps: np.ndarray
    intrinsics: Intrinsics
    fps: float
    config: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Number of frames N."""
        return int(self.vertices.shape[0])

    def mesh_at(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(vertices float32 [V, 3] metres, faces int32 [F, 3]) of frame i."""
        return self.vertices[i], self.faces

    def positions(self, face_ids: np.ndarray, bary: np.ndarray, i: int) -> np.ndarray:
        """Positions at frame i of surface points (face_ids int [n], bary float [n, 3]): float32 [n, 3] metres."""
        tri = self.vertices[i].astype(np.float64)[self.faces[np.asarray(face_ids)]]
        return np.einsum("nk,nkc->nc", np.asarray(bary, np.float64), tri).astype(np.float32)


def _config_dict(cfg: object) -> dict:
    d = asdict(cfg)  # type: ignore[arg-type]
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def save_groundtruth(scene: "object", path: str | os.PathLike, frames: range | list[int] | None = None) -> Path:
    """Write the ground truth of a SyntheticScene (or a GroundTruth) to `path` (.npz, atomic).

    frames: which frames to store (default: all, in order). Returns the path written.
    """
    if isinstance(scene, GroundTruth):
        gt = scene
    else:
        idx = list(range(scene.n_frames)) if frames is None else [int(i) for i in frames]
        if not idx:
            raise ValueError("save_groundtruth: no frames to store")
        verts = np.stack([scene.mesh_at(i)[0] for i in idx]).astype(np.float32)
        gt = GroundTruth(scene.mesh_at(idx[0])[1], verts, np.array([scene.timestamp(i) for i in idx], np.float64),
                         scene.intrinsics, scene.fps, _config_dict(scene.cfg))
    k = gt.intrinsics
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, format=np.array(FORMAT), version=np.array(VERSION), faces=gt.faces.astype(np.int32),
            vertices=gt.vertices.astype(np.float32), timestamps=gt.timestamps.astype(np.float64),
            intrinsics=np.array([k.fx, k.fy, k.cx, k.cy, k.width, k.height], np.float64),
            fps=np.array(float(gt.fps)), config=np.array(json.dumps(gt.config)),
        )
    return path


def load_groundtruth(path: str | os.PathLike) -> GroundTruth:
    """Read a sidecar written by `save_groundtruth`. Raises InputError (naming the file) when the file is
    missing, not such a sidecar, truncated or inconsistent."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ground-truth file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z.files or str(z["format"]) != FORMAT:
                raise InputError(f"{path}: not an nrstudio synthetic ground-truth file")
            faces, verts = z["faces"], z["vertices"]
            ts, kk, fps = z["timestamps"], z["intrinsics"], float(z["fps"])
            cfg = json.loads(str(z["config"]))
    except InputError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise InputError(f"{path}: corrupt ground-truth file ({type(e).__name__}: {e})") from None
    if faces.ndim != 2 or faces.shape[1] != 3 or verts.ndim != 3 or verts.shape[2] != 3 or len(verts) == 0:
        raise InputError(f"{path}: ground-truth arrays have wrong shapes (faces {faces.shape}, vertices {verts.shape})")
    if faces.size and (faces.min() < 0 or faces.max() >= verts.shape[1]):
        raise InputError(f"{path}: ground-truth faces index outside the vertices")
    if len(ts) != len(verts) or kk.shape != (6,):
        raise InputError(f"{path}: ground-truth timestamps / intrinsics do not match the vertices")
    if not np.isfinite(verts).all():
        raise InputError(f"{path}: ground-truth vertices contain NaN or infinity")
    try:
        k = Intrinsics(float(kk[0]), float(kk[1]), float(kk[2]), float(kk[3]), int(kk[4]), int(kk[5]))
    except ValueError as e:
        raise InputError(f"{path}: bad intrinsics in ground-truth file ({e})") from None
    return GroundTruth(faces.astype(np.int32), verts.astype(np.float32), ts.astype(np.float64), k, fps, cfg)
