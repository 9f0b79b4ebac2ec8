"""Linear assignment for weight matching: scipy's exact solver on the CPU, an auction on an accelerator.

Weight matching solves one n × n assignment per group and pass (n = a layer's units: 8192 at MLP ×16).
On the CPU ``scipy.optimize.linear_sum_assignment`` (shortest augmenting paths, exact) is the right tool.
On a GPU the same call would copy each float64 cost matrix to the host (512 MB at n = 8192) and solve it
on one core, so there lewc runs Bertsekas' **auction algorithm** on the device instead: every unassigned
row bids for its best column at once (Jacobi bidding, one batched top-2 per round), with ε-scaling.

The auction ends in ε-complementary slackness, so its assignment is within n·ε of the optimum
(Bertsekas 1988, *Annals of Operations Research* 14). ``AUCTION_EPS`` sets the final ε relative to the
largest |cost|: the total shortfall is at most n · 1e-12 · max|cost| — below float64 rounding of the
sums compared, so wherever the optimum is unique by more than that, the permutation is scipy's
(tests/test_assignment.py checks both on random and tied matrices, against scipy). Weight matching only
accepts an assignment that raises the objective, so either solver ends at a fixed point.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

AUCTION_EPS = 1e-12  # final ε relative to max |cost| (module docstring)
EPS_STEP = 8.0  # ε-scaling: each phase divides ε by this
WARM_START = 1e-4  # smallest first ε (relative to max |cost|) of a warm-started solve (``warm_start``): 5-15×
# fewer rounds than a cold start when the matrix moved by up to ~1e-3 of its largest entry (planted 1024²)


def solve(cost: torch.Tensor) -> np.ndarray:
    """The column of each row maximising Σ cost[i, col[i]] (square ``cost``): the exact solver on the CPU,
    the auction on an accelerator (``cost`` stays where it is)."""
    if cost.device.type == "cpu":
        return linear_sum_assignment(cost.numpy(), maximize=True)[1]
    return auction(cost).cpu().numpy()


class Solver:
    """``solve`` for the groups of one weight matching: on a device each group's auction prices are kept
    and warm-start its next solve (its cost matrix changes little between passes; ``warm_start``)."""

    def __init__(self) -> None:
        self.prices: dict[int, torch.Tensor] = {}

    def solve(self, group: int, cost: torch.Tensor, current: np.ndarray) -> np.ndarray:
        """The group's assignment; ``current`` is its assignment now (the warm start's reference)."""
        if cost.device.type == "cpu":
            return solve(cost)
        prices = self.prices.get(group)
        if prices is None:
            prices = self.prices[group] = torch.zeros(len(cost), dtype=torch.float64, device=cost.device)
            return auction(cost, prices=prices).cpu().numpy()
        return auction(cost, prices=prices, start=warm_start(cost, prices, current)).cpu().numpy()


def warm_start(cost: torch.Tensor, prices: torch.Tensor, current: np.ndarray) -> float:
    """First ε of a warm start: the largest ε-complementary-slackness violation of ``current`` under the
    kept prices, relative to max|cost| (at least ``WARM_START``, at most a cold start's ½). Starting below
    it would cost price wars of many rounds of tiny raises; above it, phases that prices already pass."""
    a = cost.double()
    col = torch.as_tensor(current, device=cost.device)
    values = a - prices
    slack = values.amax(1) - values[torch.arange(len(col), device=cost.device), col]
    worst, scale = torch.stack([slack.amax(), a.abs().amax()]).tolist()  # one sync
    return min(max(worst / scale if scale else 0.5, WARM_START), 0.5)


@torch.no_grad()
def auction(
    benefit: torch.Tensor, rel_eps: float = AUCTION_EPS, prices: torch.Tensor | None = None, start: float = 0.5
) -> torch.Tensor:
    """Forward auction with ε-scaling on ``benefit``'s device: the column per row (int64), maximising the
    sum, within n · rel_eps · max|benefit| of the optimum. ``prices`` (float64, updated in place) and a
    smaller ``start`` ε (relative to max|benefit|) warm-start it from an earlier solve of a nearby matrix;
    any start gives the same guarantee."""
    n = benefit.shape[0]
    if benefit.shape != (n, n):
        raise ValueError(f"the auction needs a square matrix, got {tuple(benefit.shape)}")
    dev = benefit.device
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=dev)
    a = benefit.double()
    scale = float(a.abs().max())
    if scale == 0.0 or not np.isfinite(scale):
        return torch.arange(n, device=dev)
    prices = torch.zeros(n, dtype=torch.float64, device=dev) if prices is None else prices
    rows = torch.arange(n, device=dev)
    final = max(scale * rel_eps, np.finfo(np.float64).tiny)
    eps = max(scale * start, final)
    while True:
        owner = torch.full((n,), -1, dtype=torch.long, device=dev)  # column → row
        column = torch.full((n,), -1, dtype=torch.long, device=dev)  # row → column
        while True:
            free = rows[column < 0]
            if not len(free):
                break
            values = a[free] - prices
            top = values.topk(2, dim=1)
            best = top.indices[:, 0]
            bids = prices[best] + (top.values[:, 0] - top.values[:, 1]) + eps
            high = torch.full((n,), -torch.inf, dtype=torch.float64, device=dev)
            high.scatter_reduce_(0, best, bids, "amax")
            # the highest bidder takes each column (the lowest row index among equal bids)
            winner = torch.full((n,), n, dtype=torch.long, device=dev)
            winner.scatter_reduce_(0, best, torch.where(bids == high[best], free, n), "amin")
            won = torch.nonzero(winner < n).flatten()
            losers = owner[won]
            column[losers[losers >= 0]] = -1
            owner[won] = winner[won]
            column[winner[won]] = won
            prices[won] = high[won]
        if eps <= final:
            return column
        eps = max(eps / EPS_STEP, final)


__all__ = ["AUCTION_EPS", "Solver", "auction", "solve", "warm_start"]
