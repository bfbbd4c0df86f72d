"""What the pre-tokeniser reads of sentence-transformers and transformers beyond their public API
(model/st_internals.py), checked against the installed libraries.

A failure here means a release moved or changed one of those internals (see docs/decisions.md for the
versions checked): fix `model/st_internals.py` (or the pinned ranges in pyproject.toml), not the test.
"""

from __future__ import annotations

import pytest
import torch

from leanpremise.model import st_internals

TEXTS = ["theorem Nat.add_comm (a b : ℕ) : a + b = b + a", "", "∀ x ∈ s, f x ≤ g x " * 30, "[SEP] x [CLS]"]


@pytest.fixture
def model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


def test_the_transformer_class_is_the_one_models_are_built_and_loaded_with(model):
    from sentence_transformers.sentence_transformer.modules import Transformer  # what train/model.py builds

    assert st_internals.transformer_class() is Transformer
    assert type(model[0]) is st_internals.transformer_class()


def test_a_plain_text_module_has_the_attributes_the_fast_path_reads(model):
    from transformers import TokenizersBackend

    module = model[0]
    assert module.transformer_task == "feature-extraction"
    assert list(module.modality_config) == ["text"]
    assert not module.processing_kwargs
    assert module.can_flatten_inputs is False
    tokenizer = st_internals.module_tokenizer(module)
    assert tokenizer is model.tokenizer and isinstance(tokenizer, TokenizersBackend)
    assert TokenizersBackend in type(tokenizer).__mro__ and st_internals.class_overrides(tokenizer) == []
    assert st_internals.module_blocker(module) is None


def test_preprocess_of_such_a_module_is_the_tokenizer_call_the_fast_path_reproduces(model):
    model.max_seq_length = 16  # truncation too
    module = model[0]
    got = module.preprocess(TEXTS)
    want = st_internals.module_tokenizer(module)(TEXTS, padding=True, truncation="longest_first",
                                                 return_tensors="pt")
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    assert {k for k, v in got.items() if isinstance(v, torch.Tensor) and v.ndim == 2} == set(want)


def test_processing_kwargs_are_what_preprocess_adds_and_the_blocker_names(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    module = st_internals.transformer_class()(str(tiny_model_dir.parent / "hf"),
                                              processing_kwargs={"text": {"max_length": 8}})
    model = SentenceTransformer(modules=[module], device="cpu")
    assert model[0].preprocess(TEXTS)["input_ids"].shape[1] == 8
    assert "processing_kwargs" in st_internals.module_blocker(model[0])


def test_class_overrides_name_private_and_overriding_functions_of_a_subclass(model):
    tokenizer = model.tokenizer
    base = type(tokenizer)
    tokenizer.__class__ = type("Custom", (base,), {"_encode_plus": lambda self, *a, **k: None,
                                                   "__call__": lambda self, *a, **k: None,
                                                   "sentinel_tokens": lambda self: [],
                                                   "__init__": lambda self: None})
    assert sorted(st_internals.class_overrides(tokenizer)) == ["Custom.__call__", "Custom._encode_plus"]
    assert "Custom has its own" in st_internals.module_blocker(model[0])
