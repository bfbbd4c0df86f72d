"""Fused serving: the bundle's lexical rankers run per request beside the dense search, then fused.

Every ranker ranks the same candidates (the request's import mask) plus the request's new premises,
which get ids after the indexed ones (N, N+1, ...), so the fusion (rank/fusion.py, the code `retrieve
--hybrid` runs) sees one id space. Each ranker ranks `depth` premises: the depth the fusion was tuned at
(its `k`), or the request's k when that is larger; so a served ranking equals `retrieve --hybrid` for
the same state and candidates. A ranker of weight 0 is not run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leanpremise.bundle.side_rankers import read_fusion, read_side_rankers
from leanpremise.rank.fusion import active_rankers, apply
from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.names import LEXICAL, side_rankers
from leanpremise.rank.runs import Run, merge_new
from leanpremise.rank.side import SideRankers
from leanpremise.serve.search.analyses import NEW_PREMISE_CACHE_BYTES, NewPremiseAnalyses
from leanpremise.serve.search.ranking import (
    DEFAULT_SETTINGS,
    DenseFound,
    RankingKind,
    RankingSettings,
    RankRequest,
    Workers,
    named,
)


class FusedRanking:
    """The fusion of one bundle and the lexical rankers it reads (a `Ranking`, serve/search/ranking.py)."""

    kind = RankingKind.FUSED
    uses_lexical = True
    uses_dense = True

    def __init__(self, spec, side: SideRankers, cache_bytes: int = NEW_PREMISE_CACHE_BYTES):
        self.spec = spec
        self.active = active_rankers(spec)
        self.names, self.mepo_config, self.dense_name = side_rankers(self.active)
        """The fusion's name of each side ranker it runs (`mepo`, or `mepo-p0.6-c2.4` from `fuse`), and
        MePo's settings (from that name)."""
        self.side = side
        """The side rankers as one request sees them (rank/side.py, which evaluation's reranker runs too)."""
        self.side.mepo_config = self.mepo_config
        self.analyses = NewPremiseAnalyses(cache_bytes)
        """New premises' BM25 terms and MePo symbols, kept across requests (serve/search/analyses.py)."""

    @classmethod
    def load(cls, root: Path, manifest, corpus, settings: RankingSettings | None = None) -> FusedRanking:
        """From a bundle dir whose files were checked against its manifest; BundleError names what is
        wrong (the files come from an untrusted folder: nothing is unpickled, arrays are validated)."""
        spec = read_fusion(root, manifest)
        kinds, mepo_config, _ = side_rankers(active_rankers(spec))
        side = read_side_rankers(root, kinds, corpus, mepo_config)
        return cls(spec, side, (settings or DEFAULT_SETTINGS).cache_bytes)

    def shape(self, request: RankRequest, index) -> RankRequest:
        return request

    def depth(self, k: int) -> int:
        return max(k, self.spec.k or k)

    def describe(self) -> dict:
        """What /health says of the fusion."""
        return {"ranking": self.kind, "rerank": False,
                "hybrid": {"method": self.spec.method, "rankers": self.active,
                           "weights": {n: self.spec.weights[n] for n in self.active},
                           "params": self.spec.params, "depth": self.spec.k,
                           "tuned_on": None if self.spec.tuned_on is None else self.spec.tuned_on.split}}

    # ---- per request -------------------------------------------------------------------------------

    def prepare(self, request: RankRequest, mask) -> list[list[Run]]:
        """The lexical runs of every goal (in a lexical thread while the goals embed)."""
        return self.lexical(request.states, mask.mask, request.new_texts, request.new_names, request.k)

    def lexical(self, states: list[str], mask: np.ndarray | None, new_texts: list[str], new_names: list[str],
                k: int) -> list[list[Run]]:
        """Per state, the lexical rankers' runs over the candidates and the new premises (one row each)."""
        depth = self.depth(k)
        new = self.analyses.prepare(self.side, new_names, new_texts)
        out = []
        for state in states:
            runs = self.side.runs(state, mask, new, depth)
            out.append([Run.row(self.names[kind], *runs[kind]) for kind in LEXICAL if kind in runs])
        return out

    async def finish(self, request: RankRequest, prepared: list[list[Run]], found: DenseFound, index,
                     workers: Workers) -> list[list[dict]]:
        """Each goal's dense run (indexed and new premises merged) fused with its lexical runs."""
        new_scores, n, depth = found.new_scores(), index.size, self.depth(request.k)
        out = []
        for b in range(len(request.states)):
            dense = Run.row(RankerKind.DENSE, *merge_new(found.ids[b], found.scores[b], new_scores[b], n, depth))
            top_ids, top_scores = self.fuse(dense, prepared[b], request.k)
            out.append(named(top_ids, top_scores, index.names, request.new_names, n))
        return out

    def cache_bytes(self) -> int:
        """Bytes the new-premise analyses hold now (as counted against their bound)."""
        return self.analyses.nbytes()

    def fuse(self, dense: Run | None, lexical: list[Run], k: int) -> tuple[np.ndarray, np.ndarray]:
        """One state's fused top k: (ids in the shared id space, -1 padded; fused scores)."""
        runs = list(lexical)
        if dense is not None and self.dense_name is not None:
            runs.append(Run(self.dense_name, dense.ids, dense.scores))
        ids, scores = apply(runs, self.spec, k)
        return ids[0], scores[0]
