"""The train/valid/test split by declaration, identical to the original's for the same data and seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leanpremise.data.corpus import Corpus
from leanpremise.data.states import States


@dataclass
class Split:
    """State ids of each part; valid/test/all hold one root state per declaration, in split order."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    all: np.ndarray
    valid_decls: list[str]
    test_decls: list[str]

    def get(self, name: str) -> np.ndarray:
        if name not in ("train", "valid", "test", "all"):
            raise ValueError(f"unknown split {name!r}: expected train, valid, test or all")
        return getattr(self, name)


def shuffled_decl_names(states: States, seed: int) -> list[str]:
    """Sorted unique declaration names, shuffled exactly as `np.random.seed(seed); np.random.shuffle(...)`."""
    names = sorted(set(states.decl_name))
    np.random.RandomState(seed).shuffle(names)
    return names


def eligible_decl_names(names: list[str], corpus: Corpus) -> list[str]:
    """Names that may be evaluated: in the filtered corpus and written by a human (`isHumanTheorem`)."""
    out = []
    for n in names:
        pid = corpus.name_to_id.get(n) if n else None
        if pid is not None and corpus.is_human[pid]:
            out.append(n)
    return out


def root_states(states: States, decls: list[str]) -> np.ndarray:
    """For each name in `decls`, its state with the lowest line index in its module file."""
    wanted = {n: i for i, n in enumerate(decls)}
    best = np.full(len(decls), -1, dtype=np.int64)
    for s, n in enumerate(states.decl_name):
        j = wanted.get(n)
        if j is not None and (best[j] < 0 or states.idx_in_module[s] < states.idx_in_module[best[j]]):
            best[j] = s
    return best[best >= 0]


def make_split(states: States, corpus: Corpus, seed: int = 0, n_valid: int = 500, n_test: int = 500,
               mode: str = "standard") -> Split:
    eligible = eligible_decl_names(shuffled_decl_names(states, seed), corpus)
    empty = np.empty(0, dtype=np.int64)
    if mode == "all":
        return Split(train=empty, valid=empty, test=empty, all=root_states(states, eligible),
                     valid_decls=[], test_decls=[])
    if mode != "standard":
        raise ValueError(f"unknown split mode {mode!r}: expected standard or all")
    test_decls = eligible[:n_test]
    valid_decls = eligible[n_test : n_test + n_valid]
    held_out = set(test_decls) | set(valid_decls)
    train = np.fromiter((s for s, n in enumerate(states.decl_name) if n not in held_out), dtype=np.int64)
    valid, test = root_states(states, valid_decls), root_states(states, test_decls)
    return Split(train=train, valid=valid, test=test, all=np.r_[test, valid], valid_decls=valid_decls,
                 test_decls=test_decls)
