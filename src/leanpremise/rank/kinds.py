"""The kinds of ranker a bundle, a fusion or a reranker can name: one place for their spellings."""

from __future__ import annotations

from enum import StrEnum


class RankerKind(StrEnum):
    """A ranker's kind; a `StrEnum`, so a kind equals (and serialises as) its bare string in files."""

    DENSE = "dense"
    BM25 = "bm25"
    MEPO = "mepo"
    USAGE = "usage"
    NEAREST = "nearest"
    """The premises of the nearest proved states (rank/nearest_states.py): read by a reranker only."""
