"""Proof states with their positives (premises of the proof that are in the corpus)."""

from __future__ import annotations

import numpy as np

from leanpremise.data.corpus import Corpus
from leanpremise.data.parse import RawStates


def parse_recommendation(entry: str) -> tuple[str, str]:
    """Split a `declHammerRecommendation` entry "(name, hint)" into (name, hint).

    Names may themselves contain ", " inside «guillemets», so the hint is taken
    after the last separator. An entry without parentheses is a bare name.
    """
    if entry.startswith("(") and entry.endswith(")"):
        body = entry[1:-1]
        name, sep, hint = body.rpartition(", ")
        if sep:
            return name, hint
        return body, ""
    return entry, ""


class States:
    """Proof states as columns, with positives as a CSR of corpus ids."""

    def __init__(self, raw: RawStates, corpus: Corpus, mathlib_only: bool = False):
        keep = np.ones(len(raw.decl_name), dtype=bool)
        if mathlib_only:
            mathlib = np.asarray([m.split(".")[0] == "Mathlib" for m in corpus.modules], dtype=bool)
            keep = mathlib[raw.module_id] if len(keep) else keep
        idx = np.flatnonzero(keep)
        take = idx.tolist()
        self.module_id = raw.module_id[idx]
        self.idx_in_module = raw.idx_in_module[idx]
        self.line = raw.line[idx]
        self.column = raw.column[idx]
        self.decl_name: list[str] = [raw.decl_name[i] for i in take]
        self.state: list[str] = [raw.state[i] for i in take]
        self.recommendation: list[tuple[str, ...]] = [raw.recommendation[i] for i in take]
        name_to_id = corpus.name_to_id
        self.decl_id = np.fromiter((name_to_id.get(n, -1) for n in self.decl_name), dtype=np.int64, count=len(take))

        indptr = np.zeros(len(take) + 1, dtype=np.int64)
        ids: list[int] = []
        for s, recs in enumerate(self.recommendation):
            seen: set[int] = set()
            for entry in recs:
                pid = name_to_id.get(parse_recommendation(entry)[0])
                if pid is not None and pid not in seen:
                    seen.add(pid)
                    ids.append(pid)
            indptr[s + 1] = len(ids)
        self.pos_indptr = indptr
        self.pos_indices = np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.decl_name)

    def positives(self, s: int) -> np.ndarray:
        """Corpus ids of the positives of state `s`."""
        return self.pos_indices[self.pos_indptr[s] : self.pos_indptr[s + 1]]

    @property
    def n_positives(self) -> np.ndarray:
        return np.diff(self.pos_indptr)

    def name(self, s: int, modules: list[str]) -> str:
        """`<module>#<line index in its TrainingDataWithPremises file>`, the state_name of retrieved files."""
        return f"{modules[self.module_id[s]]}#{self.idx_in_module[s]}"

    def hints(self, s: int) -> dict[str, str]:
        """Ground-truth premise names of state `s` with their simp_all hints (all, in the corpus or not)."""
        return dict(parse_recommendation(e) for e in self.recommendation[s])
