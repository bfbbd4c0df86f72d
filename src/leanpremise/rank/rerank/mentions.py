"""Mention features: how much of the request's own code names a candidate.

A project's declarations name the library constants it works with: a user's file that states lemmas about
`CommRingCat` and `Spec` will likely need premises about them. Lean's default client sends the unindexed
premises of the file's imports and then the file's own declarations as new premises, current file last
(docs/lean-client-api.md), so their texts are in every request. For each candidate this family counts the new
premises whose text names it, each weighted by its nearness to the end of the client's list.

A text names a constant as Lean prints it: in full (`AlgebraicGeometry.Scheme.Hom`), after an `open`
(`Scheme.Hom`), or in field notation (`f.base`). So a candidate is looked up twice: by its name's last two
components as the end of a dotted word of the text (or the whole name when it has one component), and by its
last component alone (which `open` and field notation leave; noisier for short, common names, which the
share column tells the model). A new premise's own declared name is not a mention of itself.

Computed in one pass over the request's new premises (each text's words read once and cached by text, as the
same imported premises arrive in request after request), then one dictionary lookup per candidate.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np

FAMILY = "mentions"
"""The name a reranker's spec lists this family under (spec.families)."""

_WORD = re.compile(r"[\w'!?]+(?:\.[\w'!?]+)*")
"""A dotted identifier as Lean prints it (unicode letters and subscripts are \\w)."""


def tail_key(name: str) -> str:
    """A constant's last two name components (`A.B.C` -> `B.C`), the whole name when it has one."""
    return ".".join(name.rsplit(".", 2)[-2:])


def last_key(name: str) -> str:
    """A constant's last name component (`A.B.C` -> `C`)."""
    return name.rpartition(".")[2]


@lru_cache(maxsize=1 << 14)
def text_keys(name: str, text: str) -> tuple[frozenset[str], frozenset[str]]:
    """(tail keys, last keys) of the dotted words of a new premise's text, its own declared name left out
    (once): what the text names. Cached by text: a request's imported premises recur across requests."""
    if name:
        text = text.replace(name, " ", 1)
    words = _WORD.findall(text)
    return frozenset(map(tail_key, words)), frozenset(map(last_key, words))


def weight(from_end: int) -> float:
    """A new premise's weight by its place from the end of the client's list (0: the current file's latest)."""
    return 1.0 / math.log2(2.0 + from_end)


def mention_columns(cand_names: list[str], new_names: list[str], new_texts: list[str],
                    new_from_end: np.ndarray) -> list[np.ndarray]:
    """Per candidate (by name): [weighted count of new premises naming it by its tail key, the same by its last
    component, the nearest such premise's place from the end (NaN when none), the share of new premises that
    name its last component]."""
    tail_of = [tail_key(c) for c in cand_names]
    last_of = [last_key(c) for c in cand_names]
    tails, lasts = set(tail_of), set(last_of)
    by_tail: dict[str, float] = {}
    by_last: dict[str, float] = {}
    count: dict[str, int] = {}
    nearest: dict[str, int] = {}
    for name, text, at in zip(new_names, new_texts, np.asarray(new_from_end, dtype=np.int64).tolist()):
        t_keys, l_keys = text_keys(name, text)
        w = weight(at)
        for k in t_keys & tails:
            by_tail[k] = by_tail.get(k, 0.0) + w
        for k in l_keys & lasts:
            by_last[k] = by_last.get(k, 0.0) + w
            count[k] = count.get(k, 0) + 1
            if at < nearest.get(k, at + 1):
                nearest[k] = at
    n = max(len(new_texts), 1)
    return [np.array([by_tail.get(k, 0.0) for k in tail_of]),
            np.array([by_last.get(k, 0.0) for k in last_of]),
            np.array([nearest.get(k, np.nan) for k in last_of], dtype=np.float64),
            np.array([count.get(k, 0) / n for k in last_of], dtype=np.float64)]


def columns(table, req, cand: np.ndarray) -> list[np.ndarray]:
    """The family's columns for candidates `cand` of request `req` (features.RerankInput) over `table`:
    the entry point features.features calls."""
    n = req.n_indexed
    names = [table.names[c] if c < n else req.new_names[c - n] for c in np.asarray(cand).tolist()]
    return mention_columns(names, req.new_names, req.new_texts, req.places_from_end())
