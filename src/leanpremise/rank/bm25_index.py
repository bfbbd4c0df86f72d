"""bm25s, as far as leanpremise reads it beyond its public API: all in this module, so that a bm25s release
that changes any of it fails `tests/test_rank_bm25_index.py` loudly rather than changing a ranking.

bm25s documents `BM25(...)`, `index`, `save`, `load` and `get_scores`, not how an index is held: `BM25.scores`
is a dict of the (premises x tokens) CSC score matrix (`data`, `indices`, `indptr`) and `num_docs`, and
`BM25.vocab_dict` maps each token to its column (plus an empty token that has none); `save` writes the
parameters to `params.index.json`. `rank/bm25.py` reads the matrix to score a query's distinct tokens once
each and to derive idf for new premises, and checks a loaded index's arrays and parameters.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARAMS_FILE = "params.index.json"
"""The parameters `BM25.save` writes beside the arrays (its `params_name` default)."""


@dataclass(frozen=True)
class ScoreMatrix:
    """bm25s's score matrix: column t (token id) is data[indptr[t]:indptr[t+1]] at premises indices[...]."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    num_docs: int | None
    """The document count bm25s recorded (None when it recorded none)."""


def quiet_logger() -> None:
    """bm25s sets its logger to DEBUG when imported, which prints at our default INFO level; let it follow
    the root logger's level instead (so `-v` still shows it)."""
    logging.getLogger("bm25s").setLevel(logging.NOTSET)


def build(tokens: list[list[str]], k1: float, b: float, method: str, progress: bool = False):
    """A bm25s index of pre-tokenised documents."""
    import bm25s

    quiet_logger()
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(tokens, show_progress=progress)
    return retriever


def save(retriever, folder: Path) -> None:
    retriever.save(str(folder), show_progress=False)


def load(folder: Path):
    """A saved index, its arrays memory-mapped (revisions sharing a bundle file share pages), never
    unpickled."""
    import bm25s

    quiet_logger()
    return bm25s.BM25.load(str(folder), mmap=True, allow_pickle=False, show_progress=False)


def saved_params(folder: Path) -> dict:
    """The parameters a saved index records (k1, b, method, ...); TypeError when the file is not an object."""
    params = json.loads((Path(folder) / PARAMS_FILE).read_text())
    if not isinstance(params, dict):
        raise TypeError(f"{PARAMS_FILE} is not a JSON object")
    return params


def score_matrix(retriever) -> ScoreMatrix:
    scores = retriever.scores
    num_docs = scores.get("num_docs")
    return ScoreMatrix(data=scores["data"], indices=scores["indices"], indptr=np.asarray(scores["indptr"]),
                       num_docs=None if num_docs is None else int(num_docs))


def vocabulary(retriever) -> dict:
    """Token -> column id as bm25s holds it (ids without a column included: callers filter)."""
    return retriever.vocab_dict
