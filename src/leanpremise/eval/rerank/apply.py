"""Applying a trained reranker to a split: the reranked list of each state, in corpus ids."""

from __future__ import annotations

import numpy as np

from leanpremise.eval.rerank.rows import build_rows
from leanpremise.eval.rerank.train import requests_for
from leanpremise.rank.rerank.model import order_by_score
from leanpremise.rank.runs import padded_topk


def rerank_states(reranker, ds, rankers, table, state_ids: np.ndarray, k: int, progress: bool = True,
                  client: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, k) corpus ids, -1 padded; scores (B, k)) of the reranked lists of `state_ids`, each state
    sent as `client` (requests.CLIENTS) sends it."""
    spec = reranker.spec
    missing = [kind for kind in spec.kinds() if kind not in rankers.kinds()]
    if missing:
        raise ValueError(f"the reranker reads ranker(s) {missing}; given {rankers.kinds()}")
    requests = requests_for(ds, rankers, table, state_ids, client=client)
    rows = build_rows(rankers, table, requests, spec.kinds(), spec.structure, spec.depth, spec.local_bound,
                      tail_depth=k, progress=progress, desc="rerank", total=len(state_ids), families=spec.families)
    scores = reranker.score(rows.x)
    out_ids, out_scores = padded_topk((len(rows.sizes), k))
    n = len(rankers.view)
    for i, new_ids in enumerate(rows.new_ids):
        g = rows.group(i)
        ids, sc = order_by_score(rows.cand[g], scores[g], k, rows.tails[i])
        corpus_ids = np.where(ids < n, rankers.view.ids[np.minimum(ids, n - 1)],
                              new_ids[np.maximum(ids - n, 0)] if len(new_ids) else -1)
        out_ids[i, : len(ids)] = corpus_ids
        out_scores[i, : len(ids)] = sc
    return out_ids, out_scores
