"""Reading outcomes from `lake exe tactic_benchmark` output."""

import pytest

from leanpremise.bench import outcomes as oc


@pytest.mark.parametrize("output, outcome, solved", [
    ("Testing on alias of Nat.foo in M\n✅️ Nat.foo__eval (0.4s) (1200 heartbeats)", "✅️", True),
    ("✅️(success) Nat.foo__eval (0.4s) (1200 heartbeats)", "✅️(success)", True),
    ("✅️(success)(success) Nat.foo__eval (0.4s)", "✅️(success)", True),  # a newer printer repeats the reason
    ("✅️✅️✅️✅️✅️✅️ Nat.foo__eval (3.2s)", "✅️✅️✅️✅️✅️✅️", True),
    ("✅ Nat.foo__eval", "✅️", True),  # printed without the variation selector: same outcome
    ("✅️✅️✅️💥️❌️❌️ Nat.foo__eval (12s)", "✅️✅️✅️💥️❌️❌️", False),
    ("✅️✅️✅️✅️✅️💥️ Nat.foo__eval (12s)", "✅️✅️✅️✅️✅️💥️", False),
    ("❌️ Nat.foo__eval (0.1s)", "❌️", False),
    ("❌️(failure) Nat.foo__eval", "❌️(failure)", False),
    ("💥️ Nat.foo__eval", "💥️", False),
    ("About to run\n💥️(subgoals) Nat.foo__eval (2s)", "💥️(subgoals)", False),
    ("✅️(weird) Nat.foo__eval", "✅️(weird)", False),  # only `(success)` counts as a solved reason
    ("TimeoutExpired: Command 'lake exe ...' timed out after 300 seconds", "⏰", False),
    ("aesop failed with error (deterministic) timeout at `whnf`, maximum number of heartbeats", "❤️", False),
    ("aesop_with_premises failed with error unknown constant 'Prod.fst_swap_apply'", "not tested", False),
    ("", "not tested", False),
    ("Note ✅️ in the middle of a line is not a result", "not tested", False),
])
def test_outcome_from_output(output, outcome, solved):
    got = oc.outcome_from_output(output)
    assert got == outcome
    assert oc.is_solved(got) is solved


def test_recorded_emoji_wins_and_old_entries_are_parsed():
    assert oc.outcome_of_entry({"result_emoji": "⏰", "result_output": "✅️ x"}) == "⏰"
    assert oc.outcome_of_entry({"result_emoji": "❌", "result_output": ""}) == "❌️"
    assert oc.outcome_of_entry({"result_output": "💥️(noJSON) x"}) == "💥️(noJSON)"
    assert oc.outcome_of_entry({}) == "not tested"


@pytest.mark.parametrize("outcome, label", [
    ("✅️✅️✅️💥️❌️❌️", "Zipperposition fail"),
    ("✅️💥️❌️❌️❌️❌️", "Preprocessing error"),
    ("💥️(subgoals)", "Error: subgoals"),
    ("✅️✅️✅️✅️❌️❌️", "Stopped at reconstruction"),  # not in the table: named from the stage that stopped
    ("⏰", "Uncaught timeout"),
])
def test_labels(outcome, label):
    assert oc.label(outcome) == label
