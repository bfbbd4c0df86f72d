"""Per-premise columns the reranker's features read, for the indexed corpus and for a request's new premises.

Built from the full corpus before a server drops its texts (`Corpus.for_serving`): a premise's text length is
all the reranker keeps of its text. A new premise is known only by its name and the declaration the client
sends, so its kind and whether it is a proposition are read from that text, the way Lean prints it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np

KINDS = ("theorem", "lemma", "def", "abbrev", "instance", "structure", "class", "inductive", "axiom", "opaque",
         "other")
"""Declaration kinds, as integer codes (the position): a categorical feature."""
OTHER = KINDS.index("other")
PROP_KINDS = frozenset({"theorem", "lemma"})
"""Kinds whose statement is a proposition: how a new premise's `is_prop` is guessed from its declaration."""

_ATTRS = re.compile(r"^\s*@\[[^\]]*\]\s*")
MODIFIERS = frozenset({"private", "protected", "noncomputable", "partial", "unsafe", "nonrec", "public"})
_NAME_PARTS = re.compile(r"[._'!?]+")


def kind_code(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else OTHER


def _skip_comment(text: str) -> str:
    """`text` after a leading block or doc comment (Lean's block comments nest: `/-- a /- b -/ c -/`)."""
    text = text.lstrip()
    if not text.startswith("/-"):
        return text
    depth, i = 0, 0
    while i < len(text) - 1:
        pair = text[i:i + 2]
        if pair == "/-":
            depth, i = depth + 1, i + 2
        elif pair == "-/":
            depth, i = depth - 1, i + 2
            if depth == 0:
                return text[i:]
        else:
            i += 1
    return ""


def decl_kind(decl: str) -> str:
    """The kind keyword of a declaration as Lean prints it (`/-- doc -/ @[simp] protected theorem x ...`)."""
    text = _skip_comment(decl)
    while (m := _ATTRS.match(text)) is not None:
        text = text[m.end():]
    for word in text.split(None, 4):
        if word not in MODIFIERS:
            return word
    return "other"


def name_parts(name: str) -> frozenset[str]:
    """The lower-cased parts of a premise name (`Nat.add_comm` -> {nat, add, comm}): what name overlap with
    the goal counts."""
    return frozenset(p.lower() for p in _NAME_PARTS.split(name) if p)


def name_spaces(name: str) -> list[str]:
    """The namespaces a premise name lives in, outermost first (`Nat.Prime.two_le` -> Nat, Nat.Prime)."""
    parts = name.split(".")[:-1]
    return [".".join(parts[:d]) for d in range(1, len(parts) + 1)]


class NameCodes:
    """Every indexed premise's name parts (name_parts) and namespaces (name_spaces, outermost first) as integer
    codes, one per distinct string, in two ragged arrays: what lets a request's name features be counted over
    all its candidates at once. Made once for the table; never changed after (requests run in several threads).
    Strings no indexed premise has (a goal's, a new premise's) get request-local codes (`Coder`)."""

    def __init__(self, vocab: dict[str, int], parts: tuple[np.ndarray, np.ndarray], spaces: tuple[np.ndarray, np.ndarray]):
        self.vocab = vocab
        self.parts, self.spaces = parts, spaces
        """(indptr, codes) of each premise's name parts, and of its namespaces."""

    @classmethod
    def of(cls, names: list[str]) -> NameCodes:
        vocab: dict[str, int] = {}

        def ragged(split) -> tuple[np.ndarray, np.ndarray]:
            rows = [[vocab.setdefault(s, len(vocab)) for s in split(name)] for name in names]
            lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            codes = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lens.sum()))
            return np.r_[0, np.cumsum(lens)], codes

        spaces: dict[str, list[str]] = {}

        def spaces_of(name: str) -> list[str]:  # they depend on the part before the last dot only: kept by it
            key = name.rpartition(".")[0] if "." in name else None
            hit = spaces.get(key)
            if hit is None:
                hit = spaces[key] = name_spaces(name)
            return hit

        parts: dict[str, frozenset[str]] = {}

        def parts_of(name: str) -> frozenset[str]:  # "." separates parts: those of its namespace (kept) and more
            space, dot, last = name.rpartition(".")
            if not dot:
                return name_parts(name)
            hit = parts.get(space)
            if hit is None:
                hit = parts[space] = name_parts(space)
            return hit | name_parts(last)

        return cls(vocab, ragged(parts_of), ragged(spaces_of))

    def subset(self, ids: np.ndarray) -> NameCodes:
        """The codes of premises `ids`, in that order (the vocabulary kept whole)."""
        def take(rows):
            codes, lens = gather(rows, ids)
            return np.r_[0, np.cumsum(lens)], codes

        return NameCodes(self.vocab, take(self.parts), take(self.spaces))


def gather(rows: tuple[np.ndarray, np.ndarray], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the concatenated rows `ids` of ragged (indptr, values), each one's length)."""
    indptr, values = rows
    ids = np.asarray(ids, dtype=np.int64)
    starts, lens = indptr[ids], indptr[ids + 1] - indptr[ids]
    at = np.arange(int(lens.sum())) + np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return values[at], lens


class Coder:
    """Codes for one request: the table's for strings an indexed premise has, request-local ones after them
    for the others (so a client's strings never grow what the table keeps)."""

    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab
        self.local: dict[str, int] = {}

    def codes_of(self, strings) -> np.ndarray:
        vocab, local, n = self.vocab, self.local, len(self.vocab)
        strings = list(strings)
        out = [vocab.get(s) for s in strings]
        if None in out:
            out = [local.setdefault(s, n + len(local)) if c is None else c for s, c in zip(strings, out)]
        return np.array(out, dtype=np.int64)

    def size(self) -> int:
        """One past the highest code a string of this request may have."""
        return len(self.vocab) + len(self.local)


@dataclass
class PremiseTable:
    """Columns over the indexed premises (corpus order) and the module table they point into."""

    names: list[str]
    kind: np.ndarray
    """int8 code per premise (KINDS)."""
    is_prop: np.ndarray
    text_len: np.ndarray
    """Characters of the premise's embedding text (int32)."""
    module_id: np.ndarray
    module_root: np.ndarray
    """Per module: the id of its first name component (`Mathlib`, `Batteries`, ...), the premise's project."""
    import_indptr: np.ndarray
    import_indices: np.ndarray
    """Per module, every module it imports (transitively): what the frontier of an import closure is read from."""
    codes: NameCodes | None = field(default=None, repr=False, compare=False)
    """The premises' name parts and namespaces as codes (made from `names` when not given): splitting names
    per request was a tenth of re-ranking's time."""

    def __post_init__(self) -> None:
        if self.codes is None:
            self.codes = NameCodes.of(self.names)

    @classmethod
    def from_corpus(cls, corpus) -> PremiseTable:
        """From a corpus that still has its texts (before `for_serving`)."""
        roots: dict[str, int] = {}
        module_root = np.array([roots.setdefault(m.split(".", 1)[0], len(roots)) for m in corpus.modules],
                               dtype=np.int32)
        return cls(
            names=corpus.names,
            kind=np.array([kind_code(k) for k in corpus.kinds], dtype=np.int8),
            is_prop=np.asarray(corpus.is_prop, dtype=bool),
            text_len=np.fromiter((len(t) for t in corpus.texts), dtype=np.int32, count=len(corpus)),
            module_id=np.asarray(corpus.module_id, dtype=np.int32),
            module_root=module_root,
            import_indptr=np.asarray(corpus.import_indptr, dtype=np.int64),
            import_indices=np.asarray(corpus.import_indices, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, ids: np.ndarray) -> PremiseTable:
        """The table of the premises `ids` (in that order), for an index that holds only part of a corpus."""
        ids = np.asarray(ids, dtype=np.int64)
        return PremiseTable(names=[self.names[i] for i in ids.tolist()], kind=self.kind[ids],
                            is_prop=self.is_prop[ids], text_len=self.text_len[ids], module_id=self.module_id[ids],
                            module_root=self.module_root, import_indptr=self.import_indptr,
                            import_indices=self.import_indices, codes=self.codes.subset(ids))

    def closure_of(self, module: int) -> np.ndarray:
        return self.import_indices[self.import_indptr[module]:self.import_indptr[module + 1]]
