"""Loading the encoder to evaluate: a sentence-transformers model, or a ReProver-style T5 encoder.

A LeanDojo ReProver retriever is a (By)T5 checkpoint whose encoder embeds text
by mean pooling over tokens, compared by dot product of normalised vectors.
Wrapping it as sentence-transformers modules (Transformer -> mean Pooling ->
Normalize) lets it go through the same evaluator as our models;
sentence-transformers loads T5 configs with `transformers.T5EncoderModel`,
so only the encoder's weights are read from a full T5 checkpoint.
"""

from __future__ import annotations

from pathlib import Path

ENCODERS = ("sentence-transformers", "t5")


def load_t5_encoder(path: str | Path, max_seq_length: int = 1024, device: str | None = None):
    """A SentenceTransformer over the T5 encoder at `path` (local dir or hub id) with mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoConfig

    from leanpremise.model.encoder import pick_device

    config = AutoConfig.from_pretrained(str(path))
    if config.model_type not in ("t5", "mt5", "umt5"):
        raise ValueError(f"{path}: --encoder t5 needs a T5 checkpoint, found model_type {config.model_type!r}")
    word = Transformer(str(path), max_seq_length=max_seq_length)
    pool = Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[word, pool, Normalize()], device=pick_device(device))


def load_encoder(path: str | Path | None, encoder: str = "sentence-transformers", device: str | None = None):
    from leanpremise.model.encoder import load_model

    if encoder == "t5":
        if path is None:
            raise ValueError("--encoder t5 needs --model PATH (a T5 / ByT5 checkpoint)")
        return load_t5_encoder(path, device=device)
    if encoder != "sentence-transformers":
        raise ValueError(f"unknown encoder {encoder!r}: expected one of {', '.join(ENCODERS)}")
    return load_model(path, device)
