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


def _unit(rows: np.ndarray) -> np.ndarray:
    """Rows as the embedders write them: L2-normalised (the store turns down any other)."""
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def _child(*args: str) -> None:
    subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], check=True, timeout=60)


def test_lmdb_round_trip_across_processes(tmp_path):
    vectors = _unit(np.random.default_rng(0).standard_normal((50, 32)))
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
    vectors = _unit(np.random.default_rng(2).standard_normal((50, 32)))
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


# ---- stores that fail safe (issue 22): damaged LMDB files, poisoned values, authenticated Redis -------------

DAMAGED_CHILD = """
import logging, sys, numpy as np
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from leanpremise.serve.embedding.store import LmdbEmbeddingStore
store = LmdbEmbeddingStore(sys.argv[1], max_bytes=1 << 22)
row = np.zeros((1, 4), np.float32); row[0, 0] = 1
assert store.put_many("m", ["a"], row) == 1, "the fresh store does not take puts"
assert store.get_many("m", ["a"], dim=4).keys() == {"a"}, "the fresh store does not answer"
print("served")
"""


def _filled_store(where, n: int = 2000) -> None:
    """An LMDB store with `n` records, closed: a data file of about a megabyte."""
    store = LmdbEmbeddingStore(where, max_bytes=1 << 22)
    rows = _unit(np.random.default_rng(5).standard_normal((n, 64)))
    store.put_many(MODEL, [f"t{i}" for i in range(n)], rows)
    store.close()


def _truncate(size):
    def damage(data):
        with open(data, "r+b") as f:
            f.truncate(size)
    return damage


def _scribble(offset, length):
    def damage(data):
        with open(data, "r+b") as f:
            f.seek(offset)
            f.write(np.random.default_rng(offset).bytes(length))
    return damage


def _symlink_to(target):
    def damage(data):
        data.unlink()
        data.symlink_to(target)
    return damage


@pytest.mark.parametrize("damage", [
    _truncate(8192),  # the case: both meta pages kept, the tree gone (SIGBUS when mapped)
    _truncate(4096),  # one meta page
    _truncate(100),  # not even one
    _truncate(300 * 1024),  # cut mid-tree
    _scribble(0, 4096),  # the first meta page overwritten
    _scribble(4096, 64),  # the second meta page's header overwritten
    _symlink_to("/dev/zero"),
], ids=["truncated-8192", "truncated-4096", "truncated-100", "truncated-mid-tree", "garbage-meta-0",
        "garbage-meta-1", "symlink-dev-zero"])
def test_a_damaged_lmdb_file_is_set_aside_with_one_line_and_a_fresh_store_serves(tmp_path, damage):
    """Run in a child: a store mapped past its file's end dies of SIGBUS, which must show as a failed test
    (exit 135), not kill the test run."""
    where = tmp_path / "store"
    _filled_store(where)
    damage(where / "data.mdb")
    done = subprocess.run([sys.executable, "-c", DAMAGED_CHILD, str(where)], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.strip() == "served"
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(lines) == 1 and "set aside as" in lines[0], done.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("store.corrupt-")]
    assert len(aside) == 1 and not (where / "data.mdb").is_symlink()


def test_a_zero_length_lmdb_file_is_a_new_store(tmp_path):
    """LMDB initialises an empty data file itself (another process may be creating the store right now):
    nothing is set aside and the store serves."""
    where = tmp_path / "store"
    where.mkdir()
    (where / "data.mdb").touch()
    done = subprocess.run([sys.executable, "-c", DAMAGED_CHILD, str(where)], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "served", done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_a_healthy_store_passes_the_file_check(tmp_path):
    from leanpremise.serve.embedding.store import lmdb_file_problem

    _filled_store(tmp_path / "s")
    assert lmdb_file_problem(tmp_path / "s") is None
    assert lmdb_file_problem(tmp_path / "absent") is None


def _poison_rows(dim: int) -> dict[str, np.ndarray]:
    """Values an attacker could write under valid keys, by what is wrong with them."""
    nan = np.full(dim, np.nan, np.float32)
    inf = np.zeros(dim, np.float32)
    inf[0] = np.inf
    scaled = np.full(dim, 1.0, np.float32)  # norm sqrt(dim)
    return {"nan": nan, "inf": inf, "zero": np.zeros(dim, np.float32), "scaled": scaled,
            "wrong-dim": _unit(np.ones((1, dim + 1)))[0]}


def test_poisoned_lmdb_values_are_misses_and_counted(tmp_path):
    store = LmdbEmbeddingStore(tmp_path / "s", max_bytes=1 << 20)
    seen: dict[str, int] = {}
    store.on_rejected = lambda why, n: seen.__setitem__(why, seen.get(why, 0) + n)
    poison = _poison_rows(8)
    with store._env.begin(write=True) as txn:
        for text, row in poison.items():
            txn.put(record_key(MODEL, text), b"\0" * 8 + encode_vector(row), db=store._vectors)
    good = _unit(np.arange(1, 9, dtype=np.float32)[None])
    store.put_many(MODEL, ["good"], good)
    hits = store.get_many(MODEL, [*poison, "good"], dim=8)
    assert hits.keys() == {"good"} and np.array_equal(hits["good"], good[0])
    assert seen == {"nonfinite": 2, "norm": 2, "header": 1}


def test_redis_values_carry_an_hmac_and_poisoned_ones_are_misses(redis_url):
    import redis

    from leanpremise.serve.embedding.store import REDIS_PREFIX
    from leanpremise.serve.embedding.store.record import seal

    url, _ = redis_url
    key = b"a secret of sixteen or more"
    store = RedisEmbeddingStore(url, hmac_key=key)
    seen: dict[str, int] = {}
    store.on_rejected = lambda why, n: seen.__setitem__(why, seen.get(why, 0) + n)
    texts = ["p0", "p1", "p2"]
    rows = _unit(np.random.default_rng(3).standard_normal((3, 8)))
    assert store.put_many(MODEL, texts, rows) == 3
    assert np.array_equal(np.stack([store.get_many(MODEL, texts, dim=8)[t] for t in texts]), rows)
    raw = redis.Redis.from_url(url)
    k0, k1, k2 = (REDIS_PREFIX + record_key(MODEL, t) for t in texts)
    raw.set(k0, encode_vector(-rows[0]))  # a well-formed unit vector without a tag: the attacker has no key
    raw.set(k1, raw.get(k2))  # another key's value with its valid tag: the tag covers the key too
    assert store.get_many(MODEL, texts, dim=8).keys() == {"p2"}
    assert seen == {"hmac": 2}
    # With the key leaked, a NaN row still does not pass: every row is checked after its tag.
    body = encode_vector(np.full(8, np.nan, np.float32))
    raw.set(k2, seal(key, record_key(MODEL, "p2"), body))
    assert store.get_many(MODEL, texts, dim=8) == {}
    assert seen == {"hmac": 4, "nonfinite": 1}
    # Untagged (EMBEDDING_CACHE_KEY=insecure-none): rows are still checked.
    plain = RedisEmbeddingStore(url)
    for text, row in _poison_rows(8).items():
        raw.set(REDIS_PREFIX + record_key(MODEL, text), encode_vector(row))
    assert plain.get_many(MODEL, list(_poison_rows(8)), dim=8) == {}
    raw.close()
    store.close()
    plain.close()


def test_the_in_memory_cache_turns_down_bad_rows():
    from leanpremise.serve.embedding.cache import EmbeddingCache

    cache = EmbeddingCache(100, 1 << 20)
    seen = []
    cache.on_rejected = lambda why, n: seen.append(why)
    cache.put(b"good", _unit(np.ones((1, 8)))[0])
    for name, row in _poison_rows(8).items():
        cache.put(name.encode(), row)
    assert cache.get(b"good") is not None
    assert [cache.get(name.encode()) for name in _poison_rows(8)] == [None] * 5
    assert sorted(seen) == ["dim", "nonfinite", "nonfinite", "norm", "norm"]
    assert len(cache) == 1  # the bad rows are gone, not kept to be turned down again


def test_redis_needs_a_cache_key_unless_waived(monkeypatch):
    from leanpremise.serve.settings import ConfigError, load_config

    monkeypatch.setenv("EMBEDDING_CACHE_URL", "redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="EMBEDDING_CACHE_KEY"):
        load_config(None)
    monkeypatch.setenv("EMBEDDING_CACHE_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(None)
    monkeypatch.setenv("EMBEDDING_CACHE_KEY", "insecure-none")
    assert load_config(None).embedding_cache_hmac_key() is None
    monkeypatch.setenv("EMBEDDING_CACHE_KEY", "s" * 32)
    config = load_config(None)
    assert config.embedding_cache_hmac_key() == b"s" * 32 and "s" * 32 not in repr(config)
    monkeypatch.delenv("EMBEDDING_CACHE_URL")
    monkeypatch.delenv("EMBEDDING_CACHE_KEY")
    assert load_config(None).embedding_cache_hmac_key() is None  # LMDB needs none
