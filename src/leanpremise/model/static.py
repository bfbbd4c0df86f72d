"""Static models (sentence-transformers' `StaticEmbedding`: one vector per token, mean pooled): telling them
apart from transformers, and embedding with one in numpy.

A static model is a plain sentence-transformers directory whose first module is `StaticEmbedding` (its
token vectors in `model.safetensors`, its fast tokenizer in `tokenizer.json`, in the module's folder),
optionally followed by `Normalize`. `model_type` is the one place that decides which kind a model dir is;
export records its answer in the bundle's manifest and every reader goes by that.

`StaticEncoder` embeds as the model's own `SentenceTransformer.encode` does (tokenize without special
tokens, gather, mean), then normalises as the server does, without torch: the tokenizer runs in Rust and
the rest is a few numpy operations, so a text costs microseconds. The token vectors are read with
safetensors only (no pickle, nothing run from the model's files) and checked before use.
"""

from __future__ import annotations

import json
import logging
from itertools import chain
from pathlib import Path
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

ModelType = Literal["transformer", "static"]
MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
TOKEN_VECTORS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TOKEN_VECTOR_KEYS = ("embedding.weight", "embeddings")
"""Names of the token-vector tensor: sentence-transformers' own, then model2vec's (without a mapping)."""
ENCODE_BATCH = 4096
"""Texts tokenized and pooled in one call (bounds the token-id lists held at once)."""


class StaticModelError(ValueError):
    """A static model whose files cannot be used (the one-line message names the file)."""


def _modules(model_dir: Path) -> list[dict] | None:
    """The entries of the model's `modules.json`, or None when it has none readable (not a
    sentence-transformers dir, or a broken one that loading reports itself)."""
    try:
        data = json.loads((Path(model_dir) / MODULES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        return None
    return sorted(data, key=lambda m: m.get("idx", 0))


def _is_module(entry: dict, name: str) -> bool:
    """Whether a modules.json entry's class is `name` (its path changed between sentence-transformers
    versions: `sentence_transformers.models.X`, `...sentence_transformer.modules.x.X`, ...)."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1] == name


def model_type(model_dir: str | Path) -> ModelType:
    """"static" when the sentence-transformers dir's first module is `StaticEmbedding`, else "transformer"
    (a hub id or anything that is not such a dir included): the one test every stage goes by."""
    modules = _modules(Path(model_dir)) if Path(model_dir).is_dir() else None
    return "static" if modules and _is_module(modules[0], "StaticEmbedding") else "transformer"


def _refuse_tail(model_dir: Path, modules: list[dict]) -> None:
    """Only `Normalize` may follow `StaticEmbedding`: any other module would change the vectors in ways the
    numpy encoder does not reproduce."""
    for entry in modules[1:]:
        if not _is_module(entry, "Normalize"):
            raise StaticModelError(f"{model_dir / MODULES_FILE}: module {entry.get('type')!r} after "
                                   "StaticEmbedding is not supported (only Normalize may follow it)")


def default_prompt(model_dir: Path) -> str:
    """The prompt `SentenceTransformer.encode` prepends when called without one (usually none)."""
    try:
        cfg = json.loads((Path(model_dir) / ST_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    name = cfg.get("default_prompt_name") if isinstance(cfg, dict) else None
    prompts = cfg.get("prompts") if isinstance(cfg, dict) else None
    return str(prompts.get(name) or "") if name and isinstance(prompts, dict) else ""


def read_token_vectors(path: Path, vocab_size: int) -> np.ndarray:
    """The token-vector matrix of a safetensors file, checked: readable as safetensors, one 2-d float
    tensor under a known name, a row for every token id of the tokenizer, every value finite."""
    from safetensors.numpy import load_file

    if not path.is_file():
        pickled = path.with_name("pytorch_model.bin")
        extra = f" ({pickled.name} is not read: token vectors load from safetensors only)" if pickled.exists() else ""
        raise StaticModelError(f"{path}: missing{extra}")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad headers and sizes
        why = str(e).splitlines()[0] if str(e) else ""
        raise StaticModelError(f"{path}: not a readable safetensors file ({type(e).__name__}: {why})") from None
    key = next((k for k in TOKEN_VECTOR_KEYS if k in tensors), None)
    if key is None:
        raise StaticModelError(f"{path}: no token-vector tensor ({' or '.join(TOKEN_VECTOR_KEYS)}); it has "
                               f"{sorted(tensors)[:5]}")
    vectors = tensors[key]
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise StaticModelError(f"{path}: {key} has shape {vectors.shape} and dtype {vectors.dtype}; expected a "
                               "2-d float matrix (one row per token)")
    if vectors.shape[0] < vocab_size:
        raise StaticModelError(f"{path}: {key} has {vectors.shape[0]} rows but the tokenizer has {vocab_size} "
                               "token ids (token vectors of another tokenizer?)")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise StaticModelError(f"{path}: {key} has NaN or infinite values (first in row {bad})")
    return vectors


class StaticEncoder:
    """A static model's embeddings in numpy: normalised float32 rows, as the model's own encode with
    `normalize_embeddings=True` gives them.

    Each encoder has its own tokenizer (a tokenizer is not shared between threads); `clone` makes another
    that shares the token vectors, so several workers cost one matrix."""

    name = "static-numpy"
    """The backend's name (in /health and in the persistent cache's key)."""
    batches_well = True
    """No padding: a batch costs what its texts cost one by one, less the per-call overhead."""
    inline = True
    """A text costs less than handing it to a worker thread: the server embeds in the request's thread
    (serve/embedding/service.py)."""

    def __init__(self, model_dir: str | Path, *, _shared: StaticEncoder | None = None):
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        if _shared is not None:
            self.vectors, self.module_dir, self.prompt = _shared.vectors, _shared.module_dir, _shared.prompt
            self.tokenizer = Tokenizer.from_str(_shared.tokenizer.to_str())
        else:
            modules = _modules(self.model_dir)
            if not modules or not _is_module(modules[0], "StaticEmbedding"):
                raise StaticModelError(f"{self.model_dir / MODULES_FILE}: not a static model (its first module "
                                       "is not StaticEmbedding)")
            _refuse_tail(self.model_dir, modules)
            self.module_dir = self.model_dir / str(modules[0].get("path") or "")
            tok_path = self.module_dir / TOKENIZER_FILE
            try:
                self.tokenizer = Tokenizer.from_file(str(tok_path))
            except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions for bad files
                why = str(e).splitlines()[0] if str(e) else ""
                raise StaticModelError(f"{tok_path}: not a readable tokenizers file ({why})") from None
            self.vectors = read_token_vectors(self.module_dir / TOKEN_VECTORS_FILE,
                                              self.tokenizer.get_vocab_size(with_added_tokens=True))
            self.prompt = default_prompt(self.model_dir)
        self.tokenizer.no_padding()  # as StaticEmbedding does; its truncation, if any, is kept
        self.dim = int(self.vectors.shape[1])
        truncation = self.tokenizer.truncation
        self.max_length = int(truncation["max_length"]) if truncation else None
        """Tokens the model keeps of a text (None: all of them)."""

    def clone(self) -> StaticEncoder:
        """Another encoder of the same model, with a tokenizer of its own and the same token vectors."""
        return type(self)(self.model_dir, _shared=self)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One normalised float32 row per text (a text without tokens gives a zero row, as the model's
        encode does)."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for lo in range(0, len(texts), ENCODE_BATCH):
            out[lo : lo + ENCODE_BATCH] = self._encode_batch(texts[lo : lo + ENCODE_BATCH])
        return out

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids as the model's tokenizer gives them (no special tokens, its truncation)."""
        if len(texts) == 1:  # a goal: one encode call costs less than a batch call's setup
            return [self.tokenizer.encode(texts[0], add_special_tokens=False).ids]
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        if self.prompt:
            texts = [self.prompt + t for t in texts]
        token_ids = self.token_ids(texts)
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(token_ids))
        ids = np.fromiter(chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum()))
        if len(texts) == 1:
            out = self.vectors[ids].sum(axis=0, keepdims=True)
        else:  # a (texts x vocabulary) count matrix times the vectors: no (tokens x dimension) temporary
            from scipy.sparse import csr_matrix

            indptr = np.concatenate(([0], np.cumsum(lengths)))
            counts = csr_matrix((np.ones(len(ids), dtype=np.float32), ids, indptr),
                                shape=(len(texts), self.vectors.shape[0]))
            out = np.asarray(counts @ self.vectors, dtype=np.float32)
        out /= np.maximum(lengths, 1)[:, None].astype(np.float32)  # the mean (a text without tokens: zeros)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
