"""The indexed premises: request fields -> a candidate mask -> exact inner-product top-k.

Candidates are built as arrays: a request's import closure becomes a boolean
mask over modules, gathered through each premise's module id; since the
corpus keeps each module's premises contiguous, the mask is a union of id
ranges. Scores are computed only over the
runs of that mask (contiguous slices of the embedding matrix, no copies), or
over the whole matrix when the mask covers most of it or is fragmented.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leanpremise.data.corpus import Corpus

THEOREM_KINDS = frozenset({"theorem", "lemma"})
FULL_SCAN_SHARE = 0.5
"""Above this share of candidates, one matmul over all rows beats many slices."""
MAX_RUNS = 4096


def module_name_from(entry: str) -> str:
    """`Mathlib/Logic/Basic.lean` (or `Mathlib\\Logic\\Basic.lean`) -> `Mathlib.Logic.Basic`."""
    text = entry.strip().replace("\\", "/")
    text = text.removesuffix(".lean")
    return text.strip("/").replace("/", ".") if "/" in text else text


@dataclass
class Candidates:
    """Which indexed premises a request may rank: None means all of them."""

    mask: np.ndarray | None
    count: int


class PremiseIndex:
    def __init__(self, corpus: Corpus, embeddings: np.ndarray, dtype: str = "float32"):
        import torch

        if embeddings.shape[0] != len(corpus):
            raise ValueError(f"{embeddings.shape[0]} embeddings for {len(corpus)} premises")
        self.corpus = corpus
        self.size = len(corpus)
        self.dim = int(embeddings.shape[1])
        self.dtype = getattr(torch, dtype)
        self.emb = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32)).to(self.dtype).contiguous()
        self._emb_np = self.emb.numpy() if self.dtype == torch.float32 else None
        """float32 rows are scored with numpy's BLAS: measured on 2 cores over ~95k rows, torch's float32
        matmul with 4 query columns took 5-9x its one-column time, OpenBLAS about 1.1x."""
        self.names = np.asarray(corpus.names, dtype=object)
        self.indexed_premises: list[str] = list(corpus.unfiltered_names)
        self.indexed_modules: list[str] = list(corpus.modules)
        self.unfiltered_to_id = np.full(len(self.indexed_premises), -1, dtype=np.int64)
        self.unfiltered_to_id[corpus.source_index] = np.arange(self.size)
        is_theorem = np.fromiter((k in THEOREM_KINDS for k in corpus.kinds), dtype=bool, count=self.size)
        self.restricted = corpus.in_module_system & ~is_theorem & ~corpus.is_exposed
        """Premises a module-system caller sees only through `import all` of their module."""
        self._module_cache: dict[str, int | None] = {}

    # ---- resolving request fields ------------------------------------------------------------

    def module_id(self, entry) -> int | None:
        """A position in /indexed-modules, a module name, or a path; None when unknown."""
        if isinstance(entry, int):
            return entry if 0 <= entry < len(self.indexed_modules) else None
        if entry in self._module_cache:
            return self._module_cache[entry]
        index = self.corpus.module_index
        name = module_name_from(entry)
        found = index.get(name)
        if found is None and name != entry:  # a path: try dropping leading folders (.lake/packages/mathlib/...)
            parts = name.split(".")
            found = next((index[".".join(parts[i:])] for i in range(1, len(parts)) if ".".join(parts[i:]) in index),
                         None)
        if len(self._module_cache) < 1_000_000:
            self._module_cache[entry] = found
        return found

    def module_ids(self, entries) -> np.ndarray:
        ids = [self.module_id(e) for e in entries]
        return np.unique(np.asarray([i for i in ids if i is not None], dtype=np.int64))

    def premise_ids(self, entries) -> np.ndarray:
        """Corpus ids of local premises given as /indexed-premises positions or names; dropped if filtered out."""
        out = []
        n = len(self.unfiltered_to_id)
        for e in entries:
            if isinstance(e, int):
                if 0 <= e < n and self.unfiltered_to_id[e] >= 0:
                    out.append(int(self.unfiltered_to_id[e]))
            else:
                i = self.corpus.name_to_id.get(e)
                if i is not None:
                    out.append(i)
        return np.asarray(out, dtype=np.int64)

    def candidates(self, imported_modules, local_premises, caller_in_module_system: bool = False,
                   imported_all_modules=None, overridden: list[str] | tuple = ()) -> Candidates:
        """The candidate mask of one request (see lean-client-api.md for the rules)."""
        mask = None
        if imported_modules is not None or local_premises is not None:
            mask = np.zeros(self.size, dtype=bool)
            if imported_modules:
                self._fill_modules(mask, self.module_ids(imported_modules))
        if caller_in_module_system and self.restricted.any():
            hidden = self.restricted.copy()
            if imported_all_modules:
                self._fill_modules(hidden, self.module_ids(imported_all_modules), value=False)
            mask = ~hidden if mask is None else mask & ~hidden
        if local_premises:
            # Local premises come from the caller's own module: visible to it whatever the module system says.
            mask[self.premise_ids(local_premises)] = True
        override_ids = [self.corpus.name_to_id[n] for n in overridden if n in self.corpus.name_to_id]
        if override_ids:
            if mask is None:
                mask = np.ones(self.size, dtype=bool)
            mask[override_ids] = False
        return Candidates(mask=mask, count=self.size if mask is None else int(mask.sum()))

    def _fill_modules(self, mask: np.ndarray, module_ids: np.ndarray, value: bool = True) -> None:
        """Set the premises of `module_ids` to `value`: one gather through the per-premise module id
        (an import closure of thousands of modules costs ~1 ms, not a Python loop over id ranges)."""
        if len(module_ids) == 0:
            return
        selected = np.zeros(len(self.indexed_modules), dtype=bool)
        selected[module_ids] = True
        hit = selected[self.corpus.module_id]
        if value:
            mask |= hit
        else:
            mask &= ~hit

    # ---- search ------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, cand: Candidates, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), each (B, k') with k' = min(k, candidates), best first; exact."""
        results = self.search_many(queries, [cand] * len(queries), [k] * len(queries))
        k = max(0, min(k, cand.count))
        if not results:
            return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
        return np.stack([r[0] for r in results]), np.stack([r[1] for r in results])

    def search_many(self, queries: np.ndarray, cands: list[Candidates], ks: list[int]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact top-k of several queries, each with its own candidates and k, in one pass over the
        embeddings: the rows scored are the union of the candidates, so concurrent requests (whose
        import closures overlap) read the memory-bound embedding matrix once instead of once each.
        Returns one (scores, ids) per query, best first, at most min(k, candidates) long."""
        import torch

        b = len(queries)
        ks = [max(0, min(k, c.count)) for k, c in zip(ks, cands)]
        k_max = max(ks, default=0)
        if k_max == 0:
            return [(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)) for _ in range(b)]
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).T)  # (D, B)
        q = q if self._emb_np is not None else torch.from_numpy(q).to(self.dtype)
        distinct = list({id(c): c for c in cands}.values())
        union = None if any(c.mask is None for c in distinct) else np.logical_or.reduce([c.mask for c in distinct])
        with torch.inference_mode():
            if union is None or int(union.sum()) > FULL_SCAN_SHARE * self.size:
                ids = None
                scores = self._matmul(0, self.size, q)
            else:
                ids = np.flatnonzero(union)
                scores = self._score_rows(union, ids, q)
            scores = torch.from_numpy(scores) if isinstance(scores, np.ndarray) else scores
            hidden = self._hidden(cands, union, ids)
            if hidden is not None:
                scores.masked_fill_(torch.from_numpy(hidden), float("-inf"))
            top_scores, top_rows = torch.topk(scores, k_max, dim=0)
        top_scores = top_scores.T.float().numpy()
        top_rows = top_rows.T.numpy()
        top_ids = top_rows if ids is None else ids[top_rows]
        return [(top_scores[j, : ks[j]], top_ids[j, : ks[j]]) for j in range(b)]

    def _matmul(self, start: int, end: int, q, out=None):
        """Rows [start, end) times the (D, B) queries, into `out` if given."""
        import torch

        if self._emb_np is not None:
            return np.matmul(self._emb_np[start:end], q, out=out)
        return torch.matmul(self.emb[start:end], q, out=out)

    @staticmethod
    def _hidden(cands: list[Candidates], union: np.ndarray | None, ids: np.ndarray | None) -> np.ndarray | None:
        """(rows scored, B) True where a row is not one of that query's candidates; None when none is hidden."""
        if all(c.mask is None or c.mask is union for c in cands):
            return None
        rows = len(cands[0].mask) if ids is None else len(ids)
        hidden = np.zeros((rows, len(cands)), dtype=bool)
        done: dict[int, np.ndarray] = {}
        for j, c in enumerate(cands):
            if c.mask is None:
                continue
            if id(c) not in done:
                done[id(c)] = ~(c.mask if ids is None else c.mask[ids])
            hidden[:, j] = done[id(c)]
        return hidden

    def _score_rows(self, union: np.ndarray, ids: np.ndarray, q):
        """Scores (len(ids), B) of the rows in `union`: one matmul per contiguous run (slices, no copy),
        or a gather when the runs are too many for that to pay."""
        import torch

        starts, ends = _runs(union)
        if len(starts) > MAX_RUNS:
            if self._emb_np is not None:
                return self._emb_np[ids] @ q
            return self.emb[torch.from_numpy(ids)] @ q
        shape = (len(ids), q.shape[1])
        scores = np.empty(shape, np.float32) if self._emb_np is not None else torch.empty(shape, dtype=self.dtype)
        pos = 0
        for s, e in zip(starts.tolist(), ends.tolist()):
            self._matmul(s, e, q, out=scores[pos : pos + e - s])
            pos += e - s
        return scores


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in `mask`."""
    d = np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)
