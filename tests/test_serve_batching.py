"""Work shared between concurrent requests: searches taken together by one worker, embedding workers side by
side with one kept free of bulk work, and states cached like new premises."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from serve_helpers import service_config


@pytest.fixture(scope="module")
def corpus(sample_dataset):
    return sample_dataset.corpus


def _index(corpus, dtype="float32", dim=16, seed=0):
    from leanpremise.serve.search.index import PremiseIndex

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((len(corpus), dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return PremiseIndex(corpus, emb, dtype), emb


def _reference(emb, query, mask, k):
    allowed = np.ones(len(emb), bool) if mask is None else mask
    scores = emb @ query
    return np.flatnonzero(allowed)[np.argsort(-scores[allowed], kind="stable")[:k]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_search_many_over_mixed_candidates_equals_each_query_alone(corpus, dtype):
    idx, emb = _index(corpus, dtype)
    rng = np.random.default_rng(1)
    mods = rng.permutation(len(corpus.modules))
    cands = [idx.import_mask(mods[:30].tolist(), None), idx.import_mask(mods[20:60].tolist(), None),
             idx.import_mask(None, None), idx.import_mask(mods[:2].tolist(), [corpus.names[3]]),
             idx.import_mask([], [])]
    cands.insert(2, cands[0])  # the same candidates object twice (one request's several states)
    ks = [10, 25, 5, 40, 7, 3]
    queries = rng.standard_normal((len(cands), emb.shape[1])).astype(np.float32)
    results = idx.search_many(queries, cands, ks)
    tol = 1e-5 if dtype == "float32" else 2e-2
    for q, c, k, (scores, ids) in zip(queries, cands, ks, results):
        expected = _reference(emb, q, c.mask, k)
        assert len(ids) == min(k, c.count)
        if c.mask is not None:
            assert c.mask[ids].all()
        np.testing.assert_allclose(scores, emb[expected] @ q, atol=tol)
        if dtype == "float32":
            np.testing.assert_array_equal(ids, expected)
    assert len(results[-1][1]) == 0  # no candidates at all


def test_concurrent_searches_are_taken_together_and_each_gets_its_own_result(corpus):
    from leanpremise.serve.search.batcher import SearchBatcher

    idx, emb = _index(corpus)
    passes: list[int] = []
    original = idx.search_many
    running, release = threading.Event(), threading.Event()

    def held_search_many(queries, cands, ks):
        passes.append(len(queries))
        running.set()
        assert release.wait(30)  # held until the other requests have queued behind this call
        return original(queries, cands, ks)

    idx.search_many = held_search_many
    rng = np.random.default_rng(2)
    mods = rng.permutation(len(corpus.modules))
    requests = [(rng.standard_normal((n, emb.shape[1])).astype(np.float32),
                 idx.import_mask(mods[i * 10:(i + 1) * 10 + 25].tolist(), None), 8 + i) for i, n in
                enumerate([1, 2, 1, 1, 3])]

    async def scenario():
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            batcher = SearchBatcher(idx, pool, max_queries=16)
            await batcher.start()
            try:
                first = asyncio.create_task(batcher.search(*requests[0]))
                assert await asyncio.to_thread(running.wait, 30)  # the first call is running
                rest = [asyncio.create_task(batcher.search(q, c, k)) for q, c, k in requests[1:]]
                while sum(map(len, batcher._queue.values())) < len(rest):  # each queues its search on its first step
                    await asyncio.sleep(0)
                release.set()
                return [await first, *await asyncio.gather(*rest)]
            finally:
                await batcher.stop()

    results = asyncio.run(scenario())
    assert passes[0] == 1 and len(passes) == 2 and passes[1] == 7  # the first alone, the rest together
    for (queries, cand, k), (scores, ids) in zip(requests, results):
        assert len(ids) == len(queries)
        for q, s, i in zip(queries, scores, ids):
            np.testing.assert_array_equal(i, _reference(emb, q, cand.mask, k))
            np.testing.assert_allclose(s, emb[i] @ q, atol=1e-5)


def test_candidates_are_scored_by_the_search_worker_thread_as_their_rows_dot_the_goal(corpus):
    """A reranker's candidate scores (indexed and new premises in one id space) are a job of the search
    worker: computed in its thread, never in the caller's, equal to the rows' dot products."""
    from leanpremise.serve.search.batcher import SearchBatcher

    idx, emb = _index(corpus)
    threads: list[str] = []
    original = idx.score

    def recorded_score(queries, ids, new_rows):
        threads.append(threading.current_thread().name)
        return original(queries, ids, new_rows)

    idx.score = recorded_score
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((2, emb.shape[1])).astype(np.float32)
    new_rows = rng.standard_normal((3, emb.shape[1])).astype(np.float32)
    n = len(corpus)
    ids = [np.array([5, n + 2, 0, n]), np.array([n - 1, n + 1])]

    async def scenario():
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="search") as pool:
            batcher = SearchBatcher(idx, pool, max_queries=16)
            await batcher.start()
            try:
                return await batcher.score(queries, ids, new_rows)
            finally:
                await batcher.stop()

    got = asyncio.run(scenario())
    assert len(threads) == 1 and threads[0].startswith("search")
    rows = np.concatenate([emb, new_rows])
    for q, c, s in zip(queries, ids, got):
        np.testing.assert_allclose(s, rows[c] @ q, rtol=1e-6)


class SleepyEmbedder:
    """A CPU-like embedder: one request's texts per call; records what ran on which thread, and how many
    calls of its kind ran at once."""

    dim = 4
    name = "sleepy"
    batches_well = False

    def __init__(self, log: list, per_text: float = 0.0):
        self.log, self.per_text = log, per_text

    def encode(self, texts):
        time.sleep(self.per_text * len(texts))
        self.log.append((threading.current_thread().name, list(texts)))
        return _rows(texts)


def _rows(texts):
    out = np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class GatedEmbedder:
    """Calls whose first text is a state meet at a barrier (so two only return if they run at once); bulk
    calls (premises) wait for `gate`, and count how many of them run at once."""

    dim = 4
    name = "gated"
    batches_well = False

    def __init__(self, log: list, meet: threading.Barrier, gate: threading.Event, bulk_started: threading.Event,
                 counter: dict):
        self.log, self.meet, self.gate, self.bulk_started, self.counter = log, meet, gate, bulk_started, counter

    def encode(self, texts):
        name = threading.current_thread().name
        if texts[0].startswith("state"):
            self.meet.wait(30)  # BrokenBarrierError unless the other state is being embedded meanwhile
        if texts[0].startswith("premise"):  # a bulk request's goal ("bulk state") is urgent work
            with self.counter["lock"]:
                self.counter["now"] += 1
                self.counter["most"] = max(self.counter["most"], self.counter["now"])
            self.counter.setdefault("held_by", name)
            self.bulk_started.set()
            assert self.gate.wait(30)
            with self.counter["lock"]:
                self.counter["now"] -= 1
        self.log.append((name, list(texts)))
        return _rows(texts)


def test_two_workers_embed_two_requests_at_once_and_keep_one_free_of_bulk_work():
    from leanpremise.serve.embedding.service import EmbeddingService

    log: list = []
    meet, gate, bulk_started = threading.Barrier(2), threading.Event(), threading.Event()
    counter = {"lock": threading.Lock(), "now": 0, "most": 0}
    light_done_while_bulk_held = []

    async def scenario():
        workers = [GatedEmbedder(log, meet, gate, bulk_started, counter) for _ in range(2)]
        svc = EmbeddingService(workers, service_config(embed_service_max_concurrent_inputs=400,
                                                       max_client_batch_size=8))
        await svc.start()
        try:
            await asyncio.wait_for(asyncio.gather(svc.embed(["state a"], []), svc.embed(["state b"], [])), 30)
            bulk = [asyncio.create_task(svc.embed([f"bulk state {j}"], [f"premise {j}.{i}" for i in range(10)]))
                    for j in range(2)]
            assert await asyncio.to_thread(bulk_started.wait, 30)  # a bulk chunk holds one worker...
            for i in range(3):  # ...and the other takes each light request meanwhile
                await asyncio.wait_for(svc.embed([f"light state {i}"], []), 30)
                light_done_while_bulk_held.append(not gate.is_set())
            gate.set()
            await asyncio.wait_for(asyncio.gather(*bulk), 30)
        finally:
            gate.set()
            await svc.stop()

    asyncio.run(scenario())
    first_two = [entry for entry in log if entry[1][0].startswith("state")]
    assert {entry[0] for entry in first_two} == {"embed0_0", "embed1_0"}  # side by side (the barrier passed)
    assert light_done_while_bulk_held == [True, True, True]
    lights = [entry for entry in log if entry[1][0].startswith("light")]
    assert [texts for _, texts in lights] == [[f"light state {i}"] for i in range(3)]
    bulk_threads = {name for name, texts in log if texts[0].startswith("premise")}
    assert counter["held_by"] in bulk_threads and counter["held_by"] not in {name for name, _ in lights}
    assert counter["most"] == 1  # at most one bulk chunk ran at a time: the other worker stayed free
    embedded = sorted(t for _, texts in log for t in texts if t.startswith(("premise", "bulk")))
    assert embedded == sorted([f"bulk state {j}" for j in range(2)] +
                              [f"premise {j}.{i}" for j in range(2) for i in range(10)])


def test_states_are_cached_like_new_premises():
    from leanpremise.serve.embedding.service import EmbeddingService
    from leanpremise.serve.prometheus import Metrics

    log: list = []

    async def scenario():
        metrics = Metrics()
        svc = EmbeddingService(SleepyEmbedder(log), service_config(), metrics=metrics)
        await svc.start()
        try:
            first = await svc.embed(["⊢ a = a"], ["theorem t : a = a"])
            again = await svc.embed(["⊢ a = a"], ["theorem t : a = a", "⊢ a = a"])
            return first, again, metrics
        finally:
            await svc.stop()

    first, again, metrics = asyncio.run(scenario())
    assert [t for entry in log for t in entry[1]] == ["⊢ a = a", "theorem t : a = a"]  # each embedded once
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(again[1][1], first[0][0])  # a premise whose text equals a state's
    text = metrics.render()[0].decode()
    assert "leanpremise_state_cache_hits_total 1.0" in text
    assert "leanpremise_state_cache_misses_total 1.0" in text


def test_worker_layout_follows_the_backend_and_the_settings(monkeypatch):
    from leanpremise.serve.embedding.backends import worker_layout
    from leanpremise.serve.settings import ConfigError, load_config

    cfg = load_config(None, bundle="/b")
    assert worker_layout(cfg, cpus=2) == (2, 1)
    assert worker_layout(cfg, cpus=16) == (2, 8)
    assert worker_layout(cfg, cpus=1) == (1, 1)
    assert worker_layout(load_config(None, device="cuda"), cpus=16) == (1, 16)
    assert worker_layout(load_config(None, backend="tei", embed_service_url="http://x"), cpus=16) == (1, 16)
    monkeypatch.setenv("EMBED_WORKERS", "3")
    monkeypatch.setenv("EMBED_THREADS", "2")
    monkeypatch.setenv("MAX_QUERIES_PER_SEARCH", "4")
    env = load_config(None)
    assert worker_layout(env, cpus=16) == (3, 2) and env.max_queries_per_search == 4
    monkeypatch.setenv("EMBED_WORKERS", "0")
    with pytest.raises(ConfigError, match="EMBED_WORKERS"):
        load_config(None)


def test_a_background_worker_takes_all_bulk_work_at_lower_priority():
    import os

    from leanpremise.serve.embedding.service import EmbeddingService

    log: list = []
    nice: dict[str, int] = {}

    class NiceRecorder(SleepyEmbedder):
        def encode(self, texts):
            nice[threading.current_thread().name] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            return super().encode(texts)

    async def scenario():
        svc = EmbeddingService([NiceRecorder(log, 0.01), NiceRecorder(log, 0.01)],
                               service_config(embed_service_max_concurrent_inputs=400, max_client_batch_size=8),
                               background=NiceRecorder(log, 0.01), background_nice=5)
        await svc.start()
        try:
            await asyncio.gather(svc.embed(["bulk state"], [f"premise {i}" for i in range(20)]),
                                 *[svc.embed([f"light state {i}"], []) for i in range(4)])
        finally:
            await svc.stop()

    asyncio.run(scenario())
    # the bulk request's goal is urgent work (issue 22); its new premises are the bulk work
    bulk_threads = {name for name, texts in log if any(t.startswith("premise") for t in texts)}
    light_threads = {name for name, texts in log if texts[0].startswith(("light", "bulk"))}
    assert bulk_threads == {"embed-background_0"}
    assert "embed-background_0" not in light_threads
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if os.uname().sysname == "Linux":
        assert nice["embed-background_0"] == min(base + 5, 19)
        assert all(nice[t] == base for t in light_threads)


def test_an_urgent_request_is_never_left_waiting_for_a_background_worker_to_wake():
    """Workers wait for different lanes; waking only one of them could wake the background worker for an
    urgent job, which it may not take, and leave the job queued forever."""
    from leanpremise.serve.embedding.service import EmbeddingService

    log: list = []

    async def scenario():
        svc = EmbeddingService([SleepyEmbedder(log), SleepyEmbedder(log)], service_config(max_client_batch_size=8),
                               background=SleepyEmbedder(log))
        await svc.start()
        try:
            await asyncio.wait_for(svc.embed(["s0"], []), 5)  # the urgent workers re-queue as waiters...
            await asyncio.wait_for(svc.embed(["b"], [f"p{i}" for i in range(12)]), 5)  # ...behind the background
            while svc.lanes._bulk_busy:  # the background worker is back to waiting, ahead of the urgent ones
                await asyncio.sleep(0)
            for i in range(3):
                await asyncio.wait_for(svc.embed([f"s{i + 1}"], []), 5)
        finally:
            await svc.stop()

    asyncio.run(scenario())
    assert [t for _, texts in log for t in texts if t.startswith("s")] == ["s0", "s1", "s2", "s3"]


def test_searches_are_taken_round_robin_across_clients():
    """Issue 28: one client's queued searches of many goals do not stand in front of another client's one."""
    from collections import OrderedDict
    from types import SimpleNamespace

    from leanpremise.serve.jobs import CLIENT, queue_by_client, take_round_robin

    async def scenario():
        loop = asyncio.get_running_loop()
        queues: OrderedDict = OrderedDict()

        def job(name, rows):
            return SimpleNamespace(name=name, rows=rows, future=loop.create_future())

        CLIENT.set("attacker")
        for j in range(5):
            queue_by_client(queues, job(f"a{j}", 64))
        gone = job("gone", 1)
        queue_by_client(queues, gone)
        gone.future.cancel()  # its request went away
        CLIENT.set("honest")
        queue_by_client(queues, job("h", 1))
        size = lambda j: j.rows
        taken = [[j.name for j in take_round_robin(queues, 16, size)] for _ in range(6)]
        return taken, queues

    taken, queues = asyncio.run(scenario())
    assert taken[:2] == [["a0"], ["h"]]  # the honest search right after one of the attacker's
    assert [t for t in taken[2:] if t] == [["a1"], ["a2"], ["a3"], ["a4"]] and not queues
