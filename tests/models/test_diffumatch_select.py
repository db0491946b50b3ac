"""orient_mode 'select' (models/diffumatch/matching.py): the local metric distortion that chooses between
the deep pipeline's maps without and with the orientation term, against its numpy reference and on
maps whose quality is known (identity, a global left/right flip of a symmetric shape, a partial flip)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.models.diffumatch_shapes import sym_blob
from models.diffumatch import matching as M
from models.diffumatch import spectral


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NRSTUDIO_CACHE", str(tmp_path / "cache"))


def _shape(v: np.ndarray, f: np.ndarray) -> spectral.SpectralShape:
    return spectral.prepare_shape(v, f, spectral.SpectralConfig(k=12))


def test_distortion_probe_matches_numpy_reference():
    v, f, perm = sym_blob(2)
    s = _shape(v, f)
    o = spectral.GeodesicOracle(s.verts, s.faces)
    dist = np.stack([o.from_vertex(i) for i in range(s.n)])
    rng = np.random.default_rng(3)
    p = np.where(rng.random(s.n) < 0.2, rng.integers(0, s.n, s.n), perm)  # a flip with 20 % random outliers
    probe = M.DistortionProbe(s, s, n_samples=25, radius=0.3, seed=1)
    ref = M.map_distortion_reference(p, dist, dist, probe.sample, 0.3)
    assert ref > 0.05
    assert probe(p) == pytest.approx(ref, rel=1e-9)


def test_distortion_sees_a_partial_flip_but_not_an_isometry():
    """Identity: 0. Global left/right flip of a symmetric shape: an isometry, ~0. Flipping only the
    front half (y > 0) leaves a seam where neighbours land on opposite sides: large. The global flip
    is what the orientation term handles; the partial one is what 'select' must reject."""
    v, f, perm = sym_blob(3)
    s = _shape(v, f)
    probe = M.DistortionProbe(s, s, n_samples=60, radius=0.15, seed=0)
    ident = np.arange(s.n)
    partial = np.where(v[:, 1] > 0, perm, ident)
    d_id, d_flip, d_part = probe(ident), probe(perm), probe(partial)
    assert d_id < 1e-9
    assert d_flip < 0.02
    assert d_part > 5 * max(d_flip, 0.01), (d_id, d_flip, d_part)


def test_select_mode_returns_the_lower_distortion_candidate(monkeypatch):
    """'select' runs the pipeline with w_orient = 0 and with the configured weight, keeps the map with
    the lower distortion, records both candidates and charges the time of both runs."""
    v, f, perm = sym_blob(2)
    cfg = M.MatchConfig(device="cpu", k=8, k_diff=12, k_final=12, n_opt_vertices=400, orient_mode="select",
                        n_distortion=30, n_orient=4)
    P = M.prepare(v, f, cfg)
    ident = np.arange(P.full.n)
    partial = np.where(v[:, 1] > 0, perm, ident)
    seen = []

    def fake_once(P1, P2, c, prior, progress, cancel):
        seen.append(c.w_orient)
        p2p = partial if c.w_orient == 0 else ident  # the run without the term is the bad one here
        return M.MatchResult(p2p, np.eye(3), 1.0, [0.0], p2p, np.eye(3), 2.0)

    monkeypatch.setattr(M, "_match_once", fake_once)
    res = M.match_pair(P, P, cfg, None)
    assert seen == [0.0, cfg.w_orient]
    assert np.array_equal(res.p2p_21, ident)
    assert [c["chosen"] for c in res.candidates] == [False, True]
    assert res.candidates[0]["distortion"] > res.candidates[1]["distortion"]
    assert res.cpu_seconds >= 4.0 and res.seconds >= 2.0
    # and the other way round: the run with the term is the bad one
    monkeypatch.setattr(M, "_match_once", lambda P1, P2, c, *a: M.MatchResult(
        ident if c.w_orient == 0 else partial, np.eye(3), 1.0, [0.0], None, None, 0.0))
    res = M.match_pair(P, P, replace(cfg, w_orient=2.0), None)
    assert np.array_equal(res.p2p_21, ident) and [c["w_orient"] for c in res.candidates] == [0.0, 2.0]
    assert [c["chosen"] for c in res.candidates] == [True, False]
