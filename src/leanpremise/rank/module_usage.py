"""Usage by file: how many training proof states of each module used each premise.

Proofs of one file reach for the same lemmas again and again (the file's own ones, the imports it was written
against), far more than the library at large does, so a premise's count among the states of the requesting
module is a strong prior. A request does not name its module; its local premises (its own file's earlier
declarations) do, so the reranker reads these counts for the module of the nearest local premise, and has
no value for a request without local premises (a user's own project).

Stored as CSR over modules: each module's used premises, sorted, with their counts (npy files, no pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INDPTR_FILE, PREMISES_FILE, COUNTS_FILE = "module_usage_indptr.npy", "module_usage_premises.npy", "module_usage_counts.npy"


class ModuleUsage:
    def __init__(self, indptr: np.ndarray, premises: np.ndarray, counts: np.ndarray, n_premises: int):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.premises = np.asarray(premises, dtype=np.int64)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.n_premises = int(n_premises)
        self._check()

    def _check(self) -> None:
        ip, p, c = self.indptr, self.premises, self.counts
        if ip.ndim != 1 or len(ip) < 1 or ip[0] != 0 or np.any(np.diff(ip) < 0) or ip[-1] != len(p):
            raise ValueError("module usage: indptr is not a CSR index over the premises")
        if len(c) != len(p) or (len(c) and c.min() < 1):
            raise ValueError("module usage: counts must be one positive count per listed premise")
        if len(p) and (p.min() < 0 or p.max() >= self.n_premises):
            raise ValueError(f"module usage: premise ids out of range [0, {self.n_premises})")
        for m in range(len(ip) - 1):  # sorted within each module, for the lookups' binary search
            row = p[ip[m]:ip[m + 1]]
            if len(row) > 1 and np.any(np.diff(row) <= 0):
                raise ValueError(f"module usage: the premises of module {m} are not sorted and distinct")

    @property
    def n_modules(self) -> int:
        return len(self.indptr) - 1

    @classmethod
    def from_positives(cls, modules: np.ndarray, positives: list[np.ndarray], n_modules: int, n_premises: int
                       ) -> ModuleUsage:
        """From training states' modules and positives (each state counted once per premise)."""
        rows, cols = [], []
        for m, pos in zip(np.asarray(modules).tolist(), positives):
            pos = np.unique(np.asarray(pos, dtype=np.int64))
            pos = pos[(pos >= 0) & (pos < n_premises)]
            rows.append(np.full(len(pos), m, dtype=np.int64))
            cols.append(pos)
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        keys, counts = np.unique(rows * max(n_premises, 1) + cols, return_counts=True)
        mods, prem = keys // max(n_premises, 1), keys % max(n_premises, 1)
        indptr = np.zeros(n_modules + 1, dtype=np.int64)
        np.cumsum(np.bincount(mods, minlength=n_modules), out=indptr[1:])
        return cls(indptr, prem, counts, n_premises)

    def lookup(self, module: int, ids: np.ndarray) -> np.ndarray:
        """Counts of premises `ids` among module `module`'s training states (0 for others and ids >= n)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(len(ids), dtype=np.int64)
        if not 0 <= module < self.n_modules:
            return out
        lo, hi = self.indptr[module], self.indptr[module + 1]
        row = self.premises[lo:hi]
        if len(row):
            at = np.searchsorted(row, ids).clip(0, len(row) - 1)
            hit = row[at] == ids
            out[hit] = self.counts[lo:hi][at[hit]]
        return out

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in ((INDPTR_FILE, self.indptr), (PREMISES_FILE, self.premises), (COUNTS_FILE, self.counts)):
            np.save(folder / name, arr, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path, n_modules: int, n_premises: int) -> ModuleUsage:
        """From `folder` (untrusted: no pickle, every array checked); ValueError names the file."""
        folder = Path(folder)
        arrays = []
        for name in (INDPTR_FILE, PREMISES_FILE, COUNTS_FILE):
            try:
                arr = np.load(folder / name, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"{folder / name}: not readable ({type(e).__name__}: {e})") from e
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"{folder / name}: expected a 1-d integer array, got {arr.dtype} {arr.shape}")
            arrays.append(arr)
        if len(arrays[0]) != n_modules + 1:
            raise ValueError(f"{folder / INDPTR_FILE}: {len(arrays[0]) - 1} modules, the corpus has {n_modules}")
        try:
            return cls(*arrays, n_premises)
        except ValueError as e:
            raise ValueError(f"{folder}: {e}") from e
