"""Tuning a fusion on held-out states: every candidate fusion scored by the mean of Recall@16/32/100 per state,
the best fused one kept only when a paired bootstrap says it beats the best single ranker (one-sided, 95%);
otherwise the best single ranker is the answer. So a ranker that only adds noise ends with weight 0. The
search is a numpy grid over the simplex of weights (docs/decisions.md says why not ranx's optimiser)."""

from __future__ import annotations

import itertools
import time

import numpy as np

from leanpremise.eval.stats import bootstrap_lower
from leanpremise.rank.fusion import CandidateRuns, FusionSpec
from leanpremise.rank.runs import Run

TUNE_KS = (16, 32, 100)


RRF_KS = (10, 30, 60, 100)


def per_state_objective(cands: CandidateRuns, spec: FusionSpec, positives: list[np.ndarray],
                        ks=TUNE_KS) -> np.ndarray:
    """Mean over ks of Recall@k per state (states without positives excluded by the caller)."""
    s = cands.scores(spec)
    depth = min(max(ks), s.shape[1])
    if depth == 0:
        return np.zeros(len(s))
    part = np.argpartition(-s, depth - 1, axis=1)[:, :depth] if depth < s.shape[1] else \
        np.broadcast_to(np.arange(s.shape[1]), s.shape)
    ps = np.take_along_axis(s, part, 1)
    order = np.take_along_axis(part, np.argsort(-ps, axis=1, kind="stable"), 1)
    ids = np.take_along_axis(cands.cand, order, 1)
    ids = np.where(np.isfinite(np.take_along_axis(s, order, 1)), ids, -1)
    from leanpremise.eval.metrics import hit_matrix

    hits, n_pos = hit_matrix(ids, positives)
    cum = np.cumsum(hits, axis=1)
    n = np.maximum(n_pos, 1)
    return np.mean([cum[:, min(k, depth) - 1] / n for k in ks], axis=0)


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Weight vectors on the simplex with the given step (each ranker's weight 0, step, ..., 1)."""
    m = round(1 / step)
    return [tuple(c / m for c in combo) for combo in itertools.product(range(m + 1), repeat=n)
            if sum(combo) == m and sum(1 for c in combo if c) >= 2]


def candidate_specs(names: list[str], step: float | None = None, rrf_ks=RRF_KS) -> list[FusionSpec]:
    """Every single ranker, then wsum and rrf over the weight grid (weights that reach 0 included)."""
    specs = [FusionSpec(method="single", rankers=names, weights={n: float(n == m) for n in names})
             for m in names]
    if len(names) < 2:
        return specs
    step = step or (0.1 if len(names) <= 4 else 0.2)
    for w in simplex_grid(len(names), step):
        weights = dict(zip(names, w))
        specs.append(FusionSpec(method="wsum", rankers=names, weights=weights, params={"norm": "min-max"}))
        for k in rrf_ks:
            specs.append(FusionSpec(method="rrf", rankers=names, weights=weights, params={"k": k}))
    return specs


def tune(runs: list[Run], positives: list[np.ndarray], seed: int = 0, step: float | None = None,
         resamples: int = 2000) -> FusionSpec:
    """The fusion to use: the best fused candidate if it beats the best single ranker beyond noise on these
    states, else the best single ranker. `positives[b]` are state b's positives (same id space as runs)."""
    has_pos = np.array([len(p) > 0 for p in positives], dtype=bool)
    if not has_pos.any():
        raise ValueError("no tuning state has a positive premise: nothing to tune on")
    sel = [Run(r.name, r.ids[has_pos], r.scores[has_pos]) for r in runs]
    cands = CandidateRuns(sel)
    pos = [p for p, h in zip(positives, has_pos) if h]
    names = [r.name for r in runs]
    evaluated = [(spec, per_state_objective(cands, spec, pos)) for spec in candidate_specs(names, step)]
    singles = [(s, v) for s, v in evaluated if s.method == "single"]
    fused = [(s, v) for s, v in evaluated if s.method != "single"]
    best_single, single_v = max(singles, key=lambda sv: sv[1].mean())
    choice, choice_v, lower = best_single, single_v, None
    if fused:
        best_fused, fused_v = max(fused, key=lambda sv: sv[1].mean())
        lower = bootstrap_lower(fused_v - single_v, resamples, seed)
        if lower > 0:
            choice, choice_v = best_fused, fused_v
    spec = choice.model_copy(deep=True)
    spec.date = time.strftime("%Y-%m-%d %H:%M:%S")
    spec.scores = {
        "tuned": float(choice_v.mean()),
        "best_single": {"ranker": names[int(np.argmax([best_single.weights[n] for n in names]))],
                        "value": float(single_v.mean())},
        "best_fused": None if not fused else {"fusion": best_fused.label(), "value": float(fused_v.mean())},
        "bootstrap_lower_gain": lower, "bootstrap": {"resamples": resamples, "seed": seed, "level": 0.95},
        "states_with_positives": int(has_pos.sum()), "candidates": len(evaluated),
    }
    return spec
