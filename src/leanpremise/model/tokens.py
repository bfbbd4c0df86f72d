"""Pre-tokenised texts: tokenise every premise and training state once, pad per batch.

Tokenising inside the collator would cost as much CPU per step as a good part
of the forward pass on small models; a ragged array per tokenizer output (one
flat int32 buffer plus offsets) keeps each batch to a gather and a pad.
The result is what the model's own `preprocess` gives (lower-casing, special
tokens, truncation at max_seq_length): plain text models go straight to the Rust
tokenizer, everything else through `preprocess` itself.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain

import numpy as np
import torch

from leanpremise.model import st_internals

logger = logging.getLogger(__name__)


@dataclass
class TokenTable:
    """Ragged tokenizer outputs of a list of texts: row i of key k is flat[k][offsets[i]:offsets[i+1]]."""

    offsets: np.ndarray
    flat: dict[str, np.ndarray]
    pad_values: dict[str, int]
    padding_side: str = "right"
    extra: dict = field(default_factory=dict)
    """Non-tensor entries of the model's preprocess output (e.g. modality), passed through as they are."""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def batch(self, rows: np.ndarray) -> dict:
        """Padded tensors for `rows` (a vectorised gather: no per-token Python work)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        width = int(lengths.max()) if len(rows) else 0
        starts = self.offsets[rows]
        col = np.arange(width)[None, :]
        valid = col < lengths[:, None]
        if self.padding_side == "left":
            shift = width - lengths
            src = starts[:, None] + col - shift[:, None]
            valid = col >= shift[:, None]
        else:
            src = starts[:, None] + col
        src = np.where(valid, src, 0)
        out: dict = {}
        for key, flat in self.flat.items():
            values = flat[src] if len(flat) else np.zeros(src.shape, dtype=flat.dtype)
            out[key] = torch.from_numpy(np.where(valid, values, self.pad_values[key]).astype(np.int64))
        out.update(self.extra)
        return out

    def bags(self, rows: np.ndarray) -> dict:
        """`rows` as a static encoder's input: their tokens one after another and where each row starts."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        starts = self.offsets[rows]
        offsets = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        src = np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))
        ids = self.flat["input_ids"][src].astype(np.int64)
        return {"input_ids": torch.from_numpy(ids), "offsets": torch.from_numpy(offsets)}


def tokenize_texts(model, texts: list[str], chunk: int = 4096, desc: str = "tokenize",
                   show_progress: bool = True, fast: bool = True) -> TokenTable:
    """Tokenise `texts` as `model.preprocess` does (truncated to model.max_seq_length) into a TokenTable.

    Plain text models take the fast path (the Rust tokenizer, unpadded: faster, as it skips
    padding and tensor building; figures in docs/decisions.md); any other model, a fast path that disagrees with
    `preprocess` on a sample of `texts`, or `fast=False` goes through `preprocess` itself. A model with a
    default prompt gets it prepended, as `model.encode` (which evaluation uses) does.
    """
    prompt = default_prompt(model)
    if (static := static_tokenizer(model)) is not None:
        return _tokenize_static(static, [prompt + t for t in texts] if prompt else texts, chunk)
    rust = fast_tokenizer(model) if fast and texts and not prompt else None
    if rust is not None and not _agrees_with_preprocess(model, rust, texts):
        rust = None
    if rust is None:
        return _tokenize_with_preprocess(model, texts, chunk, desc, show_progress, prompt)
    return _tokenize_fast(model, rust, texts, chunk, desc, show_progress)


def static_tokenizer(model):
    """The Rust tokenizer of a static encoder (a model whose first module is a StaticEmbedding), else None."""
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    first = model[0] if hasattr(model, "__getitem__") and hasattr(model, "__len__") and len(model) else None
    return first.tokenizer if isinstance(first, StaticEmbedding) else None


def _tokenize_static(tokenizer, texts: list[str], chunk: int) -> TokenTable:
    """A static encoder's tokens (no special tokens, no truncation, as its `preprocess` gives), ragged."""
    lengths, parts = [], []
    for begin in range(0, len(texts), chunk):
        ids = [e.ids for e in tokenizer.encode_batch_fast(texts[begin:begin + chunk], add_special_tokens=False)]
        lengths.append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        parts.append(np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths[-1].sum())))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return TokenTable(offsets=offsets, flat={"input_ids": flat}, pad_values={"input_ids": 0})


@dataclass
class FastTokenizer:
    """The model's Rust tokenizer, set up as `preprocess` calls it but without padding."""

    backend: object
    """A private copy of the `tokenizers.Tokenizer`, so its truncation/padding settings are ours alone."""
    keys: tuple[str, ...]
    """Output keys in the order `preprocess` returns them."""
    zero_type_ids: bool = False
    """Whether the post-processor gives single texts type id 0 throughout (then `type_ids` need not be read)."""

    def encode(self, texts: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Row lengths and the flat int32 array of each key for `texts`.

        `encode_batch_fast` skips character offsets (a large part of the Rust work) and releases the GIL, so the next
        chunk encodes while this thread flattens the last one. The attention mask of unpadded rows is all ones.
        """
        encodings = self.backend.encode_batch_fast(texts, add_special_tokens=True)
        ids = [e.ids for e in encodings]
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        total = int(lengths.sum())
        flat = {}
        for key in self.keys:
            if key == "input_ids":
                flat[key] = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=total)
            elif key == "token_type_ids" and not self.zero_type_ids:
                type_ids = (e.type_ids for e in encodings)
                flat[key] = np.fromiter(chain.from_iterable(type_ids), dtype=np.int32, count=total)
            else:
                flat[key] = (np.zeros if key == "token_type_ids" else np.ones)(total, dtype=np.int32)
        return lengths, flat


NO_LIMIT = 2 ** 63
"""A tokenizer whose model_max_length is this or more has no length limit (transformers marks "none" with
1e30); the Rust tokenizer's lengths are 64-bit, and no text has that many tokens, so such texts are not cut."""


def fast_path_blocker(model) -> str | None:
    """Why `model.preprocess` may differ from the bare Rust tokenizer on a list of strings (None: it does not).

    A plain SentenceTransformer whose first module is sentence-transformers' own Transformer module on a
    stock fast tokenizer (`st_internals.module_blocker` says what that module must not do). Prompts are not
    applied by `preprocess` without a `prompt` argument. Anything else (chat templates, decoders' left padding
    checks, flattened flash-attention inputs, custom modules, Python tokenizers) keeps the general path.
    """
    try:
        from sentence_transformers import SentenceTransformer

        transformer = st_internals.transformer_class()
    except ImportError as exc:
        return f"import failed: {exc}"
    if not isinstance(model, SentenceTransformer) or type(model).preprocess is not SentenceTransformer.preprocess:
        return f"{type(model).__name__} is not a plain SentenceTransformer"
    first = model[0] if len(model) else None
    if type(first) is not transformer:
        return f"first module is {type(first).__name__}, not Transformer"
    if (reason := st_internals.module_blocker(first)) is not None:
        return reason
    names = st_internals.module_tokenizer(first).model_input_names
    if "input_ids" not in names or "attention_mask" not in names:
        return f"model_input_names {names}"
    return None


def fast_tokenizer(model) -> FastTokenizer | None:
    """The fast path's tokenizer for `model`, or None (with the reason logged) where it must use `preprocess`."""
    reason = fast_path_blocker(model)
    if reason is None:
        tokenizer = st_internals.module_tokenizer(model[0])
        try:
            from tokenizers import Tokenizer

            serialised = tokenizer.backend_tokenizer.to_str()
            backend = Tokenizer.from_str(serialised)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception, e.g. for custom components
            reason = f"tokenizer cannot be copied: {exc}"
    if reason is not None:
        logger.info("pre-tokenising through model.preprocess: %s", reason)
        return None
    # What `tokenizer(texts, truncation="longest_first")` sets up without max_length (the model's limit, on the
    # tokenizer's side), minus the padding.
    if tokenizer.model_max_length >= NO_LIMIT:
        backend.no_truncation()
    else:
        backend.enable_truncation(max_length=tokenizer.model_max_length, stride=0, strategy="longest_first",
                                  direction=tokenizer.truncation_side)
    backend.no_padding()
    backend.encode_special_tokens = bool(tokenizer.split_special_tokens)
    keys = ("input_ids",) + (("token_type_ids",) if "token_type_ids" in tokenizer.model_input_names else ()) + (
        "attention_mask",)
    zero_type_ids = _single_type_ids_are_zero(json.loads(serialised).get("post_processor"))
    return FastTokenizer(backend=backend, keys=keys, zero_type_ids=zero_type_ids)


def _single_type_ids_are_zero(post_processor: dict | None) -> bool:
    """Whether a (serialised) Rust post-processor leaves every type id of a single sequence at 0.

    Reading type ids back from Rust costs as much as reading the ids; BERT-style tokenizers make them all 0
    for one text. Unknown post-processors answer False, so their type ids are read.
    """
    if post_processor is None:
        return True
    kind = post_processor.get("type")
    if kind in ("BertProcessing", "RobertaProcessing", "ByteLevel"):
        return True
    if kind == "TemplateProcessing":
        return all(piece["type_id"] == 0 for item in post_processor.get("single", []) for piece in item.values())
    if kind == "Sequence":
        return all(_single_type_ids_are_zero(p) for p in post_processor.get("processors", []))
    return False


def _agrees_with_preprocess(model, fast: FastTokenizer, texts: list[str], n: int = 32) -> bool:
    """Whether the fast path gives what `preprocess` gives on the first, the longest and `n` random texts.

    A cheap guard (milliseconds) against a tokenizer setting the eligibility check does not know about; the
    longest texts exercise truncation, the random ones whatever the list holds beyond its head.
    """
    if not all(type(t) is str for t in texts):
        logger.info("pre-tokenising through model.preprocess: not every text is a str")
        return False
    char_lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    longest = np.argsort(-char_lengths, kind="stable")[:n]
    spread = np.random.default_rng(0).choice(len(texts), size=min(n, len(texts)), replace=False)
    rows = np.unique(np.r_[np.arange(min(n, len(texts))), longest, spread])
    sample = [texts[i] for i in rows.tolist()]
    want = _tokenize_with_preprocess(model, sample, len(sample), "", False)
    got = _tokenize_fast(model, fast, sample, len(sample), "", False)
    same = (np.array_equal(want.offsets, got.offsets) and list(want.flat) == list(got.flat)
            and all(np.array_equal(want.flat[k], got.flat[k]) for k in want.flat) and want.extra == got.extra)
    if not same:
        logger.warning("the fast tokenizer path disagrees with model.preprocess; pre-tokenising through preprocess")
    return same


def _tokenize_fast(model, fast: FastTokenizer, texts: list[str], chunk: int, desc: str,
                   show_progress: bool) -> TokenTable:
    """Fast path: encode chunk i+1 on a helper thread (the Rust side releases the GIL) while flattening chunk i."""
    from tqdm.auto import tqdm

    starts = range(0, len(texts), chunk)
    lengths: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {key: [] for key in fast.keys}
    with ThreadPoolExecutor(max_workers=1) as pool, tqdm(
            total=len(starts), desc=desc, disable=not show_progress or len(texts) <= chunk, unit="chunk") as bar:
        pending = pool.submit(fast.encode, texts[:chunk])
        for begin in starts:
            done = pending.result()
            if begin + chunk < len(texts):
                pending = pool.submit(fast.encode, texts[begin + chunk:begin + 2 * chunk])
            lengths.append(done[0])
            for key, flat in done[1].items():
                parts[key].append(flat)
            bar.update()
    return _table(model, lengths, parts, {"modality": "text"})


def default_prompt(model) -> str | None:
    """The prompt `model.encode` prepends when none is named: that of the model's `default_prompt_name`."""
    name = getattr(model, "default_prompt_name", None)
    return (getattr(model, "prompts", None) or {}).get(name) or None if name else None


def _tokenize_with_preprocess(model, texts: list[str], chunk: int, desc: str, show_progress: bool,
                              prompt: str | None = None) -> TokenTable:
    """General path: `model.preprocess` per chunk, its padded tensors masked back into ragged rows."""
    from tqdm.auto import tqdm

    parts: dict[str, list[np.ndarray]] = {}
    lengths: list[np.ndarray] = []
    extra: dict = {}
    for begin in tqdm(range(0, len(texts), chunk), desc=desc, disable=not show_progress or len(texts) <= chunk,
                      unit="chunk"):
        batch = texts[begin:begin + chunk]
        features = model.preprocess(batch, prompt=prompt) if prompt else model.preprocess(batch)
        mask = features["attention_mask"].bool().numpy()
        lengths.append(mask.sum(axis=1))
        for key, value in features.items():
            if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape == mask.shape:
                parts.setdefault(key, []).append(value.numpy()[mask].astype(np.int32))
            elif not isinstance(value, torch.Tensor) or value.ndim == 0:
                extra[key] = value  # the same for every row (a modality, a prompt's length)
    return _table(model, lengths, parts, extra)


def _table(model, lengths: list[np.ndarray], parts: dict[str, list[np.ndarray]], extra: dict) -> TokenTable:
    """Offsets from the per-chunk row lengths, flat arrays from the per-chunk pieces, pads from the tokenizer."""
    tokenizer = getattr(model, "tokenizer", None)
    padding_side = getattr(tokenizer, "padding_side", "right")
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    n_rows = int(sum(len(x) for x in lengths))
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    flat = {k: np.concatenate(v) for k, v in parts.items()} or {
        "input_ids": np.zeros(0, np.int32), "attention_mask": np.zeros(0, np.int32)}
    pad_values = {k: (int(pad_id) if k == "input_ids" else 0) for k in flat}
    return TokenTable(offsets=offsets, flat=flat, pad_values=pad_values, padding_side=padding_side, extra=extra)
