"""The multiple-choice knapsack behind `qcore tune`: one item per group, least total cost within a loss budget.

Each group (a layer) offers items (candidates) with an integer cost (bytes,
or nanoseconds) and an integer loss (quality lost, in fixed units). `solve`
returns the choice minimising, in this order, the total cost, the total loss
and the index tuple (lexicographically): one exact answer, the same on every
run. It is a depth-first branch and bound, items visited in index order,
pruned by the bound of the linear relaxation (the greedy walk along each
group's lower convex hull, Sinha and Zoltners 1979) and started from the
whole-step rounding of that walk, a feasible first answer. Dominated items
(no cheaper and no better than another) are dropped first; they can never be
the answer under that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import attrs


@attrs.frozen
class _Segment:
    """One step up a group's hull: `cost` more for `gain` less loss (gain > 0)."""

    group: int
    cost: int
    gain: int


def _check(costs: Sequence[Sequence[int]], losses: Sequence[Sequence[int]]) -> None:
    if len(costs) != len(losses):
        raise ValueError(f"solve: {len(costs)} cost rows but {len(losses)} loss rows")
    for g, (c, l) in enumerate(zip(costs, losses)):
        if not c or len(c) != len(l):
            raise ValueError(f"solve: group {g} needs as many costs as losses, at least one ({len(c)}, {len(l)})")
        if not all(isinstance(v, int) for v in (*c, *l)):
            raise TypeError(f"solve: group {g}: costs and losses must be integers")


def undominated(costs: Sequence[int], losses: Sequence[int]) -> list[int]:
    """Indices of items no other item beats: j goes when some i costs no more and loses no more
    (and differs, or comes first)."""
    keep = []
    for j in range(len(costs)):
        beaten = any((costs[i], losses[i]) != (costs[j], losses[j]) or i < j
                     for i in range(len(costs))
                     if i != j and costs[i] <= costs[j] and losses[i] <= losses[j])
        if not beaten:
            keep.append(j)
    return keep


def _hull(costs: Sequence[int], losses: Sequence[int], items: list[int], group: int) -> list[_Segment]:
    """Segments of the lower-left convex hull from the cheapest item to the least lossy (decreasing efficiency)."""
    points = sorted((costs[i], losses[i]) for i in items)  # undominated: cost up, loss down
    hull: list[tuple[int, int]] = []
    for p in points:
        while len(hull) >= 2:
            (c0, l0), (c1, l1) = hull[-2], hull[-1]
            # drop hull[-1] when it lies on or above the line from hull[-2] to p
            if (l0 - l1) * (p[0] - c0) <= (l0 - p[1]) * (c1 - c0):
                hull.pop()
            else:
                break
        hull.append(p)
    return [_Segment(group, c1 - c0, l0 - l1) for (c0, l0), (c1, l1) in zip(hull, hull[1:])]


class _Search:
    def __init__(self, costs: Sequence[Sequence[int]], losses: Sequence[Sequence[int]], budget: int) -> None:
        self.costs, self.losses, self.budget = costs, losses, budget
        self.items = [undominated(c, l) for c, l in zip(costs, losses)]
        n = len(costs)
        self.cheapest = [min(self.items[g], key=lambda i, g=g: (costs[g][i], losses[g][i], i)) for g in range(n)]
        self.least_loss = [min(losses[g][i] for i in self.items[g]) for g in range(n)]
        # suffix sums: the cheapest items' cost and loss, the least loss reachable, from group g on
        self.base_cost = [0] * (n + 1)
        self.base_loss = [0] * (n + 1)
        self.min_loss = [0] * (n + 1)
        for g in reversed(range(n)):
            self.base_cost[g] = self.base_cost[g + 1] + costs[g][self.cheapest[g]]
            self.base_loss[g] = self.base_loss[g + 1] + losses[g][self.cheapest[g]]
            self.min_loss[g] = self.min_loss[g + 1] + self.least_loss[g]
        segments = [s for g in range(n) for s in _hull(costs[g], losses[g], self.items[g], g)]
        self.segments = sorted(segments, key=lambda s: (Fraction(s.cost, s.gain), s.group))
        self.best: tuple[int, int, tuple[int, ...]] | None = None

    def bound(self, g: int, room: int) -> Fraction | None:
        """Least cost of groups g.. within `room` loss in the linear relaxation; None when even that fails."""
        if self.min_loss[g] > room:
            return None
        cost, excess = self.base_cost[g], self.base_loss[g] - room
        for s in self.segments:
            if excess <= 0:
                break
            if s.group < g:
                continue
            if s.gain <= excess:
                cost += s.cost
                excess -= s.gain
            else:
                return Fraction(cost * s.gain + s.cost * excess, s.gain)
        return Fraction(cost)

    def incumbent(self) -> None:
        """A first feasible answer: whole hull steps in the bound's order until the loss fits."""
        chosen = list(self.cheapest)
        loss = self.base_loss[0]
        for s in self.segments:
            if loss <= self.budget:
                break
            g = s.group
            current = (self.costs[g][chosen[g]], self.losses[g][chosen[g]])
            step = next(i for i in self.items[g] if (self.costs[g][i], self.losses[g][i])
                        == (current[0] + s.cost, current[1] - s.gain))
            chosen[g] = step
            loss -= s.gain
        if loss <= self.budget:
            cost = sum(self.costs[g][i] for g, i in enumerate(chosen))
            self.best = (cost, loss, tuple(chosen))

    def _may_improve(self, least_cost: Fraction, least_loss: int) -> bool:
        """Whether a subtree whose cost is at least `least_cost` and loss at least `least_loss` can beat the best."""
        assert self.best is not None
        return least_cost < self.best[0] or least_cost == self.best[0] and least_loss <= self.best[1]

    def run(self, g: int, cost: int, loss: int, chosen: list[int]) -> None:
        n = len(self.costs)
        if g == n:
            key = (cost, loss, tuple(chosen))
            if self.best is None or key < self.best:
                self.best = key
            return
        for i in self.items[g]:
            c, l = cost + self.costs[g][i], loss + self.losses[g][i]
            bound = self.bound(g + 1, self.budget - l)
            if bound is None or self.best is not None and not self._may_improve(c + bound, l + self.min_loss[g + 1]):
                continue
            chosen.append(i)
            self.run(g + 1, c, l, chosen)
            chosen.pop()


def solve(costs: Sequence[Sequence[int]], losses: Sequence[Sequence[int]], budget: int) -> tuple[int, ...] | None:
    """One item index per group minimising (Σ cost, Σ loss, indices) with Σ loss ≤ `budget`; None if none fits."""
    _check(costs, losses)
    search = _Search(costs, losses, budget)
    if search.bound(0, budget) is None:
        return None
    search.incumbent()
    search.run(0, 0, 0, [])
    return None if search.best is None else search.best[2]


def least_loss(losses: Sequence[Sequence[int]]) -> int:
    """The smallest total loss any choice reaches (what the best reachable quality is made of)."""
    return sum(min(row) for row in losses)
