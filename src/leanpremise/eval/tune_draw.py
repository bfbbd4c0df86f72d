"""`--tune_on FRACTION`: the seeded draw of a part of a split's states to tune (or train) on, the rest to
evaluate; one draw for `retrieve --hybrid` and `rerank train | apply`, so the same flags pick the same
states in both."""

from __future__ import annotations

import numpy as np


def draw_tuning_states(ids: np.ndarray, fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(tuning ids, the other ids) of `ids`, a seeded `fraction` of them tuned on, each part in the order of
    `ids`; `what` names the states in the error (a fraction outside (0, 1), or one that leaves a part
    empty)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--tune_on {fraction}: expected a fraction strictly between 0 and 1")
    ids = np.asarray(ids)
    n_tune = round(fraction * len(ids))
    if n_tune == 0 or n_tune == len(ids):
        raise ValueError(f"--tune_on {fraction} of {len(ids)} {what} states leaves no tuning or no evaluation "
                         "states")
    pick = np.zeros(len(ids), dtype=bool)
    pick[np.random.default_rng(seed).permutation(len(ids))[:n_tune]] = True
    return ids[pick], ids[~pick]
