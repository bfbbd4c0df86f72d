"""MaskedCachedMultipleNegativesRankingLoss: GradCache MNRL with a retrieval mask (and its plain twin).

Built on sentence-transformers' public extension points: `forward` takes the
mask out of the anchor features and hands it to `forward_cached` in place of
the (unused) labels, and `calculate_loss` (the method CachedLossMixin asks
subclasses to provide) scores each chunk of states against all candidates,
sets masked scores to -inf, and takes the cross-entropy against each state's
own positive column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import tqdm
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.util import all_gather, all_gather_with_grad, get_rank
from torch import Tensor

from leanpremise.train.collator import EXTRA_KEYS


@dataclass
class MaskInputs:
    """What the loss needs besides the embeddings (travels through forward_cached as `labels`)."""

    retrieval_mask: Tensor | None
    """(B, (1+n)·B) bool, True = candidate stays in the state's softmax."""
    state_ids: Tensor | None = None
    candidate_ids: Tensor | None = None
    inverse_orders: list[Tensor | None] | None = None
    """Per column, the permutation that undoes the length sort of `sort_by_length`."""


def sort_rows_by_length(feature: dict) -> tuple[dict, Tensor | None]:
    """Rows ordered by token count, so each GradCache mini-batch pads only to its own longest text.

    sentence-transformers trims the padding columns a mini-batch does not use;
    with rows sorted, a chunk of short premises no longer pays for the batch's
    longest one (about half the tokens on Mathlib premises). Returns the
    permuted features and the inverse permutation.
    """
    mask = feature.get("attention_mask")
    if not isinstance(mask, Tensor) or mask.ndim != 2:
        return feature, None
    batch = mask.shape[0]
    order = torch.argsort(mask.sum(dim=1), stable=True)
    sorted_feature = {k: (v[order] if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == batch else v)
                      for k, v in feature.items()}
    return sorted_feature, torch.argsort(order)


class MaskedScores:
    """The masked all-pairs InfoNCE both losses below compute from the embeddings of a batch's columns.

    Needs `scale`, `similarity_fct`, `gather_across_devices`, `mini_batch_size` (states scored at once),
    `show_progress_bar` and `mask_builder` on the loss.
    """

    @staticmethod
    def _split_extras(sentence_features) -> tuple[list[dict], dict]:
        """(the columns' features, copied; the mask inputs the collator put beside the first column's), so
        the model never sees keys it does not know."""
        features = [dict(f) for f in sentence_features]
        if len(features) < 2:
            raise ValueError(f"Expected at least 2 inputs, got {len(features)}")
        return features, {key: features[0].pop(key, None) for key in EXTRA_KEYS}

    def _global_mask(self, inputs: MaskInputs, batch_size: int, num_columns: int, device) -> Tensor | None:
        """Mask of this process's states against the candidates gathered from every process."""
        if inputs.retrieval_mask is None:
            return None
        if self.mask_builder is None or inputs.state_ids is None or inputs.candidate_ids is None:
            raise ValueError("gather_across_devices with a retrieval mask needs state_ids, candidate_ids and a "
                             "mask_builder")
        gathered = all_gather(inputs.candidate_ids.to(device))  # (W·C·B,), rank-major
        world = gathered.numel() // (num_columns * batch_size)
        gathered = gathered.view(world, num_columns, batch_size).transpose(0, 1).reshape(-1)
        own = get_rank() * batch_size + torch.arange(batch_size)
        mask = self.mask_builder.build(inputs.state_ids.cpu().numpy(), gathered.cpu().numpy(), own.numpy())
        return torch.from_numpy(mask).to(device)

    def _masked_loss(self, columns: list[Tensor], labels, *, with_backward: bool) -> Tensor:
        queries, docs = columns[0], columns[1:]
        batch_size = len(queries)
        mask = labels.retrieval_mask if isinstance(labels, MaskInputs) else None
        offset = 0
        if self.gather_across_devices:
            queries_all = all_gather_with_grad(queries)
            docs = [all_gather_with_grad(d) for d in docs]
            offset = get_rank() * batch_size
            if isinstance(labels, MaskInputs):
                mask = self._global_mask(labels, batch_size, len(docs), queries.device)
            queries = queries_all
        docs_all = torch.cat(docs, dim=0)
        if mask is not None:
            mask = mask.to(queries.device, torch.bool)
            if mask.shape != (batch_size, docs_all.shape[0]):
                raise ValueError(f"retrieval_mask has shape {tuple(mask.shape)}, expected "
                                 f"{(batch_size, docs_all.shape[0])}")
        losses: list[Tensor] = []
        for begin in tqdm.trange(0, batch_size, self.mini_batch_size, desc="Calculating loss",
                                 disable=not self.show_progress_bar):
            end = min(begin + self.mini_batch_size, batch_size)
            targets = torch.arange(offset + begin, offset + end, device=queries.device)
            scores = self.similarity_fct(queries[targets], docs_all) * self.scale
            if mask is not None:
                scores = scores.masked_fill(~mask[begin:end], float("-inf"))
            loss_mbatch = F.cross_entropy(scores, targets, reduction="sum") / batch_size
            if with_backward:
                loss_mbatch.backward()
                loss_mbatch = loss_mbatch.detach()
            losses.append(loss_mbatch)
        return sum(losses)

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        config["retrieval_mask_mode"] = getattr(self.mask_builder, "mode", None)
        return config


class MaskedCachedMultipleNegativesRankingLoss(MaskedScores, CachedMultipleNegativesRankingLoss):
    """CachedMultipleNegativesRankingLoss whose batches may carry a retrieval mask.

    The anchor features may hold `retrieval_mask` (B, (1+n)·B) with
    retrieval_mask[i, j] True iff candidate j (positives first, then each
    negative column) stays among state i's candidates. With
    `gather_across_devices`, the mask for the candidates of every process is
    rebuilt by `mask_builder` from the gathered state and candidate ids.
    """

    def __init__(self, model, mask_builder=None, sort_by_length: bool = True, **kwargs: Any):
        directions = kwargs.get("directions", ("query_to_doc",))
        if tuple(directions) != ("query_to_doc",) or kwargs.get("hardness_mode"):
            raise ValueError("the masked loss supports only the query_to_doc direction without hardness weighting")
        super().__init__(model, **kwargs)
        self.mask_builder = mask_builder
        self.sort_by_length = sort_by_length

    def forward(self, sentence_features, labels: Tensor | None = None) -> Tensor:
        features, extras = self._split_extras(sentence_features)
        inverse = []
        if self.sort_by_length:
            for k, feature in enumerate(features):
                features[k], inv = sort_rows_by_length(feature)
                inverse.append(inv)
        inputs = MaskInputs(extras["retrieval_mask"], extras["state_ids"], extras["candidate_ids"],
                            inverse or None)
        return self.forward_cached(features, inputs)

    def calculate_loss(self, reps: list[list[Tensor]], labels: MaskInputs | None = None, *,
                       with_backward: bool = False) -> Tensor:
        """Masked all-pairs InfoNCE, chunked over mini_batch_size states (backward per chunk if asked)."""
        columns = [torch.cat(r) for r in reps]
        if isinstance(labels, MaskInputs) and labels.inverse_orders:
            columns = [c if inv is None else c[inv.to(c.device)] for c, inv in zip(columns, labels.inverse_orders)]
        if not with_backward:
            return self._masked_loss(columns, labels, with_backward=False)
        # Each chunk back-propagates on its own, so it must stop at leaves: the un-sorting above is
        # back-propagated once, at the end, into the per-mini-batch embeddings.
        leaves = [c.detach().requires_grad_() for c in columns]
        loss = self._masked_loss(leaves, labels, with_backward=True)
        grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
        torch.autograd.backward(columns, grads)
        return loss


class MaskedMultipleNegativesRankingLoss(MaskedScores, MultipleNegativesRankingLoss):
    """The same masked loss without GradCache: each column is embedded once, with its graph kept.

    For an encoder whose activations for a whole batch are small (the static encoder: one mean of token
    vectors per text, whose inputs GradCache could not split anyway), a second forward pass would only cost
    time. `mini_batch_size` bounds the states scored at once.
    """

    def __init__(self, model, mask_builder=None, mini_batch_size: int = 1024, scale: float = 20.0,
                 gather_across_devices: bool = False):
        super().__init__(model, scale=scale, gather_across_devices=gather_across_devices)
        self.mask_builder = mask_builder
        self.mini_batch_size = mini_batch_size
        self.show_progress_bar = False

    def forward(self, sentence_features, labels: Tensor | None = None) -> Tensor:
        features, extras = self._split_extras(sentence_features)
        columns = [self.model(feature)["sentence_embedding"] for feature in features]
        inputs = MaskInputs(extras["retrieval_mask"], extras["state_ids"], extras["candidate_ids"])
        return self._masked_loss(columns, inputs, with_backward=False)
