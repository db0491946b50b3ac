"""The energy terms of non-rigid tracking on a deformation graph: one definition each, in torch.

Every term returns a `ResidualBlock`: weighted residual rows r [R] and their analytic Jacobian with respect
to the 6 motion parameters of the (at most A) graph nodes each row depends on, jac [R, A, 6], with the node
ids idx [R, A] (-1 = none). Parameters per node, in this order: (w, dt) = an so(3) increment of the node
rotation, left-multiplied (R <- exp([w]_x) R), and a translation increment (t <- t + dt); the Jacobians are
taken at w = 0, dt = 0 (NNRT appendix B).

The same functions serve the classical tracker (float64 on the CPU, assembled into block-sparse normal
equations by tracker/solver.py) and the differentiable solver of the neural tracker (any device / dtype,
autograd flows through residuals and Jacobians). Weights follow NNRT: a term with weight lambda and
per-correspondence confidences c contributes lambda * sum_i c_i^2 ||r_i||^2, i.e. each row is scaled by
sqrt(lambda) * c_i.

Terms (p canonical point with skinning anchors/weights, W(p) its warp, NNRT eq. 2):
- point_to_plane_term:  n_q . (W(p) - q)              (ICP, live point q with live normal n_q)
- point_to_point_term:  W(p) - q                      (3 rows)
- reprojection_term:    pi(W(p)) - u                  (NNRT 2D term, pixels, 2 rows)
- depth_term:           W(p)_z - z                    (NNRT depth term, metres)
- photometric_term:     I(pi(W(p))) - c_p             (live intensity at the projection vs the model's;
                                                       bilinear image, exact derivative of the interpolant)
- arap_term:            R_i (g_j - g_i) + g_i + t_i - (g_j + t_j)   over graph edges (NNRT eq. 11, 3 rows)
"""
from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np
import torch

from fusion.camera import Intrinsics
from tracker.so3 import hat_t

__all__ = [
    "ResidualBlock",
    "WarpParts",
    "warp_parts",
    "warp_jacobian",
    "point_to_plane_term",
    "point_to_point_term",
    "reprojection_term",
    "depth_term",
    "photometric_term",
    "sample_bilinear_t",
    "intensity_image_t",
    "arap_term",
    "arap_term_edges",
    "ArapEdges",
    "total_energy",
    "dense_jacobian_t",
]


@dataclass
class ResidualBlock:
    """Weighted residual rows of one energy term and their sparse Jacobian.

    r: [R] residuals (already scaled by sqrt(lambda) * confidence); idx: long [R, A] node ids (-1 = none);
    jac: [R, A, 6] d r / d (w, dt) of each listed node, or None when only residuals were asked for.
    """

    name: str
    r: torch.Tensor
    idx: torch.Tensor
    jac: torch.Tensor | None

    def energy(self) -> torch.Tensor:
        """sum r^2 (a 0-d tensor)."""
        return (self.r * self.r).sum()

    @property
    def num_rows(self) -> int:
        """R."""
        return int(self.r.shape[0])


@dataclass
class WarpParts:
    """Warped points and the pieces their Jacobian needs.

    warped [M,3] W(p); rotated [M,A,3] R_k (p - g_k) per anchor; idx long [M,A] (-1 = none);
    w [M,A] skinning weights (0 where idx = -1); valid bool [M]: at least one anchor;
    normals [M,3] warped unit normals normalize(sum_k w_k R_k n) when normals were given, else None.
    """

    warped: torch.Tensor
    rotated: torch.Tensor
    idx: torch.Tensor
    w: torch.Tensor
    valid: torch.Tensor
    normals: torch.Tensor | None = None

    def subset(self, sel: torch.Tensor) -> "WarpParts":
        """The parts of the points selected by sel (long indices or bool mask [M])."""
        return WarpParts(self.warped[sel], self.rotated[sel], self.idx[sel], self.w[sel], self.valid[sel],
                         None if self.normals is None else self.normals[sel])


def _matvec(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """r [..., 3, 3] @ v [..., 3] -> [..., 3] (component form: faster than einsum/bmm for tiny matrices)."""
    return r[..., 0] * v[..., 0:1] + r[..., 1] * v[..., 1:2] + r[..., 2] * v[..., 2:3]


@nb.njit(cache=True, nogil=True)
def _warp_parts_nb(points, idx, weights, nodes, rotations, translations, normals, warped, rotated, w, valid,
                   wn):  # pragma: no cover - numba
    """`warp_parts` in numba, the same operations in the same order (no fastmath): fills warped [M,3],
    rotated [M,A,3], w [M,A], valid [M] and, when wn has M rows, the blended (not yet unit) normals wn [M,3]."""
    m, na = idx.shape
    do_n = wn.shape[0] == m
    for i in range(m):
        ok_any = False
        sx = 0.0
        sy = 0.0
        sz = 0.0
        nx = 0.0
        ny = 0.0
        nz = 0.0
        for a in range(na):
            k = idx[i, a]
            ok = k >= 0
            kk = k if ok else 0  # an invalid anchor uses node 0 with weight 0, as the torch code does
            wa = weights[i, a] * (1.0 if ok else 0.0)
            w[i, a] = wa
            ok_any = ok_any or ok
            dx = points[i, 0] - nodes[kk, 0]
            dy = points[i, 1] - nodes[kk, 1]
            dz = points[i, 2] - nodes[kk, 2]
            r = rotations[kk]
            rx = r[0, 0] * dx + r[0, 1] * dy + r[0, 2] * dz
            ry = r[1, 0] * dx + r[1, 1] * dy + r[1, 2] * dz
            rz = r[2, 0] * dx + r[2, 1] * dy + r[2, 2] * dz
            rotated[i, a, 0] = rx
            rotated[i, a, 1] = ry
            rotated[i, a, 2] = rz
            sx += wa * (rx + nodes[kk, 0] + translations[kk, 0])
            sy += wa * (ry + nodes[kk, 1] + translations[kk, 1])
            sz += wa * (rz + nodes[kk, 2] + translations[kk, 2])
            if do_n:
                nx += wa * (r[0, 0] * normals[i, 0] + r[0, 1] * normals[i, 1] + r[0, 2] * normals[i, 2])
                ny += wa * (r[1, 0] * normals[i, 0] + r[1, 1] * normals[i, 1] + r[1, 2] * normals[i, 2])
                nz += wa * (r[2, 0] * normals[i, 0] + r[2, 1] * normals[i, 1] + r[2, 2] * normals[i, 2])
        valid[i] = ok_any
        if ok_any:
            warped[i, 0] = sx
            warped[i, 1] = sy
            warped[i, 2] = sz
        else:
            warped[i, 0] = points[i, 0]
            warped[i, 1] = points[i, 1]
            warped[i, 2] = points[i, 2]
        if do_n:  # unnormalised (the caller normalises with torch, bit for bit as the torch code)
            if not ok_any:
                nx = normals[i, 0]
                ny = normals[i, 1]
                nz = normals[i, 2]
            wn[i, 0] = nx
            wn[i, 1] = ny
            wn[i, 2] = nz


def _fast_path(*tensors: torch.Tensor | None) -> bool:
    """True when a numba kernel may stand in for the torch code: every tensor (None skipped) on the CPU and
    none needing a gradient (the callers check the dtypes their kernel takes)."""
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.requires_grad:
            return False
    return True


def warp_parts(points: torch.Tensor, anchors: torch.Tensor, weights: torch.Tensor, nodes: torch.Tensor,
               rotations: torch.Tensor, translations: torch.Tensor, normals: torch.Tensor | None = None) -> WarpParts:
    """Warp points (NNRT eq. 2) keeping what the Jacobians need; optionally warp their normals too.

    points [M,3] m (canonical / source frame); anchors int [M,A] (-1 = none); weights [M,A]; nodes [N,3];
    rotations [N,3,3]; translations [N,3]; normals [M,3] unit or None. All floating tensors should share
    one dtype and device. Points without a valid anchor are returned unchanged (zero Jacobians).
    CPU tensors that need no gradient (the classical tracker) take a numba kernel doing the same
    arithmetic (tested against this torch code); anything else (autograd, CUDA) the torch code.
    """
    idx = None
    if (_fast_path(points, anchors, weights, nodes, rotations, translations, normals)
            and points.dtype in (torch.float32, torch.float64) and nodes.shape[0] > 0):
        idx = np.ascontiguousarray(anchors.numpy(), np.int64)
        if idx.size and idx.max() >= nodes.shape[0]:
            idx = None  # out-of-range anchors: the torch code raises IndexError
    if idx is not None:
        npd = np.float64 if points.dtype == torch.float64 else np.float32
        f = lambda t: np.ascontiguousarray(t.numpy(), npd)  # noqa: E731
        m, na = idx.shape
        warped = np.empty((m, 3), npd)
        rotated = np.empty((m, na, 3), npd)
        w = np.empty((m, na), npd)
        valid = np.empty(m, np.bool_)
        wn = np.empty((m if normals is not None else 0, 3), npd)
        nrm = f(normals) if normals is not None else np.zeros((0, 3), npd)
        if m:
            _warp_parts_nb(f(points), idx, f(weights), f(nodes), f(rotations), f(translations), nrm, warped, rotated,
                           w, valid, wn)
        wnt = None
        if normals is not None:
            wnt = torch.from_numpy(wn)
            wnt = wnt / wnt.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return WarpParts(warped=torch.from_numpy(warped), rotated=torch.from_numpy(rotated),
                         idx=torch.from_numpy(idx), w=torch.from_numpy(w),
                         valid=torch.from_numpy(valid), normals=wnt)
    idx = anchors.long()
    ok = idx >= 0
    safe = torch.where(ok, idx, torch.zeros_like(idx))
    w = weights.to(points.dtype) * ok.to(points.dtype)
    g = nodes[safe]
    rots = rotations[safe]
    rotated = _matvec(rots, points[:, None, :] - g)
    moved = rotated + g + translations[safe]
    warped = (w[..., None] * moved).sum(1)
    valid = ok.any(1)
    warped = torch.where(valid[:, None], warped, points)
    wn = None
    if normals is not None:
        wn = (w[..., None] * _matvec(rots, normals[:, None, :].expand_as(rotated))).sum(1)
        wn = torch.where(valid[:, None], wn, normals)
        wn = wn / wn.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return WarpParts(warped=warped, rotated=rotated, idx=torch.where(ok, idx, torch.full_like(idx, -1)), w=w,
                     valid=valid, normals=wn)


def warp_jacobian(parts: WarpParts) -> torch.Tensor:
    """d W(p) / d (w_k, dt_k) for every anchor k: [M, A, 3, 6].

    Left-multiplied rotation increment: d(exp([w]_x) v)/dw at 0 = -[v]_x with v = R_k (p - g_k), so
    dW/dw_k = -w_k [v_k]_x and dW/dt_k = w_k I.
    """
    wk = parts.w[..., None, None]
    eye = torch.eye(3, dtype=parts.rotated.dtype, device=parts.rotated.device)
    return torch.cat([-wk * hat_t(parts.rotated), wk * eye], dim=-1)


def _scale(parts: WarpParts, weights: torch.Tensor | None, lam: float) -> torch.Tensor:
    s = torch.full_like(parts.warped[:, 0], float(lam) ** 0.5)
    if weights is not None:
        s = s * weights.to(s.dtype)
    return s * parts.valid.to(s.dtype)


@nb.njit(cache=True, nogil=True)
def _data_block_nb(res, proj, scale, rotated, w, jac):  # pragma: no cover - numba
    """The rows and Jacobian of `_data_block` in numba (float64), the same operations in the same order:
    fills jac [M*P, A, 6] and returns the rows [M*P]."""
    m, p = res.shape
    na = w.shape[1]
    r = np.empty(m * p)
    for i in range(m):
        for k in range(p):
            row = i * p + k
            r[row] = scale[i] * res[i, k]
            p0 = proj[i, k, 0]
            p1 = proj[i, k, 1]
            p2 = proj[i, k, 2]
            for b in range(na):
                sw = scale[i] * w[i, b]
                v0 = rotated[i, b, 0]
                v1 = rotated[i, b, 1]
                v2 = rotated[i, b, 2]
                jac[row, b, 0] = sw * (v1 * p2 - v2 * p1)
                jac[row, b, 1] = sw * (v2 * p0 - v0 * p2)
                jac[row, b, 2] = sw * (v0 * p1 - v1 * p0)
                jac[row, b, 3] = sw * p0
                jac[row, b, 4] = sw * p1
                jac[row, b, 5] = sw * p2
    return r


def _data_block(name: str, parts: WarpParts, res: torch.Tensor, proj: torch.Tensor, scale: torch.Tensor,
                jacobian: bool) -> ResidualBlock:
    """Rows res [M,P] with d res / d W(p) = proj [M,P,3], scaled per point by scale [M].

    Row Jacobian for anchor k (pi = a row of proj): pi^T dW/d(w_k, dt_k) = w_k [v_k x pi, pi]
    (since -pi^T [v]_x = (v x pi)^T), i.e. `warp_jacobian` projected without forming it. float64 CPU
    tensors that need no gradient take a numba kernel doing the same arithmetic (bit for bit, tested).
    """
    m, p = res.shape
    a = parts.idx.shape[1]
    idx = parts.idx[:, None, :].expand(m, p, a).reshape(m * p, a)
    if (jacobian and all(t.dtype == torch.float64 for t in (res, proj, scale, parts.rotated, parts.w))
            and _fast_path(res, proj, scale, parts.rotated, parts.w)):
        jac_np = np.empty((m * p, a, 6))
        c = lambda t: np.ascontiguousarray(t.numpy())  # noqa: E731
        r = _data_block_nb(c(res), c(proj.expand(m, p, 3)), c(scale), c(parts.rotated), c(parts.w), jac_np)
        return ResidualBlock(name, torch.from_numpy(r), idx, torch.from_numpy(jac_np))
    r = (scale[:, None] * res).reshape(m * p)
    jac = None
    if jacobian:
        v = parts.rotated[:, None, :, :]  # [M,1,A,3]
        pi = proj[:, :, None, :]  # [M,P,1,3]
        cross = torch.stack([v[..., 1] * pi[..., 2] - v[..., 2] * pi[..., 1],
                             v[..., 2] * pi[..., 0] - v[..., 0] * pi[..., 2],
                             v[..., 0] * pi[..., 1] - v[..., 1] * pi[..., 0]], -1)  # [M,P,A,3]
        sw = (scale[:, None] * parts.w)[:, None, :, None]  # [M,1,A,1]
        jac = (sw * torch.cat([cross, pi.expand_as(cross)], -1)).reshape(m * p, a, 6)
    return ResidualBlock(name, r, idx, jac)


def point_to_plane_term(parts: WarpParts, target_points: torch.Tensor, target_normals: torch.Tensor,
                        weights: torch.Tensor | None = None, lam: float = 1.0, jacobian: bool = True) -> ResidualBlock:
    """Point-to-plane ICP rows n_q . (W(p) - q): one per correspondence.

    target_points [M,3] live points q (m); target_normals [M,3] unit live normals n_q; weights [M] or None
    (confidences c_i, 0 rejects a correspondence). Residuals in metres.
    """
    res = ((parts.warped - target_points) * target_normals).sum(-1, keepdim=True)
    return _data_block("icp", parts, res, target_normals[:, None, :], _scale(parts, weights, lam), jacobian)


def point_to_point_term(parts: WarpParts, target_points: torch.Tensor, weights: torch.Tensor | None = None,
                        lam: float = 1.0, jacobian: bool = True) -> ResidualBlock:
    """Point-to-point rows W(p) - q (3 per correspondence, x y z); target_points [M,3] m; weights [M] or None."""
    res = parts.warped - target_points
    eye = torch.eye(3, dtype=res.dtype, device=res.device).expand(res.shape[0], 3, 3)
    return _data_block("p2p", parts, res, eye, _scale(parts, weights, lam), jacobian)


def depth_term(parts: WarpParts, target_depth: torch.Tensor, weights: torch.Tensor | None = None, lam: float = 1.0,
               jacobian: bool = True) -> ResidualBlock:
    """NNRT depth rows W(p)_z - z (metres): target_depth [M] m (the depth of the target match); weights [M]."""
    res = (parts.warped[:, 2] - target_depth)[:, None]
    proj = torch.zeros_like(parts.warped)[:, None, :]
    proj[..., 2] = 1.0
    return _data_block("depth", parts, res, proj, _scale(parts, weights, lam), jacobian)


def reprojection_term(parts: WarpParts, target_uv: torch.Tensor, intrinsics: Intrinsics,
                      weights: torch.Tensor | None = None, lam: float = 0.001, jacobian: bool = True,
                      min_depth: float = 1e-3) -> ResidualBlock:
    """NNRT 2D rows pi(W(p)) - (u, v) in pixels (2 per correspondence, u then v).

    target_uv [M,2] target pixels (column, row); intrinsics: the target camera. Points with
    W(p)_z <= min_depth get zero rows (they cannot be projected).
    """
    x, y, z = parts.warped[:, 0], parts.warped[:, 1], parts.warped[:, 2]
    front = z > min_depth
    zs = torch.where(front, z, torch.ones_like(z))
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    res = torch.stack([fx * x / zs + cx - target_uv[:, 0], fy * y / zs + cy - target_uv[:, 1]], -1)
    zero = torch.zeros_like(z)
    proj = torch.stack([torch.stack([fx / zs, zero, -fx * x / (zs * zs)], -1),
                        torch.stack([zero, fy / zs, -fy * y / (zs * zs)], -1)], -2)
    scale = _scale(parts, weights, lam) * front.to(z.dtype)
    res = torch.where(front[:, None], res, torch.zeros_like(res))
    return _data_block("reproj", parts, res, proj, scale, jacobian)


def intensity_image_t(color: torch.Tensor, blur_sigma: float = 1.0) -> torch.Tensor:
    """Grey intensity in [0, 1] of an RGB image uint8/float [H,W,3] (Rec. 601 weights), Gaussian-blurred
    with sigma `blur_sigma` pixels (0: no blur) so that the photometric term has a usable basin. [H,W]
    (float32 from uint8 input, else the input dtype)."""
    c = color.to(torch.float32) if color.dtype == torch.uint8 else color
    scale = 1.0 / 255.0 if color.dtype == torch.uint8 else 1.0
    gray = (0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]) * scale
    if blur_sigma <= 0:
        return gray
    return gaussian_blur_t(gray, blur_sigma)


def gaussian_blur_t(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of img [H,W] (radius round(2.5 sigma) pixels, replicated border), img's
    dtype and device: a sum of shifted copies (much faster than conv2d for a few taps on the CPU)."""
    r = max(1, int(round(2.5 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype, device=img.device)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    k = k / k.sum()
    h, w = img.shape
    pad = torch.nn.functional.pad(img[None, None], (r, r, 0, 0), mode="replicate")[0, 0]
    out = sum(k[i] * pad[:, i:i + w] for i in range(2 * r + 1))
    pad = torch.nn.functional.pad(out[None, None], (0, 0, r, r), mode="replicate")[0, 0]
    return sum(k[i] * pad[i:i + h, :] for i in range(2 * r + 1))


def _cv_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """`gaussian_blur_t` by OpenCV (the same taps): img float [H,W] -> same shape and dtype."""
    import cv2

    r = max(1, int(round(2.5 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-x * x / (2 * sigma * sigma))
    k = (k / k.sum()).astype(img.dtype)
    return cv2.sepFilter2D(np.ascontiguousarray(img), -1, k, k, borderType=cv2.BORDER_REPLICATE)


def normalized_intensity_t(gray: torch.Tensor, valid: torch.Tensor, sigma: float) -> torch.Tensor:
    """Shading-normalised intensity: gray [H,W] divided by its local mean over the valid pixels (a Gaussian of
    `sigma` pixels, normalised convolution over valid bool [H,W], so the background does not leak in), minus 1.
    Smooth multiplicative shading (Lambert shading that changes as a surface turns under a light, exposure)
    cancels; texture at scales below ~sigma stays. Invalid pixels are 0. [H,W], gray's dtype."""
    m = valid.to(gray.dtype)
    if gray.device.type == "cpu":  # OpenCV's separable blur: ~50x faster than the shifted-copy sum on the CPU
        num = torch.from_numpy(_cv_blur((gray * m).numpy(), sigma))
        den = torch.from_numpy(_cv_blur(m.numpy(), sigma))
    else:
        num, den = gaussian_blur_t(gray * m, sigma), gaussian_blur_t(m, sigma)
    mean = num / den.clamp_min(1e-6)
    return torch.where(valid & (mean > 1e-3), gray / mean.clamp_min(1e-3) - 1.0, torch.zeros_like(gray))


@nb.njit(cache=True, nogil=True)
def _bilinear_nb(image, uv, val, grad, inside):  # pragma: no cover - numba
    """`sample_bilinear_t` in numba (float64), the same operations in the same order (no fastmath)."""
    h, w = image.shape
    for m in range(uv.shape[0]):
        u = uv[m, 0]
        v = uv[m, 1]
        ins = u >= 0 and v >= 0 and u <= w - 1.000001 and v <= h - 1.000001 and np.isfinite(u) and np.isfinite(v)
        inside[m] = ins
        if not ins:
            val[m] = 0.0
            grad[m, 0] = 0.0
            grad[m, 1] = 0.0
            continue
        u0 = min(max(np.floor(u), 0.0), w - 2.0)
        v0 = min(max(np.floor(v), 0.0), h - 2.0)
        fu = u - u0
        fv = v - v0
        r = int(v0)
        c = int(u0)
        i00 = image[r, c]
        i01 = image[r, c + 1]
        i10 = image[r + 1, c]
        i11 = image[r + 1, c + 1]
        val[m] = (1 - fv) * ((1 - fu) * i00 + fu * i01) + fv * ((1 - fu) * i10 + fu * i11)
        grad[m, 0] = (1 - fv) * (i01 - i00) + fv * (i11 - i10)
        grad[m, 1] = (1 - fu) * (i10 - i00) + fu * (i11 - i01)


def sample_bilinear_t(image: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear samples of image [H,W] at pixels uv [M,2] (column, row; pixel centres at integers).

    Returns (values [M], d value / d uv [M,2] (the exact derivative of the interpolant inside its cell),
    inside bool [M]: the 2x2 neighbourhood lies in the image). Outside samples give 0. float64 CPU tensors
    that need no gradient take a numba kernel doing the same arithmetic (bit for bit, tested).
    """
    if (image.dtype == torch.float64 and uv.dtype == torch.float64 and _fast_path(image, uv)
            and image.shape[0] >= 2 and image.shape[1] >= 2):
        m = uv.shape[0]
        val, grad, inside = np.empty(m), np.empty((m, 2)), np.empty(m, np.bool_)
        _bilinear_nb(np.ascontiguousarray(image.numpy()), np.ascontiguousarray(uv.numpy()), val, grad, inside)
        return torch.from_numpy(val), torch.from_numpy(grad), torch.from_numpy(inside)
    h, w = image.shape
    u, v = uv[:, 0], uv[:, 1]
    inside = (u >= 0) & (v >= 0) & (u <= w - 1.000001) & (v <= h - 1.000001) & torch.isfinite(u) & torch.isfinite(v)
    us = torch.where(inside, u, torch.zeros_like(u))
    vs = torch.where(inside, v, torch.zeros_like(v))
    u0 = us.floor().clamp(0, w - 2)
    v0 = vs.floor().clamp(0, h - 2)
    fu, fv = us - u0, vs - v0
    i0 = (v0.long() * w + u0.long())
    flat = image.reshape(-1)
    i00, i01, i10, i11 = flat[i0], flat[i0 + 1], flat[i0 + w], flat[i0 + w + 1]
    val = (1 - fv) * ((1 - fu) * i00 + fu * i01) + fv * ((1 - fu) * i10 + fu * i11)
    du = (1 - fv) * (i01 - i00) + fv * (i11 - i10)
    dv = (1 - fu) * (i10 - i00) + fu * (i11 - i01)
    zero = torch.zeros_like(val)
    grad = torch.stack([torch.where(inside, du, zero), torch.where(inside, dv, zero)], -1)
    return torch.where(inside, val, zero), grad, inside


def photometric_term(parts: WarpParts, image: torch.Tensor, model_intensity: torch.Tensor, intrinsics: Intrinsics,
                     weights: torch.Tensor | None = None, lam: float = 1.0, jacobian: bool = True,
                     min_depth: float = 1e-3) -> ResidualBlock:
    """Photometric rows I(pi(W(p))) - i_p: live intensity at the projected warped point vs a reference.

    image [H,W] live intensity (e.g. `intensity_image_t`); model_intensity [M] the samples' reference
    intensity (same scale), or [M,R] for R references at once (R rows per sample, one image lookup);
    weights [M] or [M,R] confidences. Rows whose projection leaves the image or lies behind the camera
    are zero. Jacobian: dI/duv (exact derivative of the bilinear interpolant) . d pi / dX . dW / d(w, dt).
    """
    x, y, z = parts.warped[:, 0], parts.warped[:, 1], parts.warped[:, 2]
    front = z > min_depth
    zs = torch.where(front, z, torch.ones_like(z))
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    uv = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    val, duv, inside = sample_bilinear_t(image, uv)
    val, duv = val.to(z.dtype), duv.to(z.dtype)
    ok = front & inside
    ref = model_intensity.to(z.dtype)
    ref = ref[:, None] if ref.dim() == 1 else ref  # [M,R]
    res = torch.where(ok[:, None], val[:, None] - ref, torch.zeros_like(ref))
    gu, gv = duv[:, 0], duv[:, 1]
    proj = torch.stack([gu * fx / zs, gv * fy / zs, -(gu * fx * x + gv * fy * y) / (zs * zs)], -1)[:, None, :]
    scale = _scale(parts, None, lam) * ok.to(z.dtype)
    if weights is not None:  # per-row confidences: folded into the rows and their projections
        wr = weights.to(z.dtype)
        wr = wr[:, None] if wr.dim() == 1 else wr
        res = res * wr
        proj = proj * wr[..., None]
    else:
        proj = proj.expand(-1, ref.shape[1], -1)
    return _data_block("photo", parts, res, proj, scale, jacobian)


@dataclass
class ArapEdges:
    """The valid directed edges of a graph, prepared once for `arap_term_edges`.

    src, dst long [E]; d [E,3] = g_dst - g_src (canonical, m); scale [E] = edge weight (1 when None).
    rest [E,3] or None: the vector node src's rotation acts on (None: d, the canonical ARAP of NNRT eq. 11).
    With rest = R_src^p^T ((g_dst + t_dst^p) - (g_src + t_src^p)) for a previous motion p, the rows become
    (R_src R_src^p^T) D^p - (g_dst + t_dst - g_src - t_src): rigidity of the change since p (`with_rest`).
    """

    nodes: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    d: torch.Tensor
    scale: torch.Tensor
    rest: torch.Tensor | None = None

    @staticmethod
    def build(nodes: torch.Tensor, edges: torch.Tensor, edge_weights: torch.Tensor | None = None) -> "ArapEdges":
        """nodes [N,3] m; edges int [N,K] (-1 = none); edge_weights [N,K] or None."""
        n, k = edges.shape
        e = edges.long()
        ok = e >= 0
        src = torch.arange(n, device=nodes.device)[:, None].expand(n, k)[ok]
        dst = e[ok]
        scale = torch.ones(src.shape[0], dtype=nodes.dtype, device=nodes.device)
        if edge_weights is not None:
            scale = edge_weights.to(nodes.dtype)[ok]
        return ArapEdges(nodes, src, dst, nodes[dst] - nodes[src], scale)

    def with_rest(self, rotations: torch.Tensor, translations: torch.Tensor) -> "ArapEdges":
        """These edges regularising the change from the motion (rotations [N,3,3], translations [N,3]) instead
        of the change from the canonical graph (see the class doc)."""
        moved = self.d + translations[self.dst] - translations[self.src]
        rest = torch.einsum("eji,ej->ei", rotations[self.src].to(moved.dtype), moved)
        return ArapEdges(self.nodes, self.src, self.dst, self.d, self.scale, rest)


def arap_term_edges(ed: ArapEdges, rotations: torch.Tensor, translations: torch.Tensor, lam: float = 1.0,
                    jacobian: bool = True) -> ResidualBlock:
    """`arap_term` on prepared edges (the fast path for repeated evaluation within a frame)."""
    src, dst = ed.src, ed.dst
    v = _matvec(rotations[src], ed.d if ed.rest is None else ed.rest)
    res = v + ed.d.neg() + translations[src] - translations[dst]  # = R_i d + g_i + t_i - (g_j + t_j)
    s = ed.scale * float(lam) ** 0.5
    ne = res.shape[0]
    r = (s[:, None] * res).reshape(ne * 3)
    idx = torch.stack([src, dst], -1)[:, None, :].expand(ne, 3, 2).reshape(ne * 3, 2)
    jac = None
    if jacobian:
        eye = torch.eye(3, dtype=res.dtype, device=res.device).expand(ne, 3, 3)
        ji = torch.cat([-hat_t(v), eye], -1)  # [E,3,6]
        jj = torch.cat([torch.zeros_like(eye), -eye], -1)
        jac = (s[:, None, None, None] * torch.stack([ji, jj], 2)).reshape(ne * 3, 2, 6)
    return ResidualBlock("arap", r, idx, jac)


def arap_term(nodes: torch.Tensor, rotations: torch.Tensor, translations: torch.Tensor, edges: torch.Tensor,
              edge_weights: torch.Tensor | None = None, lam: float = 1.0, jacobian: bool = True) -> ResidualBlock:
    """ARAP rows over directed graph edges i -> j (NNRT eq. 11): R_i (g_j - g_i) + g_i + t_i - (g_j + t_j).

    nodes [N,3] m; rotations [N,3,3]; translations [N,3]; edges int [N,K] (-1 = none); edge_weights [N,K]
    or None (1). Each valid edge gives 3 rows (metres) scaled by sqrt(lam) * edge weight; idx [3E, 2] = (i, j).
    Jacobian: d/dw_i = -[R_i (g_j - g_i)]_x, d/dt_i = I, d/dt_j = -I, d/dw_j = 0.
    """
    return arap_term_edges(ArapEdges.build(nodes, edges, edge_weights), rotations, translations, lam, jacobian)


def total_energy(blocks: list[ResidualBlock]) -> torch.Tensor:
    """sum over blocks of sum r^2."""
    return sum((b.energy() for b in blocks), torch.zeros((), dtype=blocks[0].r.dtype, device=blocks[0].r.device))


def dense_jacobian_t(block: ResidualBlock, n_nodes: int) -> torch.Tensor:
    """The dense Jacobian [R, 6N] of a block (parameter order: node-major, (w, dt) per node). For tests and
    small dense solves."""
    assert block.jac is not None
    r, a = block.idx.shape
    ok = block.idx >= 0
    cols = (torch.where(ok, block.idx, torch.zeros_like(block.idx))[..., None] * 6
            + torch.arange(6, device=block.idx.device)).reshape(r, a * 6)
    vals = (block.jac * ok[..., None].to(block.jac.dtype)).reshape(r, a * 6)
    out = torch.zeros((r, 6 * n_nodes), dtype=block.jac.dtype, device=block.jac.device)
    rows = torch.arange(r, device=block.idx.device)[:, None].expand(r, a * 6)
    return out.index_put((rows.reshape(-1), cols.reshape(-1)), vals.reshape(-1), accumulate=True)
