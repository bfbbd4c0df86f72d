"""The usage ranker: premises ranked by how many train states used them, on the shipped sample."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ranker(sample_dataset):
    from leanpremise.rank.usage import UsageRanker

    return UsageRanker.from_dataset(sample_dataset)


def test_counts_are_train_states_naming_the_premise(sample_dataset, ranker):
    """Counted from the states' recommendation names (not the id arrays the ranker reads); valid and test
    states do not count."""
    from leanpremise.data.states import parse_recommendation

    ds = sample_dataset
    want = Counter()
    for s in ds.split_ids("train").tolist():
        names = {parse_recommendation(r)[0] for r in ds.states.recommendation[s]}
        want.update({ds.corpus.name_to_id[n] for n in names if n in ds.corpus.name_to_id})
    got = {i: int(c) for i, c in enumerate(ranker.counts) if c}
    assert got == dict(want)
    held_out_only = set()
    for split in ("valid", "test"):
        for s in ds.split_ids(split).tolist():
            held_out_only.update(int(i) for i in ds.states.positives(s))
    held_out_only -= set(want)
    assert held_out_only, "the sample should have premises only held-out states use"
    assert all(ranker.counts[i] == 0 for i in held_out_only)


def test_a_ranking_is_the_accessible_used_premises_by_count_then_id(sample_dataset, ranker):
    ds = sample_dataset
    test = ds.split_ids("test")
    k = 40
    ids, scores = ranker.rank(ds.access, test, k)
    some_short = False
    for b, s in enumerate(test.tolist()):
        accessible = [int(i) for i in ds.access.ids(s) if ranker.counts[i] > 0]
        want = sorted(accessible, key=lambda i: (-int(ranker.counts[i]), i))[:k]
        row = ids[b][ids[b] >= 0].tolist()
        assert row == want, s
        assert np.all(np.diff(scores[b][: len(row)]) <= 0)
        some_short |= len(row) < k
    assert some_short, "some state should see fewer than k used premises (padded with -1)"


def test_new_premises_score_by_their_indexed_namesake(ranker, sample_dataset):
    names, name_to_id = sample_dataset.corpus.names, sample_dataset.corpus.name_to_id
    top = int(ranker.order[0])
    scores, at = ranker.new_premise_scores([names[top], "Not.A.Premise"], name_to_id)
    assert scores[0] > 0 and scores[1] == 0 and at.tolist() == [top, -1]
    # served without its indexed copy, the namesake comes back at the indexed premise's place
    mask = np.ones(ranker.n, dtype=bool)
    full, full_scores = ranker.rank_one(mask, 10)
    mask[top] = False
    ids, sc = ranker.rank_with_new(mask, [names[top], "Not.A.Premise"], name_to_id, ranker.n, 10)
    assert ids.tolist() == [ranker.n if i == top else i for i in full.tolist()]
    assert np.array_equal(sc, full_scores)
    assert ranker.n + 1 not in ids  # an unused new premise is not listed


@pytest.mark.parametrize("array, message", [
    (np.ones(3, dtype=np.int64), "counts, the corpus has"),
    (None, "negative count"),
    ("float", "integer"),
    ("pickle", "not readable"),
])
def test_load_refuses_bad_count_files_naming_them(ranker, tmp_path, array, message):
    from leanpremise.rank.usage import UsageRanker

    path = tmp_path / "usage.npy"
    if array is None:
        bad = ranker.counts.copy()
        bad[5] = -1
        np.save(path, bad)
    elif isinstance(array, str) and array == "float":
        np.save(path, ranker.counts.astype(np.float64))
    elif isinstance(array, str):
        np.save(path, np.array([{"a": 1}] * ranker.n, dtype=object), allow_pickle=True)
    else:
        np.save(path, array)
    with pytest.raises(ValueError, match=message) as e:
        UsageRanker.load(path, ranker.n)
    assert str(path) in str(e.value)
    ranker.save(path)
    assert np.array_equal(UsageRanker.load(path, ranker.n).counts, ranker.counts)


def test_baseline_usage_file_reads_back_with_the_run_s_recall(tmp_path, cache_dir):
    """`leanpremise baseline usage` writes a retrieved-premises file; eval-files on it reports what the
    run reported (its scores fall in file order)."""
    from leanpremise.cli import main

    rp = tmp_path / "rp"
    data = ["--cache_dir", str(cache_dir)]
    assert main(["baseline", "usage", "--k", "32", "--out_dir", str(rp), "--metrics_out", str(tmp_path / "m.json"),
                 *data]) == 0
    assert main(["export-decls", "--split", "test", "--out_dir", str(rp), *data]) == 0
    path = rp / "dot_test-usage.json"
    entries = json.loads(path.read_text())
    assert any(e["premises"] for e in entries)
    for e in entries:
        scores = [p["score"] for p in e["premises"]]
        assert scores == sorted(scores, reverse=True), e["decl_name"]
    assert main(["eval-files", str(rp / "test_decls.json"), str(path), "--k", "16", "32",
                 "--json", str(tmp_path / "t.json")]) == 0
    got = json.loads((tmp_path / "t.json").read_text())[str(path)]
    want = json.loads((tmp_path / "m.json").read_text())
    assert 0 < want["recall@32"] < 1
    for key in ("recall@16", "recall@32", "precision@16"):
        assert got[key] == pytest.approx(want[key]), key
