"""The tuner's multiple-choice knapsack: exact (against brute force) and deterministic."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qcore.tuning.solver import least_loss, solve, undominated


def brute_force(costs, losses, budget):  # type: ignore[no-untyped-def]
    best = None
    for choice in itertools.product(*(range(len(c)) for c in costs)):
        loss = sum(losses[g][i] for g, i in enumerate(choice))
        if loss > budget:
            continue
        key = (sum(costs[g][i] for g, i in enumerate(choice)), loss, choice)
        best = key if best is None or key < best else best
    return None if best is None else best[2]


instances = st.integers(1, 5).flatmap(lambda groups: st.tuples(
    st.lists(st.lists(st.tuples(st.integers(0, 30), st.integers(-5, 40)), min_size=1, max_size=4),
             min_size=groups, max_size=groups),
    st.integers(-10, 120)))


@given(instances)
def test_the_solver_finds_the_brute_force_optimum(instance) -> None:  # type: ignore[no-untyped-def]
    groups, budget = instance
    costs = [[c for c, _ in g] for g in groups]
    losses = [[l for _, l in g] for g in groups]
    assert solve(costs, losses, budget) == brute_force(costs, losses, budget)


def test_random_instances_with_many_ties_match_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(300):
        groups = rng.randint(1, 6)
        costs = [[rng.choice([1, 2, 4, 8]) for _ in range(rng.randint(1, 4))] for _ in range(groups)]
        losses = [[rng.choice([0, 1, 3, 5]) for _ in row] for row in costs]
        budget = rng.randint(0, 4 * groups)
        assert solve(costs, losses, budget) == brute_force(costs, losses, budget)


def test_an_impossible_budget_gives_none_and_the_least_loss_says_why() -> None:
    costs, losses = [[5, 1], [5, 1]], [[2, 9], [3, 9]]
    assert solve(costs, losses, 4) is None
    assert least_loss(losses) == 5 and solve(costs, losses, 5) == (0, 0)


def test_larger_instances_solve_quickly_and_identically() -> None:
    rng = random.Random(0)
    costs = [[100 * rng.randint(80, 120), 26 * rng.randint(90, 110), 26 * rng.randint(90, 110), 14 * rng.randint(90, 110)]
             for _ in range(36)]
    losses = [[0, rng.randint(0, 50), rng.randint(20, 400), rng.randint(100, 3000)] for _ in costs]
    first = solve(costs, losses, 5000)
    assert first is not None and first == solve(costs, losses, 5000)
    assert sum(losses[g][i] for g, i in enumerate(first)) <= 5000


@pytest.mark.parametrize(("costs", "losses", "kept"), [
    ([1, 1], [2, 2], [0]),          # identical: the first stays
    ([1, 2, 3], [3, 2, 1], [0, 1, 2]),
    ([2, 1, 3], [1, 1, 0], [1, 2]),  # item 0 costs more for the same loss
])
def test_dominated_items_are_dropped(costs, losses, kept) -> None:  # type: ignore[no-untyped-def]
    assert undominated(costs, losses) == kept


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="group 0"):
        solve([[1, 2]], [[1]], 3)
    with pytest.raises(TypeError, match="integers"):
        solve([[1.5]], [[1]], 3)
