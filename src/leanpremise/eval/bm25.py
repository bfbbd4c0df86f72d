"""BM25 baseline: bm25s over premise texts, states as queries, accessible premises only.

Both sides use `lean_tokens.bm25_tokens`. bm25s scores the whole corpus per
query; the accessibility mask and top-k merge are the evaluator's
(`ranking.rank_with_scorer`), so BM25 files obey the same rules as ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from leanpremise.eval.lean_tokens import bm25_tokens
from leanpremise.eval.ranking import rank_with_scorer

logger = logging.getLogger(__name__)


@dataclass
class BM25Config:
    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    state_batch: int = 64


class BM25Ranker:
    def __init__(self, corpus_texts: list[str], config: BM25Config | None = None, progress: bool = False):
        import bm25s

        # bm25s sets its logger to DEBUG when imported, which prints at our default INFO level; let it
        # follow the root logger's level instead (so `-v` still shows it).
        logging.getLogger("bm25s").setLevel(logging.NOTSET)
        self.config = config or BM25Config()
        self.n = len(corpus_texts)
        self.retriever = bm25s.BM25(k1=self.config.k1, b=self.config.b, method=self.config.method)
        self.retriever.index([bm25_tokens(t) for t in corpus_texts], show_progress=progress)
        self.vocab = self.retriever.vocab_dict

    def scores(self, text: str) -> np.ndarray:
        """BM25 score of every premise for one query (zeros when no query token is in the corpus)."""
        tokens = [t for t in bm25_tokens(text) if t in self.vocab]
        if not tokens:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.retriever.get_scores(tokens), dtype=np.float32)

    def rank(self, queries: list[str], access, state_ids: np.ndarray, k: int,
             progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Whole-corpus scores per batch of states, then the shared masked top-k."""

        def score_chunk(rows: slice, lo: int, hi: int) -> np.ndarray:
            return np.stack([self.scores(q)[lo:hi] for q in queries[rows]])

        return rank_with_scorer(score_chunk, self.n, access, state_ids, k, chunk_size=max(self.n, 1),
                                state_batch=self.config.state_batch, progress=progress)
