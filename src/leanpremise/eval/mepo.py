"""MePo, the Meng–Paulson relevance filter (Sledgehammer; Lean core's `mepoSelector`), over text symbols.

Algorithm, per state: the relevant set R starts as the goal's symbols. Each
round, every accessible candidate not yet accepted gets
    score = M / (M + |S \\ R|),   M = sum of w(s) over s in S ∩ R,
where S is the candidate's symbol set and w(s) = 1 + 2 / (floor(log2 freq(s)) + 1)
favours rare symbols (freq = number of premises mentioning s; Lean core's
weighting). Candidates with score >= p are accepted, their symbols join R,
and the pass mark rises: p <- p + (1 - p) / c. It stops when a round accepts
nothing or k premises are accepted. Accepted premises are ranked as
Sledgehammer's MePo orders them: by round (earlier rounds are closer to the
goal), then by score, then by larger M (more matched rare symbols), then later
premises first. (Lean core's `mepoSelector` sorts by score alone, which puts
late-round premises, scored against a much larger relevant set, above the
first round's and loses Recall; docs/decisions.md has the figures.)

The written score is `score - round`: the integer part says the round, and
scores fall in file order as for every ranker, so a reader that sorts by score
gets MePo's own ranking (a round-r score lies in (-r, 1 - r]).

Vectorised: premise symbols are a sparse (premises x symbols) matrix and a
batch of states runs its rounds together, so one round is two sparse-dense
products; a (p, c) grid reuses the symbol matrix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from leanpremise.eval.lean_tokens import symbols

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MePoConfig:
    p: float = 0.6
    c: float = 2.4
    state_batch: int = 64
    max_rounds: int = 100

    @property
    def label(self) -> str:
        return f"mepo-p{self.p:g}-c{self.c:g}"


def symbol_weight(freq: np.ndarray) -> np.ndarray:
    """1 + 2 / (floor(log2 freq) + 1), with floor(log2 0) taken as 0 (as Lean's Nat.log2)."""
    freq = np.asarray(freq, dtype=np.int64)
    log2 = np.floor(np.log2(np.maximum(freq, 1)))
    return (1.0 + 2.0 / (log2 + 1.0)).astype(np.float32)


class SymbolIndex:
    """Premise symbols as a CSR matrix, the symbol vocabulary and frequency weights."""

    def __init__(self, premise_symbols: list[set[str]]):
        import scipy.sparse as sp

        self.vocab: dict[str, int] = {}
        indptr = np.zeros(len(premise_symbols) + 1, dtype=np.int64)
        cols: list[int] = []
        for i, syms in enumerate(premise_symbols):
            cols.extend(self.vocab.setdefault(s, len(self.vocab)) for s in syms)
            indptr[i + 1] = len(cols)
        indices = np.asarray(cols, dtype=np.int64)
        self.matrix = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                                    shape=(len(premise_symbols), max(len(self.vocab), 1)))
        self.matrix_t = self.matrix.T.tocsr()
        self.sizes = np.diff(indptr).astype(np.float32)
        self.weights = symbol_weight(np.bincount(indices, minlength=self.matrix.shape[1]))

    @classmethod
    def from_corpus(cls, corpus) -> SymbolIndex:
        names = corpus.names
        return cls([symbols(t, exclude=names[i]) for i, t in enumerate(corpus.texts)])

    def query_matrix(self, texts: list[str]) -> np.ndarray:
        """(V, B) float32 0/1: the symbols of each query text (symbols unknown to the corpus dropped)."""
        out = np.zeros((self.matrix.shape[1], len(texts)), dtype=np.float32)
        for b, t in enumerate(texts):
            ids = [self.vocab[s] for s in symbols(t) if s in self.vocab]
            out[ids, b] = 1.0
        return out


def mepo_batch(index: SymbolIndex, relevant: np.ndarray, accessible: np.ndarray, k: int,
               config: MePoConfig) -> tuple[np.ndarray, np.ndarray]:
    """Run MePo for a batch of states. relevant: (V, B) 0/1; accessible: (B, N) bool.

    Returns (ids (B, k) int64 padded with -1, scores (B, k) float32 = score - round), best first.
    """
    n_states = relevant.shape[1]
    n = index.matrix.shape[0]
    relevant = relevant.astype(np.float32, copy=True)
    accepted = np.zeros((n_states, n), dtype=bool)
    acc_score = np.zeros((n_states, n), dtype=np.float32)
    acc_m = np.zeros((n_states, n), dtype=np.float32)
    acc_round = np.zeros((n_states, n), dtype=np.int32)
    active = np.ones(n_states, dtype=bool)
    p = float(config.p)
    weights = index.weights[:, None]
    for round_no in range(config.max_rounds):
        if not active.any():
            break
        cols = np.flatnonzero(active)
        r = relevant[:, cols]
        both = index.matrix @ np.hstack([weights * r, r])  # (N, 2b): weighted and plain overlap
        m, overlap = both[:, : len(cols)].T, both[:, len(cols):].T
        irrelevant = index.sizes[None, :] - overlap
        denom = m + irrelevant
        score = np.divide(m, denom, out=np.zeros_like(m), where=denom > 0)
        new = accessible[cols] & ~accepted[cols] & (score >= p) & (m > 0)
        got = new.any(axis=1)
        accepted[cols] |= new
        acc_score[cols] = np.where(new, score, acc_score[cols])
        acc_m[cols] = np.where(new, m, acc_m[cols])
        acc_round[cols] = np.where(new, round_no, acc_round[cols])
        if got.any():
            grown = index.matrix_t @ new[got].T.astype(np.float32)  # (V, g): symbols of the newly accepted
            relevant[:, cols[got]] = np.maximum(relevant[:, cols[got]], (grown > 0).astype(np.float32))
        done = ~got | (accepted[cols].sum(axis=1) >= k)
        active[cols[done]] = False
        p = p + (1.0 - p) / config.c
    ids = np.full((n_states, k), -1, dtype=np.int64)
    scores = np.full((n_states, k), -np.inf, dtype=np.float32)
    for b in range(n_states):
        cand = np.flatnonzero(accepted[b])
        order = np.lexsort((-cand, -acc_m[b, cand], -acc_score[b, cand], acc_round[b, cand]))[:k]
        ids[b, : len(order)] = cand[order]
        scores[b, : len(order)] = acc_score[b, cand[order]] - acc_round[b, cand[order]]
    return ids, scores


def mepo_rank(index: SymbolIndex, queries: list[str], access, state_ids: np.ndarray, k: int,
              config: MePoConfig, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MePo rankings of the given states over their accessible premises (declaration excluded)."""
    state_ids = np.asarray(state_ids, dtype=np.int64)
    ids = np.full((len(state_ids), k), -1, dtype=np.int64)
    scores = np.full((len(state_ids), k), -np.inf, dtype=np.float32)
    starts = range(0, len(state_ids), config.state_batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=config.label, unit="batch")
    for a in starts:
        b = min(a + config.state_batch, len(state_ids))
        rel = index.query_matrix(queries[a:b])
        acc = access.mask(state_ids[a:b])
        ids[a:b], scores[a:b] = mepo_batch(index, rel, acc, k, config)
    return ids, scores
