"""Where a dense /retrieve of the static mathlib-src bundle spends its time, stage by stage, in one process
(no HTTP): parsing the body, the import mask (built afresh, and through the server's cache of masks per
import list), embedding the goal (tokenizer whole vs the server's piece
cache), the exact top-k scan with one and with `--shards` row ranges side by side (interleaved; answers
compared), and writing the response.

    python benchmarks/serve_static_stages.py [--bundle DIR] [--requests 300] [--shards 2]

Requests are serve_load.py's (a Mathlib file's import closure, its earlier declarations, 50 new premises,
k=100), each with a goal not sent before; a client keeps a file's import list for REQUESTS_PER_FILE requests, as
Lean does, so the cache of masks misses once per file. Writes benchmarks/results/serve_static_stages.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_result
from serve_load import DATA_NAME, REQUESTS_PER_FILE, Client, bundles_dir, mathlib_modules


def main() -> None:
    from static_model import static_bundle_path

    from leanpremise.model.static import StaticEncoder
    from leanpremise.serve.embedding.static_tokens import PieceCachedStaticEncoder
    from leanpremise.serve.http.schemas import request_model
    from leanpremise.serve.revisions.loader import load_bundle
    from leanpremise.serve.search.exact import ExactSearcher
    from leanpremise.serve.search.index import PremiseIndex
    from leanpremise.serve.settings import ServeConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None, help="default: the static mathlib-src bundle")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--name", default="serve_static_stages")
    args = ap.parse_args()
    bundle_dir = args.bundle or static_bundle_path(DATA_NAME)
    bundle = load_bundle(bundle_dir, bundles_dir() / "stages-cache", verify=False)
    emb = np.ascontiguousarray(bundle.embeddings, dtype=np.float32)
    index = PremiseIndex(bundle.corpus, emb, mask_cache_entries=0)
    cached_masks = PremiseIndex(bundle.corpus, None, rows=index.rows,
                                mask_cache_entries=ServeConfig.model_fields["import_mask_cache_entries"].default)
    sharded = ExactSearcher(emb, "float32", 1, args.shards)
    plain, cached = StaticEncoder(bundle.model_dir), PieceCachedStaticEncoder(bundle.model_dir)
    parse = request_model(ServeConfig(_env_file=None)).model_validate_json
    client = Client(bundle.corpus, mathlib_modules(bundle.corpus), 0, 50, 0.1, 0.0, args.k)
    times: dict[str, list[float]] = {s: [] for s in ("parse", "import_mask", "import_mask_cached", "goal_tokenizer_whole",
                                                       "goal_piece_cache", "scan_1_shard", f"scan_{args.shards}_shards",
                                                       "response_json")}
    allowed, differ, masks_differ = [], 0, 0
    clock = time.perf_counter
    for i in range(args.requests):
        body, _, _ = client.next_request()
        payload = orjson.dumps(body)
        t0 = clock()
        parse(payload)
        t1 = clock()
        mask = index.import_mask(body["imported_modules"], body["local_premises"], False, [],
                                 [p["name"] for p in body["new_premises"]])
        t2 = clock()
        again = cached_masks.import_mask(body["imported_modules"], body["local_premises"], False, [],
                                         [p["name"] for p in body["new_premises"]])
        times["import_mask_cached"].append(clock() - t2)
        masks_differ += not (again.count == mask.count and np.array_equal(again.mask, mask.mask))
        t2 = clock()
        plain.encode([body["state"]])
        t3 = clock()
        query = cached.encode([body["state"]])
        t4 = clock()
        runs = [(index.rows, "scan_1_shard"), (sharded, f"scan_{args.shards}_shards")]
        found = {}
        for searcher, stage in runs if i % 2 == 0 else runs[::-1]:  # interleaved, order swapped each request
            s0 = clock()
            found[stage] = searcher.topk(query, mask.mask, mask.count, args.k)[0]
            times[stage].append(clock() - s0)
        (scores, ids), (scores2, ids2) = found.values()
        differ += not (np.array_equal(ids, ids2) and np.array_equal(scores, scores2))
        t5 = clock()
        orjson.dumps([{"name": index.names[j], "score": s} for j, s in zip(ids.tolist(), scores.tolist())])
        t6 = clock()
        for stage, dt in (("parse", t1 - t0), ("import_mask", t2 - t1), ("goal_tokenizer_whole", t3 - t2),
                          ("goal_piece_cache", t4 - t3), ("response_json", t6 - t5)):
            times[stage].append(dt)
        allowed.append(mask.count / index.size)
    medians = {s: round(float(np.median(v)) * 1000, 3) for s, v in times.items()}
    print(medians, flush=True)
    write_result(args.name, {
        "bundle": str(bundle_dir), "premises": index.size, "requests": args.requests, "k": args.k,
        "median_ms": medians, "mean_share_of_premises_allowed": round(float(np.mean(allowed)), 3),
        "sharded_answers_differing": differ, "shards": args.shards, "cached_masks_differing": masks_differ,
        "requests_per_file": REQUESTS_PER_FILE,
        "machine": "2-core, shared with other jobs" if os.getloadavg()[0] > 1.5 else "2-core",
        "loadavg": os.getloadavg(),
        "note": "one process, no HTTP; the piece cache warms over the requests (goals of the same files)",
    })


if __name__ == "__main__":
    main()
