"""MePo, the Meng–Paulson relevance filter (Sledgehammer; Lean core's `mepoSelector`), over text symbols.

Algorithm, per state: the relevant set R starts as the goal's symbols. Each
round, every candidate not yet accepted gets
    score = M / (M + |S \\ R|),   M = sum of w(s) over s in S ∩ R,
where S is the candidate's symbol set and w(s) = 1 + 2 / (floor(log2 freq(s)) + 1)
favours rare symbols (freq = number of premises mentioning s, floor(log2 0) taken
as 0; Lean core's weighting). Candidates with M > 0 and score >= p are accepted,
their symbols join R, and the pass mark rises: p <- p + (1 - p) / c. It stops
when a round accepts nothing, when k premises are accepted, or after max_rounds
rounds. Accepted premises are ranked as Sledgehammer's MePo orders them: by
round (earlier rounds are closer to the goal), then by score, then by larger M
(more matched rare symbols), then later premises first. (Lean core's
`mepoSelector` sorts by score alone, which puts late-round premises, scored
against a much larger relevant set, above the first round's and loses Recall;
docs/decisions.md has the figures.)

Exact arithmetic: a score of exactly p is common (w = 3 with two irrelevant
symbols is 3/5), so whether it passes must not depend on summation order.
Weights are held as integers scaled by D = lcm(1, ..., Lmax + 1), Lmax the
largest floor(log2 freq) possible, so D * w(s) = D + 2D / (L + 1) is an exact
integer and M is an exact int64 sum. The score is the float64 nearest the exact
rational M / (M + |S \\ R|) (computed as float(D*M) / float(D*M + D*|S \\ R|),
both integers below 2^53, so one correctly rounded division); it is compared
with the float64 pass mark and used to order ties.

The written score is `score - round`: the integer part says the round, and
scores fall in file order as for every ranker, so a reader that sorts by score
gets MePo's own ranking (a round-r score lies in (-r, 1 - r]).

One state at a time, touching only what changes: a premise's score changes
only when one of its symbols joins R, and the pass mark never falls while a
round can accept anything (p <= 1 gives p + (1 - p)/c >= p; a pass mark above 1
accepts nothing and ends the run). So round 0 checks the premises that share a
symbol with the goal, and each later round only the premises holding a symbol
that joined R in the round before, found through the symbol -> premises
postings; per-state work is O(N) for the state's arrays plus the postings of
the symbols R gains.

Premises supplied with a request (`extra`, the server's new premises) get ids
N..N+E-1, are always candidates, and take part in the rounds like indexed
premises. Weights of symbols the corpus knows stay the corpus's; a symbol only
extra premises have gets the weight of freq = the number of extra premises
having it (so a symbol shared by many new premises counts as common, one only
one of them has as rare). Goal symbols unknown to the corpus (`goal_new`)
match extra premises' symbols of the same name.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leanpremise.rank.lean_tokens import symbols
from leanpremise.rank.runs import padded_topk, rank_states

logger = logging.getLogger(__name__)

_FLOAT_EXACT = 2**53  # integers below this are exact as float64


@dataclass(frozen=True)
class MePoConfig:
    p: float = 0.6
    c: float = 2.4
    state_batch: int = 64  # states whose candidate masks are built together by mepo_rank
    max_rounds: int = 100

    def __post_init__(self):
        if not self.c > 0:
            raise ValueError(f"MePo decay c={self.c}: must be > 0")
        if self.state_batch < 1 or self.max_rounds < 0:
            raise ValueError(f"MePo state_batch={self.state_batch}, max_rounds={self.max_rounds}: "
                             "need state_batch >= 1 and max_rounds >= 0")

    @property
    def label(self) -> str:
        return f"mepo-p{self.p:g}-c{self.c:g}"


def _floor_log2(freq: np.ndarray) -> np.ndarray:
    """floor(log2 max(freq, 1)) exactly for integers (from the float exponent, no log rounding)."""
    _, exp = np.frexp(np.maximum(np.asarray(freq, dtype=np.int64), 1).astype(np.float64))
    return exp.astype(np.int64) - 1


def weight_scale(max_freq: int) -> int:
    """D = lcm(1, ..., floor(log2 max_freq) + 1): every weight times D is an integer."""
    return math.lcm(*range(1, int(_floor_log2(np.array([max_freq]))[0]) + 2))


def scaled_weights(freq: np.ndarray, scale: int) -> np.ndarray:
    """D * w(freq) = D + 2D / (floor(log2 freq) + 1) as exact int64 (D must come from weight_scale)."""
    div = _floor_log2(freq) + 1
    if np.any(scale % div):
        raise ValueError(f"weight scale {scale} is not a multiple of every floor(log2 freq) + 1")
    return scale + (2 * scale) // div


def symbol_weight(freq: np.ndarray) -> np.ndarray:
    """1 + 2 / (floor(log2 freq) + 1), with floor(log2 0) taken as 0 (as Lean's Nat.log2), as float64."""
    return 1.0 + 2.0 / (_floor_log2(freq) + 1.0)


def _gather_ranges(indptr: np.ndarray, data: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concatenated slices data[indptr[r]:indptr[r+1]] of `rows`, and each slice's length."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return data[:0], lens
    offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return data[offsets + np.arange(total)], lens


def _unique_small(values: np.ndarray, stamp: np.ndarray) -> np.ndarray:
    """Distinct values in O(len) with a scratch array indexed by value (no sort)."""
    if len(values) == 0:
        return values
    pos = np.arange(len(values), dtype=np.int64)
    stamp[values] = pos
    return values[stamp[values] == pos]


VOCAB_FILE, INDPTR_FILE, INDICES_FILE = "vocab.json", "indptr.npy", "indices.npy"
"""The files of a saved SymbolIndex (a bundle's `hybrid/mepo/`)."""


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


class SymbolIndex:
    """Premise symbols as CSR (premise -> symbols) and CSC (symbol -> premises), with integer weights."""

    def __init__(self, premise_symbols: list[set[str]]):
        vocab: dict[str, int] = {}
        indptr = np.zeros(len(premise_symbols) + 1, dtype=np.int64)
        cols: list[int] = []
        for i, syms in enumerate(premise_symbols):
            cols.extend(vocab.setdefault(s, len(vocab)) for s in syms)
            indptr[i + 1] = len(cols)
        self._build(list(vocab), indptr, np.asarray(cols, dtype=np.int32))

    def _build(self, vocab: list[str], indptr: np.ndarray, indices: np.ndarray) -> None:
        """Everything ranking needs, derived from the (validated) CSR table."""
        self.vocab_list = vocab
        self.vocab: dict[str, int] = {s: i for i, s in enumerate(vocab)}
        self.indptr, self.indices = indptr, indices
        self.n_premises, self.n_symbols = len(indptr) - 1, len(vocab)
        self.sizes = np.diff(indptr)
        self.freq = np.bincount(indices, minlength=self.n_symbols).astype(np.int64)
        order = np.argsort(indices, kind="stable")
        self.post_indptr = np.zeros(self.n_symbols + 1, dtype=np.int64)
        np.cumsum(self.freq, out=self.post_indptr[1:])
        self.post = np.repeat(np.arange(self.n_premises, dtype=np.int32), self.sizes)[order]
        self.scale = weight_scale(max(int(self.freq.max(initial=0)), 1))
        self.weights = scaled_weights(self.freq, self.scale)

    @classmethod
    def from_corpus(cls, corpus) -> SymbolIndex:
        names = corpus.names
        return cls([symbols(t, exclude=names[i]) for i, t in enumerate(corpus.texts)])

    def save(self, folder) -> None:
        """The table into `folder` (written by `export --hybrid`): the vocabulary as a JSON list, indptr
        (int64) and indices (int32) as npy; nothing pickled."""
        from leanpremise.atomic import atomic_write_bytes

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        vocab, indptr, indices = self.to_arrays()
        atomic_write_bytes(folder / VOCAB_FILE, json.dumps(vocab, ensure_ascii=False).encode())
        atomic_write_bytes(folder / INDPTR_FILE, _npy_bytes(indptr.astype(np.int64)))
        atomic_write_bytes(folder / INDICES_FILE, _npy_bytes(indices.astype(np.int32)))

    @classmethod
    def load(cls, folder, n_premises: int) -> SymbolIndex:
        """A saved table, checked against the corpus it must rank (`n_premises` premises) and in itself
        (`from_arrays`); ValueError names the file or folder that is wrong (bundles are untrusted)."""
        folder = Path(folder)

        def read(name, how):
            try:
                return how(folder / name)
            except (OSError, ValueError) as e:
                raise ValueError(f"{folder / name}: not readable ({type(e).__name__}: {e})") from e

        vocab = read(VOCAB_FILE, lambda p: json.loads(p.read_text(encoding="utf-8")))
        indptr = read(INDPTR_FILE, lambda p: np.load(p, allow_pickle=False))
        indices = read(INDICES_FILE, lambda p: np.load(p, allow_pickle=False))
        if not isinstance(vocab, list) or not all(isinstance(s, str) for s in vocab):
            raise ValueError(f"{folder / VOCAB_FILE}: expected a JSON list of symbol strings")
        if len(indptr) != n_premises + 1:
            raise ValueError(f"{folder / INDPTR_FILE}: {len(indptr) - 1} premises, the corpus has {n_premises}")
        try:
            return cls.from_arrays(vocab, indptr, indices)
        except ValueError as e:
            raise ValueError(f"{folder}: {e}") from e

    def to_arrays(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(vocab, indptr int64, indices int32): the whole table, for storing as JSON + npy."""
        return list(self.vocab_list), self.indptr.copy(), self.indices.copy()

    @classmethod
    def from_arrays(cls, vocab: Sequence[str], indptr: np.ndarray, indices: np.ndarray) -> SymbolIndex:
        """Rebuild from to_arrays' output without re-tokenising; the arrays are checked (bundles are
        untrusted) and a ValueError names what is wrong."""
        vocab = list(vocab)
        if not all(isinstance(s, str) for s in vocab):
            raise ValueError("MePo symbol table: vocab must be a list of strings")
        if len(set(vocab)) != len(vocab):
            raise ValueError("MePo symbol table: vocab has repeated symbols")
        indptr, indices = np.asarray(indptr), np.asarray(indices)
        for name, a in (("indptr", indptr), ("indices", indices)):
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"MePo symbol table: {name} must be a 1-d integer array, got {a.dtype} {a.shape}")
        if len(indptr) < 1 or indptr[0] != 0:
            raise ValueError("MePo symbol table: indptr must start at 0")
        if np.any(np.diff(indptr) < 0):
            raise ValueError("MePo symbol table: indptr is not non-decreasing")
        if indptr[-1] != len(indices):
            raise ValueError(f"MePo symbol table: indptr ends at {indptr[-1]}, indices has {len(indices)} entries")
        if len(indices) and (indices.min() < 0 or indices.max() >= len(vocab)):
            raise ValueError(f"MePo symbol table: indices out of range [0, {len(vocab)})")
        indptr, indices = indptr.astype(np.int64), indices.astype(np.int32)
        rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
        keys = np.sort(rows * max(len(vocab), 1) + indices)
        if np.any(keys[1:] == keys[:-1]):
            raise ValueError("MePo symbol table: a premise lists the same symbol twice")
        self = cls.__new__(cls)
        self._build(vocab, indptr, indices)
        return self

    def query_symbols(self, text: str) -> tuple[np.ndarray, frozenset[str]]:
        """(sorted ids of the text's symbols the corpus knows, the symbols it does not)."""
        syms = symbols(text)
        ids = sorted(self.vocab[s] for s in syms if s in self.vocab)
        return np.asarray(ids, dtype=np.int64), frozenset(s for s in syms if s not in self.vocab)

    def query_ids(self, text: str) -> np.ndarray:
        """Sorted ids of the goal text's symbols the corpus knows."""
        return self.query_symbols(text)[0]


@dataclass
class _Tables:
    """The postings, sizes and weights one state's run walks: the index's, plus any request premises."""

    n: int
    sizes: np.ndarray
    weights: np.ndarray  # scaled, per symbol id (request-local symbols after the corpus's)
    scale: int
    post_indptr: np.ndarray
    post: np.ndarray
    rows_indptr: np.ndarray  # indexed premise -> symbols (the index's own arrays, never copied)
    rows: np.ndarray
    extra_post_indptr: np.ndarray | None = None
    extra_post: np.ndarray | None = None
    extra_rows_indptr: np.ndarray | None = None  # request premise j (id n_indexed + j) -> symbols
    extra_rows: np.ndarray | None = None
    n_indexed: int = 0

    def symbols_of(self, ids: np.ndarray) -> np.ndarray:
        """The symbols of premises `ids` (indexed and request premises), concatenated."""
        inner = ids[ids < self.n_indexed]
        syms, _ = _gather_ranges(self.rows_indptr, self.rows, inner)
        if self.extra_rows is None or len(inner) == len(ids):
            return syms.astype(np.int64)
        more, _ = _gather_ranges(self.extra_rows_indptr, self.extra_rows, ids[ids >= self.n_indexed] - self.n_indexed)
        return np.concatenate([syms.astype(np.int64), more.astype(np.int64)])


class RequestPremises:
    """A request's premises (`extra`) in MePo's tables: ids N.., their symbols in the corpus's symbol ids or
    request-local ones after them, weights rescaled to one exact integer scale. Built once per request
    and shared by all its states (the server's new premises come with every state of a request)."""

    def __init__(self, index: SymbolIndex, extra: Sequence[Iterable[str]]):
        sets = [syms if isinstance(syms, (set, frozenset)) else set(syms) for syms in extra]
        lens = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
        flat = [s for syms in sets for s in syms]
        code = dict.fromkeys(flat)  # each distinct symbol once, in first-seen order
        vocab, n_known, n_local = index.vocab, index.n_symbols, 0
        for s in code:
            i = vocab.get(s)
            if i is None:
                i, n_local = n_known + n_local, n_local + 1
            code[s] = i
        self.local = {s: i for s, i in code.items() if i >= n_known}
        """Request-local symbol -> its id (after the corpus's): what a goal's unknown symbols match."""
        ecols = np.fromiter(map(code.__getitem__, flat), dtype=np.int64, count=len(flat))
        rows_ptr = np.zeros(len(sets) + 1, dtype=np.int64)
        np.cumsum(lens, out=rows_ptr[1:])
        n, n_sym = index.n_premises, n_known + n_local
        local_freq = np.bincount(ecols[ecols >= n_known] - n_known, minlength=n_local)
        scale = weight_scale(max(int(index.freq.max(initial=0)), len(sets), 1))
        weights = np.concatenate([index.weights * (scale // index.scale), scaled_weights(local_freq, scale)])
        order = np.argsort(ecols, kind="stable")
        eptr = np.zeros(n_sym + 1, dtype=np.int64)
        np.cumsum(np.bincount(ecols, minlength=n_sym), out=eptr[1:])
        epost = (n + np.repeat(np.arange(len(sets), dtype=np.int64), lens))[order].astype(np.int32)
        self.tables = _Tables(n + len(sets), np.concatenate([index.sizes, lens]), weights, scale,
                              index.post_indptr, index.post, index.indptr, index.indices, eptr, epost,
                              rows_ptr, ecols, n_indexed=n)
        self.index = index

    def __len__(self) -> int:
        return self.tables.n - self.tables.n_indexed

    def goal_local(self, goal_new: Iterable[str]) -> np.ndarray:
        """The request-local ids of a goal's symbols that the corpus does not know."""
        return np.asarray([self.local[s] for s in goal_new if s in self.local], dtype=np.int64)


def _tables(index: SymbolIndex, extra, goal_new: Iterable[str]) -> tuple[_Tables, np.ndarray]:
    """The tables one state's run walks (the index's, extended by the request premises, given as symbol
    sets or already as RequestPremises); also the ids of goal_new symbols they know."""
    if isinstance(extra, RequestPremises):
        if extra.index is not index:
            raise ValueError("MePo: the request premises were prepared for another symbol index")
        return extra.tables, extra.goal_local(goal_new)
    if not extra:
        n = index.n_premises
        return _Tables(n, index.sizes, index.weights, index.scale, index.post_indptr, index.post,
                       index.indptr, index.indices, n_indexed=n), np.zeros(0, dtype=np.int64)
    prepared = RequestPremises(index, extra)
    return prepared.tables, prepared.goal_local(goal_new)


def mepo_state(index: SymbolIndex, goal_ids: np.ndarray, candidates: np.ndarray | None, k: int,
               config: MePoConfig, extra: Sequence[Iterable[str]] | RequestPremises = (),
               goal_new: Iterable[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """MePo for one state. goal_ids: the goal's known symbol ids (SymbolIndex.query_ids); candidates:
    (N,) bool over the indexed premises, None for all; extra: request premises' symbol sets (ids N..), or
    those prepared once for all of a request's states (RequestPremises); goal_new: goal symbols unknown
    to the corpus, matched against the extra premises' symbols.

    Returns (ids (k,) int64 padded with -1, scores (k,) float32 = score - round), best first.
    """
    t, goal_local = _tables(index, extra, goal_new)
    n_idx, n = index.n_premises, t.n
    if max(int(t.sizes.max(initial=0)), 1) * int(t.weights.max(initial=0)) >= _FLOAT_EXACT:
        raise ValueError("MePo: a premise has too many symbols for exact float64 scores")
    open_ = np.ones(n, dtype=bool)  # candidate and not yet accepted
    if candidates is not None:
        candidates = np.asarray(candidates, dtype=bool)
        if candidates.shape != (n_idx,):
            raise ValueError(f"MePo candidates: expected shape ({n_idx},), got {candidates.shape}")
        open_[:n_idx] = candidates
    m = np.zeros(n, dtype=np.int64)
    overlap = np.zeros(n, dtype=np.int64)
    in_r = np.zeros(len(t.weights), dtype=bool)
    stamp = np.empty(max(n, len(t.weights)), dtype=np.int64)
    delta = np.unique(np.concatenate([np.asarray(goal_ids, dtype=np.int64), goal_local]))
    in_r[delta] = True
    acc_ids: list[np.ndarray] = []
    acc_score: list[np.ndarray] = []
    acc_m: list[np.ndarray] = []
    acc_round: list[np.ndarray] = []
    n_acc, p = 0, float(config.p)
    for round_no in range(config.max_rounds):
        touched = _add_symbols(t, delta, m, overlap, open_, stamp)
        if len(touched) == 0:
            break
        mt = m[touched]
        score = mt.astype(np.float64) / (mt + t.scale * (t.sizes[touched] - overlap[touched])).astype(np.float64)
        ok = (mt > 0) & (score >= p)
        new = touched[ok]
        if len(new) == 0:
            break
        open_[new] = False
        acc_ids.append(new)
        acc_score.append(score[ok])
        acc_m.append(mt[ok])
        acc_round.append(np.full(len(new), round_no, dtype=np.int64))
        n_acc += len(new)
        if n_acc >= k:
            break
        syms = t.symbols_of(new)
        syms = syms[~in_r[syms]]
        delta = _unique_small(syms.astype(np.int64), stamp)
        in_r[delta] = True
        p = p + (1.0 - p) / config.c
    if not acc_ids:
        return padded_topk(k)
    cand, sc, mm, rd = (np.concatenate(a) for a in (acc_ids, acc_score, acc_m, acc_round))
    order = np.lexsort((-cand, -mm, -sc, rd))[:k]
    return padded_topk(k, cand[order], (sc[order] - rd[order]).astype(np.float32))


def _add_symbols(t: _Tables, delta: np.ndarray, m: np.ndarray, overlap: np.ndarray, open_: np.ndarray,
                 stamp: np.ndarray) -> np.ndarray:
    """Add the weights of the symbols `delta` (new in R) to the open premises holding them; return those
    premises (each once): the only ones whose score changed."""
    parts, wparts = [], []
    known = delta[delta < len(t.post_indptr) - 1]
    for ptr, post, syms in ((t.post_indptr, t.post, known), (t.extra_post_indptr, t.extra_post, delta)):
        if ptr is None or len(syms) == 0:
            continue
        prem, lens = _gather_ranges(ptr, post, syms)
        keep = open_[prem]
        parts.append(prem[keep])
        wparts.append(np.repeat(t.weights[syms], lens)[keep])
    if not parts:
        return np.zeros(0, dtype=np.int64)
    prem = np.concatenate(parts).astype(np.int64)
    np.add.at(m, prem, np.concatenate(wparts))
    np.add.at(overlap, prem, 1)
    return _unique_small(prem, stamp)


def mepo_rank(index: SymbolIndex, queries: list[str], access, state_ids: np.ndarray, k: int,
              config: MePoConfig, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """MePo rankings of the given states over their accessible premises (declaration excluded): mepo_state
    per state, the candidate masks built config.state_batch states at a time."""
    return rank_states(lambda i, mask: mepo_state(index, index.query_ids(queries[i]), mask, k, config),
                       access, state_ids, k, config.state_batch, progress, desc=config.label)
