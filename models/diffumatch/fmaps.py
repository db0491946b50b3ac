"""Functional maps: conversions to and from point-to-point maps, ZoomOut, the classical solve.

NAMING CONVENTION (the one used everywhere in models/diffumatch, stated once, following pyFM):
  * `FM_12` is a functional map from shape 1 to shape 2: it maps spectral coefficients of a function on
    shape 1 (in evecs1[:, :k1]) to coefficients of the transferred function on shape 2; shape [k2, k1].
  * `p2p_21` is a point-to-point map given on shape 2: int64 [n2], `p2p_21[j]` is the vertex of shape 1
    matched to vertex j of shape 2. Pulling back a function f1 on shape 1 gives f2 = f1[p2p_21], which is
    why FM_12 and p2p_21 describe the same correspondence.
In `nrstudio match SRC TGT`, shape 1 = SRC and shape 2 = TGT: the MAP file is p2p_21 (one line per
target vertex with its source vertex index).

pyFM (PyPI `pyfmaps`) implements the same functions; it is not a dependency here because it pulls in
scikit-learn for a k-NN query that scipy's cKDTree does, and the functions below are a few lines each.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def p2p_to_fm(p2p_21: np.ndarray, evecs1: np.ndarray, evecs2: np.ndarray, mass2: np.ndarray | None = None) -> np.ndarray:
    """The functional map FM_12 [k2, k1] of a point-to-point map p2p_21 [n2].

    FM_12 = pinv(evecs2) @ evecs1[p2p_21]; with `mass2` [n2] (evecs2 mass-orthonormal) the projection
    evecs2.T @ diag(mass2) @ evecs1[p2p_21] is used instead of the pseudo-inverse.
    evecs1 float [n1, k1], evecs2 float [n2, k2].
    """
    pulled = evecs1[np.asarray(p2p_21)]  # [n2, k1]
    if mass2 is None:
        return np.linalg.lstsq(evecs2, pulled, rcond=None)[0]
    return evecs2.T @ (mass2[:, None] * pulled)


def fm_to_p2p(FM_12: np.ndarray, evecs1: np.ndarray, evecs2: np.ndarray) -> np.ndarray:
    """The point-to-point map p2p_21 [n2] of a functional map FM_12 [k2, k1] (nearest neighbours).

    Each vertex j of shape 2 is matched to the vertex i of shape 1 whose spectral embedding
    evecs1[i, :k1] @ FM_12.T is closest (Euclidean) to evecs2[j, :k2]. evecs1 [n1, >=k1], evecs2 [n2, >=k2].
    """
    k2, k1 = FM_12.shape
    emb1 = evecs1[:, :k1] @ FM_12.T  # [n1, k2]
    emb2 = evecs2[:, :k2]
    return nearest_neighbours(emb1, emb2)


def nearest_neighbours(points: np.ndarray, queries: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Index int64 [m] of the nearest row of points [n, d] for each row of queries [m, d] (Euclidean).

    A KD-tree for d <= 8; above, chunked brute force through |q|^2 - 2 q.p + |p|^2 (matrix products are
    far faster than a KD-tree in the 30-150 dimensions of spectral embeddings).
    """
    if points.shape[1] <= 8:
        return np.asarray(cKDTree(points).query(queries, k=1)[1], dtype=np.int64)
    pn = (points**2).sum(1)
    out = np.empty(len(queries), dtype=np.int64)
    for a in range(0, len(queries), chunk):
        q = queries[a : a + chunk]
        out[a : a + chunk] = np.argmin(pn[None, :] - 2.0 * (q @ points.T), axis=1)
    return out


def fm_to_p2p_reference(FM_12: np.ndarray, evecs1: np.ndarray, evecs2: np.ndarray) -> np.ndarray:
    """Slow, obviously-correct version of `fm_to_p2p`: brute-force argmin over all pairwise distances."""
    k2, k1 = FM_12.shape
    emb1 = evecs1[:, :k1] @ FM_12.T
    emb2 = evecs2[:, :k2]
    d = ((emb2[:, None, :] - emb1[None, :, :]) ** 2).sum(-1)
    return np.argmin(d, axis=1).astype(np.int64)


def zoomout(FM_12: np.ndarray, evecs1: np.ndarray, evecs2: np.ndarray, k_final: int, step: int = 1,
            mass2: np.ndarray | None = None, sub: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ZoomOut refinement (Melzi et al. 2019): alternate p2p <- FM and FM <- p2p growing the size by `step`.

    FM_12 [k, k] -> (FM_12 [k_final, k_final], p2p_21 [n2] on the full shapes). `sub` = (indices on
    shape 1, indices on shape 2) runs the iterations on vertex subsets (faster; the final p2p uses all
    vertices); without `sub`, `mass2` [n2] gives the mass-weighted projection.
    """
    k = FM_12.shape[0]
    k_final = min(k_final, evecs1.shape[1], evecs2.shape[1])
    e1, e2 = (evecs1, evecs2) if sub is None else (evecs1[sub[0]], evecs2[sub[1]])
    m2 = mass2 if sub is None else None
    FM = FM_12
    while k < k_final:
        k = min(k + step, k_final)
        p2p = fm_to_p2p(FM, e1, e2)
        FM = p2p_to_fm(p2p, e1[:, :k], e2[:, :k], m2)
    p2p_21 = fm_to_p2p(FM, evecs1, evecs2)
    return FM, p2p_21


def laplacian_mask(evals1: np.ndarray, evals2: np.ndarray, gamma: float = 0.5) -> np.ndarray:
    """Resolvent Laplacian-commutativity mask [k2, k1] (Ren et al. 2019, as in ULRSSM / DUO-FMNet).

    mask_ij = |R(l2_i) - R(l1_j)|^2 with R(l) = (l^g / (l^{2g} + 1), 1 / (l^{2g} + 1)) after scaling
    eigenvalues by their common maximum: penalises C_ij between mismatched frequencies.
    """
    s = max(float(np.max(evals1)), float(np.max(evals2)), 1e-12)
    g1 = (np.clip(evals1, 0, None) / s) ** gamma
    g2 = (np.clip(evals2, 0, None) / s) ** gamma
    g1, g2 = g1[None, :], g2[:, None]
    re = g2 / (g2**2 + 1) - g1 / (g1**2 + 1)
    im = 1 / (g2**2 + 1) - 1 / (g1**2 + 1)
    return re**2 + im**2


def solve_fm(A: np.ndarray, B: np.ndarray, mask: np.ndarray, lam: float) -> np.ndarray:
    """Regularised functional map: argmin_C ||C A - B||^2 + lam * sum_ij mask_ij C_ij^2.

    A [k1, d] descriptor coefficients on shape 1, B [k2, d] on shape 2, mask [k2, k1] -> C = FM_12
    [k2, k1]. Row i solves (A A^T + lam diag(mask_i)) c_i = A B_i^T.
    """
    AAt = A @ A.T
    BAt = B @ A.T
    C = np.zeros((B.shape[0], A.shape[0]))
    for i in range(B.shape[0]):
        C[i] = np.linalg.solve(AAt + lam * np.diag(mask[i]), BAt[i])
    return C
