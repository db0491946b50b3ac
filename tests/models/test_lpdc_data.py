"""LPDC data: exact procedural occupancy / correspondences, training examples, sequence loaders, D-FAUST layouts."""
from __future__ import annotations

import numpy as np
import pytest

from fusion.errors import InputError
from models.common.io import save_mesh
from models.lpdc.config import DataConfig, RealSource
from models.lpdc.data import (ExampleSampler, Normalisation, Part, ProceduralShape, RealSequenceSource, bend,
                              list_dfaust, load_dfaust, load_sequence_folder, make_procedural, procedural_example,
                              procedural_mesh_sequence, random_times, unbend)

TINY = DataConfig(n_frames=4, n_points=50, n_occ_t0=64, n_occ_t=16, n_corr=20)


def test_bend_inverse_and_arc_length(rng):
    x = np.stack([rng.uniform(-0.5, 1.0, 500), rng.uniform(-0.1, 0.1, 500), rng.uniform(-0.1, 0.1, 500)], axis=1)
    for kappa in (0.0, 1.3, -2.0):
        y = bend(x, kappa)
        np.testing.assert_allclose(unbend(y, kappa), x, atol=1e-12)
    # the axis keeps its length: points (s, 0, 0) land on a circle of radius 1/kappa at arc length s
    s = np.linspace(0, 1, 201)
    axis = bend(np.stack([s, 0 * s, 0 * s], axis=1), 2.0)
    seg = np.linalg.norm(np.diff(axis, axis=0), axis=1)
    assert seg.sum() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(np.linalg.norm(axis - [0, 0.5, 0], axis=1), 0.5, atol=1e-12)


def _one_tube(T=5):
    kap = np.linspace(-2.0, 2.5, T)
    R = np.repeat(np.eye(3)[None], T, axis=0)
    tr = np.zeros((T, 3))
    return ProceduralShape([Part("tube", R, tr, length=1.0, radius=0.1, kappa=kap)], T)


def test_tube_tracks_stay_on_the_surface_and_occupancy_is_exact(rng):
    shape = _one_tube()
    tracks = shape.tracks(300, rng)
    assert tracks.shape == (5, 300, 3)
    for k in range(5):
        assert np.abs(shape.sdf(tracks[k], k)).max() < 1e-9
    # occupancy agrees with the closed form: points on the bent axis are inside, points 0.15 off it are outside
    s = np.linspace(0.05, 0.95, 20)
    for k in range(5):
        ax = bend(np.stack([s, 0 * s, 0 * s], axis=1), shape.parts[0].kappa[k])
        assert shape.inside(ax, k).all()
        assert not shape.inside(ax + [0, 0, 0.15], k).any()
    # surface samples are spread evenly by area: along the tube the density is uniform
    pts = shape.parts[0].to_local(shape.surface(4000, 2, rng), 2)
    hist, _ = np.histogram(pts[(pts[:, 0] > 0) & (pts[:, 0] < 1), 0], bins=4)
    assert hist.min() > 0.8 * hist.max()


@pytest.mark.parametrize("kind", ["humanoid", "quadruped", "tubes"])
def test_procedural_example_fields(kind, rng):
    ex = procedural_example(TINY, rng, kind=kind, uneven=True)
    assert ex["inputs"].shape == (4, 50, 3) and ex["corr"].shape == (4, 20, 3)
    assert ex["occ_p0"].shape == (64, 3) and ex["occ_pt"].shape == (3, 16, 3) and ex["occ_t"].shape == (3, 16)
    assert ex["times"][0] == 0 and ex["times"][-1] == pytest.approx(1.0) and (np.diff(ex["times"]) > 0).all()
    assert np.abs(ex["inputs"]).max() < 0.52  # unit scale
    assert 0 < ex["occ_0"].mean() < 1 and set(np.unique(ex["occ_0"])) <= {0.0, 1.0}
    assert all(v.dtype == np.float32 for v in ex.values())


def test_procedural_shapes_occupancy_matches_signed_function(rng):
    times = random_times(3, False, rng)
    shape = make_procedural("humanoid", times, rng)
    q = rng.uniform(-1, 1, size=(2000, 3)) * [0.5, 1.0, 0.5]
    for k in range(3):
        assert np.array_equal(shape.inside(q, k), shape.sdf(q, k) < 0)
    tr = shape.tracks(200, rng)
    assert np.abs(shape.sdf(tr[0], 0)).max() < 1e-6  # tracked points start on the t0 surface


def test_random_times_even_and_uneven(rng):
    np.testing.assert_allclose(random_times(5, False, rng), np.linspace(0, 1, 5))
    t = random_times(17, True, rng)
    assert t[0] == 0 and t[-1] == pytest.approx(1) and (np.diff(t) > 0).all()
    assert not np.allclose(t, np.linspace(0, 1, 17))


def test_normalisation_unit_box(rng):
    p = rng.normal(size=(100, 3)) * [3, 1, 2] + 7
    n = Normalisation.from_points(p)
    u = n.to_unit(p)
    assert u.min() >= -0.5 - 1e-12 and u.max() <= 0.5 + 1e-12
    assert (u.max(0) - u.min(0)).max() == pytest.approx(1.0)
    np.testing.assert_allclose(n.to_world(u), p)
    with pytest.raises(InputError):
        Normalisation.from_points(np.ones((5, 3)))


@pytest.fixture(scope="module")
def tube_sequence():
    seq, times = procedural_mesh_sequence("tubes", 6, seed=3, resolution=24)
    return seq


def _write(folder, seq, ext=".obj"):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(seq.n_frames):
        save_mesh(folder / f"frame_{k}{ext}", seq.vertices[k], seq.faces)


def test_mesh_sequence_folder_roundtrip_in_natural_order(tmp_path, tube_sequence):
    _write(tmp_path / "seq", tube_sequence)
    (tmp_path / "seq" / "README.txt").write_text("ignored")
    sf = load_sequence_folder(tmp_path / "seq")
    assert sf.kind == "mesh" and [f.stem for f in sf.files] == [f"frame_{k}" for k in range(6)]
    ms = sf.mesh_sequence
    assert ms is not None and ms.watertight
    np.testing.assert_allclose(ms.vertices, tube_sequence.vertices, atol=1e-5)
    assert len(load_sequence_folder(tmp_path / "seq", max_frames=3, start=2).files) == 3


def test_natural_file_order(tmp_path):
    for name in ("10.xyz", "2.xyz", "1.xyz"):
        np.savetxt(tmp_path / name, np.random.default_rng(0).normal(size=(5, 3)))
    sf = load_sequence_folder(tmp_path)
    assert sf.kind == "cloud" and [f.name for f in sf.files] == ["1.xyz", "2.xyz", "10.xyz"]


def test_bad_folders_raise_input_error(tmp_path, tube_sequence):
    with pytest.raises(InputError, match="no such folder"):
        load_sequence_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no mesh or point-cloud"):
        load_sequence_folder(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    _write(mixed, tube_sequence)
    save_mesh(mixed / "frame_9.ply", tube_sequence.vertices[0], tube_sequence.faces)
    with pytest.raises(InputError, match="mixed file types"):
        load_sequence_folder(mixed)
    nan = tmp_path / "nan"
    nan.mkdir()
    for k in range(3):
        p = np.random.default_rng(k).normal(size=(20, 3))
        if k == 1:
            p[4, 1] = np.nan
        np.savetxt(nan / f"{k}.xyz", p)
    with pytest.raises(InputError, match="1.xyz.*NaN"):
        load_sequence_folder(nan)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99\n")
    with pytest.raises(InputError, match="0.ply"):
        load_sequence_folder(bad)


def test_dfaust_hdf5_and_obj_layouts(tmp_path, tube_sequence):
    h5py = pytest.importorskip("h5py")
    v = tube_sequence.vertices  # [T, V, 3]
    with h5py.File(tmp_path / "registrations_f.hdf5", "w") as f:
        f["50004_jumping_jacks"] = v.transpose(1, 2, 0)  # D-FAUST stores [V, 3, T]
        f["faces"] = tube_sequence.faces
    _write(tmp_path / "50002_running_on_spot", tube_sequence)
    assert list_dfaust(tmp_path) == ["50002_running_on_spot", "50004_jumping_jacks"]
    a = load_dfaust(tmp_path, "50004_jumping_jacks")
    np.testing.assert_allclose(a.vertices, v)
    assert np.array_equal(a.faces, tube_sequence.faces)
    b = load_dfaust(tmp_path, "50002_running_on_spot")
    assert b.vertices.shape == v.shape
    with pytest.raises(InputError, match="not found"):
        load_dfaust(tmp_path, "50009_punching")


def test_real_source_windows_and_examples(tmp_path, tube_sequence):
    _write(tmp_path / "seq", tube_sequence)
    src = RealSequenceSource(RealSource(str(tmp_path / "seq"), first=1, last=6, cyclic=True))
    rng = np.random.default_rng(0)
    for uneven in (False, True):
        idx, t = src.window(4, rng, uneven)
        assert len(set(idx.tolist())) == 4 and t[0] == 0 and t[-1] == 1 and (np.diff(t) > 0).all()
    ex = src.example(TINY, rng)
    assert ex["inputs"].shape == (4, 50, 3) and ex["corr"].shape == (4, 20, 3)
    assert 0 < ex["occ_0"].mean() < 1
    sampler = ExampleSampler(DataConfig(**{**TINY.__dict__, "real_sources": (RealSource(str(tmp_path / "seq")),),
                                           "real_fraction": 0.5}), seed=1)
    b = sampler.batch(3)
    assert b["inputs"].shape == (3, 4, 50, 3)


@pytest.mark.parametrize("kind", ["humanoid", "tubes"])
def test_vectorised_shape_queries_match_per_frame_reference(kind):
    rng = np.random.default_rng(4)
    times = random_times(4, True, rng)
    shape = make_procedural(kind, times, rng)
    q = rng.uniform(-1, 1, size=(4, 500, 3))
    ref = np.stack([shape.inside(q[k], k) for k in range(4)])
    assert np.array_equal(shape.inside_at(q, np.arange(4)), ref)
    a = shape.tracks(50, np.random.default_rng(9))
    b = shape.tracks_fast(50, np.random.default_rng(9))
    np.testing.assert_allclose(a, b, atol=1e-12)
    surf = shape.surface_frames(300, rng)
    for k in range(4):
        f = shape.sdf(surf[k], k)
        assert np.abs(f).max() < 1e-6  # on the union's surface (on one part, inside no other)
