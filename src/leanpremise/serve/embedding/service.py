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

Given a persistent `store` (serve/embedding_store.py: LMDB on disk, or Redis shared by replicas), the
texts the in-memory cache misses are looked up there, all of a request's at once and on a thread of
their own (a store may block on disk or network), before anything is embedded; what is embedded is
written to it on another thread, after the request has its rows. A store that fails answers misses.

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
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from leanpremise.serve.embedding.cache import EmbeddingCache
from leanpremise.serve.jobs import fail_jobs, hand_out, take_jobs

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """More texts in flight than the configured bound."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future


@dataclass
class _Worker:
    """One embedder on its own thread, and which lane it serves: `urgent` (urgent jobs only, beside a
    background worker), `bulk` (the background worker: bulk jobs only) or `any` (urgent first, then bulk)."""

    embedder: object
    executor: ThreadPoolExecutor
    role: str


class EmbeddingService:
    MAX_PENDING_PUTS = 64
    """Chunks waiting to be written to the persistent store; beyond, a chunk is not stored (a slow store
    must not hold an unbounded backlog of rows in memory)."""

    def __init__(self, embedder, config, metrics=None, background=None, background_nice: int = 10,
                 store=None):
        """`config`: the server's settings (a ServeConfig), read for the cache size, the in-flight bound, chunk
        and batch sizes and the urgent lane's threshold. `store`: a persistent store bound to this model
        (a BoundEmbeddingStore) or None; the service closes it when it stops."""
        embedders = list(embedder) if isinstance(embedder, (list, tuple)) else [embedder]
        self.embedder = embedders[0]
        self.dim = self.embedder.dim
        self.cache = EmbeddingCache(config.lru_cache_size, config.cache_max_bytes)
        self.max_inflight = config.embed_service_max_concurrent_inputs
        self.chunk_size = max(1, min(config.max_client_batch_size, self.max_inflight))
        self.max_batch = max(config.embed_batch_size, self.chunk_size)
        self.urgent_max_texts = config.urgent_max_texts
        self.bulk_chunk = min(self.chunk_size, config.bulk_chunk)
        self.metrics = metrics
        self.inflight = 0
        self._pending: dict[bytes, asyncio.Future] = {}
        """Texts being embedded, by cache key: a request wanting one of them awaits it."""
        self._urgent: deque[_Job] = deque()
        self._bulk: deque[_Job] = deque()
        self._wake: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task] = []
        self._bulk_busy = 0
        role = "urgent" if background is not None else "any"
        self.workers = [_Worker(e, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed{i}"), role)
                        for i, e in enumerate(embedders)]
        if background is not None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-background",
                                          initializer=_lower_priority, initargs=(background_nice,))
            self.workers.append(_Worker(background, executor, "bulk"))
        self.embedders = [w.embedder for w in self.workers]
        self.store = store
        if store is not None:
            self._store_reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="embedding-store-read")
            self._store_writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-store-write")
            self._put_slots = threading.BoundedSemaphore(self.MAX_PENDING_PUTS)

    async def start(self) -> None:
        self._wake = asyncio.Condition()
        self._tasks = [asyncio.create_task(self._run(w), name=f"embedding-worker-{i}")
                       for i, w in enumerate(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        for worker in self.workers:
            worker.executor.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self._store_reads.shutdown(wait=False, cancel_futures=True)
            # The writes queued so far are flushed (a restart should find them), then the store closes.
            await asyncio.get_running_loop().run_in_executor(None, self._store_writes.shutdown, True)
            self.store.store.close()

    # ---- the request side --------------------------------------------------------------------

    async def embed(self, states: list[str], premises: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(state embeddings, premise embeddings), rows in the order given.

        States are cached like premises: a text embeds the same whatever its role, and Lean sends the
        same goal again whenever it re-elaborates the tactic block below an edit."""
        texts = list(states) + list(premises)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = self._fill_from_cache(texts, out)
        if self.metrics is not None:
            self._count(len(states), len(texts), missing)
        if self.store is not None and missing:
            await self._fill_from_store(missing, out)
        shared = {key: self._pending[key] for key in missing if key in self._pending}
        await self._embed_own([key for key in missing if key not in shared], missing, out)
        for key, fut in shared.items():
            out[missing[key][1]] = await fut
        return out[: len(states)], out[len(states) :]

    def _fill_from_cache(self, texts: list[str], out: np.ndarray) -> dict[bytes, tuple[str, list[int]]]:
        """Copy cached rows into `out`; the rest: cache key -> (its text, its rows in `out`)."""
        missing: dict[bytes, tuple[str, list[int]]] = {}
        for i, text in enumerate(texts):
            key = self.cache.key(text)
            row = self.cache.get(key)
            if row is None:
                missing.setdefault(key, (text, []))[1].append(i)
            else:
                out[i] = row
        return missing

    async def _fill_from_store(self, missing: dict[bytes, tuple[str, list[int]]], out: np.ndarray) -> None:
        """Copy the rows the persistent store has into `out` and the in-memory cache, and drop them from
        `missing`; texts another request is embedding are awaited instead, not looked up."""
        keys = [key for key in missing if key not in self._pending]
        if not keys:
            return
        texts = [missing[key][0] for key in keys]
        hits = await asyncio.get_running_loop().run_in_executor(self._store_reads, self.store.get_many, texts)
        for key, text in zip(keys, texts):
            row = hits.get(text)
            if row is not None:
                out[missing.pop(key)[1]] = row
                self.cache.put(key, row)
        if self.metrics is not None:
            self.metrics.store_hits.inc(len(hits))
            self.metrics.store_misses.inc(len(keys) - len(hits))

    def _store_later(self, texts: list[str], rows: np.ndarray) -> None:
        """Write freshly embedded rows to the persistent store on its writer thread, unless too many writes
        are waiting already."""
        if self.store is None or not texts:
            return
        if not self._put_slots.acquire(blocking=False):
            logger.debug("persistent embedding store busy: %d embeddings not stored", len(texts))
            return
        try:
            self._store_writes.submit(self._store_now, texts, rows)
        except RuntimeError:  # the service is stopping
            self._put_slots.release()

    def _store_now(self, texts: list[str], rows: np.ndarray) -> None:
        try:
            written = self.store.put_many(texts, rows)
            if self.metrics is not None:
                self.metrics.store_written.inc(written)
        finally:
            self._put_slots.release()

    async def _embed_own(self, own: list[bytes], missing: dict[bytes, tuple[str, list[int]]],
                         out: np.ndarray) -> None:
        """Embed the texts (by key) no other request is embedding, in chunks (small requests in the urgent
        lane); other requests wanting one of them meanwhile await its future instead of embedding it again."""
        loop = asyncio.get_running_loop()
        owned = {key: loop.create_future() for key in own}
        for key, fut in owned.items():
            fut.add_done_callback(_consume)
            self._pending[key] = fut
        try:
            urgent = len(own) <= self.urgent_max_texts
            step = self.chunk_size if urgent else self.bulk_chunk
            for lo in range(0, len(own), step):
                chunk = own[lo : lo + step]
                texts = [missing[key][0] for key in chunk]
                part = await self._submit(texts, urgent)
                self._store_later(texts, part)
                for key, row in zip(chunk, part):
                    out[missing[key][1]] = row
                    if not owned[key].done():
                        self.cache.put(key, row)
                        owned[key].set_result(row)
                        self._pending.pop(key, None)
            if self.metrics is not None:
                self.metrics.cache_bytes.set(self.cache.nbytes)
        except BaseException as e:
            for key, fut in owned.items():
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else Overloaded())
                if self._pending.get(key) is fut:
                    del self._pending[key]
            raise

    def _count(self, n_states: int, n_texts: int, missing: dict[bytes, tuple[str, list[int]]]) -> None:
        """Cache hits and misses, states and new premises apart."""
        rows = [i for _, where in missing.values() for i in where]
        state_misses = sum(1 for i in rows if i < n_states)
        premise_misses = len(rows) - state_misses
        self.metrics.state_cache_hits.inc(n_states - state_misses)
        self.metrics.state_cache_misses.inc(state_misses)
        self.metrics.cache_hits.inc(n_texts - n_states - premise_misses)
        self.metrics.cache_misses.inc(premise_misses)

    async def _submit(self, texts: list[str], urgent: bool = True) -> np.ndarray:
        """Queue one chunk in its lane and wait for its rows; Overloaded if it would exceed the bound."""
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

    # ---- the worker side: each role's pick, then one loop for all --------------------------------

    def _pick_urgent(self, worker: _Worker) -> tuple[list[_Job], bool] | None:
        """Urgent jobs: all queued ones up to max_batch texts for an embedder that batches well, else one."""
        if not self._urgent:
            return None
        limit = self.max_batch if getattr(worker.embedder, "batches_well", True) else 0
        return take_jobs(self._urgent, limit, _size), False

    def _pick_bulk(self, worker: _Worker) -> tuple[list[_Job], bool] | None:
        """Bulk chunks up to `bulk_chunk` texts, so that an urgent job arriving meanwhile waits for a short
        batch only."""
        if not self._bulk:
            return None
        return take_jobs(self._bulk, self.bulk_chunk, _size), True

    def _pick_any(self, worker: _Worker) -> tuple[list[_Job], bool] | None:
        """Urgent first; bulk only while it keeps all workers but one busy, so that a request with only its
        state to embed always finds a worker within one state's time, not one bulk chunk's."""
        if self._urgent:
            return self._pick_urgent(worker)
        if self._bulk_busy < max(1, len(self.workers) - 1):
            return self._pick_bulk(worker)
        return None

    async def _run(self, worker: _Worker) -> None:
        """Wait until this worker's role finds work, take it, embed it; forever."""
        pick = {"urgent": self._pick_urgent, "bulk": self._pick_bulk, "any": self._pick_any}[worker.role]
        loop = asyncio.get_running_loop()
        while True:
            async with self._wake:
                jobs, bulk = await self._wake.wait_for(lambda: pick(worker))
                self._bulk_busy += bulk
            try:
                await self._embed_jobs(loop, worker, jobs)
            finally:
                if bulk:
                    async with self._wake:
                        self._bulk_busy -= 1
                        self._wake.notify_all()

    async def _embed_jobs(self, loop, worker: _Worker, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]  # requests cancelled while queued
        if not jobs:
            return
        texts = [t for j in jobs for t in j.texts]
        try:
            emb = await loop.run_in_executor(worker.executor, worker.embedder.encode, texts)
        except Exception as e:  # noqa: BLE001 - a backend failure fails these requests, not the worker
            logger.warning("embedding %d texts failed: %s", len(texts), e)
            fail_jobs([j.future for j in jobs], e)
            return
        if self.metrics is not None:
            self.metrics.embedded.inc(len(texts))
            self.metrics.batch_size.observe(len(texts))
        hand_out([j.future for j in jobs], [len(j.texts) for j in jobs], emb)


def _size(job: _Job) -> int:
    return len(job.texts)


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
