"""One batch of the masked cached loss, shared by the DDP test and its gloo worker processes.

Run as a script (`python ddp_loss_case.py RANK WORLD STORE MODEL OUT GATHER`), it joins a gloo group
through a file store (no TCP port to pick, so parallel test runs cannot collide), computes the loss on
its rank's slice of the batch, back-propagates, averages the gradients over the ranks as DDP does,
and saves the loss and gradients.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

PER_RANK = 4
"""States per rank; the whole batch is WORLD · PER_RANK pairs."""
NEGATIVE_COLUMNS = 1
MINI_BATCH = 3
"""GradCache mini-batch size: smaller than a rank's batch, so the cached backward runs in chunks."""
VOCAB = 1000


class ParityMask:
    """A deterministic stand-in for RetrievalMaskBuilder: drops candidate j for state i when
    (state_ids[i] + candidate_ids[j]) is divisible by 3, except the state's own positive column."""

    mode = "parity"

    def build(self, state_ids, candidate_ids, own_columns=None):
        s = np.asarray(state_ids, dtype=np.int64)
        c = np.asarray(candidate_ids, dtype=np.int64)
        keep = (s[:, None] + c[None, :]) % 3 != 0
        own = np.arange(len(s)) if own_columns is None else np.asarray(own_columns)
        keep[np.arange(len(s)), own] = True
        return keep


def _tokens(gen: torch.Generator, rows: int) -> dict:
    """Random token ids with varied lengths (padding on the right), so length sorting matters."""
    lengths = torch.randint(3, 12, (rows,), generator=gen)
    width = int(lengths.max())
    ids = torch.randint(1000, 1000 + VOCAB, (rows, width), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def whole_batch(world: int) -> dict:
    """The concatenated batch of every rank: token columns, state ids and candidate ids."""
    gen = torch.Generator().manual_seed(1234)
    rows = world * PER_RANK
    columns = [_tokens(gen, rows) for _ in range(1 + 1 + NEGATIVE_COLUMNS)]  # anchor, positive, negatives
    state_ids = torch.randperm(50, generator=gen)[:rows]
    candidate_ids = torch.randperm(500, generator=gen)[:rows * (1 + NEGATIVE_COLUMNS)].view(-1, rows)
    return {"columns": columns, "state_ids": state_ids, "candidate_ids": candidate_ids}


def features_for(batch: dict, rows: slice) -> list[dict]:
    """The loss's input features for `rows` of the whole batch, as the collator lays them out."""
    columns = [{k: v[rows] for k, v in col.items()} for col in batch["columns"]]
    state_ids = batch["state_ids"][rows]
    candidate_ids = batch["candidate_ids"][:, rows].reshape(-1)  # column-major: positives, then negatives
    mask = ParityMask().build(state_ids.numpy(), candidate_ids.numpy())
    columns[0].update(retrieval_mask=torch.from_numpy(mask), state_ids=state_ids, candidate_ids=candidate_ids)
    return columns


def loss_and_grads(model_dir: str, features: list[dict], gather: bool) -> tuple[float, dict]:
    """Loss and parameter gradients of one forward/backward of the masked cached loss."""
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.loss import MaskedCachedMultipleNegativesRankingLoss

    model = SentenceTransformer(model_dir, device="cpu")
    model.eval()  # no dropout: the reference and the ranks must see the same network
    loss_fn = MaskedCachedMultipleNegativesRankingLoss(model, mask_builder=ParityMask(), mini_batch_size=MINI_BATCH,
                                                       scale=20.0, gather_across_devices=gather)
    loss = loss_fn(features, None)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def main(rank: int, world: int, store: str, model_dir: str, out: str, gather: bool) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        features = features_for(whole_batch(world), slice(rank * PER_RANK, (rank + 1) * PER_RANK))
        loss, grads = loss_and_grads(model_dir, features, gather)
        for g in grads.values():  # DDP's reducer: the mean of the ranks' gradients
            dist.all_reduce(g)
            g /= world
        losses = [None] * world
        dist.all_gather_object(losses, loss)
        torch.save({"losses": losses, "grads": grads}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    r, w, s, m, o, g = sys.argv[1:7]
    main(int(r), int(w), s, m, o, g == "gather")
