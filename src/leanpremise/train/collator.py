"""The batch collator: pre-tokenised token columns, sampled negatives and the retrieval mask.

A training row is a (state, positive premise) pair. The collator turns a list
of rows into the column layout sentence-transformers' trainer splits by prefix:
`anchor_*` (the states, plus `anchor_retrieval_mask`, `anchor_state_ids` and
`anchor_candidate_ids`, which the loss takes out before embedding),
`positive_*`, and `negative_<k>_*` for each of the n negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sentence_transformers.sentence_transformer.data_collator import SentenceTransformerDataCollator
from transformers import TrainerCallback

from leanpremise.model.tokens import TokenTable
from leanpremise.train.data import PositiveRotation
from leanpremise.train.mask import RetrievalMaskBuilder
from leanpremise.train.negatives import NegativeSampler, batch_rng

EXTRA_KEYS = ("retrieval_mask", "state_ids", "candidate_ids")
"""Entries of the anchor features that are loss inputs, not model inputs."""


@dataclass
class PremiseBatchCollator(SentenceTransformerDataCollator):
    state_tokens: TokenTable | None = None
    """Tokens of the training states, row state_row[state id]."""
    state_row: np.ndarray | None = None
    premise_tokens: TokenTable | None = None
    """Tokens of every corpus premise, row = corpus id."""
    sampler: NegativeSampler | None = None
    mask_builder: RetrievalMaskBuilder | None = None
    rotation: PositiveRotation | None = None
    """With it, each row's `slot` names its positive in the current epoch (--positives_per_state)."""
    bags: bool = False
    """Token columns as a static encoder takes them (a flat id list and offsets), not padded."""
    seed: int = 42
    epoch: int = 0
    """Set at each epoch's start (EpochCallback) so negatives are resampled every epoch."""
    timings: list[float] | None = field(default=None, repr=False)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import time

        t0 = time.perf_counter()
        state_ids = np.fromiter((f["state"] for f in features), dtype=np.int64, count=len(features))
        if self.rotation is not None:
            slots = np.fromiter((f["slot"] for f in features), dtype=np.int64, count=len(features))
            positives = self.rotation.positives(state_ids, slots, self.epoch)
        else:
            positives = np.fromiter((f["positive"] for f in features), dtype=np.int64, count=len(features))
        negatives = self.sampler.sample(state_ids, batch_rng(self.seed, self.epoch, state_ids))
        candidates = np.concatenate([positives, negatives.T.reshape(-1)])
        batch: dict[str, Any] = {}
        self._put(batch, "anchor", self._tokens(self.state_tokens, self.state_row[state_ids]))
        self._put(batch, "positive", self._tokens(self.premise_tokens, positives))
        for k in range(negatives.shape[1]):
            self._put(batch, f"negative_{k}", self._tokens(self.premise_tokens, negatives[:, k]))
        batch["anchor_retrieval_mask"] = torch.from_numpy(self.mask_builder.build(state_ids, candidates))
        batch["anchor_state_ids"] = torch.from_numpy(state_ids)
        batch["anchor_candidate_ids"] = torch.from_numpy(candidates)
        if self.timings is not None:
            self.timings.append(time.perf_counter() - t0)
        return batch

    def _tokens(self, table: TokenTable, rows: np.ndarray) -> dict:
        return table.bags(rows) if self.bags else table.batch(rows)

    @staticmethod
    def _put(batch: dict, column: str, tokens: dict) -> None:
        for key, value in tokens.items():
            batch[f"{column}_{key}"] = value


class EpochCallback(TrainerCallback):
    """Tell the collator which epoch starts (before the epoch's dataloader workers are forked)."""

    def __init__(self, collator: PremiseBatchCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.epoch = int(np.floor((state.epoch or 0.0) + 1e-6))
