"""Feature rows of many requests: what a reranker is trained on and applied to in evaluation.

Requests go through in batches: their lists, their candidates, their feature rows, their labels; the lists
are then dropped. A request's rows are its candidates in the order `features.candidates` gives them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from leanpremise.eval.rerank.requests import StateRequest
from leanpremise.eval.rerank.signals import EvalRankers, batch_signals
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.rerank.features import candidates, features
from leanpremise.rank.rerank.premises import PremiseTable


@dataclass
class RerankRows:
    """Rows of many requests, request by request: `sizes[i]` rows of request i, from `offsets[i]`."""

    x: np.ndarray
    y: np.ndarray
    cand: np.ndarray
    sizes: np.ndarray
    states: np.ndarray
    positives: list[np.ndarray]
    """Each request's positives in its id space (for Recall, every positive counts)."""
    tails: list[np.ndarray] = field(default_factory=list)
    """Per request, the first ranker's deeper list (kept with `tail_depth`): what follows the candidates."""
    new_ids: list[np.ndarray] = field(default_factory=list)
    """Per request, the corpus ids of its new premises (its ids n, n+1, ...)."""

    @property
    def offsets(self) -> np.ndarray:
        return np.r_[0, np.cumsum(self.sizes)]

    def group(self, i: int) -> slice:
        off = self.offsets
        return slice(int(off[i]), int(off[i + 1]))


def build_rows(rankers: EvalRankers, table: PremiseTable, requests: Iterable[StateRequest], kinds: list[str],
               structure: bool, depth: int, local_bound: int, tail_depth: int = 0, batch_size: int = 256,
               progress: bool = False, desc: str = "rerank rows", total: int | None = None,
               families: tuple[str, ...] | list[str] = ()) -> RerankRows:
    """Candidates, features and labels (1 = a positive) of `requests` (made as they are read: a request
    holds a candidate mask over the index, too large to keep for thousands); with `tail_depth`, each
    request's first ranker's list that deep is kept too (for lists longer than the candidates)."""
    xs, ys, cands, sizes, tails, states, positives, new_ids = [], [], [], [], [], [], [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="state")
    requests = iter(requests)
    while batch := list(itertools.islice(requests, batch_size)):
        signals = batch_signals(rankers, batch, max(depth, tail_depth))
        for req, sig in zip(batch, signals):
            sig.runs = {k: v for k, v in sig.runs.items() if k in kinds}
            cand = candidates(sig, req.input, depth, local_bound)
            xs.append(features(table, req.input, sig, cand, kinds, structure, depth, families))
            ys.append(np.isin(cand, req.positives))
            cands.append(cand)
            sizes.append(len(cand))
            states.append(req.state)
            positives.append(req.positives)
            new_ids.append(req.new_ids)
            if tail_depth:
                first = next(k for k in RankerKind if k in sig.runs)
                tails.append(sig.runs[first][0][:tail_depth].copy())
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    width = len(xs[0][0]) if xs and len(xs[0]) else 0
    return RerankRows(x=np.concatenate(xs) if xs else np.zeros((0, width), np.float32),
                      y=np.concatenate(ys).astype(np.float32) if ys else np.zeros(0, np.float32),
                      cand=np.concatenate(cands) if cands else np.zeros(0, np.int64),
                      sizes=np.asarray(sizes, dtype=np.int64), states=np.asarray(states, dtype=np.int64),
                      positives=positives, tails=tails, new_ids=new_ids)
