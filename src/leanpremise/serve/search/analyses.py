"""The lexical analyses of a revision's new premises, kept across requests: a file's new premises come again
with every request from it, so their BM25 terms and MePo symbols are computed once. The fusion
(fused.py) and the reranker (reranked.py) both keep one.

Two LRU caches, each bounded in bytes (`LEXICAL_CACHE_MAX_BYTES`), not in entries or characters: an entry
weighs what Python holds for its key and value (`held_bytes`), since a term dict costs several times its
text. Worker threads share them: a race computes an entry twice, which does no harm.
"""

from __future__ import annotations

import sys

from leanpremise.rank.lean_tokens import symbols

NEW_PREMISE_CACHE_BYTES = 64 << 20
"""Default bytes each cache may hold (per revision); ServeConfig sets it."""


def held_bytes(obj) -> int:
    """Bytes Python holds for a cache key or value: the object plus, for strings' tuples, dicts and sets,
    what they contain (one level of nesting below tuples), so the bound is on memory, not on characters.
    Small ints and shared floats are counted as if not shared: an over-estimate, which keeps the bound
    safe."""
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple):
        return size + sum(held_bytes(x) for x in obj)
    if isinstance(obj, dict):
        return size + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in obj.items())
    if isinstance(obj, (set, frozenset, list)):
        return size + sum(sys.getsizeof(x) for x in obj)
    return size


class NewPremiseAnalyses:
    """BM25 terms (keyed by text) and MePo symbols (keyed by name and text, since a premise's own name is
    not one of its symbols) of new premises."""

    def __init__(self, max_bytes: int = NEW_PREMISE_CACHE_BYTES):
        from cachetools import LRUCache

        self.terms_cache = LRUCache(max_bytes, getsizeof=lambda v: v[0])
        self.symbols_cache = LRUCache(max_bytes, getsizeof=lambda v: v[0])

    def terms(self, texts: list[str], doc_terms) -> list[dict]:
        """doc_terms(text) of each text (the BM25 ranker's), from the cache where there."""
        return [_cached(self.terms_cache, t, lambda t=t: doc_terms(t)) for t in texts]

    def symbol_sets(self, names: list[str], texts: list[str]) -> list[set[str]]:
        """MePo's symbols of each new premise, its own name left out, from the cache where there."""
        return [_cached(self.symbols_cache, (n, t), lambda t=t, n=n: symbols(t, exclude=n))
                for n, t in zip(names, texts)]

    def prepare(self, side, names: list[str], texts: list[str]):
        """A request's new premises analysed for the side rankers `side` (rank/side.py `SideRankers.prepare`),
        with the analyses held here (a list the side rankers still keep is not looked up premise by premise)."""
        kept = side.kept((tuple(names), tuple(texts), True))
        if kept is not None:
            return kept
        terms = self.terms(texts, side.bm25.doc_terms) if side.bm25 is not None else None
        symbol_sets = self.symbol_sets(names, texts) if side.mepo is not None else None
        return side.prepare(names, texts, terms=terms, symbol_sets=symbol_sets)

    def nbytes(self) -> int:
        """Bytes both caches hold now (as counted against their bound)."""
        return int(self.terms_cache.currsize + self.symbols_cache.currsize)


def _cached(cache, key, make):
    """make(), from `cache` under `key` when there; kept weighed by the bytes its key and value hold."""
    hit = cache.get(key)
    if hit is None:
        value = make()
        hit = (held_bytes(key) + held_bytes(value) + sys.getsizeof((0, value)), value)
        try:
            cache[key] = hit
        except ValueError:  # larger than the whole cache
            pass
    return hit[1]
