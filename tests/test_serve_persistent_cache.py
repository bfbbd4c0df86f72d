"""The server's persistent embedding cache: warm after a restart (LMDB), shared by replicas (Redis), a bad
cache file set aside, the settings that place it or turn it off."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from serve_helpers import ThreadServer, metric, redis_server, service_config

EMBEDDED = "leanpremise_embedded_texts_total"
STORE_HITS = "leanpremise_embedding_store_hits_total"
WRITTEN = "leanpremise_embedding_store_written_total"
N_NEW = 12
KEY = "replicas share this secret"


def body(tag: str) -> dict:
    """A file's first request: its goal and N_NEW premises of its own, none of which a server has seen."""
    new = [{"name": f"{tag}.n{i}", "decl": f"theorem {tag}.n{i} (a : Nat) : a + {i} = {i} + a"}
           for i in range(N_NEW)]
    return {"state": f"⊢ {tag} goal", "k": 6, "new_premises": new}


@contextmanager
def serving(bundle: Path, data_dir: Path, **settings):
    srv = ThreadServer(_app(bundle, data_dir, **settings)).start()
    try:
        yield srv.url
    finally:
        srv.stop()


def _app(bundle: Path, data_dir: Path, **settings):
    from leanpremise.serve.http.app import create_app

    return create_app(service_config(bundle=bundle, data_dir=data_dir, backend="torch", **settings))


def retrieve(url: str, request: dict) -> bytes:
    r = httpx.post(f"{url}/retrieve", json=request, timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def test_a_restarted_server_answers_from_the_persistent_cache(serve_bundle, cache_dir, tmp_path):
    request = body("restart")
    with serving(serve_bundle, cache_dir, embedding_cache=tmp_path / "emb") as url:
        first = retrieve(url, request)
        assert metric(url, EMBEDDED) == N_NEW + 1 and metric(url, STORE_HITS) == 0
    with serving(serve_bundle, cache_dir, embedding_cache=tmp_path / "emb") as url:  # a fresh app: an empty LRU
        again = retrieve(url, request)
        assert metric(url, EMBEDDED) == 0  # neither the state nor a new premise was embedded again
        assert metric(url, STORE_HITS) == N_NEW + 1
    assert again == first  # bit for bit: the stored float32 rows are the embedded ones


def test_a_garbage_cache_dir_is_set_aside_and_the_server_serves(serve_bundle, cache_dir, tmp_path, caplog):
    where = tmp_path / "emb"
    where.mkdir()
    (where / "data.mdb").write_bytes(b"not an LMDB file at all " * 400)
    with caplog.at_level(logging.WARNING), serving(serve_bundle, cache_dir, embedding_cache=where) as url:
        retrieve(url, body("garbage"))
        assert metric(url, EMBEDDED) == N_NEW + 1
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("emb.corrupt-")]
    assert len(aside) == 1 and (aside[0] / "data.mdb").read_bytes().startswith(b"not an LMDB")
    assert any("set aside" in r.getMessage() for r in caplog.records)
    with serving(serve_bundle, cache_dir, embedding_cache=where) as url:  # the fresh store kept what was embedded
        retrieve(url, body("garbage"))
        assert metric(url, EMBEDDED) == 0


def test_replicas_share_embeddings_through_redis(serve_bundle, cache_dir, tmp_path):
    request = body("replica")
    data_dir = tmp_path / "data"
    with (redis_server(tmp_path) as (redis_url, _),
          serving(serve_bundle, data_dir, embedding_cache_url=redis_url, embedding_cache_key=KEY) as a,
          serving(serve_bundle, data_dir, embedding_cache_url=redis_url, embedding_cache_key=KEY) as b):
        first = retrieve(a, request)
        assert metric(a, EMBEDDED) == N_NEW + 1
        deadline = time.monotonic() + 20
        while metric(a, WRITTEN) < N_NEW + 1:  # written after the answer, off the request path
            assert time.monotonic() < deadline, "replica A never wrote its embeddings to Redis"
            time.sleep(0.02)
        assert retrieve(b, request) == first
        assert metric(b, EMBEDDED) == 0 and metric(b, STORE_HITS) == N_NEW + 1
    assert not (data_dir / "embeddings.lmdb").exists()  # Redis instead of the LMDB, not beside it


def test_cache_settings_place_it_and_turn_it_off(tmp_path, monkeypatch):
    from leanpremise.serve.cli import register
    from leanpremise.serve.settings import ConfigError, load_config

    monkeypatch.setenv("LEANPREMISE_CACHE_DIR", str(tmp_path / "lp"))
    for name in ("EMBEDDING_CACHE_DIR", "EMBEDDING_CACHE_URL", "EMBEDDING_CACHE_ENABLED", "EMBEDDING_CACHE_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert load_config(None).embedding_cache_location() == str(tmp_path / "lp" / "embeddings.lmdb")
    assert load_config(None, data_dir=tmp_path / "d").embedding_cache_location() == \
        str(tmp_path / "d" / "embeddings.lmdb")
    assert load_config(None, embedding_cache="").embedding_cache_location() is None
    assert load_config(None, embedding_cache_on="false").embedding_cache_location() is None
    monkeypatch.setenv("EMBEDDING_CACHE_DIR", "off")
    assert load_config(None).embedding_cache_location() is None
    monkeypatch.setenv("EMBEDDING_CACHE_DIR", str(tmp_path / "x"))
    assert load_config(None).embedding_cache_location() == str(tmp_path / "x")
    monkeypatch.setenv("EMBEDDING_CACHE_URL", "redis://10.0.0.5:6379/2")
    monkeypatch.setenv("EMBEDDING_CACHE_KEY", KEY)
    assert load_config(None).embedding_cache_location() == "redis://10.0.0.5:6379/2"
    with pytest.raises(ConfigError, match="EMBEDDING_CACHE_URL"):
        load_config(None, embedding_cache_url="http://10.0.0.5:6379")

    from leanpremise.cli import ArgumentParser

    parser = ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "b", "--no_embedding_cache", "--embedding_cache_max_bytes", "1048576"])
    assert args.embedding_cache_on is False and args.embedding_cache_max_bytes == "1048576"


def test_a_server_opens_its_store_once_for_all_its_models_and_closes_it_when_it_stops(tmp_path):
    """LMDB forbids opening one environment twice in a process: the server opens its location once, its
    models share it under their own keys, and it is closed when the server stops (so a server started
    after it in the same process can open it)."""
    import asyncio
    from types import SimpleNamespace

    import numpy as np

    from leanpremise.serve.embedding.store import LmdbEmbeddingStore, open_server_store
    from leanpremise.serve.revisions.lifecycle import Server

    server = Server(service_config(bundle=tmp_path / "b", embedding_cache=tmp_path / "s"))
    embedder = SimpleNamespace(name="torch", dim=4)
    a, b = (SimpleNamespace(manifest=SimpleNamespace(model_identity=f"model-{m}"), model_dir=None) for m in "ab")
    (store_a, key_a), (store_b, key_b) = (open_server_store(server.config, bundle, embedder, server.stores)
                                          for bundle in (a, b))
    assert store_a is store_b and list(server.stores) == [str(tmp_path / "s")]
    assert store_a.put_many(key_a, ["t"], np.ones((1, 4), np.float32)) == 1
    assert store_b.get_many(key_b, ["t"]) == {}  # another model's vectors are not this one's
    asyncio.run(server.stop())
    assert server.stores == {}
    again = LmdbEmbeddingStore(tmp_path / "s")  # would be refused had the server left it open
    assert again.get_many(key_a, ["t"]).keys() == {"t"}
    again.close()


# ---- stores that fail safe (issue 22): a damaged LMDB file, poisoned Redis values ---------------------------

REJECTED = "leanpremise_embedding_cache_rejected_total"


def _written(url: str, n: int) -> None:
    deadline = time.monotonic() + 120
    while metric(url, WRITTEN) < n:  # written after the answer, off the request path
        assert time.monotonic() < deadline, "the server never wrote its embeddings to its store"
        time.sleep(0.02)


def _scores_are_numbers(answer: bytes) -> None:
    import json
    import math

    results = json.loads(answer)
    results = results.get("results", results) if isinstance(results, dict) else results
    flat = [r for group in results for r in (group if isinstance(group, list) else [group])]
    assert flat, answer[:200]
    assert all(isinstance(r["score"], float) and math.isfinite(r["score"]) for r in flat), answer[:200]


def test_a_truncated_lmdb_file_is_set_aside_and_the_server_serves(serve_bundle, cache_dir, tmp_path, caplog):
    """The issue's case: `truncate -s 8192 data.mdb` made every later start die of SIGBUS."""
    where = tmp_path / "emb"
    with serving(serve_bundle, cache_dir, embedding_cache=where) as url:
        first = retrieve(url, body("truncated"))
        _written(url, N_NEW + 1)
    with open(where / "data.mdb", "r+b") as f:
        f.truncate(8192)
    with caplog.at_level(logging.WARNING), serving(serve_bundle, cache_dir, embedding_cache=where) as url:
        assert retrieve(url, body("truncated")) == first
        assert metric(url, EMBEDDED) == N_NEW + 1  # a fresh store: everything embedded again
    lines = [r.getMessage() for r in caplog.records if "embedding store" in r.getMessage()]
    assert len(lines) == 1 and "truncated" in lines[0] and "set aside" in lines[0], lines
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("emb.corrupt-")]) == 1


def _poison_redis(url: str, value) -> int:
    """Overwrite every vector in the Redis at `url` with `value(old value)`; returns how many."""
    import redis

    from leanpremise.serve.embedding.store import REDIS_PREFIX

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=REDIS_PREFIX + b"*"))
    for key in keys:
        client.set(key, value(client.get(key)))
    client.close()
    return len(keys)


def test_poisoned_redis_values_are_misses_counted_in_metrics(serve_bundle, cache_dir, tmp_path):
    """Values written under valid keys by someone without the key (a NaN, a zero, a wrong-dim row, a
    well-formed row without a tag): never `[]`, never a null score; the server answers as before."""
    import numpy as np

    from leanpremise.serve.embedding.store import HEADER, encode_vector

    request = body("poisoned")
    data_dir = tmp_path / "data"
    with redis_server(tmp_path) as (redis_url, _):
        with serving(serve_bundle, data_dir, embedding_cache_url=redis_url, embedding_cache_key=KEY) as url:
            first = retrieve(url, request)
            _written(url, N_NEW + 1)
        _scores_are_numbers(first)

        def dim_of(old: bytes) -> int:
            return HEADER.unpack_from(old)[3]

        poisons = {
            "nan": lambda old: encode_vector(np.full(dim_of(old), np.nan, np.float32)),
            "zero": lambda old: encode_vector(np.zeros(dim_of(old), np.float32)),
            "wrong-dim": lambda old: encode_vector(np.ones(dim_of(old) + 1, np.float32) / np.sqrt(dim_of(old) + 1)),
            "negated-untagged": lambda old: encode_vector(-np.frombuffer(old, "<f4", dim_of(old), HEADER.size)),
            "bad-tag": lambda old: old[:-1] + bytes([old[-1] ^ 1]),
        }
        for name, poison in poisons.items():
            assert _poison_redis(redis_url, poison) == N_NEW + 1, name
            with serving(serve_bundle, data_dir, embedding_cache_url=redis_url, embedding_cache_key=KEY) as url:
                assert retrieve(url, request) == first, name
                assert metric(url, EMBEDDED) == N_NEW + 1, name  # every poisoned row embedded again
                assert metric(url, f'{REJECTED}{{cache="redis",reason="hmac"}}') == N_NEW + 1, name
                _written(url, N_NEW + 1)  # the good rows are back for the next round
        # Without the key (explicitly waived), the rows themselves are still checked.
        with serving(serve_bundle, data_dir, embedding_cache_url=redis_url,
                     embedding_cache_key="insecure-none") as url:
            retrieve(url, body("untagged"))  # writes untagged values of its own
            _written(url, N_NEW + 1)
        assert _poison_redis(redis_url, poisons["nan"]) >= N_NEW + 1
        with serving(serve_bundle, data_dir, embedding_cache_url=redis_url,
                     embedding_cache_key="insecure-none") as url:
            assert retrieve(url, request) == first
            assert metric(url, f'{REJECTED}{{cache="redis",reason="nonfinite"}}') == N_NEW + 1


@pytest.mark.parametrize("poison", ["nan", "zero", "scaled"])
def test_poisoned_lmdb_values_are_misses_counted_in_metrics(serve_bundle, cache_dir, tmp_path, poison):
    """Vectors overwritten in the LMDB file under their valid keys: the server answers as before (never `[]`,
    never a null score), embeds them again and counts them."""
    import numpy as np

    from leanpremise.serve.embedding.store import HEADER, LmdbEmbeddingStore, encode_vector

    where = tmp_path / "emb"
    request = body("lmdb-poison")
    with serving(serve_bundle, cache_dir, embedding_cache=where) as url:
        first = retrieve(url, request)
        _written(url, N_NEW + 1)
    _scores_are_numbers(first)
    store = LmdbEmbeddingStore(where, max_bytes=2 * 2**30)
    with store._env.begin(write=True) as txn:
        cursor = txn.cursor(db=store._vectors)
        items = [(k, bytes(v)) for k, v in cursor]
        for key, value in items:
            dim = HEADER.unpack_from(value, 8)[3]
            row = {"nan": np.full(dim, np.nan), "zero": np.zeros(dim), "scaled": np.full(dim, 3.0)}[poison]
            txn.put(key, value[:8] + encode_vector(row), db=store._vectors)
    store.close()
    assert len(items) == N_NEW + 1
    reason = "nonfinite" if poison == "nan" else "norm"
    with serving(serve_bundle, cache_dir, embedding_cache=where) as url:
        assert retrieve(url, request) == first
        assert metric(url, EMBEDDED) == N_NEW + 1
        assert metric(url, f'{REJECTED}{{cache="lmdb",reason="{reason}"}}') == N_NEW + 1
