"""Every ranker a reranker reads, over an evaluation's index, and their lists for a batch of requests.

The side rankers (BM25, MePo, usage) are `leanpremise.rank.side.SideRankers`, the server's own; the dense
ranker here scores the index's corpus rows exactly (as the server's exact search does) and a request's new
premises by their rows. Features are computed per batch and the lists dropped (a BM25 score vector per
state would not fit in memory for a whole training set).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leanpremise.eval.rerank.requests import IndexView, StateRequest
from leanpremise.rank.rerank.features import Signals
from leanpremise.rank.side import SideRankers, merge_new


@dataclass
class DenseRanker:
    """A model's rows of the whole corpus (`emb`, corpus order) and of the index's premises."""

    emb: np.ndarray
    view_emb: np.ndarray
    model: object
    name: str
    identity: str | None = None

    def encode_states(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        from leanpremise.model.encoder import encode_texts

        return encode_texts(self.model, texts, batch_size=batch_size)


@dataclass
class EvalRankers:
    """The rankers of one index view: the dense one (or None) and the side ones."""

    view: IndexView
    side: SideRankers
    dense: DenseRanker | None = None
    mepo_settings: dict | None = None
    bm25_settings: dict | None = None

    def kinds(self) -> list[str]:
        return (["dense"] if self.dense is not None else []) + self.side.kinds()


class _BatchMasks:
    """The `access` a chunked ranking asks for, over one batch's request masks (rows = batch positions)."""

    def __init__(self, masks: np.ndarray):
        self.masks = masks

    def mask(self, rows: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
        return self.masks[np.asarray(rows)][:, lo:hi]


def batch_signals(rankers: EvalRankers, requests: list[StateRequest], depth: int, batch_size: int = 64
                  ) -> list[Signals]:
    """Each request's lists (`depth` long) and score lookups, from every ranker of `rankers`."""
    out: list[Signals] = []
    dense_runs = _dense(rankers, requests, depth, batch_size) if rankers.dense is not None else None
    for j, req in enumerate(requests):
        new = rankers.side.prepare(req.input.new_names, req.input.new_texts, named_in_index=req.named_in_index)
        runs, lookups = rankers.side.runs(req.input.state, req.mask, new, depth, with_lookups=True,
                                          own_uses=req.own_uses)
        if dense_runs is not None:
            runs["dense"], lookups["dense"] = dense_runs[j]
        out.append(Signals(runs=runs, lookups=lookups))
    return out


def _dense(rankers: EvalRankers, requests: list[StateRequest], depth: int, batch_size: int):
    """Per request: the dense list (indexed candidates and new premises merged) and a dot-product lookup."""
    from leanpremise.rank.dense import rank_premises

    dense = rankers.dense
    q = dense.encode_states([r.input.state for r in requests], batch_size)
    masks = np.stack([r.mask for r in requests]) if requests else np.zeros((0, len(rankers.view)), bool)
    ids, scores = rank_premises(q, dense.view_emb, _BatchMasks(masks), np.arange(len(requests)), depth)
    n = len(rankers.view)
    out = []
    for j, req in enumerate(requests):
        new_rows = dense.emb[req.new_ids] if len(req.new_ids) else np.zeros((0, q.shape[1]), np.float32)
        new_scores = new_rows @ q[j]
        out.append((merge_new(ids[j], scores[j], new_scores, n, depth), _dot_lookup(dense.view_emb, new_rows, q[j])))
    return out


def _dot_lookup(view_emb: np.ndarray, new_rows: np.ndarray, query: np.ndarray):
    n = len(view_emb)

    def score(ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty(len(ids), dtype=np.float64)
        low = ids < n
        out[low] = np.asarray(view_emb[ids[low]], dtype=np.float32) @ query
        out[~low] = new_rows[ids[~low] - n] @ query
        return out

    return score
