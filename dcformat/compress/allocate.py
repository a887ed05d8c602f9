"""The allocation: one candidate per tensor so that the whole file fits its size budget at
the least total distortion (a Lagrangian search over the tensors' ladders)."""

from __future__ import annotations

import math

import numpy as np


def allocate(ladders: dict, rows: dict, budget: float | None) -> dict[str, int | None]:
    """One candidate per tensor (None = raw) minimising sum(importance x relative error) within ``budget`` bytes.

    The Lagrangian ``distortion + lambda x bytes`` is minimised per tensor for a lambda found
    by bisection, which gives the optimal points of the size/distortion trade-off's convex hull.
    """
    names = list(ladders)
    if not names:
        return {}
    width = 1 + max(ladders[n][0].steps.size for n in names)
    cost = np.full((len(names), width), np.inf)
    size = np.zeros((len(names), width))
    for i, name in enumerate(names):
        ladder, pruned_error, energy = ladders[name]
        weight = rows[name]["importance"]
        k = ladder.steps.size
        cost[i, 0] = weight * (pruned_error / energy if energy else 0.0) if rows[name]["pruned"] else 0.0
        size[i, 0] = rows[name]["source_bytes"]  # column 0: raw (exact unless pruned)
        if k:
            cost[i, 1 : k + 1] = weight * (ladder.errors + pruned_error) / energy if energy else 0.0
            size[i, 1 : k + 1] = ladder.nbytes
    size = np.where(np.isfinite(cost), size, 0.0)  # absent candidates: their infinite cost rules them out

    def pick(lam: float) -> np.ndarray:
        return np.argmin(cost + lam * size, axis=1)

    index = np.arange(len(names))

    def total(lam: float) -> float:
        return float(size[index, pick(lam)].sum())

    if budget is None or total(0.0) <= budget:
        chosen = pick(0.0)  # everything at its least distortion fits
    else:
        high = 1e-24
        while total(high) > budget and high < 1e24:
            high *= 4
        if total(high) > budget:  # nothing fits: the smallest candidate of every tensor
            chosen = np.argmin(np.where(np.isfinite(cost), size, np.inf), axis=1)
        else:
            low = high / 4
            for _ in range(64):  # geometric bisection: lambda spans many decades
                mid = math.sqrt(low * high)
                if total(mid) > budget:
                    low = mid
                else:
                    high = mid
            chosen = _fill(cost, size, pick(high), budget)
    return {name: (None if j == 0 else int(j) - 1) for name, j in zip(names, chosen)}


def _fill(cost: np.ndarray, size: np.ndarray, chosen: np.ndarray, budget: float) -> np.ndarray:
    """Spend what the Lagrangian left of the budget: upgrade greedily, best distortion saved per byte first.

    The hull points the bisection can reach may leave a large tensor's next step unused;
    this takes the single upgrades that still fit, one tensor per round (rounds are few:
    each spends part of what is left).
    """
    chosen = chosen.copy()
    rows = np.arange(cost.shape[0])
    for _ in range(10 * cost.size):
        left = budget - size[rows, chosen].sum()
        finite = np.isfinite(cost)
        gain = np.where(finite, cost[rows, chosen][:, None] - np.where(finite, cost, 0.0), 0.0)
        extra = np.where(finite, size - size[rows, chosen][:, None], np.inf)
        ok = finite & (gain > 0) & (extra <= left)
        if not ok.any():
            break
        value = np.where(ok, gain / np.maximum(np.where(ok, extra, 1.0), 1.0), -np.inf)
        i, j = np.unravel_index(np.argmax(value), value.shape)
        chosen[i] = j
    return chosen
