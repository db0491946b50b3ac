"""Point-to-point assignments for the quadratic-assignment training of NeuralQAAD (paper §3.4).

Convention: `perm` int64 [N] is a bijection from the decoder's output points to the target cloud's points,
output i is trained toward target[perm[i]]. The assignment loss is L(perm) = sum_i |y_i - x_perm[i]|^2.

QAAD_GREEDY (`greedy_assignment`): both clouds are split by the same k-d recursion with shared split planes
(the joint median along the joint bounding box's longest side), an optimal assignment (LAP) is solved inside
each leaf pair, and the points left over where a leaf's two sides differ in count are matched afterwards
(exactly when few, else by rounds of mutual nearest neighbours) into a perfect matching.

QAAD_REASSIGNMENT (`reassignment_step`, Algorithm 2): for a random subset of targets x_j, propose the
nearest outputs y_i; swapping the partners of (y_i, x_j) and of their current partners (y_a, x_b) changes
the loss by  |y_i - x_j|^2 + |y_a - x_b|^2 - |y_i - x_b|^2 - |y_a - x_j|^2 ; swaps with a change <= 0
are applied, at most one swap per point per step, so the summed loss never increases.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist


def assignment_loss(y: np.ndarray, x: np.ndarray, perm: np.ndarray) -> float:
    """Summed squared distance sum_i |y_i - x_perm[i]|^2 of outputs y float [N, 3] to targets x [N, 3]."""
    d = np.asarray(y, np.float64) - np.asarray(x, np.float64)[perm]
    return float((d * d).sum())


def is_permutation(perm: np.ndarray, n: int) -> bool:
    """True when perm int [n] holds every index 0..n-1 exactly once."""
    perm = np.asarray(perm)
    return perm.shape == (n,) and bool(np.array_equal(np.sort(perm), np.arange(n)))


def _shared_plane_leaves(y: np.ndarray, x: np.ndarray, leaf_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    stack = [(np.arange(len(y)), np.arange(len(x)))]
    while stack:
        iy, ix = stack.pop()
        if max(len(iy), len(ix)) <= leaf_size or min(len(iy), len(ix)) == 0:
            out.append((iy, ix))
            continue
        both = np.concatenate([y[iy], x[ix]])
        ax = int(np.argmax(both.max(0) - both.min(0)))
        t = float(np.median(both[:, ax]))
        ly, lx = y[iy, ax] <= t, x[ix, ax] <= t
        if ly.all() and lx.all() or (~ly).all() and (~lx).all():  # degenerate (all equal): split by rank
            sy, sx = np.argsort(y[iy, ax], kind="stable"), np.argsort(x[ix, ax], kind="stable")
            ly = np.zeros(len(iy), bool)
            lx = np.zeros(len(ix), bool)
            ly[sy[: len(iy) // 2]] = True
            lx[sx[: len(ix) // 2]] = True
        stack.append((iy[~ly], ix[~lx]))
        stack.append((iy[ly], ix[lx]))
    return out


def _complete(y: np.ndarray, x: np.ndarray, fy: np.ndarray, fx: np.ndarray, perm: np.ndarray, exact_max: int) -> None:
    """Match the free outputs fy to the free targets fx (equal counts) in place into perm."""
    while len(fy):
        if len(fy) <= exact_max:
            r, c = linear_sum_assignment(cdist(y[fy], x[fx], "sqeuclidean"))
            perm[fy[r]] = fx[c]
            return
        # mutual nearest neighbours among the free points, repeated
        _, nn_y = cKDTree(x[fx]).query(y[fy], k=1)
        _, nn_x = cKDTree(y[fy]).query(x[fx], k=1)
        mutual = nn_x[nn_y] == np.arange(len(fy))
        perm[fy[mutual]] = fx[nn_y[mutual]]
        keep_x = np.ones(len(fx), bool)
        keep_x[nn_y[mutual]] = False
        fy, fx = fy[~mutual], fx[keep_x]


def greedy_assignment(y: np.ndarray, x: np.ndarray, leaf_size: int = 1024, exact_max: int = 2048,
                      split: str = "median") -> np.ndarray:
    """QAAD_GREEDY: a perfect matching of outputs y float [N, 3] to targets x float [N, 3] from per-leaf
    LAP matches (squared Euclidean cost), completed on the leftovers.

    split: "median" (default) uses the EM-kD leaves (each cloud cut at its own median on the joint longest
    axis, so leaf pairs have equal counts and the LAPs already form a perfect matching); "plane" cuts both
    clouds by the same plane (joint median), leaf pairs then differ in count and the leftovers are matched
    afterwards (exact LAP when at most `exact_max`, else mutual-nearest-neighbour rounds).
    Returns perm int64 [N] (a permutation: output i -> target perm[i])."""
    from models.common.metrics import kd_leaf_pairs

    y = np.asarray(y, np.float64)
    x = np.asarray(x, np.float64)
    if y.shape != x.shape or y.ndim != 2:
        raise ValueError(f"greedy assignment needs two clouds of equal shape, got {y.shape} and {x.shape}")
    if split not in ("median", "plane"):
        raise ValueError(f"unknown split {split!r} (median|plane)")
    n = len(y)
    perm = -np.ones(n, dtype=np.int64)
    free_y, free_x = [], []
    leaves = kd_leaf_pairs(y, x, leaf_size) if split == "median" else _shared_plane_leaves(y, x, leaf_size)
    for iy, ix in leaves:
        if len(iy) and len(ix):
            r, c = linear_sum_assignment(cdist(y[iy], x[ix], "sqeuclidean"))
            perm[iy[r]] = ix[c]
            used_y = np.zeros(len(iy), bool)
            used_y[r] = True
            used_x = np.zeros(len(ix), bool)
            used_x[c] = True
            free_y.append(iy[~used_y])
            free_x.append(ix[~used_x])
        else:
            free_y.append(iy)
            free_x.append(ix)
    fy = np.concatenate(free_y) if free_y else np.zeros(0, np.int64)
    fx = np.concatenate(free_x) if free_x else np.zeros(0, np.int64)
    _complete(y, x, fy, fx, perm, exact_max)
    return perm


@dataclass(frozen=True)
class ReassignConfig:
    """QAAD_REASSIGNMENT settings: subset = targets proposed per step, knn = nearest outputs tried per
    proposed target (the best loss change among them is kept)."""

    subset: int = 4096
    knn: int = 4


def swap_delta(y: np.ndarray, x: np.ndarray, perm: np.ndarray, inv: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Loss change float [P] of giving target j to output i (and i's target to j's current output).

    y [N, 3] outputs, x [N, 3] targets, perm [N] output -> target, inv [N] its inverse, i, j int [P]."""
    a = inv[j]
    b = perm[i]

    def sq(u, v):
        d = u - v
        return (d * d).sum(-1)

    return sq(y[i], x[j]) + sq(y[a], x[b]) - sq(y[i], x[b]) - sq(y[a], x[j])


def reassignment_step(y: np.ndarray, x: np.ndarray, perm: np.ndarray, rng: np.random.Generator,
                      config: ReassignConfig = ReassignConfig(), tree: cKDTree | None = None) -> tuple[np.ndarray, int]:
    """One QAAD_REASSIGNMENT step (Algorithm 2) on outputs y float [N, 3], targets x float [N, 3].

    Returns (new perm int64 [N], number of swaps applied). The summed loss `assignment_loss` of the new
    perm is never larger than that of `perm`. `tree` may be a prebuilt cKDTree over y."""
    y = np.asarray(y, np.float64)
    x = np.asarray(x, np.float64)
    n = len(y)
    perm = perm.copy()
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)
    j = rng.choice(n, size=min(config.subset, n), replace=False)
    k = min(config.knn, n)
    tree = tree or cKDTree(y)
    _, cand = tree.query(x[j], k=k)
    cand = cand.reshape(len(j), k)
    deltas = np.stack([swap_delta(y, x, perm, inv, cand[:, c], j) for c in range(k)], axis=1)
    deltas[cand == inv[j][:, None]] = np.inf  # already partners: nothing to swap
    best = np.argmin(deltas, axis=1)
    d = deltas[np.arange(len(j)), best]
    i = cand[np.arange(len(j)), best]
    ok = d <= 0
    i, j, d = i[ok], j[ok], d[ok]
    order = np.argsort(d, kind="stable")
    used_y = np.zeros(n, bool)
    used_x = np.zeros(n, bool)
    swaps = 0
    for t in order:  # disjoint swaps only: each one changes the loss by its own delta
        ii, jj = int(i[t]), int(j[t])
        aa, bb = int(inv[jj]), int(perm[ii])
        if used_y[ii] or used_y[aa] or used_x[jj] or used_x[bb]:
            continue
        used_y[ii] = used_y[aa] = used_x[jj] = used_x[bb] = True
        perm[ii], perm[aa] = jj, bb
        swaps += 1
    return perm, swaps
