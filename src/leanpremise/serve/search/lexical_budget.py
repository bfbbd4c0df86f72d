"""How much work a request asks of the lexical rankers, counted before any is done, so that a hybrid or
reranked revision can refuse a request whose lexical ranking would hold a worker for long (issue 22).

The unit is characters analysed: each state and each new premise is tokenised once per request (BM25
terms, MePo symbols), and that costs the same per character for both; scoring is vectorised over the new
premises, so a state's scoring of them costs little beside their analysis, and it is bounded by
MAX_STATES (benchmarks/lexical_work.py has the figures). Texts are counted as cut (`answer.cut`), since
that is what the rankers see.
"""

from __future__ import annotations

from leanpremise.serve.errors import LimitExceeded


def lexical_work(states: list[str], new_texts: list[str]) -> int:
    """Characters the lexical rankers analyse for one request: each state and each new premise, once."""
    return sum(map(len, states)) + sum(map(len, new_texts))


def check_lexical_work(states: list[str], new_texts: list[str], limit: int) -> None:
    """Refuse (422, before any work) a request whose lexical work is over `limit` (MAX_LEXICAL_WORK)."""
    work = lexical_work(states, new_texts)
    if work > limit:
        raise LimitExceeded("new_premises", f"{len(states)} states and {len(new_texts)} new premises hold {work:,} "
                                            f"characters for the lexical rankers (as cut to the model's length); "
                                            f"at most {limit:,} per request (MAX_LEXICAL_WORK)")
