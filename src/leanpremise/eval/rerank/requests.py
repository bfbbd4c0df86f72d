"""The request a Lean client would send for a state, as the reranker sees it.

A client sends its goal, its file's earlier declarations as local premises, its import closure, and as new
premises whatever the server does not index. Here the index is a view of the data dir's corpus: all of it,
or all but some modules (`IndexView.without`: another project, which the server does not index). A state's
accessible premises the index lacks arrive as new premises (nearest first, up to the client's bound);
unindexed premises of its own file are new premises too, and then it has no local premises.

`unindexed` simulates that for training: for a share of the training states their own module (or their
module's folder, a stand-in for a project of several files) is treated as unindexed, so the model learns
the feature values a user's own project produces, which the indexed corpus alone never shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leanpremise.rank.rerank.features import RerankInput, local_order
from leanpremise.rank.rerank.premises import PremiseTable
from leanpremise.rank.rerank.structure import frontier, project_root, request_module

MAX_NEW_PREMISES = 2048
"""New premises a Lean client sends at most (the server's default MAX_NEW_PREMISES)."""
SIMULATIONS = ("none", "module", "folder")


@dataclass
class IndexView:
    """The corpus premises an index holds (sorted corpus ids) and their index ids."""

    ids: np.ndarray
    to_view: np.ndarray
    """corpus id -> index id, -1 for a premise the index does not hold."""
    known_modules: np.ndarray
    """bool per module: the index knows the module (its premises, if any, are indexed)."""

    @classmethod
    def full(cls, corpus) -> IndexView:
        n = len(corpus)
        return cls(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64),
                   np.ones(len(corpus.modules), dtype=bool))

    @classmethod
    def without(cls, corpus, modules: np.ndarray) -> IndexView:
        """Every premise but those of `modules` (bool per module)."""
        keep = ~np.asarray(modules, dtype=bool)[corpus.module_id]
        ids = np.flatnonzero(keep).astype(np.int64)
        to_view = np.full(len(corpus), -1, dtype=np.int64)
        to_view[ids] = np.arange(len(ids))
        return cls(ids, to_view, ~np.asarray(modules, dtype=bool))

    def __len__(self) -> int:
        return len(self.ids)


def modules_under(corpus, prefixes: list[str]) -> np.ndarray:
    """bool per module: the module is one of `prefixes` or below one (`Mathlib.Combinatorics` covers
    `Mathlib.Combinatorics.SimpleGraph.Basic`)."""
    return np.array([any(m == p or m.startswith(p + ".") for p in prefixes) for m in corpus.modules], dtype=bool)


def folder_of(module: str) -> str:
    return module.rsplit(".", 1)[0] if "." in module else module


@dataclass
class StateRequest:
    """One state's request: what the reranker's features read, the candidate mask over the index, and the
    corpus ids behind its new premises (for their rows and for the labels)."""

    state: int
    input: RerankInput
    mask: np.ndarray
    new_ids: np.ndarray
    named_in_index: bool
    """Whether the new premises' names may be indexed premises (never here: they are the unindexed ones; a
    real client also re-sends indexed names it has edited)."""
    positives: np.ndarray
    """The state's positives in the request's id space; a positive the request cannot reach keeps an id
    beyond every candidate, so it still counts in Recall's denominator."""
    simulation: str = "none"
    own_uses: np.ndarray | None = None
    """Index ids whose usage count counts this state itself (a training state's positives): the usage ranker
    counts them one less, or its feature would be the label."""


def module_folders(corpus) -> np.ndarray:
    """A folder id per module (modules of one folder share it)."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(folder_of(m), len(ids)) for m in corpus.modules], dtype=np.int64)


def build_request(ds, view: IndexView, table: PremiseTable, s: int, simulation: str = "none",
                  folders: np.ndarray | None = None, max_new: int = MAX_NEW_PREMISES, counted: bool = False
                  ) -> StateRequest:
    """The request of state `s` against the index `view` (`table`: the index's premise table); `simulation`
    treats the state's own module, or its folder (`folders`: module_folders), as unindexed (SIMULATIONS);
    `counted`: the state is one of those the usage counts were made from."""
    corpus, access = ds.corpus, ds.access
    m = int(ds.states.module_id[s])
    unknown = ~view.known_modules
    if simulation == "module":
        unknown = unknown.copy()
        unknown[m] = True
    elif simulation == "folder":
        folders = module_folders(corpus) if folders is None else folders
        unknown = unknown | (folders == folders[m])
    elif simulation != "none":
        raise ValueError(f"unknown simulation {simulation!r}: expected one of {', '.join(SIMULATIONS)}")
    acc = access.ids(s)
    out_of_index = unknown[corpus.module_id[acc]] | (view.to_view[acc] < 0)
    new_ids = _nearest_first(acc[out_of_index], corpus.module_id, m)[:max_new]
    indexed = view.to_view[acc[~out_of_index]]
    mask = np.zeros(len(view), dtype=bool)
    mask[indexed] = True
    own_known = not unknown[m]
    if own_known:
        lo, hi = corpus.module_start[m], access.prefix_end[s]
        own = acc[(acc >= lo) & (acc < hi)]
        local = local_order(view.to_view[own][view.to_view[own] >= 0])
    else:
        local = np.zeros(0, dtype=np.int64)
    closure = corpus.imports_of(m)
    closure = closure[~unknown[closure]]
    req = RerankInput(state=ds.states.state[s], n_indexed=len(view), local_ids=local,
                      frontier=frontier(table, closure), project=project_root(table, local),
                      module=request_module(table, local),
                      new_names=[corpus.names[i] for i in new_ids.tolist()],
                      new_texts=[corpus.texts[i] for i in new_ids.tolist()])
    positives = ds.states.positives(s)
    own = view.to_view[np.unique(positives)] if counted else None
    return StateRequest(s, req, mask, new_ids, named_in_index=False,
                        positives=_shared_positives(positives, view, new_ids, out_of_reach=len(view) + len(new_ids)),
                        simulation=simulation, own_uses=None if own is None else own[own >= 0])


def _nearest_first(ids: np.ndarray, module_id: np.ndarray, own: int) -> np.ndarray:
    """The state's own module's premises first (latest first), then the others (latest corpus id first)."""
    ids = np.sort(np.asarray(ids, dtype=np.int64))[::-1]
    mine = module_id[ids] == own
    return np.concatenate([ids[mine], ids[~mine]])


def _shared_positives(positives: np.ndarray, view: IndexView, new_ids: np.ndarray, out_of_reach: int
                      ) -> np.ndarray:
    at_new = {int(c): j for j, c in enumerate(new_ids.tolist())}
    out = []
    for j, p in enumerate(np.asarray(positives).tolist()):
        if p in at_new:
            out.append(len(view) + at_new[p])
        elif view.to_view[p] >= 0 and p not in at_new:
            out.append(int(view.to_view[p]))
        else:
            out.append(out_of_reach + j)
    return np.asarray(out, dtype=np.int64)


def simulations(n: int, share: float, seed: int) -> list[str]:
    """A simulation per training state: `share` of them unindexed, half by module, half by folder."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    return ["module" if x < share / 2 else "folder" if x < share else "none" for x in u.tolist()]
