"""What a premise selector may see from a proof state, as id ranges and boolean masks.

A premise is accessible from a state when its module is imported (transitively)
by the state's module, or it is in the same module at or before the state's
(line, column); the declaration being proved is never accessible to its own
states. With the corpus sorted by (module, line, column) this is a union of id
ranges per state, so masks and samples are computed with numpy, never with
per-premise set lookups.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from leanpremise.data.corpus import Corpus, position_key
from leanpremise.data.states import States


class Accessibility:
    def __init__(self, corpus: Corpus, states: States):
        self.corpus = corpus
        self.states = states
        state_key = position_key(states.module_id, states.line, states.column)
        self.prefix_end = np.searchsorted(corpus.position_key, state_key, side="right").astype(np.int64)
        """State s sees same-module premises with ids in [module_start[m], prefix_end[s])."""
        self._module_ranges: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ---- per state: ranges ---------------------------------------------------------------------

    def module_ranges(self, module_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Id ranges of the premises of the modules `module_id` imports (cached per module)."""
        r = self._module_ranges.get(module_id)
        if r is None:
            r = self.corpus.premise_ranges_of_modules(self.corpus.imports_of(module_id))
            self._module_ranges[module_id] = r
        return r

    def ranges(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Id ranges (starts, ends) accessible from state `s` (its declaration not yet removed)."""
        m = int(self.states.module_id[s])
        starts, ends = self.module_ranges(m)
        own_start, own_end = self.corpus.module_start[m], self.prefix_end[s]
        if own_end > own_start:
            starts, ends = np.r_[starts, own_start], np.r_[ends, own_end]
        return starts, ends

    def ids(self, s: int) -> np.ndarray:
        """Accessible premise ids of state `s`, sorted, its declaration excluded."""
        starts, ends = self.ranges(s)
        out = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)]) if len(starts) else np.empty(0, np.int64)
        out.sort()
        decl = self.states.decl_id[s]
        return out[out != decl] if decl >= 0 else out

    def count(self, s: int) -> int:
        starts, ends = self.ranges(s)
        n = int((ends - starts).sum())
        decl = self.states.decl_id[s]
        if decl >= 0 and np.any((starts <= decl) & (decl < ends)):
            n -= 1
        return n

    # ---- batches: masks ------------------------------------------------------------------------

    def _module_rows(self, module_ids: np.ndarray) -> np.ndarray:
        """(len(module_ids), n_modules) bool: row i marks the modules that module_ids[i] imports."""
        n_mod = len(self.corpus.modules)
        uniq, inv = np.unique(module_ids, return_inverse=True)
        rows = np.zeros((len(uniq), n_mod), dtype=bool)
        for r, m in enumerate(uniq):
            rows[r, self.corpus.imports_of(int(m))] = True
        return rows[inv]

    def mask(self, state_ids: np.ndarray, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """(B, hi-lo) bool mask of the premises in [lo, hi) accessible from each state."""
        hi = len(self.corpus) if hi is None else hi
        state_ids = np.asarray(state_ids, dtype=np.int64)
        modules = self.states.module_id[state_ids]
        out = self._module_rows(modules)[:, self.corpus.module_id[lo:hi]]
        ids = np.arange(lo, hi, dtype=np.int64)
        own_start = self.corpus.module_start[modules]
        out |= (ids[None, :] >= own_start[:, None]) & (ids[None, :] < self.prefix_end[state_ids][:, None])
        decl = self.states.decl_id[state_ids]
        rows = np.flatnonzero((decl >= lo) & (decl < hi))
        out[rows, decl[rows] - lo] = False
        return out

    # ---- pairs ---------------------------------------------------------------------------------

    @cached_property
    def _import_pairs(self) -> np.ndarray:
        """Sorted keys importer * n_modules + imported, for pairwise lookups."""
        n_mod = len(self.corpus.modules)
        importer = np.repeat(np.arange(n_mod, dtype=np.int64), np.diff(self.corpus.import_indptr))
        return np.sort(importer * n_mod + self.corpus.import_indices.astype(np.int64))

    def module_imports(self, importer: np.ndarray, imported: np.ndarray) -> np.ndarray:
        """Elementwise: does module `importer` import module `imported` (broadcasting)?"""
        n_mod = len(self.corpus.modules)
        key = np.asarray(importer, dtype=np.int64) * n_mod + np.asarray(imported, dtype=np.int64)
        pairs = self._import_pairs
        pos = np.searchsorted(pairs, key).clip(0, max(len(pairs) - 1, 0))
        return pairs[pos] == key if len(pairs) else np.zeros(key.shape, dtype=bool)

    def is_accessible(self, state_ids: np.ndarray, premise_ids: np.ndarray) -> np.ndarray:
        """(B, M) bool for every (state, premise) pair."""
        s = np.asarray(state_ids, dtype=np.int64)[:, None]
        p = np.asarray(premise_ids, dtype=np.int64)[None, :]
        sm, pm = self.states.module_id[s], self.corpus.module_id[p]
        imported = self.module_imports(sm, pm)
        same = (sm == pm) & (p < self.prefix_end[s])
        return (imported | same) & (p != self.states.decl_id[s])

    def is_positive(self, state_ids: np.ndarray, premise_ids: np.ndarray) -> np.ndarray:
        """(B, M) bool: premise is one of the state's positives."""
        out = np.zeros((len(state_ids), len(premise_ids)), dtype=bool)
        premise_ids = np.asarray(premise_ids)
        for r, s in enumerate(state_ids):
            pos = self.states.positives(int(s))
            if len(pos):
                out[r] = np.isin(premise_ids, pos)
        return out

    def is_known_negative(self, state_ids: np.ndarray, premise_ids: np.ndarray) -> np.ndarray:
        """(B, M) bool: a premise that certainly does not help the state.

        Known negatives are non-positive premises, other than the declaration,
        that are accessible to the state or live in a module that does not import
        the state's module (so they cannot depend on it). Premises later in the
        same module and in modules downstream of it are not known negatives.
        """
        s = np.asarray(state_ids, dtype=np.int64)
        p = np.asarray(premise_ids, dtype=np.int64)
        sm, pm = self.states.module_id[s][:, None], self.corpus.module_id[p][None, :]
        unrelated = (sm != pm) & ~self.module_imports(pm, sm)
        known = self.is_accessible(s, p) | unrelated
        known &= p[None, :] != self.states.decl_id[s][:, None]
        return known & ~self.is_positive(s, p)

    # ---- sampling ------------------------------------------------------------------------------

    def sample_negatives(self, state_ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """(B, n) ids of accessible non-positive premises, sampled uniformly with replacement.

        A state with no accessible non-positive premise (the first lemma of a
        root module) gets uniform samples from the non-positive corpus instead,
        so batches keep their shape; the loss masks nothing extra for them.
        """
        out = np.empty((len(state_ids), n), dtype=np.int64)
        if n == 0:
            return out
        n_corpus = len(self.corpus)
        for r, s in enumerate(np.asarray(state_ids, dtype=np.int64)):
            starts, ends = self.ranges(int(s))
            bad = np.r_[self.states.positives(int(s)), self.states.decl_id[s]]
            lengths = ends - starts
            total = int(lengths.sum())
            cum = np.cumsum(lengths)
            got = np.empty(0, dtype=np.int64)
            for _ in range(8):
                if total == 0:
                    break
                u = rng.integers(0, total, size=2 * n)
                k = np.searchsorted(cum, u, side="right")
                cand = starts[k] + (u - (cum[k] - lengths[k]))
                got = np.r_[got, cand[~np.isin(cand, bad)]]
                if len(got) >= n:
                    break
            if len(got) < n:
                extra = rng.integers(0, n_corpus, size=4 * n + len(bad))
                got = np.r_[got, extra[~np.isin(extra, bad)]]
            out[r] = got[:n]
        return out
