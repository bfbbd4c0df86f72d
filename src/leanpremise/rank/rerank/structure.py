"""Where a request comes from, as far as its fields tell: the modules it imports directly and its project.

A client sends its whole import closure; the modules of that closure that no other module of the closure
imports are its direct imports, as far as anyone can tell from the closure (one that is also imported
through another is indistinguishable from a transitive one). Its project is the first name component of the
modules of its local premises (its own file's declarations), unknown when it sends none.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

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
