"""The rankers beside the dense model (BM25, MePo, usage, nearest proved states), run for one request: its indexed candidates and its
new premises in one id space (indexed 0..n-1, new n, n+1, ...).

Fused serving and re-ranking both read these lists, in the server and in evaluation, so they come from one
place. A request's new premises are analysed once for all its states (`prepare`); each ranker scores them
with the indexed corpus's statistics. Besides its top list, BM25 and usage can score any candidate, which
the reranker reads as features.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from leanpremise.rank.lean_tokens import symbols
from leanpremise.rank.runs import exact_topk, merge_new, padded_topk


@dataclass
class NewPremises:
    """A request's new premises, analysed for the rankers that read them."""

    names: list[str]
    texts: list[str]
    terms: list[dict] | None = None
    """BM25 term weights per premise (None without BM25)."""
    bm25_matrix: object | None = None
    """Those weights as one sparse matrix (`bm25.NewPremiseMatrix`), built once for all the states."""
    symbols: list[set[str]] | None = None
    """MePo symbols per premise (None without MePo)."""
    mepo_premises: object | None = None
    """Those symbols in MePo's tables (`mepo.RequestPremises`), built once for all the states."""
    usage: np.ndarray | None = None
    """Usage score per premise: that of the indexed premise of its name, 0 when there is none."""
    usage_at: np.ndarray | None = None
    """The id of that indexed premise (-1 when none): where the new premise sorts among equal counts."""

    def __len__(self) -> int:
        return len(self.names)


PREPARED_KEPT = 8
"""Analysed new-premise lists kept (most recently used): a client sends the same new premises (its file's
declarations and its imports' unindexed ones) with every goal of a file, and analysing them again was a third
of the side rankers' time per request. Each holds MePo tables as long as the symbol vocabulary and the corpus
(a few MiB on all of Mathlib), hence few."""


class SideRankers:
    """The side rankers a bundle (or an evaluation's index) has, any of them None."""

    def __init__(self, bm25=None, mepo=None, mepo_config=None, usage=None, name_to_id: dict[str, int] | None = None,
                 module_usage=None, nearest=None):
        self.bm25, self.mepo, self.mepo_config, self.usage = bm25, mepo, mepo_config, usage
        self.nearest = nearest
        """The nearest proved states' premises (rank/nearest_states.py), or None."""
        self.module_usage = module_usage
        """Usage by module (rank/module_usage.py), read by the reranker beside the usage ranker, or None."""
        self.name_to_id = name_to_id or {}
        """Indexed ids by name: a new premise gets the usage count of its indexed namesake."""
        self.n = (bm25.n if bm25 is not None else mepo.n_premises if mepo is not None
                  else usage.n if usage is not None else nearest.n if nearest is not None else 0)
        self._prepared: OrderedDict[tuple, NewPremises] = OrderedDict()
        self._lock = threading.Lock()

    def kinds(self) -> list[str]:
        return [k for k, r in (("bm25", self.bm25), ("mepo", self.mepo), ("usage", self.usage),
                               ("nearest", self.nearest)) if r is not None]

    def prepare(self, names: list[str], texts: list[str], named_in_index: bool = True, terms=None,
                symbol_sets=None) -> NewPremises:
        """Analyse a request's new premises. `named_in_index` False: their names are not indexed premises
        (evaluation's unindexed modules), so none has a usage record. `terms`/`symbol_sets`: analyses the
        caller already holds (a server caches them across requests). The last PREPARED_KEPT lists are kept:
        the same list again is the same (read-only) analysis."""
        key = (tuple(names), tuple(texts), named_in_index)
        out = self.kept(key)
        if out is not None:
            return out
        out = self._analysed(names, texts, named_in_index, terms, symbol_sets)
        with self._lock:
            self._prepared[key] = out
            while len(self._prepared) > PREPARED_KEPT:
                self._prepared.popitem(last=False)
        return out

    def kept(self, key: tuple) -> NewPremises | None:
        """The analysis kept for `key` ((names, texts, named_in_index) as tuples), or None: a caller holding
        its own caches of per-premise analyses asks here first, so a list seen again costs one lookup, not one
        per premise."""
        with self._lock:
            out = self._prepared.get(key)
            if out is not None:
                self._prepared.move_to_end(key)
            return out

    def _analysed(self, names: list[str], texts: list[str], named_in_index: bool, terms, symbol_sets
                  ) -> NewPremises:
        out = NewPremises(list(names), list(texts))
        if self.bm25 is not None:
            out.terms = terms if terms is not None else [self.bm25.doc_terms(t) for t in texts]
            out.bm25_matrix = self.bm25.new_premise_matrix(out.terms)
        if self.mepo is not None:
            from leanpremise.rank.mepo import RequestPremises

            out.symbols = symbol_sets if symbol_sets is not None else [
                symbols(t, exclude=n) for t, n in zip(texts, names)]
            if out.symbols:
                out.mepo_premises = RequestPremises(self.mepo, out.symbols)
        if self.usage is not None:
            if named_in_index:
                out.usage, out.usage_at = self.usage.new_premise_scores(names, self.name_to_id)
            else:
                out.usage = np.zeros(len(names), dtype=np.float32)
                out.usage_at = np.full(len(names), -1, dtype=np.int64)
        return out

    def runs(self, state: str, mask: np.ndarray | None, new: NewPremises, depth: int, with_lookups: bool = False,
             own_uses: np.ndarray | None = None, module: int = -1, own_key: int = -1):
        """{kind: (ids, scores)} of each side ranker for one state, `depth` long, over the candidates `mask`
        (None: every indexed premise) and the new premises; with `with_lookups`, also {kind: score of any
        id} for BM25 and usage, and with `module` (the request's, -1 unknown) the module's usage counts.
        `own_uses`: indexed premises whose usage counts include this state's own use (a training state's
        positives), counted one less, as for a state the counts never saw; `own_key`: the nearest-states key of
        a training state's own proof, whose states it does not see as neighbours."""
        n, runs, lookups = self.n, {}, {}
        if self.bm25 is not None:
            counts = self.bm25.query_counts(state)  # tokenised once for both
            full = self.bm25.scores(counts)
            ids, scores = exact_topk(full[None, :], None if mask is None else mask[None, :], depth)
            new_scores = ((new.bm25_matrix.scores(counts) if new.bm25_matrix is not None
                           else self.bm25.new_premise_scores(counts, new.texts, new.terms)) if len(new)
                          else np.zeros(0, dtype=np.float32))
            runs["bm25"] = merge_new(ids[0], scores[0], new_scores, n, depth)
            if with_lookups:
                lookups["bm25"] = _lookup(full, new_scores)
        if self.mepo is not None:
            from leanpremise.rank.mepo import mepo_state

            known, unknown = self.mepo.query_symbols(state)
            extra = new.mepo_premises if new.mepo_premises is not None else ()  # prepare: None when no symbols
            runs["mepo"] = mepo_state(self.mepo, known, mask, depth, self.mepo_config, extra=extra,
                                      goal_new=unknown if len(extra) else ())
        if self.usage is not None:
            from leanpremise.rank.usage import usage_score

            counts = self.usage.counts
            if own_uses is not None and len(own_uses):
                ids, scores, counts = self._usage_without(mask, depth, np.asarray(own_uses, dtype=np.int64))
            else:
                ids, scores = self.usage.rank_one(mask, depth)
            new_scores = new.usage if new.usage is not None else np.zeros(len(new), dtype=np.float32)
            new_at = new.usage_at if new.usage_at is not None else np.full(len(new), -1, dtype=np.int64)
            runs["usage"] = merge_new(ids, scores, new_scores, n, depth, new_at=new_at, listed=new_scores > 0)
            if with_lookups:
                lookups["usage"] = _lookup(usage_score(counts), new_scores)
        if self.nearest is not None:
            runs["nearest"], nearest_lookup = self.nearest.run(state, mask, depth, own_key)
            if with_lookups:
                lookups["nearest"] = nearest_lookup
        if with_lookups and self.module_usage is not None and module >= 0:
            lookups["module_usage"] = self._module_lookup(module, new, own_uses)
        return (runs, lookups) if with_lookups else runs

    def _module_lookup(self, module: int, new: NewPremises, own_uses: np.ndarray | None):
        """log(1 + the module's count) of any id; a new premise reads its indexed namesake's count."""
        from leanpremise.rank.usage import usage_score

        n, table = self.n, self.module_usage
        own = np.unique(np.asarray(own_uses if own_uses is not None else [], dtype=np.int64))
        new_at = new.usage_at if new.usage_at is not None else np.full(len(new), -1, dtype=np.int64)

        def score(ids: np.ndarray) -> np.ndarray:
            ids = np.asarray(ids, dtype=np.int64)
            at = np.where(ids < n, ids, new_at[np.maximum(ids - n, 0)] if len(new_at) else -1)
            counts = table.lookup(module, np.where(at >= 0, at, n))
            counts = counts - np.isin(at, own)  # a training state's own use: counted one less
            return usage_score(np.maximum(counts, 0)).astype(np.float64)

        return score

    def _usage_without(self, mask, depth: int, own: np.ndarray):
        """The usage list with the counts of `own` one less: only those can fall, so the list `len(own)`
        deeper holds every premise of the corrected one."""
        from leanpremise.rank.usage import usage_score

        counts = self.usage.counts.copy()
        own = np.unique(own[(own >= 0) & (own < len(counts))])
        counts[own] = np.maximum(counts[own] - 1, 0)
        ids, _ = self.usage.rank_one(mask, depth + len(own))
        ids = ids[ids >= 0]
        ids = ids[counts[ids] > 0]
        ids = ids[np.lexsort((ids, -counts[ids]))][:depth]
        return (*padded_topk(depth, ids, usage_score(counts[ids])), counts)


def _lookup(indexed: np.ndarray, new: np.ndarray):
    """Score of any id of the shared space: `indexed[id]` below n, `new[id - n]` above."""
    n = len(indexed)

    def score(ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty(len(ids), dtype=np.float64)
        low = ids < n
        out[low] = indexed[ids[low]]
        out[~low] = new[ids[~low] - n]
        return out

    return score
