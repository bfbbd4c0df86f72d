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
from leanpremise.rank.dense import dense_scores, known_scores
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.rerank.features import Signals
from leanpremise.rank.runs import padded_topk
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
        return ([RankerKind.DENSE] if self.dense is not None else []) + self.side.kinds()


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
    dense_runs = None
    if isinstance(rankers.dense, FileDense):
        dense_runs = [rankers.dense.signals(r, len(rankers.view), depth) for r in requests]
    elif rankers.dense is not None:
        dense_runs = _dense(rankers, requests, depth, batch_size)
    for j, req in enumerate(requests):
        new = rankers.side.prepare(req.input.new_names, req.input.new_texts, named_in_index=req.named_in_index)
        runs, lookups = rankers.side.runs(req.input.state, req.mask, new, depth, with_lookups=True,
                                          own_uses=req.own_uses, module=req.input.module, own_key=req.own_key)
        if dense_runs is not None:
            runs[RankerKind.DENSE], lookups[RankerKind.DENSE] = dense_runs[j]
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
        out.append((merge_new(ids[j], scores[j], new_scores, n, depth), _dense_lookup(dense.view_emb, new_rows, q[j])))
    return out


def _dense_lookup(view_emb: np.ndarray, new_rows: np.ndarray, query: np.ndarray):
    """The dense score of any id of one request (rank/dense.dense_scores, as the server's search worker)."""
    n = len(view_emb)
    return lambda ids: dense_scores(query, ids, n, view_emb.__getitem__, new_rows)


@dataclass
class FileDense:
    """A dense ranker's lists read from its retrieved-premises file instead of run: its scores are known for
    the premises it lists only (the score feature is missing for the others, where a server would know it)."""

    lists: dict[int, tuple[np.ndarray, np.ndarray]]
    """state id -> (corpus ids, scores), file order."""
    to_view: np.ndarray
    name: str
    identity: str | None = None

    @classmethod
    def read(cls, path, ds, view: IndexView, name: str) -> FileDense:
        from leanpremise.eval.retrieved_files import read_retrieved

        by_key = {}
        for s in range(len(ds.states)):
            by_key.setdefault(ds.states.name(s, ds.corpus.modules), s)
        lists = {}
        for entry in read_retrieved(path):
            s = by_key.get(entry.state_name) if entry.state_name else None
            if s is None:
                continue
            ids = [ds.corpus.name_to_id.get(p["corpus_id"], -1) for p in entry.premises]
            lists[s] = (np.asarray(ids, dtype=np.int64), np.asarray([p["score"] for p in entry.premises], np.float64))
        return cls(lists, view.to_view, name)

    def signals(self, req: StateRequest, n: int, depth: int):
        """(the request's list in its id space, a lookup of the listed scores) for one request."""
        corpus_ids, scores = self.lists.get(req.state, (np.zeros(0, np.int64), np.zeros(0)))
        at_new = {int(c): n + j for j, c in enumerate(req.new_ids.tolist())}
        shared = []
        for c in corpus_ids.tolist():
            if c in at_new:
                shared.append(at_new[c])
            else:
                v = int(self.to_view[c]) if c >= 0 else -1
                shared.append(v if v >= 0 and req.mask[v] else -1)
        shared = np.asarray(shared, dtype=np.int64)
        keep = shared >= 0
        out_ids, out_sc = padded_topk(depth, shared[keep][:depth], scores[keep][:depth])
        known = dict(zip(shared[keep].tolist(), scores[keep].tolist()))  # a premise listed twice: its last score
        return (out_ids, out_sc), known_scores(np.fromiter(known, np.int64, len(known)),
                                               np.fromiter(known.values(), np.float64, len(known)))
