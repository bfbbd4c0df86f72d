"""Metrics against values worked out by hand, one convention at a time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leanpremise.eval.metrics import compute_metrics, f1_at, hit_matrix

# Three states, rankings of depth 4 (-1 = padding):
#   s0: positives {7, 9}; ranked 7, 3, 9, 1     -> hits at ranks 1 and 3
#   s1: positives {}    ; ranked 2, 4, -1, -1   -> no positives at all
#   s2: positives {5}   ; ranked 1, 2, 3, 4     -> positive never retrieved
RANKED = np.array([[7, 3, 9, 1], [2, 4, -1, -1], [1, 2, 3, 4]])
POSITIVES = [np.array([9, 7]), np.array([], dtype=np.int64), np.array([5])]


@pytest.fixture(scope="module")
def m():
    return compute_metrics(RANKED, POSITIVES, k_list=[1, 2, 4], mrr_k=[1, 4])


def test_hit_matrix_marks_positives_and_ignores_padding():
    hits, n_pos = hit_matrix(RANKED, POSITIVES)
    assert hits.tolist() == [[True, False, True, False], [False] * 4, [False] * 4]
    assert n_pos.tolist() == [2, 0, 1]
    # a padding id must never match, even if -1 were (wrongly) listed as a positive
    hits, _ = hit_matrix(np.array([[-1, 3]]), [np.array([-1, 3])])
    assert hits.tolist() == [[False, True]]


def test_recall_averages_over_states_with_positives(m):
    # s0: 1/2 at k=1,2 and 2/2 at k=4; s2: 0. s1 has no positives and is left out.
    assert m["recall@1"] == pytest.approx((0.5 + 0) / 2)
    assert m["recall@4"] == pytest.approx((1.0 + 0) / 2)
    assert m["recall@4_pos"] == m["recall@4"]


def test_fullrecall_counts_states_without_positives_as_recalled(m):
    # s0 fully recalled only at k=4; s1 always (no positives); s2 never.
    assert m["fullrecall@2"] == pytest.approx(1 / 3)
    assert m["fullrecall@4"] == pytest.approx(2 / 3)
    assert m["fullrecall@4_pos"] == pytest.approx(1 / 2)


def test_precision_mrr_accuracy_average_over_all_states(m):
    assert m["precision@1"] == pytest.approx((1 / 1 + 0 + 0) / 3)
    assert m["precision@4"] == pytest.approx((2 / 4 + 0 + 0) / 3)
    assert m["precision@4_pos"] == pytest.approx((2 / 4 + 0) / 2)
    assert m["mrr@1"] == pytest.approx(1 / 3)
    assert m["mrr@4"] == pytest.approx(1 / 3)
    assert m["mrr@4_pos"] == pytest.approx(1 / 2)
    assert m["accuracy@2"] == pytest.approx(1 / 3)
    assert m["accuracy@2_pos"] == pytest.approx(1 / 2)


def test_ndcg_and_map_over_states_with_positives(m):
    # s0 at k=4: DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal = 1 + 1/log2(3).
    ndcg0 = 1.5 / (1 + 1 / math.log2(3))
    assert m["ndcg@4"] == pytest.approx((ndcg0 + 0) / 2)
    # s0 at k=2: DCG 1, ideal (2 positives, k=2) 1 + 1/log2(3)
    assert m["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3))) / 2)
    # AP@4 of s0: (1/1 + 2/3) / min(4, 2); AP@1: 1 / min(1, 2)
    assert m["map@4"] == pytest.approx(((1 + 2 / 3) / 2 + 0) / 2)
    assert m["map@1"] == pytest.approx((1.0 + 0) / 2)


def test_counts_and_k_beyond_the_ranking_depth():
    m = compute_metrics(RANKED, POSITIVES, k_list=[8], mrr_k=8)
    assert m["states"] == 3 and m["states_without_positives"] == 1
    assert m["recall@8"] == pytest.approx(0.5)  # same hits as at depth 4
    assert m["precision@8"] == pytest.approx((2 / 8) / 3)  # precision still divides by k


def test_f1_per_state():
    f1 = f1_at(RANKED, POSITIVES, 2)
    p, r = 1 / 2, 1 / 2
    assert f1.tolist() == pytest.approx([2 * p * r / (p + r), 0.0, 0.0])


def test_empty_inputs_give_zeros():
    m = compute_metrics(np.zeros((0, 4), dtype=np.int64), [], k_list=[1], mrr_k=1)
    assert m["states"] == 0 and m["recall@1"] == 0.0 and m["precision@1"] == 0.0


# --- cross-check against ranx, an independent implementation ------------------------------------------

def _random_case(seed: int, states: int, depth: int, universe: int, padded: bool):
    """Rankings without repeats (so no ties), 0-8 positives per state drawn from the whole universe:
    some are ranked, some are not (inaccessible premises), some states have none."""
    rng = np.random.default_rng(seed)
    ranked = np.stack([rng.permutation(universe)[:depth] for _ in range(states)]).astype(np.int64)
    if padded:  # shorter rankings end in -1 padding
        lengths = rng.integers(1, depth + 1, states)
        ranked[np.arange(depth)[None, :] >= lengths[:, None]] = -1
    positives = [rng.choice(universe, size=rng.integers(0, 9), replace=False) for _ in range(states)]
    positives[0] = np.array([], dtype=np.int64)  # at least one state without positives
    return ranked, positives


def _ranx_scores(ranked, positives, metrics):
    from ranx import Qrels, Run, evaluate

    keep = [i for i, p in enumerate(positives) if len(p)]
    qrels = Qrels({f"q{i}": {f"d{d}": 1 for d in positives[i]} for i in keep})
    # strictly decreasing scores reproduce the ranking's order exactly; padding is simply not retrieved
    run = Run({f"q{i}": {f"d{d}": float(len(ranked[i]) - r) for r, d in enumerate(ranked[i]) if d >= 0}
               for i in keep})
    return evaluate(qrels, run, metrics, make_comparable=True)


@pytest.mark.filterwarnings("ignore:unsafe cast")  # numba, inside ranx
@pytest.mark.parametrize("seed, states, depth, universe, padded", [
    (0, 5, 10, 30, False), (1, 60, 20, 100, False), (2, 300, 64, 1000, False), (3, 80, 32, 60, True),
])
def test_metrics_agree_with_ranx_on_random_rankings(seed, states, depth, universe, padded):
    """Recall@k, nDCG@k, MRR@k and MAP@k equal ranx's to 1e-9, with aligned definitions.

    Where the definitions differ, the inputs or the compared key are aligned:
    * ranx only scores queries that have relevant documents, so it is given the states with positives
      and compared with our over-positive-states values (`recall`, `ndcg`, `map` already average there;
      MRR is compared as `mrr@k_pos`).
    * ranx's recall divides by all relevant documents, ranked or not, as ours does (inaccessible
      positives count), so it is compared as is.
    * ranx's AP@k divides by all relevant documents, ours (the original evaluator's convention) by
      min(relevant, k): MAP is compared only at k no smaller than any state's number of positives.
    * Padding ids (-1) are not passed to ranx: a shorter ranking is simply a shorter run.
    """
    ranked, positives = _random_case(seed, states, depth, universe, padded)
    assert any(len(p) == 0 for p in positives) and any(len(p) for p in positives)
    ks = sorted({1, 3, 8, depth // 2, depth})
    ours = compute_metrics(ranked, positives, k_list=ks, mrr_k=ks)
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "mrr")]
    names += [f"map@{k}" for k in ks if k >= 8]
    theirs = _ranx_scores(ranked, positives, names)
    for name in names:
        assert ours[f"{name}_pos"] == pytest.approx(theirs[name], abs=1e-9), name
        if not name.startswith("mrr"):
            assert ours[name] == ours[f"{name}_pos"], name
