"""What `train --encoder static`'s default BM25 hard-negative mining costs on a dataset.

    python benchmarks/static_mining.py --data mathlib-src --states 2000

Times `bm25_hard_negatives` (the BM25 index over the corpus, then each train state's top-64 accessible
premises) on a seeded sample of the train states and scales the ranking part to all of them. Writes
benchmarks/results/static_mining_<data>.json.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from common import unpacked, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mathlib-src")
    ap.add_argument("--states", type=int, default=2000)
    ap.add_argument("--top_k", type=int, default=64)
    args = ap.parse_args()

    from leanpremise.data import load_dataset
    from leanpremise.rank.bm25 import BM25Ranker
    from leanpremise.train.data import train_pairs

    ds = load_dataset(data_dir=unpacked(args.data))
    train = np.unique(train_pairs(ds)[0])
    sample = np.sort(np.random.default_rng(0).choice(train, size=min(args.states, len(train)), replace=False))
    t0, c0 = time.perf_counter(), time.process_time()
    ranker = BM25Ranker(ds.corpus.texts)
    index_s, index_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ranker.rank([ds.states.state[s] for s in sample.tolist()], ds.access, sample, args.top_k)
    rank_s, rank_cpu = time.perf_counter() - t0, time.process_time() - c0
    per_state = rank_s / len(sample)
    write_result(f"static_mining_{args.data.replace('-', '_')}", {
        "machine_note": "2-core, shared with other jobs", "premises": len(ds.corpus.texts),
        "train_states_with_positives": len(train), "states_timed": len(sample), "top_k": args.top_k,
        "index_seconds": round(index_s, 1), "index_cpu_seconds": round(index_cpu, 1),
        "rank_seconds": round(rank_s, 1), "rank_cpu_seconds": round(rank_cpu, 1),
        "ms_per_state": round(1e3 * per_state, 2),
        "all_train_states_estimate_seconds": round(index_s + per_state * len(train), 1),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})


if __name__ == "__main__":
    main()
