"""The flags every command that ranks a split's states shares (`retrieve`, `baseline`, `rerank train |
apply`): the dense model, which states and where their file goes, and reading `--corpus_embeddings`.

Their own module so that `eval/cli.py` and `eval/rerank/cli.py` both read them without importing each
other (docs/decisions.md, "One config per command").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class OutputFlags:
    """Which states a ranking command ranks and where its file and metrics go."""

    split: Literal["train", "valid", "test", "all"] = field(default="test", metadata={
        "help": "states to rank (train: every training state, e.g. for --hard_negatives)"})
    k: int = field(default=1024, metadata={"help": "premises kept per state"})
    out_dir: Path = field(default=Path("retrieved_premises"), metadata={
        "help": "where dot_<split>-<model_name>.json goes"})
    metrics_out: Path | None = field(default=None, metadata={
        "help": "write the metrics as one flat JSON object (<metric>@<k>, <metric>@<k>_pos, states, "
                "states_without_positives, seconds)"})


@dataclass
class ModelFlags:
    """The model that embeds states and premises."""

    model: str | None = field(default=None, metadata={
        "help": "model dir or hub id; all-MiniLM-L6-v2: the packaged one, which retrieve and baseline use "
                "by default (rerank without --model reads the lexical rankers alone)"})
    encoder: Literal["sentence-transformers", "t5"] = field(default="sentence-transformers", metadata={
        "help": "t5: a ReProver-style T5 encoder with mean pooling (transformers T5EncoderModel)"})
    model_name: str | None = field(default=None, metadata={
        "help": "MODEL_NAME in the output file name (default: from --model)"})
    corpus_embeddings: Path | None = field(default=None, metadata={
        "help": "pre-computed corpus embeddings (.npy, corpus order) instead of encoding the corpus"})
    batch_size: int = field(default=64, metadata={"help": "texts per encode call"})
    device: str | None = field(default=None, metadata={
        "help": "cpu, cuda, ... (default: cuda when available)"})


def load_corpus_embeddings(path: Path, n_premises: int):
    """Pre-computed embeddings (one row per premise, corpus order), memory-mapped; a missing or misshapen
    file ends the command with a one-line error naming the flag."""
    import numpy as np

    try:
        emb = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise SystemExit(f"error: --corpus_embeddings {path}: no such file") from None
    except ValueError as e:
        raise SystemExit(f"error: --corpus_embeddings {path}: not a .npy array ({e})") from None
    if emb.ndim != 2 or emb.shape[0] != n_premises:
        raise SystemExit(f"error: --corpus_embeddings {path}: shape {emb.shape}, expected ({n_premises}, dim) "
                         "for this data dir and corpus options")
    return emb
