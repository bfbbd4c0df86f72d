"""Where a request comes from, as far as its fields tell: the modules it imports directly and its project.

A client sends its whole import closure; the modules of that closure that no other module of the closure
imports are its direct imports, as far as anyone can tell from the closure (one that is also imported
through another is indistinguishable from a transitive one). Its project is the first name component of the
modules of its local premises (its own file's declarations), unknown when it sends none.

Lean's default client (since June 2026, `premiseSelection.indexByIndividualPremise` false) sends no local
premises: every declaration of its file arrives as a new premise, after the unindexed premises of its
imports. A new premise whose name the index holds is the file's own declaration (or one of an indexed import
the client did not know was indexed): `read_new_premises` makes it a local premise, as the pre-June client
sent it, and the unindexed ones keep their place in the client's list.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from leanpremise.rank.rerank.features import RerankInput, local_order
from leanpremise.rank.rerank.premises import PremiseTable


def frontier(table: PremiseTable, closure: np.ndarray) -> np.ndarray:
    """Sorted module ids of `closure` that no other module of `closure` imports.

    Modules are visited by closure size, largest first, each marking what it imports: a module some other
    one imports is marked before it is visited (the importer's closure is larger), so only the frontier's
    closures are read, not every member's."""
    closure = np.unique(np.asarray(closure, dtype=np.int64))
    if len(closure) == 0:
        return closure
    sizes = table.import_indptr[closure + 1] - table.import_indptr[closure]
    covered = np.zeros(len(table.import_indptr) - 1, dtype=bool)
    out = []
    for m in closure[np.argsort(-sizes, kind="stable")].tolist():
        if not covered[m]:
            out.append(m)
            covered[table.closure_of(m)] = True
    return np.sort(np.asarray(out, dtype=np.int64))


def project_root(table: PremiseTable, local_ids: np.ndarray) -> int:
    """The root (project) id of the local premises' modules, the most common one; -1 when there are none."""
    if len(local_ids) == 0:
        return -1
    roots = table.module_root[table.module_id[np.asarray(local_ids, dtype=np.int64)]]
    return int(Counter(roots.tolist()).most_common(1)[0][0])


def request_module(table: PremiseTable, local_ids: np.ndarray) -> int:
    """The module of the nearest local premise (a client's local premises are its own file's), -1 without."""
    if len(local_ids) == 0:
        return -1
    return int(table.module_id[int(np.asarray(local_ids)[0])])


def read_new_premises(index_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of a request's new premises, given the index id of each one's name (-1: not indexed): (the indexed ids,
    to be local premises; the positions of the others, which stay new; their places from the list's end)."""
    index_ids = np.asarray(index_ids, dtype=np.int64)
    named = index_ids >= 0
    kept = np.flatnonzero(~named)
    return index_ids[named], kept, (len(index_ids) - 1 - kept).astype(np.int64)


def request_input(table: PremiseTable, state: str, local_ids: np.ndarray, closure: np.ndarray,
                  new_names: list[str], new_texts: list[str], new_from_end: np.ndarray | None = None,
                  new_sent: int = 0) -> RerankInput:
    """The reranker's view of one state of a request: its local premises nearest first (by corpus position),
    the frontier of its import closure, the project and module of the local premises; serving and
    evaluation's client simulation both build it here."""
    local = local_order(local_ids)
    return RerankInput(state=state, n_indexed=len(table), local_ids=local, frontier=frontier(table, closure),
                       project=project_root(table, local), module=request_module(table, local),
                       new_names=new_names, new_texts=new_texts,
                       new_from_end=None if new_from_end is None else np.asarray(new_from_end, dtype=np.int64),
                       new_sent=new_sent)
