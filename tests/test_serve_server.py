"""The real server (`leanpremise serve`, uvicorn on loopback) against the Lean client's request shapes.

Every /retrieve answer is checked against `brute_force`, which applies the
contract's rules premise by premise over the bundle's own embeddings.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from liveness import LIVENESS_S
from serve_helpers import assert_same_ranking, brute_force, metric, serve_process

MAX_K = 8
MAX_NEW = 3


@pytest.fixture(scope="module")
def ref(serve_bundle, serve_data_dir, tiny_model_dir, cache_dir):
    """Corpus, bundle embeddings and model, loaded independently of the server code."""
    from leanpremise.bundle.manifest import Manifest
    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.model.encoder import encode_texts, load_model

    corpus = load_corpus(DataConfig(data_dir=serve_data_dir, cache_dir=cache_dir))
    emb = np.load(serve_bundle / Manifest.read(serve_bundle).embeddings)
    model = load_model(tiny_model_dir, "cpu")

    class Ref:
        def embed(self, text):
            return encode_texts(model, [text])[0]

        def rank(self, state, k=MAX_K, **kw):
            new = [(p["name"], self.embed(p["decl"])) for p in kw.pop("new_premises", [])]
            return brute_force(corpus, emb, self.embed(state), k, new=new, **kw)

    r = Ref()
    r.corpus, r.emb = corpus, emb
    return r


@pytest.fixture(scope="module")
def server(serve_bundle, cache_dir, tmp_path_factory):
    """`leanpremise serve` in its own process; limits from the original's environment variables."""
    env = {"MAX_K": str(MAX_K), "MAX_NEW_PREMISES": f"{MAX_NEW}  # as in a .env file", "EMBED_BACKEND": "torch",
           "LEANPREMISE_CACHE_DIR": str(cache_dir),
           # this module checks dozens of invalid bodies' 422s from one address: no refusal bucket (a 422 counts
           # as a refusal since issue 28; tests/test_serve_retry_discipline.py and test_serve_hostile.py test it)
           "MAX_REFUSALS_PER_CLIENT": "0"}
    with serve_process(serve_bundle, env, tmp_path_factory.mktemp("serve-server") / "server.log") as (url, _):
        yield url


def post(url, body, **kw):
    return httpx.post(f"{url}/retrieve", json=body, timeout=LIVENESS_S, **kw)


def names(result):
    return [r["name"] for r in result]


def test_listing_routes(server, ref):
    premises = httpx.get(f"{server}/indexed-premises", timeout=LIVENESS_S).json()
    assert premises == ref.corpus.unfiltered_names
    assert "Lean.Elab.thing" in premises and "Blacklisted.thm" in premises  # listed before filtering
    assert httpx.get(f"{server}/indexed-modules", timeout=LIVENESS_S).json() == ref.corpus.modules
    assert httpx.get(f"{server}/max-new-premises", timeout=LIVENESS_S).json() == MAX_NEW
    health = httpx.get(f"{server}/health", timeout=LIVENESS_S).json()
    assert health["status"] == "ok" and health["premises"] == len(ref.corpus) and health["backend"] == "torch"


def test_positions_and_names_as_the_client_sends_them(server, ref):
    premises = httpx.get(f"{server}/indexed-premises", timeout=LIVENESS_S).json()
    modules = httpx.get(f"{server}/indexed-modules", timeout=LIVENESS_S).json()
    state = "a b : Nat\n⊢ a + b = b + a"
    body = {
        "state": state,
        "local_premises": [premises.index("Lattice.p4"), premises.index("Lean.Elab.thing"), 10**6, -1,
                           "Lattice.p5", "No.such.premise"],
        "imported_modules": [modules.index("Init.Core"), modules.index("Mathlib.Logic.Basic"), 10**6, "No.Module"],
        "new_premises": [],
        "k": MAX_K,
        "caller_in_module_system": False,
        "imported_all_modules": [],
    }
    got = post(server, body).json()
    expected = ref.rank(state, imported=["Init.Core", "Mathlib.Logic.Basic"], local=["Lattice.p4", "Lattice.p5"])
    assert_same_ranking(got, expected)
    assert "Lean.Elab.thing" not in names(got)


def test_module_paths_equal_names(server, ref):
    state = "⊢ ¬¬p ↔ p"
    by_name = post(server, {"state": state, "imported_modules": ["Init.Core", "Mathlib.Order.Lattice"],
                            "local_premises": [], "k": MAX_K}).json()
    by_path = post(server, {"state": state, "local_premises": None, "k": MAX_K,
                            "imported_modules": ["Init/Core.lean", ".lake/packages/mathlib/Mathlib/Order/Lattice.lean"]
                            }).json()
    assert by_name == by_path
    assert_same_ranking(by_name, ref.rank(state, imported=["Init.Core", "Mathlib.Order.Lattice"], local=[]))
    assert {r["name"].split(".")[0] for r in by_name} <= {"Core", "Lattice"}


def test_absent_or_null_fields_mean_every_premise(server, ref):
    state = "⊢ s ⊆ s ∪ t"
    expected = ref.rank(state)
    assert_same_ranking(post(server, {"state": state, "k": MAX_K}).json(), expected)
    assert_same_ranking(post(server, {"state": state, "k": MAX_K, "imported_modules": None,
                                      "local_premises": None, "new_premises": None}).json(), expected)
    # Given but empty: no indexed premise at all, only new ones.
    only_new = post(server, {"state": state, "k": MAX_K, "imported_modules": [], "local_premises": [],
                             "new_premises": [{"name": "mine", "decl": "theorem mine : s ⊆ s ∪ t"}]}).json()
    assert names(only_new) == ["mine"]


def test_new_premises_override_indexed_and_merge_by_score(server, ref):
    state = "⊢ x ∈ {x}"
    new = [{"name": "Core.p9", "decl": "theorem Core.p9 : something else entirely"},
           {"name": "user.lemma", "decl": "theorem user.lemma : x ∈ {x}"}]
    got = post(server, {"state": state, "k": MAX_K, "imported_modules": ["Init.Core"], "local_premises": [],
                        "new_premises": new}).json()
    expected = ref.rank(state, imported=["Init.Core"], local=[], new_premises=new)
    assert_same_ranking(got, expected)
    assert names(got).count("Core.p9") <= 1
    # Few enough candidates that all come back: the indexed Core.p9 (a local premise here) gives way to the
    # new one, which is ranked with its own text's score.
    few = post(server, {"state": state, "k": MAX_K, "imported_modules": [], "local_premises": ["Core.p9", "Core.p1"],
                        "new_premises": new}).json()
    score_of = {r["name"]: r["score"] for r in few}
    assert sorted(names(few)) == ["Core.p1", "Core.p9", "user.lemma"]
    assert score_of["Core.p9"] == pytest.approx(float(ref.embed(new[0]["decl"]) @ ref.embed(state)), abs=2e-4)
    assert_same_ranking(few, ref.rank(state, imported=[], local=["Core.p9", "Core.p1"], new_premises=new))


def test_new_premises_beyond_the_maximum_are_dropped(server):
    state = "⊢ n < n + 1"
    new = [{"name": f"filler{i}", "decl": f"def filler{i} : Nat := {i}"} for i in range(MAX_NEW)]
    new.append({"name": "over.the.limit", "decl": "⊢ n < n + 1"})  # identical to the state: would rank first
    got = post(server, {"state": state, "k": MAX_K, "new_premises": new}).json()
    assert "over.the.limit" not in names(got)


def test_k_is_clipped_and_nonpositive_k_gives_empty(server):
    assert len(post(server, {"state": "⊢ True", "k": 10_000}).json()) == MAX_K
    assert post(server, {"state": "⊢ True", "k": 0}).json() == []
    assert post(server, {"state": "⊢ True", "k": -5}).json() == []
    assert post(server, {"state": ["⊢ True", "⊢ False"], "k": 0}).json() == []
    assert len(post(server, {"state": "⊢ True", "k": 2}).json()) == 2


def test_state_as_list_gives_one_ranking_per_state(server, ref):
    states = ["⊢ a * b = b * a", "⊢ 0 + n = n", "⊢ p ∧ q → q ∧ p"]
    got = post(server, {"state": states, "k": 5, "imported_modules": ["Mathlib.Logic.Basic"],
                        "local_premises": []}).json()
    assert len(got) == 3
    for s, g in zip(states, got):
        assert_same_ranking(g, ref.rank(s, k=5, imported=["Mathlib.Logic.Basic"], local=[]))


def test_module_system_visibility(server, ref):
    state = "⊢ hiddenDef = 1"
    base = {"state": state, "k": MAX_K, "imported_modules": ["Mathlib.ModSys.Defs"], "local_premises": []}
    everything = {"ModSys.hiddenDef", "ModSys.exposedDef", "ModSys.thm", "ModSys.hiddenAbbrev"}
    assert set(names(post(server, base).json())) == everything
    caller = {**base, "caller_in_module_system": True, "imported_all_modules": []}
    got = post(server, caller).json()
    assert set(names(got)) == {"ModSys.exposedDef", "ModSys.thm"}
    assert_same_ranking(got, ref.rank(state, imported=["Mathlib.ModSys.Defs"], local=[], caller_ms=True))
    modules = httpx.get(f"{server}/indexed-modules", timeout=LIVENESS_S).json()
    with_all = {**caller, "imported_all_modules": [modules.index("Mathlib.ModSys.Defs")]}
    assert set(names(post(server, with_all).json())) == everything
    # Local premises come from the caller's own module and stay visible.
    local = {**caller, "imported_modules": [], "local_premises": ["ModSys.hiddenDef"]}
    assert names(post(server, local).json()) == ["ModSys.hiddenDef"]


BAD = [
    ('{"state": "a", "k": 3', "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "body"),
    ('{"k": 3}', "state"),
    ('{"state": 3, "k": 3}', "state"),
    ('{"state": ["a", 1], "k": 3}', "state"),
    ('{"state": "a"}', "k"),
    ('{"state": "a", "k": "3"}', "k"),
    ('{"state": "a", "k": 2.5}', "k"),
    ('{"state": "a", "k": true}', "k"),
    ('{"state": "a", "k": 3, "local_premises": [1.5]}', "local_premises[0]"),
    ('{"state": "a", "k": 3, "local_premises": "Nat.add_comm"}', "local_premises"),
    ('{"state": "a", "k": 3, "imported_modules": [null]}', "imported_modules[0]"),
    ('{"state": "a", "k": 3, "new_premises": [{"name": "x"}]}', "new_premises[0].decl"),
    ('{"state": "a", "k": 3, "new_premises": [{"name": 1, "decl": "d"}]}', "new_premises[0].name"),
    ('{"state": "a", "k": 3, "new_premises": {"name": "x", "decl": "d"}}', "new_premises"),
    ('{"state": "a", "k": 3, "caller_in_module_system": "yes"}', "caller_in_module_system"),
    ('{"state": "a", "k": 3, "imported_all_modules": 5}', "imported_all_modules"),
]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_input_is_422_naming_the_field(server, body, field):
    r = httpx.post(f"{server}/retrieve", content=body.encode(), headers={"content-type": "application/json"}, timeout=LIVENESS_S)
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]


def test_server_survives_bad_input_and_body_without_content_type(server):
    for body, _ in BAD:
        httpx.post(f"{server}/retrieve", content=body.encode(), timeout=LIVENESS_S)
    r = httpx.post(f"{server}/retrieve", content=b'{"state": "a", "k": 2}', timeout=LIVENESS_S)  # no content type, like curl -d
    assert r.status_code == 200 and len(r.json()) == 2
    assert httpx.get(f"{server}/health", timeout=LIVENESS_S).status_code == 200


def test_parallel_clients_get_the_sequential_answers(server):
    bodies = []
    for i in range(24):
        bodies.append({"state": f"⊢ case {i % 6} : a + b = b + a", "k": 5 + i % 3,
                       "imported_modules": ["Init.Core", "Mathlib.Logic.Basic"][: 1 + i % 2], "local_premises": [],
                       "new_premises": [{"name": f"shared{j}", "decl": f"theorem shared{j} : {j} = {j}"}
                                        for j in range(i % 3)] + [{"name": f"own{i}", "decl": f"def own{i} := {i}"}]})
    sequential = [post(server, b).json() for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda b: post(server, b), bodies))
    assert all(r.status_code == 200 for r in parallel)
    for seq, par in zip(sequential, parallel):
        assert_same_ranking(par.json(), seq, atol=1e-5)


def test_metrics_count_requests_and_cache_hits(server):
    body = {"state": "⊢ metrics", "k": 3, "new_premises": [{"name": "m1", "decl": "theorem m1 : metrics = 1"}]}
    names = ['leanpremise_requests_total{route="/retrieve",status="200"}'] + [
        f"leanpremise_{kind}_cache_{outcome}_total" for kind in ("new_premise", "state") for outcome in ("misses", "hits")]
    before = {name: metric(server, name) for name in names}
    post(server, body)
    post(server, body)
    grown = {name: metric(server, name) - before[name] for name in names}
    assert grown[names[0]] == 2
    for kind in ("new_premise", "state"):  # the first embeds, the second hits
        assert grown[f"leanpremise_{kind}_cache_misses_total"] == 1
        assert grown[f"leanpremise_{kind}_cache_hits_total"] == 1
    assert metric(server, "process_resident_memory_bytes") > 0
