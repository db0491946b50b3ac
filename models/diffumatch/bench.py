"""Bench section `diffumatch`: geodesic errors of DiffuMatch and both baselines on real pairs.

Pairs (../shared/data/shapes, see its PROVENANCE.txt):
  * TOSCA cat-00 (source) -> lion-00 (target). Ground truth `lion2cat`: lion vertex i -> cat vertex
    lion2cat[i], i.e. for each TARGET vertex its SOURCE vertex = p2p_21 directly ("approximate" map).
  * camel-gallop poses: file maps/I_to_J lists, for each vertex of mesh I, a vertex of mesh J; used as
    p2p_21 with source = J and target = I. These maps are NOISY (pyFM: "initial maps have noise"), so
    errors against them have a floor above zero; all methods are measured against the same maps.
The prior was trained on procedural shapes + ../shared/data/sequences only (no cat, lion or camel).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from fusion.paths import shared_data_dir

CAMEL_PAIRS = [(1, 3), (5, 7), (2, 4), (8, 10)]


def real_pairs(quick: bool) -> list[tuple[str, Path, Path, Path]]:
    """(name, source mesh, target mesh, ground-truth p2p_21 file) for the bench pairs present on disk."""
    d = shared_data_dir() / "shapes"
    out = []
    if (d / "lion2cat").exists():
        out.append(("cat->lion", d / "cat-00.off", d / "lion-00.off", d / "lion2cat"))
    cam = d / "camel_gallop"
    for i, j in CAMEL_PAIRS[: 1 if quick else len(CAMEL_PAIRS)]:
        m = cam / "maps" / f"{i}_to_{j}"
        if m.exists():
            out.append((f"camel{j:02d}->camel{i:02d}", cam / f"camel-gallop-{j:02d}.off", cam / f"camel-gallop-{i:02d}.off", m))
    return out


def run_bench(quick: bool) -> dict:
    """Bench figures: per pair geodesic errors + seconds of the three methods, and their means."""
    import torch

    from .matching import MatchConfig, match_files
    from .prior import load_prior

    torch.set_num_threads(1)  # small per-vertex nets: one thread is fastest on a shared machine
    pairs = real_pairs(quick)
    if not pairs:
        return {"skipped": f"no shape data in {shared_data_dir() / 'shapes'}"}
    cfg = MatchConfig(device="cpu")
    if quick:
        cfg = replace(cfg, steps=60, n_opt_vertices=1000, k_final=60, zoomout_sub=1200)
    prior = load_prior()
    out: dict = {"device": "cpu (1 torch thread)", "steps": cfg.steps, "pairs": {}}
    rows = []
    for name, s, t, g in pairs:
        r = match_files(s, t, cfg, prior, gt_file=g, n_eval=500 if quick else 2000)
        r.pop("p2p_21")
        out["pairs"][name] = r
        b = r["baselines"]
        rows.append((r["geodesic_error"], b["wks_zoomout"]["geodesic_error"], b["deep_fm"]["geodesic_error"],
                     r["seconds"], b["wks_zoomout"]["seconds"], b["deep_fm"]["seconds"]))
    a = np.array(rows, dtype=float)
    out["mean_geodesic_error"] = {"diffumatch": a[:, 0].mean(), "wks_zoomout": a[:, 1].mean(), "deep_fm": a[:, 2].mean()}
    out["seconds_per_pair"] = {"diffumatch": a[:, 3].mean(), "wks_zoomout": a[:, 4].mean(), "deep_fm": a[:, 5].mean()}
    out["diffumatch_below_both_baselines"] = bool(a[:, 0].mean() < min(a[:, 1].mean(), a[:, 2].mean()))
    out["gt_note"] = "cat->lion: approximate TOSCA map; camel pairs: noisy maps/I_to_J (error floor > 0)"
    return out
