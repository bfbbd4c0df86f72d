"""What every ranker's top-k goes through: padding, the batch loop over states, the merge with new premises."""

from __future__ import annotations

import numpy as np
import pytest

from leanpremise.rank.runs import exact_topk, merge_new, padded_topk, rank_states


def test_padded_topk_pads_and_fills_the_first_places():
    ids, scores = padded_topk(4, np.array([7, 3]), np.array([0.5, 0.25]))
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.tolist() == [7, 3, -1, -1] and scores.tolist() == [0.5, 0.25, -np.inf, -np.inf]
    ids, scores = padded_topk((2, 3), np.array([[1], [2]]), np.array([[1.0], [2.0]]), score_dtype=np.float64)
    assert scores.dtype == np.float64 and ids.tolist() == [[1, -1, -1], [2, -1, -1]]
    ids, scores = padded_topk((0, 5))
    assert ids.shape == scores.shape == (0, 5)


def test_merge_keeps_the_indexed_order_among_equal_scores_then_new_premises_in_request_order():
    # an indexed list as every ranker writes it: equal scores by lower id, -1 padded
    ids, scores = np.array([4, 2, 9, -1]), np.array([1.0, 0.5, 0.5, -np.inf], dtype=np.float32)
    new = np.array([0.5, 2.0, 0.5], dtype=np.float32)
    got, got_scores = merge_new(ids, scores, new, n=10, depth=7)
    assert got.tolist() == [11, 4, 2, 9, 10, 12, -1]
    assert got_scores.tolist() == [2.0, 1.0, 0.5, 0.5, 0.5, 0.5, -np.inf]
    assert merge_new(ids, scores, new, n=10, depth=3)[0].tolist() == [11, 4, 2]
    # the given order decides among equals, not the id
    assert merge_new(np.array([9, 2]), np.array([0.5, 0.5]), new[:0], 10, 2)[0].tolist() == [9, 2]


def test_merge_with_positions_sorts_a_new_premise_where_its_namesake_would():
    """The usage ranker's rule: equal scores by corpus position, a new premise at its namesake's id, the
    indexed premise first on the same position; unlisted new premises are left out."""
    ids, scores = np.array([2, 5, 8]), np.array([3.0, 3.0, 3.0], dtype=np.float32)
    new = np.array([3.0, 3.0, 0.0], dtype=np.float32)
    got, _ = merge_new(ids, scores, new, n=10, depth=6, new_at=np.array([1, 5, -1]), listed=new > 0)
    assert got.tolist() == [10, 2, 5, 11, 8, -1]
    default, _ = merge_new(ids, scores, new, n=10, depth=6)
    assert default.tolist() == [2, 5, 8, 10, 11, 12]


class _Access:
    """Accessibility stand-in: state s sees premises < s (and counts its calls)."""

    def __init__(self, n):
        self.n, self.calls = n, []

    def mask(self, states):
        self.calls.append(len(states))
        return np.arange(self.n)[None, :] < np.asarray(states)[:, None]


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_rank_states_ranks_each_state_over_its_mask_whatever_the_batch(batch):
    scores = np.random.default_rng(0).random((5, 6)).astype(np.float32)
    states = np.array([3, 0, 6, 1, 4])
    access = _Access(6)
    ids, got = rank_states(lambda i, mask: tuple(a[0] for a in exact_topk(scores[i][None], mask[None], 3)),
                           access, states, 3, batch)
    want = exact_topk(scores, np.arange(6)[None, :] < states[:, None], 3)
    assert np.array_equal(ids, want[0]) and np.array_equal(got, want[1])
    assert access.calls == [min(batch, 5 - a) for a in range(0, 5, batch)]
    assert ids[1].tolist() == [-1, -1, -1]  # state 0 sees nothing
