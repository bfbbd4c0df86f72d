"""The one orchestration every ranking is answered by (serve/search/answer.py): a request's import mask is
built and its ranking's lexical work runs while its goals embed, whichever ranking it is (the re-ranked one
used to build the mask first); a ranking that reads no dense ranker embeds nothing."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from liveness import LIVENESS_S
from serve_helpers import service_config


class StubRanking:
    """A ranking whose lexical work waits until the goals are embedding (and records what it was given)."""

    kind = "stub"
    uses_lexical = True

    def __init__(self, uses_dense: bool, embedding: threading.Event):
        self.uses_dense, self.embedding = uses_dense, embedding
        self.prepared = threading.Event()
        self.found = "unset"

    def shape(self, request, index):
        return request

    def depth(self, k: int) -> int:
        return k

    def prepare(self, request, mask):
        if self.uses_dense:
            assert self.embedding.wait(LIVENESS_S), "the goals were not embedding while the lexical work ran"
        self.prepared.set()
        return "lexical lists"

    async def finish(self, request, prepared, found, index, workers):
        self.found = found
        return [[{"name": prepared, "score": 0.0}] for _ in request.states]

    def describe(self) -> dict:
        return {"ranking": self.kind}


class StubService:
    """Embeds only once the ranking's lexical work has run: the request would hang if the two ran in turn."""

    def __init__(self, ranking: StubRanking, embedding: threading.Event):
        self.ranking, self.embedding, self.calls = ranking, embedding, 0

    async def embed(self, states, new_texts):
        self.calls += 1
        self.embedding.set()
        assert await asyncio.to_thread(self.ranking.prepared.wait, LIVENESS_S), "the lexical work waited"
        return np.ones((len(states), 2), np.float32), np.zeros((len(new_texts), 2), np.float32)


class StubSearch:
    async def search(self, queries, mask, k):
        return [np.zeros(1, np.float32)] * len(queries), [np.zeros(1, np.int64)] * len(queries)


def answer_with(uses_dense: bool):
    from leanpremise.serve.search.answer import answer
    from leanpremise.serve.search.index import ImportMask
    from leanpremise.serve.search.ranking import Workers

    embedding = threading.Event()
    ranking = StubRanking(uses_dense, embedding)
    service = StubService(ranking, embedding)

    def import_mask(*fields):
        if uses_dense:
            assert embedding.wait(LIVENESS_S), "the goals were not embedding while the import mask was built"
        return ImportMask(None, 10)

    index = SimpleNamespace(import_mask=import_mask)
    req = SimpleNamespace(state=["⊢ p", "⊢ q"], k=3, new_premises=[], imported_modules=None, local_premises=None,
                          caller_in_module_system=False, imported_all_modules=None)

    async def run():
        with ThreadPoolExecutor(1) as masks, ThreadPoolExecutor(1) as lexical:
            rev = SimpleNamespace(ranking=ranking, index=index, service=service, config=service_config(),
                                  max_text_chars=1000, workers=Workers(masks, lexical, StubSearch()))
            return await asyncio.wait_for(answer(rev, req), LIVENESS_S)

    return asyncio.run(run()), ranking, service


def test_the_import_mask_and_the_lexical_work_are_made_while_the_goals_embed():
    results, ranking, service = answer_with(uses_dense=True)
    assert results == [[{"name": "lexical lists", "score": 0.0}]] * 2
    assert service.calls == 1 and ranking.found is not None and len(ranking.found.ids) == 2


def test_a_ranking_without_the_dense_ranker_embeds_nothing():
    results, ranking, service = answer_with(uses_dense=False)
    assert results == [[{"name": "lexical lists", "score": 0.0}]] * 2
    assert service.calls == 0 and ranking.found is None
