"""Rankings as data: a ranker's top-k per state (a `Run`), and what every ranker's top-k goes through.

The padded arrays (`padded_topk`), the exact top-k of a score block (`exact_topk`), the loop that ranks
a batch of states over their accessible premises (`rank_states`), and the merge of an indexed top list
with a request's new premises (`merge_new`), each written once for every ranker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_LIST_DEPTH = 10_000
"""The deepest a ranker's list may be read where a file says how deep (a fusion's `k`, a reranker's
`depth` and `local_bound`): those files come with bundles, and the depth is work and memory per state."""


@dataclass
class Run:
    """One ranker's rankings: row b ranks state b (ids into a shared id space, -1 padded), best first."""

    name: str
    ids: np.ndarray
    scores: np.ndarray

    @classmethod
    def row(cls, name: str, ids: np.ndarray, scores: np.ndarray) -> Run:
        """One state's ranking ((k,) arrays) as a run of one row."""
        return cls(name, ids[None, :], scores[None, :])


def padded_topk(shape: int | tuple[int, ...], ids=None, scores=None, score_dtype=np.float32
                ) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, scores) of `shape` ((k,) or (states, k)), padded with -1 and -inf: a ranking that lists
    fewer than k premises. `ids` and `scores`, when given, fill the first places (of each row)."""
    out_ids = np.full(shape, -1, dtype=np.int64)
    out_scores = np.full(shape, -np.inf, dtype=score_dtype)
    if ids is not None:
        width = np.shape(ids)[-1]
        out_ids[..., :width], out_scores[..., :width] = ids, scores
    return out_ids, out_scores


def score_lookup(ids: np.ndarray, scores: np.ndarray, missing: float) -> Callable[[np.ndarray], np.ndarray]:
    """Score of any id: `scores` of the distinct `ids`, `missing` for an id not among them; a binary search over
    all candidates at once, not a dictionary read per candidate."""
    ids = np.asarray(ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    srt, vals = ids[order], np.asarray(scores, dtype=np.float64)[order]

    def score(cand: np.ndarray) -> np.ndarray:
        cand = np.asarray(cand, dtype=np.int64)
        if len(srt) == 0:
            return np.full(len(cand), missing, dtype=np.float64)
        at = np.searchsorted(srt, cand).clip(0, len(srt) - 1)
        return np.where(srt[at] == cand, vals[at], missing)

    return score


def exact_topk(scores: np.ndarray, mask: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B,k) int64 -1 padded, scores (B,k) float32) of each row's k best allowed entries, best first,
    equal scores by lower id, also at the k-th place: a scorer with many equal scores (BM25's zeros) ranks
    the same premises whichever batch or process scores it, so the server and `retrieve` agree."""
    scores = np.asarray(scores, dtype=np.float32)
    n_rows, n = scores.shape
    out_ids, out_scores = padded_topk((n_rows, k))
    for b in range(n_rows):
        row = scores[b] if mask is None else np.where(mask[b], scores[b], -np.inf)
        allowed = np.flatnonzero(row > -np.inf) if mask is not None else np.arange(n)
        take = min(k, len(allowed))
        if take == 0:
            continue
        vals = row[allowed]
        if take < len(allowed):
            kth = np.partition(vals, len(vals) - take)[len(vals) - take]
            above = allowed[vals > kth]
            ties = allowed[vals == kth][: take - len(above)]
            chosen = np.concatenate([above, ties])
        else:
            chosen = allowed
        order = np.lexsort((chosen, -row[chosen]))
        out_ids[b, :take] = chosen[order]
        out_scores[b, :take] = row[chosen[order]]
    return out_ids, out_scores


RowRanker = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(position of a state in the batch's `state_ids`, its candidate mask over the corpus) -> (ids (k,),
scores (k,)), -1 padded, best first."""


def rank_states(rank_row: RowRanker, access, state_ids: np.ndarray, k: int, batch: int,
                progress: bool = False, desc: str = "ranking") -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, k), scores (B, k) float32) of `rank_row` for each state over its accessible premises
    (declaration excluded); the masks are built `batch` states at a time (one (batch x N) bool block), each
    row contiguous, and the bar counts batches."""
    state_ids = np.asarray(state_ids, dtype=np.int64)
    ids, scores = padded_topk((len(state_ids), k))
    starts = range(0, len(state_ids), batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch")
    for a in starts:
        masks = np.ascontiguousarray(access.mask(state_ids[a : a + batch]))
        for j, row in enumerate(masks):
            ids[a + j], scores[a + j] = rank_row(a + j, row)
    return ids, scores


def merge_new(ids: np.ndarray, scores: np.ndarray, new_scores: np.ndarray, n: int, depth: int,
              new_at: np.ndarray | None = None, listed: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """One state's indexed top list (ids, scores; -1 padding dropped) and its request's new premises (new
    premise j is id n + j in the shared id space) as one ranking: (ids (depth,) -1 padded, scores (depth,)
    float32), best first.

    Equal scores: by tie position, then indexed before new. A premise's tie position is its place in the
    indexed list (which is already ordered among its equals: lower id first in every ranker's top-k), a new
    premise's its place after all of them (request order); with `new_at`, new premise j sorts instead
    where the indexed premise `new_at[j]` would (the usage ranker: its namesake) and indexed premises by
    their id. `listed`: the new premises that may be ranked (default all)."""
    ids = np.asarray(ids, dtype=np.int64)
    keep = ids >= 0
    new_scores = np.asarray(new_scores, dtype=np.float32)
    new_rows = np.arange(len(new_scores)) if listed is None else np.flatnonzero(listed)
    all_ids = np.concatenate([ids[keep], n + new_rows.astype(np.int64)])
    all_scores = np.concatenate([np.asarray(scores, dtype=np.float32)[keep], new_scores[new_rows]])
    if new_at is None:
        tie = np.arange(len(all_ids))
    else:
        tie = np.concatenate([ids[keep], np.asarray(new_at, dtype=np.int64)[new_rows]])
    order = np.lexsort((tie, -all_scores))[:depth]  # stable: an indexed premise before a new one of its place
    return padded_topk(depth, all_ids[order], all_scores[order])
