"""Re-ranked serving: a bundle exported with `--rerank` is served re-ranked over real HTTP on loopback, and a
served ranking equals evaluation's reranker (`rerank apply`'s code) for the request a Lean client would send
for the same state; a corrupt reranker or one of another feature version refuses the bundle; RERANK=false
serves the plain ranking; /health says which. Lean's default client's body (tests/lean_client.py, built from
the client's code) is served as `rerank apply` ranks it for the same states."""

from __future__ import annotations

import itertools
import json
import shutil

import httpx
import numpy as np
import pytest

from crafted_models import CRAFTS, craft
from lean_client import default_client_body
from liveness import LIVENESS_S
from serve_helpers import ThreadServer, export_for_tests, service_config

K = 32
STATES = 10
REPLAY_K = 100
RANKERS = ["bm25", "mepo", "usage"]


@pytest.fixture(scope="module")
def setup(sample_dataset, tiny_model_dir, cache_dir, tmp_path_factory):
    """A small lexical reranker (with the mention features) trained on the sample (few states, few rounds) and
    a bundle holding it."""
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.train import RerankConfig, train_reranker
    from leanpremise.model.encoder import encode_texts, load_model

    root = tmp_path_factory.mktemp("rerank-serve")
    ds = sample_dataset
    rankers, table = build_rankers(ds, IndexView.full(ds.corpus), RANKERS, progress=False)
    train, valid = ds.split_ids("train"), ds.split_ids("valid")
    # with the optional mention features: served and applied through the spec's `families` (dense_setup's
    # reranker has none)
    train_reranker(ds, rankers, table, train, valid[:200],
                   RerankConfig(max_rounds=20, max_states=400, families="mentions"), root / "rr", progress=False)
    model = load_model(str(tiny_model_dir), "cpu")
    np.save(root / "corpus.npy", encode_texts(model, ds.corpus.texts, batch_size=64))
    bundle = export_for_tests(tiny_model_dir, root / "bundle", None, cache_dir, rerank=root / "rr",
                              corpus_embeddings=root / "corpus.npy")
    return {"root": root, "ds": ds, "rankers": rankers, "table": table, "bundle": bundle}


def serve(bundle, cache_dir, **kw):
    from leanpremise.serve.http.app import create_app

    cfg = service_config(bundle=bundle, backend="torch", data_dir=cache_dir, embed_workers=1, dtype="float32",
                         max_k=128, **kw)
    return ThreadServer(create_app(cfg)).start()


def client_request(setup, s: int, k: int = K) -> dict:
    """What a Lean client sends for state `s`: its goal, its file's earlier declarations as local premises,
    its import closure (evaluation's client simulation, eval/rerank/requests.py, builds the same)."""
    from leanpremise.eval.rerank.requests import build_request

    ds, table = setup["ds"], setup["table"]
    req = build_request(ds, setup["rankers"].view, table, s)
    m = int(ds.states.module_id[s])
    closure = ds.corpus.imports_of(m).tolist()
    return {"state": ds.states.state[s], "imported_modules": [ds.corpus.modules[i] for i in closure],
            "local_premises": [ds.corpus.names[i] for i in req.input.local_ids.tolist()], "k": k}


def picked_states(ds) -> list[int]:
    """Test states with a local premise (so the structure features matter), spread over the split."""
    ids = [s for s in ds.split_ids("test").tolist()
           if (ds.corpus.module_id[ds.access.ids(s)] == ds.states.module_id[s]).any()]
    return sorted(set(np.asarray(ids)[np.linspace(0, len(ids) - 1, STATES).astype(int)].tolist()))


def eval_ranking(setup, states: list[int], k: int) -> list[list[str]]:
    """Evaluation's reranked lists (the code `rerank apply` runs) of `states`, as premise names."""
    from leanpremise.eval.rerank.apply import rerank_states
    from leanpremise.rank.rerank.model import Reranker

    ds = setup["ds"]
    ids, _scores = rerank_states(Reranker.load(setup["root"] / "rr"), ds, setup["rankers"], setup["table"],
                                np.asarray(states), k, progress=False)
    return [[ds.corpus.names[i] for i in row if i >= 0] for row in ids.tolist()]


@pytest.fixture(scope="module")
def server(setup, cache_dir):
    srv = serve(setup["bundle"], cache_dir)
    yield srv
    srv.stop()


def test_export_lists_and_checksums_the_reranker(setup):
    from leanpremise.bundle.manifest import Manifest

    manifest = Manifest.read(setup["bundle"])
    assert manifest.rerank == "rerank/reranker.json"
    for rel in ("rerank/reranker.json", "rerank/model.txt", "hybrid/bm25/bm25_stats.json",
                "rerank/module_usage/module_usage_counts.npy", "hybrid/usage.npy"):
        assert rel in manifest.checksums, rel
    assert (setup["bundle"] / "rerank/reranker.json").read_bytes() == (setup["root"] / "rr/reranker.json").read_bytes()
    from leanpremise.rank.rerank.spec import read_spec

    spec = read_spec(setup["bundle"] / "rerank")
    assert spec.families == ["mentions"] and spec.features[-1].name == "mention_last_share"


def test_served_ranking_equals_the_eval_reranker(setup, server):
    ds = setup["ds"]
    health = httpx.get(f"{server.url}/health", timeout=LIVENESS_S).json()
    assert health["rerank"] is True and health["rerank_in_bundle"] is True
    states = picked_states(ds)
    for k in (K, 5):
        want = eval_ranking(setup, states, k)
        for s, names in zip(states, want):
            r = httpx.post(f"{server.url}/retrieve", json=client_request(setup, s, k), timeout=60)
            assert r.status_code == 200, r.text
            got = r.json()
            assert [p["name"] for p in got] == names, (s, k)
            scores = [p["score"] for p in got]
            assert all(a >= b for a, b in itertools.pairwise(scores)), s
            assert len(names) == k or len(names) == len(ds.access.ids(s)), s


def test_a_request_of_several_goals_ranks_each_as_alone(setup, server):
    """One goal is finished on the event loop, several in a lexical thread: both give rerank apply's order."""
    s = picked_states(setup["ds"])[0]
    want = eval_ranking(setup, [s], K)[0]
    body = client_request(setup, s, K)
    body["state"] = [body["state"], body["state"]]
    r = httpx.post(f"{server.url}/retrieve", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert [[p["name"] for p in goal] for goal in r.json()] == [want, want]


def test_rerank_false_serves_the_plain_ranking(setup, cache_dir):
    ds = setup["ds"]
    srv = serve(setup["bundle"], cache_dir, rerank=False)
    try:
        health = httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()
        assert health["rerank"] is False and health["rerank_in_bundle"] is True
        states = picked_states(ds)
        got = [[p["name"] for p in httpx.post(f"{srv.url}/retrieve", json=client_request(setup, s),
                                              timeout=60).json()] for s in states]
        # the plain ranking, not re-ranked: a small reranker may agree with it on one state's top K, not on all
        assert got != eval_ranking(setup, states, K)
    finally:
        srv.stop()


def rewrite(bundle, rel: str, data: bytes) -> None:
    """Replace one bundle file and its manifest entry (so the checksums pass and the reader itself judges)."""
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.bundle.verify import sha256_file

    (bundle / rel).write_bytes(data)
    manifest = Manifest.read(bundle)
    manifest.checksums[rel] = sha256_file(bundle / rel)
    manifest.sizes[rel] = len(data)
    (bundle / "manifest.json").write_bytes(manifest.to_json())


def crafted_copy(setup, where, how: str):
    """A copy of the reranked bundle whose model file is crafted `how` (crafted_models), manifest re-sealed."""
    shutil.copytree(setup["bundle"], where)
    n_features = len(json.loads((where / "rerank/reranker.json").read_text())["features"])
    rewrite(where, "rerank/model.txt", craft((where / "rerank/model.txt").read_text(), how, n_features).encode())
    return where


@pytest.mark.parametrize("damage", ["corrupt model", "unknown feature set", *CRAFTS])
def test_a_bad_reranker_refuses_the_bundle_in_one_line(setup, cache_dir, tmp_path, damage, caplog):
    """Each crafted model (which unchecked would hang a request, or crash the process) refuses its bundle
    at startup, in one line naming the file; this test's process surviving is part of the claim."""
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import load_bundle
    from leanpremise.serve.search.reranked import RerankedRanking

    bundle = tmp_path / "bundle"
    if damage in CRAFTS:
        crafted_copy(setup, bundle, damage)
        expected = "rerank/model.txt"
    elif damage == "corrupt model":
        shutil.copytree(setup["bundle"], bundle)
        rewrite(bundle, "rerank/model.txt", b"tree\nnot a lightgbm model\n")
        expected = "rerank/model.txt"
    else:
        shutil.copytree(setup["bundle"], bundle)
        spec = json.loads((bundle / "rerank/reranker.json").read_text())
        spec["feature_set"] = 99
        rewrite(bundle, "rerank/reranker.json", json.dumps(spec).encode())
        expected = 'field "feature_set": 99'
    loaded = load_bundle(bundle, cache_dir)
    with pytest.raises(BundleError) as e:
        RerankedRanking.load(bundle, loaded.manifest, loaded.corpus)
    assert expected in str(e.value) and "\n" not in str(e.value)
    from leanpremise.serve.http.app import create_app  # the server refuses it at startup, saying why

    srv = ThreadServer(create_app(service_config(bundle=bundle, backend="torch", data_dir=cache_dir,
                                                 embed_workers=1))).start(wait_ready=False)
    try:
        for _ in range(600):
            r = httpx.get(f"{srv.url}/health", timeout=10)
            if r.json().get("status") == "failed":
                break
            import time

            time.sleep(0.1)
        # /health says it failed, not why (paths and exception text go to the log only)
        assert r.status_code == 503 and r.json()["status"] == "failed" and expected not in r.json()["error"]
        assert any(expected in rec.getMessage() for rec in caplog.records)
    finally:
        srv.stop()


def test_a_crafted_reranker_is_refused_at_reload_and_the_revision_served_keeps_serving(setup, cache_dir, tmp_path):
    from leanpremise.serve.http.app import create_app

    served = tmp_path / "served"
    served.mkdir()
    shutil.copytree(setup["bundle"], served / "a")
    cfg = service_config(bundle=served, backend="torch", data_dir=cache_dir, embed_workers=1, dtype="float32",
                         max_k=128, admin_reload=True, admin_token="reload-token")
    srv = ThreadServer(create_app(cfg)).start()
    auth = {"Authorization": "Bearer reload-token"}
    request = client_request(setup, picked_states(setup["ds"])[0])
    try:
        with httpx.Client(base_url=srv.url, timeout=LIVENESS_S) as http:
            before = http.post("/retrieve", json=request)
            assert before.status_code == 200
            for how in CRAFTS:
                crafted_copy(setup, served / "b", how)
                r = http.post("/admin/reload", headers=auth)
                assert r.status_code == 500 and "rerank/model.txt" in r.json()["detail"], (how, r.text)
                again = http.post("/retrieve", json=request)
                assert again.status_code == 200 and again.json() == before.json(), how
                shutil.rmtree(served / "b")
            shutil.copytree(setup["bundle"], served / "b")  # the same bundle unharmed: the reload goes through
            r = http.post("/admin/reload", headers=auth)
            assert r.status_code == 200 and len(r.json()) == 2, r.text
    finally:
        srv.stop()


def test_a_reranker_of_another_dense_model_is_refused(setup):
    from leanpremise.export.rerank_export import check_dense_identity
    from leanpremise.rank.rerank.spec import RankerEntry, RerankerFileError, read_spec

    spec = read_spec(setup["root"] / "rr")
    check_dense_identity(spec, setup["root"] / "rr", {"a" * 64})  # lexical: no model to match
    spec.rankers.insert(0, RankerEntry(kind="dense", name="other", model_identity="0" * 64))
    check_dense_identity(spec, setup["root"] / "rr", {"0" * 64, "a" * 64})
    with pytest.raises(RerankerFileError, match='field "rankers".*model identity 0{64}'):
        check_dense_identity(spec, setup["root"] / "rr", {"a" * 64})



@pytest.fixture(scope="module")
def dense_setup(setup, tiny_model_dir, cache_dir):
    """A reranker reading the dense ranker (the tiny model) beside BM25 and usage, and its bundle."""
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView
    from leanpremise.eval.rerank.train import RerankConfig, train_reranker

    ds, root = setup["ds"], setup["root"]
    rankers, table = build_rankers(ds, IndexView.full(ds.corpus), ["dense", "bm25", "usage"],
                                   model=str(tiny_model_dir), model_name="tiny",
                                   corpus_embeddings=np.load(root / "corpus.npy"), progress=False)
    train_reranker(ds, rankers, table, ds.split_ids("train"), ds.split_ids("valid")[:200],
                   RerankConfig(max_rounds=20, max_states=400), root / "rr-dense", progress=False)
    bundle = export_for_tests(tiny_model_dir, root / "bundle-dense", None, cache_dir, rerank=root / "rr-dense",
                              corpus_embeddings=root / "corpus.npy")
    return {**setup, "rankers": rankers, "table": table, "bundle": bundle, "rr": root / "rr-dense"}


def test_served_dense_reranking_equals_the_eval_reranker(dense_setup, cache_dir):
    from leanpremise.eval.rerank.apply import rerank_states
    from leanpremise.rank.rerank.model import Reranker

    ds = dense_setup["ds"]
    reranker = Reranker.load(dense_setup["rr"])
    assert reranker.kinds[0] == "dense"
    states = picked_states(ds)
    ids, _ = rerank_states(reranker, ds, dense_setup["rankers"], dense_setup["table"], np.asarray(states), K,
                           progress=False)
    srv = serve(dense_setup["bundle"], cache_dir)
    try:
        assert httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()["rerank"] is True
        for s, row in zip(states, ids.tolist()):
            got = httpx.post(f"{srv.url}/retrieve", json=client_request(dense_setup, s), timeout=60).json()
            assert [p["name"] for p in got] == [ds.corpus.names[i] for i in row if i >= 0], s
    finally:
        srv.stop()


def test_export_cli_refuses_an_unknown_feature_version_in_one_line(setup, tiny_model_dir, cache_dir, tmp_path):
    import subprocess
    import sys

    rr = tmp_path / "rr"
    shutil.copytree(setup["root"] / "rr", rr)
    spec = json.loads((rr / "reranker.json").read_text())
    spec["feature_set"] = 99
    (rr / "reranker.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "leanpremise", "export", "--model", str(tiny_model_dir), "--out",
                        str(tmp_path / "b"), "--cache_dir", str(cache_dir), "--no_onnx", "--rerank", str(rr)],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert f"{rr / 'reranker.json'}: field \"feature_set\": 99" in last
    assert not (tmp_path / "b").exists()


# ---- Lean's default client (v4.33): its body replayed ---------------------------------------------------


def own_constants(ds, s: int) -> list[tuple[str, str]]:
    """The constants of state `s`'s file elaborated before it (the declaration being proved is not yet one),
    in an order of the client's hash map (here: by name, backwards; the server must not depend on it)."""
    corpus = ds.corpus
    m = int(ds.states.module_id[s])
    ids = [i for i in range(int(corpus.module_start[m]), int(ds.access.prefix_end[s])) if i != ds.states.decl_id[s]]
    return sorted(((corpus.names[i], corpus.texts[i]) for i in ids), reverse=True)


def default_body(setup, indexed_modules: list[str], s: int, k: int = 100) -> dict:
    ds = setup["ds"]
    corpus = ds.corpus
    m = int(ds.states.module_id[s])

    def constants_of(module: str) -> list[tuple[str, str]]:
        j = corpus.module_index[module]
        return [(corpus.names[i], corpus.texts[i]) for i in range(int(corpus.module_start[j]), int(corpus.module_end[j]))]

    imported = [corpus.modules[i] for i in corpus.imports_of(m).tolist()]
    return default_client_body(ds.states.state[s], imported, indexed_modules, constants_of, own_constants(ds, s), k)


def eval_ranking_as(setup, states: list[int], k: int, client: str) -> list[list[str]]:
    from leanpremise.eval.rerank.apply import rerank_states
    from leanpremise.rank.rerank.model import Reranker

    ds = setup["ds"]
    ids, _ = rerank_states(Reranker.load(setup["root"] / "rr"), ds, setup["rankers"], setup["table"],
                           np.asarray(states), k, progress=False, client=client)
    return [[ds.corpus.names[i] for i in row if i >= 0] for row in ids.tolist()]


def replay_states(ds) -> list[int]:
    """Test states whose file has earlier declarations (what the default client sends as new premises)."""
    ids = [s for s in ds.split_ids("test").tolist()
           if ds.access.prefix_end[s] > ds.corpus.module_start[ds.states.module_id[s]]]
    return sorted(set(np.asarray(ids)[np.linspace(0, len(ids) - 1, 6).astype(int)].tolist()))


def test_the_default_clients_body_is_served_as_rerank_apply_ranks_it(setup, server):
    ds = setup["ds"]
    indexed_modules = httpx.get(f"{server.url}/indexed-modules", timeout=LIVENESS_S).json()
    states = replay_states(ds)
    want = eval_ranking_as(setup, states, REPLAY_K, "default")
    for s, names in zip(states, want):
        b = default_body(setup, indexed_modules, s)
        assert b["local_premises"] == [] and len(b["new_premises"]) > 0
        r = httpx.post(f"{server.url}/retrieve", json=b, timeout=60)
        assert r.status_code == 200, r.text
        assert [p["name"] for p in r.json()] == names, s


def test_the_files_declarations_sent_as_new_premises_rank_as_when_sent_as_local_ones(setup, server):
    """The pre-June body (the file's declarations as local premises) and the default one rank alike."""
    ds = setup["ds"]
    indexed_modules = httpx.get(f"{server.url}/indexed-modules", timeout=LIVENESS_S).json()
    s = replay_states(ds)[-1]
    new = default_body(setup, indexed_modules, s)
    old = dict(new, local_premises=[p["name"] for p in new["new_premises"]], new_premises=[])
    got_new = httpx.post(f"{server.url}/retrieve", json=new, timeout=60).json()
    got_old = httpx.post(f"{server.url}/retrieve", json=old, timeout=60).json()
    assert got_new == got_old
    assert [p["name"] for p in got_old] == eval_ranking_as(setup, [s], REPLAY_K, "pre-june")[0]
