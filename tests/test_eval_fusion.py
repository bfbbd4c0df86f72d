"""Fusion methods on hand-made rankings, and tuning: noise gets weight 0, complementary rankers get fused."""

from __future__ import annotations

import numpy as np
import pytest

from leanpremise.eval.tuning import per_state_objective, tune
from leanpremise.json_files import FileFormatError
from leanpremise.rank.fusion import CandidateRuns, FusionSpec, apply, read_fusion, write_fusion
from leanpremise.rank.runs import Run

X, Y, Z, W = 10, 11, 12, 13


def runs_xyz():
    a = Run("a", np.array([[X, Y, Z]]), np.array([[3.0, 2.0, 1.0]]))
    b = Run("b", np.array([[Y, Z, X]]), np.array([[0.9, 0.5, 0.1]]))
    return a, b


@pytest.mark.parametrize("spec, expected", [
    (FusionSpec(method="rrf", rankers=["a", "b"], weights={"a": 0.5, "b": 0.5}, params={"k": 60}), [Y, X, Z]),
    (FusionSpec(method="wsum", rankers=["a", "b"], weights={"a": 0.5, "b": 0.5}), [Y, X, Z]),
    (FusionSpec(method="wsum", rankers=["a", "b"], weights={"a": 0.8, "b": 0.2}), [X, Y, Z]),
    (FusionSpec(method="single", rankers=["a", "b"], weights={"a": 0.0, "b": 1.0}), [Y, Z, X]),
])
def test_hand_made_fusions(spec, expected):
    ids, scores = apply(list(runs_xyz()), spec, k=3)
    assert ids[0].tolist() == expected
    assert (np.diff(scores[0]) <= 0).all()


def test_wsum_uses_min_max_normalised_scores_and_absent_premises_count_zero():
    # b's scores are 100x larger: without normalisation b alone would decide; with min-max the weights do.
    a = Run("a", np.array([[X, Y, -1]]), np.array([[1.0, 0.0, -np.inf]]))
    b = Run("b", np.array([[Z, Y, X]]), np.array([[300.0, 200.0, 100.0]]))
    spec = FusionSpec(method="wsum", rankers=["a", "b"], weights={"a": 0.6, "b": 0.4})
    ids, _ = apply([a, b], spec, k=4)
    # X: .6*1 + .4*0 = .6, Y: 0 + .4*.5 = .2, Z: .4*1 = .4
    assert ids[0].tolist() == [X, Z, Y, -1]


def test_rankings_whose_scores_rise_are_read_in_file_order():
    a = Run("a", np.array([[X, Y, Z]]), np.array([[0.1, 0.5, 0.9]]))  # scores rise: file order wins
    spec = FusionSpec(method="wsum", rankers=["a", "b"], weights={"a": 1.0, "b": 0.0})
    b = Run("b", np.array([[W, -1, -1]]), np.array([[1.0, -np.inf, -np.inf]]))
    ids, _ = apply([a, b], spec, k=4)
    assert ids[0].tolist()[:3] == [X, Y, Z]


def synthetic(n_states=300, n_docs=1500, depth=200, seed=0, kinds=("good", "noise")):
    """Rankings of `n_states` states, 6 positives each; 'good' scores positives higher, 'noise' is random,
    'left'/'right' each see only half of the positives."""
    rng = np.random.default_rng(seed)
    positives = [rng.choice(n_docs, 6, replace=False) for _ in range(n_states)]
    runs = {}
    for kind in kinds:
        ids = np.zeros((n_states, depth), np.int64)
        scores = np.zeros((n_states, depth))
        for b, pos in enumerate(positives):
            s = rng.standard_normal(n_docs)
            if kind == "good":
                s[pos] += 2.0
            elif kind == "left":
                s[pos[:3]] += 3.5
            elif kind == "right":
                s[pos[3:]] += 3.5
            order = np.argsort(-s)[:depth]
            ids[b], scores[b] = order, s[order]
        runs[kind] = Run(kind, ids, scores)
    return runs, positives


def held_out(runs, positives, lo, hi):
    return [Run(r.name, r.ids[lo:hi], r.scores[lo:hi]) for r in runs], positives[lo:hi]


def recall_at(ids, positives, k):
    return float(np.mean([np.isin(p, row[:k]).sum() / len(p) for row, p in zip(ids, positives)]))


def test_a_pure_noise_ranker_gets_weight_zero_and_fusion_is_not_worse_than_the_good_one():
    runs, positives = synthetic()
    tune_runs, tune_pos = held_out(list(runs.values()), positives, 0, 150)
    spec = tune(tune_runs, tune_pos, resamples=500)
    assert spec.weights["noise"] <= 0.1, spec
    test_runs, test_pos = held_out(list(runs.values()), positives, 150, 300)
    fused, _ = apply(test_runs, spec, k=100)
    good = runs["good"].ids[150:300]
    for k in (16, 32, 100):
        assert recall_at(fused, test_pos, k) >= recall_at(good, test_pos, k) - 0.01


def test_complementary_rankers_are_fused_and_beat_each_alone_on_held_out_states():
    runs, positives = synthetic(kinds=("left", "right", "noise"))
    tune_runs, tune_pos = held_out(list(runs.values()), positives, 0, 150)
    spec = tune(tune_runs, tune_pos, resamples=500)
    assert spec.method in ("rrf", "wsum")
    assert spec.weights["left"] > 0.2 and spec.weights["right"] > 0.2 and spec.weights["noise"] <= 0.2
    assert spec.scores["bootstrap_lower_gain"] > 0
    test_runs, test_pos = held_out(list(runs.values()), positives, 150, 300)
    fused, _ = apply(test_runs, spec, k=100)
    best_single = max(recall_at(runs[n].ids[150:300], test_pos, 32) for n in runs)
    assert recall_at(fused, test_pos, 32) >= best_single + 0.05


def test_objective_is_the_mean_of_recall_at_16_32_100():
    # one state, 4 positives: at ranks 1, 20, 50, 150 -> recall@16 .25, @32 .5, @100 .75
    ids = np.arange(200)[None, :]
    run = Run("a", ids, -np.arange(200, dtype=float)[None, :])
    spec = FusionSpec(method="single", rankers=["a"], weights={"a": 1.0})
    v = per_state_objective(CandidateRuns([run]), spec, [np.array([0, 19, 49, 149])])
    assert v.tolist() == pytest.approx([(0.25 + 0.5 + 0.75) / 3])


def test_fusion_json_round_trip_and_errors(tmp_path):
    runs, positives = synthetic(n_states=60, depth=50)
    spec = tune(list(runs.values()), positives, resamples=200)
    path = write_fusion(tmp_path / "fusion.json", spec)
    assert read_fusion(path) == spec
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": "rrf", "rankers": ["a"], "weights": {"a": 1.0}}')
    with pytest.raises(FileFormatError, match="rrf needs"):
        read_fusion(bad)
    bad.write_text('{"method": "magic", "rankers": ["a"], "weights": {"a": 1.0}}')
    with pytest.raises(FileFormatError, match="method"):
        read_fusion(bad)
    with pytest.raises(ValueError, match="needs ranker"):
        apply([runs["good"]], spec.model_copy(update={"rankers": ["good", "other"],
                                                      "weights": {"good": 0.5, "other": 0.5}}), k=5)
    for text, field in [('{"method": "rrf", "rankers": ["a"], "weights": {"a": -1.0}, "params": {"k": 60}}', "weights"),
                        ('{"method": "wsum", "rankers": ["a", "b"], "weights": {"a": 0, "b": 0}}', "weights"),
                        ('{"method": "rrf", "rankers": ["a", "a"], "weights": {"a": 1}, "params": {"k": 60}}', "rankers"),
                        ('{"method": "rrf", "rankers": ["a"], "weights": {"a": 1}, "params": {"k": -3}}', "params")]:
        bad.write_text(text)
        with pytest.raises(FileFormatError, match=field):
            read_fusion(bad)


def test_a_ranker_of_weight_zero_is_not_needed_and_changes_nothing():
    """Its premises are no candidates, so it need not run (the server skips it)."""
    runs, _ = synthetic(n_states=40, depth=30, kinds=("good", "left", "noise"))
    names = list(runs)
    weights = {n: (0.0 if n == names[-1] else 1.0) for n in names}
    for method, params in (("rrf", {"k": 60}), ("wsum", {"norm": "min-max"})):
        spec = FusionSpec(method=method, rankers=names, weights=weights, params=params)
        with_all = apply(list(runs.values()), spec, k=30)
        without = apply([runs[n] for n in names[:-1]], spec, k=30)
        np.testing.assert_array_equal(with_all[0], without[0])
        only_zero = set(runs[names[-1]].ids.ravel().tolist()) - set().union(
            *(set(runs[n].ids.ravel().tolist()) for n in names[:-1]))
        assert not only_zero & set(with_all[0].ravel().tolist())
