"""Ranking metrics from ranked premise ids and ground-truth positives, vectorised over states.

Conventions follow the original evaluator so numbers compare with its logs:
Recall@k, nDCG@k and MAP@k average over the states that have at least one
positive; FullRecall@k counts a state without positives as fully recalled;
Precision@k, MRR@k and Accuracy@k average over all states. Every metric is
also reported over the states with at least one positive only (`<key>_pos`).
Positives that the ranking could never return (inaccessible premises) still
count in the denominators, as in the original.
"""

from __future__ import annotations

import numpy as np

DEFAULT_K_LIST = (1, 2, 4, 8, 16, 32, 64, 100, 128, 256, 512, 1024)
DEFAULT_MRR_K = 256
METRIC_NAMES = ("precision", "recall", "fullrecall", "mrr", "ndcg", "map", "accuracy")


def positives_csr(positives: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of a list of per-state id arrays, each deduplicated."""
    uniq = [np.unique(np.asarray(p, dtype=np.int64)) for p in positives]
    indptr = np.zeros(len(uniq) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(p) for p in uniq])
    indices = np.concatenate(uniq) if uniq else np.empty(0, np.int64)
    return indptr, indices.astype(np.int64, copy=False)


def hit_matrix(ranked: np.ndarray, positives: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(hits (B, K) bool, n_pos (B,)): hits[b, r] says ranked[b, r] is a positive of state b.

    One sorted-key lookup over all (state, id) pairs instead of a set per state.
    Padding ids (< 0) never hit; a positive listed twice in `ranked` would count twice,
    which rankings never do.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    b, _ = ranked.shape if ranked.ndim == 2 else (len(ranked), 0)
    indptr, indices = positives_csr(positives)
    n_pos = np.diff(indptr)
    if b == 0 or ranked.size == 0:
        return np.zeros(ranked.shape if ranked.ndim == 2 else (b, 0), dtype=bool), n_pos
    span = int(max(ranked.max(initial=0), indices.max(initial=0))) + 2
    rows = np.repeat(np.arange(b, dtype=np.int64), n_pos)
    pos_keys = np.sort(rows * span + indices)
    keys = np.arange(b, dtype=np.int64)[:, None] * span + ranked
    hits = np.zeros(ranked.shape, dtype=bool)
    if len(pos_keys):
        at = np.searchsorted(pos_keys, keys).clip(0, len(pos_keys) - 1)
        hits = pos_keys[at] == keys
    hits &= ranked >= 0
    return hits, n_pos


def _mean(values: np.ndarray, where: np.ndarray | None = None) -> float:
    vals = values if where is None else values[where]
    return float(vals.mean()) if len(vals) else 0.0


def per_state_metrics(hits: np.ndarray, n_pos: np.ndarray, k_list=DEFAULT_K_LIST,
                      mrr_k: int | list[int] = DEFAULT_MRR_K) -> dict[str, np.ndarray]:
    """Per-state values `<metric>@<k>` -> (B,) float array (nan where the metric is undefined)."""
    b, depth = hits.shape
    n_pos = np.asarray(n_pos, dtype=np.float64)
    has_pos = n_pos > 0
    cum = np.cumsum(hits, axis=1, dtype=np.int64) if depth else np.zeros((b, 0), np.int64)
    # DCG gain per rank and its running sums; the ideal DCG needs the same sums at min(n_pos, k).
    disc = 1.0 / np.log2(np.arange(2, depth + 2, dtype=np.float64))
    dcg = np.cumsum(hits * disc, axis=1) if depth else np.zeros((b, 0))
    max_k = max([*k_list, depth, 1])
    ideal_cum = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(2, max_k + 2, dtype=np.float64)))]
    prec_at_hit = np.where(hits, cum / np.arange(1, depth + 1), 0.0)
    ap_cum = np.cumsum(prec_at_hit, axis=1) if depth else np.zeros((b, 0))
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), depth) if depth else np.zeros(b, np.int64)

    def at(arr, k):  # value of a running sum at depth k (k may exceed the list's length)
        if depth == 0:
            return np.zeros(b)
        return arr[:, min(k, depth) - 1]

    out: dict[str, np.ndarray] = {}
    for k in k_list:
        found = at(cum, k).astype(np.float64)
        safe_pos = np.where(has_pos, n_pos, 1.0)
        out[f"precision@{k}"] = found / k
        out[f"recall@{k}"] = np.where(has_pos, found / safe_pos, np.nan)
        out[f"fullrecall@{k}"] = (found >= n_pos).astype(np.float64)
        ideal = ideal_cum[np.minimum(n_pos, k).astype(np.int64)]
        out[f"ndcg@{k}"] = np.where(has_pos, at(dcg, k) / np.where(ideal > 0, ideal, 1.0), np.nan)
        out[f"map@{k}"] = np.where(has_pos, at(ap_cum, k) / np.maximum(np.minimum(n_pos, k), 1.0), np.nan)
        out[f"accuracy@{k}"] = (found > 0).astype(np.float64)
    for k in ([mrr_k] if isinstance(mrr_k, int) else mrr_k):
        out[f"mrr@{k}"] = np.where(first_hit < min(k, depth), 1.0 / (first_hit + 1.0), 0.0)
    return out


_OVER_POSITIVE_STATES = ("recall", "ndcg", "map")


def compute_metrics(ranked: np.ndarray, positives: list[np.ndarray], k_list=DEFAULT_K_LIST,
                    mrr_k: int | list[int] = DEFAULT_MRR_K) -> dict[str, float]:
    """Flat metrics: `<metric>@<k>`, `<metric>@<k>_pos`, `states`, `states_without_positives`."""
    hits, n_pos = hit_matrix(ranked, positives)
    per_state = per_state_metrics(hits, n_pos, k_list, mrr_k)
    has_pos = n_pos > 0
    out: dict[str, float] = {}
    for key, vals in per_state.items():
        metric = key.split("@")[0]
        out[key] = _mean(vals, has_pos) if metric in _OVER_POSITIVE_STATES else _mean(vals)
    for key, vals in per_state.items():
        out[f"{key}_pos"] = _mean(vals, has_pos)
    out["states"] = len(n_pos)
    out["states_without_positives"] = int((~has_pos).sum())
    return out


def f1_at(ranked: np.ndarray, positives: list[np.ndarray], k: int) -> np.ndarray:
    """Per-state F1@k (0 where nothing is found), as the original's file-based evaluation defines it."""
    hits, n_pos = hit_matrix(ranked, positives)
    found = hits[:, :k].sum(axis=1).astype(np.float64)
    precision = found / k
    recall = np.where(n_pos > 0, found / np.maximum(n_pos, 1), 1.0)
    denom = precision + recall
    return np.where(found > 0, 2 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)


def format_table(metrics: dict[str, float], k_list=None) -> str:
    """A text table: one row per k, one column per metric (percent, MRR/nDCG/MAP as fractions)."""
    ks = sorted({int(key.split("@")[1]) for key in metrics if "@" in key and not key.endswith("_pos")})
    if k_list is not None:
        ks = [k for k in ks if k in set(k_list)]
    cols = [m for m in METRIC_NAMES if any(f"{m}@{k}" in metrics for k in ks)]
    lines = [f"{'k':>6}  " + "  ".join(f"{c:>10}" for c in cols)]
    for k in ks:
        cells = []
        for c in cols:
            v = metrics.get(f"{c}@{k}")
            if v is None:
                cells.append(f"{'':>10}")
            elif c in ("mrr", "ndcg", "map"):
                cells.append(f"{v:>10.4f}")
            else:
                cells.append(f"{100 * v:>9.2f}%")
        lines.append(f"{k:>6}  " + "  ".join(cells))
    lines.append(f"states: {metrics.get('states', 0)}  without positives: {metrics.get('states_without_positives', 0)}")
    return "\n".join(lines)
