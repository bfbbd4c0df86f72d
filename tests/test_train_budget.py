"""The time budget's LR schedule follows the planned steps, warm-up included."""

from __future__ import annotations

import math

from leanpremise.train.trainer import TimeBudget


def warmup_ratio(total: int) -> int:
    return math.ceil(0.03 * total)


def test_warmup_follows_planned_steps_not_nominal_ones():
    budget = TimeBudget(minutes=1)
    budget.planned_steps = 100  # what fits in the budget; the nominal run (100 epochs) is far longer
    nominal = 20_000
    assert budget.lr_factor(0, nominal, warmup_ratio, "cosine") == 1 / 3
    assert budget.lr_factor(3, nominal, warmup_ratio, "cosine") > 0.99
    # the cosine decays to ~0 at the planned end, not at the nominal one
    assert budget.lr_factor(99, nominal, warmup_ratio, "cosine") < 0.01
    assert budget.lr_factor(50, nominal, warmup_ratio, "linear") == 1 - 47 / 97


def test_without_a_plan_the_nominal_steps_are_used():
    budget = TimeBudget(minutes=1)
    assert budget.lr_factor(0, 1000, warmup_ratio, "cosine") == 1 / 30
    assert budget.lr_factor(500, 1000, warmup_ratio, "constant") == 1.0
