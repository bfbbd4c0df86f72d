"""What the re-ranked path caches to be cheaper per request answers as if it did not: a kept new-premise list
is not analysed again, and a goal's tokens are a fresh list each time."""

from __future__ import annotations

from leanpremise.rank.lean_tokens import bm25_tokens
from leanpremise.rank.side import SideRankers
from leanpremise.serve.search.analyses import NewPremiseAnalyses


class CountingBM25:
    """A stand-in BM25 whose analyses are counted (the side rankers only ask it for terms and a matrix)."""

    n = 3

    def __init__(self):
        self.analysed = 0

    def doc_terms(self, text):
        self.analysed += 1
        return {w: 1.0 for w in text.split()}

    def new_premise_matrix(self, terms):
        return tuple(tuple(sorted(t)) for t in terms)


def test_a_kept_new_premise_list_is_served_without_analysing_its_premises_again():
    bm25 = CountingBM25()
    side, analyses = SideRankers(bm25=bm25), NewPremiseAnalyses()
    names, texts = ["a", "b"], ["x y", "y z"]
    first = analyses.prepare(side, names, texts)
    assert bm25.analysed == 2 and first.bm25_matrix == (("x", "y"), ("y", "z"))
    assert analyses.prepare(side, list(names), list(texts)) is first and bm25.analysed == 2
    other = analyses.prepare(side, ["a"], ["x y"])  # another list: its premise's terms come from the cache
    assert other is not first and other.terms == [first.terms[0]] and bm25.analysed == 2


def test_a_goals_tokens_are_a_fresh_list_each_time():
    goal = "⊢ Finset.sum_comm s = t"
    first = bm25_tokens(goal)
    assert "sum" in first and "Finset.sum_comm" in first
    first.clear()
    assert bm25_tokens(goal) == bm25_tokens(goal + " ")[:len(bm25_tokens(goal))] != []
