"""MePo on hand-made symbol sets (worked by hand from the algorithm), and the Lean symbol extraction."""

from __future__ import annotations

import numpy as np
import pytest

from leanpremise.eval.lean_tokens import bm25_tokens, symbols
from leanpremise.eval.mepo import MePoConfig, SymbolIndex, mepo_batch, symbol_weight

# freq: A 3 (w = 1 + 2/(1+1) = 2), B 1 (w 3), X 2 (w 2), Y 1 (w 3), Z 1 (w 3)
PREMISES = [{"A", "B"}, {"A", "X"}, {"X", "Y"}, {"Z"}, {"A"}]
GOAL = {"A", "B"}


@pytest.fixture(scope="module")
def index():
    return SymbolIndex(PREMISES)


def _run(index, k=10, p=0.6, c=2.4, accessible=None, goal=GOAL):
    rel = np.zeros((index.matrix.shape[1], 1), dtype=np.float32)
    rel[[index.vocab[s] for s in goal], 0] = 1
    acc = np.ones((1, len(PREMISES)), dtype=bool) if accessible is None else np.asarray([accessible])
    ids, scores = mepo_batch(index, rel, acc, k, MePoConfig(p=p, c=c))
    keep = ids[0] >= 0
    return ids[0][keep].tolist(), scores[0][keep].tolist()


def test_weights_follow_lean_core():
    assert symbol_weight(np.array([0, 1, 2, 3, 4, 8])).tolist() == pytest.approx([3, 3, 2, 2, 1 + 2 / 3, 1.5])
    idx = SymbolIndex(PREMISES)
    w = {s: idx.weights[i] for s, i in idx.vocab.items()}
    assert w == pytest.approx({"A": 2.0, "B": 3.0, "X": 2.0, "Y": 3.0, "Z": 3.0})


def test_one_round_then_the_pass_mark_rises_past_the_rest(index):
    # round 1 (p=0.6): {A,B} 5/5 = 1, {A} 2/2 = 1, {A,X} 2/(2+1) = 0.667 accepted; R becomes {A,B,X}.
    # round 2 (p = 0.6 + 0.4/2.4 = 0.767): {X,Y} scores 2/(2+1) = 0.667 < 0.767: nothing new, stop.
    ids, scores = _run(index)
    assert ids == [0, 4, 1]  # ties at 1.0 broken by more matched weight (5 > 2)
    assert scores == pytest.approx([1.0, 1.0, 2 / 3])


def test_slow_decay_lets_a_second_round_in(index):
    # c huge: p stays ~0.6, so {X,Y} (0.667 once X is relevant) joins in round 2; {Z} never does.
    # Ranked by round first: premise 2 comes after 1 although both score 2/3 with M = 2; the written
    # score is score - round (rounds counted from 0), so premise 2's is 2/3 - 1.
    ids, scores = _run(index, c=1e6)
    assert ids == [0, 4, 1, 2]
    assert scores == pytest.approx([1.0, 1.0, 2 / 3, 2 / 3 - 1])


def test_a_later_round_s_higher_score_is_written_below_the_earlier_round():
    # freq: A 1 (w 3), Y 2 (w 2); goal {A}.
    # round 0 (p=0.6): {A,Y} M=3, one irrelevant symbol: 3/4 accepted; {Y} M=0 not. R becomes {A,Y}.
    # round 1 (p=0.767): {Y} M=2, nothing irrelevant: 1.0 accepted. MePo's order: [0, 1] (round first),
    # raw scores [0.75, 1.0] would rise; written [0.75, 1.0 - 1].
    index = SymbolIndex([{"A", "Y"}, {"Y"}])
    rel = np.zeros((index.matrix.shape[1], 1), dtype=np.float32)
    rel[index.vocab["A"], 0] = 1
    ids, scores = mepo_batch(index, rel, np.ones((1, 2), dtype=bool), 2, MePoConfig())
    assert ids[0].tolist() == [0, 1]
    assert scores[0].tolist() == pytest.approx([0.75, 0.0])


def test_stops_at_k_and_respects_accessibility(index):
    assert _run(index, k=2)[0] == [0, 4]
    # premise 0 inaccessible: never returned, and its symbol B never becomes relevant through it
    ids, _ = _run(index, accessible=[False, True, True, True, True])
    assert 0 not in ids and ids == [4, 1]


def test_high_pass_mark_accepts_only_perfect_matches(index):
    assert _run(index, p=0.9)[0] == [0, 4]


def test_symbols_drop_variables_binders_and_own_name():
    text = "/-- doc Nat.foo -/\ntheorem List.reverse_perm' {α : Type u} {l₁ l₂ : List α} : l₁.reverse ~ l₂ ↔ l₁ ~ l₂"
    assert symbols(text, exclude="List.reverse_perm'") == {"List", "reverse", "~", "↔"}
    goal = "α : Type u_1\ninst✝ : Preorder α\nf : ℕ → α\nhf : Monotone f\nh1 : f n < x\n⊢ ∀ y ∈ s, f y ≠ x"
    assert symbols(goal) == {"Preorder", "ℕ", "Monotone", "<", "∈", "≠"}


def test_bm25_tokens_split_identifiers():
    toks = bm25_tokens("theorem Nat.add_comm (n m : ℕ) : n + m = m + n")
    assert {"Nat.add_comm", "nat", "add", "comm", "ℕ", "+", "="} <= set(toks)
    assert "theorem" not in toks and ":" not in toks
