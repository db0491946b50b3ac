"""Evaluation of 4D reconstructions (all in unit scale, see config.py).

* ``chamfer``: the Occupancy Flow / LPDC Chamfer distance: sample points on the predicted and on the
  ground-truth surface of a frame; mean squared nearest-neighbour distance from each set to the other,
  the two means summed; averaged over frames.
* ``correspondence_l2`` (Occupancy Flow's `eval_correspondences_mesh`): the ground-truth surface at
  t0 is densely sampled (random faces + barycentric weights) and those samples are tracked through
  time with the same barycentric weights on every ground-truth frame. Every predicted t0 vertex is
  matched to its nearest tracked sample at t0; at frame k the error is the mean over vertices of the
  Euclidean distance between the vertex's predicted position and its matched sample's true position
  at k. The figure is the mean over all T frames (frame 0 included, as Occupancy Flow does).
* ``iou``: volumetric IoU of predicted and ground-truth meshes per frame on uniform points of the
  padded unit cube (inside tests by ray parity), averaged over frames; only for watertight ground truth.
* nearest-neighbour tracking (Occupancy Flow's `eval_correspondences_NN` baseline): the position of a
  t0 point at frame k is its nearest neighbour in frame k's input cloud; "chained" variant: the
  nearest neighbour of its position at frame k-1.

Fast paths use scipy's cKDTree; `*_reference` functions are brute-force numpy versions for tests.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from models.common.metrics import chamfer_l2 as _chamfer_l2_kdtree
from models.lpdc.data import face_areas, from_barycentric, mesh_occupancy, sample_barycentric


def chamfer_l2(a: np.ndarray, b: np.ndarray) -> float:
    """mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2 for point sets a [N, 3], b [M, 3] (KD-tree)."""
    return _chamfer_l2_kdtree(a, b)


def chamfer_l2_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Brute-force numpy version of `chamfer_l2` (O(N M) memory)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return float(d2.min(axis=1).mean() + d2.min(axis=0).mean())


def correspondence_l2(pred: np.ndarray, gt_tracks: np.ndarray) -> tuple[float, np.ndarray]:
    """Occupancy Flow's correspondence error.

    pred [T, V, 3]: predicted positions of the t0 vertices at every frame; gt_tracks [T, M, 3]: tracked
    ground-truth surface samples. Returns (mean over frames, per-frame errors [T]).
    """
    _, ind = cKDTree(gt_tracks[0]).query(pred[0], k=1)
    per = np.linalg.norm(pred - gt_tracks[:, ind], axis=-1).mean(axis=1)
    return float(per.mean()), per


def correspondence_l2_reference(pred: np.ndarray, gt_tracks: np.ndarray) -> tuple[float, np.ndarray]:
    """Brute-force numpy version of `correspondence_l2`."""
    d2 = ((pred[0][:, None, :] - gt_tracks[0][None, :, :]) ** 2).sum(-1)
    ind = d2.argmin(axis=1)
    per = np.array([np.linalg.norm(pred[k] - gt_tracks[k][ind], axis=-1).mean() for k in range(len(pred))])
    return float(per.mean()), per


def iou_from_occupancy(a: np.ndarray, b: np.ndarray) -> float:
    """|a ∧ b| / |a ∨ b| of two boolean occupancy arrays (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def nn_tracking(start: np.ndarray, clouds: np.ndarray, chained: bool = False) -> np.ndarray:
    """Nearest-neighbour tracking of points start [V, 3] (at t0) through clouds [T, N, 3] -> [T, V, 3].

    Frame 0 keeps `start`; at frame k >= 1 a point moves to the nearest point of cloud k to its t0
    position (Occupancy Flow's NN baseline) or, chained, to its position at frame k-1.
    """
    out = [np.asarray(start, dtype=np.float64)]
    for k in range(1, len(clouds)):
        q = out[-1] if chained else out[0]
        _, i = cKDTree(clouds[k]).query(q, k=1)
        out.append(np.asarray(clouds[k][i], dtype=np.float64))
    return np.stack(out)


def nn_tracking_reference(start: np.ndarray, clouds: np.ndarray, chained: bool = False) -> np.ndarray:
    """Brute-force numpy version of `nn_tracking`."""
    out = [np.asarray(start, dtype=np.float64)]
    for k in range(1, len(clouds)):
        q = out[-1] if chained else out[0]
        d2 = ((q[:, None, :] - clouds[k][None, :, :]) ** 2).sum(-1)
        out.append(np.asarray(clouds[k][d2.argmin(axis=1)], dtype=np.float64))
    return np.stack(out)


def sample_surface_points(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n area-uniform points [n, 3] on a triangle mesh (its vertices when it has no area)."""
    if len(faces) == 0 or face_areas(vertices, faces).sum() <= 0:
        return np.asarray(vertices, dtype=np.float64)[rng.integers(0, len(vertices), n)]
    fi, bc = sample_barycentric(vertices, faces, n, rng)
    return from_barycentric(vertices, faces, fi, bc)


def evaluate_sequence(pred: np.ndarray, pred_faces: np.ndarray, gt: np.ndarray, gt_faces: np.ndarray,
                      watertight: bool, rng: np.random.Generator, n_chamfer: int = 30_000, n_tracks: int = 50_000,
                      n_iou: int = 50_000, padding: float = 0.1) -> dict:
    """All figures for a predicted vertex sequence pred [T, V, 3] (faces [F, 3]) against the ground
    truth gt [T, Vg, 3] (faces [Fg, 3]), both in unit scale.

    Returns {"chamfer", "correspondence_l2", "iou" (None unless watertight), and per-frame lists}.
    """
    T = len(gt)
    fi, bc = sample_barycentric(gt[0], gt_faces, n_tracks, rng)
    tracks = np.stack([from_barycentric(gt[k], gt_faces, fi, bc) for k in range(T)])
    corr, corr_per = correspondence_l2(pred, tracks)
    ch = []
    ious = []
    half = 0.5 + padding / 2
    for k in range(T):
        a = sample_surface_points(pred[k], pred_faces, n_chamfer, rng)
        b = sample_surface_points(gt[k], gt_faces, n_chamfer, rng)
        ch.append(chamfer_l2(a, b))
        if watertight and len(pred_faces):
            q = rng.uniform(-half, half, size=(n_iou, 3))
            ious.append(iou_from_occupancy(mesh_occupancy(pred[k], pred_faces, q), mesh_occupancy(gt[k], gt_faces, q)))
    return {
        "chamfer": float(np.mean(ch)),
        "correspondence_l2": corr,
        "iou": float(np.mean(ious)) if ious else None,
        "per_frame": {"chamfer": [float(c) for c in ch], "correspondence_l2": [float(c) for c in corr_per],
                      "iou": [float(i) for i in ious] if ious else None},
    }
