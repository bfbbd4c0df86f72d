"""Typed arguments of `leanpremise train` (parsed by HfArgumentParser with the training arguments).

Names and meanings follow the original LeanHammer `train.py`, so an existing
`train.sh` keeps working; additions are documented in each field's help. The
data options are the data layer's own :class:`leanpremise.data.config.DataConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PoolingMode = Literal["cls", "lasttoken", "max", "mean", "mean_sqrt_len_tokens", "weightedmean"]
MaskMode = Literal["none", "no_positive", "only_negative"]
EncoderKind = Literal["transformer", "static"]
StaticTokenizer = Literal["base", "lean"]
StaticInit = Literal["base", "distill", "random"]
HardNegativeMining = Literal["none", "bm25"]


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Model dir or Hugging Face id (default: the packaged all-MiniLM-L6-v2)."},
    )
    is_sentence_transformer: bool | None = field(
        default=None,
        metadata={"help": "True: load SentenceTransformer(model_name_or_path). False: build Transformer -> "
                          "Pooling(pooling_mode) -> Normalize from a Hugging Face encoder or decoder (decoders get "
                          "an EOS token appended). Default: True iff the dir or Hub repo holds a saved "
                          "SentenceTransformer (modules.json), which then keeps its own pooling and normalisation."},
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run Python code shipped with the model (an auto_map in its config, custom modules), as "
                          "in transformers. Off by default: such a model is refused with a one-line error and "
                          "nothing of it runs."},
    )
    pooling_mode: PoolingMode = field(
        default="lasttoken",
        metadata={"help": "Pooling of the built model when is_sentence_transformer is False."},
    )
    encoder: EncoderKind = field(
        default="transformer",
        metadata={"help": "`transformer`: train --model_name_or_path as it is (or built, see "
                          "--is_sentence_transformer). `static`: build and train a static encoder (one vector per "
                          "token, mean pooled, normalised: sentence-transformers' StaticEmbedding) from the "
                          "tokenizer and input embeddings of --model_name_or_path (see --static_tokenizer, "
                          "--static_init, --static_dim); a saved static model is trained further as it is. The "
                          "static encoder has its own defaults for the flags not given (`leanpremise train -h` "
                          "lists them)."},
    )
    static_tokenizer: StaticTokenizer = field(
        default="base",
        metadata={"help": "Static encoder's tokenizer: `base`, that of --model_name_or_path (WordPiece for "
                          "MiniLM); `lean`, a WordPiece trained on the corpus and the train states (Lean "
                          "identifiers and symbols, case kept) of --static_vocab_size tokens."},
    )
    static_vocab_size: int = field(
        default=30000, metadata={"help": "Vocabulary size of --static_tokenizer lean."})
    static_init: StaticInit = field(
        default="base",
        metadata={"help": "Static encoder's initial token vectors: `base`, the input embeddings of "
                          "--model_name_or_path (a token of another vocabulary gets the mean of its pieces in the "
                          "base tokenizer); `distill`, model2vec's distillation of the base model (needs the "
                          "model2vec package); `random`."},
    )
    static_dim: int | None = field(
        default=None,
        metadata={"help": "Static encoder's dimension (default: the base model's). Below it, the base "
                          "vectors are reduced by PCA."},
    )
    mini_batch_size: int = field(
        default=32,
        metadata={"help": "GradCache chunk: texts embedded at once. Affects memory and speed, not the loss."},
    )
    max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Truncate texts to this many tokens (default: the model's own max_seq_length; the "
                          "no-argument CPU quick run uses 128)."},
    )


@dataclass
class LossArguments:
    retrieval_mask_mode: MaskMode = field(
        default="no_positive",
        metadata={"help": "Remove false negatives from each state's softmax: `no_positive` masks the state's other "
                          "positives and its own declaration; `only_negative` keeps only known negatives; `none`."},
    )
    positives_per_state: int | None = field(
        default=None,
        metadata={"help": "Training pairs per train state at most (default: one per positive premise). A state "
                          "with more positives pairs with another subset of them each epoch."},
    )
    num_negatives_per_state: int = field(
        default=3, metadata={"help": "Sampled negatives per training pair (accessible non-positives)."})
    hard_negatives: Path | None = field(
        default=None,
        metadata={"help": "Retrieved-premises JSON (dot_<split>-<model>.json shape, from a baseline or an earlier "
                          "model): part of the negatives are drawn from its top ranks, minus positives."},
    )
    mine_hard_negatives: HardNegativeMining = field(
        default="none",
        metadata={"help": "Without --hard_negatives: `bm25` ranks the train states with BM25 before training and "
                          "draws the hard negatives from its top --hard_negative_top_k accessible premises (what "
                          "`baseline bm25 --split train` writes for --hard_negatives); `none`."},
    )
    hard_negative_ratio: float = field(
        default=0.5, metadata={"help": "Share of the negatives drawn from --hard_negatives when a state has any."})
    hard_negative_top_k: int = field(
        default=64, metadata={"help": "Draw hard negatives from this many top-ranked retrieved premises."})
    scale: float = field(default=20.0, metadata={"help": "Similarity scale (1 / temperature) of the loss."})
    gather_across_devices: bool = field(
        default=False,
        metadata={"help": "Under DDP, use every process's candidates as in-batch negatives (the mask is rebuilt "
                          "for the gathered candidates)."},
    )


@dataclass
class RunArguments:
    evaluate_before: bool = field(
        default=True, metadata={"help": "Print valid Recall@{8,16,32} of the untrained model first."})
    evaluate_after: bool = field(
        default=True,
        metadata={"help": "After training, evaluate valid and test and write retrieved-premises files."},
    )
    rerank_after: bool = field(
        default=True,
        metadata={"help": "After the final evaluation, train a reranker (rerank train) over the trained model, BM25, "
                          "MePo and usage on a sample of the train states (--rerank_max_states), early-stopped on "
                          "valid, into <output_dir>/reranker, and print valid Recall@{8,16,32} dense before, dense "
                          "after and reranked."},
    )
    rerank_max_states: int = field(
        default=2048, metadata={"help": "Training states with positives the reranker after training uses at most."})
    retrieved_premises_dir: Path = field(
        default=Path("retrieved_premises"),
        metadata={"help": "Where the retrieved-premises files (dot_<split>-<run>.json) go."},
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size for encoding in evaluations."})
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "Stop training after this many minutes, with the LR schedule stretched to the steps "
                          "that fit (default: none; 5 on a machine without GPU when no step/epoch/time flag is "
                          "given)."},
    )
