"""The masked cached loss equals the uncached masked loss; each mask mode excludes exactly the right pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import decl, make_data_dir, state
from leanpremise.data import DataConfig, load_dataset
from leanpremise.train.args import LossArguments
from leanpremise.train.mask import RetrievalMaskBuilder


@pytest.fixture(scope="module")
def hand_ds(tmp_path_factory):
    """A <- B <- C (C imports B and A), D imports A only: unrelated to B."""
    root = tmp_path_factory.mktemp("mask-data")
    modules = ["Mathlib.A", "Mathlib.B", "Mathlib.C", "Mathlib.D"]
    imports = {"Mathlib.B": ["Mathlib.A"], "Mathlib.C": ["Mathlib.A", "Mathlib.B"], "Mathlib.D": ["Mathlib.A"]}
    decls = {
        "Mathlib.A": [decl("a1", 1), decl("a2", 2)],
        "Mathlib.B": [decl("b1", 1), decl("b2", 5), decl("b3", 10)],
        "Mathlib.C": [decl("c1", 1)],
        "Mathlib.D": [decl("d1", 1)],
    }
    states = {"Mathlib.B": [state("b2", 6, recs=["a1", "b1"])], "Mathlib.C": [state("c1", 2, recs=["b2"])]}
    data = make_data_dir(root / "data", modules, imports, decls, states)
    return load_dataset(DataConfig(data_dir=data, cache_dir=root / "cache", n_valid=0, n_test=0))


def _ids(ds, *names):
    return np.array([ds.corpus.name_to_id[n] for n in names])


@pytest.mark.parametrize("mode, kept", [
    ("none", {"a1", "b1", "a2", "b2", "b3", "c1", "d1", "a1*"}),
    ("no_positive", {"a1", "a2", "b3", "c1", "d1"}),          # other positives (b1, a1 again) and the decl b2 go
    ("only_negative", {"a1", "a2", "d1"}),                     # b3: later in B; c1: downstream; d1: unrelated
])
def test_mask_modes_exclude_exactly(hand_ds, mode, kept):
    ds = hand_ds
    s = int(np.flatnonzero(np.array(ds.states.decl_name) == "b2")[0])
    names = ["a1", "b1", "a2", "b2", "b3", "c1", "d1", "a1"]  # column 0 is the state's own positive a1
    labels = names[:-1] + ["a1*"]
    mask = RetrievalMaskBuilder(ds, mode).build(np.array([s]), _ids(ds, *names))
    assert {lab for lab, keep in zip(labels, mask[0]) if keep} == kept


def test_mask_own_column_and_batch_layout(hand_ds):
    ds = hand_ds
    order = np.array(ds.states.decl_name)
    sb, sc = int(np.flatnonzero(order == "b2")[0]), int(np.flatnonzero(order == "c1")[0])
    # batch of 2 pairs: (b2-state, b1), (c1-state, b2); one negative column: (a1, d1)
    cand = _ids(ds, "b1", "b2", "a1", "d1")
    m = RetrievalMaskBuilder(ds, "no_positive").build(np.array([sb, sc]), cand)
    assert m.shape == (2, 4)
    # state b2: own column b1 kept; b2 is its declaration; a1 is another positive; d1 kept
    assert m[0].tolist() == [True, False, False, True]
    # state c1: own column b2 kept; b1, a1, d1 are not its positives
    assert m[1].tolist() == [True, True, True, True]
    with pytest.raises(ValueError, match="retrieval_mask_mode"):
        RetrievalMaskBuilder(ds, "bogus")


def test_mask_matches_data_layer_pairwise(sample_dataset):
    """Vectorised positives agree with Accessibility.is_positive / is_known_negative on the sample."""
    ds = sample_dataset
    rng = np.random.default_rng(0)
    states = rng.choice(ds.split.train, 40, replace=False)
    pos = np.concatenate([ds.states.positives(s) for s in states])
    cand = np.concatenate([pos, rng.integers(0, len(ds.corpus), 200)])
    b = RetrievalMaskBuilder(ds, "only_negative")
    assert np.array_equal(b.is_positive(states, cand), ds.access.is_positive(states, cand))
    m = b.build(states, cand, own_columns=np.zeros(len(states), dtype=int) + len(cand) - 1)
    ref = ds.access.is_known_negative(states, cand)
    ref[:, -1] = True
    assert np.array_equal(m, ref)


@pytest.fixture(scope="module")
def collator(sample_dataset, tiny_model_dir):
    """The sample's token tables are built once (tokenising 6.6k premises is the slow part)."""
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.data import train_pairs
    from leanpremise.train.runner import build_collator

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    s_col, _ = train_pairs(sample_dataset)
    return build_collator(model, sample_dataset, LossArguments(num_negatives_per_state=2), seed=1,
                          state_ids=s_col, show_progress=False)


def _batch(ds, collator, mode, n_pairs=10):
    """A collated batch whose states have several positives, so the mask removes something."""
    from leanpremise.train.data import train_pairs

    s_col, p_col = train_pairs(ds)
    multi = np.flatnonzero(ds.states.n_positives[s_col] >= 2)[:n_pairs]
    collator.mask_builder = RetrievalMaskBuilder(ds, mode)
    return collator([{"state": int(s_col[i]), "positive": int(p_col[i])} for i in multi])


def _features(batch):
    from sentence_transformers import SentenceTransformerTrainer

    return SentenceTransformerTrainer.collect_features(None, dict(batch))[0]


def _uncached_loss(model, features, scale=20.0):
    feats = [dict(f) for f in features]
    mask = feats[0].pop("retrieval_mask")
    feats[0].pop("state_ids"), feats[0].pop("candidate_ids")
    emb = [model(dict(f))["sentence_embedding"] for f in feats]
    q, d = emb[0], torch.cat(emb[1:])
    scores = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(q)))


@pytest.mark.parametrize("mode", ["no_positive", "only_negative", "none"])
def test_cached_loss_and_gradients_equal_uncached(sample_dataset, tiny_model_dir, collator, mode):
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.loss import MaskedCachedMultipleNegativesRankingLoss

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.eval()  # no dropout, so the uncached reference sees the same function
    batch = _batch(sample_dataset, collator, mode)
    mask = batch["anchor_retrieval_mask"]
    if mode != "none":
        assert (~mask).any(), "the test batch should mask some candidates"
    loss_fn = MaskedCachedMultipleNegativesRankingLoss(model, mask_builder=None, mini_batch_size=3)

    model.zero_grad()
    cached = loss_fn(_features(batch), None)
    cached.backward()
    grads_cached = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    ref = _uncached_loss(model, _features(batch))
    ref.backward()
    grads_ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert torch.allclose(cached.detach(), ref.detach(), atol=1e-5), (cached.item(), ref.item())
    assert grads_cached.keys() == grads_ref.keys() and grads_ref
    for name, want in grads_ref.items():
        assert torch.allclose(grads_cached[name], want, atol=1e-5), name

    if mode != "none":  # the mask changes the loss: the comparison above is not vacuous
        feats = _features(batch)
        feats[0]["retrieval_mask"] = torch.ones_like(mask)
        with torch.no_grad():
            assert abs(loss_fn(feats, None).item() - ref.item()) > 1e-4


def test_loss_rejects_a_mask_of_the_wrong_shape(sample_dataset, tiny_model_dir, collator):
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.loss import MaskedCachedMultipleNegativesRankingLoss

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    feats = _features(_batch(sample_dataset, collator, "no_positive", n_pairs=4))
    feats[0]["retrieval_mask"] = feats[0]["retrieval_mask"][:, :-1]
    with pytest.raises(ValueError, match="retrieval_mask has shape"):
        MaskedCachedMultipleNegativesRankingLoss(model)(feats, None)
