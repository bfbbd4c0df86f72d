"""Pre-tokenised texts: tokenise every premise and training state once, pad per batch.

Tokenising inside the collator would cost as much CPU per step as a good part
of the forward pass on small models; a ragged array per tokenizer output (one
flat int32 buffer plus offsets) keeps each batch to a gather and a pad.
The model's own `preprocess` does the tokenising, so prompts, lower-casing and
truncation are exactly what `model.encode` does at evaluation time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

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


def tokenize_texts(model, texts: list[str], chunk: int = 2048, desc: str = "tokenize",
                   show_progress: bool = True) -> TokenTable:
    """Tokenise `texts` with `model.preprocess` (truncated to model.max_seq_length) into a TokenTable."""
    from tqdm.auto import tqdm

    tokenizer = getattr(model, "tokenizer", None)
    padding_side = getattr(tokenizer, "padding_side", "right")
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    parts: dict[str, list[np.ndarray]] = {}
    lengths: list[np.ndarray] = []
    extra: dict = {}
    for begin in tqdm(range(0, len(texts), chunk), desc=desc, disable=not show_progress or len(texts) <= chunk,
                      unit="chunk"):
        features = model.preprocess(texts[begin:begin + chunk])
        mask = features["attention_mask"].bool().numpy()
        lengths.append(mask.sum(axis=1))
        for key, value in features.items():
            if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape == mask.shape:
                parts.setdefault(key, []).append(value.numpy()[mask].astype(np.int32))
            elif not isinstance(value, torch.Tensor):
                extra[key] = value
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    flat = {k: np.concatenate(v) for k, v in parts.items()} or {
        "input_ids": np.zeros(0, np.int32), "attention_mask": np.zeros(0, np.int32)}
    pad_values = {k: (int(pad_id) if k == "input_ids" else 0) for k in flat}
    return TokenTable(offsets=offsets, flat=flat, pad_values=pad_values, padding_side=padding_side, extra=extra)
