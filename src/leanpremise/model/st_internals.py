"""What the pre-tokeniser's fast path (model/tokens.py) reads of sentence-transformers and transformers
beyond their public API, all in this module, so that a release changing any of it fails
`tests/test_model_st_internals.py` loudly rather than tokenising differently.

Read from sentence-transformers' `Transformer.preprocess`: for a text-only module it calls its processor
(the tokenizer) as `tokenizer(texts, padding=True, truncation="longest_first", return_tensors="pt")` plus any
`processing_kwargs`; lower-casing (`do_lower_case`) lives in the Rust normaliser and max_seq_length is the
tokenizer's model_max_length. Anything else (another `transformer_task`, other modalities, inputs flattened
for flash attention) goes its own way. The Transformer class lives in `sentence_transformers.base.modules`
(re-exported by `sentence_transformer.modules`), and `can_flatten_inputs` and `processor` are attributes
it sets, not documented ones. On the transformers side, the stock fast tokenizer class `TokenizersBackend`
ends `__call__` in the Rust `encode_batch`; what a subclass adds is found by walking its MRO.
"""

from __future__ import annotations

import inspect


def transformer_class():
    """sentence-transformers' Transformer module class (the first module of a plain text model)."""
    from sentence_transformers.base.modules import Transformer

    return Transformer


def module_tokenizer(module):
    """The tokenizer a Transformer module's `preprocess` calls."""
    return module.processor


def module_blocker(module) -> str | None:
    """Why `module.preprocess` (a Transformer module) may do more than call its fast tokenizer on a list of
    texts, as one line; None when it does not."""
    try:
        from transformers import TokenizersBackend
    except ImportError as exc:
        return f"import failed: {exc}"
    if module.transformer_task != "feature-extraction":
        return f"transformer_task is {module.transformer_task!r}"
    if list(module.modality_config) != ["text"]:
        return f"modalities are {list(module.modality_config)}, not text only"
    if module.processing_kwargs:
        return f"processing_kwargs {module.processing_kwargs}"
    if module.can_flatten_inputs:
        return "inputs are flattened for flash attention"
    tokenizer = module_tokenizer(module)
    if not isinstance(tokenizer, TokenizersBackend):
        return f"processor {type(tokenizer).__name__} is not a fast tokenizer"
    overridden = class_overrides(tokenizer)
    if overridden:
        return f"{type(tokenizer).__name__} has its own {', '.join(overridden)}"
    return None


def class_overrides(tokenizer) -> list[str]:
    """Functions the tokenizer's class adds to or overrides in `TokenizersBackend`, the stock fast tokenizer.

    The stock classes (BERT, RoBERTa, XLM-R, Llama, Qwen, GPT-2, ...) only configure the Rust tokenizer in
    their constructor, so their `__call__` ends in the Rust `encode_batch` and nothing else. Any other function
    of a subclass may be on the call path (an override of one of the base's methods, or a private hook the base
    looks up); public additions are not called by the base, and properties only describe special tokens, which
    the serialised Rust tokenizer already holds.
    """
    from transformers import TokenizersBackend

    base = set(dir(TokenizersBackend))
    found = []
    for klass in type(tokenizer).__mro__:
        if klass is TokenizersBackend:
            break
        for name, value in vars(klass).items():
            function = inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod))
            if function and name != "__init__" and (name in base or name.startswith("_")):
                found.append(f"{klass.__name__}.{name}")
    return found
