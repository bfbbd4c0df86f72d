"""Per-premise columns the reranker's features read, for the indexed corpus and for a request's new premises.

Built from the full corpus before a server drops its texts (`Corpus.for_serving`): a premise's text length is
all the reranker keeps of its text. A new premise is known only by its name and the declaration the client
sends, so its kind and whether it is a proposition are read from that text, the way Lean prints it.
"""

from __future__ import annotations

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
    _parts: dict[int, frozenset[str]] = field(default_factory=dict, repr=False, compare=False)
    """name_parts of the indexed premises met so far: a server meets the same candidates request after
    request, and splitting their names was a tenth of its re-ranking time."""

    def parts(self, i: int) -> frozenset[str]:
        """name_parts of indexed premise `i` (kept once computed)."""
        hit = self._parts.get(i)
        if hit is None:
            hit = self._parts[i] = name_parts(self.names[i])
        return hit

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
                            import_indices=self.import_indices)

    def closure_of(self, module: int) -> np.ndarray:
        return self.import_indices[self.import_indptr[module]:self.import_indptr[module + 1]]
