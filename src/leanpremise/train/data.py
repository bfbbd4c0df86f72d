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


def hf_train_dataset(state_col: np.ndarray, positive_col: np.ndarray):
    """The `datasets.Dataset` the trainer samples from (columns `state`, `positive`)."""
    from datasets import Dataset

    return Dataset.from_dict({"state": state_col.tolist(), "positive": positive_col.tolist()})


def model_card_widget(dataset, state_col: np.ndarray, positive_col: np.ndarray, n_others: int = 3) -> list[dict]:
    """One example for the saved model card: a train state, its first positive and a few other premises."""
    if len(state_col) == 0:
        return []
    texts = dataset.corpus.texts
    others = [texts[int(i)] for i in np.unique(positive_col)[:n_others + 1].tolist() if i != positive_col[0]]
    return [{"source_sentence": dataset.states.state[int(state_col[0])],
             "sentences": [texts[int(positive_col[0])]] + others[:n_others]}]
