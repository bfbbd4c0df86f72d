"""Training data: pairs, pre-tokenised batches, negatives (random, per epoch, hard) and the collator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from leanpremise.train.args import LossArguments
from leanpremise.train.data import train_pairs
from leanpremise.train.negatives import HardNegatives, NegativeSampler, batch_rng


def test_train_pairs_cover_every_positive_of_train_states(sample_dataset):
    ds = sample_dataset
    s_col, p_col = train_pairs(ds)
    expected = [(s, p) for s in ds.split.train.tolist() for p in ds.states.positives(s).tolist()]
    assert list(zip(s_col.tolist(), p_col.tolist())) == expected
    assert len(expected) == ds.stats()["train_pairs"]


def test_token_table_batches_equal_model_preprocess(sample_dataset, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    from leanpremise.model.tokens import tokenize_texts

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.max_seq_length = 32  # some premises get truncated
    texts = sample_dataset.corpus.texts[:300]
    table = tokenize_texts(model, texts, chunk=128, show_progress=False)
    rows = np.array([5, 299, 0, 17, 17])
    got = table.batch(rows)
    want = model.preprocess([texts[i] for i in rows])
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(got[key], want[key]), key
    assert got["modality"] == want["modality"]


def test_negatives_accessible_nonpositive_reproducible_and_resampled(sample_dataset):
    ds = sample_dataset
    states = ds.split.train[:64]
    sampler = NegativeSampler(ds, 5)
    a = sampler.sample(states, batch_rng(7, 0, states))
    assert a.shape == (64, 5)
    assert np.array_equal(a, sampler.sample(states, batch_rng(7, 0, states)))      # same seed, epoch: same
    assert not np.array_equal(a, sampler.sample(states, batch_rng(7, 1, states)))  # next epoch: resampled
    assert not np.array_equal(a, sampler.sample(states, batch_rng(8, 0, states)))  # other seed
    for r, s in enumerate(states.tolist()):
        if ds.access.count(s) > len(ds.states.positives(s)):
            assert ds.access.is_accessible([s], a[r]).all()
            assert not np.isin(a[r], ds.states.positives(s)).any()
            assert not (a[r] == ds.states.decl_id[s]).any()


def _write_retrieved(path, ds, states, ranked):
    rows = [{"state_name": ds.states.name(s, ds.corpus.modules), "decl_name": ds.states.decl_name[s],
             "premises": [{"corpus_id": ds.corpus.names[p], "score": 1.0 - i / 100} for i, p in enumerate(r)]}
            for s, r in zip(states, ranked)]
    path.write_text(json.dumps(rows))


def test_hard_negatives_come_from_top_ranks_minus_positives(sample_dataset, tmp_path):
    ds = sample_dataset
    s_col, _ = train_pairs(ds)
    states = np.unique(s_col)[:20]
    ranked = []
    for s in states.tolist():
        acc = ds.access.ids(s)
        ranked.append(np.r_[ds.states.positives(s), acc[:30]][:40])
    path = tmp_path / "dot_train-bm25.json"
    _write_retrieved(path, ds, states.tolist(), ranked)
    hard = HardNegatives.from_file(path, ds, top_k=10)
    sampler = NegativeSampler(ds, 4, hard, hard_ratio=0.5)
    neg = sampler.sample(states, np.random.default_rng(0))
    for r, s in enumerate(states.tolist()):
        top = set(ranked[r][:10].tolist()) - set(ds.states.positives(s).tolist())
        if top:
            assert set(neg[r, :2].tolist()) <= top
        assert not np.isin(neg[r], ds.states.positives(s)).any()
    other = ds.split.train[~np.isin(ds.split.train, states)][:5]
    assert (hard.count(other) == 0).all()


def test_bm25_mined_negatives_are_lexically_close_accessible_non_positives(sample_dataset):
    """`--mine_hard_negatives bm25`: each state's hard negatives are among its best BM25 matches, accessible to
    it, and neither its positives nor its own declaration; states not mined have none."""
    from leanpremise.rank.bm25 import BM25Ranker
    from leanpremise.train.negatives import bm25_hard_negatives

    ds = sample_dataset
    s_col, _ = train_pairs(ds)
    states = np.unique(s_col)[:25]
    hard = bm25_hard_negatives(ds, states, top_k=8)
    ranker = BM25Ranker(ds.corpus.texts)
    assert (hard.count(states) > 0).all()
    for s in states.tolist():
        got = hard.indices[hard.indptr[s]:hard.indptr[s + 1]]
        access = ds.access.ids(s)
        assert len(got) <= 8 and np.isin(got, access).all()
        assert not np.isin(got, np.r_[ds.states.positives(s), ds.states.decl_id[s]]).any()
        scores = ranker.scores(ds.states.state[s])[access]
        assert scores.min() < np.sort(scores)[-8] <= ranker.scores(ds.states.state[s])[got].min() + 1e-6
    other = ds.split.train[~np.isin(ds.split.train, states)][:5]
    assert (hard.count(other) == 0).all()


def test_mining_follows_the_negatives_asked_for(sample_dataset, tiny_model_dir):
    """The collator draws its one negative from the mined BM25 top ranks; with no negative asked nothing is
    mined, and a --hard_negatives file would take the place of mining."""
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.runner import build_collator

    ds = sample_dataset
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    s_col, _ = train_pairs(ds)
    states = np.unique(s_col)[:40]
    mined = LossArguments(num_negatives_per_state=1, hard_negative_ratio=1.0, mine_hard_negatives="bm25",
                          hard_negative_top_k=4)
    collator = build_collator(model, ds, mined, 0, states, show_progress=False)
    hard = collator.sampler.hard
    assert hard is not None and collator.sampler.n_hard == 1
    neg = collator.sampler.sample(states, np.random.default_rng(0))
    for s, n in zip(states.tolist(), neg[:, 0].tolist()):
        assert n in hard.indices[hard.indptr[s]:hard.indptr[s + 1]]
    none = build_collator(model, ds, LossArguments(num_negatives_per_state=0, mine_hard_negatives="bm25"), 0,
                          states, show_progress=False)
    assert none.sampler.hard is None


def test_hard_negatives_bad_file_is_a_clear_error(sample_dataset, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"state_name": "x#1", "decl_name": "X.y", "premises": [{"score": 1}]}]))
    with pytest.raises(ValueError, match=r'bad.json: entry 0 \("X.y"\): field "premises\[0\].corpus_id": missing'):
        HardNegatives.from_file(bad, sample_dataset)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        HardNegatives.from_file(bad, sample_dataset)


def test_collator_layout(sample_dataset, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.runner import build_collator

    ds = sample_dataset
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    s_col, p_col = train_pairs(ds)
    collator = build_collator(model, ds, LossArguments(num_negatives_per_state=3), seed=3, state_ids=s_col,
                              show_progress=False)
    rows = [{"state": int(s), "positive": int(p)} for s, p in zip(s_col[:8], p_col[:8])]
    batch = collator(rows)
    columns = ["anchor", "positive", "negative_0", "negative_1", "negative_2"]
    assert all(batch[f"{c}_input_ids"].shape[0] == 8 for c in columns)
    assert batch["anchor_retrieval_mask"].shape == (8, 32)
    assert batch["anchor_retrieval_mask"][torch.arange(8), torch.arange(8)].all()
    assert batch["anchor_candidate_ids"][:8].tolist() == p_col[:8].tolist()
    want = model.preprocess([ds.states.state[s] for s in s_col[:8]])
    assert torch.equal(batch["anchor_input_ids"], want["input_ids"])
    collator.epoch = 1
    assert not torch.equal(collator(rows)["anchor_candidate_ids"], batch["anchor_candidate_ids"])


def test_half_precision_checkpoint_is_trained_in_float32(tmp_path, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    from leanpremise.train.args import ModelArguments
    from leanpremise.train.model import build_model

    half = SentenceTransformer(str(tiny_model_dir), device="cpu").half()
    half.save(str(tmp_path / "half"))
    assert SentenceTransformer(str(tmp_path / "half"), device="cpu")[0].auto_model.dtype == torch.float16
    model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "half")))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
