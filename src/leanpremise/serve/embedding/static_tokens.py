"""A static model's numpy encoder for the server, tokenizing through a cache of pieces.

Tokenizing is most of what a static model's text costs (WordPiece's normalizer and pre-tokenizer keep
alignments for every character), while the parts of Lean declarations repeat: `theorem`, `Finset`, `sum`,
`ℕ`. When the tokenizer can never join two pieces of a text (it splits at spaces, tabs and newlines and drops them, BERT's
also isolates every ASCII punctuation character; its normalizer works character by character; no added
token spans a piece's boundary: `piece_pattern`), a text's ids are the concatenation of its pieces' ids,
cut to the model's length. Each piece not seen before is tokenized once, in one `encode_batch` call for the
whole request; the ids are then exactly the tokenizer's, so the embeddings are bit for bit the plain
encoder's. Figures: docs/figures.md ("serve-speed").
"""

from __future__ import annotations

import json
import re
from itertools import chain
from pathlib import Path

from leanpremise.model.static import StaticEncoder

CHAR_LOCAL_NORMALIZERS = frozenset({"BertNormalizer", "Lowercase", "NFD", "NFKD", "StripAccents"})
"""Normalizers whose output for a text is the concatenation of their outputs for its characters (NFD and
NFKD decompose, never compose, and leave ASCII as it is), so normalizing a piece alone gives what it is
within its text."""
SPACE_SPLITTING_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit"})
"""Pre-tokenizers that always split at a space and drop it: no token spans one."""
PUNCTUATION_ISOLATING_PRE_TOKENIZERS = frozenset({"BertPreTokenizer"})
"""Pre-tokenizers that make every ASCII punctuation character a word of its own."""
SPACES = " \t\n\r"
"""Characters every such pre-tokenizer splits at (BERT's cleaning maps the last three to a space)."""
ASCII_PUNCTUATION = "".join(c for c in map(chr, range(33, 127)) if not c.isalnum())
MAX_CACHED_PIECE_CHARS = 64
"""Longer pieces are tokenized each time, not kept: the cache's entries stay small whatever clients send."""


def piece_pattern(tokenizer) -> re.Pattern | None:
    """A regular expression whose matches are a text's pieces (see the module docstring), read from the
    tokenizer's own serialised configuration; None when the tokenizer may join pieces."""
    config = json.loads(tokenizer.to_str())
    normalizer = config.get("normalizer")
    steps = [] if normalizer is None else normalizer.get("normalizers", [normalizer]) \
        if normalizer.get("type") == "Sequence" else [normalizer]
    if any(step.get("type") not in CHAR_LOCAL_NORMALIZERS for step in steps):
        return None
    truncation = config.get("truncation")
    if truncation is not None and truncation.get("direction", "Right") != "Right":
        return None  # joined pieces are cut at the end only
    pre = (config.get("pre_tokenizer") or {}).get("type")
    added = [t for t in config.get("added_tokens") or []]
    if pre not in SPACE_SPLITTING_PRE_TOKENIZERS or any(
            " " in t.get("content", " ") or t.get("lstrip") or t.get("rstrip") or t.get("single_word")
            for t in added):
        return None
    if pre not in PUNCTUATION_ISOLATING_PRE_TOKENIZERS:
        return re.compile(f"[^{SPACES}]+")
    # an added token is matched in the whole text: its characters must not be piece boundaries
    in_added = set("".join(t.get("content", "") for t in added))
    isolated = re.escape("".join(c for c in ASCII_PUNCTUATION if c not in in_added))
    return re.compile(f"[^{SPACES}{isolated}]+|[{isolated}]")


class PieceCachedStaticEncoder(StaticEncoder):
    """`StaticEncoder` whose tokenizing goes through a cache of pieces (at most `max_pieces` kept; the
    cache is emptied when full, which costs nothing per hit, unlike an LRU's bookkeeping). A tokenizer that
    may join pieces (`piece_pattern` None) is used as is."""

    def __init__(self, model_dir: str | Path, *, _shared: StaticEncoder | None = None, max_pieces: int = 65536):
        super().__init__(model_dir, _shared=_shared)
        self.max_pieces = getattr(_shared, "max_pieces", max_pieces)
        self.pattern = piece_pattern(self.tokenizer) if self.max_pieces > 0 else None
        """What a piece is (None: texts go to the plain tokenizer whole)."""
        self._pieces: dict[str, list[int]] = {}

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, its pieces' ids joined and cut to the model's length; unseen pieces are
        tokenized together in one call."""
        if self.pattern is None:
            return super().token_ids(texts)
        pieces = [self.pattern.findall(text) for text in texts]
        known = self._pieces
        distinct = set(chain.from_iterable(pieces))  # in C; then each distinct piece looked up once
        unseen = [p for p in distinct if p not in known]
        if unseen:
            if len(known) + len(unseen) > self.max_pieces:
                known.clear()  # every piece of this call is unseen now
                unseen = list(distinct)
            room = self.max_pieces - len(known)
            known.update(zip(unseen, super().token_ids(unseen)))
            # held for this call only: pieces too long to keep, and those beyond the bound
            dropped = [p for p in unseen if len(p) > MAX_CACHED_PIECE_CHARS]
            dropped += [p for p in unseen if len(p) <= MAX_CACHED_PIECE_CHARS][room:]
        cut = self.max_length
        out = []
        for ps in pieces:
            ids = list(chain.from_iterable(map(known.__getitem__, ps)))
            out.append(ids[:cut] if cut is not None and len(ids) > cut else ids)
        if unseen:
            for p in dropped:
                del known[p]
        return out
