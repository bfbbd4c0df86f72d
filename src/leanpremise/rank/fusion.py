"""Fusion of several rankers' rankings of the same states, and its tuning with a noise margin.

Methods: weighted reciprocal-rank fusion (`rrf`, sum of w_r / (k + rank_r)),
a weighted sum of per-state min-max normalised scores (`wsum`), and `single`
(one ranker alone, its own order). A premise missing from a ranker's list
gets 0 from it. Equal fused scores are broken by the premise's best rank in
any ranker with weight (a tiny bonus added to the score, so the written scores say the
order), then by candidate id.

Tuning (`tune`) scores every candidate fusion on the tuning states by the
mean of Recall@16/32/100 per state and keeps the best fused candidate only
when a paired bootstrap says it beats the best single ranker on those states
(one-sided, 95%); otherwise the best single ranker is the answer. So a ranker
that only adds noise ends with weight 0 and the fused ranking is not worse
than the best ranker alone beyond noise. The search is a numpy grid over the
simplex of weights (docs/decisions.md says why not ranx's optimiser).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from leanpremise.json_files import FileFormatError, read_validated
from leanpremise.rank.names import side_rankers
from leanpremise.rank.runs import MAX_LIST_DEPTH, Run, padded_topk

TIE_BONUS = 1e-6
"""Scale of the best-rank tie-break bonus: far below any fused score difference that matters."""


class TunedOn(BaseModel):
    model_config = ConfigDict(extra="allow")

    split: str
    states: int
    files: list[str] = Field(default_factory=list)
    seed: int | None = None
    fraction: float | None = None


class FusionSpec(BaseModel):
    """fusion.json: what to fuse, how, and what it was tuned on (written by `fuse` / `retrieve --hybrid`)."""

    model_config = ConfigDict(extra="allow")

    method: str = Field(pattern="^(rrf|wsum|single)$")
    rankers: list[str]
    weights: dict[str, float]
    params: dict[str, float | str] = Field(default_factory=dict)
    metric: str = "mean of recall@16, recall@32, recall@100 per state with positives"
    k: int | None = Field(None, ge=1, le=MAX_LIST_DEPTH)
    tuned_on: TunedOn | None = None
    date: str | None = None
    scores: dict[str, object] = Field(default_factory=dict)

    def label(self) -> str:
        ws = ",".join(f"{n}={self.weights.get(n, 0.0):g}" for n in self.rankers)
        extra = "".join(f" {k}={v}" for k, v in self.params.items())
        return f"{self.method}({ws}){extra}"


FUSION_FILE = TypeAdapter(FusionSpec)


class FusionFileError(FileFormatError):
    pass


def read_fusion(path) -> FusionSpec:
    """A fusion file, checked as far as fusing needs (it may come from an untrusted bundle)."""
    spec = read_validated(path, FUSION_FILE, "fusion", FusionFileError, name_field=None)
    if why := fusion_problem(spec):
        raise FusionFileError(f"{path}: {why}")
    return spec


def read_servable_fusion(path) -> FusionSpec:
    """A fusion file a bundle can serve: `read_fusion`'s checks, and at most one dense ranker beside the
    lexical ones, each kind once (`side_rankers`); FusionFileError names the field. `export --hybrid`
    checks the file with it before its long steps, `serve` the bundle's copy before loading the rankers."""
    spec = read_fusion(path)
    try:
        side_rankers(spec.rankers)
    except ValueError as e:
        raise FusionFileError(f"{path}: field \"rankers\": {e}") from None
    return spec


def fusion_problem(spec: FusionSpec) -> str | None:
    """Why `spec` cannot be applied (as one line naming the field), or None."""
    missing = [n for n in spec.rankers if n not in spec.weights]
    if missing:
        return f'field "weights": no weight for ranker(s) {missing}'
    if len(set(spec.rankers)) != len(spec.rankers) or not spec.rankers:
        return f'field "rankers": expected distinct ranker names, got {spec.rankers}'
    bad = {n: w for n, w in spec.weights.items() if not (np.isfinite(w) and w >= 0)}
    if bad:
        return f'field "weights": weights must be finite and >= 0, got {bad}'
    if not any(spec.weights[n] > 0 for n in spec.rankers):
        return 'field "weights": no ranker has a weight above 0'
    if spec.method == "rrf":
        k = spec.params.get("k")
        if not isinstance(k, int | float) or not np.isfinite(k) or k <= 0:
            return f'field "params": rrf needs a finite "k" > 0, got {k!r}'
    if spec.k is not None and spec.k < 1:
        return f'field "k": expected a depth >= 1, got {spec.k}'
    return None


def active_rankers(spec: FusionSpec) -> list[str]:
    """The rankers whose rankings the fusion reads (weight above 0), in `spec.rankers` order."""
    return [n for n in spec.rankers if spec.weights.get(n, 0.0) > 0]


def write_fusion(path, spec: FusionSpec):
    from leanpremise.atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), FUSION_FILE.dump_json(spec, indent=1))
    return path


def file_order_scores(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores that agree with the order: a row whose scores rise in order gets -position instead."""
    scores = np.where(ids >= 0, np.asarray(scores, dtype=np.float64), -np.inf)
    rises = (np.diff(np.where(np.isfinite(scores), scores, -1e300), axis=1) > 0).any(axis=1)
    if rises.any():
        pos = -np.arange(scores.shape[1], dtype=np.float64)
        scores[rises] = np.where(ids[rises] >= 0, pos[None, :], -np.inf)
    return scores


class CandidateRuns:
    """The union of the rankers' lists per state, with each ranker's rank and normalised score on it.

    cand: (B, U) int64 candidate ids (-1 padding); rank: (R, B, U) 1-based (inf where absent);
    norm: (R, B, U) min-max normalised score (0 where absent; 1 for every listed premise when a
    ranker gives one score to all).
    """

    def __init__(self, runs: list[Run]):
        if not runs:
            raise ValueError("fusion needs at least one ranking")
        n = len(runs[0].ids)
        if any(len(r.ids) != n for r in runs):
            raise ValueError(f"rankings of different numbers of states: {[len(r.ids) for r in runs]}")
        self.names = [r.name for r in runs]
        self.depth = max(r.ids.shape[1] for r in runs)
        allids = np.concatenate([r.ids for r in runs], axis=1) if n else np.zeros((0, 0), np.int64)
        rows = [np.unique(row[row >= 0]) for row in allids]
        width = max((len(x) for x in rows), default=0)
        self.cand = np.full((n, width), -1, dtype=np.int64)
        for b, row in enumerate(rows):
            self.cand[b, : len(row)] = row
        self.rank = np.full((len(runs), n, width), np.inf)
        self.norm = np.zeros((len(runs), n, width))
        for r, run in enumerate(runs):
            scores = file_order_scores(run.ids, run.scores)
            for b in range(n):
                keep = run.ids[b] >= 0
                ids, s = run.ids[b][keep], scores[b][keep]
                if not len(ids):
                    continue
                ids, first = np.unique(ids, return_index=True)  # a name listed twice counts at its first place
                s = s[first]
                at = np.searchsorted(rows[b], ids)
                self.rank[r, b, at] = first + 1
                lo, hi = s.min(), s.max()
                self.norm[r, b, at] = (s - lo) / (hi - lo) if hi > lo else 1.0

    def tie_bonus(self, w: np.ndarray) -> np.ndarray:
        """TIE_BONUS / the best rank among the rankers that have weight (0 for premises only they lack)."""
        best = self.rank[w > 0].min(axis=0) if (w > 0).any() else np.full(self.cand.shape, np.inf)
        return TIE_BONUS / best

    def scores(self, spec: FusionSpec) -> np.ndarray:
        """(B, U) fused scores (-inf on padding)."""
        w = np.array([spec.weights.get(n, 0.0) for n in self.names], dtype=np.float64)
        if spec.method == "single":
            (r,) = np.flatnonzero(w > 0)[:1] if (w > 0).any() else (0,)
            out = np.where(np.isfinite(self.rank[r]), -self.rank[r], -np.inf)
        elif spec.method == "rrf":
            k = float(spec.params["k"])
            out = np.tensordot(w, 1.0 / (k + self.rank), axes=1) + self.tie_bonus(w)
        else:
            out = np.tensordot(w, self.norm, axes=1) + self.tie_bonus(w)
        # a premise listed only by rankers of weight 0 is not a candidate, so such rankers need not run
        listed = np.isfinite(self.rank[w > 0]).any(axis=0) if (w > 0).any() else self.cand >= 0
        return np.where((self.cand >= 0) & listed, out, -np.inf)

    def top(self, spec: FusionSpec, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (B, k) -1 padded, scores (B, k)) of the fused ranking, best first."""
        s = self.scores(spec)
        width = min(k, s.shape[1])
        order = np.argsort(-s, axis=1, kind="stable")[:, :width]
        ids = np.take_along_axis(self.cand, order, 1)
        sc = np.take_along_axis(s, order, 1)
        ids = np.where(np.isfinite(sc), ids, -1)
        out_ids, out_sc = padded_topk((len(s), k), ids, sc, score_dtype=np.float64)
        if spec.method == "single":  # a score that falls with the rank and stays positive
            out_sc = np.where(out_ids >= 0, 1.0 / (1.0 - out_sc), -np.inf)
        return out_ids, out_sc


def apply(runs: list[Run], spec: FusionSpec, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fuse `runs` (named as in `spec.rankers`, any order) with a tuned spec; (ids, scores) best first."""
    by_name = {r.name: r for r in runs}
    missing = [n for n in active_rankers(spec) if n not in by_name]
    if missing:
        raise ValueError(f"the fusion needs ranker(s) {missing}; given {sorted(by_name)}")
    return CandidateRuns([by_name[n] for n in active_rankers(spec)]).top(spec, k)
