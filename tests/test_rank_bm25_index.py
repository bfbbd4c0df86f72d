"""What leanpremise reads of bm25s beyond its public API (rank/bm25_index.py), checked against bm25s itself.

A failure here means the installed bm25s holds its index differently from the versions checked (see
docs/decisions.md): fix `rank/bm25_index.py` (or the pinned range in pyproject.toml), not the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from leanpremise.rank import bm25_index
from leanpremise.rank.bm25 import BM25Ranker
from leanpremise.rank.lean_tokens import bm25_tokens

TEXTS = ["theorem Nat.add_comm (a b : ℕ) : a + b = b + a",
         "theorem Nat.mul_comm (a b : ℕ) : a * b = b * a",
         "lemma List.length_append (l m : List α) : (l ++ m).length = l.length + m.length",
         "def Nat.succ_le_iff : Nat.succ a ≤ b ↔ a < b",
         "theorem Nat.add_zero (n : ℕ) : n + 0 = n"]
QUERIES = ["a + b = b + a", "Nat.succ n ≤ m", "l.length + m.length", "zero zero n n n", "nothing in common ∅"]


@pytest.fixture(scope="module")
def retriever():
    return bm25_index.build([bm25_tokens(t) for t in TEXTS], k1=1.5, b=0.75, method="lucene")


def _column_scores(matrix: bm25_index.ScoreMatrix, vocab: dict, tokens: list[str]) -> np.ndarray:
    out = np.zeros(len(TEXTS), dtype=np.float64)
    for t in tokens:
        i = vocab.get(t)
        if isinstance(i, int) and i < len(matrix.indptr) - 1:
            lo, hi = int(matrix.indptr[i]), int(matrix.indptr[i + 1])
            out[matrix.indices[lo:hi]] += matrix.data[lo:hi]
    return out


def test_the_score_matrix_and_vocabulary_are_what_bm25s_scores_with(retriever):
    matrix, vocab = bm25_index.score_matrix(retriever), bm25_index.vocabulary(retriever)
    assert matrix.num_docs == len(TEXTS)
    assert matrix.indptr.ndim == 1 and matrix.indptr[0] == 0 and matrix.indptr[-1] == len(matrix.indices)
    assert np.all(np.diff(matrix.indptr) >= 0) and len(matrix.data) == len(matrix.indices)
    columns = len(matrix.indptr) - 1
    for text in TEXTS:  # every document token has a column
        assert all(isinstance(vocab[t], int) and 0 <= vocab[t] < columns for t in bm25_tokens(text))
    for q in QUERIES:
        tokens = [t for t in bm25_tokens(q) if t in vocab]
        if not tokens:
            continue
        want = retriever.get_scores(tokens)  # bm25s's public scoring
        np.testing.assert_allclose(_column_scores(matrix, vocab, tokens), want, rtol=1e-6, atol=1e-7)


def test_the_ranker_scores_as_bm25s_does(retriever):
    ranker = BM25Ranker(TEXTS)
    vocab = bm25_index.vocabulary(ranker.retriever)
    for q in QUERIES:
        tokens = [t for t in bm25_tokens(q) if t in vocab]
        want = ranker.retriever.get_scores(tokens) if tokens else np.zeros(len(TEXTS))
        np.testing.assert_allclose(ranker.scores(q), want, rtol=1e-6, atol=1e-7)


def test_a_saved_index_records_its_parameters_and_loads_the_same_matrix(retriever, tmp_path):
    bm25_index.save(retriever, tmp_path)
    params = bm25_index.saved_params(tmp_path)
    assert (params["k1"], params["b"], params["method"]) == (1.5, 0.75, "lucene")
    back = bm25_index.load(tmp_path)
    a, b = bm25_index.score_matrix(retriever), bm25_index.score_matrix(back)
    assert a.num_docs == b.num_docs
    for name in ("data", "indices", "indptr"):
        assert np.array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name))), name
    assert bm25_index.vocabulary(back) == bm25_index.vocabulary(retriever)


def test_saved_params_refuses_a_file_that_is_not_an_object(tmp_path):
    (tmp_path / bm25_index.PARAMS_FILE).write_text("[1, 2]")
    with pytest.raises(TypeError, match="not a JSON object"):
        bm25_index.saved_params(tmp_path)
