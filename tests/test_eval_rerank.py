"""The reranker in evaluation: the requests a Lean client would send for a state, training (leave-one-out
usage, simulated unindexed files, continuing a reranker), and the `rerank` commands."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from leanpremise.eval.rerank.index import build_rankers
from leanpremise.eval.rerank.requests import IndexView, build_request, modules_under
from leanpremise.eval.rerank.signals import batch_signals
from leanpremise.rank.rerank.premises import PremiseTable
from leanpremise.rank.usage import usage_counts, usage_score


@pytest.fixture(scope="module")
def lexical(sample_dataset):
    return build_rankers(sample_dataset, IndexView.full(sample_dataset.corpus), ["bm25", "mepo", "usage"],
                         progress=False)


def a_state_with_local_positive(ds):
    """A training state with a positive declared earlier in its own module."""
    for s in ds.split_ids("train").tolist():
        m = ds.states.module_id[s]
        pos = ds.states.positives(s)
        if len(pos) and (ds.corpus.module_id[pos] == m).any():
            return s
    pytest.skip("no such state in the sample")


def test_a_plain_request_has_its_files_earlier_premises_as_local_premises(sample_dataset, lexical):
    ds, (rankers, table) = sample_dataset, lexical
    s = a_state_with_local_positive(ds)
    req = build_request(ds, rankers.view, table, s)
    m = int(ds.states.module_id[s])
    expected = ds.access.ids(s)
    expected = expected[ds.corpus.module_id[expected] == m]
    assert sorted(req.input.local_ids.tolist()) == expected.tolist()
    assert req.input.local_ids.tolist() == sorted(expected.tolist(), reverse=True)  # nearest first
    assert req.input.module == m and len(req.new_ids) == 0
    assert req.mask.sum() == len(ds.access.ids(s))
    assert set(req.input.frontier.tolist()) <= set(ds.corpus.imports_of(m).tolist())


def test_a_simulated_unindexed_module_sends_its_premises_as_new_ones(sample_dataset, lexical):
    ds, (rankers, table) = sample_dataset, lexical
    s = a_state_with_local_positive(ds)
    m = int(ds.states.module_id[s])
    req = build_request(ds, rankers.view, table, s, "module")
    own = ds.access.ids(s)
    own = own[ds.corpus.module_id[own] == m]
    assert len(req.input.local_ids) == 0 and req.input.module == -1
    assert sorted(req.new_ids.tolist()) == own.tolist() and not req.mask[own].any()
    assert req.input.new_names == [ds.corpus.names[i] for i in req.new_ids.tolist()]
    local_pos = [p for p in ds.states.positives(s).tolist() if p in set(own.tolist())]
    at = {int(c): j for j, c in enumerate(req.new_ids.tolist())}
    assert {len(rankers.view) + at[p] for p in local_pos} <= set(req.positives.tolist())


def test_a_project_the_index_does_not_hold_arrives_as_new_premises(sample_dataset):
    ds = sample_dataset
    prefix = ds.corpus.modules[int(ds.states.module_id[ds.split_ids("test")[0]])]
    held = modules_under(ds.corpus, [prefix])
    view = IndexView.without(ds.corpus, held)
    rankers, table = build_rankers(ds, view, ["bm25", "usage"], progress=False)
    s = int(ds.split_ids("test")[0])
    req = build_request(ds, view, table, s)
    assert len(view) == int((~held[ds.corpus.module_id]).sum()) and req.mask.shape == (len(view),)
    assert held[ds.corpus.module_id[req.new_ids]].all() and len(req.input.local_ids) == 0
    sig = batch_signals(rankers, [req], 50)[0]
    listed = sig.runs["bm25"][0]
    assert (listed[listed >= 0] < len(view) + len(req.new_ids)).all()


def a_state_importing_a_folder(ds, folder_of):
    """A test state whose module imports another module of its own folder (so that folder, held out as a
    project, sends premises of the state's imports and of its own file)."""
    for s in ds.split_ids("test").tolist():
        m = int(ds.states.module_id[s])
        mine = folder_of(ds.corpus.modules[m])
        if (ds.access.prefix_end[s] > ds.corpus.module_start[m] + 1
                and any(folder_of(ds.corpus.modules[i]) == mine for i in ds.corpus.imports_of(m).tolist())):
            return s
    pytest.skip("no such state in the sample")


def test_the_default_clients_body_sends_its_imports_unindexed_premises_then_its_file(sample_dataset):
    """As Lean's default client: the unindexed imported premises (the last ones of them kept), then the
    file's declarations; the last `max_new` of all; none as local premises, the file's place last."""
    from leanpremise.eval.rerank.requests import folder_of

    ds = sample_dataset
    s = a_state_importing_a_folder(ds, folder_of)
    m = int(ds.states.module_id[s])
    held = modules_under(ds.corpus, [folder_of(ds.corpus.modules[m])])
    view = IndexView.without(ds.corpus, held)
    table = PremiseTable.from_corpus(ds.corpus).subset(view.ids)
    acc = ds.access.ids(s)
    own = acc[ds.corpus.module_id[acc] == m]
    imported = acc[held[ds.corpus.module_id[acc]] & (ds.corpus.module_id[acc] != m)]
    full = build_request(ds, view, table, s, max_new=len(acc))
    assert len(full.input.local_ids) == 0
    assert sorted(full.new_ids.tolist()) == sorted(own.tolist() + imported.tolist())
    assert set(full.new_ids[len(imported):].tolist()) == set(own.tolist())  # the file comes last
    n_own = len(own)
    np.testing.assert_array_equal(np.sort(full.input.new_from_end[len(imported):]), np.arange(n_own))
    cut = build_request(ds, view, table, s, max_new=n_own + 1)  # the file and the last imported one
    assert len(cut.new_ids) == n_own + 1 and cut.new_ids[0] == full.new_ids[len(imported) - 1]
    assert cut.input.new_sent == n_own + 1
    old = build_request(ds, view, table, s, max_new=len(acc), client="pre-june")
    assert old.new_ids.tolist() == full.new_ids.tolist()  # nothing of it indexed: the same body


def test_the_default_client_sends_an_indexed_file_as_new_premises_read_as_local_ones(sample_dataset, lexical):
    ds, (rankers, table) = sample_dataset, lexical
    s = a_state_with_local_positive(ds)
    new = build_request(ds, rankers.view, table, s, client="default")
    old = build_request(ds, rankers.view, table, s, client="pre-june")
    assert new.input.local_ids.tolist() == old.input.local_ids.tolist() and len(old.input.local_ids)
    assert len(new.new_ids) == 0 and new.input.new_sent == len(old.input.local_ids)
    assert (new.mask == old.mask).all() and new.positives.tolist() == old.positives.tolist()


def test_a_training_states_own_use_is_left_out_of_its_usage_features(sample_dataset, lexical):
    ds, (rankers, table) = sample_dataset, lexical
    s = a_state_with_local_positive(ds)
    counts = usage_counts(ds)
    pos = np.unique(ds.states.positives(s))
    plain = batch_signals(rankers, [build_request(ds, rankers.view, table, s)], 20)[0]
    counted = batch_signals(rankers, [build_request(ds, rankers.view, table, s, counted=True)], 20)[0]
    assert plain.lookups["usage"](pos) == pytest.approx(usage_score(counts[pos]))
    assert counted.lookups["usage"](pos) == pytest.approx(usage_score(counts[pos] - 1))
    other = np.setdiff1d(np.flatnonzero(counts), pos)[:5]
    assert counted.lookups["usage"](other) == pytest.approx(usage_score(counts[other]))
    assert counted.lookups["module_usage"](pos) < plain.lookups["module_usage"](pos) + 1e-9
    assert (counted.lookups["module_usage"](pos) < plain.lookups["module_usage"](pos)).any()


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "leanpremise", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1800, check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("rerank")
    r = run_cli("rerank", "train", "--cache_dir", str(cache_dir), "--out", "rr", "--max_states", "600", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_rerank_train_writes_a_reranker_that_beats_bm25_on_valid(trained, cache_dir):
    spec = json.loads((trained / "rr" / "reranker.json").read_text())
    assert [r["kind"] for r in spec["rankers"]] == ["bm25", "mepo", "usage", "nearest"]  # the default --rankers
    assert spec["stopped_on"]["split"] == "valid" and spec["trained_on"]["states"] <= 600
    assert (trained / "rr" / "model.txt").read_text().startswith("tree")
    r = run_cli("baseline", "bm25", "--cache_dir", str(cache_dir), "--split", "valid", "--k", "100",
                "--metrics_out", "bm25.json", cwd=trained)
    assert r.returncode == 0, r.stderr[-2000:]
    bm25 = json.loads((trained / "bm25.json").read_text())
    assert spec["valid_scores"]["recall@32"] > bm25["recall@32"] + 0.05


def test_rerank_apply_writes_the_reranked_file_and_its_metrics(trained, cache_dir):
    r = run_cli("rerank", "apply", "--cache_dir", str(cache_dir), "--reranker", "rr", "--split", "test",
                "--metrics_out", "m.json", cwd=trained)
    assert r.returncode == 0, r.stderr[-2000:]
    entries = json.loads((trained / "retrieved_premises" / "dot_test-bm25+mepo+usage+nearest+rerank.json").read_text())
    assert len(entries) == 500 and all(len(e["premises"]) <= 1024 for e in entries)
    for e in entries:
        scores = [p["score"] for p in e["premises"]]
        assert scores == sorted(scores, reverse=True)
    metrics = json.loads((trained / "m.json").read_text())
    assert {"recall@16", "recall@32", "recall@100", "recall@1024"} <= set(metrics)


def test_a_reranker_of_an_unknown_feature_version_is_refused_in_one_line(trained, cache_dir, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained / "rr", bad)
    spec = json.loads((bad / "reranker.json").read_text())
    spec["features"][0]["version"] = 99
    (bad / "reranker.json").write_text(json.dumps(spec))
    r = run_cli("rerank", "apply", "--cache_dir", str(cache_dir), "--reranker", str(bad), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {bad / 'reranker.json'}: field \"features\"")


def test_continuing_a_reranker_adds_rounds_to_the_same_features(trained, cache_dir, sample_dataset):
    from leanpremise.eval.rerank.train import RerankConfig, train_reranker
    from leanpremise.rank.rerank.model import Reranker

    rankers, table = build_rankers(sample_dataset, IndexView.full(sample_dataset.corpus),
                                   ["bm25", "mepo", "usage", "nearest"], progress=False)  # what `trained` read
    base = Reranker.load(trained / "rr")
    ids = sample_dataset.split_ids("valid")
    spec = train_reranker(sample_dataset, rankers, table, ids[:300], ids[300:], RerankConfig(max_rounds=5),
                          trained / "adapted", progress=False, counted=False, init=trained / "rr")
    assert Reranker.load(trained / "adapted").booster.n_trees() >= base.booster.n_trees()
    assert [f.name for f in spec.features] == [f.name for f in base.spec.features]
    with pytest.raises(ValueError, match="reads"):
        train_reranker(sample_dataset, build_rankers(sample_dataset, IndexView.full(sample_dataset.corpus),
                                                     ["bm25"], progress=False)[0], table, ids[:300], ids[300:],
                       RerankConfig(max_rounds=5), trained / "x", progress=False, init=trained / "rr")


def test_training_prints_dense_before_after_and_reranked(tmp_path, cache_dir, tiny_model_dir):
    r = run_cli("train", "--cache_dir", str(cache_dir), "--model_name_or_path", str(tiny_model_dir),
                "--max_steps", "2", "--per_device_train_batch_size", "8", "--disable_tqdm", "True",
                "--rerank_max_states", "300", "--output_dir", "out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    for label in ("valid before training", "valid after training", "valid reranked"):
        assert any(line.startswith(label) and "R@8" in line and "R@32" in line for line in lines), label
    spec = json.loads((tmp_path / "out" / "reranker" / "reranker.json").read_text())
    assert [x["kind"] for x in spec["rankers"]] == ["dense", "bm25", "mepo", "usage", "nearest"]
    assert spec["rankers"][0]["model_identity"]
    summary = json.loads((tmp_path / "out" / "final_metrics.json").read_text())
    assert set(summary["reranked"]) >= {"recall@8", "recall@16", "recall@32"}


def test_premise_table_columns_follow_the_corpus(sample_dataset):
    table = PremiseTable.from_corpus(sample_dataset.corpus)
    i = 7
    assert table.text_len[i] == len(sample_dataset.corpus.texts[i])
    assert table.names[i] == sample_dataset.corpus.names[i]
    assert len(table.module_root) == len(sample_dataset.corpus.modules)
