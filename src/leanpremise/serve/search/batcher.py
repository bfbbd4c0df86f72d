"""Concurrent requests' searches, taken together by one search worker.

One worker thread runs `PremiseIndex.search_many` on every search queued
while the previous call ran (up to `max_queries` query rows), so under load
one executor hop serves several requests, an idle server answers a lone
request at once, and searches never compete with each other for the cores
the embedding workers use. Searches are taken round robin across clients (`CLIENT`, set by the request
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
from leanpremise.serve.search.index import Candidates, PremiseIndex

logger = logging.getLogger(__name__)


@dataclass
class _Search:
    queries: np.ndarray
    cand: Candidates
    k: int
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

    async def search(self, queries: np.ndarray, cand: Candidates, k: int) -> tuple[list, list]:
        """Per query row: (scores, ids) of its exact top-k among `cand`, best first."""
        if len(queries) == 0:
            return [], []
        job = _Search(queries, cand, k, asyncio.get_running_loop().create_future())
        queue_by_client(self._queue, job)
        self._wake.set()
        results = await job.future
        return [r[0] for r in results], [r[1] for r in results]

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
            queries = np.concatenate([j.queries for j in jobs])
            cands = [j.cand for j in jobs for _ in range(len(j.queries))]
            ks = [j.k for j in jobs for _ in range(len(j.queries))]
            try:
                results = await loop.run_in_executor(self.executor, self.index.search_many, queries, cands, ks)
            except Exception as e:
                logger.exception("search of %d queries failed", len(queries))
                fail_jobs([j.future for j in jobs], e)
                continue
            if self.metrics is not None:
                self.metrics.search_batch.observe(len(jobs))
            hand_out([j.future for j in jobs], [len(j.queries) for j in jobs], results)

    def _take(self) -> list[_Search]:
        """Queued searches, one per client in turn, up to max_queries query rows (at least one search)."""
        return take_round_robin(self._queue, self.max_queries, lambda job: len(job.queries))
