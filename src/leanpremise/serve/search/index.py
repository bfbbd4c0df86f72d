"""The indexed premises: request fields -> an import mask -> exact inner-product top-k.

A request's import mask (the indexed premises it may rank) is built as arrays: its import closure becomes
a boolean mask over modules, gathered through each premise's module id. The mask then selects the rows an
exact search scores (serve/search/exact.py).

Lean's client sends the same import closure with every request of a file, so the part of the mask that
follows from the imports (and the module system's visibility) is kept per distinct list, least recently
used evicted first (`mask_cache_entries`); a request then only adds its local premises and removes its
overridden names, on a copy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from cachetools import LRUCache

from leanpremise.data.corpus import Corpus
from leanpremise.rank.dense import dense_scores
from leanpremise.serve.search.exact import ExactSearcher

THEOREM_KINDS = frozenset({"theorem", "lemma"})


def module_name_from(entry: str) -> str:
    """`Mathlib/Logic/Basic.lean` (or `Mathlib\\Logic\\Basic.lean`) -> `Mathlib.Logic.Basic`."""
    text = entry.strip().replace("\\", "/")
    text = text.removesuffix(".lean")
    return text.strip("/").replace("/", ".") if "/" in text else text


def _positions(entries, n: int) -> np.ndarray | None:
    """`entries` as an array of positions below `n` (others dropped) when every entry is a plain int, as
    Lean's client sends them: one array operation instead of a lookup each; None otherwise (then each entry
    is resolved on its own), also for an int beyond int64."""
    if not isinstance(entries, (list, tuple)) or not all(type(e) is int for e in entries):
        return None
    try:
        arr = np.fromiter(entries, dtype=np.int64, count=len(entries))
    except OverflowError:
        return None
    return arr[(arr >= 0) & (arr < n)]


@dataclass
class ImportMask:
    """Which indexed premises a request may rank (its imports, its local premises, the module system's
    visibility): `mask` None means all of them; `count` how many it allows."""

    mask: np.ndarray | None
    count: int


class PremiseIndex:
    def __init__(self, corpus: Corpus, embeddings: np.ndarray | None, dtype: str = "float32",
                 search_threads: int = 1, rows=None, mask_cache_entries: int = 32):
        """`rows`: the premises' rows already held elsewhere (a `PooledRows` view shared with other
        revisions, serve/search/row_pool.py), searched instead of an own copy of `embeddings`;
        `mask_cache_entries`: distinct import lists whose masks are kept (0: none)."""
        size = rows.size if rows is not None else embeddings.shape[0]
        if size != len(corpus):
            raise ValueError(f"{size} embeddings for {len(corpus)} premises")
        self.corpus = corpus
        self.size = len(corpus)
        self.dtype = dtype
        self.rows = rows if rows is not None else ExactSearcher(embeddings, dtype, search_threads)
        """The premises' rows, searchable (an `ExactSearcher`, or a `PooledRows` view of a shared pool)."""
        self.dim = int(self.rows.dim)
        self.names = np.asarray(corpus.names, dtype=object)
        self.indexed_premises: list[str] = list(corpus.unfiltered_names)
        self.indexed_modules: list[str] = list(corpus.modules)
        self.unfiltered_to_id = np.full(len(self.indexed_premises), -1, dtype=np.int64)
        self.unfiltered_to_id[corpus.source_index] = np.arange(self.size)
        is_theorem = np.fromiter((k in THEOREM_KINDS for k in corpus.kinds), dtype=bool, count=self.size)
        self.restricted = corpus.in_module_system & ~is_theorem & ~corpus.is_exposed
        """Premises a module-system caller sees only through `import all` of their module."""
        self._max_module_depth = max((m.count(".") + 1 for m in self.indexed_modules), default=1)
        self._module_sizes = corpus.module_end - corpus.module_start
        """Premises per module: the corpus is sorted by module id, so a module mask expands to the premise
        mask by a sequential repeat."""
        self._import_masks: LRUCache | None = LRUCache(mask_cache_entries) if mask_cache_entries > 0 else None
        """(imports, module-system visibility) -> (read-only mask, count): see the module docstring. Keyed by
        the resolved module ids' bytes themselves, not a digest: no two lists can share an entry."""
        self._import_masks_lock = threading.Lock()  # masks are built on a pool of threads

    # ---- resolving request fields ------------------------------------------------------------

    def module_id(self, entry) -> int | None:
        """A position in /indexed-modules, a module name, or a path; None when unknown. Nothing is cached:
        a request's names are resolved by a few dict lookups each, and a cache keyed by what clients send
        would grow with every new string they make up."""
        if isinstance(entry, int):
            return entry if 0 <= entry < len(self.indexed_modules) else None
        index = self.corpus.module_index
        name = module_name_from(entry)
        found = index.get(name)
        if found is None and name != entry:  # a path: try dropping leading folders (.lake/packages/mathlib/...)
            # Only suffixes as deep as the deepest indexed module can match: a path of a thousand folders
            # costs as much as one of ten.
            parts = name.split(".")
            first = max(1, len(parts) - self._max_module_depth)
            found = next((index[".".join(parts[i:])] for i in range(first, len(parts))
                          if ".".join(parts[i:]) in index), None)
        return found

    def module_ids(self, entries) -> np.ndarray:
        """Module ids of `entries` (unknown ones dropped; may repeat). The array is built from the resolved,
        in-range ids only, never from the request's values themselves: numpy sizes an array of strings by the
        longest one, and an int beyond int64 would not fit."""
        positions = _positions(entries, len(self.indexed_modules))
        if positions is not None:
            return positions
        ids = (self.module_id(e) for e in entries)
        return np.fromiter((i for i in ids if i is not None), dtype=np.int64)

    def premise_ids(self, entries) -> np.ndarray:
        """Corpus ids of local premises given as /indexed-premises positions or names; dropped if filtered out."""
        n = len(self.unfiltered_to_id)
        positions = _positions(entries, n)
        if positions is not None:
            ids = self.unfiltered_to_id[positions]
            return ids[ids >= 0]
        out = []
        for e in entries:
            if isinstance(e, int):
                if 0 <= e < n and self.unfiltered_to_id[e] >= 0:
                    out.append(int(self.unfiltered_to_id[e]))
            else:
                i = self.corpus.name_to_id.get(e)
                if i is not None:
                    out.append(i)
        return np.asarray(out, dtype=np.int64)

    def import_mask(self, imported_modules, local_premises, caller_in_module_system: bool = False,
                    imported_all_modules=None, overridden: list[str] | tuple = ()) -> ImportMask:
        """The import mask of one request (see docs/lean-client-api.md for the rules); `overridden`: names of
        its new premises, which replace their indexed namesakes. The mask may be shared with other requests
        (read-only): nothing may write to it."""
        mask, count = self._visible(imported_modules, local_premises is not None,
                                    bool(caller_in_module_system), imported_all_modules)
        local = self.premise_ids(local_premises) if local_premises else None
        override_ids = [self.corpus.name_to_id[n] for n in overridden if n in self.corpus.name_to_id]
        if (local is None or not len(local)) and not override_ids:
            return ImportMask(mask=mask, count=count)
        mask = np.ones(self.size, dtype=bool) if mask is None else mask.copy()
        if local is not None:
            # Local premises come from the caller's own module: visible to it whatever the module system says.
            mask[local] = True
        mask[override_ids] = False
        return ImportMask(mask=mask, count=int(np.count_nonzero(mask)))

    def _visible(self, imported_modules, has_locals: bool, module_system: bool, imported_all_modules
                 ) -> tuple[np.ndarray | None, int]:
        """(mask, count) of what the imports and the module system's visibility allow (None: everything),
        from the cache when these imports were seen before."""
        limited = imported_modules is not None or has_locals
        hides = module_system and bool(self.restricted.any())
        if not limited and not hides:
            return None, self.size
        modules = self.module_ids(imported_modules) if imported_modules else None
        opened = self.module_ids(imported_all_modules) if hides and imported_all_modules else None
        key = (limited, hides, b"" if modules is None else modules.tobytes(),
               None if opened is None else opened.tobytes())
        if self._import_masks is not None:
            with self._import_masks_lock:
                found = self._import_masks.get(key)
            if found is not None:
                return found
        mask = None
        if limited:
            mask = np.zeros(self.size, dtype=bool)
            if modules is not None:
                self._fill_modules(mask, modules)
        if hides:
            hidden = self.restricted.copy()
            if opened is not None:
                self._fill_modules(hidden, opened, value=False)
            mask = ~hidden if mask is None else mask & ~hidden
        mask.flags.writeable = False
        found = (mask, int(np.count_nonzero(mask)))
        if self._import_masks is not None:
            with self._import_masks_lock:
                self._import_masks[key] = found
        return found

    def _fill_modules(self, mask: np.ndarray, module_ids: np.ndarray, value: bool = True) -> None:
        """Set the premises of `module_ids` to `value`: a module mask expanded to premises in one array
        operation (an import closure has thousands of modules: no Python loop over id ranges)."""
        if len(module_ids) == 0:
            return
        selected = np.zeros(len(self.indexed_modules), dtype=bool)
        selected[module_ids] = True
        hit = np.repeat(selected, self._module_sizes)
        if value:
            mask |= hit
        else:
            mask &= ~hit

    # ---- search ------------------------------------------------------------------------------

    def search_many(self, queries: np.ndarray, masks: list[ImportMask], ks: list[int]
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact top-k of several queries, each with its own import mask and k; queries sharing a mask
        object (one request's several states) share one scan call.
        Returns one (scores, ids) per query, best first, at most min(k, allowed) long."""
        queries = np.asarray(queries, dtype=np.float32).reshape(len(masks), self.dim)
        groups: dict[int, list[int]] = {}
        for j, c in enumerate(masks):
            groups.setdefault(id(c), []).append(j)
        results: list = [None] * len(masks)
        for members in groups.values():
            cand = masks[members[0]]
            k = max(ks[j] for j in members)
            found = self.rows.topk(queries[members], cand.mask, cand.count, k)
            for j, (scores, ids) in zip(members, found):
                n = max(0, min(ks[j], cand.count))
                results[j] = (scores[:n], ids[:n])
        return results

    def score(self, queries: np.ndarray, ids: list[np.ndarray], new_rows: np.ndarray) -> list[np.ndarray]:
        """Per query row, the dense score of each of its `ids` (indexed premises 0..n-1 by their rows at the
        serving precision, new premise n + j by `new_rows[j]`; rank/dense.dense_scores), float64."""
        queries = np.asarray(queries, dtype=np.float32).reshape(len(ids), self.dim)
        return [dense_scores(q, c, self.size, self.rows.row_vectors, new_rows) for q, c in zip(queries, ids)]
