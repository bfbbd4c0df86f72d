"""The usage ranker (`--hybrid ...,usage`): premises ranked by how many training proof states used them.

A premise library has a head of lemmas that proofs reach for again and again (`simp` lemmas, `le_refl`,
the basic algebra). Neither the dense model nor the lexical rankers see that frequency; fused with them
it fills a state's list with the accessible premises proofs most often need. It ranks only premises some
training state used (count > 0), by count, equal counts by lower corpus id; a premise never used is not
listed, so fusion treats it as absent rather than as a long tail of ties.

Counts come from the train split only, so evaluating on valid or test (or serving) never sees their
positives. The server reads the counts from the bundle (`hybrid/usage.npy`) and scores a new premise by
the count of the indexed premise of its name (0 when there is none).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from leanpremise.rank.runs import merge_new, padded_topk, rank_states

logger = logging.getLogger(__name__)

STATE_BATCH = 256
"""States whose accessibility masks are built at once when ranking."""


def usage_counts(dataset, state_ids: np.ndarray | None = None) -> np.ndarray:
    """(N,) int64: how many of `state_ids` (default: the train split) list each corpus premise as a
    positive, each state counted once per premise."""
    if state_ids is None:
        state_ids = dataset.split_ids("train")
    parts = [np.unique(dataset.states.positives(s)) for s in np.asarray(state_ids).tolist()]
    used = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    counts = np.bincount(used, minlength=len(dataset.corpus)).astype(np.int64)
    if not counts.any():
        logger.warning("usage ranker: no training state has a positive premise (empty train split?); it "
                       "ranks nothing")
    return counts


def usage_score(counts) -> np.ndarray:
    """The score a count gives (log-scaled, so that weighted-sum fusion is not dominated by the head)."""
    return np.log1p(np.asarray(counts, dtype=np.float64)).astype(np.float32)


class UsageRanker:
    """Rankings by usage count; `order` holds the used premises best first (count desc, then id)."""

    def __init__(self, counts: np.ndarray):
        counts = np.asarray(counts)
        if counts.ndim != 1 or not np.issubdtype(counts.dtype, np.integer):
            raise ValueError(f"usage counts: expected a 1-d integer array, got {counts.dtype} {counts.shape}")
        if len(counts) and counts.min() < 0:
            raise ValueError(f"usage counts: negative count at premise {int(np.argmin(counts))}")
        self.counts = counts.astype(np.int64)
        self.n = len(counts)
        used = np.flatnonzero(self.counts > 0)
        self.order = used[np.lexsort((used, -self.counts[used]))]

    @classmethod
    def from_dataset(cls, dataset) -> UsageRanker:
        return cls(usage_counts(dataset))

    def save(self, path: Path):
        """The counts as an npy (no pickle), written atomically."""
        import io

        from leanpremise.atomic import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, self.counts, allow_pickle=False)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: Path, n_premises: int) -> UsageRanker:
        """From an npy of counts in corpus order (no pickle); ValueError names the file when it is wrong."""
        try:
            counts = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not readable ({type(e).__name__}: {e})") from e
        if getattr(counts, "shape", None) != (n_premises,):
            raise ValueError(f"{path}: {getattr(counts, 'shape', '?')} counts, the corpus has {n_premises}")
        try:
            return cls(counts)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def rank_one(self, mask: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top k used premises allowed by `mask` (bool over the corpus, None = all): (ids, scores)."""
        if mask is None:
            take = self.order[:k]
        else:  # most requests allow most premises: look at the head of the order first, widen if short
            width = 4 * k
            while True:
                head = self.order[:width]
                take = head[mask[head]][:k]
                if len(take) == k or width >= len(self.order):
                    break
                width *= 4
        return padded_topk(k, take, usage_score(self.counts[take]))

    def rank(self, access, state_ids: np.ndarray, k: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ids (B, k) -1 padded, scores) of each state's accessible used premises, best first."""
        return rank_states(lambda _, mask: self.rank_one(mask, k), access, state_ids, k, STATE_BATCH, progress,
                           desc="usage")

    def new_premise_scores(self, names: list[str], name_to_id: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
        """(scores, tie positions) of new premises: the count of the indexed premise of the same name (0
        when none) and that premise's id, so a new premise sorts exactly where the indexed one would."""
        at = np.array([name_to_id.get(n, -1) for n in names], dtype=np.int64)
        counts = np.where(at >= 0, self.counts[np.maximum(at, 0)] if self.n else 0, 0)
        return usage_score(counts), at

    def rank_with_new(self, mask: np.ndarray | None, new_names: list[str], name_to_id: dict[str, int], n: int,
                      depth: int) -> tuple[np.ndarray, np.ndarray]:
        """`rank_one` over `mask` merged with a request's new premises (new premise j is id n + j): a used
        one sorts where its indexed namesake would (by count, then corpus position), an unused one is not
        listed."""
        ids, scores = self.rank_one(mask, depth)
        new_scores, new_at = self.new_premise_scores(new_names, name_to_id)
        return merge_new(ids, scores, new_scores, n, depth, new_at=new_at, listed=new_scores > 0)
