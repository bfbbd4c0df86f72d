"""The paired bootstrap: one resampling behind fusion tuning's one-sided bound and the benchmarks' interval."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from leanpremise.eval.stats import bootstrap_interval, bootstrap_lower, bootstrap_means

DIFF = np.random.default_rng(3).normal(0.02, 0.2, size=400)


def test_the_one_sided_bound_and_the_interval_read_the_same_resampled_means():
    means = bootstrap_means(DIFF, 500, seed=7)
    assert means.shape == (500,) and np.array_equal(means, bootstrap_means(DIFF, 500, seed=7))
    assert not np.array_equal(means, bootstrap_means(DIFF, 500, seed=8))
    assert bootstrap_lower(DIFF, 500, 7, level=0.95) == float(np.quantile(means, 0.05))
    # a one-sided 75% bound is the low end of a two-sided 50% interval of the same resampling
    low, high = bootstrap_interval(DIFF, 500, 7, level=0.5)
    assert low == bootstrap_lower(DIFF, 500, 7, level=0.75) and high == float(np.quantile(means, 0.75))
    assert low < DIFF.mean() < high


def test_no_states_give_a_bound_of_zero():
    assert bootstrap_lower(np.zeros(0)) == 0.0


def test_the_benchmarks_paired_interval_is_the_library_s(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("common", None)
    from common import BOOTSTRAP, paired

    a = np.random.default_rng(4).random(300)
    b = a - DIFF[:300]
    got = paired(a, b)
    low, high = bootstrap_interval(a - b, BOOTSTRAP["resamples"], BOOTSTRAP["seed"], BOOTSTRAP["level"])
    assert got == {"mean": round(float((a - b).mean()), 4), "low": round(low, 4), "high": round(high, 4),
                   "states": 300}
    assert got["low"] < got["mean"] < got["high"]
    sys.modules.pop("common", None)


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_wider_levels_give_wider_intervals(level):
    low, high = bootstrap_interval(DIFF, 400, 0, level)
    narrow_low, narrow_high = bootstrap_interval(DIFF, 400, 0, level - 0.3)
    assert low <= narrow_low and high >= narrow_high
