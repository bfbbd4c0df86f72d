"""Tokens and symbols of pretty-printed Lean text, for the lexical baselines (BM25, MePo).

BM25 wants words: every identifier, plus its dot/underscore-separated parts
(so `Nat.add_comm` also matches `add` and `comm`), plus operator tokens.
MePo wants the constants a statement mentions: identifiers and notation
(`+`, `≤`, `ℝ`), without bound variables, hypothesis names, binder syntax or
keywords. From text we approximate "constant" by dropping names bound in the
text (binders, `∀ x,`, hypotheses of a goal), short variable-like names
(`x`, `h₁`, `α`, `inst✝`) and the receiver of dot notation on a variable
(`l.reverse` gives `reverse`).
"""

from __future__ import annotations

import functools
import re

_IDENT = r"[^\W\d][\w'!?✝⁰¹²³⁴⁵⁶⁷⁸⁹]*(?:\.[^\W\d][\w'!?]*)*"
_OPERATOR = r"[^\w\s()\[\]{}⦃⦄⟨⟩,;\"`«»·]+"
_TOKEN_RE = re.compile(rf"(?P<ident>{_IDENT})|(?P<num>\d+)|(?P<op>{_OPERATOR})")
_DOC_RE = re.compile(r"/--.*?-/\s*", re.DOTALL)
_PARTS_RE = re.compile(r"[._]+")
_VARIABLE_RE = re.compile(r"^(?:(?![ℕℤℚℝℂ])[^\W\d_][\d₀-₉'!?]*|h[^\W\d_]?[\d₀-₉']*|ih\w{0,2}|inst\w*|this|u_\d+)$|✝")
_BINDER_RE = re.compile(r"[(\[{⦃]\s*([^()\[\]{}⦃⦄:]+?)\s*:")
_QUANT_RE = re.compile(r"(?:∀|∃!?|fun|λ|∑|∏|⋃|⋂|⨆|⨅)\s+([^,:=∈∉↦]+?)\s*(?:,|:|=>|↦|∈|∉)")
_HYP_RE = re.compile(r"^([^\s:⊢][^:\n]*?) : ", re.MULTILINE)

KEYWORDS = frozenset(["theorem", "lemma", "def", "abbrev", "instance", "structure", "class", "inductive", "axiom", "opaque", "example", "fun", "λ", "let", "have", "show", "from", "by", "at", "with", "then", "else", "if", "match", "do", "return", "Type", "Sort", "Prop", "_", "·", "∀", "→", ":", ":=", ",", "=>", "↦", "|", "⊢", ".", "←", "@", ";", "$", "<|", "|>", "▸"])


def strip_doc(text: str) -> str:
    return _DOC_RE.sub("", text)


def bound_names(text: str) -> set[str]:
    """Names a text binds: `(x y : T)`, `{α}`-style groups, `∀ x ∈ s,`, goal hypotheses `h : ...`."""
    names: set[str] = set()
    for rx in (_BINDER_RE, _QUANT_RE):
        for m in rx.finditer(text):
            names.update(w.strip("()") for w in m.group(1).split())
    if "⊢" in text:
        for m in _HYP_RE.finditer(text.split("⊢")[0]):
            names.update(m.group(1).split())
    return names


def bm25_tokens(text: str) -> list[str]:
    """Identifiers (whole and split on dots/underscores, parts lowercased), numerals and operators."""
    return list(_bm25_tokens(text))


@functools.lru_cache(maxsize=16)
def _bm25_tokens(text: str) -> tuple[str, ...]:
    """`bm25_tokens`, the last few texts kept: a served goal is tokenised by BM25, the nearest proved states
    and the reranker's name features in turn."""
    out: list[str] = []
    for m in _TOKEN_RE.finditer(text):
        tok = m.group(0)
        if tok in KEYWORDS:
            continue
        out.append(tok)
        if m.lastgroup == "ident":
            parts = [p.lower() for p in _PARTS_RE.split(tok) if p]
            if len(parts) > 1:
                out.extend(parts)
    return tuple(out)


def symbols(text: str, exclude: str | None = None) -> set[str]:
    """The constant-like symbols of a statement or goal (see the module docstring).

    `exclude` is a name to leave out (a premise's own name in its text).
    """
    text = strip_doc(text)
    bound = bound_names(text)
    out: set[str] = set()
    for m in _TOKEN_RE.finditer(text):
        tok = m.group(0)
        if tok in KEYWORDS or tok == exclude:
            continue
        if m.lastgroup == "ident":
            head, _, rest = tok.partition(".")
            if head in bound or _VARIABLE_RE.search(head):
                if not rest:
                    continue
                tok = rest  # dot notation on a variable: keep the field/function name
        out.add(tok)
    return out
