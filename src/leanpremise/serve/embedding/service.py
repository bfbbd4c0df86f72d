"""Embedding a request's texts: the in-memory LRU cache, the persistent store, and texts other requests are
already embedding; what is left goes to the model's lanes (serve/embedding/lanes.py), or, for an embedder
cheaper than a hand-over (a static model's numpy encoder), is embedded by the request itself (`inline`).

A text some other request is already embedding is awaited, not embedded twice. Given a persistent `store`
(serve/embedding/store/: LMDB on disk, or Redis shared by replicas), the texts the in-memory cache
misses are looked up there, all of a request's at once and on a thread of their own (a store may block on
disk or network), before anything is embedded; what is embedded is written to it on another thread, after
the request has its rows. A store that fails answers misses.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import numpy as np

from leanpremise.serve.embedding.cache import EmbeddingCache
from leanpremise.serve.embedding.lanes import EmbeddingLanes, Overloaded, lower_priority
from leanpremise.serve.embedding.store import EmbeddingStore
from leanpremise.serve.prometheus import Metrics

logger = logging.getLogger(__name__)

Missing = dict[bytes, tuple[str, list[int]]]
"""A request's texts not found yet: cache key -> (its text, its rows in the request's output)."""


class EmbeddingService:
    """One model's embeddings for requests: what is cached or stored is copied, the rest embedded once
    by `lanes`, the embedding workers this service starts and stops."""

    MAX_PENDING_PUTS = 64
    """Chunks waiting to be written to the persistent store; beyond, a chunk is not stored (a slow store
    must not hold an unbounded backlog of rows in memory)."""

    def __init__(self, embedder, config, metrics: Metrics | None = None, background=None, background_nice: int = 10,
                 store: EmbeddingStore | None = None, store_key: str = ""):
        """`embedder`, `background`, `background_nice`: the lanes' (see EmbeddingLanes); `config`: the
        server's settings (a ServeConfig), read for the cache size and by the lanes; `metrics`: the server's
        Metrics (a set of its own when not given); `store`: the persistent store (the server's, which it
        closes) and `store_key`, this model's key in it, or None."""
        self.metrics = metrics if metrics is not None else Metrics()
        self.lanes = EmbeddingLanes(embedder, config, self.metrics, background, background_nice)
        self.dim = self.lanes.dim
        self.inline = getattr(self.lanes.embedder, "inline", False) is True
        """Whether a request's texts are embedded by the request itself, on the event loop, rather than
        handed to the lanes' workers: for an embedder whose text costs less than the hand-over (the static
        model's numpy encoder; docs/decisions.md has the measurement). Its chunks are then embedded one
        after the other, other requests getting the loop between two chunks."""
        self.inline_chunk = config.inline_chunk
        """Texts of one inline chunk: the event loop's longest hold for one request (a chunk's fixed setup,
        tokenizer call and sparse product, is paid once per chunk, so chunks are larger than the lanes')."""
        self.cache = EmbeddingCache(config.lru_cache_size, config.cache_max_bytes)
        self._pending: dict[bytes, asyncio.Future] = {}
        """Texts being embedded, by cache key: a request wanting one of them awaits it."""
        self.store, self.store_key = store, store_key
        if store is not None:
            self._store_reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="embedding-store-read")
            # writing is background work, like bulk embedding: at the same lowered priority, so that a burst's
            # rows being stored do not take the CPU from the goals being answered (issue 22)
            self._store_writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedding-store-write",
                                                    initializer=lower_priority, initargs=(background_nice,))
            self._put_slots = threading.BoundedSemaphore(self.MAX_PENDING_PUTS)

    async def start(self) -> None:
        await self.lanes.start()

    async def stop(self) -> None:
        """Stop the lanes; the store writes queued so far are flushed (a restart should find them)."""
        await self.lanes.stop()
        if self.store is not None:
            self._store_reads.shutdown(wait=False, cancel_futures=True)
            await asyncio.get_running_loop().run_in_executor(None, self._store_writes.shutdown, True)

    async def embed(self, states: list[str], premises: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(state embeddings, premise embeddings), rows in the order given.

        States are cached like premises: a text embeds the same whatever its role, and Lean sends the
        same goal again whenever it re-elaborates the tactic block below an edit."""
        texts = list(states) + list(premises)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = self._fill_from_cache(texts, out)
        self._count(len(states), len(texts), missing)
        if self.store is not None and missing:
            await self._fill_from_store(missing, out)
        shared = {key: self._pending[key] for key in missing if key in self._pending}
        await self._embed_own([key for key in missing if key not in shared], missing, out, len(states))
        for key, fut in shared.items():
            out[missing[key][1]] = await fut
        return out[: len(states)], out[len(states) :]

    def _fill_from_cache(self, texts: list[str], out: np.ndarray) -> Missing:
        """Copy cached rows into `out`; returns the rest."""
        missing: Missing = {}
        keys = [self.cache.key(text) for text in texts]
        for i, (text, key, row) in enumerate(zip(texts, keys, self.cache.get_many(keys))):
            if row is None:
                missing.setdefault(key, (text, []))[1].append(i)
            else:
                out[i] = row
        return missing

    async def _fill_from_store(self, missing: Missing, out: np.ndarray) -> None:
        """Copy the rows the persistent store has into `out` and the in-memory cache, and drop them from
        `missing`; texts another request is embedding are awaited instead, not looked up."""
        keys = [key for key in missing if key not in self._pending]
        if not keys:
            return
        texts = [missing[key][0] for key in keys]
        hits = await asyncio.get_running_loop().run_in_executor(
            self._store_reads, self.store.get_many, self.store_key, texts, self.dim)
        for key, text in zip(keys, texts):
            row = hits.get(text)
            if row is not None:
                out[missing.pop(key)[1]] = row
                self.cache.put(key, row)
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
            self.metrics.store_written.inc(self.store.put_many(self.store_key, texts, rows))
        finally:
            self._put_slots.release()

    async def _embed_own(self, own: list[bytes], missing: Missing, out: np.ndarray, n_states: int) -> None:
        """Embed the texts (by key) no other request is embedding, in the lanes' chunks; other requests
        wanting one of them meanwhile await its future instead of embedding it again. The first goals (rows
        below `n_states`, up to the urgent lane's threshold) go first and to the urgent lane whatever else
        the request brings (with its new premises in one call when they are few enough for the urgent
        lane); its other goals and many new premises follow as bulk, one chunk at a time, so one request
        holds at most one bulk chunk of the bound, each chunk saying how many of its texts are left (the
        bulk lane takes fewest left first). A request of 64 fresh goals thus takes the urgent lane for a
        few goals only, and the bulk bound for the rest (issue 28)."""
        goals = [key for key in own if missing[key][1][0] < n_states]
        rest = [key for key in own if missing[key][1][0] >= n_states]
        first = self.lanes.urgent_max_texts
        goals, rest = goals[:first], goals[first:] + rest
        urgent, step = (True, self.inline_chunk) if self.inline else self.lanes.chunking(len(rest))
        if rest and not urgent:  # refused before any work for it (its goals included) when it would be
            self.lanes.refuse_early(len(goals) + len(rest), min(step, len(rest)))
        loop = asyncio.get_running_loop()
        owned = {key: loop.create_future() for key in own}
        self._pending.update(owned)
        try:
            size = self.inline_chunk if self.inline else self.lanes.chunk_size
            if urgent:  # a few new premises: with the goals, in one urgent call (goals first)
                both = goals + rest
                chunks = [(both[lo : lo + size], True) for lo in range(0, len(both), size)]
            else:
                chunks = [(goals[lo : lo + size], True) for lo in range(0, len(goals), size)]
                chunks += [(rest[lo : lo + step], False) for lo in range(0, len(rest), step)]
            left = len(goals) + len(rest)
            for i, (chunk, lane) in enumerate(chunks):
                texts = [missing[key][0] for key in chunk]
                if self.inline:
                    if i:
                        await asyncio.sleep(0)  # other requests' goals between two of this one's chunks
                    part = self._embed_here(texts)
                else:
                    part = await self.lanes.submit(texts, lane, left)
                left -= len(chunk)
                self._store_later(texts, part)
                _place(out, [missing[key][1] for key in chunk], part)
                for key, row in zip(chunk, part):
                    if not owned[key].done():
                        self.cache.put(key, row)
                        owned[key].set_result(row)
                        self._pending.pop(key, None)
            self.metrics.cache_bytes.set(self.cache.nbytes)
        except BaseException as e:
            for key, fut in owned.items():
                if not fut.done():
                    fut.set_exception(e if isinstance(e, Exception) else Overloaded())
                    _consume(fut)  # re-raised to whoever awaits it; not logged as never retrieved
                if self._pending.get(key) is fut:
                    del self._pending[key]
            raise

    def _embed_here(self, texts: list[str]) -> np.ndarray:
        """Embed a chunk in this thread (see `inline`), counted as the workers count theirs."""
        rows = self.lanes.embedder.encode(texts)
        self.metrics.embedded.inc(len(texts))
        self.metrics.batch_size.observe(len(texts))
        return rows

    def _count(self, n_states: int, n_texts: int, missing: Missing) -> None:
        """Cache hits and misses, states and new premises apart."""
        rows = [i for _, where in missing.values() for i in where]
        state_misses = sum(1 for i in rows if i < n_states)
        premise_misses = len(rows) - state_misses
        self.metrics.state_cache_hits.inc(n_states - state_misses)
        self.metrics.state_cache_misses.inc(state_misses)
        self.metrics.cache_hits.inc(n_texts - n_states - premise_misses)
        self.metrics.cache_misses.inc(premise_misses)


def _place(out: np.ndarray, where: list[list[int]], rows: np.ndarray) -> None:
    """out[i] = rows[j] for every position i in where[j], in one array assignment (a chunk's texts)."""
    counts = np.fromiter(map(len, where), dtype=np.int64, count=len(where))
    at = np.fromiter(chain.from_iterable(where), dtype=np.int64, count=int(counts.sum()))
    out[at] = rows[np.repeat(np.arange(len(where)), counts)]


def _consume(fut: asyncio.Future) -> None:
    """Mark a shared future's exception as retrieved (it is re-raised to whoever awaits it)."""
    if not fut.cancelled():
        fut.exception()
