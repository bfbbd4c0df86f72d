"""MePo per state, as the premise server runs it: the per-state implementation against the old batched one.

    python benchmarks/mepo_speed.py [--data_dir DIR] [--states 100] [--k 100 1024]

On the first `--states` test states of the data dir (default mathlib-src from
the bench cache), with each state's accessible premises as candidates (masks
built beforehand, not timed): ms per state of `mepo_state` (goal symbols
looked up beforehand; the tokenising is timed apart) and of the old
implementation, a copy of which lives below as BASELINE (the batched
sparse-dense rounds with float32 weights, here run on one state at a time as
a server would, and on `--baseline_batch` states together as the evaluation
ran it). Checks that both rank alike: the old float32 sums can decide exact
ties (at the pass mark, and among equal scores and equal M) differently, so the
number of states whose rankings differ is reported, how many of those differ
only among premises with equal written scores, and where they first differ.
Wall and CPU ms are both recorded: on a shared machine the wall time includes
waiting for the CPU.
Writes benchmarks/results/mepo_speed.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import unpacked, write_result

# ---- BASELINE: the implementation before issue #13, kept here only to measure against -------------------

def baseline_weight(freq: np.ndarray) -> np.ndarray:
    """BASELINE: float32 1 + 2 / (floor(log2 freq) + 1)."""
    log2 = np.floor(np.log2(np.maximum(np.asarray(freq, dtype=np.int64), 1)))
    return (1.0 + 2.0 / (log2 + 1.0)).astype(np.float32)


class BaselineTables:
    """BASELINE: the premise-symbol matrix as the old SymbolIndex held it (scipy CSR, float32 weights)."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, n_symbols: int):
        import scipy.sparse as sp

        indices = indices.astype(np.int64)
        self.matrix = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                                    shape=(len(indptr) - 1, max(n_symbols, 1)))
        self.matrix_t = self.matrix.T.tocsr()
        self.sizes = np.diff(indptr).astype(np.float32)
        self.weights = baseline_weight(np.bincount(indices, minlength=self.matrix.shape[1]))


def baseline_mepo_batch(index: BaselineTables, relevant: np.ndarray, accessible: np.ndarray, k: int, p: float,
                        c: float, max_rounds: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """BASELINE: the old mepo_batch, unchanged but for taking p, c as arguments."""
    n_states = relevant.shape[1]
    n = index.matrix.shape[0]
    relevant = relevant.astype(np.float32, copy=True)
    accepted = np.zeros((n_states, n), dtype=bool)
    acc_score = np.zeros((n_states, n), dtype=np.float32)
    acc_m = np.zeros((n_states, n), dtype=np.float32)
    acc_round = np.zeros((n_states, n), dtype=np.int32)
    active = np.ones(n_states, dtype=bool)
    weights = index.weights[:, None]
    for round_no in range(max_rounds):
        if not active.any():
            break
        cols = np.flatnonzero(active)
        r = relevant[:, cols]
        both = index.matrix @ np.hstack([weights * r, r])
        m, overlap = both[:, : len(cols)].T, both[:, len(cols):].T
        irrelevant = index.sizes[None, :] - overlap
        denom = m + irrelevant
        score = np.divide(m, denom, out=np.zeros_like(m), where=denom > 0)
        new = accessible[cols] & ~accepted[cols] & (score >= p) & (m > 0)
        got = new.any(axis=1)
        accepted[cols] |= new
        acc_score[cols] = np.where(new, score, acc_score[cols])
        acc_m[cols] = np.where(new, m, acc_m[cols])
        acc_round[cols] = np.where(new, round_no, acc_round[cols])
        if got.any():
            grown = index.matrix_t @ new[got].T.astype(np.float32)
            relevant[:, cols[got]] = np.maximum(relevant[:, cols[got]], (grown > 0).astype(np.float32))
        done = ~got | (accepted[cols].sum(axis=1) >= k)
        active[cols[done]] = False
        p = p + (1.0 - p) / c
    ids = np.full((n_states, k), -1, dtype=np.int64)
    scores = np.full((n_states, k), -np.inf, dtype=np.float32)
    for b in range(n_states):
        cand = np.flatnonzero(accepted[b])
        order = np.lexsort((-cand, -acc_m[b, cand], -acc_score[b, cand], acc_round[b, cand]))[:k]
        ids[b, : len(order)] = cand[order]
        scores[b, : len(order)] = acc_score[b, cand[order]] - acc_round[b, cand[order]]
    return ids, scores


# ---- measurement ----------------------------------------------------------------------------------------

def summary(ms: list[float], cpu_ms: list[float]) -> dict:
    """Wall ms per state, and this process's CPU ms (on a shared machine wall time includes waiting)."""
    a = np.asarray(ms)
    return {"mean_ms": round(float(a.mean()), 3), "median_ms": round(float(np.median(a)), 3),
            "p90_ms": round(float(np.percentile(a, 90)), 3), "max_ms": round(float(a.max()), 3),
            "cpu_mean_ms": round(float(np.mean(cpu_ms)), 3), "cpu_median_ms": round(float(np.median(cpu_ms)), 3)}


def agreement(old_ids: np.ndarray, old_scores: np.ndarray, new_ids: np.ndarray, new_scores: np.ndarray) -> dict:
    """How many states the two rank identically; of the others, how many differ only in the order (or the
    cut at k) of premises with equal written scores (an exact tie the old float32 sums broke arbitrarily),
    and where the rankings first part."""
    first, ties_only = [], 0
    for oi, os_, ni, ns in zip(old_ids, old_scores, new_ids, new_scores):
        diff = np.flatnonzero(oi != ni)
        if len(diff):
            first.append(int(diff[0]))
            ties_only += bool(np.array_equal(np.isfinite(os_), np.isfinite(ns))
                              and np.allclose(os_[np.isfinite(os_)], ns[np.isfinite(ns)], rtol=0, atol=1e-6))
    return {"states_identical": len(old_ids) - len(first), "states_differing": len(first),
            "states_differing_only_among_equal_scores": ties_only,
            "first_difference_rank_median": statistics.median(first) if first else None}


def main() -> None:
    from leanpremise.data import DataConfig, load_dataset
    from leanpremise.rank.mepo import MePoConfig, SymbolIndex, mepo_state

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", type=Path, default=None,
                    help="default: mathlib-src from the shared data, unpacked once into the bench cache")
    ap.add_argument("--states", type=int, default=100)
    ap.add_argument("--k", type=int, nargs="+", default=[100, 1024])
    ap.add_argument("--baseline_batch", type=int, default=64)
    ap.add_argument("--note", default="", help="how quiet the machine was (recorded in the JSON)")
    args = ap.parse_args()
    data_dir = args.data_dir or unpacked("mathlib-src")

    ds = load_dataset(DataConfig(data_dir=data_dir))
    t0 = time.perf_counter()
    index = SymbolIndex.from_corpus(ds.corpus)
    index_s = time.perf_counter() - t0
    vocab, indptr, indices = index.to_arrays()
    t0 = time.perf_counter()
    SymbolIndex.from_arrays(vocab, indptr, indices)
    from_arrays_s = time.perf_counter() - t0
    base = BaselineTables(indptr, indices, len(vocab))
    sids = ds.split_ids("test")[: args.states]
    texts = [ds.states.state[s] for s in sids.tolist()]
    masks = np.ascontiguousarray(ds.access.mask(sids))
    t0 = time.perf_counter()
    goals = [index.query_ids(t) for t in texts]
    tokenise_ms = (time.perf_counter() - t0) / len(texts) * 1000
    rel = np.zeros((base.matrix.shape[1], len(texts)), dtype=np.float32)
    for b, g in enumerate(goals):
        rel[g, b] = 1.0
    cfg = MePoConfig()
    load0 = os.getloadavg()
    result: dict = {"data_dir": str(data_dir), "premises": index.n_premises, "symbols": index.n_symbols,
                    "states": len(sids), "p": cfg.p, "c": cfg.c, "note": args.note,
                    "index_seconds": round(index_s, 2), "from_arrays_seconds": round(from_arrays_s, 3),
                    "goal_tokenise_ms_per_state": round(tokenise_ms, 3), "per_k": {}}
    for k in args.k:
        new_ms, new_cpu, new_ids, new_scores = [], [], [], []
        for g, m in zip(goals, masks):
            t0, c0 = time.perf_counter(), time.process_time()
            ids, scores = mepo_state(index, g, m, k, cfg)
            new_ms.append((time.perf_counter() - t0) * 1000)
            new_cpu.append((time.process_time() - c0) * 1000)
            new_ids.append(ids)
            new_scores.append(scores)
        old_ms, old_cpu, old_ids, old_scores = [], [], [], []
        for b in range(len(goals)):
            t0, c0 = time.perf_counter(), time.process_time()
            ids, scores = baseline_mepo_batch(base, rel[:, b: b + 1], masks[b: b + 1], k, cfg.p, cfg.c)
            old_ms.append((time.perf_counter() - t0) * 1000)
            old_cpu.append((time.process_time() - c0) * 1000)
            old_ids.append(ids[0])
            old_scores.append(scores[0])
        t0 = time.perf_counter()
        for a in range(0, len(goals), args.baseline_batch):
            e = min(a + args.baseline_batch, len(goals))
            baseline_mepo_batch(base, rel[:, a:e], masks[a:e], k, cfg.p, cfg.c)
        batched_ms = (time.perf_counter() - t0) / len(goals) * 1000
        result["per_k"][str(k)] = {
            "new_per_state": summary(new_ms, new_cpu),
            "baseline_one_state_at_a_time": summary(old_ms, old_cpu),
            f"baseline_batched_{args.baseline_batch}_ms_per_state": round(batched_ms, 3),
            "speedup_median_vs_one_at_a_time": round(statistics.median(old_ms) / statistics.median(new_ms), 1),
            "agreement": agreement(np.stack(old_ids), np.stack(old_scores), np.stack(new_ids),
                                   np.stack(new_scores)),
        }
        print(k, result["per_k"][str(k)], flush=True)
    result["load_avg_before_after"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    write_result("mepo_speed", result)


if __name__ == "__main__":
    main()
