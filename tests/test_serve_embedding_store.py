"""The persistent embedding store: LMDB across processes, set-aside, size bound; Redis shared and degrading."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import lmdb
import numpy as np
import pytest

from leanpremise.serve.embedding.store import (
    HEADER,
    LmdbEmbeddingStore,
    RedisEmbeddingStore,
    encode_vector,
    open_embedding_store,
    record_key,
)
from serve_helpers import free_port, redis_server

MODEL = "model:sha256:abc|pool:mean|prompt:|max_seq:128"
CHILD = """
import sys, numpy as np
from leanpremise.serve.embedding.store import open_embedding_store
where, model, mode, npy = sys.argv[1:5]
texts = [f"theorem t{i} : {i} = {i}" for i in range(50)]
store = open_embedding_store(where)
if mode == "put":
    assert store.put_many(model, texts, np.load(npy)) == len(texts)
else:
    hits = store.get_many(model, texts + ["never stored"], dim=32)
    np.save(npy, np.stack([hits[t] for t in texts]) if len(hits) == len(texts) else np.zeros((len(hits), 32)))
"""


def _child(*args: str) -> None:
    subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], check=True, timeout=60)


def test_lmdb_round_trip_across_processes(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32)
    np.save(tmp_path / "in.npy", vectors)
    _child(tmp_path / "store", MODEL, "put", tmp_path / "in.npy")
    _child(tmp_path / "store", MODEL, "get", tmp_path / "out.npy")
    assert np.array_equal(np.load(tmp_path / "out.npy"), vectors)
    _child(tmp_path / "store", MODEL + "-other", "get", tmp_path / "other.npy")
    assert np.load(tmp_path / "other.npy").shape == (0, 32)  # another model identity reads nothing


def test_corrupt_store_is_set_aside(tmp_path, caplog):
    where = tmp_path / "store"
    where.mkdir()
    (where / "data.mdb").write_bytes(b"this is not an LMDB file" * 500)
    with caplog.at_level(logging.WARNING):
        store = LmdbEmbeddingStore(where, max_bytes=1 << 20)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("store.corrupt-")]
    assert len(aside) == 1 and (aside[0] / "data.mdb").read_bytes().startswith(b"this is not")
    assert any("set aside" in r.getMessage() for r in caplog.records)
    assert store.put_many(MODEL, ["a"], np.ones((1, 4), np.float32)) == 1
    assert np.array_equal(store.get_many(MODEL, ["a"])["a"], np.ones(4, np.float32))


def test_foreign_lmdb_is_set_aside(tmp_path):
    where = tmp_path / "store"
    env = lmdb.open(str(where), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"someone", b"else's data")
    env.close()
    store = LmdbEmbeddingStore(where, max_bytes=1 << 20)
    assert [p.name.startswith("store.corrupt-") for p in tmp_path.iterdir()].count(True) == 1
    assert store.stats()["entries"] == 0


def test_foreign_values_are_misses(tmp_path):
    store = LmdbEmbeddingStore(tmp_path / "s", max_bytes=1 << 20)
    store.put_many(MODEL, ["dim4"], np.ones((1, 4), np.float32))
    assert store.get_many(MODEL, ["dim4"], dim=8) == {}  # a vector of another dim is foreign
    bad = HEADER.pack(b"XXXX", 1, ord("f"), 4) + b"\0" * 16
    with store._env.begin(write=True) as txn:
        txn.put(record_key(MODEL, "bad"), b"\0" * 8 + bad, db=store._vectors)
    assert store.get_many(MODEL, ["bad", "dim4"]).keys() == {"dim4"}
    assert len(encode_vector(np.zeros(4))) == HEADER.size + 16


def test_size_bound_evicts_oldest(tmp_path):
    max_bytes = 1 << 20
    store = LmdbEmbeddingStore(tmp_path / "s", max_bytes=max_bytes)
    rng = np.random.default_rng(1)
    batches = [[f"text {b}-{i}" for i in range(200)] for b in range(20)]  # about 4x the budget in all
    for texts in batches:
        assert store.put_many(MODEL, texts, rng.standard_normal((200, 64)).astype(np.float32)) == 200
        assert store.stats()["bytes"] <= store.stats()["budget"]
        assert (tmp_path / "s" / "data.mdb").stat().st_size <= max_bytes
    assert store.stats()["entries"] < sum(map(len, batches))
    assert len(store.get_many(MODEL, batches[-1])) == 200  # the newest survive
    assert store.get_many(MODEL, batches[0]) == {}  # the oldest went first
    entries = store.stats()["entries"]
    store.close()
    assert LmdbEmbeddingStore(tmp_path / "s", max_bytes=max_bytes).stats()["entries"] == entries  # persisted


def test_a_directory_open_in_this_process_is_neither_opened_twice_nor_set_aside(tmp_path, caplog):
    """py-lmdb refuses a second open of an environment in one process (another server's, in tests): that
    store runs without it, and the directory, which is fine, stays where it is."""
    first = LmdbEmbeddingStore(tmp_path / "s", max_bytes=1 << 20)
    first.put_many(MODEL, ["a"], np.ones((1, 4), np.float32))
    with caplog.at_level(logging.WARNING):
        second = LmdbEmbeddingStore(tmp_path / "s", max_bytes=1 << 20)
    assert second.get_many(MODEL, ["a"]) == {} and second.put_many(MODEL, ["b"], np.ones((1, 4), np.float32)) == 0
    assert any("running without it" in r.getMessage() for r in caplog.records)
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # nothing set aside
    assert first.get_many(MODEL, ["a"]).keys() == {"a"}
    second.close()
    first.close()


@pytest.fixture
def redis_url(tmp_path):
    with redis_server(tmp_path) as started:
        yield started


def test_redis_shared_between_processes(redis_url, tmp_path):
    url, _ = redis_url
    vectors = np.random.default_rng(2).standard_normal((50, 32)).astype(np.float32)
    np.save(tmp_path / "in.npy", vectors)
    _child(url, MODEL, "put", tmp_path / "in.npy")
    _child(url, MODEL, "get", tmp_path / "out.npy")
    assert np.array_equal(np.load(tmp_path / "out.npy"), vectors)
    here = open_embedding_store(url)
    assert isinstance(here, RedisEmbeddingStore)
    assert np.array_equal(here.get_many(MODEL, ["theorem t7 : 7 = 7"], dim=32)["theorem t7 : 7 = 7"], vectors[7])
    here.close()


def test_stopped_redis_degrades_to_misses(redis_url, caplog):
    url, proc = redis_url
    store = RedisEmbeddingStore(url, retry_after_s=0.0, warn_every_s=3600)
    store.put_many(MODEL, ["x"], np.ones((1, 8), np.float32))
    assert store.get_many(MODEL, ["x"]).keys() == {"x"}
    proc.terminate()
    proc.wait(10)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert store.get_many(MODEL, ["x", "y"]) == {}
            assert store.put_many(MODEL, ["z"], np.ones((1, 8), np.float32)) == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one for reads, one for writes, then quiet


def test_unreachable_redis_is_quiet_after_failure(caplog):
    store = RedisEmbeddingStore(f"redis://127.0.0.1:{free_port()}/0", retry_after_s=60)
    with caplog.at_level(logging.WARNING):
        assert store.get_many(MODEL, ["a"]) == {}
    assert store._down_until > time.monotonic()  # the next calls skip the network
    assert store.get_many(MODEL, ["a"]) == {}
