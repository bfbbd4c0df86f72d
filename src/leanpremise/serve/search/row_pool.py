"""Corpus embedding rows shared by the revisions of one model: a row identical in two bundles is kept once.

A pool holds segments, each an :class:`ExactSearcher` over rows no earlier segment had. A revision added to
the pool reuses every row an existing segment already holds (matched by a 128-bit digest of the row's
float32 bytes) and puts the rest in a new segment of its own; it then sees the pool through a
:class:`PooledRows` view: per segment, which of its rows the revision uses and as which premise. Existing
segments are never changed, so a revision can be added while others are being searched.

A search of a view is exact per revision: each segment is searched with the revision's candidates
translated to that segment's rows (an exact top-k there), and the per-segment top-ks are merged by score,
ties by the revision's premise id. A revision alone in its pool is one segment in corpus order, searched
exactly as without a pool.
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from leanpremise.serve.search.exact import ExactSearcher


def row_digests(rows: np.ndarray) -> np.ndarray:
    """One 16-byte digest per float32 row (S16 array): the key rows are matched by."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return np.array([hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows], dtype="S16")


class Segment:
    """Rows added together, searchable; `sorted_digests`/`order` find a row by its digest."""

    def __init__(self, rows: np.ndarray, digests: np.ndarray, dtype: str, threads: int, shards: int = 1):
        self.searcher = ExactSearcher(rows, dtype, threads, shards)
        self.size = self.searcher.size
        self.order = np.argsort(digests, kind="stable")
        self.sorted_digests = digests[self.order]
        self.users = 0
        """Views using this segment; at 0 the pool forgets it."""

    def find(self, digests: np.ndarray) -> np.ndarray:
        """Row of each digest in this segment, -1 where absent."""
        if self.size == 0 or len(digests) == 0:
            return np.full(len(digests), -1, dtype=np.int64)
        pos = np.searchsorted(self.sorted_digests, digests)
        pos = np.minimum(pos, self.size - 1)
        hit = self.sorted_digests[pos] == digests
        return np.where(hit, self.order[pos], -1).astype(np.int64)


class _Part:
    """The rows of one segment a view uses: `local[i]` in the segment is premise `premise[i]`."""

    def __init__(self, segment: Segment, local: np.ndarray, premise: np.ndarray):
        self.segment, self.local, self.premise = segment, local, premise
        self.to_premise = np.full(segment.size, -1, dtype=np.int64)
        self.to_premise[local] = premise
        self.member = np.zeros(segment.size, dtype=bool)
        self.member[local] = True
        self.identity = len(local) == segment.size and np.array_equal(local, premise)


class PooledRows:
    """One revision's rows in a pool; `topk` as :meth:`ExactSearcher.topk`, in the revision's premise ids."""

    def __init__(self, pool: RowPool, parts: list[_Part], size: int, dim: int, reused: int):
        self.pool, self.parts, self.size, self.dim = pool, parts, size, dim
        self.reused = reused
        """Rows found in the pool (the others were added with this revision)."""
        self._local_of: list[np.ndarray] | None = None

    @property
    def own_rows(self) -> int:
        """Rows of the segment this revision added (the rest were already in the pool)."""
        return self.size - self.reused

    def topk(self, queries: np.ndarray, mask: np.ndarray | None, count: int, k: int
             ) -> list[tuple[np.ndarray, np.ndarray]]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(self.parts) == 1 and self.parts[0].identity:
            return self.parts[0].segment.searcher.topk(queries, mask, count, k)
        found = []
        for part in self.parts:
            if mask is None:
                seg_mask = part.member
            else:
                seg_mask = np.zeros(part.segment.size, dtype=bool)
                seg_mask[part.local[mask[part.premise]]] = True
            n = int(np.count_nonzero(seg_mask))
            if n:
                found.append((part, part.segment.searcher.topk(queries, seg_mask, n, k)))
        out = []
        for j in range(len(queries)):
            scores = np.concatenate([res[j][0] for _, res in found] or [np.zeros(0, np.float32)])
            ids = np.concatenate([part.to_premise[res[j][1]] for part, res in found] or [np.zeros(0, np.int64)])
            order = np.lexsort((ids, -scores.astype(np.float64)))[: max(0, min(k, count))]
            out.append((scores[order].astype(np.float32), ids[order]))
        return out

    def row_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` (premise ids) at the stored precision, as float32 (ExactSearcher.row_vectors)."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self.parts) == 1 and self.parts[0].identity:
            return self.parts[0].segment.searcher.row_vectors(ids)
        if self._local_of is None:  # per part, each premise's row in its segment (-1: another part's)
            self._local_of = []
            for part in self.parts:
                local = np.full(self.size, -1, dtype=np.int64)
                local[part.premise] = part.local
                self._local_of.append(local)
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for part, local in zip(self.parts, self._local_of):
            at = local[ids]
            hit = at >= 0
            if hit.any():
                out[hit] = part.segment.searcher.row_vectors(at[hit])
        return out

    def release(self) -> None:
        """The revision is gone: segments no other view uses are dropped from the pool."""
        self.pool.release(self)


class RowPool:
    """The segments of one model (rows of one dimension, kept at one precision)."""

    def __init__(self, dtype: str = "float32", threads: int = 1, shards: int = 1):
        """`shards`: row ranges a segment's scan runs side by side (serve/search/exact.py)."""
        self.dtype, self.threads, self.shards = dtype, threads, shards
        self.segments: list[Segment] = []
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        """Rows held, all segments together."""
        return sum(s.size for s in self.segments)

    def add(self, embeddings: np.ndarray) -> PooledRows:
        """A view of `embeddings` (one row per premise), reusing rows the pool has; the first occurrence
        of a row in `embeddings` may reuse, later copies of it get rows of their own, so that each pool row
        is at most one premise of the revision."""
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, dim = emb.shape
        digests = row_digests(emb)
        with self._lock:
            segments = [s for s in self.segments if s.searcher.dim == dim]
            where = np.full(n, -1, dtype=np.int64)
            seg_of = np.full(n, -1, dtype=np.int64)
            _, first = np.unique(digests, return_index=True)
            firsts = np.zeros(n, dtype=bool)
            firsts[first] = True
            for si, seg in enumerate(segments):
                todo = np.flatnonzero(firsts & (where < 0))
                if len(todo) == 0:
                    break
                hit = seg.find(digests[todo])
                got = todo[hit >= 0]
                where[got], seg_of[got] = hit[hit >= 0], si
            parts = []
            for si, seg in enumerate(segments):
                premise = np.flatnonzero(seg_of == si)
                if len(premise):
                    parts.append(_Part(seg, where[premise], premise))
            fresh = np.flatnonzero(where < 0)
            if len(fresh) or not parts:
                seg = Segment(emb[fresh], digests[fresh], self.dtype, self.threads, self.shards)
                self.segments.append(seg)
                parts.append(_Part(seg, np.arange(len(fresh), dtype=np.int64), fresh))
            for part in parts:
                part.segment.users += 1
        return PooledRows(self, parts, n, dim, n - len(fresh))

    def release(self, view: PooledRows) -> None:
        with self._lock:
            for part in view.parts:
                part.segment.users -= 1
            self.segments = [s for s in self.segments if s.users > 0]
