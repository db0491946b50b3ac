"""Shape metrics shared by the side panels. Point sets are float [N, 3] / [M, 3] in the same units.

Each metric has a plain definition in its docstring; KD-trees come from scipy.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from fusion.device import torch_device


def nn_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distances both ways: (d_ab [N] = min_j |a_i - b_j|, d_ba [M])."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d_ab, _ = cKDTree(b).query(a, k=1)
    d_ba, _ = cKDTree(a).query(b, k=1)
    return d_ab, d_ba


def chamfer_l1(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the two mean nearest-neighbour distances: mean_i d(a_i, B) + mean_j d(b_j, A)."""
    d_ab, d_ba = nn_distances(a, b)
    return float(d_ab.mean() + d_ba.mean())


def chamfer_l2(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of the two mean squared nearest-neighbour distances (the LPDC / Occupancy Flow form)."""
    d_ab, d_ba = nn_distances(a, b)
    return float((d_ab**2).mean() + (d_ba**2).mean())


# ---------------------------------------------------------------------------------------------------------
# Augmented Chamfer, exact / auction EMD and EM-kD (NeuralQAAD, Wagner & Schwanecke, VISAPP 2022).
#
# Conventions of this section: the two clouds a [N, 3] and b [N, 3] have the SAME number of points; the
# EMD is the optimal bijection's MEAN Euclidean distance, EMD(a, b) = min_sigma 1/N sum_i |a_i - b_sigma(i)|,
# in the clouds' units. EM-kD is normalised the same way (sum over leaves of the per-leaf optimal costs,
# divided by N), so EM-kD >= EMD always holds (it is the cost of a feasible bijection) and the two are
# directly comparable. An assignment `perm` is int64 [N] with a_i matched to b_perm[i].
# ---------------------------------------------------------------------------------------------------------

from dataclasses import dataclass  # noqa: E402


def chamfer_directional_sq(a: np.ndarray, b: np.ndarray) -> float:
    """One direction of the squared Chamfer distance (NeuralQAAD eq. 10): mean_i min_j |a_i - b_j|^2.

    a float [N, 3], b float [M, 3], same units; the result is in units squared.
    """
    a = np.asarray(a, dtype=np.float64)
    d, _ = cKDTree(np.asarray(b, dtype=np.float64)).query(a, k=1)
    return float((d**2).mean())


def augmented_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    """Augmented Chamfer distance (NeuralQAAD eq. 11): the larger of the two directional terms,

    ACD(a, b) = max(mean_i min_j |a_i - b_j|^2, mean_j min_i |a_i - b_j|^2).

    Taking the max instead of the sum penalises the worse-covered side (holes or outliers) fully.
    a float [N, 3], b float [M, 3]; units squared.
    """
    return max(chamfer_directional_sq(a, b), chamfer_directional_sq(b, a))


def nn_index_torch(a, b):
    """Index of each a-point's nearest b-point, without gradient: a float tensor [B, N, 3], b [B, M, 3]
    -> long tensor [B, N] on a's device. CPU: scipy k-d trees; CUDA: chunked torch.cdist."""
    import torch

    with torch.no_grad():
        if a.device.type == "cpu":
            out = [cKDTree(bb.double().numpy()).query(aa.double().numpy(), k=1)[1] for aa, bb in zip(a, b)]
            return torch.as_tensor(np.stack(out), dtype=torch.long)
        idx = []
        for s in range(0, a.shape[1], 4096):
            idx.append(torch.cdist(a[:, s : s + 4096], b).argmin(dim=2))
        return torch.cat(idx, dim=1)


def augmented_chamfer_torch(a, b):
    """Differentiable augmented Chamfer distance (eq. 11) for batches of torch clouds.

    a float tensor [B, N, 3], b float tensor [B, M, 3] (same device). Returns a tensor [B] (units squared):
    max(mean_i min_j |a_i - b_j|^2, mean_j min_i |a_i - b_j|^2) per batch element. The nearest neighbours
    are found without gradient (`nn_index_torch`); the gradient of the min is that of the matched pair.
    """
    import torch

    i_ab = nn_index_torch(a, b)  # [B, N]
    i_ba = nn_index_torch(b, a)  # [B, M]
    d_ab = (a - torch.gather(b, 1, i_ab[..., None].expand(-1, -1, 3))).square().sum(-1).mean(1)
    d_ba = (b - torch.gather(a, 1, i_ba[..., None].expand(-1, -1, 3))).square().sum(-1).mean(1)
    return torch.maximum(d_ab, d_ba)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two [N, D] clouds, got {a.shape} and {b.shape}")
    if len(a) != len(b):
        raise ValueError(f"EMD / EM-kD need clouds of equal size, got {len(a)} and {len(b)} points")
    if len(a) == 0:
        raise ValueError("empty clouds")
    return a, b


def emd_exact_assignment(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """Exact EMD by a dense linear assignment (scipy `linear_sum_assignment`, O(N^3), O(N^2) memory).

    a, b float [N, 3]. Returns (mean matched Euclidean distance, perm int64 [N] with a_i -> b_perm[i]).
    Use for small clouds (N of a few thousand; N = 8192 takes tens of seconds and 0.5 GB).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a, b = _check_pair(a, b)
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(len(a), dtype=np.int64)
    perm[rows] = cols
    return float(cost[rows, cols].sum() / len(a)), perm


def emd_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Exact EMD (mean matched Euclidean distance, clouds' units) of two equal-size clouds a, b [N, 3]."""
    return emd_exact_assignment(a, b)[0]


# ----------------------------------------------------------------------------------------- auction (torch)


@dataclass(frozen=True)
class AuctionConfig:
    """Settings of the auction LAP solver (Bertsekas' forward auction with epsilon scaling).

    eps_rel: final epsilon as a fraction of the cost range (max - min of the cost matrix). The assignment
        found satisfies eps-complementary slackness, so its MEAN cost is at most the optimum + eps.
    eps_start_rel: first epsilon of the scaling schedule, as a fraction of the cost range.
    eps_factor: epsilon is divided by this between scaling phases.
    max_rounds: bidding rounds per phase before the remaining persons are assigned by an exact LAP on the
        free persons / objects (so the result is always a complete assignment, `converged` then False).
    """

    eps_rel: float = 1e-3
    eps_start_rel: float = 0.125
    eps_factor: float = 5.0
    max_rounds: int = 20000


@dataclass(frozen=True)
class AuctionResult:
    """Result of `auction_assignment`: perm int64 [N] (person i -> object perm[i]), mean cost of that
    assignment, eps (absolute final epsilon: mean cost <= optimum + eps when converged), rounds
    (bidding rounds over all phases), converged (False when the fallback completed the assignment)."""

    perm: np.ndarray
    mean_cost: float
    eps: float
    rounds: int
    converged: bool


_resolve_device = torch_device  # str -> torch.device (fusion.device)


def auction_assignment(cost, config: AuctionConfig = AuctionConfig(), device: str = "auto") -> AuctionResult:
    """Minimum-cost complete assignment of a square cost matrix by a Jacobi (all-bidders-at-once) auction.

    cost: array-like or torch tensor float [N, N] (any units; the result's mean_cost is in the same units).
    Runs on CPU or CUDA (`device` "auto"|"cpu"|"cuda"); O(N^2) memory, each round O(bidders * N).
    Epsilon is scaled to the cost range (see AuctionConfig); the result is always a complete assignment.
    """
    import torch

    dev = _resolve_device(device)
    c = torch.as_tensor(np.asarray(cost) if not isinstance(cost, torch.Tensor) else cost).to(dev)
    if c.dtype not in (torch.float32, torch.float64):
        c = c.double()
    n = c.shape[0]
    if c.ndim != 2 or c.shape[1] != n or n == 0:
        raise ValueError(f"auction needs a non-empty square cost matrix, got {tuple(c.shape)}")
    if n == 1:
        return AuctionResult(np.zeros(1, np.int64), float(c[0, 0]), 0.0, 0, True)
    crange = float(c.max() - c.min())
    eps_final = max(config.eps_rel * crange, 1e-12)
    eps = max(config.eps_start_rel * crange, eps_final)
    prices = torch.zeros(n, dtype=c.dtype, device=dev)
    owner = torch.full((n,), -1, dtype=torch.long, device=dev)  # object -> person
    assign = torch.full((n,), -1, dtype=torch.long, device=dev)  # person -> object
    neg_inf = torch.tensor(float("-inf"), dtype=c.dtype, device=dev)
    rounds = 0
    converged = True
    obj_bid = torch.empty(n, dtype=c.dtype, device=dev)
    winner = torch.empty(n, dtype=torch.long, device=dev)
    all_persons = torch.arange(n, device=dev)
    while True:
        phase_rounds = 0
        while True:
            persons = torch.nonzero(assign < 0).squeeze(1)
            if persons.numel() == 0:
                break
            if phase_rounds >= config.max_rounds:
                converged = False
                break
            value = torch.neg(c[persons]).sub_(prices)  # [P, N] benefit of each object for each bidder
            top = torch.topk(value, 2, dim=1)
            best = top.indices[:, 0]
            bid = prices[best] + (top.values[:, 0] - top.values[:, 1]) + eps
            obj_bid.fill_(float("-inf"))
            obj_bid.scatter_reduce_(0, best, bid, reduce="amax")
            is_win = bid >= obj_bid[best]
            winner.fill_(-1)
            winner.scatter_reduce_(0, best[is_win], persons[is_win], reduce="amax")
            objs = torch.nonzero(winner >= 0).squeeze(1)
            prev = owner[objs]
            assign[prev[prev >= 0]] = -1
            won = winner[objs]
            owner[objs] = won
            assign[won] = objs
            prices[objs] = obj_bid[objs]
            phase_rounds += 1
        rounds += phase_rounds
        if not converged or eps <= eps_final:
            break
        eps = max(eps / config.eps_factor, eps_final)
        # keep the pairs that satisfy eps-complementary slackness for the new eps, re-auction the rest
        v_best = torch.neg(c).sub_(prices).max(dim=1).values
        v_own = -c[all_persons, assign] - prices[assign]
        drop = v_own < v_best - eps
        owner[assign[drop]] = -1
        assign[drop] = -1
    perm = assign.cpu().numpy().astype(np.int64)
    if not converged:  # complete the assignment exactly on the leftovers
        from scipy.optimize import linear_sum_assignment

        free_p = np.nonzero(perm < 0)[0]
        taken = np.zeros(n, bool)
        taken[perm[perm >= 0]] = True
        free_o = np.nonzero(~taken)[0]
        sub = c.cpu().numpy()[np.ix_(free_p, free_o)]
        r, k = linear_sum_assignment(sub)
        perm[free_p[r]] = free_o[k]
    mean_cost = float(c[torch.arange(n, device=dev), torch.as_tensor(perm, device=dev)].double().mean())
    return AuctionResult(perm, mean_cost, eps_final, rounds, converged)


def auction_assignment_reference(cost: np.ndarray, eps: float) -> np.ndarray:
    """Slow, obviously-correct numpy reference: Gauss-Seidel forward auction (one bidder at a time) at a
    fixed absolute `eps` (no scaling). cost float [N, N]; returns perm int64 [N] (person -> object) whose
    total cost is at most the optimum + N * eps."""
    c = np.asarray(cost, dtype=np.float64)
    n = len(c)
    prices = np.zeros(n)
    owner = -np.ones(n, dtype=np.int64)
    assign = -np.ones(n, dtype=np.int64)
    queue = list(range(n))
    while queue:
        i = queue.pop()
        value = -c[i] - prices
        j = int(np.argmax(value))
        second = np.max(np.delete(value, j)) if n > 1 else value[j]
        prices[j] += value[j] - second + eps
        if owner[j] >= 0:
            assign[owner[j]] = -1
            queue.append(int(owner[j]))
        owner[j] = i
        assign[i] = j
    return assign


def emd_auction(a: np.ndarray, b: np.ndarray, config: AuctionConfig = AuctionConfig(), device: str = "auto") -> AuctionResult:
    """EMD of two equal-size clouds a, b float [N, 3] by the torch auction (mean Euclidean distance).

    The returned mean_cost is within `eps` (absolute, clouds' units) above the exact EMD when converged.
    """
    import torch

    a, b = _check_pair(a, b)
    dev = _resolve_device(device)
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    ta = torch.as_tensor(a, dtype=dtype, device=dev)
    tb = torch.as_tensor(b, dtype=dtype, device=dev)
    return auction_assignment(torch.cdist(ta, tb), config, device=str(dev))


# ---------------------------------------------------------------------------------------------------- EM-kD


def kd_leaf_pairs(a: np.ndarray, b: np.ndarray, leaf_size: int = 1024) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split two equal-size clouds by the same k-d recursion (NeuralQAAD §3.5): at each node the axis is
    the longest side of the joint bounding box, and each cloud is split at its own median along it
    (stable sort), so both halves always hold equal counts. Recurses until a node holds <= leaf_size points.

    a, b float [N, D]. Returns a list of leaf pairs (index array into a, index array into b), each int64
    [n_leaf] with equal lengths; the leaves partition range(N) on both sides.
    """
    a, b = _check_pair(a, b)
    if leaf_size < 1:
        raise ValueError("leaf_size must be >= 1")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    stack = [(np.arange(len(a)), np.arange(len(b)))]
    while stack:
        ia, ib = stack.pop()
        n = len(ia)
        if n <= leaf_size:
            out.append((ia, ib))
            continue
        pa, pb = a[ia], b[ib]
        ext = np.maximum(pa.max(0), pb.max(0)) - np.minimum(pa.min(0), pb.min(0))
        ax = int(np.argmax(ext))
        sa = ia[np.argsort(pa[:, ax], kind="stable")]
        sb = ib[np.argsort(pb[:, ax], kind="stable")]
        h = n // 2
        stack.append((sa[h:], sb[h:]))
        stack.append((sa[:h], sb[:h]))
    return out


def emkd_assignment(a: np.ndarray, b: np.ndarray, leaf_size: int = 1024, solver: str = "scipy",
                    device: str = "auto", auction: AuctionConfig = AuctionConfig()) -> tuple[float, np.ndarray]:
    """EM-kD (NeuralQAAD eq. 14) and its bijection: the per-leaf optimal assignments of `kd_leaf_pairs`.

    a, b float [N, 3] (equal N). EM-kD = 1/N * sum over leaf pairs of the leaf's optimal matched Euclidean
    distances (normalised like `emd_exact`, so EM-kD >= EMD, with equality when N <= leaf_size).
    solver: "scipy" (exact per leaf) or "auction" (torch, CPU/GPU, each leaf within auction eps).
    Returns (value in the clouds' units, perm int64 [N] with a_i -> b_perm[i]).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a, b = _check_pair(a, b)
    perm = np.empty(len(a), dtype=np.int64)
    total = 0.0
    for ia, ib in kd_leaf_pairs(a, b, leaf_size):
        cost = cdist(a[ia], b[ib])
        if solver == "scipy":
            r, k = linear_sum_assignment(cost)
        elif solver == "auction":
            res = auction_assignment(cost, auction, device=device)
            r, k = np.arange(len(ia)), res.perm
        else:
            raise ValueError(f"unknown solver {solver!r} (scipy|auction)")
        perm[ia[r]] = ib[k]
        total += float(cost[r, k].sum())
    return total / len(a), perm


def emkd(a: np.ndarray, b: np.ndarray, leaf_size: int = 1024, solver: str = "scipy", device: str = "auto") -> float:
    """EM-kD of two equal-size clouds a, b float [N, 3] (mean matched Euclidean distance, clouds' units);
    an upper bound of the exact EMD, computed as independent LAPs on leaves of <= leaf_size points."""
    return emkd_assignment(a, b, leaf_size, solver=solver, device=device)[0]
