"""Hybrid serving: a bundle exported with `--hybrid` is served fused, and a served ranking equals what
`retrieve --hybrid` wrote for the same state and candidates (the state's accessible premises, sent as
local premises), over real HTTP on loopback."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from liveness import LIVENESS_S
from serve_helpers import ThreadServer, export_for_tests, service_config

K = 16
STATES = 12
RANKERS = ["bm25", "mepo", "usage"]


@pytest.fixture(scope="module")
def setup(sample_dataset, tiny_model_dir, cache_dir, tmp_path_factory):
    """`retrieve --hybrid` on the sample's test split, and two bundles: one with the tuned fusion, one with
    a hand-written four-way RRF (so the served fusion really mixes rankers whatever the tuning picks)."""
    from leanpremise.eval.hybrid import Rankers, hybrid_retrieve
    from leanpremise.model.encoder import encode_texts, load_model

    root = tmp_path_factory.mktemp("hybrid")
    ds = sample_dataset
    model = load_model(str(tiny_model_dir), "cpu")
    corpus_emb = encode_texts(model, ds.corpus.texts, batch_size=64)
    np.save(root / "corpus.npy", corpus_emb)
    hybrid_retrieve(model, ds, "test", RANKERS, K, root / "rp", "tiny", corpus_embeddings=corpus_emb)
    rrf = {"method": "rrf", "rankers": ["tiny", *RANKERS],
           "weights": {"tiny": 0.3, "bm25": 0.25, "mepo": 0.2, "usage": 0.25}, "params": {"k": 60}, "k": K}
    (root / "rrf.json").write_text(json.dumps(rrf))
    bundles = {name: export_for_tests(tiny_model_dir, root / f"bundle-{name}", None, cache_dir, fusion=fusion,
                                      corpus_embeddings=root / "corpus.npy")  # the shipped sample's corpus
               for name, fusion in (("tuned", root / "rp" / "fusion.json"), ("rrf", root / "rrf.json"))}
    return {"root": root, "ds": ds, "rankers": Rankers(model, ds, RANKERS, corpus_emb), "model_dir": tiny_model_dir,
            "bundles": bundles, "rrf": rrf}


def serve(bundle, cache_dir, **kw):
    from leanpremise.serve.http.app import create_app

    cfg = service_config(bundle=bundle, backend="torch", data_dir=cache_dir, embed_workers=1, dtype="float32",
                         max_k=64, **kw)
    return ThreadServer(create_app(cfg)).start()


def accessible_names(ds, s: int) -> list[str]:
    return [ds.corpus.names[i] for i in np.flatnonzero(ds.access.mask(np.array([s]))[0]).tolist()]


def picked_states(ds) -> list[int]:
    """Test states with the most and the fewest accessible premises, and some between."""
    ids = ds.split_ids("test")
    sizes = ds.access.mask(ids).sum(axis=1)
    order = ids[np.argsort(sizes, kind="stable")]
    return sorted(set(order[np.linspace(0, len(order) - 1, STATES).astype(int)].tolist()))


def ask(url, ds, s, k=K, **extra):
    body = {"state": ds.states.state[s], "imported_modules": [], "local_premises": accessible_names(ds, s),
            "k": k, **extra}
    r = httpx.post(f"{url}/retrieve", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_served_ranking_equals_the_retrieve_hybrid_file(setup, cache_dir):
    from leanpremise.eval.retrieved_files import read_retrieved, retrieved_file_name

    ds = setup["ds"]
    path = setup["root"] / "rp" / retrieved_file_name("test", "tiny+bm25+mepo+usage")
    entries = read_retrieved(path, "retrieved")
    by_state = dict(zip(ds.split_ids("test").tolist(), entries))
    srv = serve(setup["bundles"]["tuned"], cache_dir)
    try:
        health = httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()
        spec = json.loads((setup["root"] / "rp" / "fusion.json").read_text())
        assert health["hybrid"]["method"] == spec["method"] and health["hybrid_in_bundle"] is True
        for s in picked_states(ds):
            want = [p["corpus_id"] for p in by_state[s].premises]
            assert [r["name"] for r in ask(srv.url, ds, s)] == want, s
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def rrf_server(setup, cache_dir):
    srv = serve(setup["bundles"]["rrf"], cache_dir)
    yield srv
    srv.stop()


def library_fusion(setup, states, k):
    """The eval path's fused ranking (what `retrieve --hybrid` runs) with the hand-written RRF."""
    from leanpremise.rank.fusion import FusionSpec, apply

    ds = setup["ds"]
    runs = setup["rankers"].runs(np.array(states), K, "tiny")
    ids, _ = apply(runs, FusionSpec(**setup["rrf"]), k)
    return [[ds.corpus.names[i] for i in row if i >= 0] for row in ids.tolist()], runs


def test_four_way_rrf_served_equals_the_library_fusion_at_each_k(setup, rrf_server):
    ds = setup["ds"]
    states = picked_states(ds)
    health = httpx.get(f"{rrf_server.url}/health", timeout=LIVENESS_S).json()
    assert health["hybrid"]["rankers"] == ["tiny", *RANKERS] and health["hybrid"]["depth"] == K
    for k in (K, 5):
        want, runs = library_fusion(setup, states, k)
        for s, names in zip(states, want):
            assert [r["name"] for r in ask(rrf_server.url, ds, s, k=k)] == names, (s, k)
    # the fusion is not one ranker in disguise: it differs from each ranker's own top list somewhere
    want, runs = library_fusion(setup, states, K)
    for run in runs:
        alone = [[ds.corpus.names[i] for i in row if i >= 0] for row in run.ids.tolist()]
        assert alone != want, run.name


def untied(runs, b: int, i: int) -> bool:
    """Premise i's score in state b's row of every run that lists it is no other listed premise's (ties
    break by id, and a new premise's id is not the indexed one's). Usage is not asked: a new premise takes
    its indexed namesake's place among equal counts."""
    for run in runs:
        if run.name == "usage":
            continue
        ids, scores = run.ids[b], run.scores[b]
        at = np.flatnonzero(ids == i)
        if len(at) and np.sum(scores[ids >= 0] == scores[at[0]]) > 1:
            return False
    return True


def test_a_new_premise_ranks_as_the_indexed_premise_of_the_same_text(setup, rrf_server):
    """Send a premise the fused list holds as a new premise (and not as a candidate): every ranker scores
    it on the fly as it scored the indexed copy (usage by its name's count), so the ranking is the same."""
    ds = setup["ds"]
    states = picked_states(ds)
    want, runs = library_fusion(setup, states, K)
    checked = used_checked = 0
    for b, s in enumerate(states):
        usage = next(r for r in runs if r.name == "usage")
        used = set(usage.ids[b][usage.ids[b] >= 0].tolist())
        picks = sorted((n for n in want[b][:8] if untied(runs, b, ds.corpus.name_to_id[n])),
                       key=lambda n: ds.corpus.name_to_id[n] not in used)  # a used premise first, when any
        if not picks:
            continue
        name = picks[0]
        text = ds.corpus.texts[ds.corpus.name_to_id[name]]
        local = [n for n in accessible_names(ds, s) if n != name]
        body = {"state": ds.states.state[s], "imported_modules": [], "local_premises": local, "k": K,
                "new_premises": [{"name": name, "decl": text}]}
        got = httpx.post(f"{rrf_server.url}/retrieve", json=body, timeout=60).json()
        assert [r["name"] for r in got] == want[b], s
        checked += 1
        used_checked += ds.corpus.name_to_id[name] in used
    assert checked >= 3 and used_checked >= 1


def test_a_fusion_named_as_fuse_names_files_serves_the_same(setup, rrf_server, cache_dir, tmp_path):
    """`fuse` names rankers by their files (`mepo-p0.6-c2.4`, the dense model's file name): exported, that
    fusion runs MePo with those settings and the model as the dense ranker, ranking as the canonical one."""
    rename = {"tiny": "tiny-model-file", "mepo": "mepo-p0.6-c2.4"}
    spec = dict(setup["rrf"], rankers=[rename.get(n, n) for n in setup["rrf"]["rankers"]],
                weights={rename.get(n, n): w for n, w in setup["rrf"]["weights"].items()})
    (tmp_path / "fused.json").write_text(json.dumps(spec))
    bundle = export_for_tests(setup["model_dir"], tmp_path / "bundle", None, cache_dir, fusion=tmp_path / "fused.json",
                              corpus_embeddings=setup["root"] / "corpus.npy")
    srv = serve(bundle, cache_dir)
    try:
        health = httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()
        assert health["hybrid"]["rankers"] == spec["rankers"]
        ds = setup["ds"]
        for s in picked_states(ds)[::3]:
            assert ask(srv.url, ds, s) == ask(rrf_server.url, ds, s), s
    finally:
        srv.stop()


def test_a_bundle_with_usage_counts_records_the_split_they_were_counted_on(setup, cache_dir):
    from leanpremise.bundle.manifest import Manifest, SplitRecord
    from leanpremise.data import DataConfig

    m = Manifest.read(setup["bundles"]["rrf"])
    assert m.split == SplitRecord.of(DataConfig(cache_dir=cache_dir))
    assert (m.split.split_seed, m.split.n_valid, m.split.n_test, m.split.split_mode) == (0, 500, 500, "standard")


@pytest.mark.parametrize("rankers, message", [
    (["tiny", "mepo", "mepo-p0.9-c3.6"], "both mepo"),
    (["tiny", "other", "bm25"], "not lexical rankers"),
])
def test_export_refuses_a_fusion_it_cannot_serve(tmp_path, rankers, message):
    from leanpremise.export.fusion_export import check_fusion_file

    path = tmp_path / "f.json"
    path.write_text(json.dumps({"method": "rrf", "rankers": rankers, "weights": dict.fromkeys(rankers, 1.0),
                                "params": {"k": 60}}))
    with pytest.raises(ValueError, match=message) as e:
        check_fusion_file(path)
    assert str(path) in str(e.value)


def test_no_hybrid_serves_the_dense_ranking(setup, cache_dir):
    ds = setup["ds"]
    states = picked_states(ds)[:4]
    _, runs = library_fusion(setup, states, K)
    dense = [[ds.corpus.names[i] for i in row if i >= 0] for row in runs[0].ids.tolist()]
    srv = serve(setup["bundles"]["rrf"], cache_dir, fusion=False)
    try:
        health = httpx.get(f"{srv.url}/health", timeout=LIVENESS_S).json()
        assert health["hybrid"] is None and health["hybrid_in_bundle"] is True
        for s, names in zip(states, dense):
            assert [r["name"] for r in ask(srv.url, ds, s)] == names
    finally:
        srv.stop()


def tampered_copy(bundle, dst, edit):
    """A copy of `bundle` with `edit(dst)` applied and its manifest re-listed, as a hostile folder would be."""
    from leanpremise.bundle.layout import MANIFEST
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.bundle.verify import bundle_files

    shutil.copytree(bundle, dst)
    edit(dst)
    m = Manifest.read(dst)
    m.checksums, m.sizes = bundle_files(dst)
    (dst / MANIFEST).write_bytes(m.to_json())
    return dst


@pytest.mark.parametrize("what, edit, message", [
    ("negative weight", lambda d: (d / "hybrid/fusion.json").write_text(json.dumps(
        {"method": "rrf", "rankers": ["tiny", "bm25"], "weights": {"tiny": 1, "bm25": -1}, "params": {"k": 60}})),
     "weights"),
    ("rrf without k", lambda d: (d / "hybrid/fusion.json").write_text(json.dumps(
        {"method": "rrf", "rankers": ["tiny", "bm25"], "weights": {"tiny": 1, "bm25": 1}})), "params"),
    ("a fusion export refuses", lambda d: (d / "hybrid/fusion.json").write_text(json.dumps(
        {"method": "rrf", "rankers": ["tiny", "mepo", "mepo-p0.9-c3.6"], "weights": dict.fromkeys(
            ["tiny", "mepo", "mepo-p0.9-c3.6"], 1.0), "params": {"k": 60}})), "both mepo"),
    ("short MePo table", lambda d: np.save(d / "hybrid/mepo/indptr.npy", np.zeros(3, dtype=np.int64)),
     "indptr.npy"),
    ("pickled MePo table", lambda d: np.save(d / "hybrid/mepo/indices.npy", np.array([{"x": 1}], dtype=object),
                                             allow_pickle=True), "indices.npy"),
    ("usage counts of another corpus", lambda d: np.save(d / "hybrid/usage.npy", np.ones(7, dtype=np.int64)),
     "usage.npy"),
    ("pickled usage counts", lambda d: np.save(d / "hybrid/usage.npy", np.array([{"x": 1}], dtype=object),
                                               allow_pickle=True), "usage.npy"),
    ("BM25 parameters not an object", lambda d: (d / "hybrid/bm25/params.index.json").write_text("[1.5, 0.75]"),
     "params.index.json"),
    ("BM25 of another corpus", lambda d: (d / "hybrid/bm25/bm25_stats.json").write_text(json.dumps(
        {"n_docs": 3, "avgdl": 5.0, "k1": 1.5, "b": 0.75, "method": "lucene"})), "bm25_stats.json"),
])
def test_a_damaged_hybrid_bundle_fails_to_load_naming_the_file(setup, cache_dir, tmp_path, what, edit, message):
    from leanpremise.bundle.layout import BundleError
    from leanpremise.serve.revisions.loader import load_bundle
    from leanpremise.serve.search.fused import FusedRanking

    bundle = tampered_copy(setup["bundles"]["rrf"], tmp_path / "b", edit)
    loaded = load_bundle(bundle, cache_dir)
    with pytest.raises(BundleError, match=message):
        FusedRanking.load(bundle, loaded.manifest, loaded.corpus)


def test_any_request_text_gets_a_ranking_of_allowed_names(setup, rrf_server):
    """Fuzzed states and new premises (any unicode, operators, empty text): 200, at most k distinct names,
    each a candidate or a new premise."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    ds = setup["ds"]
    s0 = picked_states(ds)[-1]
    local = accessible_names(ds, s0)[:200]
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300) | st.sampled_from(
        ["", "⊢", "∀ x, x = x", ds.states.state[s0], "(((((", "h : a ≤ b ⊢ b ≥ a"])

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(state=text, decls=st.lists(st.tuples(st.sampled_from(["N.a", "N.b", local[0]]), text), max_size=4),
           k=st.integers(1, 40))
    def check(state, decls, k):
        new = [{"name": n, "decl": d} for n, d in decls]
        r = httpx.post(f"{rrf_server.url}/retrieve", json={"state": state, "local_premises": local,
                                                           "imported_modules": [], "new_premises": new, "k": k},
                       timeout=60)
        assert r.status_code == 200, r.text
        names = [x["name"] for x in r.json()]
        assert len(names) == len(set(names)) <= k
        assert set(names) <= set(local) | {n for n, _ in decls}

    check()


def test_new_premise_caches_stay_within_their_byte_bound(setup, cache_dir, sample_dataset):
    """LEXICAL_CACHE_MAX_BYTES bounds what the BM25 and MePo analyses of new premises hold, counted in
    bytes (each entry weighs more than its text's characters), and cached analyses rank as fresh ones."""
    from leanpremise.serve.revisions.loader import load_bundle
    from leanpremise.serve.search.fused import FusedRanking
    from leanpremise.serve.search.ranking import RankingSettings

    bundle = setup["bundles"]["rrf"]
    loaded = load_bundle(bundle, cache_dir)
    bound = 100_000
    fused = FusedRanking.load(bundle, loaded.manifest, loaded.corpus, RankingSettings(cache_bytes=bound))
    fresh = FusedRanking.load(bundle, loaded.manifest, loaded.corpus, RankingSettings(cache_bytes=1))  # keeps none
    texts = sample_dataset.corpus.texts[:400]
    names = [f"New.premise_{i}" for i in range(len(texts))]
    states = [sample_dataset.states.state[s] for s in range(3)]
    first = fused.lexical(states, None, texts, names, 16)
    assert 0 < fused.cache_bytes() <= 2 * bound  # each of the two caches within the bound
    assert fused.analyses.terms_cache.currsize <= bound and fused.analyses.symbols_cache.currsize <= bound
    chars = sum(len(t) + 1 for t in fused.analyses.terms_cache)
    assert fused.analyses.terms_cache.currsize > chars  # counted in bytes, not characters
    again = fused.lexical(states, None, texts, names, 16)
    other = fresh.lexical(states, None, texts, names, 16)
    assert fresh.cache_bytes() == 0
    for a, b, c in zip(first, again, other):
        for ra, rb, rc in zip(a, b, c):
            np.testing.assert_array_equal(ra.ids, rb.ids)
            np.testing.assert_array_equal(ra.ids, rc.ids)



def test_the_lexical_rankers_see_the_texts_cut_as_the_model_sees_them(setup, cache_dir):
    """Issue 22: a state and a new premise longer than the cut the model reads rank exactly as their cut
    texts (the tail, full of corpus names that BM25 and MePo would score, is not read by any ranker)."""
    ds = setup["ds"]
    srv = serve(setup["bundles"]["rrf"], cache_dir, chars_per_token=1)
    try:
        limit = srv.server.config.app.state.server.table.default_revision.max_text_chars
        s0 = picked_states(ds)[-1]
        tail = " ".join(ds.corpus.names[:2000])
        state = (ds.states.state[s0] + " " * limit)[:limit] + tail
        decl = ("theorem New.long : True := trivial " + " " * limit)[:limit] + tail
        local = accessible_names(ds, s0)

        def ask_with(st: str, d: str) -> list:
            r = httpx.post(f"{srv.url}/retrieve", json={"state": st, "imported_modules": [], "local_premises": local,
                                                        "new_premises": [{"name": "New.long", "decl": d}], "k": K},
                           timeout=LIVENESS_S)
            assert r.status_code == 200, r.text
            return r.json()

        assert ask_with(state, decl) == ask_with(state[:limit], decl[:limit])
    finally:
        srv.stop()


def test_a_request_over_the_lexical_work_bound_gets_422_before_any_work(setup, cache_dir):
    """Issue 22: MAX_LEXICAL_WORK bounds the characters (as cut) a hybrid request hands the lexical rankers;
    one character over it is refused with a 422 naming the setting, at it is answered, and a dense-only
    revision (no lexical rankers) is not bounded by it."""
    ds = setup["ds"]
    s0 = picked_states(ds)[-1]
    local = accessible_names(ds, s0)

    def body(limit: int, extra_chars: int) -> dict:
        state = (ds.states.state[s0] + " " * limit)[:limit] + " ⊢ a tail past the cut, not counted"
        decls = [("theorem New.a : True := trivial " + " " * limit)[:limit] + " tail",
                 ("theorem New.b : True := trivial " + " " * limit)[:limit]]
        premises = [{"name": f"New.{c}", "decl": d} for c, d in zip("ab", decls)]
        if extra_chars:
            premises.append({"name": "New.c", "decl": "x" * extra_chars})
        return {"state": state, "imported_modules": [], "local_premises": local, "new_premises": premises, "k": K}

    probe = serve(setup["bundles"]["rrf"], cache_dir, chars_per_token=1)
    try:
        limit = probe.server.config.app.state.server.table.default_revision.max_text_chars
    finally:
        probe.stop()
    for fusion, refused in ((True, True), (False, False)):
        srv = serve(setup["bundles"]["rrf"], cache_dir, chars_per_token=1, max_lexical_work=3 * limit, fusion=fusion)
        try:
            at = httpx.post(f"{srv.url}/retrieve", json=body(limit, 0), timeout=LIVENESS_S)
            assert at.status_code == 200, at.text
            over = httpx.post(f"{srv.url}/retrieve", json=body(limit, 1), timeout=LIVENESS_S)
            if refused:
                assert over.status_code == 422, over.text
                detail = over.json()["detail"][0]
                assert detail["loc"][-1] == "new_premises" and "MAX_LEXICAL_WORK" in detail["msg"]
            else:
                assert over.status_code == 200, over.text
        finally:
            srv.stop()


def test_a_bundle_from_the_hub_is_served_without_its_fusion_and_reranker_with_one_warning_each(caplog):
    """A Hub bundle has no dir to read the lexical or reranker files from: each is skipped with one warning
    line naming the revision; with FUSION and RERANK off, neither is loaded nor warned about."""
    import logging
    from types import SimpleNamespace

    from leanpremise.serve.revisions.lifecycle import load_ranking

    def hub_bundle():
        return SimpleNamespace(root=None, manifest=SimpleNamespace(hybrid="fusion.json", rerank="rerank/"),
                               corpus=None)

    with caplog.at_level(logging.WARNING, logger="leanpremise.serve.revisions.lifecycle"):
        ranking = load_ranking(hub_bundle(), "v1", service_config())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(line.startswith("v1: ") for line in lines)
    assert "dense only" in lines[0] and "without it" in lines[1]
    assert ranking.kind == "dense"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="leanpremise.serve.revisions.lifecycle"):
        ranking = load_ranking(hub_bundle(), "v1", service_config(fusion=False, rerank=False))
    assert not caplog.records and ranking.kind == "dense"
