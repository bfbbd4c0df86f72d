"""Tiny static models (sentence-transformers' StaticEmbedding) for the static-model tests: a word-level
tokenizer trained on a few Lean-like texts, random token vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ["theorem", "lemma", "def", "Nat", "List", "add", "mul", "comm", "assoc", "le", "lt", "sup", "inf", "x", "y", "a", "b", "n", "m", "p", "q", "True", "False", "∀", "∃", "→", "↔", "∧", "∨", "¬", "≤", "<", "=", "+", "*", "⊔", "⊓", "⊢", "0", "1", "2", "(", ")", ":", ",", "."]


def build_static_model(out: Path, dim: int = 16, normalize: bool = True, prompt: str | None = None,
                       seed: int = 0, truncate: int | None = None) -> Path:
    """A StaticEmbedding model over a word-level tokenizer of WORDS (unknown words: one [UNK] vector),
    followed by Normalize unless `normalize` is off; `prompt`: a default prompt `encode` prepends; `truncate`:
    tokens the tokenizer keeps. Saved by `SentenceTransformer.save` into `out`."""
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(["[UNK]", *WORDS])}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if truncate:
        tokenizer.enable_truncation(truncate)
    vectors = np.random.default_rng(seed).standard_normal((tokenizer.get_vocab_size(), dim)).astype(np.float32)
    modules = [StaticEmbedding(tokenizer, embedding_weights=vectors)] + ([models.Normalize()] if normalize else [])
    kw = {"prompts": {"query": prompt}, "default_prompt_name": "query"} if prompt else {}
    SentenceTransformer(modules=modules, device="cpu", **kw).save(str(out))
    return out
