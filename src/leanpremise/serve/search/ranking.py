"""A revision's ranking, picked once when its bundle loads: dense, fused (serve/search/fused.py) or re-ranked
(serve/search/reranked.py).

Every request is answered by one orchestration (serve/search/answer.py): the request's import mask is built
while its goals embed; the ranking's lexical work (`prepare`) then runs in the lexical pool while they still
embed; the dense search runs `depth(k)` deep in the search worker; `finish` orders each goal's results. A
ranking says only what differs: how it reads the request (`shape`), what it prepares, how deep the dense
search goes, how it finishes, what /health says of it, and how it loads from a bundle.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from leanpremise.rank.rerank.validate import HARD_LIMITS, ModelLimits
from leanpremise.rank.runs import merge_new
from leanpremise.serve.search.analyses import NEW_PREMISE_CACHE_BYTES

if TYPE_CHECKING:
    from leanpremise.serve.search.batcher import SearchBatcher
    from leanpremise.serve.search.index import ImportMask, PremiseIndex


class RankingKind(StrEnum):
    """The rankings a revision can serve (what /health's `ranking` says)."""

    DENSE = "dense"
    FUSED = "fused"
    RERANKED = "reranked"


@dataclass
class RankRequest:
    """One /retrieve request as every ranker sees it: states and new premises clipped and cut, its k, and the
    fields its import mask is built from."""

    single: bool
    states: list[str]
    k: int
    new_names: list[str]
    new_texts: list[str]
    imported_modules: list | None = None
    local_premises: list | None = None
    caller_in_module_system: bool = False
    imported_all_modules: list | None = None
    extra: object = None
    """What a ranking's `shape` adds for its own steps (the re-ranked one: its reading of the request)."""


@dataclass
class DenseFound:
    """The dense search's outcome for one request: the goals' and new premises' embeddings and, per goal,
    its indexed top list (scores, ids; best first)."""

    state_emb: np.ndarray
    new_emb: np.ndarray
    scores: list
    ids: list

    def new_scores(self) -> np.ndarray:
        """(goals, new premises) dot products."""
        if len(self.new_emb) == 0:
            return np.zeros((len(self.state_emb), 0), dtype=np.float32)
        return self.state_emb @ self.new_emb.T


@dataclass
class Workers:
    """Where a request's work runs besides the event loop: the import masks' threads, the lexical rankers'
    threads, and the revision's search worker (every faiss call and every scoring of rows goes through it)."""

    masks: Executor
    lexical: Executor
    search: SearchBatcher


@dataclass(frozen=True)
class RankingSettings:
    """What the server's settings say of loading a ranking (serve/settings.py holds each setting)."""

    cache_bytes: int = NEW_PREMISE_CACHE_BYTES
    """LEXICAL_CACHE_MAX_BYTES: the bound on new premises' analyses kept across requests."""
    rerank_limits: ModelLimits = field(default_factory=lambda: HARD_LIMITS)
    """Bounds a reranker's model must keep to be loaded (rank/rerank/validate.py)."""
    verify: bool = True
    """VERIFY_CHECKSUMS: a reranker's model bytes are checked against the manifest as they are read."""


DEFAULT_SETTINGS = RankingSettings()


class Ranking(Protocol):
    """How one revision orders its answers (see the module docstring for the order of the steps)."""

    kind: ClassVar[str]
    """A RankingKind."""
    uses_lexical: bool
    """It runs lexical rankers: a request's texts for them are bounded (MAX_LEXICAL_WORK) and `prepare` runs
    in the lexical pool."""
    uses_dense: bool
    """It reads the dense search (else the goals are not embedded at all)."""

    @classmethod
    def load(cls, root: Path, manifest, corpus, settings: RankingSettings | None = None) -> Ranking:
        """From a bundle dir whose files were checked against its manifest; BundleError names what is wrong."""

    def shape(self, request: RankRequest, index: PremiseIndex) -> RankRequest:
        """The request as this ranking reads it, before any work (on the event loop: cheap)."""

    def depth(self, k: int) -> int:
        """How deep the dense search lists for a request of `k`."""

    def prepare(self, request: RankRequest, mask: ImportMask):
        """The lexical work of a request (in a lexical thread, while its goals embed)."""

    async def finish(self, request: RankRequest, prepared, found: DenseFound | None, index: PremiseIndex,
                     workers: Workers) -> list[list[dict]]:
        """Per goal, its results as {name, score}, best first, at most k."""

    def describe(self) -> dict:
        """What /health says of the ranking."""


def named(ids: np.ndarray, scores: np.ndarray, index_names, new_names: list[str], n: int) -> list[dict]:
    """A ranking of the shared id space (new premise j is id n + j; -1 ends it) as {name, score}."""
    out = []
    for i, s in zip(ids.tolist(), scores.tolist()):
        if i < 0:
            break
        out.append({"name": index_names[i] if i < n else new_names[i - n], "score": s})
    return out


class DenseRanking:
    """The dense search alone: each goal's indexed top k and its new premises, merged by score."""

    kind = RankingKind.DENSE
    uses_lexical = False
    uses_dense = True

    @classmethod
    def load(cls, root: Path | None = None, manifest=None, corpus=None,
             settings: RankingSettings | None = None) -> DenseRanking:
        """Every bundle has its dense rows: nothing more to read."""
        return cls()

    def shape(self, request: RankRequest, index: PremiseIndex) -> RankRequest:
        return request

    def depth(self, k: int) -> int:
        return k

    def prepare(self, request: RankRequest, mask: ImportMask) -> None:
        return None

    async def finish(self, request: RankRequest, prepared, found: DenseFound | None, index: PremiseIndex,
                     workers: Workers) -> list[list[dict]]:
        """Indexed top k and new premises merged (`merge_new`: equal scores keep the indexed premises first)."""
        new_scores, n, k = found.new_scores(), index.size, request.k
        out = []
        for b in range(len(request.states)):
            top_ids, top_scores = merge_new(found.ids[b], found.scores[b], new_scores[b], n, k)
            out.append(named(top_ids, top_scores, index.names, request.new_names, n))
        return out

    def describe(self) -> dict:
        return {"ranking": self.kind, "hybrid": None, "rerank": False}
