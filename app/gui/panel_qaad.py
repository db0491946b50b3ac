"""The NeuralQAAD panel: compress a set of clouds (captures or files) into one `.qaad` file and look at
what comes back.

A run brings the chosen clouds to one size (`points`: meshes, i.e. captures with faces such as mesh files,
sampled by area like `nrstudio compress` does; clouds resampled with `models.qaad.data.resample`), then
calls `models.qaad.inference.compress_clouds` (what `nrstudio compress` runs): the decoder is sized for
the requested compression ratio, trained for `iterations` steps (QAAD assignment MSE, or augmented
Chamfer), packed, decoded and measured (EM-kD and Chamfer-L1 to the inputs, input units).

Display: one animation frame per cloud of the set (the time slider walks through the set). Each frame
shows the original cloud and, side by side, its reconstruction shifted along +x by 1.25 times the set's
x extent; both are colored by patch: a reconstructed point by the template patch that decoded it, an
original point by the patch of the decoded point it is assigned to (the final QAAD assignment; in Chamfer
mode, its nearest decoded point).

Save / load: Export writes `qaad_compressed.qaad` (via `models.qaad.format.save_qaad`) besides the
per-frame PLYs (reconstructions unshifted), arrays and summary; "Save .qaad…" writes just the file; "Load .qaad…" reads one
(`load_qaad`: verified, InputError for a corrupt file), decodes it and shows the reconstructions (no
originals, so no EM-kD then).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6 import QtWidgets

from app.gui.captures import Capture
from app.gui.messages import notify
from app.gui.panels import Cancelled, JobContext, Layer, PanelResult, Param, ShapePanel, register_panel
from fusion.errors import InputError

FILE_NAME = "qaad_compressed.qaad"
"""name of the compressed file the export writes"""


@dataclass
class QAADResult(PanelResult):
    """A PanelResult carrying the compressed file (`models.qaad.format.QAADFile`, None for none)."""

    file: Any = None


def patch_palette(k: int) -> np.ndarray:
    """k well-separated colors uint8 [k, 3] (golden-ratio hue steps, alternating brightness)."""
    cols = [colorsys.hsv_to_rgb((0.13 + 0.618034 * i) % 1.0, 0.7, 0.95 if i % 2 == 0 else 0.75) for i in range(k)]
    return (np.asarray(cols).reshape(-1, 3) * 255).round().astype(np.uint8)


def decoded_patch_labels(n_points: int, per_patch: int) -> np.ndarray:
    """Patch of each decoded point int64 [N]: the decoder emits its points patch-major, M = per_patch each."""
    return np.arange(n_points) // int(per_patch)


def original_patch_labels(original: np.ndarray, decoded: np.ndarray, dec_labels: np.ndarray,
                          perm: np.ndarray | None) -> np.ndarray:
    """Patch of each original point int64 [N]: through the assignment perm int [N] (decoded point j is
    matched with original point perm[j]) when given, else the patch of the nearest decoded point.
    original float [N, 3], decoded float [N', 3], dec_labels int [N']."""
    if perm is not None and len(perm) == len(dec_labels) == len(original):
        out = np.empty(len(original), np.int64)
        out[np.asarray(perm, np.int64)] = dec_labels
        return out
    from scipy.spatial import cKDTree

    _, j = cKDTree(np.asarray(decoded, np.float64)).query(np.asarray(original, np.float64))
    return np.asarray(dec_labels)[j]


def dataset_from_captures(caps: list[Capture], points: int, seed: int):
    """Equal-size dataset of the clouds (`models.qaad.data.Dataset`, clouds float64 [I, points, 3], input
    units): each checked (non-empty, finite); a mesh (a capture with faces, e.g. a mesh file) is sampled
    uniformly by area with `points` points, as `nrstudio compress` does, a cloud is resampled to `points`;
    notes say which."""
    from models.common.io import Mesh, sample_surface
    from models.qaad.data import Dataset, check_cloud, resample

    if not caps:
        raise InputError("NeuralQAAD needs at least one cloud: choose captures or files")
    if points < 1:
        raise InputError(f"points per cloud must be positive, got {points}")
    rng = np.random.default_rng(seed)
    clouds, resampled, meshes = [], [], 0
    for c in caps:
        p = check_cloud(c.points, c.name)
        if c.is_mesh:
            p, _ = sample_surface(Mesh(p, np.asarray(c.faces, np.int64)), points, rng=rng)
            meshes += 1
        elif len(p) != points:
            resampled.append(f"{c.name} ({len(p)})")
            p = resample(p, points, rng)
        clouds.append(p)
    notes = []
    if resampled:
        notes.append(f"resampled {len(resampled)} cloud(s) to {points} points: " + ", ".join(resampled[:6])
                     + (" ..." if len(resampled) > 6 else ""))
    if meshes:
        notes.append(f"sampled {meshes} mesh(es) with {points} points each (by area)")
    return Dataset(np.stack(clouds), [c.name for c in caps], notes)


def check_ratio(n_clouds: int, n_points: int, ratio: float, patches: int, latent: int) -> None:
    """InputError (worded for the panel) when no decoder reaches `ratio` for this set
    (`models.qaad.model.sized_config`)."""
    from models.qaad.model import sized_config

    if n_points < patches:
        raise InputError(f"clouds of {n_points} points are too small for {patches} patches: lower 'Patches'")
    try:
        sized_config(n_clouds, n_points, ratio, patches, latent)
    except ValueError:
        raise InputError(f"no decoder reaches a compression ratio of {ratio:g} for {n_clouds} cloud(s) of {n_points} "
                         "points: lower 'Compression ratio', 'Patches' or 'Latent size', raise 'Points per cloud', "
                         "or add clouds") from None


def file_summary(f: Any, file_bytes: int) -> dict[str, Any]:
    """Summary entries describing a QAADFile (what a loaded file can tell without the originals)."""
    cfg = f.config
    return {
        "clouds": int(f.n_clouds),
        "points_per_cloud": int(cfg.n_points),
        "compression_ratio": f.n_clouds * cfg.n_points * 3 / f.stored_floats,
        "stored_floats": int(f.stored_floats),
        "file_bytes": int(file_bytes),
        "decoder": cfg.kind,
        "patches": int(cfg.patches),
        "latent": int(cfg.latent),
        "dtype": f.dtype,
    }


@register_panel
class QAADPanel(ShapePanel):
    """A set of clouds -> one small decoder + one latent code per cloud (.qaad), reconstruction beside each
    original, colored by patch."""

    key = "qaad"
    title = "NeuralQAAD"
    description = ("NeuralQAAD compression: the chosen clouds become one small decoder plus a latent code per cloud "
                   "(a .qaad file). Each frame shows an original (left) and its reconstruction (right), colored by "
                   "patch; EM-kD (mean matched distance, input units) and the compression ratio in the table.")
    inputs = ("Clouds",)
    sequence_inputs = ("Clouds",)
    params = (
        Param("patches", "Patches", "int", 8, 1, 256, tip="Patches K of the template cloud"),
        Param("latent", "Latent size", "int", 8, 1, 256, tip="Size of each cloud's latent code"),
        Param("iterations", "Iterations", "int", 150, 1, 1_000_000, tip="Training steps"),
        Param("points", "Points per cloud", "int", 1024, 16, 1_000_000,
              tip="Every cloud is resampled to this many points"),
        Param("ratio", "Compression ratio", "float", 10.0, 1.0, 10000.0, decimals=1,
              tip="Target ratio of dataset floats to stored floats; the network is the largest that reaches it"),
        Param("mode", "Training", "choice", "qaad", choices=("qaad", "chamfer"),
              tip="qaad: assignment MSE (the paper); chamfer: augmented Chamfer"),
        Param("fp16", "Store float16", "bool", False, tip="Store the weights as float16 (half the file)"),
        Param("seed", "Seed", "int", 0, 0, 2**31 - 1),
        Param("device", "Device", "choice", "auto", choices=("auto", "cpu", "cuda")),
    )
    order = 40

    def __init__(self, store: Any, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(store, parent)
        self.save_btn = self.add_button("Save .qaad…", self._save_dialog, "Write the compressed file of the last run")
        self.save_btn.setEnabled(False)
        self.load_btn = self.add_button("Load .qaad…", self._load_dialog, "Decompress a .qaad file and show it")
        self.jobFinished.connect(lambda _: self.save_btn.setEnabled(True))

    # ---------------------------------------------------------------- computation
    def compute(self, inputs: dict[str, Any], params: dict[str, Any], ctx: JobContext) -> PanelResult:
        """Compress the chosen clouds (progress through ctx; Cancel stops at the next training step), decode
        the packed file and build the side-by-side frames."""
        from models.qaad.format import to_bytes
        from models.qaad.inference import CompressConfig, compress_clouds, decode_file
        from models.qaad.training import Cancelled as QAADCancelled
        from models.qaad.training import TrainConfig

        caps = list(inputs["Clouds"])
        ctx.progress(0.0, "preparing the clouds")
        ds = dataset_from_captures(caps, int(params["points"]), int(params["seed"]))
        n = ds.clouds.shape[1]
        check_ratio(len(caps), n, float(params["ratio"]), int(params["patches"]), int(params["latent"]))
        train = TrainConfig(mode=str(params["mode"]), steps=int(params["iterations"]), batch=min(4, len(caps)),
                            samples=min(4096, n), seed=int(params["seed"]), device=str(params["device"]))
        cfg = CompressConfig(patches=int(params["patches"]), latent=int(params["latent"]), ratio=float(params["ratio"]),
                             train=train, fp16=bool(params["fp16"]), eval_leaf=min(1024, n))
        try:
            res = compress_clouds(ds, cfg, progress=lambda f, m: ctx.progress(0.02 + 0.9 * f, m),
                                  cancel=lambda: ctx.cancelled)
        except QAADCancelled:
            raise Cancelled() from None
        ctx.progress(0.93, "decoding")
        decoded = decode_file(res.file, str(params["device"]))
        frames = self.side_by_side(ds.clouds, decoded, res.file, res.fit.perms)
        summary: dict[str, Any] = {"emkd": res.emkd, "chamfer": res.chamfer}
        summary.update(file_summary(res.file, len(to_bytes(res.file))))
        summary.update({"iterations": res.fit.steps, "loss_first": res.fit.first_loss, "loss_last": res.fit.last_loss,
                        "training": str(params["mode"]), "seconds": res.seconds})
        if res.notes:
            summary["notes"] = "; ".join(res.notes)
        ctx.progress(1.0, "done")
        return QAADResult(summary=summary, frames=frames, file=res.file,
                          arrays={"per_cloud_emkd": np.asarray(res.per_cloud_emkd, np.float64),
                                  "decoded": decoded.astype(np.float32)})

    @staticmethod
    def side_by_side(originals: np.ndarray | None, decoded: np.ndarray, f: Any,
                     perms: np.ndarray | None = None) -> list[list[Layer]]:
        """One frame per cloud: the original (when given) and the reconstruction shifted along +x by 1.25x
        the set's x extent, both colored by patch. originals float [I, N, 3] or None, decoded float
        [I, N', 3] (input units), perms int [I, N] (assignments) or None."""
        k = int(f.config.patches)
        pal = patch_palette(k)
        dec_labels = decoded_patch_labels(decoded.shape[1], f.config.per_patch)
        frames = []
        if originals is not None:
            xs = np.concatenate([originals[..., 0].ravel(), decoded[..., 0].ravel()])
            shift = np.array([1.25 * max(float(np.ptp(xs)), 1e-9), 0.0, 0.0])
        for i in range(len(decoded)):
            rec = Layer("reconstruction", decoded[i] + (shift if originals is not None else 0.0), pal[dec_labels], size=3.0)
            if originals is None:
                frames.append([rec])
                continue
            perm = perms[i] if perms is not None else None
            lab = original_patch_labels(originals[i], decoded[i], dec_labels, perm)
            frames.append([Layer("original", originals[i], pal[lab], size=3.0), rec])
        return frames

    # ---------------------------------------------------------------- files
    def export(self, result: PanelResult, folder: Path) -> list[Path]:
        """The framework's export (per-frame PLYs, arrays, summary) plus the compressed file
        `qaad_compressed.qaad`. Reconstructions are written where they belong (not shifted beside the
        original as in the view)."""
        from dataclasses import replace

        from models.qaad.format import save_qaad

        decoded = result.arrays.get("decoded")
        if decoded is not None and len(decoded) == len(result.frames):
            frames = [[replace(l, points=decoded[i]) if l.name == "reconstruction" else l for l in f]
                      for i, f in enumerate(result.frames)]
            result = replace(result, frames=frames)
        out = super().export(result, folder)
        f = getattr(result, "file", None)
        if f is not None:
            save_qaad(folder / FILE_NAME, f)
            out.append(folder / FILE_NAME)
        return out

    def save_file(self, path: str | Path) -> Path:
        """Write the last result's compressed file to `path` (InputError when there is none)."""
        from models.qaad.format import save_qaad

        f = getattr(self.result, "file", None)
        if f is None:
            raise InputError("nothing to save: run the compression (or load a .qaad file) first")
        p = Path(path)
        save_qaad(p, f)
        self.log.emit("info", f"{self.title}: saved {p}")
        return p

    def load_file(self, path: str | Path, device: str = "cpu") -> QAADResult:
        """Read and verify a .qaad file, decode every cloud and show them (one frame per cloud, colored by
        patch). InputError for a missing or corrupt file."""
        from models.qaad.format import load_qaad
        from models.qaad.inference import decode_file

        p = Path(path)
        f = load_qaad(p)
        decoded = decode_file(f, device)
        summary: dict[str, Any] = {"file": p.name}
        summary.update(file_summary(f, p.stat().st_size))
        for k in ("training_mode", "train_steps", "loss_last"):
            if k in f.extra:
                summary[k] = f.extra[k]
        res = QAADResult(summary=summary, frames=self.side_by_side(None, decoded, f), file=f,
                         arrays={"decoded": decoded.astype(np.float32)})
        self.show_result(res)
        self.save_btn.setEnabled(True)
        self.log.emit("info", f"{self.title}: loaded {p} ({f.n_clouds} clouds of {f.config.n_points} points)")
        return res

    def _save_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save the compressed clouds", "clouds.qaad",
                                                        "NeuralQAAD files (*.qaad)")
        if path:
            try:
                self.save_file(path)
            except (InputError, OSError) as e:
                self.log.emit("error", f"{self.title}: save failed: {e}")
                notify(self, self.title, str(e))

    def _load_dialog(self) -> None:
        if self.running:
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load a .qaad file", "", "NeuralQAAD files (*.qaad);;All files (*)")
        if path:
            try:
                self.load_file(path)
            except (InputError, OSError) as e:
                self.log.emit("error", f"{self.title}: {e}")
                notify(self, self.title, str(e))
