"""Concurrent requests' searches, taken together by one search worker.

One worker thread runs `PremiseIndex.search_many` on every search queued
while the previous call ran (up to `max_queries` query rows), so under load
one executor hop serves several requests, an idle server answers a lone
request at once, and searches never compete with each other for the cores
the embedding workers use. The other work on the rows, the dense score of given ids (a reranker's
candidates, `score`), is a job of the same worker, for the same reason. Searches are taken round robin across clients (`CLIENT`, set by the request
guard): a client's request of 64 goals waits behind its own others, never in front of another client's
one-goal request (issue 28).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from leanpremise.serve.jobs import fail_jobs, hand_out, queue_by_client, take_round_robin
from leanpremise.serve.search.index import ImportMask, PremiseIndex

logger = logging.getLogger(__name__)


@dataclass
class _Search:
    """The top k of `queries` among `mask`."""

    queries: np.ndarray
    mask: ImportMask
    k: int
    future: asyncio.Future


@dataclass
class _Score:
    """The dense scores of `ids[j]` for query row j (new premise i is id n + i, row `new_rows[i]`)."""

    queries: np.ndarray
    ids: list
    new_rows: np.ndarray
    future: asyncio.Future


class SearchBatcher:
    def __init__(self, index: PremiseIndex, executor: Executor, max_queries: int, metrics=None):
        self.index = index
        self.executor = executor
        self.max_queries = max(1, max_queries)
        self.metrics = metrics
        self._queue: OrderedDict = OrderedDict()
        """Queued searches by client, clients in the order of their turn."""
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="search-worker")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def search(self, queries: np.ndarray, mask: ImportMask, k: int) -> tuple[list, list]:
        """Per query row: (scores, ids) of its exact top-k among `mask`, best first."""
        if len(queries) == 0:
            return [], []
        results = await self._queued(_Search(queries, mask, k, asyncio.get_running_loop().create_future()))
        return [r[0] for r in results], [r[1] for r in results]

    async def score(self, queries: np.ndarray, ids: list[np.ndarray], new_rows: np.ndarray) -> list[np.ndarray]:
        """Per query row j: the dense score (float64) of each id of `ids[j]` in the request's shared id space
        (`PremiseIndex.score`)."""
        if len(queries) == 0:
            return []
        return await self._queued(_Score(queries, ids, new_rows, asyncio.get_running_loop().create_future()))

    async def _queued(self, job):
        queue_by_client(self._queue, job)
        self._wake.set()
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = self._take()
            if not jobs:
                continue
            searches = [j for j in jobs if isinstance(j, _Search)]
            scorings = [j for j in jobs if isinstance(j, _Score)]
            try:
                results, scored = await loop.run_in_executor(self.executor, self._work, searches, scorings)
            except Exception as e:
                logger.exception("search of %d queries failed", sum(len(j.queries) for j in jobs))
                fail_jobs([j.future for j in jobs], e)
                continue
            if self.metrics is not None and searches:
                self.metrics.search_batch.observe(len(searches))
            hand_out([j.future for j in searches], [len(j.queries) for j in searches], results)
            for job, scores in zip(scorings, scored):
                if not job.future.done():
                    job.future.set_result(scores)

    def _work(self, searches: list[_Search], scorings: list[_Score]) -> tuple[list, list]:
        """In the worker thread: the searches together (`search_many`), then each scoring."""
        results = []
        if searches:
            queries = np.concatenate([j.queries for j in searches])
            masks = [j.mask for j in searches for _ in range(len(j.queries))]
            ks = [j.k for j in searches for _ in range(len(j.queries))]
            results = self.index.search_many(queries, masks, ks)
        return results, [self.index.score(j.queries, j.ids, j.new_rows) for j in scorings]

    def _take(self) -> list:
        """Queued jobs, one per client in turn, up to max_queries query rows (at least one job)."""
        return take_round_robin(self._queue, self.max_queries, lambda job: len(job.queries))
