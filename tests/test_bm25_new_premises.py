"""BM25's vectorised new-premise scoring, checked against bm25s's own scores on real data.

A new premise whose text equals an indexed premise's must score, for every state, exactly what bm25s's
score matrix gives that indexed premise (the idf and average length are the index's in both cases), so
bm25s is the independent reference here, not a copy of the scoring code.
"""

from __future__ import annotations

import numpy as np

from leanpremise.rank.bm25 import BM25Ranker


def test_vectorised_new_premise_scores_equal_bm25s_scores_of_the_same_texts(sample_dataset):
    texts = sample_dataset.corpus.texts
    ranker = BM25Ranker(texts)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(texts), size=min(300, len(texts)), replace=False)
    new_texts = [texts[i] for i in picked.tolist()]
    terms = [ranker.doc_terms(t) for t in new_texts]
    matrix = ranker.new_premise_matrix(terms)
    states = [sample_dataset.states.state[s] for s in range(0, len(sample_dataset.states), 97)][:40]
    assert states
    nonzero = 0
    for state in states:
        counts = ranker.query_counts(state)
        reference = ranker.scores(counts)[picked]  # bm25s's matrix, column by column
        got = matrix.scores(counts)
        np.testing.assert_array_equal(got, reference)
        np.testing.assert_array_equal(ranker.new_premise_scores(state, new_texts), reference)
        nonzero += int(np.count_nonzero(got))
    assert nonzero > 0  # the comparison saw real scores, not only zeros


def test_new_premise_matrix_of_no_premises_and_of_an_empty_query(sample_dataset):
    ranker = BM25Ranker(sample_dataset.corpus.texts[:200])
    assert ranker.new_premise_matrix([]).scores({0: 1}).shape == (0,)
    scores = ranker.new_premise_scores({}, [sample_dataset.corpus.texts[0]])  # a query with no known token
    np.testing.assert_array_equal(scores, np.zeros(1, dtype=np.float32))
