"""Training and evaluation data of the neural tracker: RGB-D frame pairs with ground-truth flow and a graph.

A `PairSample` is one source -> target pair as NNRT trains on it: both RGB-D images, the ground-truth
optical flow and scene flow of the source pixels, and a deformation graph over the source surface (the
canonical frame of the pair is the source camera frame) with the ground-truth translation of each node.

Sources of pairs:
- `synthetic_pair` / `SyntheticPairs`: large-motion pairs rendered on the fly from fusion.synthetic
  scenes (random object, seed, speed, amplitude, frame gap, sensor noise, background), cached as a small
  .npz pool (`build_pool` / `load_pool`) so a training run does not re-render;
- `DeepDeformPairs`: every pair of a DeepDeform-layout tree (`<split>/<seq>/scene_flow/<obj>_<src>_<tgt>
  .sflow`, ../shared/data/README.md) for users with the real dataset; the pair's graph files
  (`graph_nodes/ graph_edges/ graph_edges_weights/ graph_clusters/ <obj>_<src>_<tgt>_*.bin`) are used when
  present, otherwise a graph is built over the source surface.

Flow conventions (tracker/networks.py): optical flow float32 [H, W, 2] pixels (du, dv) source -> target,
scene flow float32 [H, W, 3] metres; NaN where there is no ground truth.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fusion.camera import Intrinsics, backproject_depth
from fusion.errors import InputError
from fusion.graph import DeformationGraph, build_graph, edge_weights_for, skinning

__all__ = [
    "PairSample",
    "SyntheticPairConfig",
    "synthetic_pair",
    "build_pool",
    "save_pool",
    "load_pool",
    "DeepDeformPair",
    "DeepDeformPairs",
    "find_pairs",
    "load_pair",
    "read_graph_bins",
    "make_pair_sample",
    "TRAIN_SEEDS",
    "HELDOUT_SEED_BASE",
]

#: synthetic scene seeds used for training; held-out evaluation uses seeds >= HELDOUT_SEED_BASE
TRAIN_SEEDS = (0, 10000)
HELDOUT_SEED_BASE = 100000


@dataclass
class PairSample:
    """One source -> target RGB-D pair with ground truth and a graph on the source surface.

    src_color / tgt_color uint8 [H,W,3]; src_depth / tgt_depth float32 [H,W] metres (0 invalid);
    intrinsics: both frames' camera; src_mask bool [H,W]: the object pixels of the source (valid depth);
    flow float32 [H,W,2] pixels and scene_flow float32 [H,W,3] metres (NaN = no ground truth; None when the
    pair has none); graph: nodes in the source camera frame; node_translations float32 [N,3] metres
    (ground truth, NaN unknown); node_valid bool [N]: nodes with ground truth that stay visible;
    pixel_anchors int32 [H,W,4] / pixel_weights float32 [H,W,4]: skinning of every source pixel (-1 none);
    visible bool [H,W]: source pixels visible in the target (None = unknown); name: for reports.
    """

    src_color: np.ndarray
    src_depth: np.ndarray
    tgt_color: np.ndarray
    tgt_depth: np.ndarray
    intrinsics: Intrinsics
    src_mask: np.ndarray
    flow: np.ndarray | None
    scene_flow: np.ndarray | None
    graph: DeformationGraph
    node_translations: np.ndarray
    node_valid: np.ndarray
    pixel_anchors: np.ndarray
    pixel_weights: np.ndarray
    visible: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.intrinsics.width, self.intrinsics.height

    def source_points(self) -> np.ndarray:
        """Back-projected source depth: float32 [H,W,3] metres (zero where invalid)."""
        return backproject_depth(self.src_depth, self.intrinsics)


# --------------------------------------------------------------------------------------------------
# building a pair from images + ground truth
# --------------------------------------------------------------------------------------------------
def _node_pixels(points: np.ndarray, valid: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Flat pixel index of the valid source point nearest to each node (nodes are sampled from them)."""
    from scipy.spatial import cKDTree

    flat = np.flatnonzero(valid.ravel())
    _, nn = cKDTree(points.reshape(-1, 3)[flat]).query(nodes, k=1)
    return flat[np.asarray(nn, np.int64)]


def make_pair_sample(src_color: np.ndarray, src_depth: np.ndarray, tgt_color: np.ndarray, tgt_depth: np.ndarray,
                     k: Intrinsics, src_mask: np.ndarray | None, scene_flow: np.ndarray | None,
                     flow: np.ndarray | None = None, graph: DeformationGraph | None = None,
                     visible: np.ndarray | None = None, node_radius: float = 0.05, name: str = "",
                     min_nodes: int = 2, seed: int = 0) -> PairSample:
    """Assemble a PairSample: graph over the source surface (unless given), skinning, node ground truth.

    src_mask: object pixels (None: every pixel with depth); scene_flow [H,W,3] metres or None; flow
    [H,W,2] pixels (None: derived from the scene flow by projecting p + sf). Raises InputError when the
    source has too little valid depth to build a graph.
    """
    src_depth = np.where(np.isfinite(src_depth) & (src_depth > 0), src_depth, 0).astype(np.float32)
    tgt_depth = np.where(np.isfinite(tgt_depth) & (tgt_depth > 0), tgt_depth, 0).astype(np.float32)
    mask = src_depth > 0 if src_mask is None else (np.asarray(src_mask, bool) & (src_depth > 0))
    pts = backproject_depth(src_depth, k)
    if scene_flow is not None and flow is None:
        p2 = pts + np.where(np.isfinite(scene_flow), scene_flow, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = k.fx * p2[..., 0] / p2[..., 2] + k.cx
            v = k.fy * p2[..., 1] / p2[..., 2] + k.cy
        uu, vv = np.meshgrid(np.arange(k.width), np.arange(k.height))
        flow = np.stack([u - uu, v - vv], -1).astype(np.float32)
        flow[~mask] = np.nan
    if graph is None:
        if mask.sum() < 16:
            raise InputError(f"{name or 'pair'}: too little valid source depth ({int(mask.sum())} pixels) for a graph")
        graph = build_graph(pts[mask], None, radius=node_radius, k=8, seed=seed)
    if graph.num_nodes < min_nodes:
        raise InputError(f"{name or 'pair'}: the graph has only {graph.num_nodes} nodes")
    anchors, weights = skinning(pts.reshape(-1, 3), graph, k=4)
    anchors = anchors.reshape(k.height, k.width, 4)
    weights = weights.reshape(k.height, k.width, 4)
    anchors[~mask] = -1
    weights[~mask] = 0
    n = graph.num_nodes
    node_t = np.full((n, 3), np.nan, np.float32)
    node_valid = np.zeros(n, bool)
    if scene_flow is not None:
        pix = _node_pixels(pts, mask, graph.nodes)
        near = np.linalg.norm(pts.reshape(-1, 3)[pix] - graph.nodes, axis=1) < 0.5 * graph.radius
        sf = scene_flow.reshape(-1, 3)[pix]
        ok = near & np.isfinite(sf).all(1)
        if visible is not None:
            ok &= visible.ravel()[pix]
        node_t[ok] = sf[ok]
        node_valid = ok
    return PairSample(np.ascontiguousarray(src_color, np.uint8), src_depth, np.ascontiguousarray(tgt_color, np.uint8),
                      tgt_depth, k, mask, None if flow is None else flow.astype(np.float32),
                      None if scene_flow is None else scene_flow.astype(np.float32), graph, node_t, node_valid,
                      anchors.astype(np.int32), weights.astype(np.float32), visible, name)


# --------------------------------------------------------------------------------------------------
# synthetic pairs
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticPairConfig:
    """How synthetic large-motion pairs are drawn (ranges are sampled uniformly).

    width / height: image size; scenes: objects to draw from; seed_range: [lo, hi) scene seeds;
    speed / amplitude: SceneConfig ranges (motion speed and deformation size); gap: frame distance range
    (inclusive), a pair is (i, i + gap) or reversed; noise: sensor noise on the frames; background_prob:
    probability of a static textured background plane; node_radius: graph coverage radius (NNRT 0.05 m);
    n_frames: frames per scene; min_visible: pairs where less of the source stays visible are redrawn.
    """

    width: int = 160
    height: int = 120
    scenes: tuple[str, ...] = ("cloth", "cylinder", "humanoid")
    seed_range: tuple[int, int] = TRAIN_SEEDS
    speed: tuple[float, float] = (1.0, 5.0)
    amplitude: tuple[float, float] = (1.0, 2.0)
    gap: tuple[int, int] = (2, 16)
    noise: bool = True
    background_prob: float = 0.5
    node_radius: float = 0.05
    n_frames: int = 48
    min_visible: float = 0.3

    def heldout(self) -> "SyntheticPairConfig":
        """The same distribution with scene seeds that training never draws (>= HELDOUT_SEED_BASE)."""
        return replace(self, seed_range=(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + 10000))


def synthetic_pair(cfg: SyntheticPairConfig, rng: np.random.Generator, max_tries: int = 8) -> PairSample:
    """Draw and render one synthetic pair (see SyntheticPairConfig) with exact ground truth."""
    from fusion.synthetic import SceneConfig, make_scene

    last = None
    for _ in range(max_tries):
        name = str(rng.choice(cfg.scenes))
        seed = int(rng.integers(*cfg.seed_range))
        speed = float(rng.uniform(*cfg.speed))
        amp = float(rng.uniform(*cfg.amplitude))
        bg = bool(rng.random() < cfg.background_prob)
        sc = make_scene(SceneConfig(name, width=cfg.width, height=cfg.height, n_frames=cfg.n_frames, seed=seed,
                                    noise=cfg.noise, speed=speed, amplitude=amp, background=bg))
        gap = int(rng.integers(cfg.gap[0], cfg.gap[1] + 1))
        i = int(rng.integers(0, cfg.n_frames - gap))
        a, b = (i, i + gap) if rng.random() < 0.5 else (i + gap, i)
        fa, fb = sc.render(a), sc.render(b)
        mask = sc.layers(a).mask & (fa.depth > 0)
        vis = sc.visibility(a, b) & mask
        if mask.sum() < 64 or vis.sum() < cfg.min_visible * mask.sum():
            last = f"{name} seed {seed}: too little visible"
            continue
        sf = sc.scene_flow(a, b)
        of = sc.optical_flow(a, b)
        sf[~mask] = np.nan
        of[~mask] = np.nan
        tag = f"{name}-s{seed}-{a}-{b}"
        try:
            s = make_pair_sample(fa.color, fa.depth, fb.color, fb.depth, sc.intrinsics, mask, sf, of, visible=vis,
                                 node_radius=cfg.node_radius, name=tag)
        except InputError as e:
            last = str(e)
            continue
        s.meta = {"scene": name, "seed": seed, "speed": speed, "amplitude": amp, "background": bg, "src": a,
                  "tgt": b, "flow_px_mean": float(np.nanmean(np.linalg.norm(of[mask], axis=-1)))}
        return s
    raise RuntimeError(f"could not draw a usable synthetic pair ({last})")


_POOL_KEYS = ("src_color", "src_depth", "tgt_color", "tgt_depth", "src_mask", "flow", "scene_flow", "visible")


def build_pool(cfg: SyntheticPairConfig, n: int, seed: int = 0, progress=None) -> list[PairSample]:
    """n synthetic pairs drawn with a generator seeded by `seed`; progress(i) is called after each."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(int(n)):
        out.append(synthetic_pair(cfg, rng))
        if progress is not None:
            progress(i)
    return out


def save_pool(pairs: list[PairSample], path: str | Path) -> Path:
    """Write pairs to one compressed .npz (atomic): images, flows, graphs; skinning is recomputed on load."""
    from fusion.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {"count": np.array(len(pairs))}
    for i, s in enumerate(pairs):
        for key in _POOL_KEYS:
            arrays[f"{i}/{key}"] = getattr(s, key)
        k = s.intrinsics
        arrays[f"{i}/intrinsics"] = np.array([k.fx, k.fy, k.cx, k.cy, k.width, k.height], np.float64)
        arrays[f"{i}/nodes"] = s.graph.nodes
        arrays[f"{i}/edges"] = s.graph.edges
        arrays[f"{i}/radius"] = np.array(s.graph.radius)
        arrays[f"{i}/name"] = np.array(s.name)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_pool(path: str | Path) -> list[PairSample]:
    """Read a pool written by `save_pool` (InputError when missing or corrupt)."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: pair pool not found")
    try:
        z = np.load(path, allow_pickle=False)
        n = int(z["count"])
        out = []
        for i in range(n):
            kk = z[f"{i}/intrinsics"]
            k = Intrinsics(float(kk[0]), float(kk[1]), float(kk[2]), float(kk[3]), int(kk[4]), int(kk[5]))
            nodes, edges, radius = z[f"{i}/nodes"], z[f"{i}/edges"], float(z[f"{i}/radius"])
            valid = edges >= 0
            lengths = np.linalg.norm(nodes[np.where(valid, edges, 0)] - nodes[:, None], axis=-1)
            g = DeformationGraph(nodes, edges, radius, edge_weights_for(lengths, edges, radius))
            d = {key: z[f"{i}/{key}"] for key in _POOL_KEYS}
            out.append(make_pair_sample(d["src_color"], d["src_depth"], d["tgt_color"], d["tgt_depth"], k,
                                        d["src_mask"], d["scene_flow"], d["flow"], graph=g, visible=d["visible"],
                                        name=str(z[f"{i}/name"])))
    except InputError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: corrupt pair pool ({type(e).__name__}: {e})") from None
    return out


# --------------------------------------------------------------------------------------------------
# DeepDeform layout
# --------------------------------------------------------------------------------------------------
_PAIR_RE = re.compile(r"^(?P<obj>.+)_(?P<src>\d{6})_(?P<tgt>\d{6})(?P<rest>(_.*)?)$")


@dataclass(frozen=True)
class DeepDeformPair:
    """One pair of a DeepDeform sequence folder: seq (folder), object name, source / target frame numbers,
    the scene / optical flow files (None when absent)."""

    seq: Path
    obj: str
    src: int
    tgt: int
    scene_flow: Path | None
    optical_flow: Path | None

    @property
    def name(self) -> str:
        """A readable id."""
        return f"{self.seq.name}/{self.obj}_{self.src:06d}_{self.tgt:06d}"


def _seq_dirs(root: Path) -> list[Path]:
    from fusion.sources.folders import is_deepdeform_folder

    if is_deepdeform_folder(root):
        return [root]
    out = []
    for p in sorted(root.rglob("intrinsics.txt")):
        if is_deepdeform_folder(p.parent):
            out.append(p.parent)
    return out


def find_pairs(root: str | Path, with_flow_only: bool = True) -> list[DeepDeformPair]:
    """Every pair under a DeepDeform-layout root (a sequence folder or a tree of them).

    A pair is named by a scene_flow/<obj>_<src>_<tgt>.sflow file; with with_flow_only=False, pairs named
    only by graph files (graph_nodes/<obj>_<src>_<tgt>_*.bin) are listed too (scene_flow None). Raises
    InputError when root is missing or holds no DeepDeform sequence.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    seqs = _seq_dirs(root)
    if not seqs:
        raise InputError(f"{root}: no DeepDeform sequence folder (color/, depth/, intrinsics.txt) found")
    pairs: list[DeepDeformPair] = []
    for seq in seqs:
        found: dict[tuple[str, int, int], dict] = {}
        for sub, key in (("scene_flow", "sf"), ("optical_flow", "of"), ("graph_nodes", "g")):
            d = seq / sub
            if not d.is_dir():
                continue
            for f in sorted(d.iterdir()):
                m = _PAIR_RE.match(f.stem)
                if m is None or f.name.startswith("."):
                    continue
                k = (m["obj"], int(m["src"]), int(m["tgt"]))
                found.setdefault(k, {})[key] = f
        for (obj, a, b), files in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            if with_flow_only and "sf" not in files:
                continue
            pairs.append(DeepDeformPair(seq, obj, a, b, files.get("sf"), files.get("of")))
    return pairs


def _read_bin(path: Path, dtype: str, cols: int | None) -> np.ndarray:
    data = path.read_bytes()
    if len(data) < 4:
        raise InputError(f"{path}: graph file too short")
    n = int(np.frombuffer(data[:4], "<u4")[0])
    if cols is None:  # nodes: uint32 N, float32 [N,3]; clusters: uint32 N (+ uint32 1), int32 [N]
        for header, c in ((4, 3), (8, 1), (4, 1)):
            if len(data) == header + 4 * n * c:
                return np.frombuffer(data[header:], dtype).reshape(n, c)
        raise InputError(f"{path}: graph file size {len(data)} does not match its header (N={n})")
    k = int(np.frombuffer(data[4:8], "<u4")[0]) if len(data) >= 8 else -1
    if k <= 0 or len(data) != 8 + 4 * n * k:
        raise InputError(f"{path}: graph file size {len(data)} does not match its header ({n}x{k})")
    return np.frombuffer(data[8:], dtype).reshape(n, k)


def read_graph_bins(seq: str | Path, obj: str, src: int, tgt: int) -> DeformationGraph | None:
    """The DeepDeform graph of a pair (binary layouts in ../shared/data/deepdeform/PROVENANCE.txt), or None
    when the pair has no graph files. Nodes are in the source camera frame (metres); the radius is read from
    the file name suffix (`_geodesic_0.05`, default 0.05). Node clusters marked in graph_clusters are kept
    (all nodes are used). Raises InputError on a corrupt or inconsistent file."""
    seq = Path(seq)
    d = seq / "graph_nodes"
    if not d.is_dir():
        return None
    stem = f"{obj}_{src:06d}_{tgt:06d}"
    cands = sorted(p for p in d.iterdir() if p.name.startswith(stem) and p.suffix == ".bin")
    if not cands:
        return None
    fn = cands[0].name
    nodes = _read_bin(d / fn, "<f4", None).astype(np.float32)
    if nodes.shape[1] != 3:
        raise InputError(f"{d / fn}: graph nodes must be [N, 3]")
    ef = seq / "graph_edges" / fn
    if not ef.is_file():
        raise InputError(f"{ef}: graph edges file missing for {fn}")
    edges = _read_bin(ef, "<i4", 0).astype(np.int32)
    n = len(nodes)
    if edges.shape[0] != n or (edges >= n).any() or (edges < -1).any():
        raise InputError(f"{ef}: graph edges do not match {n} nodes")
    m = re.search(r"_(\d+(?:\.\d+)?)$", Path(fn).stem)
    radius = float(m.group(1)) if m else 0.05
    wf = seq / "graph_edges_weights" / fn
    if wf.is_file():
        ew = _read_bin(wf, "<f4", 0).astype(np.float32)
        if ew.shape != edges.shape:
            raise InputError(f"{wf}: edge weights {ew.shape} do not match edges {edges.shape}")
        ew = np.where(edges >= 0, ew, 0).astype(np.float32)
    else:
        valid = edges >= 0
        ew = edge_weights_for(np.linalg.norm(nodes[np.where(valid, edges, 0)] - nodes[:, None], axis=-1), edges, radius)
    if not np.isfinite(nodes).all():
        raise InputError(f"{d / fn}: graph nodes hold NaN or infinity")
    return DeformationGraph(nodes, edges, radius, ew, edge_mode="geodesic" if "geodesic" in fn else "euclidean")


def _frame_files(seq: Path, fid: int) -> tuple[Path, Path]:
    from fusion.sources.folders import DEPTH_EXT, IMAGE_EXT

    def find(sub: str, exts: tuple[str, ...]) -> Path | None:
        return next((seq / sub / f"{fid:06d}{e}" for e in exts if (seq / sub / f"{fid:06d}{e}").is_file()), None)

    color = find("color", IMAGE_EXT)
    depth = find("depth", DEPTH_EXT)
    if color is None:
        raise InputError(f"{seq / 'color'}: no color image for frame {fid:06d}")
    if depth is None:
        raise InputError(f"{seq / 'depth'}: no depth image for frame {fid:06d}")
    return color, depth


def load_frame_images(seq: Path, fid: int, obj: str | None = None,
                      depth_scale: float = 0.001) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Intrinsics]:
    """(color uint8 [H,W,3], depth float32 [H,W] m, mask bool [H,W] or None, intrinsics) of one frame of a
    DeepDeform sequence; mask from mask/<fid>_<obj>.png when present."""
    from fusion.sources.folders import load_color_image, load_depth_image, load_mask_image, read_intrinsics_file

    cf, df = _frame_files(seq, fid)
    depth = load_depth_image(df).astype(np.float32) * np.float32(depth_scale)
    color = load_color_image(cf)
    h, w = depth.shape
    if color.shape[:2] != (h, w):
        raise InputError(f"{cf}: color is {color.shape[1]}x{color.shape[0]} but depth is {w}x{h}")
    k = read_intrinsics_file(seq / "intrinsics.txt", w, h)
    mask = None
    if obj is not None:
        mf = seq / "mask" / f"{fid:06d}_{obj}.png"
        if mf.is_file():
            mask = load_mask_image(mf)
            if mask.shape != (h, w):
                raise InputError(f"{mf}: mask is {mask.shape[1]}x{mask.shape[0]} but depth is {w}x{h}")
    return color, depth, mask, k


def load_pair(pair: DeepDeformPair, node_radius: float = 0.05, use_graph_files: bool = True) -> PairSample:
    """Load a DeepDeform pair as a PairSample (graph from its files when present, else built)."""
    from fusion.synthetic import read_flow

    sc, sd, sm, k = load_frame_images(pair.seq, pair.src, pair.obj)
    tc, td, _, k2 = load_frame_images(pair.seq, pair.tgt, pair.obj)
    if (k2.width, k2.height) != (k.width, k.height):
        raise InputError(f"{pair.name}: source and target frames differ in size")
    h, w = sd.shape
    sf = of = None
    if pair.scene_flow is not None:
        raw = read_flow(pair.scene_flow)
        if raw.shape != (3, h, w):
            raise InputError(f"{pair.scene_flow}: scene flow is {raw.shape}, expected (3, {h}, {w})")
        sf = raw.transpose(1, 2, 0).copy()
        sf[~np.isfinite(sf).all(-1)] = np.nan
    if pair.optical_flow is not None:
        raw = read_flow(pair.optical_flow)
        if raw.shape != (2, h, w):
            raise InputError(f"{pair.optical_flow}: optical flow is {raw.shape}, expected (2, {h}, {w})")
        of = raw.transpose(1, 2, 0).copy()
        of[~np.isfinite(of).all(-1)] = np.nan
    mask = sm
    if sf is not None:
        gt = np.isfinite(sf).all(-1)
        mask = gt if mask is None else (mask & gt)
    graph = read_graph_bins(pair.seq, pair.obj, pair.src, pair.tgt) if use_graph_files else None
    if mask is None and graph is not None:  # no mask, no flow: the surface the graph covers
        pts = backproject_depth(sd, k).reshape(-1, 3)
        a, _ = skinning(pts, graph, k=1)
        mask = (a[:, 0] >= 0).reshape(h, w) & (sd > 0)
    if of is not None and sf is not None:
        of[~mask] = np.nan
    s = make_pair_sample(sc, sd, tc, td, k, mask, sf, of, graph=graph, node_radius=node_radius, name=pair.name)
    s.meta = {"seq": str(pair.seq), "object": pair.obj, "src": pair.src, "tgt": pair.tgt,
              "graph_from_files": graph is not None}
    return s


class DeepDeformPairs:
    """All ground-truth pairs of a DeepDeform-layout tree as a map-style dataset of PairSample."""

    def __init__(self, root: str | Path, node_radius: float = 0.05, with_flow_only: bool = True) -> None:
        self.pairs = find_pairs(root, with_flow_only)
        self.node_radius = node_radius

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> PairSample:
        return load_pair(self.pairs[i], self.node_radius)
