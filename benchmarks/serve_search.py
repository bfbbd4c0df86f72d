"""The premise server's search alone: candidate mask and exact top-k per request, on one thread.

    python benchmarks/serve_search.py [--data_dir DIR] [--embeddings FILE] [--requests 2000] [--k 32]

Builds the requests `serve_load.py` sends (import closure of a random Mathlib
module, the file's earlier declarations as local premises, 50 new premises
that override indexed names) and times `PremiseIndex.candidates` and
`PremiseIndex.search_many` on each, one query per request, with the query a
corpus row plus noise (a goal scores close to its premises, so the top of the
ranking is as crowded as it gets). Reports ms per request, how many scans the
exact search needed, and checks every result against brute force over the
float32 rows. Uses the MiniLM corpus embeddings when present, else random unit
vectors. Writes benchmarks/results/serve_search.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result
from serve_load import Client, add_data_args, mathlib_modules, random_unit_rows, resolve_data_args


def main() -> None:
    from threadpoolctl import threadpool_limits

    from leanpremise.data import DataConfig, load_corpus
    from leanpremise.serve.search.index import PremiseIndex

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--k", type=int, default=32)
    args = ap.parse_args()
    resolve_data_args(args)
    threadpool_limits(1)

    corpus = load_corpus(DataConfig(data_dir=args.data_dir))
    if args.embeddings.exists():
        emb = np.load(args.embeddings)
        kind = "random" if "random" in args.embeddings.name else "minilm"  # the stand-in file says so in its name
    else:
        emb, kind = random_unit_rows(len(corpus)), "random"
    t0 = time.perf_counter()
    index = PremiseIndex(corpus, emb)
    build = time.perf_counter() - t0

    mathlib = mathlib_modules(corpus)
    clients = [Client(corpus, mathlib, seed, 50, 0.1) for seed in range(8)]
    bodies = [clients[i % 8].next_request()[0] for i in range(args.requests)]
    rng = np.random.default_rng(1)
    queries = emb[rng.integers(0, len(emb), len(bodies))] + rng.standard_normal((len(bodies), emb.shape[1])) * 0.02
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)

    scans = []

    class CountingScan:
        """The faiss index, counting scans (a second one means the first fetch stopped short)."""

        def __init__(self, inner):
            self.inner = inner

        def search(self, *a, **kw):
            scans.append(1)
            return self.inner.search(*a, **kw)

        def reconstruct_batch(self, ids):
            return self.inner.reconstruct_batch(ids)

    index.rows.scan = CountingScan(index.rows.scan)
    t_cand = t_search = 0.0
    results = []
    for body, query in zip(bodies, queries):
        t0 = time.perf_counter()
        cand = index.import_mask(body["imported_modules"], body["local_premises"], False, [],
                                [p["name"] for p in body["new_premises"]])
        t1 = time.perf_counter()
        ((_, ids),) = index.search_many(query[None], [cand], [args.k])
        t_search += time.perf_counter() - t1
        t_cand += t1 - t0
        results.append((cand, ids))
    mismatches = 0
    for (cand, ids), query in zip(results, queries):
        allowed = np.flatnonzero(cand.mask)
        ref = allowed[np.argsort(-(emb[allowed] @ query), kind="stable")[: args.k]]
        mismatches += not np.array_equal(ids, ref)
    n = len(bodies)
    write_result("serve_search", {
        "corpus_embeddings": kind, "premises": len(corpus), "requests": n, "k": args.k,
        "mean_candidates": round(float(np.mean([c.count for c, _ in results])), 1),
        "index_build_s": round(build, 2),
        "candidates_ms_per_request": round(t_cand / n * 1000, 3),
        "search_ms_per_request": round(t_search / n * 1000, 3),
        "scans_per_request": round(len(scans) / n, 3),
        "results_differing_from_brute_force": mismatches,
        "note": "one thread; query = a corpus row plus noise, renormalised",
    })


if __name__ == "__main__":
    main()
