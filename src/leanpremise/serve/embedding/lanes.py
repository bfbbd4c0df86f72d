"""The embedding workers of one model: an urgent and a bulk lane, the workers that drain them, and a bound.

Worker threads (one per embedder given, each with its own tokenizer, since tokenizers are not safe to
share between threads) run the embedder on what is queued. An embedder that batches well (a GPU, a TEI
service) takes every queued urgent chunk at once, up to `max_batch` texts; a CPU one takes one request's
texts at a time, since padding a short state to a long one costs more than batching saves there, and the
workers run side by side on the cores instead. Requests with only a few texts to embed (a state and a new
premise or two: the usual, cached request) go to the urgent lane, which the workers always drain first,
so they never wait behind more than one batch of a file's first, all-uncached request. The urgent lane is
served round robin across clients (the client a request comes from is `CLIENT`, set by the request guard):
a worker takes the oldest urgent chunk of the next client in turn, so one client's many chunks wait behind
each other, never in front of another client's one (issue 28). At most
`max_inflight` texts of bulk chunks are queued or being embedded; past that, the request with the most
texts left is refused with :class:`Overloaded` (the server answers 503 + Retry-After) instead of growing
an unbounded queue.

The bulk lane is fair between clients too, by work (characters embedded): its next chunk comes from the
client with chunks queued that has had the fewest characters taken; a client arriving starts level with
the client taken last, or where it left off if that is further (a request queues its chunks one after
another, so between two of them its client has nothing queued). So one client's many
chunks (a burst of large requests, or many long goals) stand behind another client's chunks, never in
front of them, and a client sending short premises gets as many characters embedded as one sending long
goals (issue 28). Within a client, chunks are taken fewest-texts-left first, with ageing: a
chunk's key is the texts its request still has to embed plus `bulk_chunk` for every bulk chunk submitted
before it, plus the bulk texts its client already has queued or being embedded. A file's first request of
a few dozen new premises is then not queued behind a burst of requests of thousands (issue 22), and a large
request waits behind at most about its own size in later, smaller requests' texts, never for ever. The key
also decides which queued chunks a full bound turns away (the largest keys).

Given a `background` embedder, bulk chunks go to it alone, on a thread of lowered CPU priority (nice +10
on Linux), and the other workers take urgent work only: on a small CPU machine a file's first request,
embedding dozens of premises, then slows the cached requests of everyone else by little instead of taking
a core from them.

What a request embeds, and what it finds cached, is the embedding service's (serve/embedding/service.py):
it asks `chunking` how to cut its texts and `submit`s each chunk.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from leanpremise.serve.jobs import CLIENT, fail_jobs, hand_out, queue_by_client, take_round_robin

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """More texts in flight than the configured bound."""


@dataclass
class _Job:
    texts: list[str]
    future: asyncio.Future
    bulk: bool = False
    counted: bool = True
    """Its texts still count in flight (False once done, or once it was turned away from the bulk lane)."""
    client: str = ""


@dataclass
class _Worker:
    """One embedder on its own thread, and which lane it serves: `urgent` (urgent jobs only, beside a
    background worker), `bulk` (the background worker: bulk jobs only) or `any` (urgent first, then bulk)."""

    embedder: object
    executor: ThreadPoolExecutor
    role: str


class EmbeddingLanes:
    """The lanes and workers of one model's embedders, and the bound on texts in flight."""

    def __init__(self, embedder, config, metrics, background=None, background_nice: int = 10):
        """`embedder`: one embedder or a list (one worker each); `config`: the server's settings (a
        ServeConfig), read for the in-flight bound, chunk and batch sizes and the urgent lane's threshold;
        `metrics`: the server's Metrics."""
        embedders = list(embedder) if isinstance(embedder, (list, tuple)) else [embedder]
        self.embedder = embedders[0]
        self.dim = self.embedder.dim
        self.metrics = metrics
        self.max_inflight = config.embed_service_max_concurrent_inputs
        self.chunk_size = max(1, min(config.max_client_batch_size, self.max_inflight))
        self.max_batch = max(config.embed_batch_size, self.chunk_size)
        self.urgent_max_texts = config.urgent_max_texts
        self.bulk_chunk = min(self.chunk_size, config.bulk_chunk)
        self.inflight = 0
        self.bulk_inflight = 0
        """Texts of bulk chunks queued or being embedded: what the bound holds."""
        self._urgent: OrderedDict[str, deque[_Job]] = OrderedDict()
        """Urgent jobs by client, clients in the order of their turn (the next first)."""
        self._bulk: dict[str, list[tuple[int, int, _Job]]] = {}
        """Queued bulk chunks by client, each a heap of (key, order, job): see the module docstring."""
        self._bulk_order = 0
        """Bulk chunks submitted so far: the ageing term of the next chunk's key."""
        self._client_bulk: dict[str, int] = {}
        """Bulk texts queued or being embedded, by client: added to a chunk's key, so that one client's many
        requests (a burst, or many goals) queue behind another client's one (issue 28)."""
        self._bulk_served: dict[str, int] = {}
        """Characters taken so far by each client, counted from the level of the client taken last when it
        arrived: the bulk lane serves the lowest first. Forgotten once the level passes it with nothing of
        the client's queued, and all of it once no bulk texts are in flight, so it stays small."""
        self._bulk_level = 0
        """The count of the client taken last, before its chunk: where a client arriving starts."""
        self._wake: asyncio.Condition | None = None
        self._tasks: list[asyncio.Task] = []
        self._bulk_busy = 0
        role = "urgent" if background is not None else "any"
        self.workers = [_Worker(e, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed{i}"), role)
                        for i, e in enumerate(embedders)]
        if background is not None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-background",
                                          initializer=lower_priority, initargs=(background_nice,))
            self.workers.append(_Worker(background, executor, "bulk"))
        self.embedders = [w.embedder for w in self.workers]

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

    # ---- what a request calls ------------------------------------------------------------------

    def chunking(self, n_texts: int) -> tuple[bool, int]:
        """(urgent lane, chunk size) for a request with `n_texts` texts to embed: a few go to the urgent
        lane in chunks of `chunk_size`, more to the bulk lane in chunks of `bulk_chunk`."""
        urgent = n_texts <= self.urgent_max_texts
        return urgent, self.chunk_size if urgent else self.bulk_chunk

    async def submit(self, texts: list[str], urgent: bool = True, left: int | None = None) -> np.ndarray:
        """Queue one chunk in its lane and wait for its rows. The bound holds the bulk lane only: urgent
        chunks (goals, a few new premises) are bounded by the requests admitted, so a burst of other
        requests' new premises never refuses a goal. `left`: the texts the request still has to embed, this
        chunk's included (default: this chunk's), which orders the bulk lane. A bulk chunk that would exceed
        the bound turns away the queued chunks that come after it in that order (their requests get
        Overloaded: the ones with the most left), else it is refused itself (Overloaded): so a burst of
        large requests refuses its own requests, not a smaller one that arrives while the bound is full."""
        job = _Job(texts, asyncio.get_running_loop().create_future(), bulk=not urgent, client=CLIENT.get())
        if urgent:
            queue_by_client(self._urgent, job)
        else:
            order = self._bulk_order
            key = self._key(len(texts) if left is None else left) + self._client_bulk.get(job.client, 0)
            self._make_room(key, len(texts))
            self._bulk_order += 1
            heapq.heappush(self._bulk.setdefault(job.client, []), (key, order, job))
            self._bulk_served[job.client] = max(self._bulk_level, self._bulk_served.get(job.client, 0))
            self.bulk_inflight += len(texts)
            self._client_bulk[job.client] = self._client_bulk.get(job.client, 0) + len(texts)
        self.inflight += len(texts)
        self.metrics.inflight.set(self.inflight)
        try:
            async with self._wake:
                self._wake.notify_all()  # workers wait for different lanes: wake them all to look
            return await job.future
        finally:
            self._uncount(job)

    def _key(self, left: int) -> int:
        """The bulk-lane key of a chunk submitted now by a request with `left` texts to embed."""
        return left + self.bulk_chunk * self._bulk_order

    def refuse_early(self, left: int, size: int) -> None:
        """Overloaded now if a first bulk chunk of `size` texts, from a request with `left` texts to embed,
        would be refused: the service asks before it embeds the request's goals or registers its texts, so
        that a refused request costs little (a burst retrying at once would otherwise have its goals
        embedded, at the goals' priority, only to be refused)."""
        if self._victims(self._key(left) + self._client_bulk.get(CLIENT.get(), 0), size) is None:
            self._refuse()

    def _make_room(self, key: int, size: int) -> None:
        """Room in the bulk bound for a chunk of `size` texts and `key`, by turning away the queued chunks
        `_victims` names; Overloaded if there is not enough room even so."""
        victims = self._victims(key, size)
        if victims is None:
            self._refuse()
        for victim in victims:
            job = victim[2]
            queue = self._bulk[job.client]
            queue.remove(victim)
            if queue:
                heapq.heapify(queue)
            else:
                del self._bulk[job.client]
            self._uncount(job)
            self.metrics.overloaded.inc()
            if not job.future.done():
                job.future.set_exception(Overloaded(
                    f"{self.max_inflight} new premises being embedded, of requests with fewer left than this one"))

    def _victims(self, key: int, size: int) -> list | None:
        """The queued bulk entries a chunk of `size` texts and `key` would turn away to fit the bound, largest
        key first, only ones of larger keys; None when even all of those leave too little room."""
        room, victims = self.max_inflight - self.bulk_inflight, []
        queued = [entry for queue in self._bulk.values() for entry in queue]
        for entry in sorted(queued, key=lambda e: e[:2], reverse=True):
            if room >= size or entry[0] <= key:
                break
            victims.append(entry)
            room += len(entry[2].texts) if entry[2].counted else 0
        return victims if room >= size else None

    def _refuse(self) -> NoReturn:
        """Overloaded for the chunk asking, counted in /metrics."""
        self.metrics.overloaded.inc()
        raise Overloaded(f"{self.bulk_inflight} new premises being embedded; limit {self.max_inflight}")

    def _uncount(self, job: _Job) -> None:
        """The job's texts leave the in-flight counts (once, whether it was embedded or turned away)."""
        if job.counted:
            job.counted = False
            self.inflight -= len(job.texts)
            self.bulk_inflight -= len(job.texts) if job.bulk else 0
            if job.bulk:
                left = self._client_bulk.get(job.client, 0) - len(job.texts)
                if left > 0:
                    self._client_bulk[job.client] = left
                else:
                    self._client_bulk.pop(job.client, None)
                    if not self._client_bulk:
                        self._bulk_served.clear()
            self.metrics.inflight.set(self.inflight)

    # ---- the workers: each role's pick, then one loop for all ------------------------------------

    def _pick_urgent(self, worker: _Worker) -> tuple[list[_Job], bool] | None:
        """Urgent jobs, one per client in turn (round robin): up to max_batch texts for an embedder that
        batches well, else one job."""
        if not self._urgent:
            return None
        limit = self.max_batch if getattr(worker.embedder, "batches_well", True) else 0
        jobs = take_round_robin(self._urgent, limit, _size)
        return (jobs, False) if jobs else None

    def _pick_bulk(self, worker: _Worker) -> tuple[list[_Job], bool] | None:
        """Bulk chunks up to `bulk_chunk` texts (so that an urgent job arriving meanwhile waits for a short
        batch only), each the smallest-key chunk of the client with the fewest characters taken (see the
        module docstring); chunks of requests that went away are dropped."""
        jobs, n = [], 0
        level = lambda c: self._bulk_served.get(c, self._bulk_level)
        while self._bulk:
            client = min(self._bulk, key=lambda c: (level(c), self._bulk[c][0][:2]))
            queue = self._bulk[client]
            if jobs and n + len(queue[0][2].texts) > self.bulk_chunk:
                break
            job = heapq.heappop(queue)[2]
            if not queue:
                del self._bulk[client]
            if job.future.done():
                continue
            jobs.append(job)
            n += len(job.texts)
            self._bulk_level = level(client)
            self._bulk_served[client] = self._bulk_level + sum(map(len, job.texts))
            for gone in [c for c, n in self._bulk_served.items() if n <= self._bulk_level and c not in self._bulk]:
                del self._bulk_served[gone]  # it would start at the level anyway
        return (jobs, True) if jobs else None

    def queued_bulk(self) -> int:
        """Bulk chunks queued (not yet taken by a worker), all clients together."""
        return sum(len(queue) for queue in self._bulk.values())

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
            if bulk:  # one turn of the loop: the requests just served queue their next chunk before the next
                await asyncio.sleep(0)  # pick, so that the order by texts left sees them

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
        self.metrics.embedded.inc(len(texts))
        self.metrics.batch_size.observe(len(texts))
        hand_out([j.future for j in jobs], [len(j.texts) for j in jobs], emb)


def _size(job: _Job) -> int:
    return len(job.texts)


def lower_priority(nice: int) -> None:
    """Raise this thread's nice value (Linux schedules threads apart; elsewhere this may do nothing)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except (AttributeError, OSError) as e:
        logger.debug("could not lower a background thread's priority: %s", e)
