"""The nearest-proved-states ranker: neighbours by shared goal tokens, premises by the neighbours that used
them, a training goal blind to its own proof, and its saved files."""

from __future__ import annotations

import numpy as np
import pytest

from leanpremise.eval.rerank.requests import SIMULATIONS, simulations
from leanpremise.rank.nearest_states import ARRAYS_FILE, NearestStates, NearestStatesConfig
from leanpremise.rank.rerank.features import feature_list
from leanpremise.rank.side import SideRankers

GOALS = [
    "⊢ Finset.sum s f = Finset.sum s g",           # 0, proof 10
    "h : a ∈ s ⊢ Finset.sum s f ≤ Finset.sum s g",  # 1, proof 11
    "⊢ Real.exp (x + y) = Real.exp x * Real.exp y",  # 2, proof 12
    "⊢ Nat.succ n ≠ 0",                             # 3, proof 13
]
USED = [np.array([0, 1]), np.array([1, 2]), np.array([3, 4]), np.array([5])]
KEYS = np.array([10, 11, 12, 13])


@pytest.fixture
def nearest() -> NearestStates:
    return NearestStates.build(GOALS, USED, KEYS, n_premises=8, config=NearestStatesConfig(neighbours=2))


def test_the_premises_of_the_most_similar_proved_states_come_first(nearest):
    (ids, scores), lookup = nearest.run("⊢ Finset.sum t f = Finset.sum t g", None, 4)
    top, _ = nearest.neighbours("⊢ Finset.sum t f = Finset.sum t g")
    assert top.tolist() == [0, 1]  # the two sums, not the exponential or the successor
    assert ids[0] == 1  # used by both neighbours
    assert set(ids[:3].tolist()) == {0, 1, 2} and ids[3] == -1 and np.isneginf(scores[3])
    assert lookup(np.array([1, 3, 9])).tolist()[1:] == [0.0, 0.0]  # unused and a new premise score nothing


def test_a_training_goal_does_not_see_its_own_proofs_states(nearest):
    top, _ = nearest.neighbours(GOALS[2])
    assert top[0] == 2
    top, _ = nearest.neighbours(GOALS[2], exclude_key=12)
    assert 2 not in top.tolist()
    (ids, _), _ = nearest.run(GOALS[2], None, 4, exclude_key=12)
    assert not {3, 4} & set(ids.tolist())


def test_only_the_requests_candidates_are_listed(nearest):
    mask = np.ones(8, dtype=bool)
    mask[1] = False
    (ids, _), _ = nearest.run(GOALS[0], mask, 4)
    assert 1 not in ids.tolist() and 0 in ids.tolist()


def test_a_goal_of_unknown_tokens_lists_nothing(nearest):
    (ids, _), lookup = nearest.run("zzqq", None, 3)
    assert ids.tolist() == [-1, -1, -1] and lookup(np.array([0, 1])).tolist() == [0.0, 0.0]


def test_saved_and_loaded_it_ranks_alike(nearest, tmp_path):
    nearest.save(tmp_path)
    again = NearestStates.load(tmp_path)
    for goal in GOALS + ["⊢ Finset.sum t f = 0"]:
        a, b = nearest.run(goal, None, 5)[0], again.run(goal, None, 5)[0]
        assert a[0].tolist() == b[0].tolist() and np.allclose(a[1][a[0] >= 0], b[1][b[0] >= 0])


def test_arrays_that_disagree_are_refused_in_one_line(nearest, tmp_path):
    nearest.save(tmp_path)
    with np.load(tmp_path / ARRAYS_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["used"] = arrays["used"] + 100  # premises beyond the index
    np.savez(tmp_path / ARRAYS_FILE, **arrays)
    with pytest.raises(ValueError, match=ARRAYS_FILE) as e:
        NearestStates.load(tmp_path)
    assert "\n" not in str(e.value)


def test_the_side_rankers_list_it_and_the_reranker_reads_its_columns(nearest):
    side = SideRankers(nearest=nearest)
    assert side.kinds() == ["nearest"] and side.n == 8
    new = side.prepare([], [], named_in_index=False)
    runs, lookups = side.runs(GOALS[0], None, new, 3, with_lookups=True, own_key=10)
    assert 0 not in runs["nearest"][0].tolist() and 1 in runs["nearest"][0].tolist()  # only state 0 used 0
    assert "nearest" in lookups
    assert {"nearest_rank", "nearest_score", "nearest_cand_rank"} <= {f.name for f in feature_list(["nearest"])}


def test_simulated_scopes_are_drawn_in_equal_parts():
    modes = simulations(30_000, 0.6, 0, ("module", "folder", "subtree"))
    share = {m: modes.count(m) / len(modes) for m in SIMULATIONS}
    assert abs(share["none"] - 0.4) < 0.02
    assert all(abs(share[m] - 0.2) < 0.02 for m in ("module", "folder", "subtree"))
    with pytest.raises(ValueError, match="simulation scopes"):
        simulations(10, 0.5, 0, ("project",))


def test_a_bundle_whose_reranker_reads_it_serves_what_rerank_apply_ranks(sample_dataset, tiny_model_dir, cache_dir,
                                                                         tmp_path):
    import httpx

    from leanpremise.bundle.manifest import Manifest
    from leanpremise.eval.rerank.apply import rerank_states
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView, build_request
    from leanpremise.eval.rerank.train import RerankConfig, train_reranker
    from leanpremise.model.encoder import encode_texts, load_model
    from leanpremise.rank.rerank.model import Reranker
    from leanpremise.serve.http.app import create_app
    from serve_helpers import ThreadServer, export_for_tests, service_config

    ds = sample_dataset
    rankers, table = build_rankers(ds, IndexView.full(ds.corpus), ["bm25", "nearest"], progress=False)
    spec = train_reranker(ds, rankers, table, ds.split_ids("train"), ds.split_ids("valid")[:100],
                          RerankConfig(max_rounds=10, max_states=200), tmp_path / "rr", progress=False)
    assert spec.kinds() == ["bm25", "nearest"]
    np.save(tmp_path / "corpus.npy", encode_texts(load_model(str(tiny_model_dir), "cpu"), ds.corpus.texts))
    bundle = export_for_tests(tiny_model_dir, tmp_path / "bundle", None, cache_dir, rerank=tmp_path / "rr",
                              corpus_embeddings=tmp_path / "corpus.npy")
    assert "rerank/nearest_states/nearest_states.npz" in Manifest.read(bundle).checksums
    states = ds.split_ids("test")[:6]
    want, _ = rerank_states(Reranker.load(tmp_path / "rr"), ds, rankers, table, states, 16, progress=False,
                            client="pre-june")
    cfg = service_config(bundle=bundle, backend="torch", data_dir=cache_dir, embed_workers=1, dtype="float32",
                         max_k=128)
    srv = ThreadServer(create_app(cfg)).start()
    try:
        for s, row in zip(states.tolist(), want.tolist()):
            req = build_request(ds, rankers.view, table, s, client="pre-june")
            body = {"state": ds.states.state[s], "k": 16, "imported_modules": [
                ds.corpus.modules[i] for i in ds.corpus.imports_of(int(ds.states.module_id[s])).tolist()],
                "local_premises": [ds.corpus.names[i] for i in req.input.local_ids.tolist()]}
            got = httpx.post(f"{srv.url}/retrieve", json=body, timeout=60)
            assert got.status_code == 200, got.text
            assert [p["name"] for p in got.json()] == [ds.corpus.names[i] for i in row if i >= 0], s
    finally:
        srv.stop()


def test_a_simulated_unindexed_subtree_sends_all_its_accessible_premises_as_new_ones(sample_dataset):
    from leanpremise.eval.rerank.index import build_rankers
    from leanpremise.eval.rerank.requests import IndexView, build_request, module_folders, subtree_of

    ds = sample_dataset
    rankers, table = build_rankers(ds, IndexView.full(ds.corpus), ["bm25"], progress=False)
    subtrees = module_folders(ds.corpus, subtree_of)
    for s in ds.split_ids("train")[:40].tolist():
        acc = ds.access.ids(s)
        inside = acc[subtrees[ds.corpus.module_id[acc]] == subtrees[ds.states.module_id[s]]]
        req = build_request(ds, rankers.view, table, s, "subtree", subtrees=subtrees, max_new=10**6)
        assert sorted(req.new_ids.tolist()) == sorted(inside.tolist())
        assert not req.mask[inside].any() and req.mask.sum() == len(acc) - len(inside)
        assert len(req.input.local_ids) == 0


def test_the_lookup_reads_each_listed_premises_score_and_zero_elsewhere(nearest):
    ids, scores = nearest.scores(GOALS[0])
    mask = np.ones(8, dtype=bool)
    mask[ids[0]] = False
    _, lookup = nearest.run(GOALS[0], mask, 4)
    cand = np.array([9, *ids.tolist()[::-1], 7, 6])  # unsorted, a new premise, unused premises
    got = lookup(cand)
    want = {int(i): float(s) for i, s in zip(ids[1:], scores[1:])}  # the masked-out premise scores nothing
    assert got.dtype == np.float64 and got.tolist() == [want.get(c, 0.0) for c in cand.tolist()]
    assert len(want) and all(v > 0 for v in want.values())
