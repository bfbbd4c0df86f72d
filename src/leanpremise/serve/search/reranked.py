"""Re-ranked serving: a bundle's learned reranker (`export --rerank`) orders each request's candidates.

Per request: the rankers the reranker names (the dense search, BM25, MePo, usage) list the request's
candidates and new premises in one id space (indexed 0..n-1, new n, n+1, ...); `rank/rerank` takes the union
of their top lists and the nearest local premises, computes the features with the same function evaluation
calls (`features.features`, from the request's fields and the bundle only) and the model scores them. The
request's fields are turned into the reranker's input the way evaluation's client simulation builds it: local
premises nearest first, the import closure's frontier, the project and module of the local premises. So a
served ranking equals `rerank apply` for the same request. The dense score of every candidate (listed by
the dense search or not) is computed by the revision's search worker (rank/dense.dense_scores, the function
evaluation calls too), so no scoring of rows competes for cores outside it.

Lean's default client sends its file's declarations as new premises, not local ones: those whose names the
index holds are read as local premises (`structure.read_new_premises`; they stay candidates, as indexed
premises), the others stay new premises with their place in the client's list.

A reranker file that is corrupt or of another feature version refuses the bundle (BundleError, one line).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from leanpremise.bundle.layout import BundleError
from leanpremise.bundle.side_rankers import read_side_rankers
from leanpremise.rank.dense import known_scores
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.rerank.features import RANKERS, RerankInput, Signals, candidates, features
from leanpremise.rank.rerank.model import Reranker
from leanpremise.rank.rerank.premises import PremiseTable
from leanpremise.rank.rerank.spec import RerankerFileError, read_spec
from leanpremise.rank.rerank.structure import read_new_premises, request_input
from leanpremise.rank.runs import merge_new
from leanpremise.rank.side import SideRankers
from leanpremise.serve.search.analyses import NEW_PREMISE_CACHE_BYTES, NewPremiseAnalyses
from leanpremise.serve.search.ranking import DEFAULT_SETTINGS, RankingKind, named

if TYPE_CHECKING:
    from leanpremise.serve.search.ranking import DenseFound, RankingSettings, RankRequest, Workers

INLINE_GOALS = 1
"""A request of this many goals or fewer is finished (features and the model) on the event loop: its work is
vectorised and short, and a hop to a thread and back cost more wall time on busy cores than it takes
(docs/decisions.md, "The served cost of re-ranking"); more goals go to a lexical thread, so the loop is never
held long."""


@dataclass
class RerankReading:
    """What the reranker reads of a request beyond every ranker's view (`RerankedRanking.shape`)."""

    local_ids: np.ndarray
    """Indexed ids of the local premises: those sent as local, then the new premises the index holds."""
    closure: np.ndarray
    """Module ids of the request's imports."""
    new_from_end: np.ndarray
    """Per new premise kept, its place in the client's list counted from its end."""
    new_sent: int
    """New premises the client sent, named or not."""


class RerankedRanking:
    """One bundle's reranker, the premise table its features read, and the side rankers it names (a
    `Ranking`, serve/search/ranking.py)."""

    kind = RankingKind.RERANKED
    uses_lexical = True

    def __init__(self, reranker: Reranker, table: PremiseTable, side: SideRankers,
                 cache_bytes: int = NEW_PREMISE_CACHE_BYTES):
        self.reranker, self.table, self.side = reranker, table, side
        self.analyses = NewPremiseAnalyses(cache_bytes)
        """New premises' BM25 terms and MePo symbols, kept across requests as the fusion keeps them."""
        self.spec = reranker.spec
        self.kinds = reranker.kinds
        self.uses_dense = RankerKind.DENSE in self.kinds
        self.first = next(k for k in RANKERS if k in self.kinds) if self.kinds else None
        """The ranker whose deeper list follows the candidates when a request asks for more (as in eval)."""

    @classmethod
    def load(cls, root: Path, manifest, corpus, settings: RankingSettings | None = None) -> RerankedRanking:
        """From a bundle dir whose files were checked against its manifest, before the corpus drops its
        texts (a feature reads their lengths); BundleError names what is wrong. The model file is read once,
        checked against the settings' limits and (with `verify`) the manifest's sha256 on those bytes, and
        built from them (rank/rerank/validate.py): a model that could hang or crash the process refuses its
        bundle."""
        root, settings = Path(root), settings or DEFAULT_SETTINGS
        folder = (root / manifest.rerank).parent
        try:
            rel = (Path(manifest.rerank).parent / read_spec(folder).model_file).as_posix()
            reranker = Reranker.load(folder, settings.rerank_limits,
                                     manifest.checksums.get(rel) if settings.verify else None)
        except RerankerFileError as e:
            raise BundleError(f"{e} (a reranker this server cannot apply; serve with RERANK=false to ignore it)"
                              ) from e
        mepo_config = None
        if RankerKind.MEPO in reranker.kinds:
            from leanpremise.rank.mepo import MePoConfig

            params = reranker.spec.ranker(RankerKind.MEPO).params
            mepo_config = MePoConfig(**{k: float(params[k]) for k in ("p", "c") if k in params})
        side = read_side_rankers(root, reranker.kinds, corpus, mepo_config, module_usage=True)
        return cls(reranker, PremiseTable.from_corpus(corpus), side, settings.cache_bytes)

    def depth(self, k: int) -> int:
        """How deep every ranker lists: the reranker's depth, or k when the request asks for more."""
        return max(self.spec.depth, k)

    def describe(self) -> dict:
        """What /health says of the reranker."""
        return {"ranking": self.kind, "hybrid": None, "rerank": True,
                "reranker": {"rankers": self.kinds, "depth": self.spec.depth, "local_bound": self.spec.local_bound,
                             "library": self.spec.library, "feature_set": self.spec.feature_set}}

    # ---- per request -------------------------------------------------------------------------------

    def shape(self, request: RankRequest, index) -> RankRequest:
        """New premises the index holds are read as local premises (`read_new_premises`); the others stay new
        premises with their place in the client's list."""
        sent = request.new_names
        at = np.fromiter((index.corpus.name_to_id.get(n, -1) for n in sent), dtype=np.int64, count=len(sent))
        named_ids, kept, from_end = read_new_premises(at)
        local = request.local_premises
        if len(named_ids) and (local is not None or request.imported_modules is not None):  # else all candidates
            local = list(local or []) + [name for name, i in zip(sent, at.tolist()) if i >= 0]
        reading = RerankReading(np.concatenate([index.premise_ids(request.local_premises or []), named_ids]),
                                index.module_ids(request.imported_modules or []), from_end, len(sent))
        return replace(request, new_names=[sent[j] for j in kept.tolist()],
                       new_texts=[request.new_texts[j] for j in kept.tolist()], local_premises=local, extra=reading)

    def prepare(self, request: RankRequest, mask) -> list:
        """Per goal: its reranker input and the side rankers' lists and lookups (while the goals embed)."""
        r: RerankReading = request.extra
        return self.lexical(request.states, mask.mask, r.local_ids, r.closure, request.new_names,
                            request.new_texts, request.k, r.new_from_end, r.new_sent)

    async def finish(self, request: RankRequest, prepared: list, found: DenseFound | None, index,
                     workers: Workers) -> list[list[dict]]:
        """With the dense ranker: each goal's dense run, its candidates, and their dense scores from the search
        worker; then the features and the model's order: on the event loop for a request of at most
        INLINE_GOALS goals, in a lexical thread for more."""
        dense = cands = None
        if found is not None:
            n, depth = index.size, self.depth(request.k)
            runs = [merge_new(found.ids[b], found.scores[b], found.new_emb @ found.state_emb[b]
                              if len(found.new_emb) else np.zeros(0, dtype=np.float32), n, depth)
                    for b in range(len(request.states))]
            cands = [self.candidates(inp, {**side_runs, RankerKind.DENSE: run})
                     for (inp, side_runs, _), run in zip(prepared, runs)]
            scores = await workers.search.score(found.state_emb, cands, found.new_emb)
            dense = [(run, known_scores(c, s)) for run, c, s in zip(runs, cands, scores)]
        if len(prepared) <= INLINE_GOALS:
            ranked = self.finish_lists(prepared, request.k, dense, cands)
        else:
            ranked = await asyncio.get_running_loop().run_in_executor(workers.lexical, self.finish_lists, prepared,
                                                                      request.k, dense, cands)
        return [named(ids, scores, index.names, request.new_names, index.size) for ids, scores in ranked]

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
        new = self.analyses.prepare(self.side, new_names, new_texts)
        out = []
        for state in states:
            inp = self.request_input(state, local_ids, closure, new_names, new_texts, new_from_end, new_sent)
            runs, lookups = self.side.runs(state, mask, new, depth, with_lookups=True, module=inp.module)
            out.append((inp, runs, lookups))
        return out

    def candidates(self, inp: RerankInput, runs: dict) -> np.ndarray:
        """One goal's candidates (sorted ids): the union of the rankers' lists and the nearest local premises."""
        return candidates(Signals(runs=runs), inp, self.spec.depth, self.spec.local_bound)

    def finish_lists(self, lexical: list, k: int, dense: list | None = None, cands: list | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per state, the reranked top k (ids in the shared id space; scores non-increasing). `dense`: per
        state, (its dense run, a score lookup of its candidates) when the reranker reads the dense ranker;
        `cands`: per state, its candidates when already known."""
        out = []
        for b, (inp, runs, lookups) in enumerate(lexical):
            if dense is not None:
                runs[RankerKind.DENSE], lookups[RankerKind.DENSE] = dense[b]
            sig = Signals(runs=runs, lookups=lookups)
            cand = cands[b] if cands is not None else candidates(sig, inp, self.spec.depth, self.spec.local_bound)
            x = features(self.table, inp, sig, cand, self.kinds, self.spec.structure, self.spec.depth,
                         self.spec.families)
            out.append(self.reranker.rank(cand, x, k, runs[self.first][0][:k] if self.first else None))
        return out
