"""The booster interface: a model trained on grouped rows, saved in its library's format, checked and built back
from the checked bytes, scores the same; an unknown library is refused by name."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from leanpremise.rank.rerank.booster import BOOSTERS, Grouped, LightGBMBooster, booster_class
from leanpremise.rank.rerank.validate import HARD_LIMITS


def grouped(rng, groups: int, size: int, n_features: int) -> Grouped:
    x = rng.normal(size=(groups * size, n_features)).astype(np.float32)
    x[:, 3] = rng.integers(0, 5, len(x))  # a categorical column
    y = (x[:, 0] + 0.3 * rng.normal(size=len(x)) > 1.0).astype(np.float32)
    return Grouped(x, y, np.full(groups, size, dtype=np.int64))


def settings(**kw):
    base = {"depth": 100, "seed": 0, "learning_rate": 0.1, "num_leaves": 7, "min_data_in_leaf": 5, "lambda_l2": 1.0,
            "min_sum_hessian_in_leaf": 1.0, "max_rounds": 12, "early_stopping": 50, "threads": 1, "extra": {}}
    return SimpleNamespace(**{**base, **kw})


def test_a_trained_booster_saved_and_loaded_from_checked_bytes_scores_the_same(tmp_path):
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(5)]
    train, valid = grouped(rng, 40, 20, 5), grouped(rng, 10, 20, 5)
    booster, best = LightGBMBooster.train(settings(), names, ["f3"], train, valid)
    assert 1 <= best <= 12 and booster.n_features() == 5
    assert set(booster.importance(names)) == set(names) and booster.importance(names)["f0"] > 0
    path = tmp_path / LightGBMBooster.model_file
    booster.save(path)
    loaded = LightGBMBooster.load(LightGBMBooster.check(path.read_bytes(), path, 5, HARD_LIMITS), path)
    assert loaded.n_trees() == best
    x = np.ascontiguousarray(valid.x)
    scores = loaded.predict(x)
    assert scores.dtype == np.float64 and scores.shape == (len(x),)
    np.testing.assert_array_equal(scores, booster.predict(x))
    # continuing from it keeps its trees and adds some
    more, _ = LightGBMBooster.train(settings(max_rounds=3), names, ["f3"], train, valid, loaded)
    assert more.n_trees() > loaded.n_trees()


def test_an_unknown_library_is_refused_naming_the_known_ones():
    assert booster_class("lightgbm") is LightGBMBooster and set(BOOSTERS) == {"lightgbm", "xgboost"}
    with pytest.raises(ValueError, match="unknown library 'catboost': expected lightgbm or xgboost"):
        booster_class("catboost")
