"""Embedding requests' texts: an LRU cache for new premises, cross-request batching, and a bound.

Requests hand their uncached texts over in chunks of `chunk_size`; one worker
thread runs the embedder on whatever chunks are queued (up to `max_batch`
texts), so concurrent requests share encode calls. Requests with only a few
uncached texts (a state and a new premise or two: the usual, cached request)
go to an urgent lane the worker always drains first, so they never wait behind
more than one batch of a file's first, all-uncached request. At most `max_inflight`
texts are queued or being embedded; a chunk that would exceed that is refused
with :class:`Overloaded` (the server answers 503 + Retry-After) instead of
growing an unbounded queue. A text some other request is already embedding is
awaited, not embedded twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """More texts in flight than the configured bound."""


class LRUCache:
    """Text -> embedding row, least recently used evicted first."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str) -> np.ndarray | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data


URGENT_MAX_TEXTS = 8
"""Requests with at most this many uncached texts take the urgent lane."""
BULK_CHUNK = 8
"""Texts per bulk chunk: an urgent request waits for at most one such batch (~0.1 s for MiniLM on 2 cores)."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future


class EmbeddingService:
    def __init__(self, embedder, cache_size: int = 131072, max_inflight: int = 128, chunk_size: int = 32,
                 max_batch: int = 64, metrics=None):
        self.embedder = embedder
        self.dim = embedder.dim
        self.cache = LRUCache(cache_size)
        self.max_inflight = max_inflight
        self.chunk_size = max(1, min(chunk_size, max_inflight))
        self.max_batch = max(max_batch, self.chunk_size)
        self.metrics = metrics
        self.inflight = 0
        self._pending: dict[str, asyncio.Future] = {}
        self._urgent: deque[_Job] = deque()
        self._bulk: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._run(), name="embedding-worker")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- the request side --------------------------------------------------------------------

    async def embed(self, states: list[str], premises: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(state embeddings, premise embeddings), rows in the order given; premises cached by text."""
        premise_emb = np.empty((len(premises), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(premises):
            row = self.cache.get(text)
            if row is None:
                missing.setdefault(text, []).append(i)
            else:
                premise_emb[i] = row
        if self.metrics is not None:
            self.metrics.cache_hits.inc(len(premises) - sum(map(len, missing.values())))
            self.metrics.cache_misses.inc(sum(map(len, missing.values())))
        shared = {t: self._pending[t] for t in missing if t in self._pending}
        own = [t for t in missing if t not in shared]
        loop = asyncio.get_running_loop()
        owned = {t: loop.create_future() for t in own}
        for t, fut in owned.items():
            fut.add_done_callback(_consume)
            self._pending[t] = fut
        try:
            texts = list(states) + own
            urgent = len(texts) <= URGENT_MAX_TEXTS
            rows = []
            step = self.chunk_size if urgent else min(self.chunk_size, BULK_CHUNK)
            for lo in range(0, len(texts), step):
                chunk = texts[lo : lo + step]
                part = await self._submit(chunk, urgent)
                rows.append(part)
                for t, row in zip(chunk, part):
                    if t in owned and not owned[t].done():
                        self.cache.put(t, row)
                        owned[t].set_result(row)
                        self._pending.pop(t, None)
            computed = np.concatenate(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)
        except BaseException as e:
            for t, fut in owned.items():
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else Overloaded())
                if self._pending.get(t) is fut:
                    del self._pending[t]
            raise
        state_emb = computed[: len(states)]
        for t, row in zip(own, computed[len(states) :]):
            premise_emb[missing[t]] = row
        for t, fut in shared.items():
            premise_emb[missing[t]] = await fut
        return state_emb, premise_emb

    async def _submit(self, texts: list[str], urgent: bool = True) -> np.ndarray:
        if self.inflight + len(texts) > self.max_inflight:
            if self.metrics is not None:
                self.metrics.overloaded.inc()
            raise Overloaded(f"{self.inflight} texts being embedded; limit {self.max_inflight}")
        self.inflight += len(texts)
        if self.metrics is not None:
            self.metrics.inflight.set(self.inflight)
        try:
            job = _Job(texts, asyncio.get_running_loop().create_future())
            (self._urgent if urgent else self._bulk).append(job)
            self._wake.set()
            return await job.future
        finally:
            self.inflight -= len(texts)
            if self.metrics is not None:
                self.metrics.inflight.set(self.inflight)

    # ---- the worker side ---------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._urgent and not self._bulk:
                self._wake.clear()
                await self._wake.wait()
                continue
            jobs = self._take_batch()
            jobs = [j for j in jobs if not j.future.done()]  # requests cancelled while queued
            if not jobs:
                continue
            texts = [t for j in jobs for t in j.texts]
            try:
                emb = await loop.run_in_executor(self._executor, self.embedder.encode, texts)
            except Exception as e:  # noqa: BLE001 - a backend failure fails these requests, not the worker
                logger.warning("embedding %d texts failed: %s", len(texts), e)
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            if self.metrics is not None:
                self.metrics.embedded.inc(len(texts))
                self.metrics.batch_size.observe(len(texts))
            pos = 0
            for j in jobs:
                if not j.future.done():
                    j.future.set_result(emb[pos : pos + len(j.texts)])
                pos += len(j.texts)


    def _take_batch(self) -> list[_Job]:
        """Urgent jobs first (all of them, up to max_batch texts); else bulk chunks, up to BULK_CHUNK
        texts, so that an urgent job arriving meanwhile waits for a short batch only."""
        lane, limit = (self._urgent, self.max_batch) if self._urgent else (self._bulk, min(self.chunk_size, BULK_CHUNK))
        jobs = [lane.popleft()]
        n = len(jobs[0].texts)
        while lane and n + len(lane[0].texts) <= limit:
            job = lane.popleft()
            jobs.append(job)
            n += len(job.texts)
        return jobs


def _consume(fut: asyncio.Future) -> None:
    """Mark a shared future's exception as retrieved (it is re-raised to whoever awaits it)."""
    if not fut.cancelled():
        fut.exception()
