"""The retrieval mask: which in-batch candidates may act as negatives for each state.

mask[i, j] is True when candidate j stays in state i's softmax. A state's own
positive column is never masked. Modes:

* `none`: nothing is masked.
* `no_positive`: mask every other candidate that is one of the state's
  positives or is the state's own declaration.
* `only_negative`: keep only known negatives: non-positive premises, other than
  the declaration, that are accessible to the state or live in a module that
  does not import the state's module.

Everything is computed with numpy over the (B, C) grid, no per-pair Python.
"""

from __future__ import annotations

import numpy as np

MASK_MODES = ("none", "no_positive", "only_negative")


class RetrievalMaskBuilder:
    def __init__(self, dataset, mode: str = "no_positive"):
        if mode not in MASK_MODES:
            raise ValueError(f"retrieval_mask_mode must be one of {MASK_MODES}, got {mode!r}")
        self.dataset = dataset
        self.mode = mode

    def is_positive(self, state_ids: np.ndarray, premise_ids: np.ndarray) -> np.ndarray:
        """(B, C) bool: premise_ids[j] is a positive of state_ids[i] (sorted-key lookup, fully vectorised)."""
        states = self.dataset.states
        s = np.asarray(state_ids, dtype=np.int64)
        c = np.asarray(premise_ids, dtype=np.int64)
        n = max(len(self.dataset.corpus), 1) + 1
        counts = states.pos_indptr[s + 1] - states.pos_indptr[s]
        total = int(counts.sum())
        if total == 0:
            return np.zeros((len(s), len(c)), dtype=bool)
        rows = np.repeat(np.arange(len(s), dtype=np.int64), counts)
        first = np.repeat(states.pos_indptr[s] - np.r_[0, np.cumsum(counts)[:-1]], counts)
        ids = states.pos_indices[first + np.arange(total)]
        keys = np.sort(rows * n + ids)
        query = np.arange(len(s), dtype=np.int64)[:, None] * n + c[None, :]
        pos = np.searchsorted(keys, query).clip(0, len(keys) - 1)
        return keys[pos] == query

    def build(self, state_ids: np.ndarray, candidate_ids: np.ndarray, own_columns: np.ndarray | None = None
              ) -> np.ndarray:
        """(B, C) bool mask; own_columns[i] (default i) is state i's positive column."""
        s = np.asarray(state_ids, dtype=np.int64)
        c = np.asarray(candidate_ids, dtype=np.int64)
        own = np.arange(len(s)) if own_columns is None else np.asarray(own_columns, dtype=np.int64)
        if self.mode == "none":
            return np.ones((len(s), len(c)), dtype=bool)
        decl = self.dataset.states.decl_id[s][:, None]
        positive = self.is_positive(s, c)
        if self.mode == "no_positive":
            keep = ~(positive | (c[None, :] == decl))
        else:
            access = self.dataset.access
            sm = self.dataset.states.module_id[s][:, None]
            pm = self.dataset.corpus.module_id[c][None, :]
            unrelated = (sm != pm) & ~access.module_imports(pm, sm)
            keep = (access.is_accessible(s, c) | unrelated) & ~positive & (c[None, :] != decl)
        keep[np.arange(len(s)), own] = True
        return keep
