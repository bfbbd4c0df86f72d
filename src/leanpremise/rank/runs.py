"""Rankings as data: a ranker's top-k per state (a `Run`), and the exact top-k every ranker ends in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Run:
    """One ranker's rankings: row b ranks state b (ids into a shared id space, -1 padded), best first."""

    name: str
    ids: np.ndarray
    scores: np.ndarray


def exact_topk(scores: np.ndarray, mask: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B,k) int64 -1 padded, scores (B,k) float32) of each row's k best allowed entries, best first,
    equal scores by lower id, also at the k-th place: a scorer with many equal scores (BM25's zeros) ranks
    the same premises whichever batch or process scores it, so the server and `retrieve` agree."""
    scores = np.asarray(scores, dtype=np.float32)
    n_rows, n = scores.shape
    out_ids = np.full((n_rows, k), -1, dtype=np.int64)
    out_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
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
