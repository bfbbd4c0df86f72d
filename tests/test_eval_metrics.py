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
