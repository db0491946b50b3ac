"""Bench section `featmatch`: part-level Chamfer of feature matching vs. the two baselines on procedural
pairs with part labels, self-intersections introduced, and the time to deform a 5k-vertex mesh.

Part-level Chamfer (paper Table 1): for every semantic part present in both shapes, the Chamfer
distance (sum of the two mean NN distances, unit box) between the deformed source vertices of that part
and the target vertices of that part; averaged over the parts, then over the pairs.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from models.common.metrics import chamfer_l1

from .baselines import direct_matching, nearest_projection
from .config import FitConfig, MatchConfig
from .data import PART_NAMES, make_chair, make_shape
from .fitting import fit_shape
from .matching import feature_match
from .model import load_checkpoint, resolve_device
from .pipeline import DeformConfig, deform, edge_length_distortion, flipped_faces, new_pairs, self_intersecting_pairs
from .weights import default_weights_path

BENCH_SEED = 20_000  # far from the training collection's seed


def part_chamfer(v: np.ndarray, lab_v: np.ndarray, t: np.ndarray, lab_t: np.ndarray) -> tuple[float, dict[int, float]]:
    """Mean over shared part ids of chamfer_l1(v[lab_v == p], t[lab_t == p]); (mean, per part)."""
    per = {}
    for p in sorted(set(np.unique(lab_v)) & set(np.unique(lab_t))):
        per[int(p)] = chamfer_l1(v[lab_v == p], t[lab_t == p])
    return (float(np.mean(list(per.values()))) if per else float("nan")), per


def _pairs(quick: bool) -> list[tuple[str, object, object]]:
    rng = np.random.default_rng(BENCH_SEED)
    n = 1 if quick else 2
    out = []
    for i in range(n):
        out.append(("humanoid", make_shape("humanoid", rng), make_shape("humanoid", rng)))
        out.append(("animal", make_shape("animal", rng), make_shape("animal", rng)))
        out.append(("chair arm->no-arm", make_chair(rng, arms=True), make_chair(rng, arms=False)))
        if not quick:
            out.append(("chair", make_chair(rng), make_chair(rng)))
    return out


def run_bench(quick: bool, weights: str | None = None) -> dict:
    """Figures of the section (see the module docstring).

    quick=False: 8 pairs (2 × humanoid, animal, arm-chair -> chair, chair), the 5k mesh with T = 50;
    quick=True: 3 pairs and the 5k mesh with T = 10 (the matching time extrapolated to T = 50).

    weights: a checkpoint other than the shipped one (default assets/featmatch/featmatch_small.pt).
    """
    dev = resolve_device("auto")
    wpath = weights or default_weights_path()
    decoder, codes, meta = load_checkpoint(wpath, dev)
    init = codes.mean(0)
    mc_res = 32 if quick else 36
    fit = FitConfig()
    match = MatchConfig()
    methods = ("feature_matching", "direct_matching", "nn_projection")
    acc: dict[str, dict[str, list[float]]] = {m: {"part_chamfer": [], "chamfer": [], "introduced": [], "edge": [], "flipped": []}
                                              for m in methods}
    pairs_out = []
    for name, s_src, s_tgt in _pairs(quick):
        src, lab_s = s_src.mesh(mc_res)
        tgt, lab_t = s_tgt.mesh(mc_res)
        z_s, _ = fit_shape(decoder, src, init, fit, train_codes=codes)
        z_t, _ = fit_shape(decoder, tgt, init, fit, train_codes=codes)
        t_m = time.perf_counter()
        fm_res = feature_match(decoder, src.vertices, z_s, z_t, match, faces=src.faces)
        t_m = time.perf_counter() - t_m
        moved = {
            "feature_matching": fm_res.vertices.astype(np.float64),
            "direct_matching": direct_matching(decoder, src.vertices, z_s, z_t, match).vertices.astype(np.float64),
            "nn_projection": nearest_projection(src.vertices, tgt),
        }
        pairs_src = self_intersecting_pairs(src.vertices, src.faces)
        si_src = len(pairs_src)
        row = {"pair": name, "vertices": len(src.vertices), "self_intersections_source": si_src,
               "fm_seconds_match": t_m, "fm_shrunk_vertex_steps": fm_res.shrunk_vertex_steps,
               "fm_held_vertex_steps": fm_res.held_vertex_steps}
        for m, v in moved.items():
            pc, _ = part_chamfer(v, lab_s, tgt.vertices, lab_t)
            pairs = self_intersecting_pairs(v, src.faces)
            si, new = len(pairs), new_pairs(pairs, pairs_src)
            fl = flipped_faces(src.vertices, v, src.faces)
            acc[m]["part_chamfer"].append(pc)
            acc[m]["chamfer"].append(chamfer_l1(v, tgt.vertices))
            acc[m]["introduced"].append(new)
            acc[m]["edge"].append(edge_length_distortion(src.vertices, v, src.faces))
            acc[m]["flipped"].append(fl)
            row[m] = {"part_chamfer": pc, "self_intersections": si, "self_intersections_introduced": new,
                      "flipped_faces": fl}
        pairs_out.append(row)
    figures: dict = {"pairs": len(pairs_out), "weights": str(wpath), "device": str(dev),
                     "no_new_intersections": match.no_new_intersections}
    for m in methods:
        figures[m] = {
            "part_chamfer": float(np.mean(acc[m]["part_chamfer"])),
            "chamfer": float(np.mean(acc[m]["chamfer"])),
            "self_intersections_introduced": int(np.sum(acc[m]["introduced"])),
            "edge_length_distortion": float(np.mean(acc[m]["edge"])),
            "flipped_faces": int(np.sum(acc[m]["flipped"])),
        }
    fm = figures["feature_matching"]["part_chamfer"]
    figures["fm_below_direct"] = bool(fm < figures["direct_matching"]["part_chamfer"])
    figures["fm_below_nn_projection"] = bool(fm < figures["nn_projection"]["part_chamfer"])
    figures["per_pair"] = pairs_out
    figures.update(_bench_5k(decoder, codes, quick))
    return figures


def _mesh_5k(seed: int) -> object:
    import open3d as o3d

    from models.common.io import Mesh

    mesh, _ = make_shape("humanoid", np.random.default_rng(seed)).mesh(80)
    om = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices), o3d.utility.Vector3iVector(mesh.faces))
    om = om.simplify_quadric_decimation(target_number_of_triangles=9996)
    return Mesh(np.asarray(om.vertices), np.asarray(om.triangles, dtype=np.int64))


def _bench_5k(decoder: torch.nn.Module, codes: torch.Tensor, quick: bool) -> dict:
    """Deform a ~5k-vertex humanoid toward another (full pipeline: both fits + T=50, N=3)."""
    src = _mesh_5k(BENCH_SEED + 1)
    tgt = _mesh_5k(BENCH_SEED + 2)
    steps = 10 if quick else 50
    cfg = DeformConfig(match=replace(MatchConfig(), steps=steps))
    out = deform(src, tgt, decoder, codes, cfg)
    r = out.report
    res = {
        "vertices_5k": r["vertices"],
        "steps_5k": steps,
        "seconds_5k": r["seconds"],
        "cpu_seconds_5k": r["cpu_seconds"],
        "seconds_5k_fit": r["seconds_fit"],
        "seconds_5k_match": r["seconds_match"],
        "self_intersections_introduced_5k": r["self_intersections_introduced"],
        "self_intersections_source_5k": r["self_intersections_source"],
        "flipped_faces_5k": r["flipped_faces"],
        "chamfer_to_target_5k": r["chamfer_to_target"],
        "shrunk_vertex_steps_5k": r["shrunk_vertex_steps"],
        "held_vertex_steps_5k": r["held_vertex_steps"],
        "torch_threads": torch.get_num_threads(),
    }
    if quick:  # extrapolate the matching part to T = 50
        res["seconds_5k_extrapolated_T50"] = r["seconds_fit"] + r["seconds_match"] * 50 / steps
    return res
