"""Statistics over evaluation states: the paired bootstrap every comparison of two rankers uses."""

from __future__ import annotations

import numpy as np


def bootstrap_lower(diff: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> float:
    """One-sided lower confidence bound of the mean of per-state differences (paired bootstrap)."""
    if len(diff) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    return float(np.quantile(means, 1.0 - level))
