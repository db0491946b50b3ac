"""DiffuMatch training data: procedural registered shapes, mesh folders, identity maps; matching API."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from fusion.errors import InputError
from models.common.io import save_mesh
from models.diffumatch import data


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NRSTUDIO_CACHE", str(tmp_path / "cache"))


def test_procedural_collections_are_registered_and_deformed():
    cols = data.procedural_collections(n_per_template=2, seed=3, target_vertices=600)
    assert [c.name for c in cols][0] == "humanoid" and len(cols) == 3
    for c in cols:
        assert len(c.verts) == 2 and c.verts[0].shape == c.verts[1].shape
        assert c.faces.max() < len(c.verts[0])
        assert np.abs(c.verts[0] - c.verts[1]).max() > 0.05  # different pose / proportions
    shapes = data.collection_bases(cols[1], k=20)
    maps = data.identity_maps(shapes, k=20)
    assert maps.shape == (2, 20, 20)
    # near-isometric members: the maps are close to orthogonal, with |C_00| = 1 (constants map to constants)
    for C in maps:
        assert abs(abs(C[0, 0]) - 1) < 0.05
        assert np.linalg.norm(C.T @ C - np.eye(20)) < 0.5 * np.linalg.norm(np.eye(20))
    self_map = data.identity_maps([shapes[0], shapes[0]], k=20)[0]
    assert np.abs(self_map - np.eye(20)).max() < 1e-5


def test_folder_collection_checks_connectivity(tmp_path):
    s = trimesh.creation.icosphere(subdivisions=1)
    v, f = np.asarray(s.vertices), np.asarray(s.faces)
    save_mesh(tmp_path / "0.obj", v, f)
    save_mesh(tmp_path / "1.obj", v * 1.1, f)
    col = data.folder_collection(tmp_path)
    assert len(col.verts) == 2 and np.array_equal(col.faces, f)
    save_mesh(tmp_path / "2.obj", v, f[:, ::-1])
    with pytest.raises(InputError):
        data.folder_collection(tmp_path)
    with pytest.raises(InputError):
        data.folder_collection(tmp_path / "missing")


def test_match_files_progress_and_cancel(tmp_path):
    from models.diffumatch.matching import MatchCancelled, MatchConfig, match_files
    from models.diffumatch.prior import Denoiser, PriorConfig

    s = trimesh.creation.icosphere(subdivisions=2)
    v = np.asarray(s.vertices) * np.array([1.5, 1.0, 0.7])
    save_mesh(tmp_path / "a.ply", v, np.asarray(s.faces))
    save_mesh(tmp_path / "b.ply", v * 1.2, np.asarray(s.faces))
    prior = Denoiser(PriorConfig(dim=16, depth=1)).eval()
    cfg = MatchConfig(steps=3, k_final=20, n_opt_vertices=100, device="cpu")
    seen: list[float] = []
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = match_files(tmp_path / "a.ply", tmp_path / "b.ply", cfg, prior, gt_identity=True, baselines=False,
                        progress=lambda f, m: seen.append(f))
    finally:
        torch.set_num_threads(n)
    assert r["p2p_21"].shape == (162,) and r["geodesic_error"] is not None
    assert seen[-1] == 1.0 and all(0 <= a <= b <= 1 for a, b in zip(seen, seen[1:]))
    with pytest.raises(MatchCancelled):
        match_files(tmp_path / "a.ply", tmp_path / "b.ply", cfg, prior, cancel=lambda: True)


def test_sds_term_reaches_the_map_and_schedule(tmp_path):
    """The SDS gradient is not a no-op: it has a measurable size relative to the other terms and changes
    the k x k map against the same run without it; the annealed schedule spans [sigma_min, sigma_max]."""
    from dataclasses import replace

    from models.diffumatch.matching import MatchConfig, match_pair, prepare, sds_sigma_range
    from models.diffumatch.prior import Denoiser, PriorConfig

    s = trimesh.creation.icosphere(subdivisions=2)
    v = np.asarray(s.vertices) * np.array([1.5, 1.0, 0.7])
    torch.manual_seed(0)
    prior = Denoiser(PriorConfig(k=12, dim=16, depth=1)).eval()
    with torch.no_grad():  # a denoiser whose output differs from its input (the zero-init head is a no-op)
        for p in prior.parameters():
            p.normal_(0.0, 0.2)
        prior.mask.fill_(1.0)
    cfg = MatchConfig(k=12, k_diff=16, k_final=16, steps=4, n_opt_vertices=162, width=8, c_out=8, n_blocks=1,
                      device="cpu", w_sds=5.0)
    P1, P2 = prepare(v, s.faces, cfg), prepare(v * np.array([1.1, 1.0, 0.9]), s.faces, cfg)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with_sds = match_pair(P1, P2, cfg, prior)
        without = match_pair(P1, P2, replace(cfg, w_sds=0.0), prior)
    finally:
        torch.set_num_threads(n)
    assert len(with_sds.sds_grad_ratio) == cfg.steps and min(with_sds.sds_grad_ratio) > 1e-3
    assert without.sds_grad_ratio == []
    rel = np.linalg.norm(with_sds.FM_12_init - without.FM_12_init) / np.linalg.norm(without.FM_12_init)
    assert rel > 1e-3
    a = replace(cfg, steps=11, sds_schedule="anneal", sds_sigma_min=0.05, sds_sigma_max=0.8)
    assert sds_sigma_range(a, 0) == pytest.approx((0.05, 0.8))
    assert sds_sigma_range(a, 10) == pytest.approx((0.05, 0.05))
    assert 0.05 < sds_sigma_range(a, 5)[1] < 0.8
    assert sds_sigma_range(cfg, 3) == (cfg.sds_sigma_min, cfg.sds_sigma_max)
