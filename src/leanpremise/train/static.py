"""Build a static encoder to train: a tokenizer, one vector per token, mean pooling, normalisation.

The model is sentence-transformers' own `StaticEmbedding` followed by `Normalize`, so a trained one is a plain
sentence-transformers directory that every stage loads with `SentenceTransformer(path)`. Its parts come from a
base transformer (the packaged MiniLM by default): its tokenizer, or a WordPiece trained on the data's own
texts; its input embeddings as the first token vectors (a token the base vocabulary lacks gets the mean of its
pieces there), model2vec's distillation of it, or random vectors.
"""

from __future__ import annotations

import logging

import numpy as np

from leanpremise.train.args import ModelArguments

logger = logging.getLogger(__name__)

LEAN_SPECIAL_TOKENS = ("[UNK]", "[PAD]")
LEAN_TOKENIZER_MIN_FREQUENCY = 2
"""A pair of pieces is merged into a token of the Lean tokenizer only when it occurs at least this often."""


def is_static(model) -> bool:
    """Whether `model` is a static encoder (its first module is a StaticEmbedding)."""
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    return len(model) > 0 and isinstance(model[0], StaticEmbedding)


def build_static_model(args: ModelArguments, base_path: str, dataset=None, device: str | None = None):
    """StaticEmbedding -> Normalize from the base model at `base_path`, as `args` (static_*) ask.

    `dataset` gives the texts a Lean tokenizer is trained on (its corpus and its train states).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    if args.static_init == "distill":
        if args.static_tokenizer != "base":
            raise ValueError("--static_init distill keeps the base model's tokenizer: use it with "
                             "--static_tokenizer base")
        module = distilled(base_path, args.static_dim, device)
    else:
        base_tokenizer = base_fast_tokenizer(base_path)
        tokenizer = base_tokenizer if args.static_tokenizer == "base" else lean_tokenizer(
            lean_training_texts(dataset), args.static_vocab_size)
        if args.static_init == "random":
            if args.static_dim is None:
                raise ValueError("--static_init random needs --static_dim")
            module = StaticEmbedding(tokenizer, embedding_dim=args.static_dim)
        else:
            base = base_input_embeddings(base_path)
            vectors = vectors_for_vocabulary(tokenizer, base_tokenizer, base)
            module = StaticEmbedding(tokenizer, embedding_weights=reduce_dimension(vectors, args.static_dim))
    module.base_model = base_path
    return SentenceTransformer(modules=[module, Normalize()], device=device)


def base_fast_tokenizer(base_path: str):
    """The base model's Rust tokenizer, as used without special tokens (StaticEmbedding adds none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{base_path}: the static encoder needs a fast (Rust) tokenizer, and this model has none")
    return tokenizer.backend_tokenizer


def base_input_embeddings(base_path: str) -> np.ndarray:
    """The base transformer's input (word) embedding matrix, float32 (vocabulary x dimension)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(base_path)
    return model.get_input_embeddings().weight.detach().float().numpy().copy()


def lean_training_texts(dataset) -> list[str]:
    """The texts a Lean tokenizer learns from: every premise and every train state."""
    if dataset is None:
        raise ValueError("--static_tokenizer lean is trained on the data: it needs the dataset")
    states = dataset.states.state
    return list(dataset.corpus.texts) + [states[int(s)] for s in dataset.split_ids("train").tolist()]


def lean_tokenizer(texts: list[str], vocab_size: int):
    """A WordPiece tokenizer trained on `texts`: Unicode-normalised, case kept, split at spaces and punctuation.

    Lean names keep their case (`Finset` and `finset` are different things), and each symbol (`∀`, `⊢`, `→`)
    is a token of its own, where the base WordPiece lower-cases and maps many symbols to [UNK].
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from tokenizers.trainers import WordPieceTrainer

    tokenizer = Tokenizer(WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                       pre_tokenizers.Punctuation()])
    tokenizer.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, min_frequency=LEAN_TOKENIZER_MIN_FREQUENCY,
                               special_tokens=list(LEAN_SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tokenizer


def vectors_for_vocabulary(tokenizer, base_tokenizer, base: np.ndarray) -> np.ndarray:
    """A vector per token of `tokenizer`: its own row of `base` when the vocabularies agree, else the mean of
    the base vectors of the pieces the base tokenizer cuts its text into (the mean of all rows if none)."""
    vocab = tokenizer.get_vocab()
    if vocab == base_tokenizer.get_vocab():
        return base.astype(np.float32, copy=True)
    out = np.empty((tokenizer.get_vocab_size(), base.shape[1]), dtype=np.float32)
    fallback = base.mean(axis=0)
    words = sorted(vocab.items(), key=lambda item: item[1])
    texts = [word.removeprefix("##") for word, _ in words]
    encodings = base_tokenizer.encode_batch(texts, add_special_tokens=False)
    for (_, token_id), encoding in zip(words, encodings):
        ids = [i for i in encoding.ids if i < len(base)]
        out[token_id] = base[ids].mean(axis=0) if ids else fallback
    return out


def reduce_dimension(vectors: np.ndarray, dim: int | None) -> np.ndarray:
    """`vectors` projected on their first `dim` principal axes (centred), or as they are without a smaller dim."""
    if dim is None or dim >= vectors.shape[1]:
        if dim is not None and dim > vectors.shape[1]:
            raise ValueError(f"--static_dim {dim} is larger than the base model's dimension {vectors.shape[1]}")
        return vectors
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.ascontiguousarray(centred @ vt[:dim].T, dtype=np.float32)


def distilled(base_path: str, dim: int | None, device: str | None):
    """model2vec's distillation of the base model (the StaticEmbedding sentence-transformers makes with it)."""
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    try:
        import model2vec.distill  # noqa: F401
    except ImportError:
        raise ValueError("--static_init distill needs the model2vec package (pip install 'model2vec[distill]'); "
                         "--static_init base needs nothing more") from None
    return StaticEmbedding.from_distillation(base_path, device=device, pca_dims=dim)
