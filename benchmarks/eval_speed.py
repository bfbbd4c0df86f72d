"""Evaluation speed and baseline recall on a full data dir (e.g. all of Mathlib).

    python benchmarks/eval_speed.py --data_dir DIR --corpus_embeddings EMB.npy [--parts speed bm25 mepo]

- speed: the evaluator on the test split (500 states) with the full k list
  (P/R/FullRecall/nDCG/MAP/Accuracy@1..1024, MRR@256) using pre-computed MiniLM
  corpus embeddings: seconds for encoding the states, ranking and metrics,
  excluding data loading and corpus encoding (target <= 8 s on 2 cores; the
  original evaluator took 396 s). With `--random_embeddings` (or no embeddings
  file) random normalised embeddings of the same shape are used: the timing does
  not depend on the values, the recall figures are then meaningless and omitted.
- bm25 / mepo: Recall@16/32 (and the rest) of the BM25 and MePo (p=0.6, c=2.4)
  baselines on the same test split, next to untrained MiniLM.

Each speed run also records the process's CPU seconds and the load average: on a
shared machine the wall time includes waiting for other processes' CPU.

Results are merged into one JSON file (default benchmarks/results/eval_speed.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

REPORT_KEYS = ("recall@16", "recall@32", "precision@16", "precision@32", "fullrecall@16", "fullrecall@32",
               "mrr@256", "recall@1024")


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__}


def pick(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 5) for k in REPORT_KEYS if k in metrics} | {
        "states": metrics["states"], "states_without_positives": metrics["states_without_positives"]}


def bench_speed(ds, emb_path: Path | None, random: bool, repeats: int) -> dict:
    from leanpremise.eval.evaluator import PremiseRetrievalEvaluator
    from leanpremise.model.encoder import load_model

    n = len(ds.corpus)
    if random or emb_path is None:
        rng = np.random.default_rng(0)
        emb = rng.standard_normal((n, 384), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        source = "random normalised (timing only)"
    else:
        emb = np.load(emb_path)
        if emb.shape[0] != n:
            raise SystemExit(f"{emb_path}: {emb.shape[0]} rows, corpus has {n} premises")
        source = str(emb_path)
    model = load_model(None, "cpu")
    evaluator = PremiseRetrievalEvaluator(ds, split="test", write_csv=False, corpus_embeddings=emb)
    evaluator.compute(model)  # warm-up: first-call allocations and thread pools
    runs = []
    for _ in range(repeats):
        cpu0, load0 = time.process_time(), os.getloadavg()[0]
        res = evaluator.compute(model)
        runs.append({"seconds": res.seconds, **{k: round(v, 3) for k, v in res.timings.items()},
                     "cpu_seconds": round(time.process_time() - cpu0, 3), "load_avg_1min": round(load0, 2)})
    out = {
        "corpus_embeddings": source,
        "premises": n,
        "states": len(evaluator.state_ids),
        "k_list": evaluator.k_list,
        "mrr_k": evaluator.mrr_k,
        "runs": runs,
        "seconds_median": statistics.median(r["seconds"] for r in runs),
        "seconds_min": min(r["seconds"] for r in runs),
        "ranking_plus_metrics_median": statistics.median(r["ranking"] + r["metrics"] for r in runs),
        "state_encoding_median": statistics.median(r["state_encoding"] for r in runs),
        # CPU seconds of this process (all threads): on a shared, oversubscribed machine the wall time
        # above mostly measures other processes; cpu_seconds / threads estimates an unshared run.
        "cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in runs),
        "target_seconds": 8.0,
        "original_seconds": 396.0,
    }
    if source != "random normalised (timing only)":
        out["minilm"] = pick(res.metrics)
    return out


def bench_bm25(ds) -> dict:
    from leanpremise.eval.metrics import compute_metrics
    from leanpremise.rank.bm25 import BM25Ranker

    ids_ = ds.split.test
    t0 = time.perf_counter()
    ranker = BM25Ranker(ds.corpus.texts)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = ranker.rank([ds.states.state[s] for s in ids_.tolist()], ds.access, ids_, 1024)
    rank_s = time.perf_counter() - t0
    m = compute_metrics(ids, [ds.states.positives(s) for s in ids_.tolist()])
    return {"index_seconds": round(index_s, 2), "rank_seconds": round(rank_s, 2), **pick(m)}


def bench_mepo(ds, p: float, c: float) -> dict:
    from leanpremise.eval.metrics import compute_metrics
    from leanpremise.rank.mepo import MePoConfig, SymbolIndex, mepo_rank

    ids_ = ds.split.test
    t0 = time.perf_counter()
    index = SymbolIndex.from_corpus(ds.corpus)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = mepo_rank(index, [ds.states.state[s] for s in ids_.tolist()], ds.access, ids_, 1024,
                       MePoConfig(p=p, c=c), progress=True)
    rank_s = time.perf_counter() - t0
    m = compute_metrics(ids, [ds.states.positives(s) for s in ids_.tolist()])
    return {"p": p, "c": c, "symbols": len(index.vocab), "index_seconds": round(index_s, 2),
            "rank_seconds": round(rank_s, 2), **pick(m)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", type=Path, required=True)
    ap.add_argument("--corpus_embeddings", type=Path, default=None)
    ap.add_argument("--random_embeddings", action="store_true")
    ap.add_argument("--parts", nargs="+", choices=["speed", "bm25", "mepo"], default=["speed", "bm25", "mepo"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_speed.json")
    args = ap.parse_args()

    from leanpremise.atomic import atomic_write_bytes
    from leanpremise.data import DataConfig, load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(DataConfig(data_dir=args.data_dir))
    load_s = time.perf_counter() - t0
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.update({"data_dir": str(args.data_dir), "revision": ds.revision, "data_load_seconds": round(load_s, 2)})
    key = "speed_random_embeddings" if args.random_embeddings or args.corpus_embeddings is None else "speed"
    for part in args.parts:
        print(f"== {part}", flush=True)
        if part == "speed":
            results[key] = bench_speed(ds, args.corpus_embeddings, args.random_embeddings, args.repeats)
            results[key]["machine"] = machine()
        elif part == "bm25":
            results["bm25"] = bench_bm25(ds) | {"machine": machine()}
        elif part == "mepo":
            results["mepo"] = bench_mepo(ds, 0.6, 2.4) | {"machine": machine()}
        print(json.dumps({k: v for k, v in results.items() if k in (part, key)}, indent=1), flush=True)
        atomic_write_bytes(args.out, json.dumps(results, indent=1).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
