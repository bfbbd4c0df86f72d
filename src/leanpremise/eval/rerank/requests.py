"""The request a Lean client would send for a state, as the reranker sees it.

Two clients are simulated (docs/lean-client-api.md describes both from their source):

- `default` (Lean's client since June 2026, v4.33): no local premises; the indexed modules of its import
  closure; as new premises the unindexed premises of its imports (in import order, the last 2048 of them)
  then every declaration of its own file elaborated so far, indexed or not (in its environment's map order),
  the last 2048 of all kept;
- `pre-june` (`premiseSelection.indexByIndividualPremise` true, the default before): its file's indexed
  earlier declarations as local premises, its import closure, the same new premises less the indexed ones.

The body is then read as the server reads it (`structure.read_new_premises`: a new premise whose name the
index holds is a local premise), so evaluation sees what serving sees. Here the index is a view of the data
dir's corpus: all of it, or all but some modules (`IndexView.without`: another project, which the server
does not index); a state's accessible premises the index lacks arrive as new premises.

`unindexed` simulates that for training: for a share of the training states their own module (or their
module's folder, a stand-in for a project of several files, or its subtree, the first two components of its
name, a stand-in for a project of a hundred files) is treated as unindexed, so the model learns the feature
values a user's own project produces, which the indexed corpus alone never shows.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from leanpremise.rank.rerank.features import RerankInput
from leanpremise.rank.rerank.premises import PremiseTable
from leanpremise.rank.rerank.structure import read_new_premises, request_input

MAX_NEW_PREMISES = 2048
"""New premises a Lean client sends at most (its option premiseSelection.maxUnindexedPremises)."""
SIMULATIONS = ("none", "module", "folder", "subtree")
CLIENTS = ("default", "pre-june")
"""The Lean clients simulated: the default body since June 2026 and the one before (module docstring)."""


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


def subtree_of(module: str) -> str:
    """The first two components of a module's name (`Mathlib.AlgebraicGeometry` of its modules)."""
    return ".".join(module.split(".")[:2])


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
    own_key: int = -1
    """A training state's declaration: the nearest-states ranker leaves out its own proof's states (-1: none)."""


def module_folders(corpus, of=folder_of) -> np.ndarray:
    """A folder id per module (modules of one folder share it); `of=subtree_of`: a subtree id."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(of(m), len(ids)) for m in corpus.modules], dtype=np.int64)


def import_order(corpus) -> np.ndarray:
    """A rank per module in an order a Lean environment lists its imports in (each after all it imports):
    by the size of its import closure, then its id. Lean's own order is its import traversal's; a client's
    imported unindexed premises come in that order, and only which ones come last (kept) depends on it."""
    sizes = np.diff(np.asarray(corpus.import_indptr, dtype=np.int64))
    rank = np.empty(len(sizes), dtype=np.int64)
    rank[np.lexsort((np.arange(len(sizes)), sizes))] = np.arange(len(sizes))
    return rank


def map_order(names: list[str]) -> np.ndarray:
    """The order a client lists its file's declarations in: its environment's map of them is a hash map,
    whose order tells nothing of where they stand in the file; a fixed hash of the name stands in for it."""
    return np.argsort(np.fromiter((zlib.crc32(n.encode()) for n in names), dtype=np.int64, count=len(names)),
                      kind="stable")


def client_new_premises(imported: np.ndarray, own: np.ndarray, order: np.ndarray, names: list[str],
                        max_new: int) -> np.ndarray:
    """Corpus ids of the new premises a client sends: `imported` (unindexed premises of its imports) in import
    order (`order`: import_order of each one's module), the last `max_new` of them, then `own` (its file's
    declarations it sends) in map order; the last `max_new` of all."""
    imported = np.asarray(imported, dtype=np.int64)
    imported = imported[np.lexsort((imported, order))][-max_new:] if max_new else imported[:0]
    own = np.asarray(own, dtype=np.int64)
    own = own[map_order([names[i] for i in own.tolist()])]
    sent = np.concatenate([imported, own])
    return sent[len(sent) - max_new:] if len(sent) > max_new else sent


def build_request(ds, view: IndexView, table: PremiseTable, s: int, simulation: str = "none",
                  folders: np.ndarray | None = None, max_new: int = MAX_NEW_PREMISES, counted: bool = False,
                  client: str = "default", order: np.ndarray | None = None, subtrees: np.ndarray | None = None
                  ) -> StateRequest:
    """The request of state `s` by `client` (CLIENTS) against the index `view` (`table`: the index's
    premise table), as the server reads it; `simulation` treats the state's own module, or its folder
    (`folders`: module_folders), or its subtree (`subtrees`: module_folders(corpus, subtree_of)), as
    unindexed (SIMULATIONS); `counted`: the state is one of those the usage
    counts were made from; `order`: import_order of the corpus (computed when not given)."""
    if client not in CLIENTS:
        raise ValueError(f"unknown client {client!r}: expected one of {', '.join(CLIENTS)}")
    corpus, access = ds.corpus, ds.access
    m = int(ds.states.module_id[s])
    unknown = ~view.known_modules
    if simulation == "module":
        unknown = unknown.copy()
        unknown[m] = True
    elif simulation == "folder":
        folders = module_folders(corpus) if folders is None else folders
        unknown = unknown | (folders == folders[m])
    elif simulation == "subtree":
        subtrees = module_folders(corpus, subtree_of) if subtrees is None else subtrees
        unknown = unknown | (subtrees == subtrees[m])
    elif simulation != "none":
        raise ValueError(f"unknown simulation {simulation!r}: expected one of {', '.join(SIMULATIONS)}")
    order = import_order(corpus) if order is None else order
    acc = access.ids(s)
    out_of_index = unknown[corpus.module_id[acc]] | (view.to_view[acc] < 0)
    lo, hi = corpus.module_start[m], access.prefix_end[s]
    own_file = (acc >= lo) & (acc < hi)
    imported = acc[~own_file & out_of_index]
    own = acc[own_file] if client == "default" else acc[own_file & out_of_index]
    sent = client_new_premises(imported, own, order[corpus.module_id[imported]], corpus.names, max_new)
    index_ids = np.where(unknown[corpus.module_id[sent]], -1, view.to_view[sent])
    named, kept, from_end = read_new_premises(index_ids)
    new_ids = sent[kept]
    local = named if client == "default" else view.to_view[acc[own_file & ~out_of_index]]
    mask = np.zeros(len(view), dtype=bool)
    mask[view.to_view[acc[~own_file & ~out_of_index]]] = True
    mask[local] = True
    closure = corpus.imports_of(m)
    closure = closure[~unknown[closure]]
    req = request_input(table, ds.states.state[s], local, closure,
                        [corpus.names[i] for i in new_ids.tolist()], [corpus.texts[i] for i in new_ids.tolist()],
                        from_end, len(sent))
    positives = ds.states.positives(s)
    own_uses = view.to_view[np.unique(positives)] if counted else None
    return StateRequest(s, req, mask, new_ids, named_in_index=False,
                        positives=_shared_positives(positives, view, new_ids, out_of_reach=len(view) + len(new_ids)),
                        simulation=simulation, own_uses=None if own_uses is None else own_uses[own_uses >= 0],
                        own_key=int(ds.states.decl_id[s]) if counted else -1)


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


def simulations(n: int, share: float, seed: int, scopes: tuple[str, ...] = ("module", "folder")) -> list[str]:
    """A simulation per training state: `share` of them unindexed, in equal parts by each of `scopes` (of
    SIMULATIONS but none)."""
    bad = [x for x in scopes if x not in SIMULATIONS or x == "none"]
    if bad or not scopes:
        raise ValueError(f"simulation scopes {list(scopes)}: expected some of {', '.join(SIMULATIONS[1:])}")
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    return [scopes[min(int(x / share * len(scopes)), len(scopes) - 1)] if x < share else "none"
            for x in u.tolist()]
