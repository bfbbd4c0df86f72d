"""The reranker's candidates and features: computed here only, from what a server receives.

A request (the goal, its local premises, its import closure, its new premises) and what its bundle holds
(the corpus's per-premise columns, the rankers) are all a feature may use: evaluation builds, for each state,
the request a Lean client would send and calls these same functions, so a trained model sees in evaluation
exactly the values serving gives it.

Ids are the request's shared id space: indexed premises 0..n-1, then its new premises n, n+1, ...

A missing value is NaN (the learning-to-rank libraries treat it as missing, not as a number): a ranker
that did not list a candidate has no rank; a new premise has no module, so no frontier or project feature.

Lean's default client (docs/lean-client-api.md) sends no local premises: its file's declarations arrive as
new premises, after the unindexed premises of its imports. `structure.read_new_premises` turns those whose
names the index holds into local premises; what is left keeps its place in the client's list, which the
`new_from_end` features read (the current file comes last).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from leanpremise.rank.kinds import RankerKind
from leanpremise.rank.lean_tokens import bm25_tokens
from leanpremise.rank.rerank import mentions
from leanpremise.rank.rerank.premises import (
    PROP_KINDS,
    Coder,
    PremiseTable,
    decl_kind,
    gather,
    kind_code,
    name_parts,
    name_spaces,
)

FEATURE_SET = 2
"""Bumped when a feature changes meaning; a reranker records the version of each feature it was trained on."""
RANKERS = tuple(RankerKind)
"""The rankers a reranker can read, in column order."""
LOOKUP_RANKERS = frozenset({RankerKind.DENSE, RankerKind.BM25, RankerKind.USAGE, RankerKind.NEAREST})
"""Rankers that can score any candidate (not only those they listed): their score is a feature for all."""


@dataclass(frozen=True)
class Feature:
    name: str
    version: int
    help: str


def ranker_features(kind: str) -> list[Feature]:
    """A ranker's columns: its rank (1 = best) and reciprocal rank among its top list, its score, and for the
    rankers whose scores are comparable within a request, the score relative to the request's best."""
    out = [Feature(f"{kind}_rank", 1, f"1-based rank in {kind}'s list (missing when not listed)"),
           Feature(f"{kind}_rr", 1, f"1 / {kind}_rank (0 when not listed)"),
           Feature(f"{kind}_score", 1, f"{kind}'s score" + (" of any candidate" if kind in LOOKUP_RANKERS
                                                            else " (missing when not listed)"))]
    if kind == RankerKind.DENSE:
        out.append(Feature("dense_gap", 1, "dense score minus the best candidate's"))
    if kind == RankerKind.BM25:
        out.append(Feature("bm25_rel", 1, "BM25 score over the best candidate's (0 when none scores)"))
    if kind in LOOKUP_RANKERS:
        out.append(Feature(f"{kind}_cand_rank", 1, f"rank of its {kind} score among the request's candidates"))
    if kind == RankerKind.USAGE:
        out.append(Feature("module_usage", 1, "log(1 + training states of the request's module that used it); "
                                              "missing when the request names no module (no local premises)"))
    return out


AGREEMENT = [
    Feature("listed_by", 1, "how many rankers list it"),
    Feature("best_rank", 1, "its best rank in any ranker's list (missing when none lists it)"),
]


STRUCTURE = [
    Feature("is_local", 1, "one of the request's local premises (its own file, before the goal)"),
    Feature("local_recency", 1, "position among the local premises, nearest first (missing when not local)"),
    Feature("local_recency_rel", 1, "local_recency over the number of local premises"),
    Feature("is_new", 1, "a new premise of the request (not indexed)"),
    Feature("in_frontier", 1, "its module is a direct import of the request, as far as its closure tells"),
    Feature("same_project", 1, "its module's first name component is the request's project's (missing when "
                               "either is unknown)"),
    Feature("kind", 1, "declaration kind code (categorical)"),
    Feature("is_prop", 1, "a proposition (new premises: a theorem or lemma)"),
    Feature("text_len", 1, "characters of its text"),
    Feature("name_hits", 1, "parts of its name that occur in the goal"),
    Feature("name_overlap", 1, "name_hits over the parts of its name"),
    Feature("new_from_end", 1, "a new premise's place in the client's list counted from its end (0 = last: the "
                               "current file's latest, as the default client sends them); missing when indexed"),
    Feature("new_from_end_rel", 1, "new_from_end over the number of new premises the client sent"),
    Feature("goal_namespace", 1, "leading components of its namespace that a constant of the goal shares"),
    Feature("goal_namespace_rel", 1, "goal_namespace over its namespace's components (missing without one)"),
]
FAMILIES = {mentions.FAMILY: [
    Feature("mention_tail", 1, "new premises whose text names it by its last two name components, each weighted "
                               "by nearness to the end of the client's list (rank/rerank/mentions.py)"),
    Feature("mention_last", 1, "the same by its last name component alone (after `open`, in field notation)"),
    Feature("mention_nearest", 1, "place from the list's end of the nearest new premise naming its last "
                                  "component (missing when none)"),
    Feature("mention_last_share", 1, "share of the new premises naming its last component (unweighted)"),
]}
"""Optional feature families, after the structure columns, in a spec's `families` order: a spec without
them (every reranker made before them) reads the same columns as before, so FEATURE_SET stays."""
FAMILY_COLUMNS = {mentions.FAMILY: mentions.columns}
KNOWN = ({f.name: f.version for f in STRUCTURE + AGREEMENT}
         | {f.name: f.version for k in RANKERS for f in ranker_features(k)}
         | {f.name: f.version for fam in FAMILIES.values() for f in fam})
CATEGORICAL = ("kind",)


def feature_list(rankers: list[str], structure: bool = True, families: tuple[str, ...] | list[str] = ()
                 ) -> list[Feature]:
    """The columns of a reranker reading `rankers` (in RANKERS order), unless off the structure ones, then
    those of each optional family (FAMILIES) in `families`."""
    out = [f for k in RANKERS if k in rankers for f in ranker_features(k)]
    extra = [f for fam in families for f in FAMILIES[fam]]
    return out + (AGREEMENT if rankers else []) + (STRUCTURE if structure else []) + extra


@dataclass
class RerankInput:
    """One request's goal, as the reranker sees it (one state of a request)."""

    state: str
    n_indexed: int
    local_ids: np.ndarray
    """Indexed ids of the local premises, nearest first (highest corpus position first)."""
    frontier: np.ndarray
    """Sorted module ids of the request's direct imports (structure.frontier of its closure)."""
    project: int = -1
    """Root id of the request's project (structure.project_root), -1 when unknown."""
    module: int = -1
    """The request's module as its local premises tell (structure.request_module), -1 when unknown."""
    new_names: list[str] = field(default_factory=list)
    new_texts: list[str] = field(default_factory=list)
    new_from_end: np.ndarray | None = None
    """Per new premise, its place in the client's list counted from the end (None: the list is theirs)."""
    new_sent: int = 0
    """New premises the client sent, named or not (0: as many as `new_names`)."""

    def places_from_end(self) -> np.ndarray:
        """Each new premise's place in the client's list counted from its end: `new_from_end`, or the order of
        `new_names` when the list is theirs."""
        return self.new_from_end if self.new_from_end is not None else np.arange(len(self.new_names))[::-1]


ScoreLookup = Callable[[np.ndarray], np.ndarray]


@dataclass
class Signals:
    """What the rankers said of one request: each one's top list, and a score for any candidate where the
    ranker can give one (dense: the embedding dot product; BM25: the query's score; usage: the count)."""

    runs: dict[str, tuple[np.ndarray, np.ndarray]]
    """kind -> (ids, scores), best first, -1 padded, in the shared id space."""
    lookups: dict[str, ScoreLookup] = field(default_factory=dict)
    """kind -> score of any candidate; `module_usage`: the usage prior of the request's module (absent when
    the request names no module: the feature is then missing)."""


def local_order(local_ids: np.ndarray) -> np.ndarray:
    """Local premises nearest first: the corpus is in (module, line, column) order, so a later id is nearer."""
    return np.unique(np.asarray(local_ids, dtype=np.int64))[::-1]


def candidates(signals: Signals, req: RerankInput, depth: int, local_bound: int) -> np.ndarray:
    """Sorted ids: the union of every ranker's top `depth` and the `local_bound` nearest local premises."""
    parts = [ids[:depth][ids[:depth] >= 0] for ids, _ in signals.runs.values()]
    parts.append(np.asarray(req.local_ids[:local_bound], dtype=np.int64))
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def _positions(run_ids: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Position of each candidate in `run_ids` (0 = first), -1 where absent."""
    valid = np.flatnonzero(run_ids >= 0)
    ids = run_ids[valid]
    order = np.argsort(ids, kind="stable")
    srt = ids[order]
    at = np.searchsorted(srt, cand).clip(0, max(len(srt) - 1, 0))
    hit = (srt[at] == cand) if len(srt) else np.zeros(len(cand), dtype=bool)
    return np.where(hit, valid[order[at]] if len(srt) else -1, -1)


def _ranker_columns(kind: str, run, lookup: ScoreLookup | None, cand: np.ndarray, depth: int,
                    module_lookup: ScoreLookup | None = None) -> list[np.ndarray]:
    ids, scores = run
    pos = _positions(np.asarray(ids[:depth]), cand)
    listed = pos >= 0
    rank = np.where(listed, pos + 1.0, np.nan)
    rr = np.where(listed, 1.0 / np.maximum(pos + 1.0, 1.0), 0.0)
    if lookup is not None:
        score = np.asarray(lookup(cand), dtype=np.float64)
    else:
        score = np.where(listed, np.asarray(scores, dtype=np.float64)[np.maximum(pos, 0)], np.nan)
    cols = [rank, rr, score]
    if kind == RankerKind.DENSE:
        best = np.nanmax(score) if len(score) and np.isfinite(score).any() else 0.0
        cols.append(score - best)
    if kind == RankerKind.BM25:
        best = np.nanmax(score) if len(score) and np.isfinite(score).any() else 0.0
        cols.append(score / best if best > 0 else np.zeros(len(score)))
    if kind in LOOKUP_RANKERS:
        cols.append(_rank_among(score))
    if kind == RankerKind.USAGE:
        cols.append(np.asarray(module_lookup(cand), dtype=np.float64) if module_lookup is not None
                    else np.full(len(cand), np.nan))
    return cols


def _rank_among(score: np.ndarray) -> np.ndarray:
    """1-based rank of each score among the candidates' (ties share the best rank)."""
    filled = np.where(np.isfinite(score), score, -np.inf)
    srt = np.sort(-filled)
    return np.searchsorted(srt, -filled, side="left") + 1.0


def _structure_columns(table: PremiseTable, req: RerankInput, cand: np.ndarray) -> list[np.ndarray]:
    n = req.n_indexed
    new = cand >= n
    idx = np.where(new, 0, cand)
    local_pos = _positions(np.asarray(req.local_ids, dtype=np.int64), cand)
    is_local = local_pos >= 0
    n_local = max(len(req.local_ids), 1)
    module = table.module_id[idx].astype(np.int64)
    in_frontier = np.isin(module, req.frontier).astype(np.float64)
    in_frontier[new] = np.nan
    same = (table.module_root[module] == req.project).astype(np.float64)
    same[new | (req.project < 0)] = np.nan
    new_kinds = [decl_kind(req.new_texts[c - n]) for c in cand[new].tolist()]
    kind = table.kind[idx].astype(np.float64)
    kind[new] = [kind_code(k) for k in new_kinds]
    is_prop = table.is_prop[idx].astype(np.float64)
    is_prop[new] = [k in PROP_KINDS for k in new_kinds]
    text_len = table.text_len[idx].astype(np.float64)
    text_len[new] = [len(req.new_texts[c - n]) for c in cand[new].tolist()]
    hits, overlap, shared, ns_len = _name_columns(table, req, cand)
    from_end = np.full(len(cand), np.nan)
    if new.any():
        from_end[new] = np.asarray(req.places_from_end(), dtype=np.float64)[cand[new] - n]
    sent = max(req.new_sent or len(req.new_names), 1)
    return [is_local.astype(np.float64), np.where(is_local, local_pos, np.nan),
            np.where(is_local, local_pos / n_local, np.nan), new.astype(np.float64), in_frontier, same, kind,
            is_prop, text_len, hits, overlap, from_end, from_end / sent, shared,
            np.where(ns_len > 0, shared / np.maximum(ns_len, 1), np.nan)]


_CONSTANT = re.compile(r"[^\s()\[\]{}⟨⟩,:]+")


def goal_namespaces(state: str) -> frozenset[str]:
    """Every leading part of the dotted names in a goal (`Finset.sum_comm` gives `Finset` and itself): the
    namespaces its constants live in, as the client prints them (full names)."""
    out = set()
    for word in _CONSTANT.findall(state):
        parts = word.split(".")
        if len(parts) > 1:
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(out)


def _name_columns(table: PremiseTable, req: RerankInput, cand: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate: (parts of its name that occur in the goal, that over its parts, leading components
    of its namespace that a constant of the goal shares, its namespace's components), counted over all
    candidates at once on their name codes (premises.NameCodes)."""
    n = req.n_indexed
    coder = Coder(table.codes.vocab)
    goal_parts = coder.codes_of({t.lower() for t in bm25_tokens(req.state)})
    goal_spaces = coder.codes_of(goal_namespaces(req.state))
    new = cand >= n
    order = np.concatenate([np.flatnonzero(~new), np.flatnonzero(new)])  # the rows below: indexed, then new
    parts, n_parts = gather(table.codes.parts, cand[~new])
    spaces, n_spaces = gather(table.codes.spaces, cand[~new])
    if new.any():  # the request's own premises: their names split here
        names = [req.new_names[c - n] for c in cand[new].tolist()]
        parts, n_parts = _appended(parts, n_parts, [coder.codes_of(name_parts(m)) for m in names])
        spaces, n_spaces = _appended(spaces, n_spaces, [coder.codes_of(name_spaces(m)) for m in names])
    mark = np.zeros(coder.size(), dtype=bool)
    mark[goal_parts] = True
    hits = np.bincount(np.repeat(np.arange(len(cand)), n_parts), weights=mark[parts], minlength=len(cand))
    mark[:] = False
    mark[goal_spaces] = True
    marked = mark[spaces]
    # the longest of its namespaces among the goal's: the last marked place in its row (1-based)
    place = np.arange(len(spaces)) - np.repeat(np.cumsum(n_spaces) - n_spaces, n_spaces) + 1
    shared = np.zeros(len(cand))
    np.maximum.at(shared, np.repeat(np.arange(len(cand)), n_spaces)[marked], place[marked].astype(np.float64))
    out = np.empty((4, len(cand)))
    out[:, order] = [hits, np.where(n_parts > 0, hits / np.maximum(n_parts, 1), 0.0), shared, n_spaces]
    return out[0], out[1], out[2], out[3]


def _appended(codes: np.ndarray, lens: np.ndarray, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged (codes, lens) with `rows` after its own."""
    return (np.concatenate([codes, *rows]),
            np.concatenate([lens, np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))]))


def features(table: PremiseTable, req: RerankInput, signals: Signals, cand: np.ndarray, rankers: list[str],
             structure: bool = True, depth: int = 100, families: tuple[str, ...] | list[str] = ()) -> np.ndarray:
    """(len(cand), len(feature_list(rankers, structure, families))) float32: the one feature computation."""
    cand = np.asarray(cand, dtype=np.int64)
    cols: list[np.ndarray] = []
    ranks = []
    for kind in RANKERS:
        if kind in rankers:
            part = _ranker_columns(kind, signals.runs[kind], signals.lookups.get(kind), cand, depth,
                                   signals.lookups.get("module_usage") if kind == RankerKind.USAGE else None)
            ranks.append(part[0])
            cols += part
    if ranks:
        stacked = np.stack(ranks)
        cols.append(np.isfinite(stacked).sum(axis=0).astype(np.float64))
        listed = np.isfinite(stacked).any(axis=0)
        cols.append(np.where(listed, np.nanmin(np.where(np.isfinite(stacked), stacked, np.inf), axis=0), np.nan))
    if structure:
        cols += _structure_columns(table, req, cand)
    for fam in families:
        cols += FAMILY_COLUMNS[fam](table, req, cand)
    if not cols:
        return np.zeros((len(cand), 0), dtype=np.float32)
    return np.stack(cols, axis=1).astype(np.float32)
