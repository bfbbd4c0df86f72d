"""`leanpremise train --encoder static`: building a static encoder, its batches, a training step, the saved
model loaded by plain SentenceTransformer, resuming, and the encoder's own defaults."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from leanpremise.train.args import ModelArguments


def _run(argv, ds):
    from leanpremise.train.cli import parse
    from leanpremise.train.runner import run_training

    return run_training(*parse(argv), dataset=ds)


def static_argv(base_dir, out, *extra):
    return ["--encoder", "static", "--model_name_or_path", str(base_dir), "--output_dir", str(out),
            "--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "16",
            "--lr_scheduler_type", "constant", "--evaluate_before", "False", "--evaluate_after", "False",
            "--rerank_after", "False", "--disable_tqdm", "True", "--seed", "3", "--resume_from_checkpoint", "True",
            *extra]


@pytest.fixture(scope="module")
def static_run(tmp_path_factory, tiny_model_dir, sample_dataset):
    """A 4-step static run from the tiny BERT (checkpoints at steps 2 and 4) and its final weights."""
    out = tmp_path_factory.mktemp("static") / "run"
    res = _run(static_argv(tiny_model_dir, out), sample_dataset)
    return out, res, {k: v.detach().clone() for k, v in res.trainer.model.state_dict().items()}


def test_base_init_copies_the_base_models_input_embeddings(tiny_model_dir):
    from transformers import AutoModel

    from leanpremise.train.model import build_model
    from leanpremise.train.static import is_static

    model = build_model(ModelArguments(model_name_or_path=str(tiny_model_dir), encoder="static"), device="cpu")
    assert is_static(model)
    base = AutoModel.from_pretrained(str(tiny_model_dir)).get_input_embeddings().weight.detach()
    assert torch.equal(model[0].embedding.weight.detach(), base)
    # the embedding of a text is the normalised mean of its tokens' rows
    ids = model[0].tokenizer.encode("Nat.succ_le_iff", add_special_tokens=False).ids
    want = torch.nn.functional.normalize(base[ids].mean(0), dim=0)
    assert torch.allclose(model.encode(["Nat.succ_le_iff"], convert_to_tensor=True)[0], want, atol=1e-6)


def test_pca_reduces_the_base_vectors_to_the_asked_dimension(tiny_model_dir):
    from leanpremise.train.model import build_model

    model = build_model(ModelArguments(model_name_or_path=str(tiny_model_dir), encoder="static", static_dim=8),
                        device="cpu")
    weights = model[0].embedding.weight.detach().numpy()
    assert weights.shape[1] == 8 == model.get_embedding_dimension()
    variances = weights.var(axis=0)
    assert np.all(np.diff(variances) <= 1e-6)  # principal axes, largest variance first


def test_lean_tokenizer_learns_the_datas_symbols_and_gets_vectors_from_base_pieces(tiny_model_dir,
                                                                                   sample_dataset):
    from leanpremise.train.model import build_model

    args = ModelArguments(model_name_or_path=str(tiny_model_dir), encoder="static", static_tokenizer="lean",
                          static_vocab_size=600)
    model = build_model(args, device="cpu", dataset=sample_dataset)
    tokenizer = model[0].tokenizer
    assert 300 < tokenizer.get_vocab_size() <= 600
    assert tokenizer.token_to_id("⊢") is not None  # the base WordPiece has no such token
    assert tokenizer.encode("Finset").tokens != tokenizer.encode("finset").tokens  # case kept
    base = model[0].embedding.weight.detach()
    assert base.shape == (tokenizer.get_vocab_size(), 32) and bool(torch.isfinite(base).all())
    with pytest.raises(ValueError, match="needs the dataset"):
        build_model(args, device="cpu")


def test_batches_are_what_the_static_module_preprocesses(tiny_model_dir, sample_dataset):
    from leanpremise.model.tokens import tokenize_texts
    from leanpremise.train.model import build_model

    model = build_model(ModelArguments(model_name_or_path=str(tiny_model_dir), encoder="static"), device="cpu")
    texts = list(sample_dataset.corpus.texts[:50])
    table = tokenize_texts(model, texts)
    rows = np.array([7, 3, 40, 3])
    got = table.bags(rows)
    want = model.preprocess([texts[i] for i in rows.tolist()])
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["offsets"], want["offsets"])


def test_a_training_step_lowers_the_masked_loss_on_its_batch(tiny_model_dir, sample_dataset):
    from leanpremise.train.args import LossArguments
    from leanpremise.train.loss import MaskedMultipleNegativesRankingLoss
    from leanpremise.train.model import build_model
    from leanpremise.train.runner import build_collator, training_rows

    ds = sample_dataset
    model = build_model(ModelArguments(model_name_or_path=str(tiny_model_dir), encoder="static"), device="cpu")
    state_col, positive_col, slot_col = training_rows(ds, 4, seed=0)
    collator = build_collator(model, ds, LossArguments(positives_per_state=4, num_negatives_per_state=1), 0,
                              state_col, show_progress=False)
    rows = np.arange(0, 64)
    batch = collator([{"state": int(state_col[i]), "positive": int(positive_col[i]), "slot": int(slot_col[i])}
                      for i in rows])
    assert bool((~batch["anchor_retrieval_mask"]).any())  # the mask removes some candidates here
    loss = MaskedMultipleNegativesRankingLoss(model, mask_builder=collator.mask_builder)
    features = [{k[len(p) + 1:]: v for k, v in batch.items() if k.startswith(p + "_")}
                for p in ("anchor", "positive", "negative_0")]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = loss(features)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss(features)
    assert float(after) < float(before.detach()) - 0.01


def test_the_saved_model_loads_with_plain_sentence_transformer(static_run, sample_dataset):
    from sentence_transformers import SentenceTransformer

    _, res, final = static_run
    assert res.steps == 4
    assert (res.final_dir / "revision").read_text().strip() == sample_dataset.revision.strip()
    loaded = SentenceTransformer(str(res.final_dir), device="cpu")
    texts = list(sample_dataset.corpus.texts[:20])
    want = res.trainer.model.encode(texts, convert_to_numpy=True)
    got = loaded.encode(texts, convert_to_numpy=True)
    assert np.allclose(got, want, atol=1e-6)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert torch.equal(loaded.state_dict()["0.embedding.weight"], final["0.embedding.weight"])


def test_training_moves_the_token_vectors(static_run, tiny_model_dir):
    from transformers import AutoModel

    base = AutoModel.from_pretrained(str(tiny_model_dir)).get_input_embeddings().weight.detach()
    assert not torch.allclose(static_run[2]["0.embedding.weight"], base)


def test_resume_redoes_the_lost_steps_to_the_same_weights(static_run, tmp_path, tiny_model_dir, sample_dataset,
                                                          capsys):
    out, _, final = static_run
    resumed_dir = tmp_path / "run"
    shutil.copytree(out, resumed_dir)
    shutil.rmtree(resumed_dir / "final")
    shutil.rmtree(resumed_dir / "checkpoint-4")  # killed between the checkpoints
    res = _run(static_argv(tiny_model_dir, resumed_dir), sample_dataset)
    assert f"Resuming from the latest checkpoint {resumed_dir / 'checkpoint-2'}" in capsys.readouterr().out
    assert res.steps == 4
    got = res.trainer.model.state_dict()
    for name, value in final.items():
        assert torch.allclose(value, got[name], atol=1e-6), name


def test_static_defaults_apply_where_no_flag_is_given(tmp_path, static_run):
    from leanpremise.train.cli import STATIC_BATCH_SIZE, STATIC_DEFAULTS, UsageError, parse

    m, _, lo, _, t = parse(["--encoder", "static", "--output_dir", str(tmp_path)])
    assert t.learning_rate == STATIC_DEFAULTS["learning_rate"]
    assert lo.positives_per_state == STATIC_DEFAULTS["positives_per_state"] and lo.scale == STATIC_DEFAULTS["scale"]
    assert t.per_device_train_batch_size == STATIC_BATCH_SIZE and m.max_seq_length is None
    assert (lo.mine_hard_negatives, lo.num_negatives_per_state, lo.hard_negative_ratio) == ("bm25", 1, 1.0)
    m, _, lo, _, t = parse(["--encoder", "static", "--learning_rate", "0.01", "--positives_per_state", "2"])
    assert t.learning_rate == 0.01 and lo.positives_per_state == 2
    m, _, lo, _, t = parse([])  # the transformer keeps its own
    assert m.encoder == "transformer" and t.learning_rate == 2e-4 and lo.scale == 20.0
    assert lo.mine_hard_negatives == "none" and lo.num_negatives_per_state == 3
    with pytest.raises(UsageError, match="max_seq_length"):
        parse(["--encoder", "static", "--max_seq_length", "64"])
    # a saved static model trains further as a static encoder, with no flag saying so
    m, _, _, _, t = parse(["--model_name_or_path", str(static_run[1].final_dir)])
    assert m.encoder == "static" and t.learning_rate == STATIC_DEFAULTS["learning_rate"]


def test_rotation_pairs_a_state_with_distinct_positives_and_others_next_epoch(sample_dataset):
    from leanpremise.train.data import PositiveRotation, capped_pairs

    ds = sample_dataset
    state_col, slot_col = capped_pairs(ds, 2)
    counts = np.bincount(state_col)
    many = int(np.flatnonzero(counts == 2)[np.argmax(
        [len(ds.states.positives(int(s))) for s in np.flatnonzero(counts == 2)])])
    assert len(ds.states.positives(many)) > 4
    rotation = PositiveRotation(ds, seed=0)
    rows = state_col == many
    seen = set()
    for epoch in range(4):
        picked = rotation.positives(state_col[rows], slot_col[rows], epoch)
        assert len(set(picked.tolist())) == 2 and set(picked.tolist()) <= set(ds.states.positives(many).tolist())
        seen |= set(picked.tolist())
    assert len(seen) > 2
