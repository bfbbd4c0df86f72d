"""TimeBudget driven through simulated training steps by a fake clock: when it stops, what it plans,
and the learning rate the schedule gives along the way."""

from __future__ import annotations

import itertools
import math

import pytest
from transformers import TrainerControl, TrainerState

from leanpremise.train.trainer import TimeBudget


def warmup_tenth(total: int) -> int:
    """A warm-up of a tenth of the run (the trainer passes TrainingArguments.get_warmup_steps)."""
    return math.ceil(0.1 * total)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(minutes, step_seconds, max_steps, start_step=0, kind="cosine", args=None):
    """Run the trainer's loop against the callback: each step trains at the LR the schedule gives
    for it, takes step_seconds(k) seconds on the fake clock, then on_step_end is called.

    Returns (steps reached, planned steps after each step, LR factor of each step, final control).
    """
    clock = FakeClock()
    budget = TimeBudget(minutes, clock=clock)
    state = TrainerState(global_step=start_step, max_steps=max_steps)
    control = TrainerControl()
    budget.on_train_begin(None, state, control)
    plans, lrs = [], []
    while state.global_step < max_steps and not control.should_training_stop:
        lrs.append(budget.lr_factor(state.global_step, max_steps, warmup_tenth, kind))
        clock.now += step_seconds(state.global_step)
        state.global_step += 1
        control = budget.on_step_end(args, state, control)
        plans.append(budget.planned_steps)
    return state.global_step, plans, lrs, control


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_steady_steps_stop_when_the_budget_is_spent_and_the_lr_has_decayed(kind):
    steps, plans, lrs, control = simulate(1, lambda k: 2.0, max_steps=10_000, kind=kind)
    assert steps == 30  # 30 steps of 2 s fill the minute
    assert control.should_training_stop and control.should_save
    assert set(plans) == {30}  # the plan is right from the first step and never moves
    assert max(lrs) == pytest.approx(1.0, abs=0.02)  # the warm-up ended inside the budget
    assert lrs.index(max(lrs)) <= 4
    after_peak = lrs[lrs.index(max(lrs)):]
    assert all(a >= b for a, b in itertools.pairwise(after_peak))
    assert lrs[-1] < 0.05  # the last step trains at a nearly decayed LR, not at the nominal run's peak


def test_a_slow_first_step_is_corrected_by_later_ones():
    steps, plans, _, control = simulate(1, lambda k: 20.0 if k == 0 else 1.0, max_steps=10_000)
    assert steps == 41  # 20 s, then 40 steps of 1 s
    assert control.should_training_stop
    assert plans[0] < 10  # after one slow step the plan is short
    assert all(a <= b for a, b in itertools.pairwise(plans))  # and grows as faster steps come in
    assert plans[-1] == steps  # until it meets the step where the budget really ends


def test_a_nominal_run_shorter_than_the_budget_runs_to_its_end():
    steps, plans, lrs, control = simulate(10, lambda k: 1.0, max_steps=20)
    assert steps == 20
    assert not control.should_training_stop
    assert set(plans) == {20}  # never plans past max_steps
    assert lrs[-1] < 0.05


def test_a_resumed_run_counts_time_and_steps_from_where_it_resumed():
    steps, plans, _, control = simulate(1, lambda k: 2.0, max_steps=10_000, start_step=500)
    assert steps == 530
    assert control.should_training_stop
    assert set(plans) == {530}


def test_warmup_follows_planned_steps_not_nominal_ones():
    """A budget that fits 30 steps of a nominal 10,000-step run warms up over the planned 30."""
    _, _, lrs, _ = simulate(1, lambda k: 2.0, max_steps=10_000, kind="constant")
    peak = lrs.index(1.0)
    assert 1 <= peak <= 3  # warmed up within a tenth of the 30 planned steps (the nominal tenth is 1,000)
    assert lrs[:peak] == sorted(lrs[:peak]) and lrs[peak:] == [1.0] * (len(lrs) - peak)


@pytest.mark.parametrize("strategy, saves", [("no", False), ("steps", True), ("epoch", True)])
def test_a_budget_stop_saves_a_checkpoint_unless_saving_is_off(strategy, saves):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", save_strategy=strategy, report_to=[])
    steps, _, _, control = simulate(1, lambda k: 2.0, max_steps=10_000, args=args)
    assert steps == 30 and control.should_training_stop
    assert control.should_save is saves


def test_without_a_plan_the_nominal_steps_are_used():
    budget = TimeBudget(minutes=1, clock=FakeClock())
    assert budget.lr_factor(0, 1000, warmup_tenth, "cosine") < 0.02  # the nominal run's warm-up start
    assert budget.lr_factor(99, 1000, warmup_tenth, "cosine") == pytest.approx(1.0)
    assert budget.lr_factor(999, 1000, warmup_tenth, "cosine") < 1e-3
    assert budget.lr_factor(500, 1000, warmup_tenth, "constant") == 1.0
