"""The in-memory embedding cache: text -> row, least recently used first out, bounded in entries and bytes."""

from __future__ import annotations

import hashlib

import cachetools
import numpy as np


class EmbeddingCache:
    """Text -> embedding row, least recently used evicted first, bounded in entries and in bytes. Keys are
    a hash of the text, so that a cached 50,000-character state costs 16 bytes of key, not its text."""

    ENTRY_OVERHEAD = 160
    """Bytes an entry costs beside its row: the 16-byte key as a bytes object, the array header, and the
    cache's dict slot and order bookkeeping (an estimate, counted so that tiny rows are bounded too)."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self._lru = cachetools.LRUCache(maxsize=max_bytes, getsizeof=self._size)

    @staticmethod
    def key(text: str) -> bytes:
        # surrogatepass: JSON can carry a lone surrogate, which plain UTF-8 cannot encode.
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    @classmethod
    def _size(cls, row: np.ndarray) -> int:
        return row.nbytes + cls.ENTRY_OVERHEAD

    def get(self, key: bytes) -> np.ndarray | None:
        return self._lru.get(key)

    def put(self, key: bytes, row: np.ndarray) -> None:
        """Keep a copy of `row` (a view would keep its whole batch alive and be counted as one row)."""
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
