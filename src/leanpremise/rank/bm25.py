"""BM25 baseline: bm25s over premise texts, states as queries, accessible premises only.

Both sides use `lean_tokens.bm25_tokens`. A query scores the whole corpus from
bm25s's score matrix (read through `bm25_index`, the one module that knows how
bm25s holds it); the top k of the allowed premises is `runs.exact_topk` (equal
scores by lower id), so `retrieve` and the server rank alike. The index is saved
with bm25s's own format (npy arrays, JSON vocabulary and parameters; never
pickle) plus the average document length, which bm25s does not keep and which
scoring a premise that is not in the index (a request's new premise) needs.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from leanpremise.rank import bm25_index
from leanpremise.rank.lean_tokens import bm25_tokens
from leanpremise.rank.runs import exact_topk, rank_states

logger = logging.getLogger(__name__)


@dataclass
class BM25Config:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    state_batch: int = 64


STATS_FILE = "bm25_stats.json"


class BM25Stats(BaseModel):
    """bm25_stats.json beside a saved index: what bm25s does not save."""

    model_config = ConfigDict(extra="ignore")

    n_docs: int = Field(ge=0)
    avgdl: float = Field(gt=0)
    k1: float = Field(gt=0)
    b: float = Field(ge=0, le=1)
    method: str = Field(pattern="^lucene$")


class NewPremiseMatrix:
    """New premises' BM25 term weights, column-sliceable by token (CSR over the tokens they hold, premises as
    columns; `slots`: token id -> its row), sized by the request, not by the vocabulary."""

    def __init__(self, slots: dict[int, int], indptr: np.ndarray, rows: np.ndarray, data: np.ndarray, n: int):
        self.slots, self.indptr, self.rows, self.data, self.n = slots, indptr, rows, data, n

    @classmethod
    def build(cls, terms: list[dict]) -> NewPremiseMatrix:
        """From per-premise {token id: weight}; one premise holds a token at most once (dict keys)."""
        lens = np.fromiter(map(len, terms), dtype=np.int64, count=len(terms))
        total = int(lens.sum())
        tokens = np.fromiter(itertools.chain.from_iterable(terms), dtype=np.int64, count=total)
        weights = np.fromiter(itertools.chain.from_iterable(t.values() for t in terms), dtype=np.float32,
                              count=total)
        premises = np.repeat(np.arange(len(terms), dtype=np.int64), lens)
        order = np.argsort(tokens, kind="stable")
        held, starts = np.unique(tokens[order], return_index=True)
        slots = dict(zip(held.tolist(), range(len(held))))
        return cls(slots, np.r_[starts, total], premises[order], weights[order], len(terms))

    def scores(self, q: dict[int, int]) -> np.ndarray:
        """Each premise's score for query counts `q`: the query's tokens in order, float32 adds, so the
        sums are those of `BM25Ranker.scores` for an indexed premise of the same text (bit-identical)."""
        out = np.zeros(self.n, dtype=np.float32)
        for i, c in q.items():
            j = self.slots.get(i)
            if j is not None:
                lo, hi = int(self.indptr[j]), int(self.indptr[j + 1])
                rows = self.rows[lo:hi]
                out[rows] = out[rows] + np.float32(c) * self.data[lo:hi]
        return out


class BM25Ranker:
    def __init__(self, corpus_texts: list[str], config: BM25Config | None = None, progress: bool = False):
        self.config = config or BM25Config()
        self.n = len(corpus_texts)
        tokens = [bm25_tokens(t) for t in corpus_texts]
        self.avgdl = (float(np.mean([len(t) for t in tokens])) if tokens else 0.0) or 1.0
        self.retriever = bm25_index.build(tokens, self.config.k1, self.config.b, self.config.method, progress)
        self._finish(bm25_index.score_matrix(self.retriever))

    def _finish(self, matrix: bm25_index.ScoreMatrix) -> None:
        """The score matrix, and per-token document frequency and idf read back from it (for new premises)."""
        self.matrix = matrix
        indptr = matrix.indptr
        # bm25s's vocabulary has one more entry than the matrix has columns (its empty token); tokens without
        # a column, or with an id that is not one, score nothing
        self.vocab = {t: i for t, i in bm25_index.vocabulary(self.retriever).items()
                      if isinstance(i, int) and 0 <= i < len(indptr) - 1}
        self.df = np.diff(indptr).astype(np.int64)
        # as bm25s computes it (math.log in float64, kept in float32), so new premises score bit-identically
        self.idf = np.array([math.log(1.0 + (self.n - d + 0.5) / (d + 0.5)) for d in self.df.tolist()],
                            dtype=np.float32)

    def save(self, folder) -> None:
        """bm25s's files and `bm25_stats.json` into `folder` (written by `export --hybrid`)."""
        import json
        from pathlib import Path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        bm25_index.save(self.retriever, folder)
        stats = {"n_docs": self.n, "avgdl": self.avgdl, "k1": self.config.k1, "b": self.config.b,
                 "method": self.config.method}
        (folder / STATS_FILE).write_text(json.dumps(stats, indent=1))

    @classmethod
    def load(cls, folder, n_docs: int) -> BM25Ranker:
        """A saved index, checked against the corpus it must rank (`n_docs` premises); ValueError names
        the file that is wrong. Arrays are memory-mapped, so revisions sharing a bundle file share pages."""
        from pathlib import Path

        folder = Path(folder)
        try:
            stats = BM25Stats.model_validate_json((folder / STATS_FILE).read_bytes())
        except (OSError, ValueError) as e:
            raise ValueError(f"{folder / STATS_FILE}: {e}") from e
        if stats.n_docs != n_docs:
            raise ValueError(f"{folder / STATS_FILE}: index of {stats.n_docs} premises, corpus has {n_docs}")
        try:
            params = bm25_index.saved_params(folder)
            retriever = bm25_index.load(folder)
            matrix = bm25_index.score_matrix(retriever)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{folder}: not a readable bm25s index ({type(e).__name__}: {e})") from e
        out = cls.__new__(cls)
        out.config = BM25Config(k1=stats.k1, b=stats.b, method=stats.method)
        if (params.get("k1"), params.get("b"), params.get("method")) != (stats.k1, stats.b, stats.method):
            raise ValueError(f"{folder}: {bm25_index.PARAMS_FILE} and {STATS_FILE} disagree on k1, b or method")
        out.n, out.avgdl, out.retriever = n_docs, stats.avgdl, retriever
        indptr, indices = matrix.indptr, matrix.indices
        if (matrix.num_docs != n_docs or len(indptr) < 1
                or (len(indptr) > 1 and (np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices)))
                or (len(indices) and (int(np.min(indices)) < 0 or int(np.max(indices)) >= n_docs))):
            raise ValueError(f"{folder}: the bm25s arrays are inconsistent with each other or the corpus")
        out._finish(matrix)
        return out

    def doc_terms(self, text: str) -> dict[int, np.float32]:
        """Token id -> BM25 term weight of a premise that is not in the index (as if it were one more
        document that changes neither idf nor the average length); query-independent, so callers cache it."""
        tokens = bm25_tokens(text)
        counts = self.token_counts(tokens)
        norm = self.config.k1 * ((1 - self.config.b) + self.config.b * len(tokens) / self.avgdl)  # float64,
        return {i: np.float32(float(self.idf[i]) * (c / (norm + c))) for i, c in counts.items()}  # as bm25s's

    def new_premise_scores(self, query: str | dict[int, int], texts: list[str], terms: list[dict] | None = None
                           ) -> np.ndarray:
        """BM25 scores against `query` of premises that are not in the index (`terms`: their `doc_terms`,
        if the caller has them), bit-identical to the score of an indexed premise of the same text."""
        q = self.query_counts(query) if isinstance(query, str) else query
        terms = terms if terms is not None else [self.doc_terms(t) for t in texts]
        return self.new_premise_matrix(terms).scores(q)

    def new_premise_matrix(self, terms: list[dict]) -> NewPremiseMatrix:
        """Premises' `doc_terms` as one sparse (token x premise) matrix, built once per request so that
        each state scores all of a request's new premises with one numpy step per distinct query token."""
        return NewPremiseMatrix.build(terms)

    def query_counts(self, text: str) -> dict[int, int]:
        """Token id -> occurrences in `text`, for the tokens the index has, in order of first occurrence."""
        return self.token_counts(bm25_tokens(text))

    def token_counts(self, tokens: list[str]) -> dict[int, int]:
        """Token id -> count of the tokens the index has, in order of first occurrence (queries and new premises)."""
        counts: dict[int, int] = {}
        for t in tokens:
            if (i := self.vocab.get(t)) is not None:
                counts[i] = counts.get(i, 0) + 1
        return counts

    def scores(self, text: str | dict[int, int]) -> np.ndarray:
        """BM25 score of every premise for one query (zeros when no query token is in the corpus).

        Reads bm25s's (premises x tokens) score matrix column by column: each distinct query token once,
        times its count, so a query costs at most one pass over the index however long it is (bm25s's
        `get_scores` adds a column per occurrence). `np.add.at` beats `out[idx] += ...` here."""
        data, indices, indptr = self.matrix.data, self.matrix.indices, self.matrix.indptr
        out = np.zeros(self.n, dtype=np.float32)
        counts = self.query_counts(text) if isinstance(text, str) else text
        for i, c in counts.items():
            lo, hi = int(indptr[i]), int(indptr[i + 1])
            np.add.at(out, indices[lo:hi], data[lo:hi] if c == 1 else np.float32(c) * data[lo:hi])
        return out

    def rank(self, queries: list[str], access, state_ids: np.ndarray, k: int,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Each state's whole-corpus scores, then the exact top-k of its accessible premises."""
        return rank_states(lambda i, mask: self.rank_one(queries[i], mask, k), access, state_ids, k,
                           self.config.state_batch, progress, desc="bm25")

    def rank_one(self, query: str | dict[int, int], candidates: np.ndarray | None, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        """One state (its text, or its `query_counts`) over `candidates` (a bool mask, None = every premise):
        what the server runs."""
        mask = None if candidates is None else candidates[None, :]
        ids, scores = exact_topk(self.scores(query)[None, :], mask, k)
        return ids[0], scores[0]
