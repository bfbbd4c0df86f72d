"""Server behaviour under load and failure: overload -> 503, /health before loading, TEI backend,
hub errors, configuration, and the index's search paths against numpy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from liveness import LIVENESS_S
from serve_helpers import (
    ThreadServer,
    assert_same_ranking,
    brute_force,
    free_port,
    search_stacked,
    service_config,
)


def make_config(bundle, cache_dir, **kw):
    return service_config(bundle=bundle, data_dir=cache_dir, backend=kw.pop("backend", "torch"), **kw)


def test_overload_gives_503_with_retry_after_and_the_server_recovers(serve_bundle, cache_dir):
    from leanpremise.serve.http.app import create_app

    cfg = make_config(serve_bundle, cache_dir, embed_service_max_concurrent_inputs=4, max_client_batch_size=4)
    srv = ThreadServer(create_app(cfg)).start()
    try:
        def heavy(i):
            new = [{"name": f"n{i}_{j}", "decl": f"theorem n{i}_{j} : {i} * {j} = {i * j} := by decide"}
                   for j in range(40)]
            return httpx.post(f"{srv.url}/retrieve", json={"state": f"⊢ {i}", "k": 4, "new_premises": new},
                              timeout=LIVENESS_S)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(heavy, range(16)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503}, codes
        assert 503 in codes
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["Retry-After"].isdigit()
        assert "overloaded" in refused.json()["detail"]
        assert httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).status_code == 200
        assert heavy(99).status_code == 200  # alone, a request of the same size goes through
        assert "leanpremise_overloaded_total" in httpx.get(f"{srv.url}/metrics", timeout=LIVENESS_S).text
    finally:
        srv.stop()


def test_health_is_503_until_loaded(serve_bundle, cache_dir):
    from leanpremise.serve.http.app import create_app
    from leanpremise.serve.revisions.lifecycle import Server

    gate = threading.Event()

    class SlowServer(Server):
        def load(self):
            assert gate.wait(60)
            return super().load()

    cfg = make_config(serve_bundle, cache_dir)
    srv = ThreadServer(create_app(cfg, preloaded=SlowServer(cfg))).start(wait_ready=False)
    try:
        h = httpx.get(f"{srv.url}/health", timeout=LIVENESS_S)
        assert h.status_code == 503 and h.json()["status"] == "loading"
        r = httpx.post(f"{srv.url}/retrieve", json={"state": "a", "k": 1}, timeout=LIVENESS_S)
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert httpx.get(f"{srv.url}/indexed-premises", timeout=LIVENESS_S).status_code == 503
        gate.set()
        from serve_helpers import wait_healthy

        assert wait_healthy(srv.url, 60)["status"] == "ok"
    finally:
        gate.set()
        srv.stop()


def test_a_damaged_bundle_is_refused_naming_the_file(serve_bundle, tmp_path, cache_dir):
    import shutil

    from leanpremise.bundle.layout import BundleError
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.serve.revisions.loader import load_bundle

    copy = tmp_path / "copy"
    shutil.copytree(serve_bundle, copy)
    emb_path = copy / Manifest.read(copy).embeddings
    arr = np.load(emb_path)
    arr[0, 0] += 1
    np.save(emb_path, arr)
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy, cache_dir)


def _tei_app(model_dir):
    """A stand-in for text-embeddings-inference's POST /embed, backed by the same tiny model."""
    from fastapi import Body, FastAPI

    from leanpremise.model.encoder import encode_texts, load_model

    model = load_model(model_dir, "cpu")
    app = FastAPI()
    calls = []

    @app.post("/embed")
    def embed(req: dict = Body(...)):  # noqa: B008 - FastAPI's way to take the whole JSON body
        inputs = req["inputs"]
        texts = [inputs] if isinstance(inputs, str) else inputs
        calls.append(len(texts))
        return encode_texts(model, texts).tolist()

    app.state.calls = calls
    return app


def test_tei_backend_matches_brute_force_and_survives_tei_going_away(serve_bundle, cache_dir, tiny_model_dir):
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.model.encoder import encode_texts, load_model
    from leanpremise.serve.http.app import create_app

    tei_app = _tei_app(tiny_model_dir)
    tei = ThreadServer(tei_app).start(wait_ready=False)
    cfg = make_config(serve_bundle, cache_dir, backend="tei", embed_service_url=tei.url, embed_service_timeout=10)
    srv = ThreadServer(create_app(cfg)).start()
    try:
        state = "⊢ p ∧ q → q ∧ p"
        new = [{"name": "mine", "decl": "theorem mine : p ∧ q → q ∧ p"}]
        body = {"state": state, "k": 6, "imported_modules": ["Mathlib.Logic.Basic"], "local_premises": [],
                "new_premises": new}
        got = httpx.post(f"{srv.url}/retrieve", json=body, timeout=LIVENESS_S).json()
        assert tei_app.state.calls  # embedded over HTTP
        model = load_model(tiny_model_dir, "cpu")
        manifest = Manifest.read(serve_bundle)
        served = srv.server.config.app.state.server.table.default_revision
        corpus = load_corpus(DataConfig(data_dir=served.bundle.premises_dir, cache_dir=cache_dir))
        q, m = encode_texts(model, [state, new[0]["decl"]])
        expected = brute_force(corpus, np.load(serve_bundle / manifest.embeddings), q, 6, imported=["Mathlib.Logic.Basic"],
                               local=[], new=[("mine", m)])
        assert_same_ranking(got, expected)
        n_calls = len(tei_app.state.calls)
        httpx.post(f"{srv.url}/retrieve", json=body, timeout=LIVENESS_S)
        assert len(tei_app.state.calls) == n_calls  # state and "mine" both came from the cache
        httpx.post(f"{srv.url}/retrieve", json={**body, "state": "⊢ q ∧ p → p ∧ q"}, timeout=LIVENESS_S)
        assert tei_app.state.calls[n_calls:] == [1]  # one text embedded: the new state
        tei.stop()
        r = httpx.post(f"{srv.url}/retrieve", json={**body, "state": "⊢ a new state"}, timeout=LIVENESS_S)
        assert r.status_code == 502 and "embedding" in r.json()["detail"]
        assert tei.url.split("//")[1] not in r.text  # the backend's address (credentials, in a URL) stays in the log
        assert httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).status_code == 200
    finally:
        srv.stop()
        tei.stop()


def test_from_hub_without_network_fails_with_a_clear_message(tmp_path):
    port = free_port()  # nothing listens there
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0",
           "LEANPREMISE_CACHE_DIR": str(tmp_path), "HF_HUB_ETAG_TIMEOUT": "2", "HF_HUB_DOWNLOAD_TIMEOUT": "2"}
    proc = subprocess.run([sys.executable, "-m", "leanpremise", "serve", "--port", str(free_port()),
                           "--data_dir", str(tmp_path), "--from_hub", "someone/lean-premises@v4.99.0",
                           "someone/model@v4.99.0"], env=env, check=False, capture_output=True, text=True, timeout=LIVENESS_S)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "could not download premises.tar.gz from someone/lean-premises@v4.99.0" in proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr


def test_settings_read_the_original_environment_variables(monkeypatch, tmp_path):
    from leanpremise.serve.settings import load_config

    monkeypatch.chdir(tmp_path)  # no .env here
    for name, value in {"MAX_K": "16  # comment", "MAX_NEW_PREMISES": "7", "LRU_CACHE_SIZE": "99",
                        "DTYPE": "float16", "EMBED_SERVICE_TIMEOUT": "", "BUNDLE_DIR": "/b",
                        "EMBED_SERVICE_MAX_CONCURRENT_INPUTS": "64", "EMBED_SERVICE_URL": "http://tei:80",
                        "URGENT_MAX_TEXTS": "3", "BULK_CHUNK": "5"}.items():
        monkeypatch.setenv(name, value)
    cfg = load_config()
    assert (cfg.max_k, cfg.max_new_premises, cfg.lru_cache_size, cfg.dtype) == (16, 7, 99, "float16")
    assert cfg.embed_service_timeout == 30.0 and cfg.embed_service_max_concurrent_inputs == 64  # a bound by default
    assert cfg.bundle == Path("/b") and cfg.embed_service_url == "http://tei:80"
    assert (cfg.urgent_max_texts, cfg.bulk_chunk) == (3, 5)


def test_settings_defaults_are_the_original_servers(monkeypatch, tmp_path):
    from leanpremise.serve.settings import load_config

    monkeypatch.chdir(tmp_path)
    for name in ("MAX_K", "MAX_NEW_PREMISES", "LRU_CACHE_SIZE", "DTYPE"):
        monkeypatch.delenv(name, raising=False)
    cfg = load_config()
    assert (cfg.max_k, cfg.max_new_premises, cfg.lru_cache_size, cfg.dtype) == (1024, 2048, 131072, "float32")


def test_a_dotenv_file_is_read_and_the_environment_and_flags_override_it(monkeypatch, tmp_path):
    from leanpremise.serve.settings import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAX_K=12  # per request\nLRU_CACHE_SIZE=500\nDTYPE=bfloat16\n"
                                   "HF_TOKEN=not-a-setting\n")
    monkeypatch.delenv("MAX_K", raising=False)
    monkeypatch.delenv("DTYPE", raising=False)
    monkeypatch.setenv("LRU_CACHE_SIZE", "700")
    cfg = load_config()
    assert (cfg.max_k, cfg.lru_cache_size, cfg.dtype) == (12, 700, "bfloat16")  # env over .env
    assert load_config(max_k="20", lru_cache_size=None).max_k == 20  # a flag over .env
    monkeypatch.setenv("MAX_K", "30")
    assert load_config().max_k == 30 and load_config(max_k="40").max_k == 40  # a flag over the env
    assert load_config(env_file=None).dtype == "float32"


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_the_original_search_batch_size_is_warned_about_not_silently_dropped(monkeypatch, tmp_path, caplog, where):
    from leanpremise.serve.settings import load_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAX_QUERIES_PER_SEARCH", raising=False)
    if where == "environment":
        monkeypatch.setenv("SEARCH_BATCH_SIZE", "4")
    else:
        monkeypatch.delenv("SEARCH_BATCH_SIZE", raising=False)
        (tmp_path / ".env").write_text("SEARCH_BATCH_SIZE=4\n")
    with caplog.at_level("WARNING"):
        cfg = load_config()
    assert "SEARCH_BATCH_SIZE is not read: the setting is now MAX_QUERIES_PER_SEARCH" in caplog.text
    assert cfg.max_queries_per_search == 16  # the old name changes nothing
    caplog.clear()
    monkeypatch.delenv("SEARCH_BATCH_SIZE", raising=False)
    (tmp_path / ".env").unlink(missing_ok=True)
    with caplog.at_level("WARNING"):
        load_config()
    assert "SEARCH_BATCH_SIZE" not in caplog.text


@pytest.mark.parametrize(("env", "flags", "named"), [
    ({"MAX_K": "lots"}, {}, "MAX_K (--max_k)"),
    ({}, {"max_k": "0"}, "MAX_K (--max_k)"),
    ({"DTYPE": "int4"}, {}, "DTYPE (--dtype)"),
    ({"EMBED_BACKEND": "gpu"}, {}, "EMBED_BACKEND (--backend)"),
    ({}, {"embed_service_max_concurrent_inputs": "x"}, "EMBED_SERVICE_MAX_CONCURRENT_INPUTS (--max_concurrent_inputs)"),
    ({"EMBED_BACKEND": "tei"}, {}, "EMBED_SERVICE_URL"),
])
def test_a_bad_setting_is_one_line_naming_its_variable_and_flag(monkeypatch, tmp_path, env, flags, named):
    from leanpremise.serve.settings import ConfigError, load_config

    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_config(**flags)
    message = str(info.value)
    assert named in message and "\n" not in message and "pydantic" not in message


def test_serve_flags_come_from_the_settings_with_env_names_and_defaults():
    from leanpremise.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["serve"]
    text = " ".join(sub.format_help().split())  # argparse wraps lines
    assert "[env MAX_K; default 1024]" in text and "[env LRU_CACHE_SIZE; default 131072]" in text
    assert "--max_queries_per_search INT" in text and "--dtype {float32,float16,bfloat16}" in text
    assert "--no_verify" in text and "--max_concurrent_inputs INT" in text
    args = parser.parse_args(["serve", "/some/bundle", "--max_k", "5", "--no_verify"])
    assert (args.bundle, args.max_k, args.verify, args.lru_cache_size) == (["/some/bundle"], "5", False, None)


def test_serve_with_a_bad_bundle_or_setting_ends_in_one_line_before_uvicorn_starts(tmp_path):
    env = {**os.environ, "LEANPREMISE_CACHE_DIR": str(tmp_path)}
    for argv, expected in [([str(tmp_path / "nothing")], "no such bundle dir"),
                           ([str(tmp_path)], "manifest.json: missing"),
                           ([str(tmp_path), "--max_k", "many"], "MAX_K (--max_k)")]:
        proc = subprocess.run([sys.executable, "-m", "leanpremise", "serve", *argv, "--port", str(free_port())],
                              env=env, check=False, capture_output=True, text=True, timeout=LIVENESS_S)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Uvicorn running" not in proc.stderr + proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---- the index and the embedding service, without HTTP -----------------------------------------


@pytest.fixture(scope="module")
def sample_corpus(sample_dataset):
    return sample_dataset.corpus


def _stored(emb: np.ndarray, dtype: str) -> np.ndarray:
    """The rows as the index stores them at `dtype` (bfloat16 rounded to nearest, as torch does)."""
    import torch

    return torch.from_numpy(emb).to(getattr(torch, dtype)).float().numpy()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("extra", [8, 0])
def test_search_equals_brute_force_over_the_stored_rows(sample_corpus, dtype, extra, monkeypatch):
    """Exact top-k at the serving precision, for every kind of candidate set; extra=0 makes the first
    scan fetch exactly k rows, so the fetch-more path runs whenever a row lies within the error bound."""
    from leanpremise.serve.search import exact as exact_search
    from leanpremise.serve.search.index import PremiseIndex

    monkeypatch.setattr(exact_search, "SCAN_EXTRA", extra)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(sample_corpus), 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    idx = PremiseIndex(sample_corpus, emb, dtype)
    stored = _stored(emb, dtype)
    queries = rng.standard_normal((3, 16)).astype(np.float32)
    mods = rng.choice(len(sample_corpus.modules), 40, replace=False).tolist()
    cases = [idx.import_mask(None, None), idx.import_mask(mods, None), idx.import_mask(mods[:3], ["Nat.add_comm"]),
             idx.import_mask(None, None, overridden=[sample_corpus.names[5]]), idx.import_mask([], [])]
    for cand in cases:
        scores, ids = search_stacked(idx, queries, cand, 20)
        allowed = np.ones(len(sample_corpus), bool) if cand.mask is None else cand.mask
        full = stored @ queries.T
        for b in range(3):
            ref = np.flatnonzero(allowed)[np.argsort(-full[allowed, b], kind="stable")[:20]]
            assert len(ids[b]) == min(20, allowed.sum())
            np.testing.assert_array_equal(ids[b], ref)
            np.testing.assert_allclose(scores[b], full[ref, b], atol=1e-5)


def test_near_ties_beyond_the_first_fetch_are_still_ranked_exactly(sample_corpus):
    """Rows whose float32 scores differ by less than float16 can resolve: the scan cannot order them,
    so the search must fetch all of them and let the float32 rescoring decide."""
    from leanpremise.serve.search.index import PremiseIndex

    rng = np.random.default_rng(3)
    n, dim = len(sample_corpus), 32
    emb = rng.standard_normal((n, dim)).astype(np.float32) * 0.05
    base = np.zeros(dim, np.float32)
    base[0] = 1.0
    near = rng.choice(n, 200, replace=False)
    emb[near] = base + rng.standard_normal((200, dim)).astype(np.float32) * 1e-4  # 200 near-duplicates
    idx = PremiseIndex(sample_corpus, emb)
    calls = []

    class CountingScan:  # the faiss index, counting the scans
        def __init__(self, inner):
            self.inner = inner

        def search(self, *args, **kwargs):
            calls.append(args[1])
            return self.inner.search(*args, **kwargs)

        def reconstruct_batch(self, ids):
            return self.inner.reconstruct_batch(ids)

    idx.rows.scan = CountingScan(idx.rows.scan)
    query = base + rng.standard_normal(dim).astype(np.float32) * 1e-3
    scores, ids = search_stacked(idx, query[None], idx.import_mask(None, None), 10)
    ref = np.argsort(-(emb @ query), kind="stable")[:10]
    np.testing.assert_array_equal(ids[0], ref)
    np.testing.assert_allclose(scores[0], emb[ref] @ query, rtol=1e-6)
    assert set(ids[0]) <= set(near)
    assert len(calls) > 1 and calls[-1] >= 200  # it fetched more, past all the near-duplicates


def test_scan_scores_stay_within_the_error_bound():
    """The certified bound must hold for every row, else exactness is luck: check it on rows with a
    spread of norms and components, including float16 subnormals."""
    from leanpremise.serve.search.exact import SAFETY, ExactSearcher

    rng = np.random.default_rng(5)
    emb = rng.standard_normal((5000, 384)).astype(np.float32)
    emb *= rng.uniform(0.01, 3.0, (5000, 1)).astype(np.float32)
    emb[:100, :50] = rng.uniform(-1e-5, 1e-5, (100, 50))
    s = ExactSearcher(emb)
    for _ in range(5):
        q = rng.standard_normal(384).astype(np.float32) * rng.uniform(0.1, 10)
        approx, labels = s.scan.search(q[None], len(emb))
        exact = emb[labels[0]] @ q
        gap = np.abs(approx[0] - exact).max()
        eps = s.scan_error(q)
        assert 0 < gap <= eps / SAFETY, (gap, eps)  # within the bound without its safety margin


def test_module_entries_resolve_from_positions_names_and_paths(sample_corpus):
    from leanpremise.serve.search.index import PremiseIndex

    idx = PremiseIndex(sample_corpus, np.zeros((len(sample_corpus), 4), np.float32))
    name = next(m for m in sample_corpus.modules if m.count(".") >= 2)
    mid = sample_corpus.module_index[name]
    path = name.replace(".", "/") + ".lean"
    assert idx.module_id(mid) == mid and idx.module_id(name) == mid
    assert idx.module_id(path) == mid and idx.module_id("./" + path) == mid
    assert idx.module_id(".lake/packages/x/" + path) == mid and idx.module_id(path.replace("/", "\\")) == mid
    assert idx.module_id(-1) is None and idx.module_id(len(sample_corpus.modules)) is None
    assert idx.module_id("Not.A.Module") is None


class CountingEmbedder:
    """Records every text and batch; with `hold`, its first call waits until `release` is set."""

    dim = 4
    name = "counting"

    def __init__(self, hold: bool = False):
        self.texts: list[str] = []
        self.batches: list[list[str]] = []
        self.running, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def encode(self, texts):
        self.running.set()
        assert self.release.wait(30)
        self.texts += texts
        self.batches.append(list(texts))
        out = np.array([[len(t), 1, 0, 0] for t in texts], dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_embedding_service_caches_batches_and_shares_pending_texts():
    from leanpremise.serve.embedding.service import EmbeddingService

    async def scenario():
        emb = CountingEmbedder()
        svc = EmbeddingService(emb, service_config(lru_cache_size=3, embed_service_max_concurrent_inputs=100,
                                                   max_client_batch_size=8, embed_batch_size=64))
        await svc.start()
        try:
            results = await asyncio.gather(*[svc.embed([f"s{i}"], ["p1", "p2", "p1"]) for i in range(5)])
            assert sorted(emb.texts) == sorted(["p1", "p2"] + [f"s{i}" for i in range(5)])  # each text once
            for states, prem in results:
                assert states.shape == (1, 4) and prem.shape == (3, 4)
                np.testing.assert_array_equal(prem[0], prem[2])
            await svc.embed(["s"], ["p3", "p4"])  # cache holds 3: p1 evicted (least recently used)
            emb.texts.clear()
            await svc.embed([], ["p1", "p4"])
            assert emb.texts == ["p1"]
        finally:
            await svc.stop()

    asyncio.run(scenario())


def test_cached_requests_overtake_a_bulk_embedding():
    """A request with one uncached text (its state) is embedded in a small batch of its own, not in the
    middle of other requests' 40 new premises each."""
    from leanpremise.serve.embedding.service import EmbeddingService

    emb = CountingEmbedder(hold=True)

    async def scenario():
        svc = EmbeddingService(emb, service_config(embed_service_max_concurrent_inputs=200, max_client_batch_size=8,
                                                   embed_batch_size=64))
        await svc.start()
        done = []
        try:
            async def bulk(j):
                await svc.embed([f"bulk state {j}"], [f"premise {j}.{i}" for i in range(40)])
                done.append("bulk")

            async def light():
                await svc.embed(["light state"], [])
                done.append("light")

            bulks = [asyncio.create_task(bulk(j)) for j in range(4)]
            assert await asyncio.to_thread(emb.running.wait, 30)  # the first bulk chunk is being embedded
            lights = asyncio.create_task(light())
            while not svc.lanes._urgent:  # the light request is queued behind it
                await asyncio.sleep(0)
            emb.release.set()
            await asyncio.wait_for(asyncio.gather(*bulks, lights), 30)
        finally:
            emb.release.set()
            await svc.stop()
        return done

    assert asyncio.run(scenario())[0] == "light"
    assert emb.batches[1] == ["light state"]  # right after the chunk that was running, in a batch of its own
    # the bulk requests' own goals went first, urgently, in one batch; their new premises one chunk at a time
    assert sorted(emb.batches[0]) == [f"bulk state {j}" for j in range(4)]
    bulk_batches = [b for b in emb.batches[1:] if b != ["light state"]]
    assert len(bulk_batches[0]) == 8 and max(map(len, bulk_batches)) == 8  # one chunk (BULK_CHUNK) at a time
    assert sorted(t for b in bulk_batches for t in b) == sorted(
        [f"premise {j}.{i}" for j in range(4) for i in range(40)])

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def held_service(emb: CountingEmbedder, max_inflight: int):
    """An embedding service over `emb` with one worker, chunks of 8 and an urgent lane of 3 texts, and
    `max_inflight` bulk texts; released and stopped on the way out, whatever the test did."""
    from leanpremise.serve.embedding.service import EmbeddingService

    svc = EmbeddingService(emb, service_config(embed_service_max_concurrent_inputs=max_inflight,
                                               max_client_batch_size=8, bulk_chunk=8, urgent_max_texts=3,
                                               embed_workers=1))
    await svc.start()
    try:
        yield svc
    finally:
        emb.release.set()
        await svc.stop()


def test_a_small_bulk_request_is_not_queued_behind_a_burst_of_large_ones():
    """Issue 22: the bulk lane takes fewest texts left first (with ageing): a request of 16 new premises that
    arrives while two requests of 200 wait is embedded before either goes on, where in arrival order it
    would wait behind a chunk of each; the large ones still finish."""

    emb = CountingEmbedder(hold=True)

    async def scenario():
        async with held_service(emb, 64) as svc:
            big = [asyncio.create_task(svc.embed([], [f"big{j} premise {i}" for i in range(200)])) for j in range(2)]
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)  # a first chunk is being embedded
            while svc.lanes.queued_bulk() < 1:  # the other large request's first chunk waits
                await asyncio.sleep(0)
            small = asyncio.create_task(svc.embed([], [f"small premise {i}" for i in range(16)]))
            while svc.lanes.queued_bulk() < 2:
                await asyncio.sleep(0)
            emb.release.set()
            await asyncio.wait_for(asyncio.gather(small, *big), LIVENESS_S)

    asyncio.run(scenario())
    first, second, third = emb.batches[:3]
    assert all(t.startswith("big") for t in first)
    assert sorted(second + third) == sorted(f"small premise {i}" for i in range(16))
    assert len(emb.texts) == 416 and len(set(emb.texts)) == 416


def test_a_full_bulk_bound_turns_away_the_request_with_the_most_left_not_a_smaller_newcomer():
    """Issue 22: with the bulk bound full of two large requests' chunks (one embedding, one queued), a request
    of 16 new premises is admitted and answered, and the queued large request is refused (Overloaded: a
    503 for that client); a third large request arriving then is refused itself. The bound is never
    exceeded."""
    from leanpremise.serve.embedding.lanes import Overloaded

    emb = CountingEmbedder(hold=True)
    seen = []

    async def scenario():
        async with held_service(emb, 16) as svc:
            first = asyncio.create_task(svc.embed([], [f"big0 premise {i}" for i in range(200)]))
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)
            second = asyncio.create_task(svc.embed([], [f"big1 premise {i}" for i in range(200)]))
            while svc.lanes.bulk_inflight < 16:  # the bound is full: one chunk embedding, one queued
                await asyncio.sleep(0)
            small = asyncio.create_task(svc.embed([], [f"small premise {i}" for i in range(16)]))
            with pytest.raises(Overloaded):
                await asyncio.wait_for(second, LIVENESS_S)
            with pytest.raises(Overloaded):
                await svc.embed([], [f"big2 premise {i}" for i in range(200)])
            emb.release.set()
            while not small.done() or not first.done():
                seen.append(svc.lanes.bulk_inflight)
                await asyncio.sleep(0)
            _, premises = small.result()
            assert premises.shape == (16, 4)
            assert first.result()[1].shape == (200, 4)

    asyncio.run(scenario())
    assert max(seen) <= 16
    assert not any(t.startswith(("big1", "big2")) for t in emb.texts)


def test_auto_backend_takes_int8_onnx_on_cpu_then_float32_then_torch(tmp_path):
    from leanpremise.serve.embedding.backends import onnx_choice

    class FakeBundle:
        model_dir = tmp_path

        def __init__(self, have):
            self.have = have

        def onnx_path(self, int8=False):
            return self.have.get(int8)

    both = FakeBundle({True: Path("q8.onnx"), False: Path("fp32.onnx")})
    fp32_only = FakeBundle({False: Path("fp32.onnx")})
    neither = FakeBundle({})
    assert onnx_choice("auto", both, on_cpu=True) == Path("q8.onnx")
    assert onnx_choice("auto", fp32_only, on_cpu=True) == Path("fp32.onnx")
    assert onnx_choice("auto", neither, on_cpu=True) is None
    assert onnx_choice("auto", both, on_cpu=False) is None  # a GPU runs PyTorch
    assert onnx_choice("onnx", both, on_cpu=True) == Path("fp32.onnx")
    assert onnx_choice("torch", both, on_cpu=True) is None
    with pytest.raises(FileNotFoundError, match="no int8 ONNX model"):
        onnx_choice("onnx-int8", fp32_only, on_cpu=True)


def test_a_burst_of_new_premises_refuses_its_own_requests_never_a_goal():
    """Issue 22: one request's new premises fill the bulk bound; another bursting request is refused
    (Overloaded: 503 for that client), while a request bringing a new goal and a few new premises, and the
    bursting request's own goal, are queued urgently and answered."""
    from leanpremise.serve.embedding.lanes import Overloaded

    emb = CountingEmbedder(hold=True)

    async def scenario():
        async with held_service(emb, 8) as svc:
            burst = asyncio.create_task(svc.embed(["burst goal"], [f"burst premise {i}" for i in range(40)]))
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)  # its goal is being embedded
            emb.release.set()
            while svc.lanes.bulk_inflight < 8:  # then its first bulk chunk fills the bound
                await asyncio.sleep(0)
            with pytest.raises(Overloaded):
                await svc.embed(["second burst goal"], [f"other premise {i}" for i in range(40)])
            states, premises = await svc.embed(["honest new goal"], ["honest premise a", "honest premise b"])
            assert states.shape == (1, 4) and premises.shape == (2, 4)
            await asyncio.wait_for(burst, LIVENESS_S)
            assert emb.texts.index("burst goal") < emb.texts.index("burst premise 0")
            assert "second burst goal" not in emb.texts  # refused before its goal took an urgent worker's time

    asyncio.run(scenario())


# ---- each client's share (issue 28) ---------------------------------------------------------------------


class OneAtATimeEmbedder(CountingEmbedder):
    """A CPU-like embedder: one request's chunk per call (no batching across requests)."""

    batches_well = False


def test_the_urgent_lane_takes_clients_in_turn():
    """Six requests of three fresh goals from one client are queued; another client's one goal, arriving
    after them, waits for one chunk of that client at most (round robin), not for all of them."""
    from leanpremise.serve.jobs import CLIENT

    emb = OneAtATimeEmbedder(hold=True)

    async def scenario():
        async with held_service(emb, 64) as svc:
            CLIENT.set("attacker")
            many = [asyncio.create_task(svc.embed([f"a{j} goal {i}" for i in range(3)], [])) for j in range(6)]
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)
            while len(svc.lanes._urgent.get("attacker", ())) < 5:
                await asyncio.sleep(0)
            CLIENT.set("honest")
            one = asyncio.create_task(svc.embed(["honest goal"], []))
            while "honest" not in svc.lanes._urgent:
                await asyncio.sleep(0)
            emb.release.set()
            await asyncio.wait_for(asyncio.gather(one, *many), LIVENESS_S)

    asyncio.run(scenario())
    # after the chunk running and at most one more of the attacker's (its turn), not after all five
    assert emb.batches.index(["honest goal"]) <= 2
    assert len(emb.batches) == 7 and len(emb.texts) == 19  # the attacker's requests are all served in turn


def test_goals_beyond_the_first_few_are_embedded_as_bulk_in_its_chunks():
    """A request of 20 fresh goals: its first three (URGENT_MAX_TEXTS) urgently, the others as bulk chunks of
    BULK_CHUNK, under the bulk bound (which counts them while they are queued)."""
    emb = OneAtATimeEmbedder()
    seen = []

    async def scenario():
        async with held_service(emb, 8) as svc:
            task = asyncio.create_task(svc.embed([f"goal {i}" for i in range(20)], []))
            while not task.done():
                seen.append(svc.lanes.bulk_inflight)
                await asyncio.sleep(0)
            await task

    asyncio.run(scenario())
    assert emb.batches[0] == ["goal 0", "goal 1", "goal 2"]
    assert [len(b) for b in emb.batches[1:]] == [8, 8, 1]
    assert max(seen) == 8


def test_a_request_that_goes_away_has_its_queued_chunks_dropped():
    emb = OneAtATimeEmbedder(hold=True)

    async def scenario():
        async with held_service(emb, 64) as svc:
            gone = asyncio.create_task(svc.embed([], [f"premise {i}" for i in range(40)]))
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)  # its first chunk is being embedded
            gone.cancel()
            emb.release.set()
            with pytest.raises(asyncio.CancelledError):
                await gone
            await asyncio.wait_for(svc.embed(["after"], []), LIVENESS_S)
            return svc.lanes.inflight

    assert asyncio.run(scenario()) == 0
    assert emb.batches == [[f"premise {i}" for i in range(8)], ["after"]]  # the chunk running finished, no more


def test_the_bulk_lane_takes_another_clients_later_chunk_before_one_clients_queued_chunks():
    """Issue 28: with one chunk of a client being embedded and five more of it queued, each with fewer texts
    left than another client's chunk that arrives after them, the other client's chunk is taken next; the
    first client's chunks then follow in their own order (fewest left first)."""
    from leanpremise.serve.embedding.lanes import EmbeddingLanes
    from leanpremise.serve.jobs import CLIENT
    from leanpremise.serve.prometheus import Metrics

    emb = CountingEmbedder(hold=True)

    async def scenario():
        lanes = EmbeddingLanes(emb, service_config(embed_service_max_concurrent_inputs=128, bulk_chunk=8,
                                                   max_client_batch_size=8, embed_workers=1), Metrics())
        await lanes.start()
        try:
            CLIENT.set("attacker")
            many = [asyncio.create_task(lanes.submit([f"a{j} goal {i}" for i in range(8)], False, 8 + j))
                    for j in range(6)]
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)  # a0 is being embedded
            while lanes.queued_bulk() < 5:
                await asyncio.sleep(0)
            CLIENT.set("honest")
            honest = asyncio.create_task(lanes.submit([f"h premise {i}" for i in range(8)], False, 64))
            while lanes.queued_bulk() < 6:
                await asyncio.sleep(0)
            emb.release.set()
            await asyncio.wait_for(asyncio.gather(honest, *many), LIVENESS_S)
            return lanes.inflight
        finally:
            emb.release.set()
            await lanes.stop()

    assert asyncio.run(scenario()) == 0
    assert [batch[0].split()[0] for batch in emb.batches] == ["a0", "h", "a1", "a2", "a3", "a4", "a5"]


def test_a_client_queueing_chunk_after_chunk_does_not_starve_one_with_chunks_queued():
    """Issue 28: a client whose request queues its chunks one after another (nothing of it queued between
    two) keeps its count of characters taken, so the other client's queued chunks are taken in turn with
    its own, not all after them."""
    from leanpremise.serve.embedding.lanes import EmbeddingLanes
    from leanpremise.serve.jobs import CLIENT
    from leanpremise.serve.prometheus import Metrics

    emb = CountingEmbedder(hold=True)

    async def scenario():
        lanes = EmbeddingLanes(emb, service_config(embed_service_max_concurrent_inputs=256, bulk_chunk=8,
                                                   max_client_batch_size=8, embed_workers=1), Metrics())
        await lanes.start()
        try:
            CLIENT.set("other")
            queued = [asyncio.create_task(lanes.submit([f"o{j} text {i}" for i in range(8)], False, 8))
                      for j in range(4)]
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)  # o0 is being embedded
            while lanes.queued_bulk() < 3:
                await asyncio.sleep(0)
            CLIENT.set("sequential")

            async def one_chunk_at_a_time():
                for j in range(8):
                    await lanes.submit([f"s{j} text {i}" for i in range(8)], False, 64 - 8 * j)

            sequential = asyncio.create_task(one_chunk_at_a_time())
            while lanes.queued_bulk() < 4:
                await asyncio.sleep(0)
            emb.release.set()
            await asyncio.wait_for(asyncio.gather(sequential, *queued), LIVENESS_S)
        finally:
            emb.release.set()
            await lanes.stop()

    asyncio.run(scenario())
    order = [batch[0].split()[0] for batch in emb.batches]
    assert order.index("o3") < order.index("s7"), order  # the other client's last chunk before the end


def test_one_clients_many_bulk_requests_do_not_queue_ahead_of_another_clients_one():
    """Issue 28: a client's bulk texts already queued count in its next chunk's key, so another client's
    request of the same size, arriving later, finishes before the first client's requests all do."""
    from leanpremise.serve.jobs import CLIENT

    emb = OneAtATimeEmbedder(hold=True)
    finished = []

    async def scenario():
        async with held_service(emb, 128) as svc:
            async def one(name, j):
                await svc.embed([], [f"{name}{j} premise {i}" for i in range(40)])
                finished.append(name)

            CLIENT.set("attacker")
            many = [asyncio.create_task(one("a", j)) for j in range(4)]
            assert await asyncio.to_thread(emb.running.wait, LIVENESS_S)
            while svc.lanes.queued_bulk() < 3:
                await asyncio.sleep(0)
            CLIENT.set("honest")
            honest = asyncio.create_task(one("h", 0))
            while svc.lanes.queued_bulk() < 4:
                await asyncio.sleep(0)
            emb.release.set()
            await asyncio.wait_for(asyncio.gather(honest, *many), LIVENESS_S)

    asyncio.run(scenario())
    assert finished.index("h") < 3, finished  # before the attacker's last two requests


def test_onnx_model_is_run_from_the_bytes_its_manifest_checksum_verified(serve_bundle, cache_dir, tmp_path):
    """ONNX Runtime gets the graph's bytes read once and checked against the manifest, so a graph swapped
    after the bundle was verified is refused in one line, never run (issue 28's verified-bytes point)."""
    import shutil

    from leanpremise.model.backends import onnx_session
    from leanpremise.serve.embedding.backends import manifest_sha256
    from leanpremise.serve.revisions.loader import load_bundle

    copy = tmp_path / "b"
    shutil.copytree(serve_bundle, copy, symlinks=True)
    loaded = load_bundle(copy, cache_dir)
    path = loaded.onnx_path(int8=False)
    expected = manifest_sha256(loaded, path)
    assert expected == loaded.manifest.checksums["model/onnx/model.onnx"]
    assert onnx_session(path, 1, expected).get_outputs()  # the verified graph runs
    graph = bytearray(path.read_bytes())
    graph[-1] ^= 1  # same size: only the checksum tells
    path.write_bytes(bytes(graph))
    with pytest.raises(ValueError) as err:
        onnx_session(path, 1, expected)
    assert str(err.value).startswith(f"{path}: its sha256 differs") and "\n" not in str(err.value)
