"""Gauss-Newton / Levenberg-Marquardt on a deformation graph with block-sparse normal equations.

The unknowns are 6 per node, (w, dt): an so(3) rotation increment (left-multiplied) and a translation
increment (tracker/energy.py). The normal equations (J^T J + mu I) delta = -J^T r have one 6x6 block per
pair of nodes that share a residual row (skinning anchors of a point, or a graph edge).

Linear solvers (SolverConfig.linear_solver):
- "pcg":    preconditioned conjugate gradients with a block-Jacobi (6x6) preconditioner, numba, on the
            block-sparse (BSR) matrix: the default; scales to thousands of nodes.
- "direct": sparse LU of the assembled matrix (scipy.sparse.linalg.splu): exact, for checks / small graphs.
- "dense":  dense torch assembly and Cholesky solve; differentiable end to end (the neural tracker's
            solver, NNRT appendix B.2), any device. Only for small graphs (6N x 6N dense matrix).
`assemble_dense_np` + numpy.linalg.solve is the plain reference the sparse paths are tested against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numba as nb
import numpy as np
import torch

from fusion.tsdf.kernels_nb import numba_threads
from tracker.energy import ResidualBlock, total_energy
from tracker.so3 import exp_so3_t

PARALLEL_MIN_ROWS = 512  # residual rows below which the normal equations are accumulated on one thread

__all__ = [
    "SolverConfig",
    "BlockSystem",
    "build_system",
    "assemble_dense_np",
    "assemble_dense_t",
    "solve_system",
    "pcg_block_jacobi",
    "apply_increment_t",
    "lm_step",
    "gauss_newton",
    "GNResult",
]


@dataclass(frozen=True)
class SolverConfig:
    """Settings of the Gauss-Newton / LM solver.

    iterations: GN iterations (each one linear solve, plus retries when a step is rejected).
    linear_solver: "pcg" | "direct" | "dense" (see module doc).
    damping: initial Levenberg mu added to the diagonal of J^T J (times the mean diagonal of J^T J when
      relative_damping, which makes it independent of units and of the number of residuals).
    adaptive: Levenberg-Marquardt acceptance: a step that raises the energy is rejected and mu grows
      (x mu_up); an accepted step shrinks mu (/ mu_down). False: every step is taken (the differentiable
      training setting).
    max_retries: rejected steps tried per iteration before giving up on it.
    pcg_iterations / pcg_tol: PCG limits (relative residual).
    min_step: stop when the largest parameter increment falls below this.
    threads: numba threads that accumulate the normal equations (`build_system`; 0: the calling thread's
      numba setting). The result does not depend on it.
    """

    iterations: int = 5
    linear_solver: str = "pcg"
    damping: float = 1e-4
    relative_damping: bool = False
    adaptive: bool = True
    mu_up: float = 4.0
    mu_down: float = 3.0
    mu_min: float = 1e-8
    mu_max: float = 1e4
    max_retries: int = 3
    pcg_iterations: int = 200
    pcg_tol: float = 1e-6
    min_step: float = 1e-7
    threads: int = 0


# --------------------------------------------------------------------------------------------------
# block-sparse assembly (numba)
# --------------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _mark_pairs(idx, mask):  # pragma: no cover - numba
    for r in range(idx.shape[0]):
        for a in range(idx.shape[1]):
            i = idx[r, a]
            if i < 0:
                continue
            for b in range(idx.shape[1]):
                j = idx[r, b]
                if j >= 0:
                    mask[i, j] = True


@nb.njit(cache=True, nogil=True)
def _find(indptr, indices, i, j):  # pragma: no cover - numba
    lo = indptr[i]
    hi = indptr[i + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if indices[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo


@nb.njit(parallel=True, cache=True, nogil=True)
def _accumulate_parts(r, idx, jac, indptr, indices, blocks, g, bounds):  # pragma: no cover - numba
    """H[i,j] += sum_p J_pa^T J_pb, g[i] += sum_p J_pa^T r_p over groups of P rows sharing their node ids
    (r [R,P], idx [R,A], jac [R,P,A,6]); upper triangle i <= j only, mirrored later. Split over node ranges:
    part t (one task each) adds the terms of bounds[t] <= i < bounds[t + 1], scanning the rows in order, so
    every block and every g row receives the same terms in the same order however many parts there are:
    the result does not depend on the split, bit for bit."""
    na = idx.shape[1]
    npr = r.shape[1]
    for t in nb.prange(bounds.shape[0] - 1):
        lo = bounds[t]
        hi = bounds[t + 1]
        for row in range(idx.shape[0]):
            for a in range(na):
                i = idx[row, a]
                if i < lo or i >= hi:
                    continue
                for p in range(6):
                    acc = 0.0
                    for k in range(npr):
                        acc += jac[row, k, a, p] * r[row, k]
                    g[i, p] += acc
                for b in range(na):
                    j = idx[row, b]
                    if j < i:
                        continue
                    s = _find(indptr, indices, i, j)
                    blk = blocks[s]
                    for k in range(npr):
                        ja = jac[row, k, a]
                        jb = jac[row, k, b]
                        for p in range(6):
                            jp = ja[p]
                            for q in range(6):
                                blk[p, q] += jp * jb[q]


@nb.njit(cache=True, nogil=True)
def _node_bounds(idx, n, parts):  # pragma: no cover - numba
    """Node-range bounds (int64 [parts' + 1], parts' <= parts, increasing) that split the rows idx [R, A]
    into parts of about equal work, counted as each node's occurrences in idx."""
    cnt = np.zeros(n + 1, np.int64)
    for row in range(idx.shape[0]):
        for a in range(idx.shape[1]):
            i = idx[row, a]
            if 0 <= i < n:
                cnt[i + 1] += 1
    for i in range(n):
        cnt[i + 1] += cnt[i]
    out = np.empty(parts + 1, np.int64)
    out[0] = 0
    m = 1
    i = 0
    for t in range(1, parts):
        target = cnt[n] * t // parts
        while i < n and cnt[i + 1] <= target:
            i += 1
        if i > out[m - 1] and i < n:
            out[m] = i
            m += 1
    out[m] = n
    return out[:m + 1].copy()


@nb.njit(cache=True, nogil=True)
def _mirror(indptr, indices, blocks):  # pragma: no cover - numba
    n = indptr.shape[0] - 1
    for i in range(n):
        for s in range(indptr[i], indptr[i + 1]):
            j = indices[s]
            if j > i:
                t = _find(indptr, indices, j, i)
                for p in range(6):
                    for q in range(6):
                        blocks[t, q, p] = blocks[s, p, q]
            elif j == i:  # diagonal block: accumulated once per (a, b) with i == j -> symmetrise
                for p in range(6):
                    for q in range(p + 1, 6):
                        v = blocks[s, p, q] + blocks[s, q, p]
                        blocks[s, p, q] = 0.5 * v
                        blocks[s, q, p] = 0.5 * v


@dataclass
class BlockSystem:
    """J^T J and J^T r in block-sparse row (BSR) form over N nodes.

    indptr int64 [N+1], indices int64 [nnzb] (column block ids, sorted per row, both triangles),
    blocks float64 [nnzb, 6, 6], g float64 [N, 6] (= J^T r), energy: sum r^2.
    """

    indptr: np.ndarray
    indices: np.ndarray
    blocks: np.ndarray
    g: np.ndarray
    energy: float
    stats: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.indptr.shape[0] - 1)

    def to_scipy(self, mu: float = 0.0):
        """The matrix J^T J + mu I as scipy.sparse.bsr_matrix [6N, 6N]."""
        import scipy.sparse as sp

        n = self.num_nodes
        h = sp.bsr_matrix((self.blocks, self.indices, self.indptr), shape=(6 * n, 6 * n))
        if mu:
            h = h + mu * sp.identity(6 * n, format="bsr", dtype=np.float64)
        return h

    def to_dense(self, mu: float = 0.0) -> np.ndarray:
        """Dense J^T J + mu I [6N, 6N] (tests / small systems)."""
        return self.to_scipy(mu).toarray()


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def build_system(blocks: list[ResidualBlock], n_nodes: int, threads: int = 0) -> BlockSystem:
    """Assemble the block-sparse normal equations of residual blocks (numba; CPU, float64).

    blocks: ResidualBlock list with Jacobians (torch, any float dtype/device: moved to CPU float64).
    threads: numba threads of the accumulation (0: the calling thread's numba setting); with more than one,
    groups of at least PARALLEL_MIN_ROWS rows are split over node ranges (`_accumulate_parts`), which gives
    the same system bit for bit.
    """
    # blocks over the same rows of node ids (e.g. ICP and photometric rows of the same points) are
    # accumulated together: one node-pair lookup serves all of their rows
    groups: list[list[ResidualBlock]] = []
    for b in blocks:
        if b.jac is None:
            raise ValueError(f"residual block {b.name!r} has no Jacobian")
        if b.num_rows == 0:
            continue
        for grp in groups:
            if grp[0].idx.shape == b.idx.shape and (grp[0].idx is b.idx or torch.equal(grp[0].idx, b.idx)):
                grp.append(b)
                break
        else:
            groups.append([b])
    arrays = []
    for grp in groups:
        r = np.stack([_np(b.r) for b in grp], 1).astype(np.float64, copy=False)
        jac = np.stack([_np(b.jac) for b in grp], 1).astype(np.float64, copy=False)
        arrays.append((np.ascontiguousarray(r), np.ascontiguousarray(_np(grp[0].idx), np.int64),
                       np.ascontiguousarray(jac)))
    n = int(n_nodes)
    # sparsity pattern: every pair of nodes sharing a row, plus the diagonal
    if n <= 6000:
        mask = np.zeros((n, n), np.bool_)
        np.fill_diagonal(mask, True)
        for _, idx, _ in arrays:
            _mark_pairs(idx, mask)
        rows, cols = np.nonzero(mask)
    else:  # pragma: no cover - very large graphs: sort-based unique
        keys = [np.arange(n, dtype=np.int64) * (n + 1)]
        for _, idx, _ in arrays:
            a = idx[:, :, None]
            b = idx[:, None, :]
            ok = (a >= 0) & (b >= 0)
            keys.append((np.broadcast_to(a, ok.shape) * n + np.broadcast_to(b, ok.shape))[ok])
        u = np.unique(np.concatenate(keys))
        rows, cols = u // n, u % n
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    indices = cols.astype(np.int64)
    hb = np.zeros((len(indices), 6, 6), np.float64)
    g = np.zeros((n, 6), np.float64)
    energy = 0.0
    parts = nb.get_num_threads() if threads <= 0 else min(int(threads), nb.config.NUMBA_NUM_THREADS)
    for r, idx, jac in arrays:
        k = parts if idx.shape[0] >= PARALLEL_MIN_ROWS else 1
        bounds = _node_bounds(idx, n, k) if k > 1 else np.array([0, n], np.int64)
        with numba_threads(len(bounds) - 1):
            _accumulate_parts(r, idx, jac, indptr, indices, hb, g, bounds)
        energy += float((r * r).sum())
    _mirror(indptr, indices, hb)
    return BlockSystem(indptr, indices, hb, g, energy, {"nnz_blocks": int(len(indices))})


def assemble_dense_np(blocks: list[ResidualBlock], n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: dense J^T J [6N,6N] and J^T r [6N] from explicit dense Jacobians (numpy float64)."""
    from tracker.energy import dense_jacobian_t

    js, rs = [], []
    for b in blocks:
        js.append(_np(dense_jacobian_t(b, n_nodes)).astype(np.float64))
        rs.append(_np(b.r).astype(np.float64))
    j = np.concatenate(js)
    r = np.concatenate(rs)
    return j.T @ j, j.T @ r


def assemble_dense_t(blocks: list[ResidualBlock], n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable dense assembly (torch): J^T J [6N,6N] and J^T r [6N], on the blocks' device/dtype.

    Scatters per-row 6x6 block products into an [N*N, 6, 6] buffer (no dense Jacobian is formed).
    """
    ref = blocks[0].r
    n = int(n_nodes)
    h = torch.zeros((n * n, 6, 6), dtype=ref.dtype, device=ref.device)
    g = torch.zeros((n, 6), dtype=ref.dtype, device=ref.device)
    for b in blocks:
        if b.num_rows == 0:
            continue
        ok = b.idx >= 0
        jac = b.jac * ok[..., None].to(b.jac.dtype)
        idx = torch.where(ok, b.idx, torch.zeros_like(b.idx))
        a = idx.shape[1]
        prod = jac[:, :, None, :, None] * jac[:, None, :, None, :]  # [R,A,A,6,6]
        key = (idx[:, :, None] * n + idx[:, None, :]).reshape(-1)
        h = h.index_add(0, key, prod.reshape(-1, 6, 6))
        g = g.index_add(0, idx.reshape(-1), (jac * b.r[:, None, None]).reshape(-1, 6))
        del a
    hd = h.reshape(n, n, 6, 6).permute(0, 2, 1, 3).reshape(6 * n, 6 * n)
    return hd, g.reshape(6 * n)


# --------------------------------------------------------------------------------------------------
# linear solvers
# --------------------------------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _bsr_matvec(indptr, indices, blocks, mu, x, out):  # pragma: no cover - numba
    n = indptr.shape[0] - 1
    for i in range(n):
        for p in range(6):
            out[i, p] = mu * x[i, p]
        for s in range(indptr[i], indptr[i + 1]):
            j = indices[s]
            for p in range(6):
                acc = 0.0
                for q in range(6):
                    acc += blocks[s, p, q] * x[j, q]
                out[i, p] += acc


@nb.njit(cache=True, nogil=True)
def _precondition(minv, r, z):  # pragma: no cover - numba
    """z = M^-1 r with 6x6 diagonal blocks; returns r . z."""
    rz = 0.0
    for i in range(r.shape[0]):
        for p in range(6):
            acc = 0.0
            for q in range(6):
                acc += minv[i, p, q] * r[i, q]
            z[i, p] = acc
            rz += acc * r[i, p]
    return rz


@nb.njit(cache=True, nogil=True)
def _pcg_kernel(indptr, indices, blocks, mu, b, minv, max_iter, tol):  # pragma: no cover - numba
    n = b.shape[0]
    x = np.zeros_like(b)
    r = b.copy()
    z = np.empty_like(b)
    rz = _precondition(minv, r, z)
    d = z.copy()
    ap = np.empty_like(b)
    bnorm = np.sqrt(np.sum(b * b))
    if bnorm == 0.0:
        return x, 0, 0.0
    it = 0
    rel = 1.0
    for it in range(1, max_iter + 1):
        _bsr_matvec(indptr, indices, blocks, mu, d, ap)
        dad = 0.0
        for i in range(n):
            for p in range(6):
                dad += d[i, p] * ap[i, p]
        if not (dad > 0.0):
            return x, -it, rel  # not positive definite
        alpha = rz / dad
        rr = 0.0
        for i in range(n):
            for p in range(6):
                x[i, p] += alpha * d[i, p]
                r[i, p] -= alpha * ap[i, p]
                rr += r[i, p] * r[i, p]
        rel = np.sqrt(rr) / bnorm
        if rel < tol:
            break
        rz_new = _precondition(minv, r, z)
        beta = rz_new / rz
        rz = rz_new
        for i in range(n):
            for p in range(6):
                d[i, p] = z[i, p] + beta * d[i, p]
    return x, it, rel


@nb.njit(cache=True, nogil=True)
def _block_inverse_spd(d, rel_eps, out):  # pragma: no cover - numba
    """Invert symmetric positive definite 6x6 blocks d [N,6,6] by Cholesky into out; returns the number of
    blocks whose Cholesky pivot falls below rel_eps times their largest diagonal entry (not inverted)."""
    bad = 0
    ll = np.zeros((6, 6))
    for b in range(d.shape[0]):
        scale = 0.0
        for p in range(6):
            scale = max(scale, d[b, p, p])
        ok = scale > 0.0
        for j in range(6):
            if not ok:
                break
            acc = d[b, j, j]
            for q in range(j):
                acc -= ll[j, q] * ll[j, q]
            if acc <= rel_eps * scale:
                ok = False
                break
            ll[j, j] = np.sqrt(acc)
            for i in range(j + 1, 6):
                acc = d[b, i, j]
                for q in range(j):
                    acc -= ll[i, q] * ll[j, q]
                ll[i, j] = acc / ll[j, j]
        if not ok:
            bad += 1
            for i in range(6):
                for j in range(6):
                    out[b, i, j] = 0.0
            continue
        for c in range(6):  # solve L L^T x = e_c
            y = np.zeros(6)
            for i in range(6):
                acc = 1.0 if i == c else 0.0
                for q in range(i):
                    acc -= ll[i, q] * y[q]
                y[i] = acc / ll[i, i]
            for i in range(5, -1, -1):
                acc = y[i]
                for q in range(i + 1, 6):
                    acc -= ll[q, i] * out[b, q, c]
                out[b, i, c] = acc / ll[i, i]
    return bad


def _diag_blocks(sys: BlockSystem) -> np.ndarray:
    n = sys.num_nodes
    rows = np.repeat(np.arange(n), np.diff(sys.indptr))
    diag_pos = np.flatnonzero(rows == sys.indices)
    out = np.zeros((n, 6, 6))
    out[rows[diag_pos]] = sys.blocks[diag_pos]
    return out


def pcg_block_jacobi(sys: BlockSystem, rhs: np.ndarray, mu: float, max_iter: int = 200,
                     tol: float = 1e-6) -> tuple[np.ndarray, dict]:
    """Solve (J^T J + mu I) x = rhs by PCG with a 6x6 block-Jacobi preconditioner.

    rhs float64 [N,6]. Returns (x [N,6], info {iterations, rel_residual, ok}); ok=False when the matrix is
    found not positive definite or the iteration did not reach `tol` x 100.
    """
    d = _diag_blocks(sys) + mu * np.eye(6)
    # a diagonal block that is not positive definite means some parameter of that node appears in no row
    # (J^T J has a null vector there): the system is singular, whatever the coupling
    minv = np.empty_like(d)
    bad = _block_inverse_spd(d, 1e-12, minv)
    if bad:
        return np.zeros_like(rhs), {"iterations": 0, "rel_residual": float("nan"), "ok": False,
                                    "error": f"singular normal equations ({bad} node(s) unconstrained)"}
    x, it, rel = _pcg_kernel(sys.indptr, sys.indices, sys.blocks, float(mu), np.ascontiguousarray(rhs, np.float64),
                             np.ascontiguousarray(minv), int(max_iter), float(tol))
    ok = it >= 0 and np.isfinite(x).all() and rel < max(tol * 100, 1e-3)
    info = {"iterations": abs(int(it)), "rel_residual": float(rel), "ok": bool(ok)}
    if it < 0:
        info["error"] = "PCG breakdown: the matrix is not positive definite"
    return x, info


def solve_system(sys: BlockSystem, mu: float, method: str = "pcg", max_iter: int = 200,
                 tol: float = 1e-6) -> tuple[np.ndarray, dict]:
    """The Gauss-Newton step delta [N,6] of (J^T J + mu I) delta = -J^T r ("pcg" or "direct")."""
    if method == "pcg":
        return pcg_block_jacobi(sys, -sys.g, mu, max_iter, tol)
    if method == "direct":
        from scipy.sparse.linalg import splu

        try:
            lu = splu(sys.to_scipy(mu).tocsc(), permc_spec="MMD_AT_PLUS_A")
            x = lu.solve(-sys.g.reshape(-1))
        except RuntimeError as e:  # "Factor is exactly singular"
            return np.zeros_like(sys.g), {"ok": False, "error": str(e)}
        return x.reshape(-1, 6), {"ok": bool(np.isfinite(x).all())}
    raise ValueError(f"unknown sparse linear solver {method!r} (pcg | direct)")


def apply_increment_t(rotations: torch.Tensor, translations: torch.Tensor,
                      delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R <- exp([w]_x) R, t <- t + dt for delta [N,6] = (w, dt) per node (differentiable)."""
    return exp_so3_t(delta[:, :3]) @ rotations, translations + delta[:, 3:]


# --------------------------------------------------------------------------------------------------
# Levenberg-Marquardt driver
# --------------------------------------------------------------------------------------------------
ResidualFn = Callable[[torch.Tensor, torch.Tensor, bool], list[ResidualBlock]]


class _NormalEquations:
    """J^T J and J^T r of one linearisation, assembled once and solved for any damping mu."""

    def __init__(self, blocks: list[ResidualBlock], n: int, cfg: SolverConfig, ref: torch.Tensor) -> None:
        self.n, self.cfg, self.ref = n, cfg, ref
        self.stats: dict = {}
        if cfg.linear_solver == "dense":
            self.h, self.g = assemble_dense_t(blocks, n)
            self.scale = max(float(self.h.detach().diagonal().mean()), 1e-12) if cfg.relative_damping else 1.0
        else:
            self.sys = build_system(blocks, n, cfg.threads)
            self.stats["nnz_blocks"] = self.sys.stats["nnz_blocks"]
            self.scale = 1.0
            if cfg.relative_damping:
                diag = self.sys.indices == np.repeat(np.arange(n), np.diff(self.sys.indptr))
                self.scale = max(float(np.einsum("bii->", self.sys.blocks[diag])) / (6 * n), 1e-12)

    def solve(self, mu: float) -> tuple[torch.Tensor | None, dict]:
        """delta [N,6] of (J^T J + mu * scale * I) delta = -J^T r, or None with info["error"]."""
        n, cfg, mu = self.n, self.cfg, mu * self.scale
        if cfg.linear_solver == "dense":
            a = self.h + mu * torch.eye(6 * n, dtype=self.h.dtype, device=self.h.device)
            chol, info = torch.linalg.cholesky_ex(a)
            if int(info) != 0:
                return None, {"ok": False, "error": "normal equations are not positive definite"}
            x = torch.cholesky_solve(-self.g[:, None], chol)[:, 0]
            if not bool(torch.isfinite(x).all()):
                return None, {"ok": False, "error": "non-finite solution"}
            return x.reshape(n, 6), {"ok": True}
        x, info = solve_system(self.sys, mu, cfg.linear_solver, cfg.pcg_iterations, cfg.pcg_tol)
        info.update(self.stats)
        if cfg.linear_solver == "pcg" and "error" not in info and np.isfinite(x).all():
            # inexact Newton: a truncated CG solution is still a descent direction of the damped model
            info["ok"] = True
        if not info.get("ok", False):
            return None, info
        return torch.from_numpy(x).to(dtype=self.ref.dtype, device=self.ref.device), info


def lm_step(residual_fn: ResidualFn, rotations: torch.Tensor, translations: torch.Tensor,
            blocks: list[ResidualBlock], mu: float, cfg: SolverConfig,
            jacobian_after: bool = True) -> tuple[torch.Tensor, torch.Tensor, list, float, dict]:
    """One (Levenberg-damped) Gauss-Newton iteration from the current residual blocks.

    residual_fn(R, t, jacobian) -> residual blocks at that motion (fixed correspondences).
    jacobian_after: evaluate the returned blocks with Jacobians (False when the caller re-associates
    and builds new blocks anyway: the acceptance test then needs residuals only).
    Returns (R, t, blocks, mu, info); when every retry raises the energy the motion is left unchanged and
    info["accepted"] is False; info["ok"] is False when the linear system could not be solved.
    """
    n = int(rotations.shape[0])
    e0 = float(total_energy(blocks).detach())
    info: dict = {"energy_before": e0, "accepted": False, "ok": True, "retries": 0}
    normal = _NormalEquations(blocks, n, cfg, translations)
    for attempt in range(cfg.max_retries + 1 if cfg.adaptive else 1):
        delta, sinfo = normal.solve(mu)
        info.update({k: v for k, v in sinfo.items() if k != "ok"})
        if delta is None:
            if cfg.adaptive and mu < cfg.mu_max:  # a damped retry may still be solvable
                mu = min(mu * cfg.mu_up * 10, cfg.mu_max)
                info["retries"] = attempt + 1
                continue
            info["ok"] = False
            info["error"] = sinfo.get("error", "linear solve failed")
            return rotations, translations, blocks, mu, info
        r2, t2 = apply_increment_t(rotations, translations, delta)
        new_blocks = residual_fn(r2, t2, jacobian_after or not cfg.adaptive)
        e1 = float(total_energy(new_blocks).detach())
        info["step"] = float(delta.detach().abs().max())
        if not cfg.adaptive or e1 <= e0:
            info.update(accepted=True, energy_after=e1)
            mu = max(mu / cfg.mu_down, cfg.mu_min) if cfg.adaptive else mu
            return r2, t2, new_blocks, mu, info
        mu = min(mu * cfg.mu_up, cfg.mu_max)
        info["retries"] = attempt + 1
    info["energy_after"] = e0
    return rotations, translations, blocks, mu, info


@dataclass
class GNResult:
    """Outcome of `gauss_newton`: rotations [N,3,3], translations [N,3] (torch), energies per iteration."""

    rotations: torch.Tensor
    translations: torch.Tensor
    energies: list[float]
    ok: bool = True
    message: str = ""
    iterations: int = 0


def gauss_newton(residual_fn: ResidualFn, rotations: torch.Tensor, translations: torch.Tensor,
                 cfg: SolverConfig = SolverConfig()) -> GNResult:
    """Minimise the energy of `residual_fn` over node rotations [N,3,3] and translations [N,3].

    residual_fn(R, t, jacobian: bool) -> list of ResidualBlock. With cfg.linear_solver == "dense" and
    cfg.adaptive == False every operation is torch and the result is differentiable with respect to
    whatever the residuals depend on (correspondences, confidences). Never raises for a singular system:
    returns ok=False with a message and the last good motion.
    """
    blocks = residual_fn(rotations, translations, True)
    energies = [float(total_energy(blocks).detach())]
    mu = cfg.damping
    r, t = rotations, translations
    it = 0
    for it in range(1, cfg.iterations + 1):
        r, t, blocks, mu, info = lm_step(residual_fn, r, t, blocks, mu, cfg)
        if not info["ok"]:
            return GNResult(r, t, energies, False, f"singular system: {info.get('error', 'solve failed')}", it)
        energies.append(float(info["energy_after"]))
        if info["accepted"] and info.get("step", 1.0) < cfg.min_step:
            break
    return GNResult(r, t, energies, True, "", it)
