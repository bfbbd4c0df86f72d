"""Pre-tokenisation: the Rust fast path gives exactly the TokenTable of the `model.preprocess` path."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from leanpremise.model import st_internals, tokens
from leanpremise.model.tokens import FastTokenizer, fast_path_blocker, fast_tokenizer, tokenize_texts

EDGE_TEXTS = [
    "",
    "   ",
    "[SEP] [CLS] [PAD] [MASK] special-token strings in the text",
    "∀ x ∈ s, f x ≤ g x — Ünïcode ℝ≥0∞ ⁅a, b⁆ 𝓝",
    "Nat.Prime.two_le : ∀ {p : ℕ}, Nat.Prime p → 2 ≤ p " * 40,  # truncated
    "https://example.com/picture.png",  # looks like an image URL to modality detection
]


def assert_same_table(got, want):
    assert got.offsets.dtype == want.offsets.dtype and np.array_equal(got.offsets, want.offsets)
    assert list(got.flat) == list(want.flat)
    for key in want.flat:
        assert got.flat[key].dtype == want.flat[key].dtype, key
        assert np.array_equal(got.flat[key], want.flat[key]), key
    assert got.pad_values == want.pad_values
    assert got.padding_side == want.padding_side
    assert got.extra == want.extra


@pytest.fixture
def encode_calls(monkeypatch):
    """Counts the fast path's chunk encodings (zero: the model went through preprocess)."""
    calls = []
    original = FastTokenizer.encode

    def spy(self, texts):
        calls.append(len(texts))
        return original(self, texts)

    monkeypatch.setattr(FastTokenizer, "encode", spy)
    return calls


def fast_table(model, texts, chunk=4096):
    """The fast path alone (tokenize_texts would hide a wrong fast path behind its agreement check)."""
    rust = fast_tokenizer(model)
    assert rust is not None, fast_path_blocker(model)
    return tokens._tokenize_fast(model, rust, texts, chunk, "", False)


def _hf_dir(tiny_model_dir):
    return tiny_model_dir.parent / "hf"  # the plain transformers checkpoint build_tiny_model saved


def _tiny_transformer_model(tiny_model_dir, **kwargs):
    from sentence_transformers import SentenceTransformer

    Transformer = st_internals.transformer_class()

    return SentenceTransformer(modules=[Transformer(str(_hf_dir(tiny_model_dir)), **kwargs)], device="cpu")


def test_minilm_fast_path_equals_preprocess_on_sample_premises_and_states(sample_dataset, minilm_path,
                                                                          encode_calls, caplog):
    from leanpremise.model.encoder import load_model

    model = load_model(minilm_path, "cpu")
    assert fast_path_blocker(model) is None
    texts = sample_dataset.corpus.texts[:2000] + list(sample_dataset.states.state[:500]) + EDGE_TEXTS
    with caplog.at_level(logging.INFO, logger=tokens.__name__):
        got = tokenize_texts(model, texts, chunk=512, show_progress=False)
    assert not caplog.text
    assert sum(encode_calls) > len(texts) and len(encode_calls) > 2  # agreement sample, then pipelined chunks
    want = tokenize_texts(model, texts, chunk=300, show_progress=False, fast=False)
    assert_same_table(got, want)
    assert got.lengths.max() == model.max_seq_length  # truncation exercised
    rows = np.array([0, len(texts) - 1, len(texts) - 2, 1999, 2000])
    batch = got.batch(rows)
    direct = model.preprocess([texts[i] for i in rows])
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(batch[key], direct[key]), key


@pytest.mark.parametrize("side", ["right", "left"])
def test_tiny_model_fast_path_truncates_like_preprocess(sample_dataset, tiny_model_dir, side):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.max_seq_length = 24
    model.tokenizer.truncation_side = side
    texts = sample_dataset.corpus.texts[-600:] + EDGE_TEXTS
    got = fast_table(model, texts, chunk=128)
    assert_same_table(got, tokenize_texts(model, texts, show_progress=False, fast=False))
    truncated = np.flatnonzero(got.lengths == 24)
    assert len(truncated) > 10
    row = got.flat["input_ids"][got.offsets[truncated[0]]:got.offsets[truncated[0] + 1]]
    assert row[0] == model.tokenizer.cls_token_id and row[-1] == model.tokenizer.sep_token_id


def test_do_lower_case_on_a_cased_tokenizer_is_kept_by_the_fast_path(tiny_model_dir):
    texts = ["Nat.Prime p → Even p", "CategoryTheory.Functor.Full F", "MeasureTheory.Measure.Regular μ"]
    cased = _tiny_transformer_model(tiny_model_dir, processor_kwargs={"do_lower_case": False})
    lowered = _tiny_transformer_model(tiny_model_dir, processor_kwargs={"do_lower_case": False},
                                      do_lower_case=True)
    tables = {}
    for name, model in (("cased", cased), ("lowered", lowered)):
        assert fast_path_blocker(model) is None
        tables[name] = fast_table(model, texts)
        assert_same_table(tables[name], tokenize_texts(model, texts, show_progress=False, fast=False))
    assert not np.array_equal(tables["cased"].flat["input_ids"], tables["lowered"].flat["input_ids"])


def test_processing_kwargs_take_the_preprocess_path(sample_dataset, tiny_model_dir, encode_calls):
    model = _tiny_transformer_model(tiny_model_dir, processing_kwargs={"text": {"max_length": 16}})
    assert "processing_kwargs" in fast_path_blocker(model)
    texts = sample_dataset.corpus.texts[:200]
    table = tokenize_texts(model, texts, show_progress=False)
    assert not encode_calls
    assert table.lengths.max() == 16  # the per-module max_length the fast path would not have applied
    assert torch.equal(table.batch(np.arange(20))["input_ids"], model.preprocess(texts[:20])["input_ids"])


def test_decoder_takes_the_preprocess_path_with_left_padding(tmp_path, encode_calls):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from leanpremise.model.encoder import default_model_path

    tok = AutoTokenizer.from_pretrained(str(default_model_path()))
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    from sentence_transformers import SentenceTransformer

    Transformer = st_internals.transformer_class()

    model = SentenceTransformer(modules=[Transformer(str(tmp_path), transformer_task="text-generation")],
                                device="cpu")
    assert "transformer_task" in fast_path_blocker(model)
    texts = ["theorem foo : 1 + 1 = 2", "x", "∀ n : ℕ, n ≤ n + 1"]
    table = tokenize_texts(model, texts, show_progress=False)
    assert not encode_calls and table.padding_side == "left"
    got, want = table.batch(np.arange(3)), model.preprocess(texts)
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert got["logits_to_keep"] == want["logits_to_keep"]


def test_custom_first_module_and_non_string_inputs_are_not_eligible(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    Transformer = st_internals.transformer_class()

    class Custom(Transformer):
        pass

    model = SentenceTransformer(modules=[Custom(str(_hf_dir(tiny_model_dir)))], device="cpu")
    assert "Custom" in fast_path_blocker(model)
    assert fast_tokenizer(model) is None
    plain = SentenceTransformer(str(tiny_model_dir), device="cpu")
    rust = fast_tokenizer(plain)
    assert rust is not None and not tokens._agrees_with_preprocess(plain, rust, ["a", ("b", "c")])


def test_a_fast_path_that_disagrees_with_preprocess_falls_back(sample_dataset, tiny_model_dir, monkeypatch,
                                                               caplog):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    broken = fast_tokenizer(model)
    broken.backend.enable_truncation(max_length=8)  # a setting the eligibility check cannot see
    monkeypatch.setattr(tokens, "fast_tokenizer", lambda m: broken)
    texts = sample_dataset.corpus.texts[:300]
    with caplog.at_level(logging.WARNING, logger=tokens.__name__):
        table = tokenize_texts(model, texts, show_progress=False)
    assert "disagrees" in caplog.text
    assert_same_table(table, tokenize_texts(model, texts, show_progress=False, fast=False))
    assert table.lengths.max() > 8


def test_empty_input_gives_an_empty_table(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    table = tokenize_texts(model, [], show_progress=False)
    assert len(table) == 0 and table.offsets.tolist() == [0]
    assert_same_table(table, tokenize_texts(model, [], show_progress=False, fast=False))


def test_type_ids_from_a_template_that_marks_single_texts_are_kept(tiny_model_dir):
    from sentence_transformers import SentenceTransformer
    from tokenizers.processors import TemplateProcessing

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    tok = model.tokenizer
    specials = [("[CLS]", tok.cls_token_id), ("[SEP]", tok.sep_token_id)]
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS]:0 $A:1 [SEP]:1", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", special_tokens=specials)
    texts = ["theorem foo : 1 + 1 = 2", "", "Nat.succ_le_of_lt"]
    assert not fast_tokenizer(model).zero_type_ids
    got = fast_table(model, texts)
    assert_same_table(got, tokenize_texts(model, texts, show_progress=False, fast=False))
    assert got.flat["token_type_ids"].tolist().count(1) == len(got.flat["token_type_ids"]) - len(texts)


def test_a_default_prompt_is_prepended_as_encode_does(sample_dataset, tiny_model_dir, encode_calls):
    from leanpremise.model.tokens import default_prompt

    model = _tiny_transformer_model(tiny_model_dir)
    texts = sample_dataset.corpus.texts[:50]
    plain = tokenize_texts(model, texts, show_progress=False)
    assert default_prompt(model) is None and encode_calls  # no prompt: the fast path
    encode_calls.clear()
    model.prompts = {"query": "query: "}
    model.default_prompt_name = "query"
    assert default_prompt(model) == "query: "
    table = tokenize_texts(model, texts, show_progress=False)
    assert not encode_calls  # the fast path does not prepend prompts
    want = model.preprocess(texts[:10], prompt="query: ")
    got = table.batch(np.arange(10))
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert (table.lengths > plain.lengths).all()  # every text got the prompt's tokens


def _retype_tokenizer(model, **functions):
    """Give the model's tokenizer a subclass of its class holding `functions` (as a custom tokenizer would)."""
    tok = model.tokenizer
    tok.__class__ = type(f"Custom{type(tok).__name__}", (type(tok),), functions)
    return tok


def test_a_tokenizer_class_overriding_the_encoding_takes_the_preprocess_path(tiny_model_dir, encode_calls):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    base = type(model.tokenizer)

    def _encode_plus(self, text, *args, **kwargs):  # e.g. Code Llama's infilling split, here: shouting
        shout = [t.upper() for t in text] if isinstance(text, list) else text.upper()
        return base._encode_plus(self, shout, *args, **kwargs)

    _retype_tokenizer(model, _encode_plus=_encode_plus)
    assert "_encode_plus" in fast_path_blocker(model)
    texts = ["nat.prime p", "theorem foo : 1 + 1 = 2"]
    table = tokenize_texts(model, texts, show_progress=False)
    assert not encode_calls
    assert torch.equal(table.batch(np.arange(2))["input_ids"], model.preprocess(texts)["input_ids"])


def test_public_additions_and_properties_of_a_tokenizer_class_keep_the_fast_path(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    _retype_tokenizer(model, sentinel_tokens=lambda self: [], shout=property(lambda self: True))
    assert fast_path_blocker(model) is None
    assert_same_table(fast_table(model, EDGE_TEXTS), tokenize_texts(model, EDGE_TEXTS, show_progress=False,
                                                                     fast=False))


def test_a_tokenizer_without_length_limit_cuts_nothing_as_preprocess(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    model.tokenizer.model_max_length = int(1e30)  # transformers' mark for "no limit"
    got = fast_table(model, EDGE_TEXTS)
    assert_same_table(got, tokenize_texts(model, EDGE_TEXTS, show_progress=False, fast=False))
    assert got.lengths.max() > 512


def test_the_default_prompt_path_equals_preprocess_with_the_prompt_on_edge_texts(minilm_path):
    from leanpremise.model.encoder import load_model

    model = load_model(minilm_path, "cpu")
    model.prompts = {"query": "query: "}
    model.default_prompt_name = "query"
    table = tokenize_texts(model, EDGE_TEXTS, show_progress=False)
    want = model.preprocess(EDGE_TEXTS, prompt="query: ")
    got = table.batch(np.arange(len(EDGE_TEXTS)))
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(got[key], want[key]), key
    assert table.lengths.max() == model.max_seq_length  # the long text is cut with its prompt
