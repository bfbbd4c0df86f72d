"""Negatives for each training pair: random accessible non-positives, optionally some hard ones.

Random negatives come from the data layer's `Accessibility.sample_negatives`.
Hard negatives come from a retrieved-premises file (a baseline's or an earlier
model's top ranks); they are stored as a CSR per state so a batch draws them
with a few vectorised numpy calls.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def batch_rng(seed: int, epoch: int, state_ids: np.ndarray) -> np.random.Generator:
    """A generator determined by (seed, epoch, batch content).

    It does not depend on which process or dataloader worker builds the batch,
    nor on how many batches came before, so negatives are the same after a
    resume and differ from one epoch to the next.
    """
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)] + [int(s) for s in state_ids])


class HardNegatives:
    """Per training state: the top-k retrieved premises that are neither positives nor the declaration."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray):
        self.indptr = indptr
        self.indices = indices

    @classmethod
    def from_file(cls, path: Path, dataset, top_k: int = 64) -> HardNegatives:
        """Read a dot_<split>-<model>.json file (its first `top_k` premises in file order, the ranking);
        entries match states by state_name, else by decl_name. A malformed file raises RetrievedFileError
        (a ValueError) naming the file, the entry and the field."""
        from leanpremise.eval.retrieved_files import read_retrieved

        path = Path(path)
        corpus, states = dataset.corpus, dataset.states
        by_state: dict[str, list[int]] = {}
        by_decl: dict[str, list[int]] = {}
        for entry in read_retrieved(path, "hard-negatives (retrieved-premises)"):
            names = [p["corpus_id"] for p in entry.premises[:top_k]]
            ids = [corpus.name_to_id[x] for x in names if x in corpus.name_to_id]
            if entry.state_name is not None:
                by_state[entry.state_name] = ids
            by_decl.setdefault(entry.decl_name, ids)

        def ranked(s: int):
            ids = by_state.get(states.name(s, corpus.modules))
            return by_decl.get(states.decl_name[s]) if ids is None else ids

        return cls._of_rankings(dataset, ranked, str(path))

    @classmethod
    def from_ranked(cls, dataset, state_ids: np.ndarray, ranked: np.ndarray, source: str) -> HardNegatives:
        """From the (states, k) corpus ids ranked for `state_ids` (-1 pads), e.g. BM25's on the train states."""
        rows = {int(s): row[row >= 0] for s, row in zip(np.asarray(state_ids).tolist(), ranked)}
        return cls._of_rankings(dataset, rows.get, source)

    @classmethod
    def _of_rankings(cls, dataset, ranked, source: str) -> HardNegatives:
        """The CSR of every state's ranked ids (`ranked(state)`, None when it has none) minus its positives and
        its own declaration."""
        states = dataset.states
        indptr = np.zeros(len(states) + 1, dtype=np.int64)
        chunks: list[np.ndarray] = []
        matched = 0
        for s in range(len(states)):
            ids = ranked(s)
            arr = np.asarray(ids if ids is not None else [], dtype=np.int64)
            if len(arr):
                bad = np.r_[states.positives(s), states.decl_id[s]]
                arr = arr[~np.isin(arr, bad)]
                matched += bool(len(arr))
            chunks.append(arr)
            indptr[s + 1] = indptr[s] + len(arr)
        logger.info("hard negatives from %s: %d of %d states have candidates", source, matched, len(states))
        indices = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        return cls(indptr, indices)

    def count(self, state_ids: np.ndarray) -> np.ndarray:
        return self.indptr[state_ids + 1] - self.indptr[state_ids]

    def sample(self, state_ids: np.ndarray, m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(B, m) candidates drawn uniformly with replacement, and a (B,) bool: does the state have any."""
        state_ids = np.asarray(state_ids, dtype=np.int64)
        counts = self.count(state_ids)
        has = counts > 0
        u = rng.random((len(state_ids), m))
        pick = self.indptr[state_ids][:, None] + np.floor(u * np.maximum(counts, 1)[:, None]).astype(np.int64)
        out = np.where(has[:, None], self.indices[np.minimum(pick, max(len(self.indices) - 1, 0))]
                       if len(self.indices) else 0, -1)
        return out, has


def bm25_hard_negatives(dataset, state_ids: np.ndarray, top_k: int) -> HardNegatives:
    """Hard negatives mined before training: BM25's top `top_k` accessible premises of each of `state_ids` (as
    `baseline bm25 --split train --k TOP_K` writes them for --hard_negatives)."""
    from leanpremise.rank.bm25 import BM25Ranker

    t0 = time.perf_counter()
    state_ids = np.asarray(state_ids, dtype=np.int64)
    ranker = BM25Ranker(dataset.corpus.texts)
    ids, _ = ranker.rank([dataset.states.state[s] for s in state_ids.tolist()], dataset.access, state_ids, top_k)
    logger.info("mined BM25 hard negatives for %d states in %.1fs", len(state_ids), time.perf_counter() - t0)
    return HardNegatives.from_ranked(dataset, state_ids, ids, "BM25")


class NegativeSampler:
    """n negatives per training state: random accessible non-positives, part hard when a file is given."""

    def __init__(self, dataset, n: int, hard: HardNegatives | None = None, hard_ratio: float = 0.5):
        if n < 0:
            raise ValueError(f"num_negatives_per_state must be >= 0, got {n}")
        if not 0.0 <= hard_ratio <= 1.0:
            raise ValueError(f"hard_negative_ratio must be in [0, 1], got {hard_ratio}")
        self.dataset = dataset
        self.n = n
        self.hard = hard
        self.n_hard = round(n * hard_ratio) if hard is not None else 0

    def sample(self, state_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, n) premise ids."""
        state_ids = np.asarray(state_ids, dtype=np.int64)
        out = self.dataset.access.sample_negatives(state_ids, self.n, rng)
        if self.n_hard and len(state_ids):
            hard, has = self.hard.sample(state_ids, self.n_hard, rng)
            out[has, : self.n_hard] = hard[has]
        return out
