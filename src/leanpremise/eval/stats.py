"""Statistics over evaluation states: the paired bootstrap every comparison of two rankers uses.

One resampling (`bootstrap_means`): fusion tuning's one-sided bound (`bootstrap_lower`) and the benchmarks'
two-sided interval (`bootstrap_interval`, benchmarks/common.py `paired`) read quantiles of the same means, so
with the same seed and resamples they agree.
"""

from __future__ import annotations

import numpy as np


def bootstrap_means(diff: np.ndarray, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """(resamples,) means of the per-state differences `diff` resampled with replacement (seeded): states
    are resampled, so both rankers' values of a state stay paired."""
    diff = np.asarray(diff)
    rng = np.random.default_rng(seed)
    return diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)


def bootstrap_lower(diff: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> float:
    """One-sided lower confidence bound of the mean of per-state differences (paired bootstrap)."""
    if len(diff) == 0:
        return 0.0
    return float(np.quantile(bootstrap_means(diff, resamples, seed), 1.0 - level))


def bootstrap_interval(diff: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95
                       ) -> tuple[float, float]:
    """Two-sided confidence interval (low, high) of the mean of per-state differences (paired bootstrap)."""
    means = bootstrap_means(diff, resamples, seed)
    tail = (1.0 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))
