"""Orientation-aware functional maps (Ren, Poulenard, Wonka, Ovsjanikov 2018, "Continuous and
orientation-preserving correspondences via functional maps", Sec. 4).

For a scalar descriptor f on a surface with unit normal n, the orientation operator
    O_f(g) = < grad f  x  grad g , n >                    (a function, for every function g)
is linear in g and changes sign under any orientation-reversing map (a reflection R has det R = -1,
so R a x R b = -R (a x b) while the outward normal goes to R n). Expressed in the first k
(mass-orthonormal) eigenfunctions Phi of the shape it is the k x k matrix
    D_f = Phi^T M O_f Phi.
For corresponding descriptors f on shape 1 and f' on shape 2, a functional map FM_12 (fmaps.py
convention, [k2, k1]) of an orientation-PRESERVING correspondence commutes with them,
    FM_12 D1_f = D2_f' FM_12,
and one of an orientation-REVERSING correspondence (a left/right flip) anticommutes,
    FM_12 D1_f = -D2_f' FM_12.
The orientation energy sum_f ||FM_12 D1_f - D2_f' FM_12||^2 therefore separates a map from its
mirror image, which intrinsic descriptors (WKS, HKS), the Laplacian mask and the sign-invariant
diffusion prior cannot do.

Discretisation: per-vertex tangent-plane gradients (spectral.gradient_operators, frames rows = (t_x,
t_y, n) with t_y = n x t_x, right-handed), so in tangent coordinates
    O_f(g)_v = (grad_x f)_v (grad_y g)_v - (grad_y f)_v (grad_x g)_v.
Ren et al. and pyFM integrate per face instead; the per-vertex form uses the gradient operators that
the feature network already has. Normals follow the face winding; `handedness` makes the operator
independent of whether a mesh's faces wind outward or inward (sign of the enclosed volume).
"""
from __future__ import annotations

import numpy as np

from .spectral import SpectralShape


def handedness(verts: np.ndarray, faces: np.ndarray) -> float:
    """+1 when the face winding of a mesh gives outward normals (positive signed volume about the
    centroid), -1 when it gives inward normals; +1 for a point cloud (faces empty: its normals are
    already oriented away from the centroid). verts float [V, 3], faces int [F, 3]."""
    if len(faces) == 0:
        return 1.0
    v = verts - verts.mean(axis=0)
    t = v[faces]
    vol = float(np.einsum("fi,fi->f", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum()) / 6.0
    return 1.0 if vol >= 0 else -1.0


def orientation_field(shape: SpectralShape, f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """O_f(g) float64 [V] = < grad f x grad g, n > per vertex (times `handedness`) for scalar functions
    f, g [V] on the shape (units: those of f g / length^2)."""
    s = handedness(shape.verts, shape.faces)
    return s * ((shape.grad_x @ f) * (shape.grad_y @ g) - (shape.grad_y @ f) * (shape.grad_x @ g))


def orientation_ops(shape: SpectralShape, descr: np.ndarray, k: int) -> np.ndarray:
    """Orientation operators float64 [d, k, k] of the descriptors descr [V, d] in the first k
    eigenfunctions: D[c] = Phi^T M O_{descr[:, c]} Phi (Phi = shape.evecs[:, :k], M = diag(shape.mass)),
    multiplied by `handedness` of the shape. Dimensionless if descr is."""
    phi = shape.evecs[:, :k]
    gxp, gyp = shape.grad_x @ phi, shape.grad_y @ phi  # [V, k]
    gxf, gyf = shape.grad_x @ descr, shape.grad_y @ descr  # [V, d]
    mphi = shape.mass[:, None] * phi
    D = np.einsum("vi,vc,vj->cij", mphi, gxf, gyp, optimize=True) - np.einsum("vi,vc,vj->cij", mphi, gyf, gxp, optimize=True)
    return handedness(shape.verts, shape.faces) * D


def orientation_ops_reference(shape: SpectralShape, descr: np.ndarray, k: int) -> np.ndarray:
    """Slow, obviously-correct `orientation_ops`: per vertex, 3D gradient vectors (tangent coordinates
    lifted with the frame), an explicit cross product and its dot with the vertex normal build the dense
    operator O_f [V, V]; then Phi^T M O_f Phi. Same shapes and units as `orientation_ops`."""
    V = shape.n
    phi = shape.evecs[:, :k]
    Gx, Gy = shape.grad_x.toarray(), shape.grad_y.toarray()
    tx, ty, nrm = shape.frames[:, 0], shape.frames[:, 1], shape.frames[:, 2]
    s = handedness(shape.verts, shape.faces)
    out = np.zeros((descr.shape[1], k, k))
    for c in range(descr.shape[1]):
        f = descr[:, c]
        O = np.zeros((V, V))
        for v in range(V):
            gf = (Gx[v] @ f) * tx[v] + (Gy[v] @ f) * ty[v]  # grad f at v, 3D
            for u in np.nonzero((Gx[v] != 0) | (Gy[v] != 0))[0]:  # column u of the gradient stencil: grad of the hat e_u
                ge = Gx[v, u] * tx[v] + Gy[v, u] * ty[v]
                O[v, u] = np.dot(np.cross(gf, ge), nrm[v])
        out[c] = s * (phi.T @ (shape.mass[:, None] * (O @ phi)))
    return out


def normalise_pair(D1: np.ndarray, D2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale each descriptor's operator pair D1[c] [k1, k1], D2[c] [k2, k2] by one common factor so
    that (||D1[c]||^2 + ||D2[c]||^2) / 2 = 1 (Frobenius): every descriptor weighs the same in the energy,
    and the weight of the energy does not depend on the descriptors' scale."""
    s = np.sqrt(0.5 * ((D1**2).sum((1, 2)) + (D2**2).sum((1, 2)))) + 1e-12
    return D1 / s[:, None, None], D2 / s[:, None, None]


def orientation_energy(FM_12: np.ndarray, D1: np.ndarray, D2: np.ndarray, reversing: bool = False) -> float:
    """Mean over descriptors of ||FM_12 D1[c] - sgn D2[c] FM_12||_F^2, sgn = -1 with `reversing`.

    FM_12 [k2, k1], D1 [d, k1, k1], D2 [d, k2, k2] -> float (0 for a map that commutes exactly)."""
    sgn = -1.0 if reversing else 1.0
    R = np.einsum("ij,cjl->cil", FM_12, D1) - sgn * np.einsum("cij,jl->cil", D2, FM_12)
    return float((R**2).sum() / len(D1))


def orientation_quadratic(D1: np.ndarray, D2: np.ndarray, w_orient: float, reversing: bool = False) -> np.ndarray:
    """Q float64 [k1 k2, k1 k2] with vec(C)^T Q vec(C) = w_orient / d sum_c ||C D1[c] - sgn D2[c] C||_F^2
    (column-major vec of C [k2, k1]; sgn = -1 with `reversing`). D1 [d, k1, k1], D2 [d, k2, k2].

    T_c = kron(D1^T, I2) - sgn kron(I1, D2) maps vec C to vec(C D1 - sgn D2 C), and
    T_c^T T_c = kron(D1 D1^T, I2) - sgn (kron(D1, D2) + kron(D1^T, D2^T)) + kron(I1, D2^T D2).
    """
    k1, k2 = D1.shape[1], D2.shape[1]
    sgn = -1.0 if reversing else 1.0
    I1, I2 = np.eye(k1), np.eye(k2)
    Q = np.zeros((k1 * k2, k1 * k2))
    for a, b in zip(D1, D2):
        Q += np.kron(a @ a.T, I2) - sgn * (np.kron(a, b) + np.kron(a.T, b.T)) + np.kron(I1, b.T @ b)
    return (w_orient / len(D1)) * Q


def solve_fm_oriented(A: np.ndarray, B: np.ndarray, mask: np.ndarray, lam: float, D1: np.ndarray, D2: np.ndarray,
                      w_orient: float, reversing: bool = False) -> np.ndarray:
    """Classical functional map with the orientation term (Ren et al. 2018, eq. 9), solved exactly:

        argmin_C ||C A - B||^2 + lam sum_ij mask_ij C_ij^2 + w_orient / d sum_c ||C D1[c] - sgn D2[c] C||^2

    A [k1, p], B [k2, p] descriptor coefficients, mask [k2, k1], D1 [d, k1, k1], D2 [d, k2, k2]
    (sgn = -1 with `reversing`) -> FM_12 [k2, k1]. The orientation term couples the rows, so this is one
    dense (k1 k2) x (k1 k2) system (column-major vec: vec(X C Y) = (Y^T kron X) vec C).
    """
    k2, k1 = mask.shape
    H = np.kron(A @ A.T, np.eye(k2)) + lam * np.diag(mask.reshape(-1, order="F"))
    H += orientation_quadratic(D1, D2, w_orient, reversing)
    c = np.linalg.solve(H, (B @ A.T).reshape(-1, order="F"))
    return c.reshape(k2, k1, order="F")
