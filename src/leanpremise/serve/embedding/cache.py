"""The in-memory embedding cache: text -> row, least recently used first out, bounded in entries and bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import cachetools
import numpy as np

from leanpremise.serve.embedding.vector_check import row_problem, stacked_problems, wrong_dim


class EmbeddingCache:
    """Text -> embedding row, least recently used evicted first, bounded in entries and in bytes. Keys are
    a hash of the text, so that a cached 50,000-character state costs 16 bytes of key, not its text."""

    ENTRY_OVERHEAD = 160
    """Bytes an entry costs beside its row: the 16-byte key as a bytes object, the array header, and the
    cache's dict slot and order bookkeeping (an estimate, counted so that tiny rows are bounded too)."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self._lru = cachetools.LRUCache(maxsize=max_bytes, getsizeof=self._size)
        self.dim: int | None = None
        """The rows' dimension, from the first row put: a row of another is turned down."""
        self.on_rejected: Callable[[str, int], None] | None = None
        """Told (reason, 1) of a row turned down on the way out (see `get`); the server counts them."""

    @staticmethod
    def key(text: str) -> bytes:
        # surrogatepass: JSON can carry a lone surrogate, which plain UTF-8 cannot encode.
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    @classmethod
    def _size(cls, row: np.ndarray) -> int:
        return row.nbytes + cls.ENTRY_OVERHEAD

    def get(self, key: bytes) -> np.ndarray | None:
        """The row under `key`, or None; a row that is not a usable embedding (a TEI service answering NaN,
        say) is dropped and a miss, so its text is embedded again rather than scored as NaN."""
        row = self._lru.get(key)
        if row is None:
            return None
        problem = row_problem(row, self.dim)
        if problem is not None:
            self._reject(key, problem)
            return None
        return row

    def get_many(self, keys: list[bytes]) -> list[np.ndarray | None]:
        """`get` of each key, the rows found checked together (one request's cached texts: the check is a
        few array operations, not several per row)."""
        rows = [self._lru.get(key) for key in keys]
        found = [i for i, row in enumerate(rows) if row is not None]
        if not found:
            return rows
        misfits = [i for i in found if wrong_dim(rows[i], self.dim)]
        if misfits:
            for i in misfits:
                self._reject(keys[i], "dim")
                rows[i] = None
            found = [i for i in found if rows[i] is not None]
            if not found:
                return rows
        for j, why in stacked_problems(np.stack([rows[i] for i in found])):
            self._reject(keys[found[j]], why)
            rows[found[j]] = None
        return rows

    def _reject(self, key: bytes, why: str) -> None:
        """Drop an unusable row (its text is embedded again) and tell `on_rejected`."""
        if self._lru.pop(key, None) is not None and self.on_rejected is not None:
            self.on_rejected(why, 1)

    def put(self, key: bytes, row: np.ndarray) -> None:
        """Keep a copy of `row` (a view would keep its whole batch alive and be counted as one row)."""
        if self.dim is None:
            self.dim = int(np.shape(row)[-1])
        if key not in self._lru:
            while len(self._lru) >= self.max_entries:
                self._lru.popitem()
        try:
            self._lru[key] = np.array(row, dtype=np.float32, copy=True)
        except ValueError:  # one row larger than the whole byte bound: not cached
            pass

    @property
    def nbytes(self) -> int:
        return int(self._lru.currsize)

    def __len__(self) -> int:
        return len(self._lru)
