"""The premise corpus: filtered declarations, ordered so each module's premises are contiguous.

Premises are sorted by (module, line, column), which makes "the premises of
module m" the id range ``[module_start[m], module_end[m])`` and "the premises
of m declared at or before (line, column)" a prefix of that range. Everything
downstream (accessibility, negatives, retrieval masks, the server) works on
these ranges instead of per-premise name sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from leanpremise.data.parse import RawData

# The original project's default filters; the Lean client applies the same ones.
MODULE_BLACKLIST = frozenset([
    "Aesop", "Auto", "Cli", "CodeAction", "DocGen4", "Duper", "ImportGraph", "Lake", "Lean", "LeanSearchClient",
    "Linter", "Mathport", "MD4Lean", "Plausible", "ProofWidgets", "Qq", "QuerySMT", "Tactic", "TacticExtra", "Test",
    "Testing", "UnicodeBasic", "Util",
])
NAME_BLACKLIST = frozenset({"Lean", "Lake", "Qq"})
TYPE_PREFIX_BLACKLIST = ("Lean.",)


def module_kept(module: str, filter: bool = True, mathlib_only: bool = False) -> bool:
    """Whether the declarations of `module` may be premises: `--mathlib_only` and the module blacklist."""
    comps = module.split(".")
    if mathlib_only and comps[0] != "Mathlib":
        return False
    return not filter or MODULE_BLACKLIST.isdisjoint(comps)


def declaration_kept(name: str, type_: str, blacklist: set[str] | frozenset[str]) -> bool:
    """Whether a declaration passes the default filters on itself: not in HammerBlacklist (`blacklist`), no
    blacklisted name component, no `Lean.` type."""
    return (name not in blacklist and NAME_BLACKLIST.isdisjoint(name.split("."))
            and not type_.startswith(TYPE_PREFIX_BLACKLIST))


POSITION_BITS = 24
"""Bits for a column in the packed (module, line, column) sort key."""


def premise_text(kind: str, name: str, args: str, type_: str, doc: str | None, nameless: bool = False) -> str:
    """The text a model embeds for a premise (and the text the Lean client sends for new premises)."""
    head = f"{kind} {args} : {type_}" if nameless else f"{kind} {name} {args} : {type_}"
    return head if doc is None else f"/-- {doc.strip()} -/\n{head}"


def position_key(module_id: np.ndarray, line: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Pack (module, line, column) into one int64 that sorts the same way."""
    return (
        (module_id.astype(np.int64) << (2 * POSITION_BITS))
        | (np.clip(line, 0, (1 << POSITION_BITS) - 1).astype(np.int64) << POSITION_BITS)
        | np.clip(column, 0, (1 << POSITION_BITS) - 1).astype(np.int64)
    )


@dataclass
class CorpusStats:
    premises_unfiltered: int
    premises: int
    duplicates_dropped: int
    filtered_out: int


class Corpus:
    """Filtered premises in (module, line, column) order, with the module import graph."""

    def __init__(self, raw: RawData, filter: bool = True, mathlib_only: bool = False, nameless: bool = False):
        d = raw.decls
        self.revision = raw.revision
        self.modules: list[str] = raw.modules
        self.module_index = {m: i for i, m in enumerate(self.modules)}
        self.listed_modules = raw.listed_modules
        self.import_indptr = raw.import_indptr
        self.import_indices = raw.import_indices
        self.nameless = nameless
        self.unfiltered_names: list[str] = d.name
        """Every declaration name in read order, before filtering (the server's /indexed-premises)."""

        keep = self._filter_mask(raw, filter, mathlib_only)
        n_kept_by_filter = int(keep.sum())
        # First occurrence of a duplicated name wins (in read order, before sorting by position).
        seen: set[str] = set()
        for i in np.flatnonzero(keep):
            name = d.name[i]
            if name in seen:
                keep[i] = False
            else:
                seen.add(name)
        kept = np.flatnonzero(keep)
        order = kept[np.argsort(position_key(d.module_id[kept], d.line[kept], d.column[kept]), kind="stable")]
        self.source_index = order
        """Row of each premise in the unfiltered read order (``unfiltered_names[source_index[i]]``)."""

        self.module_id = d.module_id[order]
        self.line = d.line[order]
        self.column = d.column[order]
        self.is_prop = d.is_prop[order]
        self.is_human = d.is_human[order]
        self.in_module_system = d.in_module_system[order]
        self.is_exposed = d.is_exposed[order]
        take = order.tolist()
        self.names: list[str] = [d.name[i] for i in take]
        self.kinds: list[str] = [d.kind[i] for i in take]
        self._args = [d.args[i] for i in take]
        self._types = [d.type[i] for i in take]
        self._docs = [d.doc[i] for i in take]
        self.name_to_id: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.position_key = position_key(self.module_id, self.line, self.column)

        counts = np.bincount(self.module_id, minlength=len(self.modules))
        self.module_end = np.cumsum(counts).astype(np.int64)
        self.module_start = self.module_end - counts
        self.stats = CorpusStats(
            premises_unfiltered=len(d.name),
            premises=len(self.names),
            duplicates_dropped=n_kept_by_filter - len(self.names),
            filtered_out=len(d.name) - n_kept_by_filter,
        )

    @staticmethod
    def _filter_mask(raw: RawData, filter: bool, mathlib_only: bool) -> np.ndarray:
        """Which raw declarations survive `--mathlib_only` and the default filters."""
        d = raw.decls
        module_ok = np.fromiter((module_kept(m, filter, mathlib_only) for m in raw.modules), dtype=bool,
                                count=len(raw.modules))
        keep = module_ok[d.module_id] if len(d.name) else np.zeros(0, dtype=bool)
        if filter:
            blacklist = set(raw.blacklist)
            keep &= np.fromiter((declaration_kept(n, t, blacklist) for n, t in zip(d.name, d.type)), dtype=bool,
                                count=len(d.name))
        return keep

    def __len__(self) -> int:
        return len(self.names)

    def for_serving(self, strings: dict[str, str]) -> None:
        """Keep only what ranking needs, sharing equal strings with other corpora through `strings`.

        A server never embeds its corpus (the bundle ships the rows), so the argument, type and doc
        texts go; names, kinds and modules are replaced by the equal string already in `strings` (one
        table per process), so revisions of one library hold each name once. `text`/`texts` fail after
        this unless `texts` was computed before."""
        self._args = self._types = self._docs = None

        def share(values: list[str]) -> list[str]:
            return [strings.setdefault(v, v) for v in values]

        self.unfiltered_names = share(self.unfiltered_names)
        self.names = [self.unfiltered_names[i] for i in self.source_index.tolist()]
        self.kinds = share(self.kinds)
        self.modules = share(self.modules)
        self.name_to_id = {n: i for i, n in enumerate(self.names)}
        self.module_index = {m: i for i, m in enumerate(self.modules)}

    def text(self, i: int) -> str:
        """The embedding text of premise `i`."""
        return premise_text(self.kinds[i], self.names[i], self._args[i], self._types[i], self._docs[i], self.nameless)

    @cached_property
    def texts(self) -> list[str]:
        """Embedding texts of all premises, in corpus order."""
        return [self.text(i) for i in range(len(self.names))]

    def module_of(self, i: int) -> str:
        return self.modules[self.module_id[i]]

    def imports_of(self, module_id: int) -> np.ndarray:
        """Module ids that `module_id` imports (transitively), itself excluded."""
        return self.import_indices[self.import_indptr[module_id] : self.import_indptr[module_id + 1]]

    def premise_ranges_of_modules(self, module_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Id ranges (starts, ends) of the premises of `module_ids`, merged where adjacent, empty ones dropped."""
        module_ids = np.sort(np.asarray(module_ids, dtype=np.int64))
        starts, ends = self.module_start[module_ids], self.module_end[module_ids]
        nonempty = ends > starts
        starts, ends = starts[nonempty], ends[nonempty]
        if len(starts) == 0:
            return starts, ends
        # Consecutive modules with premises are adjacent id ranges: merge them.
        breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
        return starts[np.r_[0, breaks]], ends[np.r_[breaks - 1, len(ends) - 1]]
