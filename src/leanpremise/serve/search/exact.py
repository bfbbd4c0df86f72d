"""Exact inner-product top-k over a candidate subset: a half-precision faiss scan, then an fp32 rescoring.

Scoring a request reads tens of thousands of embedding rows, so it is bound
by memory bandwidth. A faiss scalar-quantizer index over 16-bit copies of the
rows halves what one query reads and skips the rows a candidate bitmap leaves
out without touching them (figures against numpy's BLAS over the candidate
runs: docs/serving.md and docs/decisions.md).

The scan's scores differ from the exact ones by at most a bound `eps` that
follows from the storage precision and float32 rounding (see `scan_error`).
If T is the scan's k-th best score, every true top-k row scores at least
T - 2 eps in the scan, so the scan fetches rows down to that threshold and
rescoring them at the stored precision gives exactly the brute-force top-k;
when the first fetch stops short of the threshold, it fetches more.

The scan of one query runs on one core in faiss (it splits work by query), and costs about its rows times
the dimension whatever the memory: with `shards` > 1 the rows are cut into that many ranges, each its own
faiss index, scanned side by side in threads (faiss releases the GIL) and merged (`ShardedScan`), so a lone
request's scan takes the cores an idle server has. The merged top-n is the top-n of the whole scan, so
the answers are the same (figures: docs/figures.md, "serve-speed").
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

SCAN_EXTRA = 16
"""Rows fetched beyond k (and k/4 more) by the first scan, so that it rarely has to fetch again."""
GROWTH = 4
SAFETY = 1.5
"""The error bound is multiplied by this, a margin over what the analysis in `scan_error` covers."""
FP16_MAX = 65504.0
DECODE_CHUNK = 32768
MIN_SHARD_ROWS = 32768


def _one_omp_thread() -> None:
    """A scan thread's faiss runs one OpenMP thread: the shards are the parallelism."""
    import faiss

    faiss.omp_set_num_threads(1)


class ShardedScan:
    """Row ranges `starts[i]`.. of one scan, each a faiss index, searched side by side (the last in the
    caller's thread) and merged; answers a faiss index's `search` (with a list of per-shard search
    parameters), `reconstruct_batch` and `reconstruct_n`."""

    def __init__(self, starts: list[int], parts: list):
        self.starts, self.parts = starts, parts
        self.ntotal = sum(p.ntotal for p in parts)
        self._pool = ThreadPoolExecutor(max_workers=len(parts) - 1, thread_name_prefix="scan",
                                        initializer=_one_omp_thread)

    def search(self, queries: np.ndarray, k: int, params: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) of each query's top k over all shards, best first; -1 beyond the rows allowed."""
        params = params or [None] * len(self.parts)
        calls = [(part, min(k, part.ntotal), p) for part, p in zip(self.parts, params)]
        jobs = [self._pool.submit(_search, *c, queries) for c in calls[:-1]]
        last = _search(*calls[-1], queries)
        found = [j.result() for j in jobs] + [last]
        scores = np.concatenate([f[0] for f in found], axis=1)
        ids = np.concatenate([np.where(f[1] >= 0, f[1] + lo, -1) for f, lo in zip(found, self.starts)], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def _shard_of(self, ids: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.starts), ids, side="right") - 1

    def reconstruct_batch(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((len(ids), self.parts[0].d), dtype=np.float32)
        shard = self._shard_of(ids)
        for i in np.unique(shard):
            at = shard == i
            out[at] = self.parts[i].reconstruct_batch(ids[at] - self.starts[i])
        return out

    def reconstruct_n(self, lo: int, n: int) -> np.ndarray:
        return self.reconstruct_batch(np.arange(lo, lo + n, dtype=np.int64))


def _bitmap_params(faiss, mask: np.ndarray):
    """(packed bits, search parameters selecting the rows `mask` allows); the bits must outlive the search."""
    bits = np.packbits(mask, bitorder="little")
    return bits, faiss.SearchParameters(sel=faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)))


def _search(index, k: int, params, queries: np.ndarray):
    return index.search(queries, k, params=params)


class ExactSearcher:
    """Holds the rows at the serving precision (`dtype`) and a 16-bit faiss copy to scan.

    float32 keeps the float32 rows for rescoring beside a float16 scan copy; float16 and bfloat16 keep
    only the 16-bit copy, which is then both what is scanned and the stored value rescored."""

    def __init__(self, embeddings: np.ndarray, dtype: str = "float32", threads: int = 1, shards: int = 1):
        import faiss

        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.size, self.dim = emb.shape
        self.threads = max(1, int(threads))
        self.shards = max(1, min(int(shards), self.size // MIN_SHARD_ROWS))
        """Row ranges scanned side by side (1: one faiss index); ranges of fewer than MIN_SHARD_ROWS rows
        are not worth a thread."""
        peak = float(np.abs(emb).max()) if emb.size else 0.0
        scan_type = "bfloat16" if dtype == "bfloat16" else "float16"
        if peak > FP16_MAX and scan_type == "float16":
            if dtype == "float16":
                raise ValueError(f"DTYPE=float16: embedding values up to {peak:g} overflow float16; use float32")
            scan_type = "float32"
        self.rows = emb if dtype == "float32" else None
        self.scan = self._build(faiss, emb, scan_type)
        self.max_norm = float(np.sqrt(np.einsum("ij,ij->i", emb, emb).max())) * (1 + 1e-5) if self.size else 0.0
        self.storage_error = self._storage_error(emb) if self.rows is not None and scan_type != "float32" else 0.0

    def _storage_error(self, emb: np.ndarray) -> float:
        """max over rows of |x - h|, h the scanned 16-bit copy of row x: measured, not assumed, so the bound
        holds whatever rounding faiss's encoder uses."""
        worst = 0.0
        for lo in range(0, self.size, DECODE_CHUNK):
            n = min(DECODE_CHUNK, self.size - lo)
            diff = emb[lo : lo + n] - self.scan.reconstruct_n(lo, n)
            worst = max(worst, float(np.sqrt(np.einsum("ij,ij->i", diff, diff).max())))
        return worst * (1 + 1e-5)

    def _build(self, faiss, emb: np.ndarray, scan_type: str):
        if self.shards > 1:
            starts = [self.size * i // self.shards for i in range(self.shards)]
            ends = starts[1:] + [self.size]
            return ShardedScan(starts, [self._build_one(faiss, emb[lo:hi], scan_type) for lo, hi in zip(starts, ends)])
        return self._build_one(faiss, emb, scan_type)

    def _build_one(self, faiss, emb: np.ndarray, scan_type: str):
        if scan_type == "float32":
            index = faiss.IndexFlatIP(self.dim)
        else:
            qtype = faiss.ScalarQuantizer.QT_fp16 if scan_type == "float16" else faiss.ScalarQuantizer.QT_bf16
            index = faiss.IndexScalarQuantizer(self.dim, qtype, faiss.METRIC_INNER_PRODUCT)
        if len(emb):
            index.add(emb)
        return index

    def row_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Rows `ids` at the stored precision, as float32."""
        if self.rows is not None:
            return self.rows[ids]
        return self.scan.reconstruct_batch(np.asarray(ids, dtype=np.int64))

    def scan_error(self, query: np.ndarray) -> float:
        """A bound on |scan score - float32 score of the stored row| for any row, for this query.

        Storage: |q.(x - h)| <= |q| max|x - h| (measured at build). Rounding of the two float32 dot products,
        in any order: each at most gamma_D sum|q_i x_i| <= gamma_D |q| |x|, gamma_D = D u / (1 - D u) with
        u = 2^-24 (x and h differ by a relative 2^-8 at most, hence 2.1 rather than 2)."""
        qn = float(np.linalg.norm(query.astype(np.float64)))
        u32 = 2.0**-24
        gamma = self.dim * u32 / (1 - self.dim * u32)
        return SAFETY * qn * (self.storage_error + 2.1 * gamma * self.max_norm)

    def topk(self, queries: np.ndarray, mask: np.ndarray | None, count: int, k: int
             ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (scores, ids) of its exact top-min(k, count) among the rows `mask` allows (all when
        None; `count` is how many it allows), best first, ties by lower id."""
        import faiss

        k = max(0, min(k, count))
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if k == 0:
            return [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in range(len(queries))]
        faiss.omp_set_num_threads(self.threads)
        params, selection = None, None  # the selection keeps the bits alive: a selector points into them
        if mask is not None:
            if self.shards > 1:
                selection = [_bitmap_params(faiss, mask[lo : lo + part.ntotal])
                             for lo, part in zip(self.scan.starts, self.scan.parts)]
                params = [p for _, p in selection]
            else:
                selection = _bitmap_params(faiss, mask)
                params = selection[1]
        fetch = min(count, k + SCAN_EXTRA + k // 4)
        approx, labels = self.scan.search(queries, fetch, params=params)
        out = []
        for j, query in enumerate(queries):
            s, ids = approx[j], labels[j]
            eps = self.scan_error(query)
            n = fetch
            while n < count and s[n - 1] >= s[k - 1] - 2 * eps:
                n = min(count, n * GROWTH)
                s_all, l_all = self.scan.search(query[None], n, params=params)
                s, ids = s_all[0], l_all[0]
            out.append(self._rescore(query, ids[ids >= 0], k))
        return out

    def _rescore(self, query: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k of rows `ids` (which contain it), best first, ties by lower id."""
        ids = np.sort(ids)
        scores = self.row_vectors(ids) @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return scores[order].astype(np.float32), ids[order]
