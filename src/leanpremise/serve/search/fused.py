"""Hybrid serving: the bundle's lexical rankers run per request beside the dense search, then fused.

Every ranker ranks the same candidates (the request's candidate mask) plus the request's new premises,
which get ids after the indexed ones (N, N+1, ...), so the fusion (rank/fusion.py, the code `retrieve
--hybrid` runs) sees one id space. Each ranker ranks `depth` premises: the depth the fusion was tuned at
(its `k`), or the request's k when that is larger; so a served ranking equals `retrieve --hybrid` for
the same state and candidates. A ranker of weight 0 is not run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from leanpremise.bundle.layout import HYBRID_BM25, HYBRID_MEPO, HYBRID_USAGE, BundleError
from leanpremise.rank.fusion import FusionFileError, active_rankers, apply, read_servable_fusion
from leanpremise.rank.names import side_rankers
from leanpremise.rank.runs import Run
from leanpremise.rank.side import SideRankers
from leanpremise.serve.search.analyses import NEW_PREMISE_CACHE_BYTES, NewPremiseAnalyses

logger = logging.getLogger(__name__)

class FusedRanking:
    """The fusion of one bundle and the lexical rankers it reads."""

    def __init__(self, spec, bm25=None, mepo=None, usage=None, name_to_id: dict[str, int] | None = None,
                 cache_bytes: int = NEW_PREMISE_CACHE_BYTES):
        self.spec, self.bm25, self.mepo, self.usage = spec, bm25, mepo, usage
        self.name_to_id = name_to_id or {}
        """Indexed premise ids by name: a new premise gets the usage count of its indexed namesake."""
        self.active = active_rankers(spec)
        self.names, self.mepo_config, self.dense_name = side_rankers(self.active)
        """The fusion's name of each side ranker it runs (`mepo`, or `mepo-p0.6-c2.4` from `fuse`), and
        MePo's settings (from that name)."""
        self.side = SideRankers(bm25, mepo, self.mepo_config, usage, self.name_to_id)
        """The side rankers as one request sees them (rank/side.py, which evaluation's reranker runs too)."""
        self.analyses = NewPremiseAnalyses(cache_bytes)
        """New premises' BM25 terms and MePo symbols, kept across requests (serve/search/analyses.py)."""

    @classmethod
    def load(cls, root: Path, manifest, corpus, cache_bytes: int = NEW_PREMISE_CACHE_BYTES) -> FusedRanking:
        """From a bundle dir whose files were checked against its manifest; BundleError names what is
        wrong (the files come from an untrusted folder: nothing is unpickled, arrays are validated)."""
        path = Path(root) / manifest.hybrid
        try:
            spec = read_servable_fusion(path)
        except FusionFileError as e:
            raise BundleError(str(e)) from e
        active, _, _ = side_rankers(active_rankers(spec))
        bm25 = mepo = usage = None
        try:
            if "bm25" in active:
                from leanpremise.rank.bm25 import BM25Ranker

                bm25 = BM25Ranker.load(Path(root) / HYBRID_BM25, len(corpus))
            if "mepo" in active:
                from leanpremise.rank.mepo import SymbolIndex

                mepo = SymbolIndex.load(Path(root) / HYBRID_MEPO, len(corpus))
            if "usage" in active:
                from leanpremise.rank.usage import UsageRanker

                usage = UsageRanker.load(Path(root) / HYBRID_USAGE, len(corpus))
        except ValueError as e:
            raise BundleError(str(e)) from e
        return cls(spec, bm25, mepo, usage, corpus.name_to_id if usage is not None else None, cache_bytes)

    def depth(self, k: int) -> int:
        return max(k, self.spec.k or k)

    def describe(self) -> dict:
        """What /health says of the fusion."""
        return {"method": self.spec.method, "rankers": self.active,
                "weights": {n: self.spec.weights[n] for n in self.active},
                "params": self.spec.params, "depth": self.spec.k,
                "tuned_on": None if self.spec.tuned_on is None else self.spec.tuned_on.split}

    # ---- per request (in a worker thread) ----------------------------------------------------------

    def lexical(self, states: list[str], mask: np.ndarray | None, new_texts: list[str], new_names: list[str],
                k: int) -> list[list[Run]]:
        """Per state, the lexical rankers' runs over the candidates and the new premises (one row each)."""
        depth = self.depth(k)
        terms = self.analyses.terms(new_texts, self.bm25.doc_terms) if self.bm25 else None
        new_symbols = self.analyses.symbol_sets(new_names, new_texts) if self.mepo else None
        new = self.side.prepare(new_names, new_texts, terms=terms, symbol_sets=new_symbols)
        out = []
        for state in states:
            runs = self.side.runs(state, mask, new, depth)
            out.append([Run.row(self.names[kind], *runs[kind]) for kind in ("bm25", "mepo", "usage")
                        if kind in runs])
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

