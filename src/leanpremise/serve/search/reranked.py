"""Re-ranked serving: a bundle's learned reranker (`export --rerank`) orders each request's candidates.

Per request: the rankers the reranker names (the dense search, BM25, MePo, usage) list the request's
candidates and new premises in one id space (indexed 0..n-1, new n, n+1, ...); `rank/rerank` takes the union
of their top lists and the nearest local premises, computes the features with the same function evaluation
calls (`features.features`, from the request's fields and the bundle only) and the model scores them. The
request's fields are turned into the reranker's input the way evaluation's client simulation builds it: local
premises nearest first, the import closure's frontier, the project and module of the local premises. So a
served ranking equals `rerank apply` for the same request.

Lean's default client sends its file's declarations as new premises, not local ones: those whose names the
index holds are read as local premises (`structure.read_new_premises`; they stay candidates, as indexed
premises), the others stay new premises with their place in the client's list.

A reranker file that is corrupt or of another feature version refuses the bundle (BundleError, one line).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import numpy as np

from leanpremise.bundle.layout import HYBRID_BM25, HYBRID_MEPO, HYBRID_USAGE, RERANK_MODULE_USAGE, BundleError
from leanpremise.rank.rerank.features import RANKERS, RerankInput, Signals, candidates, features
from leanpremise.rank.rerank.model import Reranker
from leanpremise.rank.rerank.premises import PremiseTable
from leanpremise.rank.rerank.spec import RerankerFileError, read_spec
from leanpremise.rank.rerank.structure import read_new_premises, request_input
from leanpremise.rank.rerank.validate import HARD_LIMITS, ModelLimits
from leanpremise.rank.runs import merge_new
from leanpremise.rank.side import SideRankers
from leanpremise.serve.search.analyses import NEW_PREMISE_CACHE_BYTES, NewPremiseAnalyses
from leanpremise.serve.search.answer import named

logger = logging.getLogger(__name__)


class RerankedRanking:
    """One bundle's reranker, the premise table its features read, and the side rankers it names."""

    def __init__(self, reranker: Reranker, table: PremiseTable, side: SideRankers,
                 cache_bytes: int = NEW_PREMISE_CACHE_BYTES):
        self.reranker, self.table, self.side = reranker, table, side
        self.analyses = NewPremiseAnalyses(cache_bytes)
        """New premises' BM25 terms and MePo symbols, kept across requests as the fusion keeps them."""
        self.spec = reranker.spec
        self.kinds = reranker.kinds
        self.uses_dense = "dense" in self.kinds
        self.first = next(k for k in RANKERS if k in self.kinds) if self.kinds else None
        """The ranker whose deeper list follows the candidates when a request asks for more (as in eval)."""

    @classmethod
    def load(cls, root: Path, manifest, corpus, cache_bytes: int = NEW_PREMISE_CACHE_BYTES,
             limits: ModelLimits = HARD_LIMITS, verify: bool = True) -> RerankedRanking:
        """From a bundle dir whose files were checked against its manifest, before the corpus drops its
        texts (a feature reads their lengths); BundleError names what is wrong. The model file is read once,
        checked against `limits` and (with `verify`) the manifest's sha256 on those bytes, and built from
        them (rank/rerank/validate.py): a model that could hang or crash the process refuses its bundle."""
        root = Path(root)
        folder = (root / manifest.rerank).parent
        try:
            rel = (Path(manifest.rerank).parent / read_spec(folder).model_file).as_posix()
            reranker = Reranker.load(folder, limits, manifest.checksums.get(rel) if verify else None)
        except RerankerFileError as e:
            raise BundleError(f"{e} (a reranker this server cannot apply; serve with RERANK=false to ignore it)"
                              ) from e
        kinds = reranker.kinds
        bm25 = mepo = usage = module_usage = nearest = None
        mepo_config = None
        try:
            if "bm25" in kinds:
                from leanpremise.rank.bm25 import BM25Ranker

                bm25 = BM25Ranker.load(root / HYBRID_BM25, len(corpus))
            if "mepo" in kinds:
                from leanpremise.rank.mepo import MePoConfig, SymbolIndex

                mepo = SymbolIndex.load(root / HYBRID_MEPO, len(corpus))
                params = reranker.spec.ranker("mepo").params
                mepo_config = MePoConfig(**{k: float(params[k]) for k in ("p", "c") if k in params})
            if "usage" in kinds:
                from leanpremise.rank.module_usage import ModuleUsage
                from leanpremise.rank.usage import UsageRanker

                usage = UsageRanker.load(root / HYBRID_USAGE, len(corpus))
                module_usage = ModuleUsage.load(root / RERANK_MODULE_USAGE, len(corpus.modules), len(corpus))
            if "nearest" in kinds:
                from leanpremise.bundle.layout import RERANK_NEAREST
                from leanpremise.rank.nearest_states import NearestStates

                nearest = NearestStates.load(root / RERANK_NEAREST, len(corpus))
        except (OSError, ValueError) as e:
            raise BundleError(f"{root}: the reranker's rankers: {e}") from e
        side = SideRankers(bm25, mepo, mepo_config, usage, corpus.name_to_id if usage is not None else None,
                           module_usage, nearest)
        side.n = len(corpus)
        return cls(reranker, PremiseTable.from_corpus(corpus), side, cache_bytes)

    def depth(self, k: int) -> int:
        """How deep every ranker lists: the reranker's depth, or k when the request asks for more."""
        return max(self.spec.depth, k)

    def describe(self) -> dict:
        return {"rankers": self.kinds, "depth": self.spec.depth, "local_bound": self.spec.local_bound,
                "library": self.spec.library, "feature_set": self.spec.feature_set}

    # ---- per request (in a worker thread) ----------------------------------------------------------

    def request_input(self, state: str, local_ids: np.ndarray, closure: np.ndarray, new_names: list[str],
                      new_texts: list[str], new_from_end: np.ndarray | None = None, new_sent: int = 0
                      ) -> RerankInput:
        """The reranker's view of one state of a request (as evaluation's client simulation builds it)."""
        return request_input(self.table, state, local_ids, closure, new_names, new_texts, new_from_end, new_sent)

    def lexical(self, states: list[str], mask: np.ndarray | None, local_ids: np.ndarray, closure: np.ndarray,
                new_names: list[str], new_texts: list[str], k: int, new_from_end: np.ndarray | None = None,
                new_sent: int = 0) -> list:
        """Per state: its reranker input and the side rankers' lists and lookups (run while it embeds);
        `new_from_end`, `new_sent`: the new premises' places in the client's list (read_new_premises)."""
        depth = self.depth(k)
        terms = self.analyses.terms(new_texts, self.side.bm25.doc_terms) if self.side.bm25 is not None else None
        new_symbols = self.analyses.symbol_sets(new_names, new_texts) if self.side.mepo is not None else None
        new = self.side.prepare(new_names, new_texts, terms=terms, symbol_sets=new_symbols)
        out = []
        for state in states:
            inp = self.request_input(state, local_ids, closure, new_names, new_texts, new_from_end, new_sent)
            runs, lookups = self.side.runs(state, mask, new, depth, with_lookups=True, module=inp.module)
            out.append((inp, runs, lookups))
        return out

    def finish(self, lexical: list, k: int, dense: list | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per state, the reranked top k (ids in the shared id space; scores non-increasing). `dense`: per
        state, (its dense run, a score lookup of any id) when the reranker reads the dense ranker."""
        out = []
        for b, (inp, runs, lookups) in enumerate(lexical):
            if dense is not None:
                runs["dense"], lookups["dense"] = dense[b]
            sig = Signals(runs=runs, lookups=lookups)
            cand = candidates(sig, inp, self.spec.depth, self.spec.local_bound)
            x = features(self.table, inp, sig, cand, self.kinds, self.spec.structure, self.spec.depth)
            out.append(self.reranker.rank(cand, x, k, runs[self.first][0][:k] if self.first else None))
        return out

    def rank(self, states: list[str], mask: np.ndarray | None, local_ids: np.ndarray, closure: np.ndarray,
             new_names: list[str], new_texts: list[str], k: int, dense: list | None = None
             ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`lexical` then `finish`, in one call."""
        return self.finish(self.lexical(states, mask, local_ids, closure, new_names, new_texts, k), k, dense)


def dense_signals(index, state_emb: np.ndarray, new_emb: np.ndarray, scores: list, ids: list, depth: int) -> list:
    """Per state: its dense run (indexed and new premises merged by score) and a lookup of the dot product
    of any id (an indexed candidate's from the index's rows, a new premise's from its embedding)."""
    n = index.size
    out = []
    for b in range(len(state_emb)):
        new_scores = new_emb @ state_emb[b] if len(new_emb) else np.zeros(0, dtype=np.float32)
        out.append((merge_new(ids[b], scores[b], new_scores, n, depth),
                    _dot_lookup(index, state_emb[b], new_scores)))
    return out


def _dot_lookup(index, query: np.ndarray, new_scores: np.ndarray):
    def score(cand: np.ndarray) -> np.ndarray:
        cand = np.asarray(cand, dtype=np.int64)
        out = np.full(len(cand), np.nan)
        low = cand < index.size
        if low.any():  # the index's own search over exactly these rows: the same arithmetic as its top list
            allow = np.zeros(index.size, dtype=bool)
            allow[cand[low]] = True
            count = int(allow.sum())
            sc, at = index.searcher.topk(query[None, :], allow, count, count)[0]
            found = dict(zip(np.asarray(at).tolist(), np.asarray(sc, dtype=np.float64).tolist()))
            out[low] = [found.get(int(c), np.nan) for c in cand[low].tolist()]
        out[~low] = np.asarray(new_scores, dtype=np.float64)[cand[~low] - index.size]
        return out

    return score


async def answer_reranked(rev, req, opened) -> list:
    """The response body of one /retrieve request re-ranked by `rev.reranked`; `opened` is the request as
    every ranker sees it (answer.open_request, which answer.answer calls first)."""
    index, reranked = rev.index, rev.reranked
    single, states, k = opened.single, opened.states, opened.k
    at = np.fromiter((index.corpus.name_to_id.get(n, -1) for n in opened.new_names), dtype=np.int64,
                     count=len(opened.new_names))
    named_ids, kept, from_end = read_new_premises(at)
    new_names = [opened.new_names[j] for j in kept.tolist()]
    new_texts = [opened.new_texts[j] for j in kept.tolist()]
    local = req.local_premises
    if len(named_ids) and (local is not None or req.imported_modules is not None):  # else all are candidates
        local = list(local or []) + [name for name, i in zip(opened.new_names, at.tolist()) if i >= 0]
    loop = asyncio.get_running_loop()
    cand = await loop.run_in_executor(
        rev.candidate_mask_pool, index.candidates, req.imported_modules, local,
        bool(req.caller_in_module_system), req.imported_all_modules, new_names)
    local_ids = np.concatenate([index.premise_ids(req.local_premises or []), named_ids])
    closure = index.module_ids(req.imported_modules or [])
    lexical = loop.run_in_executor(rev.lexical_pool, reranked.lexical, states, cand.mask, local_ids, closure,
                                   new_names, new_texts, k, from_end, len(opened.new_names))
    # (in its own thread while the states embed)
    dense = None
    if reranked.uses_dense:
        try:
            state_emb, new_emb = await rev.service.embed(states, new_texts)
            depth = reranked.depth(k)
            scores, ids = await rev.searcher.search(state_emb, cand, depth)
        except BaseException:
            await asyncio.gather(lexical, return_exceptions=True)
            raise
        dense = dense_signals(index, state_emb, new_emb, scores, ids, depth)
    side = await lexical
    ranked = await loop.run_in_executor(rev.lexical_pool, reranked.finish, side, k, dense)
    results = [named(ids, scores, index.names, new_names, index.size) for ids, scores in ranked]
    return results[0] if single else results
