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
