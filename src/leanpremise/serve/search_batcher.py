"""Concurrent requests' searches, run together in one pass over the embeddings.

Scoring a request reads tens of thousands of embedding rows and is bound by
memory bandwidth, not arithmetic: scoring four queries costs little more than
scoring one. One worker runs `PremiseIndex.search_many` on every search queued
while the previous pass ran (up to `max_queries` queries), so under load each
pass serves several requests, and an idle server answers a lone request at
once, without waiting to fill a batch. Under load a search may linger a few
milliseconds for requests already being embedded (`expecting()`), since a
pass that also serves them costs little more than one that does not, and the
CPU it saves shortens every queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from leanpremise.serve.index import Candidates, PremiseIndex
from leanpremise.serve.jobs import fail_jobs, hand_out, take_jobs

logger = logging.getLogger(__name__)


@dataclass
class _Search:
    queries: np.ndarray
    cand: Candidates
    k: int
    future: asyncio.Future
    queued_at: float = 0.0


class SearchBatcher:
    def __init__(self, index: PremiseIndex, executor: Executor, max_queries: int = 16, metrics=None,
                 linger_ms: float = 0.0):
        self.index = index
        self.executor = executor
        self.max_queries = max(1, max_queries)
        self.metrics = metrics
        self.linger = max(0.0, linger_ms) / 1000
        self._expected = 0
        self._queue: deque[_Search] = deque()
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

    @contextlib.asynccontextmanager
    async def expecting(self):
        """Announce a request that will search once its texts are embedded; a pass may wait for it."""
        self._expected += 1
        announced = [True]
        try:
            yield announced
        finally:
            if announced[0]:  # left without searching (an error, a 503): a lingering pass need not wait
                self._expected -= 1
                if self._wake is not None:
                    self._wake.set()

    async def search(self, queries: np.ndarray, cand: Candidates, k: int, announced: list | None = None
                     ) -> tuple[list, list]:
        """Per query row: (scores, ids) of its exact top-k among `cand`, best first. `announced` is what
        `expecting()` yielded for this request, if it was announced."""
        if announced is not None and announced[0]:
            announced[0] = False
            self._expected -= 1
        if len(queries) == 0:
            return [], []
        job = _Search(queries, cand, k, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.append(job)
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
            await self._linger()
            jobs = self._take()
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

    async def _linger(self) -> None:
        """Wait up to `linger` after the oldest queued search for announced requests to queue theirs."""
        deadline = self._queue[0].queued_at + self.linger
        while self._expected > 0 and sum(len(j.queries) for j in self._queue) < self.max_queries:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[_Search]:
        """Queued searches in arrival order, up to max_queries query rows (at least one search)."""
        return take_jobs(self._queue, self.max_queries, lambda job: len(job.queries))
