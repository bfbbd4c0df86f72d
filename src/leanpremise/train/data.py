"""Training examples: one row per (training state, positive premise) pair."""

from __future__ import annotations

import numpy as np


def train_pairs(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(state ids, positive ids) of every pair of the train split, in split order (vectorised over the CSR)."""
    states = dataset.states
    train = np.asarray(dataset.split.train, dtype=np.int64)
    counts = states.pos_indptr[train + 1] - states.pos_indptr[train]
    total = int(counts.sum())
    state_col = np.repeat(train, counts)
    first = np.repeat(states.pos_indptr[train] - np.r_[0, np.cumsum(counts)[:-1]], counts)
    positive_col = states.pos_indices[first + np.arange(total)]
    return state_col, positive_col.astype(np.int64)


def capped_pairs(dataset, per_state: int) -> tuple[np.ndarray, np.ndarray]:
    """(state ids, slots): min(positives, per_state) rows per train state with positives, slots 0, 1, ...

    A slot names a positive through PositiveRotation, which turns it into another positive each epoch.
    """
    if per_state < 1:
        raise ValueError(f"positives_per_state must be >= 1, got {per_state}")
    states = dataset.states
    train = np.asarray(dataset.split.train, dtype=np.int64)
    counts = np.minimum(states.pos_indptr[train + 1] - states.pos_indptr[train], per_state)
    state_col = np.repeat(train, counts)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    slot_col = np.arange(int(counts.sum())) - np.repeat(starts, counts)
    return state_col, slot_col.astype(np.int64)


class PositiveRotation:
    """Which positive a (state, slot) row stands for in an epoch: slot k of state s is positive
    (k + shift) mod n_s of s, with a shift drawn per (seed, epoch, state), so a state's rows name distinct
    positives within an epoch, and a state with more positives than rows pairs with other ones each epoch."""

    def __init__(self, dataset, seed: int):
        self.indptr = dataset.states.pos_indptr
        self.indices = dataset.states.pos_indices
        self.seed = int(seed) & 0xFFFFFFFF
        self._shifts: dict[int, np.ndarray] = {}

    def shifts(self, epoch: int) -> np.ndarray:
        if epoch not in self._shifts:
            rng = np.random.default_rng([self.seed, int(epoch), 0x5107])
            self._shifts = {epoch: rng.integers(0, 2 ** 31, size=len(self.indptr) - 1)}
        return self._shifts[epoch]

    def positives(self, state_ids: np.ndarray, slots: np.ndarray, epoch: int) -> np.ndarray:
        counts = self.indptr[state_ids + 1] - self.indptr[state_ids]
        pick = (slots + self.shifts(epoch)[state_ids]) % np.maximum(counts, 1)
        return self.indices[self.indptr[state_ids] + pick].astype(np.int64)


def hf_train_dataset(state_col: np.ndarray, positive_col: np.ndarray, slot_col: np.ndarray | None = None):
    """The `datasets.Dataset` the trainer samples from (columns `state`, `positive`, and `slot` when the
    positives rotate)."""
    from datasets import Dataset

    columns = {"state": state_col.tolist(), "positive": positive_col.tolist()}
    if slot_col is not None:
        columns["slot"] = slot_col.tolist()
    return Dataset.from_dict(columns)


def model_card_widget(dataset, state_col: np.ndarray, positive_col: np.ndarray, n_others: int = 3) -> list[dict]:
    """One example for the saved model card: a train state, its first positive and a few other premises."""
    if len(state_col) == 0:
        return []
    texts = dataset.corpus.texts
    others = [texts[int(i)] for i in np.unique(positive_col)[:n_others + 1].tolist() if i != positive_col[0]]
    return [{"source_sentence": dataset.states.state[int(state_col[0])],
             "sentences": [texts[int(positive_col[0])]] + others[:n_others]}]
