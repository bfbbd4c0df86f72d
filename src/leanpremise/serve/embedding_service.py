"""Embedding requests' texts: an LRU cache for new premises and states, cross-request batching, and a bound.

Requests hand their uncached texts over in chunks of `chunk_size`; worker
threads (one per embedder given, each with its own tokenizer, since
tokenizers are not safe to share between threads) run the embedder on what
is queued. An embedder that batches well (a GPU, a TEI service) takes every
queued urgent chunk at once, up to `max_batch` texts; a CPU one takes one
request's texts at a time, since padding a short state to a long one costs
more than batching saves there, and the workers run side by side on the
cores instead. Requests with only a few
uncached texts (a state and a new premise or two: the usual, cached request)
go to an urgent lane the worker always drains first, so they never wait behind
more than one batch of a file's first, all-uncached request. At most `max_inflight`
texts are queued or being embedded; a chunk that would exceed that is refused
with :class:`Overloaded` (the server answers 503 + Retry-After) instead of
growing an unbounded queue. A text some other request is already embedding is
awaited, not embedded twice.

Given a `background` embedder, bulk chunks go to it alone, on a thread of
lowered CPU priority (nice +10 on Linux), and the other workers take urgent
work only: on a small CPU machine a file's first request, embedding dozens of
premises, then slows the cached requests of everyone else by little instead of
taking a core from them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from leanpremise.serve.jobs import fail_jobs, hand_out, take_jobs

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
                 max_batch: int = 64, metrics=None, background=None, background_nice: int = 10):
        self.embedders = list(embedder) if isinstance(embedder, (list, tuple)) else [embedder]
        self.embedder = self.embedders[0]
        self.dim = self.embedder.dim
        self.cache = LRUCache(cache_size)
        self.max_inflight = max_inflight
        self.chunk_size = max(1, min(chunk_size, max_inflight))
        self.max_batch = max(max_batch, self.chunk_size)
        self.metrics = metrics
        self.inflight = 0
        self._pending: dict[str, asyncio.Future] = {}
        self._urgent: deque[_Job] = deque()
        self._bulk: deque[_Job] = deque()
        self._wake: asyncio.Condition | None = None
        self._workers: list[asyncio.Task] = []
        self._bulk_busy = 0
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed{i}")
                           for i in range(len(self.embedders))]
        self._roles = ["urgent" if background is not None else "any"] * len(self.embedders)
        if background is not None:
            self.embedders.append(background)
            self._roles.append("bulk")
            self._executors.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-background",
                                                      initializer=_lower_priority, initargs=(background_nice,)))

    async def start(self) -> None:
        self._wake = asyncio.Condition()
        self._workers = [asyncio.create_task(self._run(e, x, role), name=f"embedding-worker-{i}")
                         for i, (e, x, role) in enumerate(zip(self.embedders, self._executors, self._roles))]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            try:
                await worker
            except asyncio.CancelledError:
                pass
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)

    # ---- the request side --------------------------------------------------------------------

    async def embed(self, states: list[str], premises: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(state embeddings, premise embeddings), rows in the order given.

        States are cached like premises: a text embeds the same whatever its role, and Lean sends the
        same goal again whenever it re-elaborates the tactic block below an edit."""
        texts = list(states) + list(premises)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            row = self.cache.get(text)
            if row is None:
                missing.setdefault(text, []).append(i)
            else:
                out[i] = row
        if self.metrics is not None:
            self._count(len(states), len(texts), missing)
        shared = {t: self._pending[t] for t in missing if t in self._pending}
        own = [t for t in missing if t not in shared]
        loop = asyncio.get_running_loop()
        owned = {t: loop.create_future() for t in own}
        for t, fut in owned.items():
            fut.add_done_callback(_consume)
            self._pending[t] = fut
        try:
            urgent = len(own) <= URGENT_MAX_TEXTS
            step = self.chunk_size if urgent else min(self.chunk_size, BULK_CHUNK)
            for lo in range(0, len(own), step):
                chunk = own[lo : lo + step]
                part = await self._submit(chunk, urgent)
                for t, row in zip(chunk, part):
                    out[missing[t]] = row
                    if not owned[t].done():
                        self.cache.put(t, row)
                        owned[t].set_result(row)
                        self._pending.pop(t, None)
        except BaseException as e:
            for t, fut in owned.items():
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else Overloaded())
                if self._pending.get(t) is fut:
                    del self._pending[t]
            raise
        for t, fut in shared.items():
            out[missing[t]] = await fut
        return out[: len(states)], out[len(states) :]

    def _count(self, n_states: int, n_texts: int, missing: dict[str, list[int]]) -> None:
        """Cache hits and misses, states and new premises apart."""
        rows = [i for where in missing.values() for i in where]
        state_misses = sum(1 for i in rows if i < n_states)
        premise_misses = len(rows) - state_misses
        self.metrics.state_cache_hits.inc(n_states - state_misses)
        self.metrics.state_cache_misses.inc(state_misses)
        self.metrics.cache_hits.inc(n_texts - n_states - premise_misses)
        self.metrics.cache_misses.inc(premise_misses)

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
            async with self._wake:
                self._wake.notify_all()  # workers wait for different lanes: wake them all to look
            return await job.future
        finally:
            self.inflight -= len(texts)
            if self.metrics is not None:
                self.metrics.inflight.set(self.inflight)

    # ---- the worker side ---------------------------------------------------------------------

    def _bulk_allowed(self) -> bool:
        """Bulk chunks may keep all workers but one busy, so that a request with only its state to embed
        always finds a worker within one state's time, not one bulk chunk's."""
        return bool(self._bulk) and self._bulk_busy < max(1, len(self.embedders) - 1)

    def _has_work(self, role: str) -> bool:
        if role == "urgent":
            return bool(self._urgent)
        if role == "bulk":
            return bool(self._bulk)
        return bool(self._urgent) or self._bulk_allowed()

    async def _run(self, embedder, executor, role: str = "any") -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._wake:
                await self._wake.wait_for(lambda: self._has_work(role))
                bulk = role == "bulk" or not self._urgent
                jobs = self._take_batch(getattr(embedder, "batches_well", True), bulk)
                self._bulk_busy += bulk
            try:
                await self._embed_jobs(loop, embedder, executor, jobs)
            finally:
                if bulk:
                    async with self._wake:
                        self._bulk_busy -= 1
                        self._wake.notify_all()

    async def _embed_jobs(self, loop, embedder, executor, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # requests cancelled while queued
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        try:
            emb = await loop.run_in_executor(executor, embedder.encode, texts)
        except Exception as e:  # noqa: BLE001 - a backend failure fails these requests, not the worker
            logger.warning("embedding %d texts failed: %s", len(texts), e)
            fail_jobs([j.future for j in jobs], e)
            return
        if self.metrics is not None:
            self.metrics.embedded.inc(len(texts))
            self.metrics.batch_size.observe(len(texts))
        hand_out([j.future for j in jobs], [len(j.texts) for j in jobs], emb)

    def _take_batch(self, batches_well: bool = True, bulk: bool = False) -> list[_Job]:
        """Urgent jobs first (all of them, up to max_batch texts, for an embedder that batches well; else
        one); else bulk chunks, up to BULK_CHUNK texts, so that an urgent job arriving meanwhile waits for
        a short batch only."""
        if not bulk:
            lane, limit = self._urgent, (self.max_batch if batches_well else 0)
        else:
            lane, limit = self._bulk, min(self.chunk_size, BULK_CHUNK)
        return take_jobs(lane, limit, lambda job: len(job.texts))


def _lower_priority(nice: int) -> None:
    """Raise this thread's nice value (Linux schedules threads apart; elsewhere this may do nothing)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as e:
        logger.debug("could not lower the background embedding thread's priority: %s", e)


def _consume(fut: asyncio.Future) -> None:
    """Mark a shared future's exception as retrieved (it is re-raised to whoever awaits it)."""
    if not fut.cancelled():
        fut.exception()
